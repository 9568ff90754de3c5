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

Writes action_following.json and action_following.png (bars of both measures) to benchmarks/results/ unless
``--out`` is given (``--quick``, a smoke run, writes to a temporary folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import worldmodel
from benchmarks.common import Sizes, benchmark_parser, figure, machine_info, output_dir, write_results
from envs.episodes import EpisodeStore
from worldmodel.evaluate import SEGMENT_KINDS, action_sensitivity
from worldmodel.model import WorldModel
from worldmodel.train import LatentEpisodes

NAME = "action_following"
SIZES = Sizes(
    full={"context": 16, "horizon": 8, "windows": 16, "max_episodes": 12},
    quick={"context": 4, "horizon": 3, "windows": 2, "max_episodes": 2},
)
SWAP_GOAL_DB = 2.0
"""Goal: on turning windows, open loop under the real actions beats left/right swapped by this many dB."""


def measure(model: WorldModel, folder: Path, context: int, horizon: int, windows: int, max_episodes: int) -> dict:
    """Action sensitivity of ``model`` on the first ``max_episodes`` episodes (in name order) of ``folder``."""
    paths = EpisodeStore(folder).paths[:max_episodes]
    data = LatentEpisodes(model, paths, min_frames=context + horizon, desc="encoding held-out", keep_frames=True)
    res = action_sensitivity(model, data, context=context, horizon=horizon, windows=windows)
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
    ax1.set_xticks(range(len(SEGMENT_KINDS)), [f"{k} ({res[k]['windows']} windows)" for k in SEGMENT_KINDS])
    ax1.set_ylabel("open-loop PSNR to the real frames (dB)")
    ax1.set_ylim(bottom=min(10.0, ax1.get_ylim()[0]))
    ax1.legend(fontsize=8)
    const = res["constant"]
    pairs = ("left_vs_right", "left_vs_forward", "seed_vs_seed")
    ax2.bar(range(3), [const[f"psnr_{p}"] for p in pairs], color=["C0", "C1", "C7"])
    ax2.set_xticks(range(3), ["left vs right", "left vs forward", "two noise seeds\n(same action)"])
    ax2.set_ylabel("PSNR between the two rollouts (dB, lower = more different)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


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
    args = SIZES.fill(parser.parse_args(argv))
    try:
        model = worldmodel.load(args.checkpoint, device="cpu", guidance=args.guidance)
        res = measure(model, args.episodes, args.context, args.horizon, args.windows, args.max_episodes)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res.update(checkpoint=str(args.checkpoint), guidance=model.config.diffusion.guidance, machine=machine_info())
    swap, const = res["turning"].get("psnr_real_minus_swapped", float("nan")), res["constant"]
    title = (
        f"{args.checkpoint}: turning real - swapped {swap:+.2f} dB; "
        f"left vs right {const['psnr_left_vs_right']:.1f} dB vs seeds {const['psnr_seed_vs_seed']:.1f}"
    )
    write_results(NAME, res, plot(res, title), output_dir(args.out, args.quick, NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
