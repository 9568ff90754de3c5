"""What more compute buys: held-out quality and action-following against world-model training minutes.

    python -m benchmarks.scaling --episodes data/episodes/mm9-mixed --heldout-episodes data/episodes/mm9-heldout
    python -m benchmarks.scaling ... --milestones 270 800 1600 3200     # steps at which to score (default)

One run of the ``long`` preset (the cpu model, 3200 steps: about 60 minutes on 2 cores) in ``--run-dir``
(default runs/long, shared with ``make train-long``), stopped at each milestone (a number of optimiser steps;
the defaults are about 5, 15, 30 and 60 minutes on 2 cores), scored there on held-out episodes exactly as
``benchmarks.train_levers`` scores a setting (open-loop PSNR/SSIM vs copy-last, reward precision/recall,
action sensitivity), then continued. The learning-rate schedule is the whole run's, so an early milestone is a
checkpoint in the middle of a cosine decay, not a short run of its own: a lower bound of what that many minutes
give (the ``cpu`` preset is the 800-step run with its own schedule).

Minutes are the training loop's wall time (``worldmodel.train``'s ``train_seconds``; the autoencoder and the
evaluations are not counted). Resumable per milestone: scored milestones are kept in the results and the run
continues from its checkpoint. Results: scaling.json, scaling.png and strips in benchmarks/results/scaling/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.common import RESULTS_DIR, figure, machine_info, write_results
from benchmarks.train_levers import score
from worldmodel.model import world_model_config
from worldmodel.train import train, train_config
from worldmodel.utils import torch_load

NAME = "scaling"
MILESTONES = (270, 800, 1600, 3200)
"""Default milestones (optimiser steps): about 5, 15, 30 and 60 minutes of the long preset on 2 cores."""


def _step_of(checkpoint: Path) -> int:
    """The optimiser step a checkpoint was written at (0 when there is none)."""
    return int(torch_load(checkpoint)["step"]) if checkpoint.exists() else 0


def _threads(rows: list[dict]) -> str:
    """The torch thread counts the rows were trained with, for the axis label ("2", "1", "1-2")."""
    n = sorted({r.get("torch_threads") for r in rows if r.get("torch_threads")})
    return "?" if not n else str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}"


def plot(rows: list[dict]):
    """Three panels against training minutes: PSNR dream vs copy-last, SSIM, and the action-following gaps."""
    fig, (ax1, ax2, ax3) = figure(1, 3, figsize=(15, 4))
    mins = [r["minutes"] for r in rows]
    ax1.plot(mins, [r["psnr_dream"] for r in rows], "o-", label="dream")
    ax1.plot(mins, [r["psnr_copy_last"] for r in rows], "s--", label="copy last context frame")
    ax1.plot(mins, [r["psnr_copy_last"] + 4 for r in rows], ":", color="C3", label="goal: copy-last + 4 dB")
    for r in rows:
        ax1.annotate(f"{r['steps']} steps", (r["minutes"], r["psnr_dream"]), textcoords="offset points",
                     xytext=(0, 6), ha="center", fontsize=7)  # fmt: skip
    ax1.set_ylabel("held-out open-loop PSNR, 16 frames (dB)")
    ax2.plot(mins, [r["ssim_dream"] for r in rows], "o-", label="dream")
    ax2.plot(mins, [r["ssim_copy_last"] for r in rows], "s--", label="copy last")
    ax2.axhline(0.65, color="C3", ls=":", label="goal 0.65")
    ax2.set_ylabel("held-out SSIM")
    ax3.plot(mins, [r["turning_real_minus_swapped_db"] for r in rows], "o-", label="turning: real - swapped (dB)")
    ax3.plot(
        mins, [r["seed_vs_seed_db"] - r["left_vs_right_db"] for r in rows], "s-", label="seeds - (left vs right) (dB)"
    )
    ax3.axhline(2.0, color="C3", ls=":", label="goal real - swapped >= 2")
    ax3.axhline(0.0, color="C7", lw=0.8)
    ax3.set_ylabel("action-following (dB, higher = follows)")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel(f"world-model training minutes (torch threads: {_threads(rows)})")
        ax.legend(fontsize=7)
    fig.suptitle("long preset: quality against training minutes (one run, scored at milestones)", fontsize=10)
    fig.tight_layout()
    return fig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--episodes", type=Path, default=Path("data/episodes/mm9"), help="training episodes")
    ap.add_argument("--heldout-episodes", type=Path, default=Path("data/episodes/mm9-heldout"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/long"), help="the long run (default: runs/long)")
    ap.add_argument(
        "--milestones", type=int, nargs="+", default=list(MILESTONES), help="steps at which to score (ascending)"
    )
    ap.add_argument("--preset", default="long", choices=("tiny", "cpu", "long"), help="default: long (tiny: tests)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: benchmarks/results)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, all cores); recorded with each milestone, since the "
        "minutes depend on it (1 thread beside another job is roughly half the speed of 2 quiet cores)",
    )
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: expected a number of threads >= 1")
    ms = args.milestones
    if any(m < 1 for m in ms) or sorted(set(ms)) != ms:
        ap.error(f"--milestones {ms}: expected ascending, distinct step counts >= 1")
    steps = train_config(args.preset).steps
    if ms[-1] > steps:
        ap.error(f"--milestones {ms}: the last is beyond the {args.preset} preset's {steps} steps")
    for opt in ("episodes", "heldout_episodes"):
        if not getattr(args, opt).is_dir():
            ap.error(f"--{opt.replace('_', '-')} {getattr(args, opt)}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.scaling``."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.out / f"{NAME}.json"
    prior = json.loads(path.read_text()) if path.exists() else {}
    rows = [r for r in prior.get("rows", []) if r.get("run_dir") == str(args.run_dir)]
    cfg = train_config(args.preset)
    ckpt = args.run_dir / "checkpoint.pt"
    minutes = rows[-1]["minutes"] if rows else 0.0
    for m in args.milestones:
        if any(r["steps"] == m for r in rows):
            print(f"milestone {m} steps: already scored, skipped")
            continue
        at = _step_of(ckpt)
        if at > m:
            print(f"milestone {m} steps: the run is already at step {at}, past it (skipped; start a new --run-dir)")
            continue
        resumed_mid = at > (rows[-1]["steps"] if rows else 0)  # an interrupted stretch: its minutes are lost
        if at < m:
            _, res = train(
                cfg,
                args.episodes,
                args.run_dir,
                resume=ckpt.exists(),
                device="cpu",
                model_cfg=world_model_config(args.preset),
                progress=args.progress,
                stop_after=m - at,
            )
            minutes += res["train_seconds"] / 60
        strip = args.out / NAME / f"step{m}.png"
        row = {
            "steps": m,
            "minutes": minutes,
            "minutes_incomplete": resumed_mid,
            "torch_threads": torch.get_num_threads(),
            "run_dir": str(args.run_dir),
            **score(ckpt, args.heldout_episodes, strip),
            "strip": f"{NAME}/step{m}.png",
        }
        row["config"] = {"model": row.pop("model_config"), "train_preset": args.preset, "train_steps": cfg.steps}
        rows.append(row)
        write_results(NAME, {"rows": rows, "machine": machine_info()}, plot(rows), args.out)
        print(
            f"{m} steps, {row['minutes']:.1f} min: PSNR {row['psnr_dream']:.2f} "
            f"(copy-last {row['psnr_copy_last']:.2f}), SSIM {row['ssim_dream']:.3f}, "
            f"turning real-swapped {row['turning_real_minus_swapped_db']:+.2f} dB, "
            f"L/R {row['left_vs_right_db']:.1f} vs seeds {row['seed_vs_seed_db']:.1f} dB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
