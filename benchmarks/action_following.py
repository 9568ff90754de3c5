"""Does the dream follow its actions? Action sensitivity of a trained world model on held-out episodes.

    python -m benchmarks.action_following --checkpoint runs/demo/checkpoint.pt --episodes data/episodes/mm9-heldout
    python -m benchmarks.action_following --quick --checkpoint RUN/checkpoint.pt --episodes DIR --out DIR

Two measures (``worldmodel.evaluate.action_sensitivity``), on episodes the model never trained on:

1. open-loop PSNR/SSIM of the dream against the real frames under the real actions, the same actions shuffled
   in time, and left/right swapped, separately on windows whose imagined stretch mostly turns and mostly goes
   forward (one noise seed for all three: only the actions differ). Goal: on turning windows the real actions
   beat the swapped ones by >= 2 dB.
2. from one context and one noise seed, rollouts under constant "left", "right" and "forward", next to two
   noise seeds under constant "left". Goal: left vs right differ at least as much as two seeds (PSNR between
   them no higher).

The real env's answer to the same questions is the reference (``--no-real-env`` skips it): every window's
episode is replayed in the real env from its seed (``envs.collect`` episodes: the manifest's env and ``seed +
index``; the replay must reproduce the stored context frame exactly, or the measure stops with an error), then
continued under the swapped, shuffled or constant actions. Reality's PSNR between the frames under the real and
the swapped actions (and between constant "left" and "right") says how different the actions make the future;
the dream's ``psnr_dream_real_vs_swapped`` and ``psnr_left_vs_right`` say how much of that it reproduces.

Writes action_following.json and action_following.png (bars of both measures; ``--name`` another stem, e.g.
action_following_long for the long preset's run) to benchmarks/results/ unless ``--out`` is given (``--quick``,
a smoke run, writes to a temporary folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import worldmodel
from benchmarks.common import Sizes, benchmark_parser, figure, machine_info, output_dir, write_results
from envs.collect import episode_origin, make_env
from envs.episodes import EpisodeStore
from planners.controller import frame_of
from worldmodel.evaluate import (
    EVAL_SEED,
    MEMORY_MAZE_ACTIONS,
    SEGMENT_KINDS,
    action_sensitivity,
    pair_scores,
    shuffle_in_time,
    swap_left_right,
)
from worldmodel.model import WorldModel
from worldmodel.train import LatentEpisodes

NAME = "action_following"
SIZES = Sizes(
    full={"context": 16, "horizon": 8, "windows": 16, "max_episodes": 12},
    quick={"context": 4, "horizon": 3, "windows": 2, "max_episodes": 2},
)
SWAP_GOAL_DB = 2.0
"""Goal: on turning windows, open loop under the real actions beats left/right swapped by this many dB."""


class Replayer:
    """Replays held-out episodes in the real env and continues them under other actions."""

    def __init__(self, paths: list[Path], frames: list[torch.Tensor], actions: list[torch.Tensor]):
        self.paths, self.frames, self.actions = [Path(p) for p in paths], frames, actions
        self.origins = [episode_origin(p) for p in self.paths]  # names an episode that cannot be replayed, at once
        self._envs: dict = {}

    def continue_with(self, episode: int, upto: int, then: torch.Tensor) -> np.ndarray:
        """The real env's frames (len(then), H, W, 3) after replaying ``episode`` up to frame ``upto`` - 1 (its
        actions 1 .. upto-1 from the reset) and then taking the actions ``then``. Raises if the replay does not
        reproduce the stored frame ``upto`` - 1 exactly (another env version or settings than the collection's)."""
        env_id, seed, fast = self.origins[episode]
        if (env_id, fast) not in self._envs:
            self._envs[env_id, fast] = make_env(env_id, fast=fast)
        env = self._envs[env_id, fast]
        obs, _ = env.reset(seed=seed)
        acts = self.actions[episode].long().tolist()
        for a in acts[1:upto]:
            obs = env.step(a)[0]
        stored = self.frames[episode][upto - 1].numpy()
        if not np.array_equal(frame_of(obs), stored):
            raise ValueError(
                f"{self.paths[episode]}: replaying its actions from seed {seed} in {env_id} does not reproduce "
                f"frame {upto - 1}: the env differs from the one that collected it (use --no-real-env)"
            )
        out = []
        for a in then.long().tolist():
            obs, _, terminated, truncated, _ = env.step(a)
            out.append(frame_of(obs))
            if terminated or truncated:
                raise ValueError(f"{self.paths[episode]}: the episode ended while continuing it from frame {upto}")
        return np.stack(out)

    def close(self) -> None:
        """Close the envs it opened."""
        for env in self._envs.values():
            env.close()


def real_env_reference(rep: Replayer, res: dict, progress: bool = True) -> dict:
    """The real env's answer to ``res``'s questions on the same windows (see the module doc): per window kind
    PSNR/SSIM between the real frames and the real env's frames under the swapped and the shuffled actions (the
    same shuffle as the dream's); for the constant actions PSNR/SSIM between the real env's "left" and "right"
    and "left" and "forward" continuations."""
    tc, tf = res["context_frames"], res["horizon"]
    meanings = MEMORY_MAZE_ACTIONS
    ref: dict = {}
    total = sum(2 * res[k]["windows"] for k in SEGMENT_KINDS) + 3 * res["constant"]["windows"]
    bar = tqdm(total=total, desc="real-env reference", unit="replay", disable=not progress, leave=False)
    try:
        for kind in SEGMENT_KINDS:
            picks = [tuple(p) for p in res[kind].get("picks", [])]
            if not picks:
                ref[kind] = {"windows": 0}
                continue
            real = torch.stack([rep.frames[e][s + tc : s + tc + tf] for e, s in picks])  # (K, Tf, H, W, 3)
            future = torch.stack([rep.actions[e][s + tc : s + tc + tf] for e, s in picks])  # (K, Tf)
            conditions = {
                "swapped": swap_left_right(future, meanings),
                "shuffled": shuffle_in_time(future, torch.Generator().manual_seed(EVAL_SEED)),
            }
            out: dict = {"windows": len(picks)}
            for name, fa in conditions.items():
                frames = []
                for (e, s), acts in zip(picks, fa):
                    frames.append(rep.continue_with(e, s + tc, acts))
                    bar.update()
                out[f"psnr_real_vs_{name}"], out[f"ssim_real_vs_{name}"] = pair_scores(
                    real, torch.from_numpy(np.stack(frames))
                )
            ref[kind] = out
        picks = [tuple(p) for p in res["constant"]["picks"]]
        rolls = {}
        for name, action in (("left", meanings.left), ("right", meanings.right), ("forward", meanings.forward[0])):
            frames = []
            for e, s in picks:
                frames.append(rep.continue_with(e, s + tc, torch.full((tf,), action)))
                bar.update()
            rolls[name] = torch.from_numpy(np.stack(frames))
        const: dict = {"windows": len(picks)}
        for name, (x, y) in {"left_vs_right": ("left", "right"), "left_vs_forward": ("left", "forward")}.items():
            const[f"psnr_{name}"], const[f"ssim_{name}"] = pair_scores(rolls[x], rolls[y])
        ref["constant"] = const
    finally:
        bar.close()
        rep.close()
    return ref


def measure(
    model: WorldModel,
    folder: Path,
    context: int,
    horizon: int,
    windows: int,
    max_episodes: int,
    real_env: bool = True,
    progress: bool = True,
) -> dict:
    """Action sensitivity of ``model`` on the first ``max_episodes`` episodes (in name order) of ``folder``, with
    the real env's reference on the same windows unless ``real_env`` is False."""
    paths = EpisodeStore(folder).paths[:max_episodes]
    data = LatentEpisodes(model, paths, min_frames=context + horizon, desc="encoding held-out", keep_frames=True)
    # built before the rollouts, so an episode that cannot be replayed is named at once
    rep = Replayer(data.paths, data.frames, data.actions) if real_env else None
    res = action_sensitivity(model, data, context=context, horizon=horizon, windows=windows)
    if rep is not None:
        res["real_env"] = real_env_reference(rep, res, progress)
    turning = res["turning"]
    res["goals"] = {
        "turning_real_beats_swapped_by_2db": turning.get("windows", 0) > 0
        and turning["psnr_real_minus_swapped"] >= SWAP_GOAL_DB,
        "left_right_differ_as_much_as_seeds": res["constant"]["follows_actions"],
    }
    res["episodes_folder"], res["episodes"] = str(folder), len(data.actions)
    return res


def plot(res: dict, title: str):
    """Two panels: PSNR to the real frames per action condition and window kind; PSNR between constant-action
    rollouts (lower = more different)."""
    fig, (ax1, ax2) = figure(1, 2, figsize=(11, 4))
    conds = ("real", "shuffled", "swapped")
    width = 0.25
    for i, cond in enumerate(conds):
        vals = [res[k].get(f"psnr_{cond}", float("nan")) for k in SEGMENT_KINDS]
        ax1.bar([x + (i - 1) * width for x in range(len(SEGMENT_KINDS))], vals, width, label=f"{cond} actions")
    ref = res.get("real_env")
    top = max([res[k].get(f"psnr_{c}", 0.0) for k in SEGMENT_KINDS for c in conds] + [20.0]) * 1.6
    if ref:  # a perfect dream's score under the swapped actions: the real env's own swapped future
        xs = [x + 2 * width for x in range(len(SEGMENT_KINDS))]
        vals = [ref[k].get("psnr_real_vs_swapped", float("nan")) for k in SEGMENT_KINDS]
        ax1.bar(xs, [min(v, top) for v in vals], width, color="C7", hatch="//",
                label="real env, swapped actions\n(a perfect dream's swapped score)")  # fmt: skip
        for x, v in zip(xs, vals):
            if v > top:  # mostly identical frames (PSNR capped at 100 per frame): clipped, value written
                ax1.text(x, top - 1, f"{v:.0f}", ha="center", va="top", fontsize=8)
    ax1.set_ylim(0, top)
    ax1.set_xticks(range(len(SEGMENT_KINDS)), [f"{k} ({res[k]['windows']} windows)" for k in SEGMENT_KINDS])
    ax1.set_ylabel("open-loop PSNR to the real frames (dB)")
    ax1.legend(fontsize=7, loc="upper left", ncol=2)
    const = res["constant"]
    pairs = ("left_vs_right", "left_vs_forward", "seed_vs_seed")
    ax2.bar(range(3), [const[f"psnr_{p}"] for p in pairs], 0.4, color="C0", label="dream")
    if ref:
        ax2.bar([0.4, 1.4], [ref["constant"][f"psnr_{p}"] for p in pairs[:2]], 0.4, color="C7", hatch="//",
                label="real env, same context")  # fmt: skip
    ax2.legend(fontsize=8)
    ax2.set_xticks(range(3), ["left vs right", "left vs forward", "two noise seeds\n(same action)"])
    ax2.set_ylabel("PSNR between two rollouts (dB)")
    ax2.set_title("lower = the two futures differ more", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def reference_sentence(res: dict) -> str:
    """How much of the real env's action effect the dream reproduces, in one sentence (PSNR between the frames
    under two action sequences: the lower, the more the actions change the future)."""
    ref, parts = res["real_env"], []
    t, rt = res["turning"], ref["turning"]
    if t.get("windows"):
        parts.append(
            f"on {t['windows']} turning windows the real and the left/right-swapped actions lead to futures "
            f"{rt['psnr_real_vs_swapped']:.1f} dB apart in the real env and {t['psnr_dream_real_vs_swapped']:.1f} dB "
            f"apart in the dream"
        )
    c, rc = res["constant"], ref["constant"]
    parts.append(
        f"constant left vs right end {rc['psnr_left_vs_right']:.1f} dB apart in the real env and "
        f"{c['psnr_left_vs_right']:.1f} dB in the dream (two noise seeds: {c['psnr_seed_vs_seed']:.1f})"
    )
    return "Real-env reference: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.action_following``."""
    parser = benchmark_parser(NAME, __doc__, SIZES)
    parser.add_argument("--checkpoint", type=Path, required=True, help="RUN_DIR/checkpoint.pt of a trained model")
    parser.add_argument("--episodes", type=Path, required=True, help="folder of held-out episodes")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (model's when unset)")
    SIZES.add(parser, "context", "real context frames", type=int)
    SIZES.add(parser, "horizon", "imagined frames per window", type=int)
    SIZES.add(parser, "windows", "windows per measure", type=int)
    SIZES.add(parser, "max_episodes", "held-out episodes read", type=int)
    parser.add_argument(
        "--no-real-env",
        dest="real_env",
        action="store_false",
        help="skip the real env's reference (replaying each window's episode: envs.collect episodes only)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument(
        "--name",
        default=NAME,
        help=f"results' file-name stem (default {NAME}: the make-demo model; e.g. {NAME}_long for runs/long)",
    )
    args = SIZES.fill(parser.parse_args(argv))
    if not args.name or "/" in args.name or args.name.endswith(".json"):
        parser.error(f"--name {args.name!r}: expected a plain file-name stem (e.g. {NAME}_long)")
    try:
        model = worldmodel.load(args.checkpoint, device="cpu", guidance=args.guidance)
        res = measure(
            model, args.episodes, args.context, args.horizon, args.windows, args.max_episodes, args.real_env,
            args.progress,
        )  # fmt: skip
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res.update(checkpoint=str(args.checkpoint), guidance=model.config.diffusion.guidance, machine=machine_info())
    swap, const = res["turning"].get("psnr_real_minus_swapped", float("nan")), res["constant"]
    title = (
        f"{args.checkpoint}: turning real - swapped {swap:+.2f} dB; "
        f"left vs right {const['psnr_left_vs_right']:.1f} dB vs seeds {const['psnr_seed_vs_seed']:.1f}"
    )
    if "real_env" in res:
        ref = res["real_env"]
        title += f" (real env: {ref['constant']['psnr_left_vs_right']:.1f})"
        print(reference_sentence(res))
    write_results(args.name, res, plot(res, title), output_dir(args.out, args.quick, NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
