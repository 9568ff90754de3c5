"""Publish a training run's held-out evaluation as a benchmark result (JSON + PNG).

    python -m benchmarks.world_model_report --run-dir runs/demo [--name world_model_cpu] [--wall-time-s 846]

Reads RUN_DIR/eval.json and RUN_DIR/strip.png (written by `python -m worldmodel.train`) and writes
benchmarks/results/NAME.json (the evaluation plus the run's config) and NAME.png: per-step open-loop PSNR and
SSIM of the dream against copying the last context frame and the autoencoder's ceiling, above the strip
real | dream | error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def reward_on_folder(checkpoint: Path, folder: Path) -> dict:
    """Reward-event precision/recall of a trained model on every episode of `folder` (teacher-forced, one causal
    pass per episode at the stabilisation noise level)."""
    import worldmodel
    from envs.episodes import EpisodeStore
    from worldmodel.train import LatentEpisodes, reward_precision_recall

    model = worldmodel.load(checkpoint, device="cpu")
    store = EpisodeStore(folder)
    data = LatentEpisodes(model, store.paths, min_frames=2, desc="encoding reward episodes")
    return {"episodes_folder": str(folder), "episodes": len(store), **reward_precision_recall(model, data)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.world_model_report", description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--name", default="world_model_cpu", help="result file stem in benchmarks/results/")
    ap.add_argument("--wall-time-s", type=float, default=None, help="training wall time to record (seconds)")
    ap.add_argument("--note", default=None, help="free text stored in the JSON (e.g. machine load)")
    ap.add_argument("--reward-episodes", type=Path, default=None,
                    help="extra held-out episode folder (e.g. collected with other seeds) on which to measure the "
                         "reward head's precision/recall with RUN_DIR/checkpoint.pt")
    args = ap.parse_args(argv)
    ev_path, cfg_path = args.run_dir / "eval.json", args.run_dir / "config.json"
    for p in (ev_path, cfg_path):
        if not p.exists():
            print(f"error: {p} not found: train first (python -m worldmodel.train ... --run-dir {args.run_dir})",
                  file=sys.stderr)
            return 2
    ev = json.loads(ev_path.read_text())
    cfg = json.loads(cfg_path.read_text())
    out = {"benchmark": args.name, "run_dir": str(args.run_dir), "wall_time_s": args.wall_time_s, "note": args.note,
           **{k: v for k, v in ev.items() if k != "history_tail"}, "config": cfg}
    if args.reward_episodes is not None:
        out["reward_extra"] = reward_on_folder(args.run_dir / "checkpoint.pt", args.reward_episodes)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldmodel.utils import atomic_write_json, save_figure

    steps = np.arange(1, ev["horizon"] + 1)
    strip_path = args.run_dir / "strip.png"
    rows = 2 if strip_path.exists() else 1
    fig = plt.figure(figsize=(10, 4.2 * rows))
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
        ax.imshow(plt.imread(strip_path))
        ax.set_title("held-out: real | dream | error (first 8 imagined frames)", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{args.name}: held-out open loop, {ev['windows']} windows from {ev['episodes']} unseen episodes")
    fig.tight_layout()
    save_figure(fig, RESULTS / f"{args.name}.png", dpi=90)
    atomic_write_json(RESULTS / f"{args.name}.json", out)
    print(f"wrote {RESULTS / args.name}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
