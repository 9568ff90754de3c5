"""Training cost per iteration vs sequence length (the paper's Fig. 8): the hybrid vs the baselines.

One iteration = forward on (batch, frames) noisy latents + MSE loss + backward + AdamW step, random inputs,
the cpu preset at a 8 x 8x8 latent (patch 2: 16 tokens per frame). The variants are parameter-matched
(``backbone_config``). Note: with the default 192-frame window, "causal_window" equals "causal_full" for
sequences up to 192 frames.

Also measured: the reference training step of the demo, batch 8 x 32 frames, for every variant.

    python -m benchmarks.train_cost --quick   # frames 64..512 at batch 1, two timed iterations (~3 minutes)
    python -m benchmarks.train_cost           # frames 32..1024 at batch 2, three timed iterations

Writes benchmarks/results/train_cost.json (a list of {variant, batch, frames, ms_per_iter, ...}) and
train_cost.png.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.latency import RESULTS, machine, sync
from worldmodel.backbone import Backbone, backbone_config, count_parameters
from worldmodel.utils import atomic_write_json, resolve_device, save_figure


def time_iteration(model: Backbone, batch: int, frames: int, repeats: int, device: torch.device,
                   gen: torch.Generator) -> list[float]:
    """Wall times (s) of ``repeats`` training iterations after one warm-up."""
    cfg = model.cfg
    x = torch.randn(batch, frames, cfg.latent_channels, *cfg.latent_size, generator=gen).to(device)
    target = torch.randn(x.shape, generator=gen).to(device)
    a = torch.randint(0, cfg.num_actions or 1, (batch, frames), generator=gen).to(device)
    n = torch.rand(batch, frames, generator=gen).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        out, feats = model(x, a, n)
        loss = torch.nn.functional.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 1, frames 64..512, two timed iterations")
    p.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    p.add_argument("--variants", default="hybrid,causal_full,causal_window,mamba2")
    p.add_argument("--frames", default=None, help="sequence lengths (default 64..512 quick, 32..1024 full)")
    p.add_argument("--batch", type=int, default=None, help="batch of the length sweep (1 quick, 2 full)")
    p.add_argument("--reference", default="8x32", help="extra BATCHxFRAMES point per variant ('' = none)")
    p.add_argument("--latent", default="8,8,8", help="latent C,h,w")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="timed iterations per point (2 quick, 3 full)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(RESULTS / "train_cost.json"))
    args = p.parse_args(argv)

    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    default_frames = "64,128,256,512" if args.quick else "32,64,128,256,512,1024"
    batch = args.batch or (1 if args.quick else 2)
    frames = [int(v) for v in (args.frames or default_frames).split(",")]
    repeats = args.repeats or (2 if args.quick else 3)
    C, h, w = (int(v) for v in args.latent.split(","))
    points = [(batch, f, False) for f in frames]
    if args.reference:
        rb, rf = (int(v) for v in args.reference.lower().split("x"))
        points.append((rb, rf, True))
    variants = args.variants.split(",")
    gen = torch.Generator().manual_seed(0)
    records = []
    for variant in tqdm(variants, desc="train_cost", unit="variant"):
        cfg = backbone_config(args.preset, variant, latent_channels=C, latent_size=(h, w), patch=args.patch)
        torch.manual_seed(0)
        model = Backbone(cfg).to(device).train()
        for pb, f, is_ref in points:
            times = time_iteration(model, pb, f, repeats, device, gen)
            med = statistics.median(times)
            records.append({
                "variant": variant, "batch": pb, "frames": f, "ms_per_iter": 1000 * med,
                "ms_per_iter_min": 1000 * min(times), "tokens_per_s": pb * f * cfg.tokens / med,
                "params": count_parameters(model), "depth": cfg.depth, "dim": cfg.dim, "attn": cfg.attn,
                "preset": args.preset, "reference_point": is_ref, "device": str(device), "machine": machine(),
            })
    print(f"\n{'variant':<15}{'batch':>6}{'frames':>7}{'ms/iter':>10}{'tokens/s':>10}{'params':>10}")
    for r in records:
        print(f"{r['variant']:<15}{r['batch']:>6}{r['frames']:>7}{r['ms_per_iter']:>10.0f}"
              f"{r['tokens_per_s']:>10.0f}{r['params']:>10}")
    out = Path(args.out)
    atomic_write_json(out, records)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for variant in variants:
        rs = [r for r in records if r["variant"] == variant and not r["reference_point"]]
        ax.plot([r["frames"] for r in rs], [r["ms_per_iter"] for r in rs], "o-", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("frames per training sequence")
    ax.set_ylabel("ms per iteration (fwd + bwd + AdamW)")
    ax.set_title(f"training cost, {args.preset} preset, batch {batch}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return records


if __name__ == "__main__":
    main()
