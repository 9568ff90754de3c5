"""The action path: wiring (an action reaches its frame and later ones, never earlier ones), action dropout,
classifier-free guidance, the action-sensitivity measures on known answers, and old checkpoints."""

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worldmodel.backbone import Backbone
from worldmodel.evaluate import (
    action_sensitivity,
    segment_kind,
    shuffle_in_time,
    swap_left_right,
    windows_of_kind,
)
from worldmodel.model import WorldModel, check_model_config, load, world_model_config
from worldmodel.utils import atomic_torch_save, config_to_dict, torch_load


def _random_backbone(**fields) -> Backbone:
    """The tiny backbone with every weight random (the output heads are zero-initialised, which would hide
    any path)."""
    cfg = dataclasses.replace(world_model_config("tiny").backbone, **fields)
    torch.manual_seed(0)
    bb = Backbone(cfg)
    with torch.no_grad():
        for p in bb.parameters():
            p.normal_(0, 0.3)
    return bb.eval()


@pytest.mark.parametrize("action_tokens, prev_frame", [(False, False), (True, False), (True, True)])
def test_the_action_of_frame_t_changes_frame_t_and_later_never_earlier(action_tokens, prev_frame):
    bb = _random_backbone(action_tokens=action_tokens, prev_frame=prev_frame)
    c, (h, w) = bb.cfg.latent_channels, bb.cfg.latent_size
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, c, h, w, generator=g)
    noise = torch.rand(2, 6, generator=g)
    a = torch.randint(0, 6, (2, 6), generator=g)
    b = a.clone()
    t = 3
    b[:, t] = (a[:, t] + 1) % 6  # only the action of frame 3 changes
    with torch.no_grad():
        out_a, feat_a = bb(x, a, noise)
        out_b, feat_b = bb(x, b, noise)
    diff = (out_a - out_b).flatten(2).abs().amax(-1)  # (B, T)
    assert torch.all(diff[:, :t] == 0), "an action changed an earlier frame"
    assert torch.all(diff[:, t:] > 1e-4), f"the action did not reach frame {t} and later: {diff}"
    assert torch.equal(feat_a[:, :t], feat_b[:, :t])


def test_action_tokens_give_the_action_a_path_beside_adaln():
    """With adaLN's action embedding zeroed, the token path alone still carries the action."""
    bb = _random_backbone(action_tokens=True)
    with torch.no_grad():
        bb.action_emb.weight.zero_()
    c, (h, w) = bb.cfg.latent_channels, bb.cfg.latent_size
    x, noise = torch.randn(1, 2, c, h, w), torch.full((1, 2), 0.5)
    with torch.no_grad():
        y2 = bb(x, torch.tensor([[0, 2]]), noise)[0]
        y3 = bb(x, torch.tensor([[0, 3]]), noise)[0]
    assert (y2[:, 1] - y3[:, 1]).abs().max() > 1e-3
    plain = _random_backbone(action_tokens=False)
    assert plain.action_tok is None and "action_tok.weight" not in plain.state_dict()


def test_action_dropout_replaces_actions_by_the_null_action_at_its_rate():
    base = world_model_config("tiny")
    cfg = dataclasses.replace(base, backbone=dataclasses.replace(base.backbone, null_action=True), action_dropout=0.25)
    model = WorldModel(cfg)
    a = torch.randint(0, 6, (64, 50), generator=torch.Generator().manual_seed(0))
    d = model.drop_actions(a, torch.Generator().manual_seed(1))
    dropped = d != a
    assert torch.all(d[dropped] == 6) and torch.equal(d[~dropped], a[~dropped])
    assert abs(dropped.float().mean().item() - 0.25) < 0.02
    assert torch.equal(d, model.drop_actions(a, torch.Generator().manual_seed(1)))  # reproducible
    assert model.backbone.action_emb.weight.shape[0] == 7  # 6 actions + the null action
    loss, logs = model.loss(torch.randn(2, 8, *cfg.autoencoder_latent_shape), a[:2, :8], torch.zeros(2, 8))
    assert torch.isfinite(loss)
    plain = WorldModel(base)
    assert plain.drop_actions(a) is a


def test_dropout_and_guidance_without_a_null_action_are_refused():
    base = world_model_config("tiny")
    with pytest.raises(ValueError, match=r"action_dropout=0\.1 needs backbone\.null_action=True"):
        dataclasses.replace(base, action_dropout=0.1)
    with pytest.raises(ValueError, match=r"diffusion\.guidance=2\.0 needs a model with backbone\.null_action"):
        dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, guidance=2.0))
    with pytest.raises(ValueError, match=r"action_dropout=1\.0: expected a probability in \[0, 1\)"):
        dataclasses.replace(base, action_dropout=1.0)
    with pytest.raises(ValueError, match="null_action"):
        dataclasses.replace(base.backbone, num_actions=None, action_dim=2, null_action=True)


def _guided(guidance: float) -> WorldModel:
    base = world_model_config("tiny", min_context_frames=1)
    cfg = dataclasses.replace(
        base,
        backbone=dataclasses.replace(base.backbone, null_action=True),
        diffusion=dataclasses.replace(base.diffusion, guidance=guidance),
    )
    torch.manual_seed(0)
    model = WorldModel(cfg)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def test_guidance_zero_denoises_without_the_action_and_one_is_plain_conditioning():
    frames = torch.randint(0, 256, (1, 2, 64, 64, 3), dtype=torch.uint8)
    ctx_a = torch.zeros(1, 2, dtype=torch.long)

    def frame(model, action):
        dream = model.start(frames, ctx_a, torch.Generator().manual_seed(0))
        return model.step(dream, torch.tensor([action]))[0]

    g0 = _guided(0.0)
    assert torch.equal(frame(g0, 2), frame(g0, 3))  # guidance 0: v = v(null), the action plays no part
    g1, g2 = _guided(1.0), _guided(2.0)
    assert not torch.equal(frame(g1, 2), frame(g1, 3))
    assert not torch.equal(frame(g1, 2), frame(g2, 2))  # guidance 2 pushes further along the action


def test_segment_kind_swap_and_shuffle_on_known_answers():
    assert segment_kind(torch.tensor([2, 3, 1, 1])) == "turning"  # half turning: turning wins the tie
    assert segment_kind(torch.tensor([1, 1, 1, 2])) == "forward"
    assert segment_kind(torch.tensor([0, 0, 1, 2])) == "mixed"
    assert swap_left_right(torch.tensor([[0, 1, 2, 3, 4, 5]])).tolist() == [[0, 1, 3, 2, 5, 4]]
    a = torch.arange(10).repeat(3, 1)
    s = shuffle_in_time(a, torch.Generator().manual_seed(0))
    assert not torch.equal(s, a) and torch.equal(s.sort(1).values, a)
    acts = [torch.tensor([1] * 10 + [2] * 10), torch.tensor([1] * 20)]
    assert windows_of_kind(acts, context=4, horizon=4, kind="turning", count=5) == [(0, 4), (0, 8), (0, 12)]
    assert len(windows_of_kind(acts, 4, 4, "forward", count=3)) == 3


class _ActionCoder:
    """A stand-in model whose dream of a frame is a flat image coding its action (value 40 * action), plus
    noise from the generator unless ``follow`` is False (then it ignores the action and shows only the noise)."""

    def __init__(self, follow: bool):
        self.follow = follow

    def rollout(self, ctx_frames, ctx_actions, future, generator):
        k, tf = future.shape
        if self.follow:
            return {"frames": (future * 40).to(torch.uint8)[..., None, None, None].expand(k, tf, 16, 16, 3).clone()}
        noise = torch.randint(0, 256, (k, tf, 16, 16, 3), generator=generator, dtype=torch.uint8)
        return {"frames": noise}


def _coded_episodes():
    rng = np.random.default_rng(0)
    actions = [torch.from_numpy(rng.integers(0, 6, 80)).long() for _ in range(3)]
    frames = [(a * 40).to(torch.uint8)[:, None, None, None].expand(-1, 16, 16, 3).clone() for a in actions]
    return SimpleNamespace(frames=frames, actions=actions)


def test_action_sensitivity_scores_a_model_that_follows_its_actions():
    res = action_sensitivity(_ActionCoder(True), _coded_episodes(), context=4, horizon=6, windows=5)
    turning = res["turning"]
    assert turning["windows"] == 5 and turning["psnr_real"] == 100.0  # the real actions reproduce the frames
    assert turning["psnr_real_minus_swapped"] > 10 and turning["psnr_real_minus_shuffled"] > 0
    # its own action effect: the swapped rollout differs from the real one exactly where an action turned
    assert turning["psnr_dream_real_vs_swapped"] == pytest.approx(turning["psnr_swapped"])
    assert [tuple(p) for p in turning["picks"]] == windows_of_kind(_coded_episodes().actions, 4, 6, "turning", 5)
    const = res["constant"]
    assert const["psnr_seed_vs_seed"] == 100.0  # this stand-in ignores the noise
    assert const["psnr_left_vs_right"] == pytest.approx(10 * np.log10(255**2 / 40**2), abs=0.01)
    assert const["follows_actions"] is True


def test_action_sensitivity_catches_a_model_that_ignores_its_actions():
    res = action_sensitivity(_ActionCoder(False), _coded_episodes(), context=4, horizon=6, windows=5)
    assert res["turning"]["psnr_real_minus_swapped"] == 0.0  # the same noise under any actions
    assert res["turning"]["psnr_dream_real_vs_swapped"] == 100.0  # identical rollouts: no action effect
    assert res["constant"]["psnr_left_vs_right"] == 100.0
    assert res["constant"]["follows_actions"] is False
    with pytest.raises(ValueError, match="context, horizon, windows must be >= 1"):
        action_sensitivity(_ActionCoder(True), _coded_episodes(), context=0, horizon=6)


def test_older_checkpoints_load_and_a_changed_recipe_is_named_on_resume(tiny_checkpoint, tmp_path):
    """A checkpoint written before the action fields existed loads with their old behaviour (defaults off);
    resuming it under a config that turns them on names each changed field."""
    ckpt = torch_load(tiny_checkpoint)
    model_cfg = ckpt["config"]["model"]
    for key in ("action_tokens", "null_action", "prev_frame"):
        model_cfg["backbone"].pop(key, None)
    for entry in ("model", "ema"):  # an old model had no per-token action vectors and no previous-frame input
        ckpt[entry] = {
            k: v for k, v in ckpt[entry].items() if not k.startswith(("backbone.action_tok.", "backbone.prev_proj."))
        }
    model_cfg.pop("action_dropout", None)
    model_cfg["diffusion"].pop("guidance", None)
    old = tmp_path / "old.pt"
    atomic_torch_save(ckpt, old)
    model = load(old, device="cpu")
    assert not model.config.backbone.action_tokens and model.config.diffusion.guidance == 1.0
    new = dataclasses.replace(model.config, backbone=dataclasses.replace(model.config.backbone, action_tokens=True))
    with pytest.raises(ValueError, match=re.escape("backbone.action_tokens")):
        check_model_config(new, model_cfg, old)
    check_model_config(model.config, config_to_dict(model.config), old)  # same config: accepted
    check_model_config(model.config, model_cfg, old)  # fields it lacks count as their (old-behaviour) defaults


def test_a_prev_frame_model_streams_like_its_parallel_pass():
    """A WorldModel with ``prev_frame``: prefill then step keeps the previous frame as fed in its state, so a
    teacher-forced parallel pass and prefill + one step agree on the next frame's prediction."""
    cfg = world_model_config("tiny")
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, prev_frame=True, action_tokens=True))
    torch.manual_seed(0)
    model = WorldModel(cfg).eval()
    bb = model.backbone
    with torch.no_grad():
        for p in bb.parameters():
            p.normal_(0, 0.3)
    c, (h, w) = bb.cfg.latent_channels, bb.cfg.latent_size
    g = torch.Generator().manual_seed(2)
    x, a, n = torch.randn(1, 5, c, h, w, generator=g), torch.randint(0, 6, (1, 5), generator=g), torch.rand(1, 5)
    with torch.no_grad():
        out, _ = bb(x, a, n)
        _, _, state = bb.prefill(x[:, :4], a[:, :4], n[:, :4])
        assert torch.equal(state["prev"]["x"], x[:, 3]) and torch.equal(state["prev"]["noise"], n[:, 3])
        o4, _, _ = bb.step(x[:, 4], a[:, 4], n[:, 4], state)
    assert (o4 - out[:, 4]).abs().max().item() < 1e-4
