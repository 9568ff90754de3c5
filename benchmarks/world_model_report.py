"""Publish a training run's held-out evaluation as a benchmark result (JSON + PNG).

    python -m benchmarks.world_model_report --run-dir runs/demo [--name world_model_cpu] [--wall-time-s 846]
    python -m benchmarks.world_model_report --quick --run-dir RUN --reward-episodes DIR --out DIR

Reads RUN_DIR/eval.json and RUN_DIR/config.json (written by `python -m worldmodel.train`, whose held-out
evaluation is ``worldmodel.evaluate.evaluate``) and writes NAME.json (the evaluation plus the run's config) and
NAME.png: per-step open-loop PSNR and SSIM of the dream against copying the last context frame and the
autoencoder's ceiling, above RUN_DIR/strip.png (real | dream | error). ``--reward-episodes`` also measures the
reward head's precision/recall with RUN_DIR/checkpoint.pt on another episode folder
(``worldmodel.evaluate.reward_precision_recall``). Results go to benchmarks/results/ unless ``--out`` is given;
``--quick`` (a smoke run) writes to a temporary folder by default and reads at most ``QUICK_REWARD_EPISODES``
reward episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imread

import worldmodel
from envs.episodes import EpisodeStore
from worldmodel.evaluate import STRIP_FRAMES, reward_precision_recall
from worldmodel.train import LatentEpisodes
from worldmodel.utils import atomic_write_json, save_figure

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_REWARD_EPISODES = 2
"""--quick: reward episodes read from --reward-episodes (the first ones in name order)."""


def reward_on_folder(checkpoint: Path, folder: Path, limit: int | None = None) -> dict:
    """Reward-event precision/recall of a trained model on the episodes of `folder` (all, or the first `limit`),
    teacher-forced: one causal pass per episode at the stabilisation noise level."""
    model = worldmodel.load(checkpoint, device="cpu")
    paths = EpisodeStore(folder).paths[:limit]
    data = LatentEpisodes(model, paths, min_frames=2, desc="encoding reward episodes")
    return {"episodes_folder": str(folder), "episodes": len(paths), **reward_precision_recall(model, data)}


def plot(ev: dict, name: str, strip_path: Path, path: Path) -> None:
    """Per-step PSNR and SSIM (dream, copy-last, autoencoder) above the run's strip when it exists."""
    steps = np.arange(1, ev["horizon"] + 1)
    rows = 2 if strip_path.exists() else 1
    fig = Figure(figsize=(10, 4.2 * rows))
    for i, (metric, label) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
        ax = fig.add_subplot(rows, 2, i + 1)
        ax.plot(steps, ev[f"{metric}_dream"], "o-", label="dream (hybrid)")
        ax.plot(steps, ev[f"{metric}_copy_last"], "s--", label="copy last context frame")
        if f"{metric}_autoencoder" in ev:
            ax.plot(steps, ev[f"{metric}_autoencoder"], ":", label="autoencoder ceiling")
        ax.set_xlabel(f"imagined frame (after {ev['context_frames']} real context frames)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if rows == 2:
        ax = fig.add_subplot(rows, 1, 2)
        ax.imshow(imread(strip_path))
        shown = min(STRIP_FRAMES, ev["horizon"])
        ax.set_title(f"held-out: real | dream | error (first {shown} imagined frames)", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{name}: held-out open loop, {ev['windows']} windows from {ev['episodes']} unseen episode(s)")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.world_model_report",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="the training run to publish")
    ap.add_argument("--name", default="world_model_cpu", help="result file stem (NAME.json, NAME.png)")
    ap.add_argument("--wall-time-s", type=float, default=None, help="training wall time to record (seconds)")
    ap.add_argument("--note", default=None, help="free text stored in the JSON (e.g. machine load)")
    ap.add_argument(
        "--reward-episodes",
        type=Path,
        default=None,
        help="extra held-out episode folder (e.g. collected with other seeds) on which to measure the "
        "reward head's precision/recall with RUN_DIR/checkpoint.pt",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: output to a temporary folder unless --out, at most {QUICK_REWARD_EPISODES} reward episodes",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: benchmarks/results; --quick: a temporary folder)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Publish the run's evaluation; exit 2 with a message when the run has none."""
    args = parse_args(argv)
    ev_path, cfg_path = args.run_dir / "eval.json", args.run_dir / "config.json"
    for p in (ev_path, cfg_path):
        if not p.is_file():
            print(
                f"error: {p} not found: train first (python -m worldmodel.train ... --run-dir {args.run_dir})",
                file=sys.stderr,
            )
            return 2
    ev = json.loads(ev_path.read_text())
    if "error" in ev:
        print(f"error: {ev_path} holds no evaluation: {ev['error']}", file=sys.stderr)
        return 2
    cfg = json.loads(cfg_path.read_text())
    out = {
        "benchmark": args.name,
        "run_dir": str(args.run_dir),
        "wall_time_s": args.wall_time_s,
        "note": args.note,
        **{k: v for k, v in ev.items() if k != "history_tail"},
        "config": cfg,
    }
    if args.reward_episodes is not None:
        limit = QUICK_REWARD_EPISODES if args.quick else None
        out["reward_extra"] = reward_on_folder(args.run_dir / "checkpoint.pt", args.reward_episodes, limit)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="world_model_report_")) if args.quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(ev, args.name, args.run_dir / "strip.png", out_dir / f"{args.name}.png")
    atomic_write_json(out_dir / f"{args.name}.json", out)
    print(f"wrote {out_dir / args.name}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
