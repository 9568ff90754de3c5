"""Tests for worldmodel.train and worldmodel.model: learning, resume, rollout, reward head, bad input, the CLI."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY_MIN_CONTEXT, write_synthetic_episode
from permissions import read_only_folder, run_unprivileged

import worldmodel
import worldmodel.model as wm
import worldmodel.run_folder as run_folder
import worldmodel.train_autoencoder as train_ae
from envs.episodes import EpisodeStore, file_digest, load_episode
from worldmodel.model import WorldModel, load, world_model_config
from worldmodel.train import (
    TRAIN_PRESETS,
    LatentEpisodes,
    NonFiniteLossError,
    ema_decay_at,
    main,
    train,
    warmup_cosine_lr,
)
from worldmodel.utils import LR_FLOOR, torch_load

TINY = ["--preset", "tiny", "--device", "cpu", "--threads", "1"]


def tiny_cfg(**kw):
    return dataclasses.replace(TRAIN_PRESETS["tiny"], **kw)


def test_loss_decreases_on_a_tiny_overfit_set(synthetic_episodes, tmp_path):
    """Diffusion Forcing loss falls well below its start when overfitting a few synthetic episodes."""
    eps = synthetic_episodes(n=3, steps=30)
    cfg = tiny_cfg(steps=120, ckpt_every=1000, lr=3e-3)
    model, res = train(cfg, eps, tmp_path / "run", progress=False)
    hist = json.loads((tmp_path / "run" / "eval.json").read_text())["history_tail"]
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert res["steps"] == 120
    # compare the diffusion loss at the start (untrained model) with the end, on the same batches
    first = _loss_on_fixed_batches(world_model_fresh(model), eps)
    last = _loss_on_fixed_batches(model, eps)
    print(f"diffusion loss untrained {first:.4f} -> trained {last:.4f}; last logged {hist[-1]['wm/diffusion']:.4f}")
    assert last < 0.7 * first


def world_model_fresh(trained: WorldModel) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(trained.config, autoencoder=trained.autoencoder)


def _loss_on_fixed_batches(model, eps_dir):
    data = LatentEpisodes(model, EpisodeStore(eps_dir).paths, min_frames=8)
    g = torch.Generator().manual_seed(123)
    tot = 0.0
    with torch.no_grad():
        for _ in range(8):
            z, a, r = data.sample(4, 8, g)
            _, logs = model.loss(z, a, r, generator=g)
            tot += logs["wm/diffusion"]
    return tot / 8


def test_resume_reproduces_an_uninterrupted_run(synthetic_episodes, tmp_path):
    """Stopping at step 10 and resuming to 20 gives the same losses and weights as one run of 20 steps."""
    eps = synthetic_episodes(n=3, steps=24)
    full_cfg = tiny_cfg(steps=20, ckpt_every=10)
    _, full = train(full_cfg, eps, tmp_path / "full", progress=False)
    train(full_cfg, eps, tmp_path / "part", progress=False, stop_after=10)
    _, resumed = train(full_cfg, eps, tmp_path / "part", resume=True, progress=False)
    a = [h["wm/loss"] for h in full["history_tail"]]
    b = [h["wm/loss"] for h in resumed["history_tail"]]
    print("uninterrupted", a, "\nresumed      ", b)
    assert a == b
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert ca["step"] == cb["step"] == 20
    for part in ("model", "ema"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    # the global RNGs are captured with worldmodel.utils.get_rng_state; the batches and their noise need no state
    # (seeded by the run's seed and the step: WindowSampler.step_batch, train.step_noise)
    assert {"python", "numpy", "torch"} <= set(cb["rng"]) and "generator" not in cb


def test_rollout_shapes_and_bounded_state(tiny_model, real_episodes):
    """A rollout of N frames gives (B, N, 64, 64, 3) uint8 and the carried state does not grow with N."""
    model = tiny_model
    ep = load_episode(sorted(real_episodes.glob("*.npz"))[0])
    ctx = torch.from_numpy(ep["image"][:6])[None].repeat(2, 1, 1, 1, 1)
    act = torch.from_numpy(ep["action"][:6].argmax(-1))[None].repeat(2, 1).long()
    out = model.rollout(ctx, act, torch.randint(0, 6, (2, 9)))
    assert out["frames"].shape == (2, 9, 64, 64, 3) and out["frames"].dtype == torch.uint8
    assert out["rewards"].shape == (2, 9)

    def state_bytes(s):
        if torch.is_tensor(s):
            return s.numel() * s.element_size()
        if isinstance(s, dict):
            return sum(state_bytes(v) for v in s.values())
        if isinstance(s, (list, tuple)):
            return sum(state_bytes(v) for v in s)
        return 0

    dream = model.start(ctx, act)
    sizes = []
    for i in range(40):
        _, _, dream = model.step(dream, torch.full((2,), i % 6))
        sizes.append(state_bytes(dream.backbone_state))
    print("state bytes after 10, 20, 40 frames:", sizes[9], sizes[19], sizes[39])
    assert sizes[19] == sizes[39]


def test_same_generator_seed_gives_the_same_dream(tiny_model):
    """Rollouts are reproducible given the generator seed, and differ for another seed."""
    model = tiny_model
    ctx = torch.zeros(1, TINY_MIN_CONTEXT, 64, 64, 3, dtype=torch.uint8)
    act = torch.zeros(1, TINY_MIN_CONTEXT, dtype=torch.long)
    fut = torch.tensor([[1, 2, 3, 4]])
    a = model.rollout(ctx, act, fut, generator=torch.Generator().manual_seed(5))["frames"]
    b = model.rollout(ctx, act, fut, generator=torch.Generator().manual_seed(5))["frames"]
    c = model.rollout(ctx, act, fut, generator=torch.Generator().manual_seed(6))["frames"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reward_head_learns_a_planted_signal(synthetic_episodes):
    """On latents where reward = (a planted feature is on), the reward head reaches high precision and recall."""
    torch.manual_seed(0)
    cfg = world_model_config("tiny")
    model = WorldModel(cfg)
    c, h, w = cfg.autoencoder_latent_shape
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("autoencoder")], lr=3e-3)

    def batch():
        z = torch.randn(16, 8, c, h, w, generator=g)
        r = (torch.rand(16, 8, generator=g) < 0.2).float()
        z[:, :, 0] += 3.0 * r[:, :, None, None]  # the planted feature: channel 0 lit up on reward frames
        return z, torch.randint(0, 6, (16, 8), generator=g), r

    for _ in range(150):
        z, a, r = batch()
        loss, _ = model.loss(z, a, r, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, a, r = batch()
    with torch.no_grad():
        tau = torch.zeros(z.shape[:2])
        _, feats = model.backbone(z, a, tau)
        pred = model.reward_events(feats)  # the rule the model uses (logit > log pos_weight)
    truth = r > 0
    precision = (pred & truth).sum() / pred.sum().clamp_min(1)
    recall = (pred & truth).sum() / truth.sum()
    print(f"planted reward: precision {precision:.3f} recall {recall:.3f}")
    assert precision > 0.9 and recall > 0.9


def test_mismatched_checkpoint_config_names_fields(synthetic_episodes, tmp_path):
    """Resuming with another model config fails and names the differing fields."""
    eps = synthetic_episodes(n=2, steps=20)
    train(tiny_cfg(steps=2), eps, tmp_path / "run", progress=False)
    other = world_model_config("tiny")
    other = dataclasses.replace(other, reward_weight=0.25)
    with pytest.raises(ValueError, match="reward_weight"):
        train(tiny_cfg(steps=4), eps, tmp_path / "run", resume=True, progress=False, model_cfg=other)


def test_too_short_episodes_say_what_is_needed(synthetic_episodes, tmp_path):
    """An episode folder whose episodes are shorter than a window names the frames needed and found."""
    eps = synthetic_episodes(n=2, steps=5)
    with pytest.raises(ValueError, match=r"at least 12 frames.*has 6"):
        train(tiny_cfg(), eps, tmp_path / "run", progress=False)


def test_empty_folder_is_named(tmp_path):
    """An empty episode folder gives an error naming it and the frames a window needs."""
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(ValueError, match=r"nothing_here.*at least 12 frames"):
        train(tiny_cfg(), tmp_path / "nothing_here", tmp_path / "run", progress=False)


def test_interrupted_autoencoder_stage_resumes(synthetic_episodes, tmp_path):
    """A run stopped during stage 1 (unfinished autoencoder.pt, no checkpoint.pt) finishes when re-run."""
    eps = synthetic_episodes(n=3, steps=20)
    cfg = tiny_cfg(steps=3)
    tr, te = EpisodeStore(eps).split(test_fraction=cfg.test_fraction, seed=cfg.seed)
    model_cfg = world_model_config("tiny")
    train_ae.train_autoencoder(
        model_cfg.autoencoder,
        tr,
        te,
        tmp_path / "run",
        steps=cfg.ae_steps,
        batch_size=cfg.ae_batch_size,
        device="cpu",
        log=False,
        stop_after=5,
    )
    with pytest.raises(ValueError, match="unfinished"):
        train_ae.load_autoencoder(tmp_path / "run" / "autoencoder.pt")
    _, res = train(cfg, eps, tmp_path / "run", progress=False)
    assert res["steps"] == 3
    assert bool(train_ae.load_autoencoder(tmp_path / "run" / "autoencoder.pt").stats_ready)


def test_step_leaves_the_dream_untouched_so_forks_are_free(tiny_model):
    """Stepping a fork of a DreamState does not change what the original produces next."""
    model = tiny_model
    n = TINY_MIN_CONTEXT
    dream = model.start(torch.zeros(1, n, 64, 64, 3, dtype=torch.uint8), torch.zeros(1, n, dtype=torch.long))
    a, _, _ = model.step(dream, torch.tensor([1]))
    for act in (2, 3, 4):
        model.step(dream, torch.tensor([act]))  # a planner exploring other branches
    b, _, _ = model.step(dream, torch.tensor([1]))
    assert torch.equal(a, b)


def test_worldmodel_load_is_exported(tiny_checkpoint):
    """`worldmodel.load(path)` returns the trained model in eval mode."""
    m = worldmodel.load(tiny_checkpoint, device="cpu")
    assert isinstance(m, WorldModel) and not m.training


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_episodes, tmp_path, monkeypatch):
    """A non-finite loss stops training with a clear message; the checkpoint of the last good step survives."""
    eps = synthetic_episodes(n=2, steps=20)
    real_loss = wm.WorldModel.loss
    calls = {"n": 0}

    def flaky(self, *a, **k):
        loss, logs = real_loss(self, *a, **k)
        calls["n"] += 1
        return (loss * float("nan"), logs) if calls["n"] > 12 else (loss, logs)

    monkeypatch.setattr(wm.WorldModel, "loss", flaky)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss.*step 12.*kept"):
        train(tiny_cfg(steps=30, ckpt_every=10), eps, tmp_path / "run", progress=False)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 10
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.dtype.is_floating_point)


def test_sampler_settings_are_inference_only(synthetic_episodes, tmp_path):
    """Sampling steps can be overridden at load and differ on resume without a config error; other fields cannot."""
    eps = synthetic_episodes(n=2, steps=20)
    train(tiny_cfg(steps=2), eps, tmp_path / "run", progress=False)
    m = load(tmp_path / "run" / "checkpoint.pt", device="cpu", sampling_steps=5, context_noise=0.2)
    assert m.config.diffusion.sampling_steps == 5 and m.config.diffusion.context_noise == 0.2
    base = world_model_config("tiny")
    more_steps = dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, sampling_steps=7))
    _, res = train(tiny_cfg(steps=3), eps, tmp_path / "run", resume=True, progress=False, model_cfg=more_steps)
    assert res["steps"] == 3
    other = dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, clean_prefix_prob=0.2))
    with pytest.raises(ValueError, match="clean_prefix_prob"):
        train(tiny_cfg(steps=4), eps, tmp_path / "run", resume=True, progress=False, model_cfg=other)


# ---------------------------------------------------------------------- schedules


def test_one_learning_rate_schedule_warms_up_then_decays_to_the_floor():
    """warmup_cosine_lr: linear warm-up to the peak, cosine down to LR_FLOOR * peak; both jobs use it."""
    lrs = [warmup_cosine_lr(s, 100, 1.0, 10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(LR_FLOOR) and min(lrs[10:]) == pytest.approx(LR_FLOOR)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert train_ae.warmup_cosine_lr is warmup_cosine_lr


def test_ema_warm_up_follows_the_weights_first():
    """The EMA decay ramps as (1 + step) / (10 + step) and never exceeds the configured decay."""
    assert ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay_at(800, 0.999) == pytest.approx(801 / 810)
    assert ema_decay_at(100_000, 0.999) == 0.999


def test_training_logs_the_schedule_it_uses(synthetic_episodes, tmp_path):
    """The learning rate of every logged step is warmup_cosine_lr of the step before the update."""
    eps = synthetic_episodes(n=2, steps=14)
    _, res = train(tiny_cfg(steps=6), eps, tmp_path / "run", progress=False)
    for h in res["history_tail"]:
        assert h["wm/lr"] == pytest.approx(warmup_cosine_lr(h["step"] - 1, 6, TRAIN_PRESETS["tiny"].lr, 5))


# ---------------------------------------------------------------------- the command line


def test_cli_help_shows_each_option_once_with_its_doc_and_the_presets_default(capsys, monkeypatch):
    """--help lists every option with its documentation and one default, the one of the preset asked for."""
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for flag in (
        "--preset",
        "--variant",
        "--episodes",
        "--run-dir",
        "--resume",
        "--stop-after",
        "--steps",
        "--ae-steps",
        "--batch-size",
        "--lr",
        "--seed",
        "--device",
        "--precision",
        "--compile",
        "--threads",
    ):
        assert f"{flag} " in out or f"{flag}," in out, flag
    steps = next(line for line in out.splitlines() if "Diffusion-forcing optimiser steps" in line)
    assert steps.count("default") == 1 and "(default: 800)" in steps
    assert not [line for line in out.splitlines() if line.count("default:") > 1]
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--help"])
    steps = next(line for line in capsys.readouterr().out.splitlines() if "Diffusion-forcing optimiser steps" in line)
    assert "(default: 30)" in steps


@pytest.mark.parametrize(
    "args, named",
    [
        (["--steps", "0"], "steps=0"),
        (["--steps", "-3"], "steps=-3"),
        (["--stop-after", "0"], "--stop-after 0"),
        (["--stop-after", "-2"], "--stop-after -2"),
        (["--batch-size", "0"], "batch_size=0"),
        (["--ae-steps", "0"], "ae_steps=0"),
        (["--ae-batch-size", "0"], "ae_batch_size=0"),
        (["--lr", "0"], "lr=0"),
        (["--threads", "0"], "--threads 0"),
        (["--curriculum", "0.5", "8"], "curriculum"),
        (["--test-fraction", "1.0"], "test_fraction=1.0"),
        (["--device", "cuda:7"], "cuda:7"),
    ],
)
def test_cli_refuses_bad_arguments_before_any_work(args, named, synthetic_episodes, tmp_path, capsys, monkeypatch):
    """Every argument is checked first: exit status 2, a message naming it, nothing written."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    eps = synthetic_episodes(n=2, steps=12)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main([*TINY, "--episodes", str(eps), "--run-dir", str(run), *args])
    assert e.value.code == 2
    assert named in capsys.readouterr().err
    assert not run.exists()


def test_library_refuses_bad_arguments_before_any_work(synthetic_episodes, tmp_path):
    """train() and TrainConfig check their arguments before touching the run folder."""
    eps = synthetic_episodes(n=2, steps=12)
    with pytest.raises(ValueError, match="stop_after=0"):
        train(tiny_cfg(), eps, tmp_path / "run", stop_after=0, progress=False)
    with pytest.raises(ValueError, match=r"TrainConfig.steps=0: expected an integer >= 1"):
        tiny_cfg(steps=0)
    with pytest.raises(ValueError, match="TrainConfig.variant='rnn'"):
        tiny_cfg(variant="rnn")
    assert not (tmp_path / "run").exists()


def test_cli_trains_stops_and_resumes_with_the_documented_flags(synthetic_episodes, tmp_path, capsys):
    """The flags of the README and Makefile work; values not given come from --preset; --resume continues."""
    eps = synthetic_episodes(n=3, steps=16)
    run = tmp_path / "run"
    args = [
        *TINY,
        "--episodes",
        str(eps),
        "--run-dir",
        str(run),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--ae-steps",
        "3",
    ]
    assert main(args + ["--stop-after", "2"]) == 0
    assert torch_load(run / "checkpoint.pt")["step"] == 2
    capsys.readouterr()
    assert main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert "psnr_dream_mean" in json.loads(capsys.readouterr().out)
    stored = json.loads((run / "config.json").read_text())["train"]
    tiny = dataclasses.asdict(TRAIN_PRESETS["tiny"])
    assert (stored["steps"], stored["batch_size"], stored["ae_steps"]) == (4, 2, 3)
    assert {k: stored[k] for k in ("lr", "warmup", "eval_batch", "preset")} == {
        k: tiny[k] for k in ("lr", "warmup", "eval_batch", "preset")
    }
    assert torch_load(run / "checkpoint.pt")["step"] == 4


def test_heldout_folder_is_what_the_evaluation_scores(synthetic_episodes, tmp_path, capsys):
    """--heldout: the final evaluation runs on that folder's episodes; the training folder itself is refused."""
    eps = synthetic_episodes(n=3, steps=16)
    other = synthetic_episodes(n=2, steps=16, folder="unseen")
    run = tmp_path / "run"
    args = [*TINY, "--episodes", str(eps), "--run-dir", str(run), "--steps", "2", "--batch-size", "2"]
    assert main(args + ["--ae-steps", "2", "--heldout", str(other)]) == 0
    scored = json.loads((run / "eval.json").read_text())["eval_episodes"]
    assert sorted(scored) == sorted(str(p) for p in EpisodeStore(other).paths)
    capsys.readouterr()
    assert main(args + ["--run-dir", str(tmp_path / "run2"), "--heldout", str(eps)]) == 2
    assert "that is the training folder" in capsys.readouterr().err


# ---------------------------------------------------------------------- the run folder


HOLD_LOCK = (
    "import sys, time\nfrom envs.fileio import RunLock\nRunLock(sys.argv[1], what='training').acquire()\n"
    "print('held', flush=True)\ntime.sleep(120)\n"
)


def test_a_second_job_on_a_run_folder_is_refused_and_a_killed_one_leaves_no_lock(synthetic_episodes, tmp_path, capsys):
    """While another live process holds the run folder, training refuses naming it; after kill -9 it proceeds."""
    eps = synthetic_episodes(n=2, steps=12)
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([*TINY, "--episodes", str(eps), "--run-dir", str(run), "--steps", "1"]) == 2
        err = capsys.readouterr().err
        assert str(holder.pid) in err
        assert not (run / "split.json").exists() and not (run / "autoencoder.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    _, res = train(tiny_cfg(steps=1), eps, run, progress=False)
    assert res["steps"] == 1


def test_stale_temp_files_of_a_killed_run_are_removed_at_start(synthetic_episodes, tmp_path):
    """Temp files an interrupted atomic write left in the run folder are deleted; other files are kept."""
    eps = synthetic_episodes(n=2, steps=12)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.k3j9x.tmp").write_bytes(b"\0" * 100)
    (run / "notes.txt").write_text("mine")
    train(tiny_cfg(steps=1), eps, run, progress=False)
    assert not (run / ".checkpoint.pt.k3j9x.tmp").exists()
    assert (run / "notes.txt").read_text() == "mine"


def test_the_split_is_recorded_and_new_episodes_never_become_held_out(synthetic_episodes, tmp_path):
    """split.json records names and hashes at the first start; episodes added later stay out of the run."""
    eps = synthetic_episodes(n=4, steps=16)
    run = tmp_path / "run"
    cfg = tiny_cfg(steps=2, test_fraction=0.25)
    train(cfg, eps, run, progress=False, stop_after=1)
    rec = json.loads((run / "split.json").read_text())
    assert len(rec["train"]) == 3 and len(rec["test"]) == 1
    assert all(rec["test"][n] == file_digest(eps / n) for n in rec["test"])
    assert rec["folder"] == str(eps.resolve())
    for i in range(4, 12):  # more episodes collected into the same folder
        write_synthetic_episode(eps / f"ep_{i:05d}.npz", 16, seed=i)
    fresh_test = {p.name for p in EpisodeStore(eps).split(test_fraction=0.25, seed=0)[1]}
    assert fresh_test != set(rec["test"])  # recomputing the split would move episodes across
    with pytest.warns(UserWarning, match=r"8 episode file\(s\) added since this run started are left out"):
        _, res = train(cfg, eps, run, resume=True, progress=False)
    assert res["steps"] == 2
    assert json.loads((run / "split.json").read_text()) == rec


def test_resume_refuses_changed_or_missing_episodes(synthetic_episodes, tmp_path, capsys):
    """A held-out file changed or removed since the run started is refused by name (library and CLI)."""
    eps = synthetic_episodes(n=3, steps=16)
    run = tmp_path / "run"
    train(tiny_cfg(steps=2), eps, run, progress=False, stop_after=1)
    held_out = next(iter(json.loads((run / "split.json").read_text())["test"]))
    write_synthetic_episode(eps / held_out, 16, seed=99)  # same name, other content
    with pytest.raises(ValueError, match=rf"changed since the run started.*{held_out}"):
        train(tiny_cfg(steps=2), eps, run, resume=True, progress=False)
    (eps / held_out).unlink()
    with pytest.raises(ValueError, match=rf"1 recorded held-out episode file\(s\) missing: {held_out}"):
        train(tiny_cfg(steps=2), eps, run, resume=True, progress=False)
    assert main([*TINY, "--episodes", str(eps), "--run-dir", str(run), "--steps", "2", "--resume"]) == 2
    assert "does not hold the episodes this run was started with" in capsys.readouterr().err
    assert torch_load(run / "checkpoint.pt")["step"] == 1


def test_resume_from_another_folder_needs_the_same_files(synthetic_episodes, tmp_path):
    """Another folder is refused unless it holds the recorded files (then accepted with a warning)."""
    eps = synthetic_episodes(n=3, steps=16)
    run = tmp_path / "run"
    train(tiny_cfg(steps=2), eps, run, progress=False, stop_after=1)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(3):
        write_synthetic_episode(other / f"ep_{i:05d}.npz", 16, seed=10 + i)
    with pytest.raises(ValueError, match=rf"{other}: does not hold the episodes.*from {eps.resolve()}"):
        train(tiny_cfg(steps=2), other, run, resume=True, progress=False)
    moved = shutil.copytree(eps, tmp_path / "moved")
    with pytest.warns(UserWarning, match="not the one this run started with"):
        _, res = train(tiny_cfg(steps=2), moved, run, resume=True, progress=False)
    assert res["steps"] == 2


def test_clear_messages_instead_of_tracebacks(synthetic_episodes, tmp_path, capsys):
    """--episodes a file, a run folder that is a file or cannot be made, --resume on a plain state_dict: exit 2."""
    eps = synthetic_episodes(n=2, steps=12)
    base = [*TINY, "--steps", "1"]
    a_file = next(eps.glob("*.npz"))
    assert main(base + ["--episodes", str(a_file), "--run-dir", str(tmp_path / "r1")]) == 2
    assert "is not a directory" in capsys.readouterr().err and not (tmp_path / "r1").exists()
    (tmp_path / "plain").write_text("x")
    assert main(base + ["--episodes", str(eps), "--run-dir", str(tmp_path / "plain")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(base + ["--episodes", str(eps), "--run-dir", str(tmp_path / "plain" / "run")]) == 2
    assert "cannot write to the run folder" in capsys.readouterr().err
    r2 = tmp_path / "r2"
    r2.mkdir()
    torch.save(WorldModel(world_model_config("tiny")).state_dict(), r2 / "checkpoint.pt")
    assert main(base + ["--episodes", str(eps), "--run-dir", str(r2), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint of python -m worldmodel.train" in err and "'config'" in err
    assert "Traceback" not in err


def test_a_run_folder_that_cannot_be_written_is_named(synthetic_episodes, tmp_path, monkeypatch, capsys):
    """A permission error on the run folder is a message naming the folder (exit 2), not a traceback."""
    eps = synthetic_episodes(n=2, steps=12)

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_folder.RunLock, "acquire", refuse)
    assert main([*TINY, "--steps", "1", "--episodes", str(eps), "--run-dir", str(tmp_path / "run")]) == 2
    assert f"cannot write to the run folder {tmp_path / 'run'}: Permission denied" in capsys.readouterr().err


def test_a_read_only_run_folder_is_named():
    """A read-only run folder gives a message naming it (exit 2), checked as a user without write rights."""
    with read_only_folder() as run:
        eps = run.parent / "episodes"
        eps.mkdir()
        for i in range(2):
            write_synthetic_episode(eps / f"ep_{i:05d}.npz", 12, seed=i)
            (eps / f"ep_{i:05d}.npz").chmod(0o644)
        eps.chmod(0o755)
        proc = run_unprivileged(
            [
                sys.executable,
                "-m",
                "worldmodel.train",
                *TINY,
                "--steps",
                "1",
                "--episodes",
                str(eps),
                "--run-dir",
                str(run),
            ]
        )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write to the run folder {run}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_episode_of_the_wrong_frame_size_is_named(synthetic_episodes, tmp_path):
    """A 32-px episode is refused before any work, naming the file and the 64x64 frames expected."""
    eps = synthetic_episodes(n=3, steps=12)
    small = eps / "ep_00001.npz"
    with np.load(small) as f:
        data = {k: f[k] for k in f.files}
    data["image"] = np.ascontiguousarray(data["image"][:, ::2, ::2])
    np.savez_compressed(small, **data)
    with pytest.raises(ValueError, match=r"ep_00001.npz: frames are 32x32x3, the tiny model expects 64x64x3"):
        train(tiny_cfg(), eps, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_env_comes_from_the_episodes_and_mixed_action_counts_are_named(synthetic_episodes, tmp_path):
    """The model's actions are the episodes' one-hot width and its env id the manifest's (frame-only twin);
    episodes of two action counts in one folder are refused, naming a file of each."""
    eps = synthetic_episodes(n=3, steps=12)
    (eps / "manifest.json").write_text(json.dumps({"env": "longdream/MemoryMaze-9x9-ExtraObs-v0"}))
    for name in ("ep_00000.npz", "ep_00001.npz", "ep_00002.npz"):
        with np.load(eps / name) as f:
            data = {k: f[k] for k in f.files}
        data["action"] = np.concatenate([data["action"], np.zeros((len(data["action"]), 11), np.float32)], 1)
        np.savez_compressed(eps / name, **data)
    model, _ = train(tiny_cfg(steps=1), eps, tmp_path / "run", progress=False)
    assert (model.config.num_actions, model.config.backbone.num_actions) == (17, 17)
    assert model.config.env_id == "longdream/MemoryMaze-9x9-v0"
    assert load(tmp_path / "run" / "checkpoint.pt").config.num_actions == 17
    with np.load(eps / "ep_00001.npz") as f:
        data = {k: f[k] for k in f.files}
    data["action"] = data["action"][:, :6]
    np.savez_compressed(eps / "ep_00001.npz", **data)
    with pytest.raises(ValueError, match=r"ep_00001.npz: actions are one-hot over 6 actions, but .*ep_0000[02].npz"):
        train(tiny_cfg(steps=1), eps, tmp_path / "run2", progress=False)


def _checkpoint_step(path):
    try:
        return int(torch_load(path)["step"])
    except (FileNotFoundError, ValueError):
        return -1


def test_kill_9_then_resume_equals_an_uninterrupted_run(synthetic_episodes, tmp_path):
    """A CLI run killed with SIGKILL mid-training resumes (lock free, stale temps gone) to the exact same weights."""
    eps = synthetic_episodes(n=3, steps=16)
    cmd = [
        sys.executable,
        "-m",
        "worldmodel.train",
        *TINY,
        "--episodes",
        str(eps),
        "--steps",
        "120",
        "--ckpt-every",
        "1",
        "--batch-size",
        "2",
        "--ae-steps",
        "3",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--run-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _checkpoint_step(killed / "checkpoint.pt") < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at = _checkpoint_step(killed / "checkpoint.pt")
    print("killed at checkpoint step", at)
    assert 5 <= at < 120
    subprocess.run(cmd + ["--run-dir", str(killed), "--resume"], check=True, capture_output=True)
    subprocess.run(cmd + ["--run-dir", str(tmp_path / "full")], check=True, capture_output=True)
    a, b = torch_load(killed / "checkpoint.pt"), torch_load(tmp_path / "full" / "checkpoint.pt")
    assert a["step"] == b["step"] == 120
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert not list(killed.glob(".*.tmp"))
