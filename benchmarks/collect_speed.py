"""Memory Maze stepping speed: stock dm_control vs our exact speed-ups, one process and all cores.

    python -m benchmarks.collect_speed            # writes benchmarks/results/collect_speed.{json,png}
    python -m benchmarks.collect_speed --quick --out DIR   # smoke run: a few steps, one round, one worker

Measured side by side in one run, on the same seed and the same random action sequence:

- ``stock``: ``MemoryMazeEnv(fast=False)``: dm_control's ``TargetSphere`` loop, a new camera per frame;
- ``fast_activation``: only the vectorised activation check (:mod:`envs.activation`);
- ``fast``: activation check + camera reuse (the default), one process;
- ``fast_xW``: W processes (default: all cores), each stepping its own env at the same time; the aggregate
  steps/s is the sum over processes.

The single-process variants run in interleaved rounds and report the median, so machine load drifts affect
them alike. Build and reset time is excluded (reported separately as ``reset_seconds``); the frames of the
stock and fast runs are compared and must be identical. The goal: ``fast`` >= 3x ``stock`` with one process,
and more with processes.

Our machines are shared, so next to wall-clock steps/s the JSON has each measurement's CPU time:
``steps_per_cpu_s`` (load-independent cost of a step) and, for the parallel run, ``cpu_share`` = CPU seconds
the workers got / (wall seconds x workers). A ``cpu_share`` well below 1 means other processes held the
cores, and the parallel number shows contention rather than our scaling.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from multiprocessing import get_context

import numpy as np

from benchmarks.common import (
    Sizes,
    benchmark_parser,
    figure,
    interleaved_rounds,
    machine_info,
    output_dir,
    write_results,
)
from envs.activation import apply_fast_activation
from envs.memory_maze import ACTION_NAMES, MemoryMazeEnv

NAME = "collect_speed"
VARIANTS = {
    "stock": dict(fast=False),
    "fast_activation": dict(fast=False, activation_only=True),
    "fast": dict(fast=True),
}
"""The single-process variants: MemoryMazeEnv options, plus the activation check alone on the stock camera."""
WORKER_WARMUP_STEPS = 10
"""Untimed steps each parallel worker takes before the start barrier (first-frame costs)."""
WORKER_TIMEOUT_S = 900
"""Seconds to wait for a parallel worker's result before giving up (a full run takes well under a minute)."""
GOAL_SPEEDUP = 3.0
"""The goal: ``fast`` at least this many times ``stock`` with one process (wall and CPU time)."""
SCALING_SPEEDUP = 1.5
"""Parallel steps/s at least this many times one process's counts as scaling with processes."""
MIN_CPU_SHARE = 0.8
"""Below this CPU share the workers did not get their cores, and scaling is not judged."""
SIZES = Sizes(
    full={"steps": 200, "rounds": 3, "workers": None},
    quick={"steps": 20, "rounds": 1, "workers": 1},
)
"""Steps per measurement, interleaved rounds of the single-process variants, parallel processes (None: all
cores). --quick: a few steps, one round, one parallel worker (seconds, mostly building the envs)."""
MIN_CPU_S = 1e-9
"""Floor of a measured CPU time in steps/cpu-s: a clock that did not tick must not divide by zero."""
BAR_COLORS = ["#999999", "#7fa7d9", "#2a6fbf", "#17406f"]
"""Stock grey, then darker blues for faster variants."""


def _make(variant: str, size: str) -> MemoryMazeEnv:
    """A MemoryMazeEnv of ``size`` set up as ``variant`` (see VARIANTS)."""
    opts = VARIANTS[variant]
    env = MemoryMazeEnv(size=size, fast=opts["fast"])
    if opts.get("activation_only"):
        build = env._build

        def build_with_activation(seed):  # stock camera, fast activation check
            build(seed)
            apply_fast_activation(env._dm.task)

        env._build = build_with_activation
    return env


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(env, seed: int, actions: np.ndarray, keep_frames: bool):
    """Reset (timed apart) and step through ``actions``; returns (steps/s, steps/cpu-s, reset s, frames)."""
    t0 = time.perf_counter()
    env.reset(seed=seed)
    reset_s = time.perf_counter() - t0
    frames = []
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for a in actions:
        obs, *_ = env.step(int(a))
        if keep_frames:
            frames.append(obs)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return len(actions) / wall, len(actions) / max(cpu, MIN_CPU_S), reset_s, frames


def _random_actions(seed: int, steps: int) -> np.ndarray:
    """The random action sequence every variant steps through."""
    return np.random.default_rng(seed).integers(0, len(ACTION_NAMES), steps)


def _parallel_worker(size, seed, steps, barrier, queue):
    """One parallel process: warm up, wait for the others, time ``steps`` steps; puts (steps, wall, cpu)."""
    env = _make("fast", size)
    actions = _random_actions(seed, steps)
    env.reset(seed=seed)
    for a in actions[:WORKER_WARMUP_STEPS]:
        env.step(int(a))
    barrier.wait()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for a in actions:
        env.step(int(a))
    queue.put((len(actions), time.perf_counter() - t0, _cpu_seconds() - c0))
    env.close()


def measure_parallel(workers: int, size: str, seed: int, steps: int) -> dict:
    """W processes step their own fast env at the same time; returns aggregate steps/s."""
    ctx = get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_parallel_worker, args=(size, seed + i, steps, barrier, queue)) for i in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=WORKER_TIMEOUT_S) for _ in procs]
    for p in procs:
        p.join()
    per_proc = [n / wall for n, wall, _ in results]
    return {
        "workers": workers,
        "steps_per_s": float(sum(per_proc)),
        "per_process_steps_per_s": [float(r) for r in per_proc],
        "per_process_steps_per_cpu_s": [float(n / max(cpu, MIN_CPU_S)) for n, _, cpu in results],
        "cpu_share": float(sum(cpu for _, _, cpu in results) / sum(wall for _, wall, _ in results)),
    }


def run(size: str = "9x9", steps: int = 200, rounds: int = 3, workers: int | None = None, seed: int = 0) -> dict:
    """The benchmark: interleaved single-process rounds of every variant, then the parallel run."""
    workers = workers or os.cpu_count() or 1
    actions = _random_actions(seed, steps)
    envs = {name: _make(name, size) for name in VARIANTS}
    load_before = list(os.getloadavg())
    # every round: (steps/s, steps/cpu-s, reset s, frames); the frames are kept in the first round only
    per_round = interleaved_rounds(
        {name: (lambda r, env=env: _run(env, seed, actions, keep_frames=(r == 0))) for name, env in envs.items()},
        rounds,
    )
    for env in envs.values():
        env.close()
    rates = {n: [rr[0] for rr in v] for n, v in per_round.items()}
    frames = {n: np.stack(v[0][3]) for n, v in per_round.items()}
    identical = all(np.array_equal(frames["stock"], frames[n]) for n in VARIANTS)
    parallel = measure_parallel(workers, size, seed, steps)
    single = {n: float(statistics.median(v)) for n, v in rates.items()}
    cpu = {n: float(statistics.median(rr[1] for rr in v)) for n, v in per_round.items()}
    stock = single["stock"]
    return {
        "benchmark": NAME,
        "env": f"longdream/MemoryMaze-{size}-v0",
        "steps_per_measurement": steps,
        "rounds": rounds,
        "steps_per_s": {**single, f"fast_x{workers}": parallel["steps_per_s"]},
        "steps_per_s_rounds": rates,
        "steps_per_cpu_s": cpu,
        "speedup_vs_stock": {
            "fast_activation": single["fast_activation"] / stock,
            "fast": single["fast"] / stock,
            f"fast_x{workers}": parallel["steps_per_s"] / stock,
        },
        "parallel": parallel,
        "reset_seconds_median": {n: float(statistics.median(rr[2] for rr in v)) for n, v in per_round.items()},
        "frames_identical_to_stock": bool(identical),
        "cpu_speedup_vs_stock": {n: cpu[n] / cpu["stock"] for n in ("fast_activation", "fast")},
        "parallel_efficiency": parallel["steps_per_s"] / (workers * single["fast"]),
        "goal": f"fast >= {GOAL_SPEEDUP:g}x stock with one process; scaling with processes",
        "goal_single_process_3x": bool(
            single["fast"] >= GOAL_SPEEDUP * stock and cpu["fast"] >= GOAL_SPEEDUP * cpu["stock"]
        ),
        # scaling is only observable when the workers actually got their cores
        "goal_scaling": (
            bool(parallel["steps_per_s"] >= SCALING_SPEEDUP * single["fast"])
            if workers > 1 and parallel["cpu_share"] >= MIN_CPU_SHARE
            else None
        ),
        "machine": {**machine_info(), "load_average_before": load_before},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def plot(result: dict):
    """Bar chart of steps/s per variant, each labelled with its speed-up over stock."""
    names = list(result["steps_per_s"])
    values = [result["steps_per_s"][n] for n in names]
    stock = result["steps_per_s"]["stock"]
    fig, ax = figure(figsize=(6.5, 3.6))
    bars = ax.bar(names, values, color=BAR_COLORS[: len(names)])
    for bar, v in zip(bars, values):
        ax.text(
            bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}\n({v / stock:.1f}x)", ha="center", va="bottom", fontsize=8
        )
    ax.set_ylabel("env steps / s")
    ax.set_ylim(0, max(values) * 1.25)  # headroom for the labels
    ax.grid(False)
    cores = result["machine"]["cpus"]
    share = result["parallel"]["cpu_share"]
    ax.set_title(f"{result['env']} steps/s (64x64), {cores} cores; parallel CPU share {share:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write its JSON and PNG, print a summary."""
    p = benchmark_parser(NAME, __doc__, SIZES)
    p.add_argument("--size", default="9x9", choices=["9x9", "11x11", "13x13", "15x15"], help="maze size")
    SIZES.add(p, "steps", "steps per measurement", type=int)
    SIZES.add(p, "rounds", "interleaved rounds of the single-process variants", type=int)
    SIZES.add(p, "workers", "processes for the parallel run (None: all cores)", type=int)
    p.add_argument("--seed", type=int, default=0, help="env seed and action seed (worker i uses seed + i)")
    args = SIZES.fill(p.parse_args(argv))
    result = run(size=args.size, steps=args.steps, rounds=args.rounds, workers=args.workers, seed=args.seed)
    write_results(NAME, result, plot(result), output_dir(args.out, args.quick, NAME))
    sps, up = result["steps_per_s"], result["speedup_vs_stock"]
    print(" | ".join(f"{k}: {v:.0f} steps/s" for k, v in sps.items()))
    print(
        " | ".join(f"{k}: {v:.2f}x" for k, v in up.items()),
        f"| frames identical: {result['frames_identical_to_stock']}",
    )
    print(
        " | ".join(f"{k}: {v:.0f} steps/cpu-s" for k, v in result["steps_per_cpu_s"].items()),
        f"| parallel CPU share {result['parallel']['cpu_share']:.2f}, efficiency {result['parallel_efficiency']:.2f}",
    )
    scaling = result["goal_scaling"]
    if scaling is None:
        scaling = "not measured (one worker)" if result["parallel"]["workers"] == 1 else "not measurable (cores busy)"
    print(f"goal >=3x with one process: {result['goal_single_process_3x']}; scaling with processes: {scaling}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
