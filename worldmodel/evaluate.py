"""Open-loop evaluation of a world model: imagined frames against the real ones after a real context.

The one place the project scores dreams; training (``worldmodel.train``), ``benchmarks.world_model_report`` and
``benchmarks.dream_fidelity`` all use it:

    evaluate(model, held_out, context=16, horizon=16, windows=8)   # held-out windows: dream vs real, reward P/R
    compare_open_loop(model, context_frames, real, dream)          # per-step PSNR/SSIM: dream, copy-last, AE
    reward_precision_recall(model, episodes)                       # reward-event P/R, teacher-forced
    action_sensitivity(model, held_out, context=16, horizon=8)     # does the dream follow its actions?
    event_precision_recall(predicted, true)                        # P/R of any two boolean event arrays

Three rows are always scored against the real future frames, step by step and averaged over windows:
  * the dream: what the model imagines under the real actions, never seeing the real future (open loop);
  * copy-last: the last real context frame repeated (``copy_last_baseline``), what a model that learnt nothing
    about motion scores; a dream should beat it;
  * the autoencoder: the real frame encoded and decoded, the ceiling the latent space allows.

The rule for infinite PSNR (one rule, everywhere): identical frames have MSE 0 and PSNR +inf, which would make
any mean infinite (and is not valid JSON). Every per-frame PSNR here is capped at ``PSNR_CAP_DB`` = 100 dB
before averaging: identical frames count as 100 dB. The cap lies above every non-identical pair of 8-bit frames
up to 128 x 128 x 3 (one intensity level off in one pixel of a 64 x 64 frame is 89 dB, of a 128 x 128 frame
95 dB), so it reorders no pair of frames there; it only keeps means finite. SSIM needs no rule (identical
frames score exactly 1).

Axis legend: K windows (dreams), Tc context frames, Tf imagined frames, T frames of an episode, H x W x 3 uint8
frames, C x h x w latent grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .autoencoder import frames_to_float
from .diffusion import add_noise
from .metrics import lpips, psnr, ssim
from .model import WorldModel
from .utils import image_strip

__all__ = [
    "EVAL_SEED",
    "MEMORY_MAZE_ACTIONS",
    "ActionMeanings",
    "action_sensitivity",
    "segment_kind",
    "shuffle_in_time",
    "swap_left_right",
    "windows_of_kind",
    "PSNR_CAP_DB",
    "STRIP_FRAMES",
    "WINDOW_STRIDE",
    "HeldOutEpisodes",
    "compare_open_loop",
    "copy_last_baseline",
    "eval_windows",
    "evaluate",
    "event_precision_recall",
    "frame_lpips",
    "frame_psnr",
    "frame_ssim",
    "pair_scores",
    "per_step_metrics",
    "reward_precision_recall",
]

PSNR_CAP_DB = 100.0
"""PSNR (dB) given to identical frames, and the cap of every per-frame PSNR (see the module docstring)."""

WINDOW_STRIDE = 97
"""Start offset between successive evaluation windows (see ``eval_windows``): a prime, so the starts of one
episode's windows never repeat before they have visited every start (unless the episode has a multiple of 97
starts), and large enough that successive windows land far apart in an episode of a few hundred frames."""

EVAL_SEED = 1234
"""Seed of the dream noise in ``evaluate``: every evaluation of a run imagines with the same noise."""

REWARD_NOISE_SEED = 0
"""Seed of the stabilisation noise added to real latents in ``reward_precision_recall``."""

STRIP_FRAMES = 8
"""Imagined frames of the first window shown in ``evaluate``'s "strip" (real | dream | error)."""

METRIC_BATCH = 256
"""Frames converted to float and scored at once (bounds the memory of long horizons: SSIM works in float64)."""

_Frames = torch.Tensor | np.ndarray


class HeldOutEpisodes(Protocol):
    """What evaluation reads from a set of encoded episodes (``worldmodel.train.LatentEpisodes`` is one).

    One entry per episode, episodes in the same order in every list."""

    frames: Sequence[torch.Tensor]
    """uint8 frames (T, H, W, 3) per episode; may be empty when only reward events are scored."""
    z: Sequence[torch.Tensor]
    """Clean latents (T, C, h, w) per episode (the autoencoder's encoding of ``frames``)."""
    actions: Sequence[torch.Tensor]
    """int64 actions (T,) per episode; ``actions[t]`` led into frame t."""
    rewards: Sequence[torch.Tensor]
    """float rewards (T,) per episode; a reward event is a reward > 0."""


# ---------------------------------------------------------------------- per-frame metrics


def _as_frames(x: _Frames, name: str) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) as a torch tensor (numpy arrays shared, not copied)."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype != torch.uint8 or t.dim() < 4 or t.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 frames (..., H, W, 3), got {t.dtype} {tuple(t.shape)}")
    return t


def _per_frame(metric, real: _Frames, other: _Frames) -> torch.Tensor:
    """metric(real frame, other frame) for every frame of two uint8 (..., H, W, 3) arrays: float (...)."""
    a, b = _as_frames(real, "real frames"), _as_frames(other, "compared frames")
    if a.shape != b.shape:
        raise ValueError(f"real and compared frames differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    lead = a.shape[:-3]
    fa, fb = a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])  # (N, H, W, 3)
    out = [
        metric(frames_to_float(fa[i : i + METRIC_BATCH]), frames_to_float(fb[i : i + METRIC_BATCH]))
        for i in range(0, len(fa), METRIC_BATCH)
    ]
    return torch.cat(out).reshape(lead)


def frame_psnr(real: _Frames, other: _Frames) -> torch.Tensor:
    """PSNR (dB) of every frame pair, uint8 (..., H, W, 3) -> float32 (...), capped at ``PSNR_CAP_DB``
    (identical frames score exactly ``PSNR_CAP_DB``)."""
    return _per_frame(psnr, real, other).clamp(max=PSNR_CAP_DB)


def frame_ssim(real: _Frames, other: _Frames) -> torch.Tensor:
    """SSIM of every frame pair, uint8 (..., H, W, 3) -> float32 (...) (identical frames score 1)."""
    return _per_frame(ssim, real, other)


def frame_lpips(real: _Frames, other: _Frames) -> torch.Tensor:
    """LPIPS distance of every frame pair, uint8 (..., H, W, 3) -> float32 (...); needs local weights
    (``worldmodel.metrics.lpips_available``)."""
    return _per_frame(lpips, real, other)


def per_step_metrics(real: _Frames, other: _Frames, with_lpips: bool = False) -> dict[str, list[float]]:
    """Per-step metrics of K windows of Tf frames, averaged over the windows: uint8 (K, Tf, H, W, 3) twice ->
    {"psnr": [Tf floats], "ssim": [Tf floats]} (and "lpips" with ``with_lpips``)."""
    if _as_frames(real, "real frames").dim() != 5:
        raise ValueError(f"per_step_metrics expects windows (K, Tf, H, W, 3), got shape {tuple(real.shape)}")
    out = {"psnr": frame_psnr(real, other).mean(0).tolist(), "ssim": frame_ssim(real, other).mean(0).tolist()}
    if with_lpips:
        out["lpips"] = frame_lpips(real, other).mean(0).tolist()
    return out


# ---------------------------------------------------------------------- open loop


def copy_last_baseline(context_frames: _Frames, horizon: int) -> torch.Tensor:
    """The copy-last prediction: the last context frame of each window repeated ``horizon`` times.

    context_frames uint8 (K, Tc, H, W, 3) -> uint8 (K, horizon, H, W, 3) (an expanded view, not a copy)."""
    ctx = _as_frames(context_frames, "context frames")
    if ctx.dim() != 5 or ctx.shape[1] < 1:
        raise ValueError(f"context frames must be (K, Tc >= 1, H, W, 3), got {tuple(ctx.shape)}")
    if int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return ctx[:, -1:].expand(-1, int(horizon), -1, -1, -1)


@torch.no_grad()
def compare_open_loop(
    model: WorldModel, context_frames: _Frames, real: _Frames, dream: _Frames, with_lpips: bool = False
) -> dict[str, list[float]]:
    """Per-step scores of a dream and the two references against the real future frames, averaged over windows.

    context_frames uint8 (K, Tc, H, W, 3) (its last frame is the copy-last prediction), real and dream uint8
    (K, Tf, H, W, 3). Returns lists of Tf floats under "psnr_dream", "psnr_copy_last", "psnr_autoencoder",
    "ssim_dream", "ssim_copy_last", "ssim_autoencoder" (and "lpips_dream", "lpips_copy_last" with
    ``with_lpips``)."""
    real_t = _as_frames(real, "real frames")
    copy_last = copy_last_baseline(context_frames, real_t.shape[1])  # (K, Tf, H, W, 3)
    recon = model.decode_latents(model.encode_frames(real_t)).cpu()  # (K, Tf, H, W, 3)
    rows = {
        "dream": per_step_metrics(real_t, dream, with_lpips),
        "copy_last": per_step_metrics(real_t, copy_last, with_lpips),
        "autoencoder": per_step_metrics(real_t, recon),
    }
    out = {}
    for metric in ("psnr", "ssim", "lpips"):
        for row, scores in rows.items():
            if metric in scores:
                out[f"{metric}_{row}"] = scores[metric]
    return out


def eval_windows(lengths: Sequence[int], need: int, count: int) -> list[tuple[int, int]]:
    """The ``count`` evaluation windows of ``need`` frames over episodes of ``lengths`` frames, deterministic:
    (episode index, start frame) pairs.

    Window j is taken from the long-enough episodes in turn (the (j mod n)-th of the n episodes with at least
    ``need`` frames, so every episode weighs alike) and starts at (j * WINDOW_STRIDE) mod (that episode's
    number of possible starts). The same data always gives the same windows, so successive evaluations of a
    run, and runs on the same held-out episodes, are compared on the same frames. A ValueError names the
    longest episode when none has ``need`` frames."""
    if int(need) < 1 or int(count) < 1:
        raise ValueError(f"eval_windows: need and count must be >= 1, got need={need}, count={count}")
    ok = [i for i, n in enumerate(lengths) if n >= need]
    if not ok:
        raise ValueError(
            f"no held-out episode has the {need} frames an evaluation window needs "
            f"(longest of {len(lengths)}: {max(lengths, default=0)} frames)"
        )
    picks = []
    for j in range(int(count)):
        e = ok[j % len(ok)]
        picks.append((e, (j * WINDOW_STRIDE) % (lengths[e] - need + 1)))
    return picks


def _means(per_step: dict[str, list[float]]) -> dict[str, float]:
    """{key: per-step list} -> {key + "_mean": mean over steps}."""
    return {f"{k}_mean": float(np.mean(v)) for k, v in per_step.items()}


@torch.no_grad()
def evaluate(
    model: WorldModel, data: HeldOutEpisodes, context: int, horizon: int, windows: int, seed: int = EVAL_SEED
) -> dict:
    """Held-out open loop: ``windows`` windows (``eval_windows``) of real context, then ``horizon`` frames
    imagined under the real actions, scored against the real frames; and reward precision/recall.

    Returns {"context_frames", "horizon", "episodes" (distinct episodes used), "windows", the per-step lists
    of ``compare_open_loop`` and their "<key>_mean", the ``reward_precision_recall`` keys, "strip" (uint8
    image real | dream | error of the first window's first ``STRIP_FRAMES`` imagined frames)}; or {"error": why} when no
    episode is long enough. ``data.frames`` must hold the episodes' frames."""
    tc, tf = int(context), int(horizon)
    if tc < 1 or tf < 1 or int(windows) < 1:
        raise ValueError(f"evaluate: context, horizon and windows must be >= 1, got {context}, {horizon}, {windows}")
    if len(data.frames) != len(data.actions):
        raise ValueError(
            f"evaluate needs the frames of every episode: {len(data.frames)} frame arrays for "
            f"{len(data.actions)} episodes (encode them with keep_frames=True)"
        )
    need = tc + tf
    lengths = [len(f) for f in data.frames]
    if max(lengths, default=0) < need:
        return {"error": f"no held-out episode has {need} frames"}
    # 1. the windows: real frames and the actions that led into them
    picks = eval_windows(lengths, need, windows)
    frames = torch.stack([data.frames[e][s : s + need] for e, s in picks])  # (K, Tc+Tf, H, W, 3)
    actions = torch.stack([data.actions[e][s : s + need] for e, s in picks])  # (K, Tc+Tf)
    # 2. imagine the future from the real context under the real actions (open loop)
    gen = torch.Generator().manual_seed(seed)
    out = model.rollout(frames[:, :tc], actions[:, :tc], actions[:, tc:], generator=gen)
    real = frames[:, tc:]  # (K, Tf, H, W, 3)
    # 3. score dream, copy-last and autoencoder against the real frames, per step
    per_step = compare_open_loop(model, frames[:, :tc], real, out["frames"])
    res = {
        "context_frames": tc,
        "horizon": tf,
        "episodes": len({e for e, _ in picks}),
        "windows": len(picks),
        **per_step,
        **_means(per_step),
    }
    # 4. the reward head on the held-out episodes (teacher-forced at the stabilisation noise level)
    res.update(reward_precision_recall(model, data))
    res["strip"] = image_strip(real[0, :STRIP_FRAMES], out["frames"][0, :STRIP_FRAMES])
    return res


# ---------------------------------------------------------------------- reward events


def event_precision_recall(predicted: _Frames, true: _Frames, prefix: str = "reward_") -> dict:
    """Precision and recall of predicted events against true ones (boolean arrays of one shape).

    Returns {prefix + "true_positives", "false_positives", "false_negatives" (ints), "precision" (None when
    nothing was predicted), "recall" (None when nothing happened)}."""
    pred, real = torch.as_tensor(np.asarray(predicted)), torch.as_tensor(np.asarray(true))
    if pred.shape != real.shape:
        raise ValueError(f"predicted and true events differ in shape: {tuple(pred.shape)} vs {tuple(real.shape)}")
    if pred.dtype != torch.bool or real.dtype != torch.bool:
        raise ValueError(f"events must be boolean arrays, got {pred.dtype} and {real.dtype}")
    tp = int((pred & real).sum())
    fp = int((pred & ~real).sum())
    fn = int((~pred & real).sum())
    return {
        f"{prefix}true_positives": tp,
        f"{prefix}false_positives": fp,
        f"{prefix}false_negatives": fn,
        f"{prefix}precision": tp / (tp + fp) if tp + fp else None,
        f"{prefix}recall": tp / (tp + fn) if tp + fn else None,
    }


@torch.no_grad()
def reward_precision_recall(model: WorldModel, data: HeldOutEpisodes) -> dict:
    """Reward events predicted on episodes, each in one causal pass over the whole episode with the real
    latents fed at the stabilisation noise level (as the dream feeds its committed frames), against the real
    events (reward > 0); summed over episodes. Keys of ``event_precision_recall`` with prefix "reward_"."""
    cn = model.config.diffusion.context_noise
    gen = torch.Generator().manual_seed(REWARD_NOISE_SEED)
    preds, trues = [], []
    for z, a, r in zip(data.z, data.actions, data.rewards, strict=True):
        zz = z[None].to(model.device)  # (1, T, C, h, w)
        tau = torch.full(zz.shape[:2], cn, device=model.device)  # (1, T)
        x = add_noise(zz, tau, torch.randn(zz.shape, generator=gen).to(zz))
        _, feats = model.backbone(x, a[None].to(model.device), tau)  # feats (1, T, D)
        preds.append(model.reward_events(feats)[0].cpu())  # (T,) bool
        trues.append(r > 0)
    if not preds:
        return event_precision_recall(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    return event_precision_recall(torch.cat(preds), torch.cat(trues))


# ---------------------------------------------------------------------- action sensitivity
# Does the dream follow its actions? A model can guess motion from the context alone (a scripted explorer's
# turns follow the corridors) and ignore the action it is given. Two measures, on held-out episodes:
#  1. open loop under the real actions vs the same actions shuffled in time vs left/right swapped, separately on
#     windows whose imagined stretch is mostly turning and mostly going forward (one noise seed for all three,
#     so only the actions differ); a model that reads its actions scores best under the real ones;
#  2. from one context and one noise seed, rollouts under constant "left", "right" and "forward", next to two
#     noise seeds under the same constant action: a model that follows its actions makes left and right differ
#     at least as much as two seeds do (a PSNR between them no higher than seed-vs-seed).


@dataclass(frozen=True)
class ActionMeanings:
    """Which discrete actions turn and go forward, and each action's mirror image (left <-> right). The default
    is Memory Maze's Discrete(6): 0 noop, 1 forward, 2 turn left, 3 turn right, 4 forward + left,
    5 forward + right."""

    turn: tuple[int, ...] = (2, 3, 4, 5)
    """Actions that turn (a window is "turning" when at least SEGMENT_MAJORITY of its imagined actions do)."""
    forward: tuple[int, ...] = (1,)
    """Actions that only go forward."""
    mirror: tuple[int, ...] = (0, 1, 3, 2, 5, 4)
    """mirror[a]: action a with left and right swapped (forward and noop map to themselves)."""
    left: int = 2
    """The constant "left" action of measure 2."""
    right: int = 3
    """The constant "right" action of measure 2."""


MEMORY_MAZE_ACTIONS = ActionMeanings()
SEGMENT_MAJORITY = 0.5
"""An imagined stretch is "turning" (or "forward") when at least this fraction of its actions turn (go forward)."""
SEGMENT_SCAN_STRIDE = 4
"""Window starts scanned every this many frames when looking for turning / forward stretches."""
SEGMENT_KINDS = ("turning", "forward")


def segment_kind(actions: torch.Tensor, meanings: ActionMeanings = MEMORY_MAZE_ACTIONS) -> str:
    """ "turning", "forward" or "mixed" for the actions (Tf,) of an imagined stretch (turning wins a tie)."""
    a = torch.as_tensor(actions).long()
    if torch.isin(a, torch.tensor(meanings.turn)).float().mean() >= SEGMENT_MAJORITY:
        return "turning"
    if torch.isin(a, torch.tensor(meanings.forward)).float().mean() >= SEGMENT_MAJORITY:
        return "forward"
    return "mixed"


def windows_of_kind(
    actions: Sequence[torch.Tensor],
    context: int,
    horizon: int,
    kind: str,
    count: int,
    meanings: ActionMeanings = MEMORY_MAZE_ACTIONS,
) -> list[tuple[int, int]]:
    """Up to ``count`` (episode, start) windows of context + horizon frames whose imagined stretch is of ``kind``,
    spread evenly over all such windows (starts scanned every SEGMENT_SCAN_STRIDE frames); deterministic."""
    cands = []
    for e, a in enumerate(actions):
        for s in range(0, len(a) - context - horizon + 1, SEGMENT_SCAN_STRIDE):
            if segment_kind(a[s + context : s + context + horizon], meanings) == kind:
                cands.append((e, s))
    if len(cands) <= count:
        return cands
    idx = torch.linspace(0, len(cands) - 1, count).round().long().tolist()
    return [cands[i] for i in idx]


def swap_left_right(actions: torch.Tensor, meanings: ActionMeanings = MEMORY_MAZE_ACTIONS) -> torch.Tensor:
    """Each action replaced by its mirror image (left <-> right); shape kept."""
    return torch.tensor(meanings.mirror)[actions.long()]


def shuffle_in_time(actions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(K, Tf) actions with each row permuted in time: the same actions, not in the order that happened."""
    perm = torch.stack([torch.randperm(actions.shape[1], generator=gen) for _ in range(actions.shape[0])])
    return torch.gather(actions, 1, perm)


def pair_scores(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean PSNR, mean SSIM) over every frame pair of two uint8 (..., H, W, 3) arrays."""
    return float(frame_psnr(x, y).mean()), float(frame_ssim(x, y).mean())


@torch.no_grad()
def action_sensitivity(
    model: WorldModel,
    data: HeldOutEpisodes,
    context: int,
    horizon: int,
    windows: int = 12,
    seed: int = EVAL_SEED,
    meanings: ActionMeanings = MEMORY_MAZE_ACTIONS,
) -> dict:
    """Both action measures (see above) on the episodes of ``data`` (frames and actions are read).

    Returns {"context_frames", "horizon", "turning": {...}, "forward": {...}, "constant": {...}}: for turning and
    forward windows "windows", "psnr_real|shuffled|swapped", "ssim_..." and "psnr_real_minus_swapped",
    "psnr_real_minus_shuffled" (dB; positive when the real actions fit best), "psnr_dream_real_vs_swapped" (the
    dream's rollouts under the real and the swapped actions compared with each other: its own action effect) and
    "picks" ([episode, start] of each window, episodes in ``data``'s order); for constant actions "windows", "picks",
    "psnr_left_vs_right", "psnr_left_vs_forward", "psnr_seed_vs_seed" (and SSIM), and "follows_actions":
    left-vs-right PSNR <= seed-vs-seed PSNR. A kind with no window has {"windows": 0}."""
    tc, tf = int(context), int(horizon)
    if tc < 1 or tf < 1 or int(windows) < 1:
        raise ValueError(
            f"action_sensitivity: context, horizon, windows must be >= 1, got {context}, {horizon}, {windows}"
        )
    res: dict = {"context_frames": tc, "horizon": tf}
    # 1. real vs shuffled vs swapped actions on turning and on forward stretches
    for kind in SEGMENT_KINDS:
        picks = windows_of_kind(data.actions, tc, tf, kind, windows, meanings)
        if not picks:
            res[kind] = {"windows": 0}
            continue
        f = torch.stack([data.frames[e][s : s + tc + tf] for e, s in picks])  # (K, Tc+Tf, H, W, 3)
        a = torch.stack([data.actions[e][s : s + tc + tf] for e, s in picks])  # (K, Tc+Tf)
        real, future = f[:, tc:], a[:, tc:]
        conditions = {
            "real": future,
            "shuffled": shuffle_in_time(future, torch.Generator().manual_seed(seed)),
            "swapped": swap_left_right(future, meanings),
        }
        out: dict = {"windows": len(picks), "picks": [list(p) for p in picks]}
        dreams = {}
        for name, fa in conditions.items():
            dreams[name] = model.rollout(f[:, :tc], a[:, :tc], fa, generator=torch.Generator().manual_seed(seed))
            out[f"psnr_{name}"], out[f"ssim_{name}"] = pair_scores(real, dreams[name]["frames"])
        out["psnr_real_minus_swapped"] = out["psnr_real"] - out["psnr_swapped"]
        out["psnr_real_minus_shuffled"] = out["psnr_real"] - out["psnr_shuffled"]
        # the dream's own action effect: its rollouts under the real and the swapped actions compared
        # with each other (the same comparison of the real env's frames is the reference)
        out["psnr_dream_real_vs_swapped"] = pair_scores(dreams["real"]["frames"], dreams["swapped"]["frames"])[0]
        res[kind] = out
    # 2. constant actions from one context: left vs right vs forward, and two noise seeds under one action
    lengths = [len(a) for a in data.actions]
    picks = eval_windows(lengths, tc, windows)
    f = torch.stack([data.frames[e][s : s + tc] for e, s in picks])  # (K, Tc, H, W, 3)
    a = torch.stack([data.actions[e][s : s + tc] for e, s in picks])  # (K, Tc)

    def constant(action: int, noise_seed: int) -> torch.Tensor:
        fa = torch.full((len(picks), tf), int(action), dtype=torch.long)
        return model.rollout(f, a, fa, generator=torch.Generator().manual_seed(noise_seed))["frames"]

    left, right = constant(meanings.left, seed), constant(meanings.right, seed)
    fwd, left2 = constant(meanings.forward[0], seed), constant(meanings.left, seed + 1)
    const: dict = {"windows": len(picks), "picks": [list(p) for p in picks]}
    for name, (x, y) in {
        "left_vs_right": (left, right),
        "left_vs_forward": (left, fwd),
        "seed_vs_seed": (left, left2),
    }.items():
        const[f"psnr_{name}"], const[f"ssim_{name}"] = pair_scores(x, y)
    const["follows_actions"] = const["psnr_left_vs_right"] <= const["psnr_seed_vs_seed"]
    res["constant"] = const
    return res
