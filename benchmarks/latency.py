"""Per-frame generation cost vs frames already in context: hybrid vs full causal vs windowed attention.

For every variant and context length N, the streaming state after N frames is built by ``Backbone.prefill``
(the parallel forward, which returns exactly the state N ``step`` calls would leave; tested in
tests/worldmodel/test_backbone.py), then ``step`` is timed frame by frame from there. One ``step`` call is one
network evaluation of one frame; a sampled frame costs (denoising steps + 1) of them.

Memory, per point: ``state_mb`` is the exact byte size of the streaming state a step reads (SSM + conv states,
KV caches); ``step_alloc_mb`` the peak of bytes allocated during one step (torch profiler, op granularity);
``peak_mb`` = their sum; ``rss_mb`` the process resident size after the timed steps (noisy: allocator caches,
the prefill's high-water mark). Runs on one thread by default (see --threads).

    python -m benchmarks.latency --quick      # about a minute; full causal attention capped at 800 frames
    python -m benchmarks.latency              # all contexts for all variants (the 3200-frame full-attention
                                              # prefill alone is several TFLOP: minutes on 2 cores)

Writes benchmarks/results/latency.json (a list of {variant, context_frames, ms_per_frame, peak_mb, ...}) and
benchmarks/results/latency.png. Goal: hybrid at 3200 within 10% of hybrid at 50 with flat memory; full
attention visibly growing.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from worldmodel.backbone import Backbone, backbone_config, count_parameters
from worldmodel.state import state_nbytes
from worldmodel.utils import atomic_write_json, resolve_device, save_figure

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- helpers shared by benchmarks


def machine() -> dict:
    """Where the numbers come from."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def rss_mb() -> float | None:
    """Current resident set size of this process (Linux), MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ latency


def step_alloc_peak_bytes(fn) -> int:
    """Peak of bytes allocated (net of frees) while ``fn()`` runs, from the torch profiler's per-op memory."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += ev.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def measure(model: Backbone, context: int, steps: int, batch: int, device: torch.device,
            gen: torch.Generator) -> dict:
    """Prefill ``context`` frames, then time ``steps`` streaming steps. Returns a result dict."""
    cfg = model.cfg
    shape = (batch, context, cfg.latent_channels, *cfg.latent_size)
    x = torch.randn(shape, generator=gen).to(device)
    a = torch.randint(0, cfg.num_actions or 1, (batch, context), generator=gen).to(device)
    n = torch.rand(batch, context, generator=gen).to(device)
    t0 = time.perf_counter()
    _, _, state = model.prefill(x, a, n)
    sync(device)
    prefill_s = time.perf_counter() - t0
    del x, a, n
    xs = torch.randn(steps + 2, batch, cfg.latent_channels, *cfg.latent_size, generator=gen).to(device)
    a_t = torch.zeros(batch, dtype=torch.long, device=device)
    n_t = torch.full((batch,), 0.5, device=device)
    _, _, state = model.step(xs[-1], a_t, n_t, state)  # warm-up (also frame context + 1)
    alloc = None
    if device.type == "cpu":
        alloc = step_alloc_peak_bytes(lambda: model.step(xs[-2], a_t, n_t, state))
    times = []
    for i in range(steps):
        sync(device)
        t0 = time.perf_counter()
        _, _, state = model.step(xs[i], a_t, n_t, state)
        sync(device)
        times.append(time.perf_counter() - t0)
    state_mb = state_nbytes(state) / 2**20
    alloc_mb = None if alloc is None else alloc / 2**20
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


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~1 minute: fewer timed steps, causal_full <= 800")
    p.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    p.add_argument("--variants", default="hybrid,causal_full,causal_window")
    p.add_argument("--contexts", default="50,200,800,3200", help="frames already in context")
    p.add_argument("--latent", default="8,8,8", help="latent C,h,w (cpu preset: 8 x 8x8 from a 64x64 frame)")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="timed frames per point (default 40; quick 20)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--max-full-context", type=int, default=None,
                   help="skip causal_full beyond this context (default: 800 with --quick, no cap otherwise)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: a batch-1 step is many small ops; more threads mostly add "
                        "OpenMP synchronisation and noise on a shared machine; 0 = torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "latency.json"))
    args = p.parse_args(argv)

    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    steps = args.steps or (20 if args.quick else 40)
    cap = args.max_full_context if args.max_full_context is not None else (800 if args.quick else None)
    contexts = [int(c) for c in args.contexts.split(",")]
    C, h, w = (int(v) for v in args.latent.split(","))
    variants = args.variants.split(",")
    gen = torch.Generator().manual_seed(args.seed)
    records, skipped = [], []
    jobs = [(v, c) for v in variants for c in contexts]
    models = {}
    for variant, context in tqdm(jobs, desc="latency", unit="point"):
        if variant == "causal_full" and cap is not None and context > cap:
            skipped.append({"variant": variant, "context_frames": context,
                            "reason": f"prefill too long for this run (cap {cap} frames)"})
            continue
        if variant not in models:
            cfg = backbone_config(args.preset, variant, latent_channels=C, latent_size=(h, w),
                                  patch=args.patch)
            torch.manual_seed(args.seed)
            models[variant] = Backbone(cfg).to(device).eval()
        model = models[variant]
        with torch.no_grad():
            r = measure(model, context, steps, args.batch, device, gen)
        records.append({"variant": variant, "context_frames": context, **r, "preset": args.preset,
                        "batch": args.batch, "params": count_parameters(model), "depth": model.cfg.depth,
                        "dim": model.cfg.dim, "attn": model.cfg.attn, "device": str(device)})

    print(f"\n{'variant':<15}{'context':>8}{'ms/frame':>10}{'state MB':>10}{'peak MB':>9}{'RSS MB':>9}"
          f"{'prefill s':>10}")
    for r in records:
        print(f"{r['variant']:<15}{r['context_frames']:>8}{r['ms_per_frame']:>10.2f}{r['state_mb']:>10.2f}"
              f"{r['peak_mb']:>9.2f}{(r['rss_mb'] or 0):>9.0f}{r['prefill_s']:>10.1f}")
    for s in skipped:
        print(f"{s['variant']:<15}{s['context_frames']:>8}   skipped: {s['reason']}")
    by = {(r["variant"], r["context_frames"]): r for r in records}
    for v in variants:
        cs = sorted(c for (vv, c) in by if vv == v)
        if len(cs) >= 2:
            lo, hi = by[(v, cs[0])], by[(v, cs[-1])]
            print(f"{v}: time x{hi['ms_per_frame'] / lo['ms_per_frame']:.2f}, peak memory "
                  f"x{hi['peak_mb'] / lo['peak_mb']:.2f} from {cs[0]} to {cs[-1]} frames of context")
    meta = {"machine": machine(), "quick": args.quick, "skipped": skipped,
            "peak_mb_measures": "state_mb (exact bytes of the streaming state: SSM/conv states + KV "
                                "caches) + step_alloc_mb (peak bytes allocated in one step, torch profiler)",
            "ms_per_frame_measures": "median wall time of one Backbone.step call (one frame, batch as given)"}
    for r in records:
        r["meta"] = meta
    out = Path(args.out)
    atomic_write_json(out, records)
    plot(records, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return records


if __name__ == "__main__":
    main()
