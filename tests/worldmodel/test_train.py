"""Tests for worldmodel.train and worldmodel.model: learning, resume, rollout, reward head, bad input."""

import dataclasses
import json

import pytest
import torch

import worldmodel.model as wm
from worldmodel.model import WorldModel, load, world_model_config
from worldmodel.train import TRAIN_PRESETS, NonFiniteLossError, train


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
    from envs.episodes import EpisodeStore
    from worldmodel.train import LatentEpisodes

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


def test_rollout_shapes_and_bounded_state(synthetic_episodes, tmp_path):
    """A rollout of N frames gives (B, N, 64, 64, 3) uint8 and the carried state does not grow with N."""
    eps = synthetic_episodes(n=2, steps=20)
    train(tiny_cfg(steps=2), eps, tmp_path / "run", progress=False)
    model = load(tmp_path / "run" / "checkpoint.pt", device="cpu")
    from envs.episodes import load_episode

    ep = load_episode(sorted(eps.glob("*.npz"))[0])
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


def test_same_generator_seed_gives_the_same_dream(synthetic_episodes, tmp_path):
    """Rollouts are reproducible given the generator seed, and differ for another seed."""
    eps = synthetic_episodes(n=2, steps=20)
    train(tiny_cfg(steps=2), eps, tmp_path / "run", progress=False)
    model = load(tmp_path / "run" / "checkpoint.pt", device="cpu")
    ctx = torch.zeros(1, 3, 64, 64, 3, dtype=torch.uint8)
    act = torch.zeros(1, 3, dtype=torch.long)
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
        z[:, :, 0] += 3.0 * r[:, :, None, None]          # the planted feature: channel 0 lit up on reward frames
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
        pred = model.reward_head(feats).squeeze(-1) > 0
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
    from envs.episodes import EpisodeStore
    from worldmodel.train_autoencoder import load_autoencoder, train_autoencoder

    eps = synthetic_episodes(n=3, steps=20)
    cfg = tiny_cfg(steps=3)
    tr, te = EpisodeStore(eps).split(test_fraction=cfg.test_fraction, seed=cfg.seed)
    model_cfg = world_model_config("tiny")
    train_autoencoder(model_cfg.autoencoder, tr, te, tmp_path / "run", steps=cfg.ae_steps,
                      batch_size=cfg.ae_batch_size, device="cpu", log=False, stop_after=5)
    with pytest.raises(ValueError, match="unfinished"):
        load_autoencoder(tmp_path / "run" / "autoencoder.pt")
    _, res = train(cfg, eps, tmp_path / "run", progress=False)
    assert res["steps"] == 3
    assert bool(load_autoencoder(tmp_path / "run" / "autoencoder.pt").stats_ready)


def test_step_leaves_the_dream_untouched_so_forks_are_free(synthetic_episodes, tmp_path):
    """Stepping a fork of a DreamState does not change what the original produces next."""
    eps = synthetic_episodes(n=2, steps=20)
    train(tiny_cfg(steps=2), eps, tmp_path / "run", progress=False)
    model = load(tmp_path / "run" / "checkpoint.pt", device="cpu")
    dream = model.start(torch.zeros(1, 3, 64, 64, 3, dtype=torch.uint8), torch.zeros(1, 3, dtype=torch.long))
    a, _, _ = model.step(dream, torch.tensor([1]))
    for act in (2, 3, 4):
        model.step(dream, torch.tensor([act]))          # a planner exploring other branches
    b, _, _ = model.step(dream, torch.tensor([1]))
    assert torch.equal(a, b)


def test_worldmodel_load_is_exported(synthetic_episodes, tmp_path):
    """`worldmodel.load(path)` returns the trained model in eval mode."""
    import worldmodel

    eps = synthetic_episodes(n=2, steps=20)
    train(tiny_cfg(steps=2), eps, tmp_path / "run", progress=False)
    m = worldmodel.load(tmp_path / "run" / "checkpoint.pt", device="cpu")
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
