"""The lever study on the tiny preset: trains each setting, scores it on held-out episodes, resumes per setting."""

import json

import pytest

from benchmarks import train_levers


def _args(settings, tiny_checkpoint, episodes, tmp):
    """The command line of a 2-step tiny study of ``settings`` on ``episodes``, runs and results under ``tmp``."""
    return [
        "--preset", "tiny", "--steps", "2", "--settings", *settings,
        "--autoencoder", str(tiny_checkpoint.parent / "autoencoder.pt"),
        "--explore-episodes", str(episodes), "--mixed-episodes", str(episodes),
        "--heldout-episodes", str(episodes), "--runs", str(tmp / "runs"), "--out", str(tmp / "out"),
        "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def study(tiny_checkpoint, real_episodes, tmp_path_factory):
    """Two settings (one with guidance rows) trained 2 steps each on the tiny preset; (args, result JSON)."""
    tmp = tmp_path_factory.mktemp("levers")
    args = _args(["baseline", "mixed_tokens_cfg"], tiny_checkpoint, real_episodes, tmp)
    assert train_levers.main(args) == 0
    return args, tmp, json.loads((tmp / "out" / "train_levers.json").read_text())


def test_every_setting_and_guidance_gets_a_scored_row(study):
    _, tmp, res = study
    rows = {r["setting"]: r for r in res["rows"]}
    assert set(rows) == {"baseline", "mixed_tokens_cfg@g1", "mixed_tokens_cfg@g2"}
    for r in rows.values():
        assert (
            r["steps"] == 2
            and r["minutes"] > 0
            and r["psnr_gain"] == pytest.approx(r["psnr_dream"] - r["psnr_copy_last"])
        )
        assert (tmp / "out" / r["strip"]).read_bytes()[:4] == b"\x89PNG"
        # the real env's reference does not depend on the model: not replayed per setting (action_following has it)
        assert "real_env" not in r["action_sensitivity"] and r["action_sensitivity"]["constant"]["windows"] > 0
    cfg = rows["mixed_tokens_cfg@g2"]["config"]["model"]
    assert cfg["backbone"]["action_tokens"] and cfg["backbone"]["null_action"] and cfg["action_dropout"] == 0.1
    assert (
        cfg["diffusion"]["guidance"] == 2.0
        and rows["baseline"]["config"]["model"]["backbone"]["action_tokens"] is False
    )
    assert (tmp / "out" / "train_levers.png").read_bytes()[:4] == b"\x89PNG"
    # the shared autoencoder was copied, not retrained: the runs hold the very same file
    ae = (tmp / "runs" / "baseline" / "autoencoder.pt").read_bytes()
    assert ae == (tmp / "runs" / "mixed_tokens_cfg" / "autoencoder.pt").read_bytes()


def test_a_finished_setting_is_skipped_on_a_second_run(study, capsys):
    args, tmp, res = study
    before = (tmp / "out" / "train_levers.json").read_text()
    assert train_levers.main(args[:5] + ["baseline"] + args[7:]) == 0
    assert "baseline: already in" in capsys.readouterr().out
    assert (tmp / "out" / "train_levers.json").read_text() == before


def test_a_latent_setting_trains_its_own_autoencoder_apart_from_the_minutes(tiny_checkpoint, real_episodes, tmp_path):
    """latent_16: the run's own stage 1 makes 16-channel latents the backbone reads; its minutes are reported apart."""
    assert train_levers.main(_args(["latent_16"], tiny_checkpoint, real_episodes, tmp_path)) == 0
    (row,) = json.loads((tmp_path / "out" / "train_levers.json").read_text())["rows"]
    ae = json.loads((tmp_path / "runs" / "latent_16" / "autoencoder_report.json").read_text())
    assert ae["latent_shape"][0] == 16 and row["config"]["model"]["backbone"]["latent_channels"] == 16
    assert row["autoencoder_stage"]["minutes"] == pytest.approx(ae["wall_time_s"] / 60, abs=0.01)
    assert row["autoencoder_stage"]["psnr"] == ae["psnr_mean"] and 0 < row["minutes"]
    shared = (tiny_checkpoint.parent / "autoencoder.pt").read_bytes()
    assert (tmp_path / "runs" / "latent_16" / "autoencoder.pt").read_bytes() != shared


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_levers.main(["--settings", "nope", "--autoencoder", str(tmp_path)])
    assert "unknown setting(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_levers.main(["--autoencoder", str(tmp_path / "missing.pt")])
    assert "expected a trained autoencoder.pt" in capsys.readouterr().err
