"""Per-frame generation cost vs frames already in context: hybrid vs full causal vs windowed attention.

For every variant and context length N, the streaming state after N frames is built by ``Backbone.prefill``
(the parallel forward, which returns exactly the state N ``step`` calls would leave; tested in
tests/worldmodel/test_backbone.py), then ``step`` is timed frame by frame from there. One ``step`` call is one
network evaluation of one frame; a sampled frame costs (denoising steps + 1) of them.

Memory, per point: ``state_mb`` is the exact byte size of the streaming state a step reads (SSM + conv states,
KV caches); ``step_alloc_mb`` the peak of bytes allocated during one step (torch profiler, op granularity);
``peak_mb`` = their sum; ``rss_mb`` the process resident size after the timed steps (noisy: allocator caches,
the prefill's high-water mark). Runs on one thread by default (see --threads).

    python -m benchmarks.latency                      # about a minute: the published results (full causal
                                                      # attention capped at 800 frames of context)
    python -m benchmarks.latency --max-full-context 0 --steps 40   # every context for every variant (the
                                                      # 3200-frame full-attention prefill alone is several
                                                      # TFLOP: minutes on 2 cores)
    python -m benchmarks.latency --quick --out DIR    # smoke run: the tiny preset, short contexts

Writes latency.json (a list of {variant, context_frames, ms_per_frame, peak_mb, ...}) and latency.png. Goal:
hybrid at 3200 within 10% (``FLAT_TOLERANCE``) of hybrid at 50 with flat memory; full attention visibly growing.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from tqdm import tqdm

from benchmarks.common import (
    Sizes,
    benchmark_parser,
    figure,
    machine_info,
    output_dir,
    sync,
    timed_calls,
    write_results,
)
from worldmodel.backbone import Backbone, backbone_config, count_parameters
from worldmodel.state import state_nbytes
from worldmodel.utils import resolve_device

NAME = "latency"
SIZES = Sizes(
    full={"preset": "cpu", "contexts": "50,200,800,3200", "latent": "8,8,8", "steps": 20, "max_full_context": 800},
    quick={"preset": "tiny", "contexts": "8,32", "latent": "4,4,4", "steps": 3, "max_full_context": 0},
)
"""Full run (the published results): the cpu preset on its 8 x 8x8 latent (a 64x64 frame); full causal
attention stops at 800 frames of context, where its prefill already takes most of the run. --quick: the tiny
preset on a 4 x 4x4 latent, two short contexts, a few timed steps (0: no cap needed)."""
FLAT_TOLERANCE = 0.10
"""The goal: the hybrid's time per frame at the longest context within this fraction of the shortest's."""
MB = 2**20
"""Bytes per MB (binary megabytes, as the memory columns report)."""
STEP_NOISE_LEVEL = 0.5
"""Noise level of the timed steps (any level costs the same; mid-range like a denoising pass)."""


def rss_mb() -> float | None:
    """Current resident set size of this process (Linux), MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def step_alloc_peak_bytes(fn) -> int:
    """Peak of bytes allocated (net of frees) while ``fn()`` runs, from the torch profiler's per-op memory."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += ev.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def measure(model: Backbone, context: int, steps: int, batch: int, device: torch.device, gen: torch.Generator) -> dict:
    """Prefill ``context`` frames, then time ``steps`` streaming steps. Returns a result dict."""
    cfg = model.cfg
    # 1. the state after `context` random frames, by the parallel forward
    x = torch.randn(batch, context, cfg.latent_channels, *cfg.latent_size, generator=gen).to(device)  # (B, N, C, h, w)
    a = torch.randint(0, cfg.num_actions or 1, (batch, context), generator=gen).to(device)  # (B, N)
    n = torch.rand(batch, context, generator=gen).to(device)  # (B, N)
    t0 = time.perf_counter()
    _, _, state = model.prefill(x, a, n)
    sync(device)
    prefill_s = time.perf_counter() - t0
    del x, a, n
    # 2. one warm-up step (frame context + 1), then the memory of one step from there (CPU profiler)
    xs = torch.randn(steps + 2, batch, cfg.latent_channels, *cfg.latent_size, generator=gen).to(device)
    a_t = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    n_t = torch.full((batch,), STEP_NOISE_LEVEL, device=device)  # (B,)
    _, _, state = model.step(xs[-1], a_t, n_t, state)
    alloc = None
    if device.type == "cpu":
        alloc = step_alloc_peak_bytes(lambda: model.step(xs[-2], a_t, n_t, state))
    # 3. `steps` timed steps, each on a new frame, carrying the state
    frames = iter(xs[:steps])

    def one_step():
        nonlocal state
        _, _, state = model.step(next(frames), a_t, n_t, state)

    times, _ = timed_calls(one_step, steps, device=device)
    state_mb = state_nbytes(state) / MB
    alloc_mb = None if alloc is None else alloc / MB
    return {
        "ms_per_frame": 1000 * statistics.median(times),
        "ms_per_frame_min": 1000 * min(times),
        "state_mb": state_mb,
        "step_alloc_mb": alloc_mb,
        "peak_mb": state_mb + (alloc_mb or 0.0),
        "rss_mb": rss_mb(),
        "prefill_s": prefill_s,
        "timed_steps": steps,
    }


def plot(records: list[dict]):
    """Time and peak memory per frame vs context, one line per variant (log-log)."""
    fig, axes = figure(1, 2, figsize=(11, 4))
    for variant in dict.fromkeys(r["variant"] for r in records):
        rs = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["context_frames"])
        xs = [r["context_frames"] for r in rs]
        axes[0].plot(xs, [r["ms_per_frame"] for r in rs], "o-", label=variant)
        axes[1].plot(xs, [r["peak_mb"] for r in rs], "o-", label=variant)
    for ax, title in zip(axes, ["time per frame (ms, one step call)", "peak memory per step (MB)"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frames already in context")
        ax.set_title(title)
        ax.legend()
    return fig


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure every (variant, context) point, write the JSON and PNG, print a table; returns the records."""
    p = benchmark_parser(NAME, __doc__, SIZES)
    SIZES.add(p, "preset", "model size", choices=["tiny", "cpu", "paper"])
    p.add_argument("--variants", default="hybrid,causal_full,causal_window", help="backbone variants")
    SIZES.add(p, "contexts", "frames already in context")
    SIZES.add(p, "latent", "latent C,h,w")
    p.add_argument("--patch", type=int, default=2, help="latent cells per token side")
    SIZES.add(p, "steps", "timed frames per point", type=int)
    p.add_argument("--batch", type=int, default=1, help="dreams stepped together")
    SIZES.add(p, "max_full_context", "skip causal_full beyond this context (0: no cap)", type=int)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: a batch-1 step is many small ops; more threads mostly add OpenMP "
        "synchronisation and noise on a shared machine; 0 = torch's default)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the inputs")
    args = SIZES.fill(p.parse_args(argv))
    out = output_dir(args.out, args.quick, NAME)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cap = args.max_full_context or None
    contexts = [int(c) for c in args.contexts.split(",")]
    C, h, w = (int(v) for v in args.latent.split(","))
    variants = args.variants.split(",")
    gen = torch.Generator().manual_seed(args.seed)
    records, skipped = [], []
    models = {}
    for variant, context in tqdm([(v, c) for v in variants for c in contexts], desc=NAME, unit="point"):
        if variant == "causal_full" and cap is not None and context > cap:
            skipped.append(
                {
                    "variant": variant,
                    "context_frames": context,
                    "reason": f"prefill too long for this run (cap {cap} frames)",
                }
            )
            continue
        if variant not in models:
            cfg = backbone_config(args.preset, variant, latent_channels=C, latent_size=(h, w), patch=args.patch)
            torch.manual_seed(args.seed)
            models[variant] = Backbone(cfg).to(device).eval()
        model = models[variant]
        with torch.no_grad():
            r = measure(model, context, args.steps, args.batch, device, gen)
        records.append(
            {
                "variant": variant,
                "context_frames": context,
                **r,
                "preset": args.preset,
                "batch": args.batch,
                "params": count_parameters(model),
                "depth": model.cfg.depth,
                "dim": model.cfg.dim,
                "attn": model.cfg.attn,
                "device": str(device),
            }
        )

    print(
        f"\n{'variant':<15}{'context':>8}{'ms/frame':>10}{'state MB':>10}{'peak MB':>9}{'RSS MB':>9}{'prefill s':>10}"
    )
    for r in records:
        print(
            f"{r['variant']:<15}{r['context_frames']:>8}{r['ms_per_frame']:>10.2f}{r['state_mb']:>10.2f}"
            f"{r['peak_mb']:>9.2f}{(r['rss_mb'] or 0):>9.0f}{r['prefill_s']:>10.1f}"
        )
    for s in skipped:
        print(f"{s['variant']:<15}{s['context_frames']:>8}   skipped: {s['reason']}")
    by = {(r["variant"], r["context_frames"]): r for r in records}
    for v in variants:
        cs = sorted(c for (vv, c) in by if vv == v)
        if len(cs) >= 2:
            lo, hi = by[(v, cs[0])], by[(v, cs[-1])]
            print(
                f"{v}: time x{hi['ms_per_frame'] / lo['ms_per_frame']:.2f}, peak memory "
                f"x{hi['peak_mb'] / lo['peak_mb']:.2f} from {cs[0]} to {cs[-1]} frames of context"
            )
    meta = {
        "machine": machine_info(device),
        "quick": args.quick,
        "skipped": skipped,
        "peak_mb_measures": "state_mb (exact bytes of the streaming state: SSM/conv states + KV "
        "caches) + step_alloc_mb (peak bytes allocated in one step, torch profiler)",
        "ms_per_frame_measures": "median wall time of one Backbone.step call (one frame, batch as given)",
    }
    for r in records:
        r["meta"] = meta
    write_results(NAME, records, plot(records), out)
    return records


if __name__ == "__main__":
    main()
