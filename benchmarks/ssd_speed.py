"""SSD scan: chunked matmul form (``ssd_chunked``) vs the sequential recurrence (``ssd_ref``) on CPU.

Same inputs, forward only; reports wall time (fastest of several calls), speed-up and the max abs
difference of outputs and final states. Heads follow one SSM layer of the cpu preset (8 heads x headdim
32, d_state 16, one B/C group). Batch 1 is one sequence (the goal's setting); batch 4 is several block
sequences scanned together, where the ratio is lower: the sequential reference's cost is per-step
overhead that barely grows with batch.

    python -m benchmarks.ssd_speed                  # T = 256, 1024, 4096 at batch 1 and 4
    python -m benchmarks.ssd_speed --quick --out DIR   # smoke run: T = 64, 256 at batch 1

Writes ssd_speed.json (a list of {batch, T, chunked_ms, sequential_ms, speedup, max_abs_err_y,
max_abs_err_state, ...}) and ssd_speed.png. Goal: >= 20x faster (``GOAL_SPEEDUP``) at T = 4096
(``GOAL_LENGTH``), same result.
"""

from __future__ import annotations

from functools import partial

import torch
from tqdm import tqdm

from benchmarks.common import (
    Sizes,
    benchmark_parser,
    figure,
    machine_info,
    output_dir,
    timed_calls,
    write_results,
)
from worldmodel.ssd import ssd_chunked, ssd_ref

NAME = "ssd_speed"
SIZES = Sizes(
    full={"lengths": "256,1024,4096", "batches": "1,4", "chunked_calls": 10, "sequential_calls": 3},
    quick={"lengths": "64,256", "batches": "1", "chunked_calls": 3, "sequential_calls": 1},
)
"""Sequence lengths, batches, and timed calls per scan: the fastest of several calls is the least disturbed by
a shared machine; the sequential reference is slow, so it gets fewer. --quick: a second or two of scanning."""
GOAL_SPEEDUP = 20.0
"""The goal: the chunked scan at least this many times faster than the sequential one at T = GOAL_LENGTH."""
GOAL_LENGTH = 4096
"""Sequence length of the goal (a long Memory Maze episode's worth of frames for one block)."""
DT_BIAS = -3.0
"""softplus(N(0, 1) - 3) gives time steps around 0.05, like Mamba2's initialisation."""
LOG_DECAY_SPAN = 2.7
"""A = -exp(U(0, 2.7)): per-head decay rates from -1 to about -15, the range Mamba2 initialises."""


def scan_inputs(batch: int, length: int, heads: int, headdim: int, d_state: int, gen: torch.Generator) -> tuple:
    """Random SSD inputs (x, dt, A, B, C, initial state) shaped like one SSM layer with one B/C group."""
    x = torch.randn(batch, length, heads, headdim, generator=gen)  # (b, T, h, d)
    dt = torch.nn.functional.softplus(torch.randn(batch, length, heads, generator=gen) + DT_BIAS)  # (b, T, h)
    A = -torch.exp(torch.rand(heads, generator=gen) * LOG_DECAY_SPAN)  # (h,)
    B = torch.randn(batch, length, 1, d_state, generator=gen)  # (b, T, groups, n)
    C = torch.randn(batch, length, 1, d_state, generator=gen)  # (b, T, groups, n)
    s0 = torch.randn(batch, heads, headdim, d_state, generator=gen)  # (b, h, d, n)
    return x, dt, A, B, C, s0


def timed_min(fn, calls: int, warmup: int) -> tuple[float, object]:
    """Fastest wall seconds of ``calls`` timed calls of ``fn()`` after ``warmup`` untimed ones, and its last
    result (the fastest call is the one a shared machine disturbed least)."""
    times, result = timed_calls(fn, calls, warmup)
    return min(times), result


def plot(records: list[dict], heads: int, headdim: int, d_state: int, chunk: int):
    """ms of both scans vs sequence length per batch (log-log), each point labelled with its speed-up."""
    fig, ax = figure(figsize=(5.5, 4))
    for b in dict.fromkeys(r["batch"] for r in records):
        rs = [r for r in records if r["batch"] == b]
        lengths = [r["T"] for r in rs]
        ax.plot(lengths, [r["sequential_ms"] for r in rs], "o--", label=f"sequential (ssd_ref), batch {b}")
        ax.plot(lengths, [r["chunked_ms"] for r in rs], "o-", label=f"chunked (chunk {chunk}), batch {b}")
        for r in rs:
            ax.annotate(
                f"{r['speedup']:.0f}x",
                (r["T"], r["chunked_ms"]),
                textcoords="offset points",
                xytext=(0, -12 if b > 1 else 6),  # batch > 1 labels below its line, batch 1 above
                fontsize=8,
            )
    ticks = sorted({r["T"] for r in records})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("ms (forward, CPU)")
    ax.set_title(f"SSD scan, {heads} heads x {headdim}, state {d_state}")
    ax.legend(loc="upper left")
    return fig


def main(argv: list[str] | None = None) -> list[dict]:
    """Time both scans at every (batch, length), write the JSON and PNG, print a table; returns the records."""
    p = benchmark_parser(NAME, __doc__, SIZES)
    SIZES.add(p, "lengths", "sequence lengths T")
    SIZES.add(p, "batches", "batch sizes")
    SIZES.add(p, "chunked_calls", "timed calls of ssd_chunked", type=int)
    SIZES.add(p, "sequential_calls", "timed calls of ssd_ref", type=int)
    p.add_argument("--heads", type=int, default=8, help="SSM heads")
    p.add_argument("--headdim", type=int, default=32, help="channels per head")
    p.add_argument("--d-state", type=int, default=16, help="SSM state size")
    p.add_argument("--chunk", type=int, default=32, help="chunk length of ssd_chunked")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = SIZES.fill(p.parse_args(argv))
    out = output_dir(args.out, args.quick, NAME)

    if args.threads:
        torch.set_num_threads(args.threads)
    h, d, n = args.heads, args.headdim, args.d_state
    gen = torch.Generator().manual_seed(0)
    machine = machine_info()
    records = []
    points = [(int(b), int(T)) for b in args.batches.split(",") for T in args.lengths.split(",")]
    for b, T in tqdm(points, desc=NAME, unit="point"):
        x, dt, A, B, C, s0 = scan_inputs(b, T, h, d, n, gen)
        with torch.no_grad():
            chunked = partial(ssd_chunked, x, dt, A, B, C, args.chunk, s0)
            t_chunk, (y_c, s_c) = timed_min(chunked, args.chunked_calls, warmup=1)
            t_seq, (y_r, s_r) = timed_min(partial(ssd_ref, x, dt, A, B, C, s0), args.sequential_calls, warmup=0)
        records.append(
            {
                "T": T,
                "chunked_ms": 1000 * t_chunk,
                "sequential_ms": 1000 * t_seq,
                "speedup": t_seq / t_chunk,
                "max_abs_err_y": (y_c - y_r).abs().max().item(),
                "max_abs_err_state": (s_c - s_r).abs().max().item(),
                "max_abs_y": y_r.abs().max().item(),
                "batch": b,
                "heads": h,
                "headdim": d,
                "d_state": n,
                "chunk": args.chunk,
                "machine": machine,
            }
        )
    print(f"\n{'batch':>6}{'T':>6}{'chunked ms':>12}{'sequential ms':>15}{'speed-up':>10}", end="")
    print(f"{'max|dy|':>10}{'max|dstate|':>13}")
    for r in records:
        print(
            f"{r['batch']:>6}{r['T']:>6}{r['chunked_ms']:>12.1f}{r['sequential_ms']:>15.1f}{r['speedup']:>9.1f}x"
            f"{r['max_abs_err_y']:>10.1e}{r['max_abs_err_state']:>13.1e}"
        )
    write_results(NAME, records, plot(records, h, d, n, args.chunk), out)
    return records


if __name__ == "__main__":
    main()
