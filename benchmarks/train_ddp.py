"""Training throughput on 1 and 2 processes of this machine: ``python -m worldmodel.train`` against
``torchrun --nproc_per_node 2 -m worldmodel.train`` (DistributedDataParallel over gloo, 1 torch thread per process),
the same config and global batch, a short fixed number of steps.

    python -m benchmarks.train_ddp --episodes data/episodes/mm9     # the published result (make bench-ddp)
    python -m benchmarks.train_ddp --quick --out DIR                 # smoke run: tiny preset, toy episodes

Each run is a real training job into a temporary run folder (its autoencoder trained for ``--ae-steps`` steps:
its quality does not change the cost of a step); what is timed is its training loop (``train_seconds`` of
RUN_DIR/eval.json: optimiser steps only, without start-up, encoding and the final evaluation). The 1- and
2-process runs alternate round after round (load drifts hit both alike); the median of the rounds is reported
as windows (and frames) per second, with the ratio 2 processes / 1 process. Both runs follow the same
optimisation (the global batch is split, not doubled), so the ratio is the wall-clock speed-up of one run.

Writes train_ddp.json and train_ddp.png. Measured on CPUs only: what GPUs (nccl) give is not measured here.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    REPO_ROOT,
    Sizes,
    benchmark_parser,
    figure,
    interleaved_rounds,
    machine_info,
    output_dir,
    write_results,
)
from benchmarks.recall import write_toy_episodes

NAME = "train_ddp"
PROCESSES = (1, 2)
SIZES = Sizes(
    full={"preset": "cpu", "steps": 20, "batch": 8, "ae_steps": 20, "rounds": 2},
    quick={"preset": "tiny", "steps": 4, "batch": 4, "ae_steps": 2, "rounds": 1},
)
"""Full run (the published result): the cpu preset (batch 8 x 32-48 frames), 20 timed steps per run, 2 rounds.
--quick: the tiny preset on toy episodes, 4 steps, 1 round."""
QUICK_EPISODES = {"count": 4, "steps": 40, "out_steps": 8}
"""--quick without --episodes: toy revisit episodes (benchmarks.recall) in the real episode format."""
TIMEOUT_S = 3600
"""A run that takes longer than this is hung."""


def command(processes: int, args, run_dir: Path) -> list[str]:
    """The training command of one run: plain python for 1 process, torchrun for more."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    job = ["-m", "worldmodel.train", "--preset", args.preset, "--episodes", str(args.episodes)]
    job += ["--run-dir", str(run_dir), "--device", "cpu", "--threads", "1", "--steps", str(args.steps)]
    job += ["--batch-size", str(args.batch), "--ae-steps", str(args.ae_steps), "--ckpt-every", str(args.steps)]
    job += ["--eval-every", str(args.steps), "--eval-batch", "1"]  # no evaluation inside the timed loop
    return launcher + job


def run_once(processes: int, args, scratch: Path, round_index: int) -> dict:
    """One training run on ``processes`` processes; its timed loop from eval.json."""
    run_dir = scratch / f"p{processes}_r{round_index}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        command(processes, args, run_dir), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(proc.args)} failed:\n{proc.stderr[-3000:]}")
    res = json.loads((run_dir / "eval.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    seconds = float(res["train_seconds"])
    frames = sum(h["wm/window"] for h in res["history_tail"]) / len(res["history_tail"])  # mean window, last steps
    return {"seconds": seconds, "steps": int(res["steps"]), "processes": int(res["processes"]), "window": frames}


def plot(result: dict):
    """Windows per second on 1 and 2 processes (median of the rounds, each round a dot)."""
    fig, ax = figure(figsize=(5, 3.6))
    procs = [str(p) for p in PROCESSES]
    rates = [result["processes"][p]["windows_per_s"] for p in procs]
    ax.bar(procs, rates, color=["tab:gray", "tab:blue"])
    for p in procs:
        ax.plot(
            [p] * len(result["processes"][p]["rounds_windows_per_s"]),
            result["processes"][p]["rounds_windows_per_s"],
            "k.",
        )
    ax.set_xlabel("processes (gloo, 1 torch thread each)")
    ax.set_ylabel("training windows / s")
    ax.set_title(f"{result['preset']} preset, global batch {result['batch']}: 2 / 1 = {result['speedup']:.2f}x")
    return fig


def main(argv: list[str] | None = None) -> dict:
    """Time the training loop on 1 and 2 processes, write the JSON and PNG, print the ratio."""
    p = benchmark_parser(NAME, __doc__, SIZES)
    SIZES.add(p, "preset", "model and training preset", choices=["tiny", "cpu"])
    SIZES.add(p, "steps", "optimiser steps per run (all timed)", type=int)
    SIZES.add(p, "batch", "global batch (windows per step, split among the processes)", type=int)
    SIZES.add(p, "ae_steps", "autoencoder steps of each run (not timed)", type=int)
    SIZES.add(p, "rounds", "runs per process count (alternating)", type=int)
    p.add_argument("--episodes", type=Path, help="episode folder (default: data/episodes/mm9; --quick: toy episodes)")
    args = SIZES.fill(p.parse_args(argv))
    out = output_dir(args.out, args.quick, NAME)
    scratch = Path(tempfile.mkdtemp(prefix=f"{NAME}_runs_"))
    try:
        if args.episodes is None:
            if args.quick:
                q = QUICK_EPISODES
                args.episodes = write_toy_episodes(scratch / "episodes", q["count"], q["steps"], q["out_steps"], seed=0)
            else:
                args.episodes = REPO_ROOT / "data" / "episodes" / "mm9"
        if not Path(args.episodes).is_dir():
            p.error(f"--episodes {args.episodes}: no such folder (collect it with `make data`)")
        runs = interleaved_rounds(
            {n: (lambda r, n=n: run_once(n, args, scratch, r)) for n in PROCESSES}, args.rounds, progress=NAME
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    per = {}
    for n, rs in runs.items():
        rates = [r["steps"] * args.batch / r["seconds"] for r in rs]
        per[str(n)] = {
            "rounds_seconds": [r["seconds"] for r in rs],
            "rounds_windows_per_s": rates,
            "windows_per_s": statistics.median(rates),
            "frames_per_s": statistics.median(rates) * statistics.mean(r["window"] for r in rs),
            "processes_seen": sorted({r["processes"] for r in rs}),
        }
    result = {
        "benchmark": NAME,
        "preset": args.preset,
        "steps": args.steps,
        "batch": args.batch,
        "rounds": args.rounds,
        "episodes": str(args.episodes),
        "backend": "gloo",
        "threads_per_process": 1,
        "processes": per,
        "speedup": per["2"]["windows_per_s"] / per["1"]["windows_per_s"],
        "note": "CPU processes over gloo on this machine; GPUs (nccl) not measured",
        "machine": machine_info("cpu"),
    }
    write_results(NAME, result, plot(result), out)
    print(
        f"training windows/s: 1 process {per['1']['windows_per_s']:.2f}, 2 processes {per['2']['windows_per_s']:.2f}: "
        f"{result['speedup']:.2f}x"
    )
    return result


if __name__ == "__main__":
    main()
