"""Tests for worldmodel.presets (one table per component) and worldmodel.config (configs to and from dicts)."""

import dataclasses
import json

import pytest

from worldmodel import presets
from worldmodel.autoencoder import AutoencoderConfig, autoencoder_config
from worldmodel.backbone import BackboneConfig, backbone_config
from worldmodel.config import check_config, config_diff, config_from_dict, config_to_dict
from worldmodel.model import WorldModel, WorldModelConfig, world_model_config
from worldmodel.train import TRAIN_PRESETS, TrainConfig, train_config
from worldmodel.train_autoencoder import parse_args as ae_parse_args


def test_every_table_covers_every_preset():
    """Each component's table names exactly the presets tiny, cpu, long, recall, crafter and paper."""
    assert presets.PRESETS == ("tiny", "cpu", "long", "recall", "crafter", "paper")
    for table in (
        presets.AUTOENCODER,
        presets.BACKBONE,
        presets.DIFFUSION,
        presets.TRAINING,
        presets.AUTOENCODER_TRAINING,
    ):
        assert tuple(table) == presets.PRESETS


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_stage1_settings_agree_between_the_two_jobs(preset, tmp_path):
    """worldmodel.train and python -m worldmodel.train_autoencoder train stage 1 with the same steps and batch."""
    job = ae_parse_args(["--preset", preset, "--episodes", str(tmp_path), "--out", str(tmp_path / "o")])
    assert (job.steps, job.batch_size) == (TRAIN_PRESETS[preset].ae_steps, TRAIN_PRESETS[preset].ae_batch_size)
    assert job.steps == presets.AUTOENCODER_TRAINING[preset]["steps"]


def test_the_builders_read_the_tables(monkeypatch):
    """autoencoder_config, backbone_config, world_model_config and train_config take their numbers from presets."""
    monkeypatch.setitem(presets.AUTOENCODER, "tiny", {**presets.AUTOENCODER["tiny"], "kl_weight": 0.5})
    monkeypatch.setitem(presets.BACKBONE, "tiny", {**presets.BACKBONE["tiny"], "d_state": 4})
    monkeypatch.setitem(presets.DIFFUSION, "tiny", {"sampling_steps": 7})
    monkeypatch.setitem(presets.TRAINING, "tiny", {**presets.TRAINING["tiny"], "steps": 77})
    assert autoencoder_config("tiny").kl_weight == 0.5
    assert backbone_config("tiny", latent_channels=4, latent_size=(8, 8)).d_state == 4
    cfg = world_model_config("tiny")
    assert (cfg.autoencoder.kl_weight, cfg.backbone.d_state, cfg.diffusion.sampling_steps) == (0.5, 4, 7)
    assert train_config("tiny").steps == 77


def test_the_cpu_preset_is_the_demo_model():
    """The cpu preset still builds the demo model (changing it changes the README's demo and benchmark numbers)."""
    cfg = world_model_config("cpu")
    assert cfg.autoencoder.latent_shape == (8, 8, 8) and cfg.autoencoder.channels == (16, 32, 64, 128)
    bb = cfg.backbone
    assert (bb.dim, bb.depth, bb.heads, bb.d_state, bb.headdim, bb.patch, bb.chunk_size) == (128, 6, 4, 16, 32, 2, 32)
    assert bb.block_sizes == ((2, 2), (4, 4)) * 3
    assert cfg.diffusion.sampling_steps == 2
    assert bb.action_tokens and bb.prev_frame and not bb.null_action  # the lever study's winner
    assert sum(p.numel() for p in WorldModel(cfg).parameters()) == 4_472_036
    t = TRAIN_PRESETS["cpu"]
    assert (t.steps, t.batch_size, t.curriculum, t.lr, t.warmup, t.ae_steps, t.ae_batch_size) == (
        800,
        8,
        ((0.0, 32), (0.7, 48)),
        1e-3,
        100,
        800,
        32,
    )
    assert (t.eval_every, t.ckpt_every, t.eval_context, t.eval_horizon, t.eval_batch, t.compile) == (
        200,
        100,
        16,
        16,
        8,
        False,
    )


def test_preset_from_argv():
    """The jobs read --preset before the rest of the command line; an unknown name falls back to the default."""
    assert presets.preset_from_argv(["--steps", "3", "--preset", "tiny"]) == "tiny"
    assert presets.preset_from_argv(["--preset=paper"]) == "paper"
    assert presets.preset_from_argv(["--steps", "3"]) == "cpu"
    assert presets.preset_from_argv(["--preset", "huge"]) == "cpu"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        presets.check_preset("huge")


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_nested_configs_round_trip_through_json(preset):
    """config_from_dict rebuilds nested configs (tuples included) from what config_to_dict wrote as JSON."""
    for cls, cfg in (
        (WorldModelConfig, world_model_config(preset, "causal_window")),
        (TrainConfig, TRAIN_PRESETS[preset]),
    ):
        back = config_from_dict(cls, json.loads(json.dumps(config_to_dict(cfg))))
        assert back == cfg
        assert isinstance(config_from_dict(cls, config_to_dict(cfg)), cls)
    wm = config_from_dict(WorldModelConfig, config_to_dict(world_model_config(preset)))
    assert isinstance(wm.backbone, BackboneConfig) and isinstance(wm.autoencoder, AutoencoderConfig)
    assert isinstance(wm.backbone.block_sizes[0], tuple)


def test_config_from_dict_names_the_field_and_the_file():
    """Unknown, missing and refused fields are errors naming the field, the class and the source."""
    d = config_to_dict(world_model_config("tiny"))
    d["backbone"]["dimm"] = 3
    unknown = r"run/config.json: WorldModelConfig.backbone: unknown field\(s\) \['dimm'\] of BackboneConfig"
    with pytest.raises(ValueError, match=unknown):
        config_from_dict(WorldModelConfig, d, "run/config.json")
    t = config_to_dict(TRAIN_PRESETS["tiny"])
    del t["steps"]
    with pytest.raises(ValueError, match=r"ck.pt: TrainConfig: missing field\(s\) \['steps'\]"):
        config_from_dict(TrainConfig, t, "ck.pt")
    t = {**config_to_dict(TRAIN_PRESETS["tiny"]), "batch_size": 0}
    with pytest.raises(ValueError, match=r"ck.pt: TrainConfig.batch_size=0"):
        config_from_dict(TrainConfig, t, "ck.pt")
    with pytest.raises(ValueError, match="expected a dict"):
        config_from_dict(TrainConfig, [1, 2], "ck.pt")


def test_config_diff_and_check_config_list_every_field():
    """config_diff gives one line per differing field; check_config raises with all of them."""
    cfg = TRAIN_PRESETS["tiny"]
    other = config_to_dict(dataclasses.replace(cfg, lr=0.5, seed=3))
    assert config_diff(cfg, other) == ["lr: expected 0.002, checkpoint has 0.5", "seed: expected 0, checkpoint has 3"]
    with pytest.raises(ValueError, match="2 field"):
        check_config(cfg, other, what="x")
    check_config(cfg, config_to_dict(cfg))


def test_long_is_the_cpu_model_trained_four_times_longer():
    """``long`` shares the cpu model, autoencoder and sampler; only its world-model training is longer."""
    for table in (presets.AUTOENCODER, presets.BACKBONE, presets.DIFFUSION, presets.AUTOENCODER_TRAINING):
        assert table["long"] is table["cpu"]
    cpu, long = TRAIN_PRESETS["cpu"], TRAIN_PRESETS["long"]
    assert long.steps == 4 * cpu.steps
    assert (long.batch_size, long.curriculum, long.lr) == (cpu.batch_size, cpu.curriculum, cpu.lr)
    assert world_model_config("long") == world_model_config("cpu")


def test_the_crafter_preset_is_the_cpu_model_with_a_wider_latent_and_fewer_steps():
    """crafter: the cpu backbone and sampler on a 16-channel 8x8 latent, 720 steps of 32 then 48 frames."""
    cfg, cpu = world_model_config("crafter", num_actions=17), world_model_config("cpu")
    assert cfg.autoencoder.latent_shape == (16, 8, 8) and cfg.autoencoder.channels == cpu.autoencoder.channels
    assert dataclasses.replace(cfg.backbone, latent_channels=8, num_actions=6) == cpu.backbone
    assert cfg.backbone.num_actions == 17 and cfg.diffusion == cpu.diffusion
    t = TRAIN_PRESETS["crafter"]
    assert (t.steps, t.curriculum, t.ae_steps) == (720, ((0.0, 32), (0.7, 48)), 1200)
