"""worldmodel.evaluate: the infinite-PSNR rule, copy-last baseline, window choice, reward P/R, open-loop evaluate."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worldmodel.evaluate import (
    PSNR_CAP_DB,
    WINDOW_STRIDE,
    compare_open_loop,
    copy_last_baseline,
    eval_windows,
    evaluate,
    event_precision_recall,
    frame_psnr,
    frame_ssim,
    per_step_metrics,
    reward_precision_recall,
)
from worldmodel.train import LatentEpisodes


def _video(k=2, t=5, seed=0):
    """Random uint8 windows (K, T, 16, 16, 3)."""
    return torch.randint(0, 256, (k, t, 16, 16, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class CopyLastStub:
    """A stand-in world model: its dream repeats the last context frame, its autoencoder is exact (frames as
    latents), and its reward head predicts an event wherever the action is 1."""

    def __init__(self):
        self.config = SimpleNamespace(diffusion=SimpleNamespace(context_noise=0.1))
        self.device = torch.device("cpu")
        self.rollouts = []

    def rollout(self, frames, actions, future_actions, generator=None):
        self.rollouts.append((frames.clone(), actions.clone(), future_actions.clone()))
        tf = future_actions.shape[1]
        return {"frames": frames[:, -1:].expand(-1, tf, -1, -1, -1).clone(), "rewards": torch.zeros(len(frames), tf)}

    def encode_frames(self, frames):
        return frames.float()

    def decode_latents(self, z):
        return z.round().clamp(0, 255).to(torch.uint8)

    def backbone(self, x, actions, tau):
        return None, actions.float()[..., None]  # feats (1, T, 1)

    def reward_events(self, feats):
        return feats[..., 0] == 1.0


def _episodes(lengths, seed=0):
    """HeldOutEpisodes of random frames; actions cycle 0..5 and rewards are 1 where t % 4 == 1."""
    frames = [_video(1, n, seed + i)[0] for i, n in enumerate(lengths)]
    actions = [torch.arange(n) % 6 for n in lengths]
    rewards = [(torch.arange(n) % 4 == 1).float() for n in lengths]
    return SimpleNamespace(frames=frames, z=[f.float() for f in frames], actions=actions, rewards=rewards)


def test_identical_frames_score_the_psnr_cap_and_ssim_one():
    """The one rule for infinite PSNR: identical frames score exactly PSNR_CAP_DB (finite), SSIM exactly 1."""
    v = _video()
    p = frame_psnr(v, v.clone())
    assert p.shape == (2, 5) and torch.all(p == PSNR_CAP_DB)
    assert torch.allclose(frame_ssim(v, v.clone()), torch.ones(2, 5))
    steps = per_step_metrics(v, v.clone())
    assert steps["psnr"] == [PSNR_CAP_DB] * 5 and all(math.isfinite(x) for x in steps["psnr"])


def test_psnr_below_the_cap_is_untouched():
    """One intensity level off in one pixel of a 64x64 frame is 10 log10(255^2 * 64*64*3) dB (~89), not capped;
    a mean over one identical and one different frame is the mean of the cap and that value."""
    a = np.zeros((2, 64, 64, 3), np.uint8)
    b = a.copy()
    b[1, 10, 20, 2] = 1
    want = 10 * math.log10(255**2 * 64 * 64 * 3)
    p = frame_psnr(a, b)
    assert p[0].item() == PSNR_CAP_DB
    assert p[1].item() == pytest.approx(want, abs=1e-3) and want < PSNR_CAP_DB
    assert per_step_metrics(a[None], b[None])["psnr"] == pytest.approx([PSNR_CAP_DB, want], abs=1e-3)


def test_copy_last_baseline_on_a_constant_video_is_perfect():
    """On a video that never changes, copying the last context frame scores the cap and SSIM 1 at every step;
    on a changing video it is exactly the last context frame repeated."""
    const = _video(2, 1).expand(-1, 9, -1, -1, -1).clone()  # (2, 9, 16, 16, 3)
    ctx, future = const[:, :4], const[:, 4:]
    pred = copy_last_baseline(ctx, 5)
    assert pred.shape == (2, 5, 16, 16, 3)
    scores = per_step_metrics(future, pred)
    assert scores["psnr"] == [PSNR_CAP_DB] * 5 and scores["ssim"] == pytest.approx([1.0] * 5)
    v = _video(2, 6)
    pred = copy_last_baseline(v[:, :4], 3)
    assert all(torch.equal(pred[:, i], v[:, 3]) for i in range(3))
    with pytest.raises(ValueError, match="horizon"):
        copy_last_baseline(v[:, :4], 0)


def test_metrics_refuse_float_or_mismatched_frames():
    """Float frames or frames of different shapes are refused with the shapes in the message."""
    v = _video()
    with pytest.raises(ValueError, match="uint8"):
        frame_psnr(v.float(), v)
    with pytest.raises(ValueError, match=r"\(2, 5, 16, 16, 3\) vs \(2, 4, 16, 16, 3\)"):
        frame_ssim(v, v[:, :4])


def test_event_precision_recall_known_answer():
    """pred [1 1 0 0 1] vs true [1 0 1 0 1]: 2 TP, 1 FP, 1 FN -> P = R = 2/3; no predictions -> P None."""
    pred = np.array([1, 1, 0, 0, 1], bool)
    true = np.array([1, 0, 1, 0, 1], bool)
    r = event_precision_recall(pred, true)
    assert (r["reward_true_positives"], r["reward_false_positives"], r["reward_false_negatives"]) == (2, 1, 1)
    assert r["reward_precision"] == pytest.approx(2 / 3) and r["reward_recall"] == pytest.approx(2 / 3)
    none = event_precision_recall(np.zeros(5, bool), true, prefix="")
    assert none["precision"] is None and none["recall"] == 0.0 and none["false_negatives"] == 3
    with pytest.raises(ValueError, match="boolean"):
        event_precision_recall(pred.astype(int), true)
    with pytest.raises(ValueError, match="shape"):
        event_precision_recall(pred[:4], true)


def test_eval_windows_are_deterministic_round_robin_and_in_range():
    """The demo's layout (4 held-out episodes of 501 frames, 8 windows of 32) gives the windows every earlier
    evaluation used; episodes too short are skipped; starts stay inside their episode; none fits -> ValueError."""
    assert WINDOW_STRIDE == 97
    assert eval_windows([501] * 4, 32, 8) == [
        (0, 0),
        (1, 97),
        (2, 194),
        (3, 291),
        (0, 388),
        (1, 15),
        (2, 112),
        (3, 209),
    ]
    lengths = [10, 40, 3, 35]
    picks = eval_windows(lengths, 20, 30)
    assert picks == eval_windows(lengths, 20, 30)
    assert [e for e, _ in picks[:4]] == [1, 3, 1, 3]
    assert all(0 <= s and s + 20 <= lengths[e] for e, s in picks)
    # one episode with 21 starts (coprime with the stride): its first 21 windows visit every start once
    assert sorted(s for _, s in eval_windows([40], 20, 21)) == list(range(21))
    with pytest.raises(ValueError, match="longest of 2: 12 frames"):
        eval_windows([12, 7], 20, 3)


def test_reward_precision_recall_counts_over_episodes():
    """With a stub whose head fires where the action is 1 and rewards where t % 4 == 1, the counts follow."""
    data = _episodes([12, 8])
    pred = torch.cat([a == 1 for a in data.actions])
    true = torch.cat([r > 0 for r in data.rewards])
    want = event_precision_recall(pred, true)
    got = reward_precision_recall(CopyLastStub(), data)
    assert got == want
    # t = 1, 7 (12 frames) and 1, 7 (8 frames) fire; t = 1, 5, 9 and 1, 5 are rewards: 2 TP, 2 FP, 3 FN
    assert (got["reward_true_positives"], got["reward_false_positives"], got["reward_false_negatives"]) == (2, 2, 3)


def test_evaluate_with_a_copy_last_model_scores_it_as_the_baseline():
    """A model that copies the last context frame scores exactly the copy-last row; its exact autoencoder scores
    the cap; the windows it was given are those of eval_windows with the real actions; too-short data -> error."""
    data = _episodes([20, 15, 9])
    model = CopyLastStub()
    res = evaluate(model, data, context=3, horizon=4, windows=4)
    assert res["psnr_dream"] == res["psnr_copy_last"] and res["ssim_dream"] == res["ssim_copy_last"]
    assert len(res["psnr_dream"]) == 4 and res["psnr_autoencoder"] == [PSNR_CAP_DB] * 4
    assert res["psnr_dream_mean"] == pytest.approx(np.mean(res["psnr_dream"]))
    assert res["psnr_dream_mean"] < 20  # random frames: copying the last one is far from them
    assert (res["windows"], res["episodes"], res["context_frames"], res["horizon"]) == (4, 3, 3, 4)
    frames, actions, future = model.rollouts[0]
    for k, (e, s) in enumerate(eval_windows([20, 15, 9], 7, 4)):
        assert torch.equal(frames[k], data.frames[e][s : s + 3])
        assert torch.equal(future[k], data.actions[e][s + 3 : s + 7])
    assert res["reward_true_positives"] == reward_precision_recall(model, data)["reward_true_positives"]
    assert res["strip"].dtype == np.uint8
    assert "error" in evaluate(model, data, context=16, horizon=8, windows=2)
    with pytest.raises(ValueError, match="keep_frames"):
        evaluate(model, SimpleNamespace(**{**vars(data), "frames": []}), context=3, horizon=4, windows=2)


def test_evaluate_on_the_tiny_model_is_deterministic(tiny_model, real_episodes):
    """On the shared tiny model and real episodes: same result twice, finite scores, and the per-step rows equal
    compare_open_loop on the same windows (one code path for training and the benchmarks)."""
    paths = sorted(real_episodes.glob("*.npz"))[:2]
    data = LatentEpisodes(tiny_model, paths, min_frames=2, progress=False, keep_frames=True)
    a = evaluate(tiny_model, data, context=4, horizon=3, windows=2)
    b = evaluate(tiny_model, data, context=4, horizon=3, windows=2)
    a.pop("strip"), b.pop("strip")
    assert a == b
    assert all(math.isfinite(x) for k, v in a.items() if k.startswith(("psnr_", "ssim_")) for x in np.atleast_1d(v))
    picks = eval_windows([len(f) for f in data.frames], 7, 2)
    frames = torch.stack([data.frames[e][s : s + 7] for e, s in picks])
    actions = torch.stack([data.actions[e][s : s + 7] for e, s in picks])
    dream = tiny_model.rollout(
        frames[:, :4], actions[:, :4], actions[:, 4:], generator=torch.Generator().manual_seed(1234)
    )["frames"]
    rows = compare_open_loop(tiny_model, frames[:, :4], frames[:, 4:], dream)
    assert all(a[k] == v for k, v in rows.items())
