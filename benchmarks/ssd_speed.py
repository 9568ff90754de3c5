"""SSD scan: chunked matmul form (``ssd_chunked``) vs the sequential recurrence (``ssd_ref``) on CPU.

Same inputs, forward only; reports wall time (fastest of several calls), speed-up and the max abs
difference of outputs and final states. Heads follow one SSM layer of the cpu preset (8 heads x headdim
32, d_state 16, one B/C group). Batch 1 is one sequence (the goal's setting); batch 4 is several block
sequences scanned together, where the ratio is lower: the sequential reference's cost is per-step
overhead that barely grows with batch.

    python -m benchmarks.ssd_speed            # T = 256, 1024, 4096
    python -m benchmarks.ssd_speed --quick    # T = 4096 only

Writes benchmarks/results/ssd_speed.json (a list of {batch, T, chunked_ms, sequential_ms, speedup,
max_abs_err_y, max_abs_err_state, ...}) and ssd_speed.png. Goal: >= 20x faster at T = 4096, same result.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.latency import RESULTS, machine
from worldmodel.ssd import ssd_chunked, ssd_ref
from worldmodel.utils import atomic_write_json, save_figure


def _time(fn, args: tuple, repeats: int) -> tuple[float, object]:
    """Fastest wall time of fn(*args) over ``repeats`` calls (the least disturbed by a shared machine), and
    the last result."""
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ssd_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="T = 4096 only")
    p.add_argument("--lengths", default="256,1024,4096")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--headdim", type=int, default=32)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=str(RESULTS / "ssd_speed.json"))
    args = p.parse_args(argv)

    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [4096] if args.quick else [int(v) for v in args.lengths.split(",")]
    h, d, n = args.heads, args.headdim, args.d_state
    gen = torch.Generator().manual_seed(0)
    records = []
    points = [(b, T) for b in (int(v) for v in args.batches.split(",")) for T in lengths]
    for b, T in tqdm(points, desc="ssd_speed", unit="point"):
        x = torch.randn(b, T, h, d, generator=gen)
        dt = torch.nn.functional.softplus(torch.randn(b, T, h, generator=gen) - 3)  # ~0.05 like Mamba2 init
        A = -torch.exp(torch.rand(h, generator=gen) * 2.7)  # -1 .. -16
        B = torch.randn(b, T, 1, n, generator=gen)
        C = torch.randn(b, T, 1, n, generator=gen)
        s0 = torch.randn(b, h, d, n, generator=gen)
        with torch.no_grad():
            ssd_chunked(x, dt, A, B, C, args.chunk, s0)  # warm-up
            t_chunk, (y_c, s_c) = _time(ssd_chunked, (x, dt, A, B, C, args.chunk, s0), repeats=10)
            t_seq, (y_r, s_r) = _time(ssd_ref, (x, dt, A, B, C, s0), repeats=3)
        rec = {
            "T": T, "chunked_ms": 1000 * t_chunk, "sequential_ms": 1000 * t_seq, "speedup": t_seq / t_chunk,
            "max_abs_err_y": (y_c - y_r).abs().max().item(),
            "max_abs_err_state": (s_c - s_r).abs().max().item(),
            "max_abs_y": y_r.abs().max().item(), "batch": b, "heads": h, "headdim": d, "d_state": n,
            "chunk": args.chunk, "machine": machine(),
        }
        records.append(rec)
    print(f"\n{'batch':>6}{'T':>6}{'chunked ms':>12}{'sequential ms':>15}{'speed-up':>10}{'max|dy|':>10}"
          f"{'max|dstate|':>13}")
    for r in records:
        print(f"{r['batch']:>6}{r['T']:>6}{r['chunked_ms']:>12.1f}{r['sequential_ms']:>15.1f}{r['speedup']:>9.1f}x"
              f"{r['max_abs_err_y']:>10.1e}{r['max_abs_err_state']:>13.1e}")
    out = Path(args.out)
    atomic_write_json(out, records)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for b in dict.fromkeys(r["batch"] for r in records):
        rs = [r for r in records if r["batch"] == b]
        Ts = [r["T"] for r in rs]
        ax.plot(Ts, [r["sequential_ms"] for r in rs], "o--", label=f"sequential (ssd_ref), batch {b}")
        ax.plot(Ts, [r["chunked_ms"] for r in rs], "o-", label=f"chunked (chunk {args.chunk}), batch {b}")
        for r in rs:
            ax.annotate(f"{r['speedup']:.0f}x", (r["T"], r["chunked_ms"]), textcoords="offset points",
                        xytext=(0, -12 if b > 1 else 6), fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["T"] for r in records}), [str(t) for t in sorted({r["T"] for r in records})])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("ms (forward, CPU)")
    ax.set_title(f"SSD scan, {h} heads x {d}, state {n}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return records


if __name__ == "__main__":
    main()
