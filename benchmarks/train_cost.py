"""Training cost per iteration vs sequence length (the paper's Fig. 8): the hybrid vs the baselines.

One iteration = forward on (batch, frames) noisy latents + MSE loss + backward + AdamW step, random inputs,
the cpu preset at a 8 x 8x8 latent (patch 2: 16 tokens per frame). The variants are parameter-matched
(``backbone_config``). Note: with the default 192-frame window, "causal_window" equals "causal_full" for
sequences up to 192 frames.

Also measured: the reference training step of the demo, batch 8 x 32 frames, for every variant.

    python -m benchmarks.train_cost                 # the published results: frames 64..512 at batch 1, two
                                                    # timed iterations (~3 minutes)
    python -m benchmarks.train_cost --batch 2 --frames 32,64,128,256,512,1024 --repeats 3   # the long sweep
    python -m benchmarks.train_cost --quick --out DIR   # smoke run: the tiny preset, short sequences

Writes train_cost.json (a list of {variant, batch, frames, ms_per_iter, ...}) and train_cost.png.
"""

from __future__ import annotations

import statistics

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
from worldmodel.backbone import Backbone, backbone_config, count_parameters
from worldmodel.utils import resolve_device

NAME = "train_cost"
SIZES = Sizes(
    full={
        "preset": "cpu",
        "frames": "64,128,256,512",
        "batch": 1,
        "repeats": 2,
        "reference": "8x32",
        "latent": "8,8,8",
    },
    quick={"preset": "tiny", "frames": "8,16", "batch": 1, "repeats": 1, "reference": "2x8", "latent": "4,4,4"},
)
"""Full run (the published results): the cpu preset on its 8 x 8x8 latent, the length sweep at batch 1,
plus the demo's training step (batch 8 x 32 frames) as the reference point. --quick: the tiny preset on a
4 x 4x4 latent, two short sequences, one timed iteration."""
LEARNING_RATE = 1e-4
"""AdamW's learning rate (any value costs the same; a typical one keeps the weights sane over the iterations)."""


def time_iteration(
    model: Backbone, batch: int, frames: int, repeats: int, device: torch.device, gen: torch.Generator
) -> list[float]:
    """Wall times (s) of ``repeats`` training iterations after one warm-up."""
    cfg = model.cfg
    x = torch.randn(batch, frames, cfg.latent_channels, *cfg.latent_size, generator=gen).to(device)  # (B, T, C, h, w)
    target = torch.randn(x.shape, generator=gen).to(device)
    a = torch.randint(0, cfg.num_actions or 1, (batch, frames), generator=gen).to(device)  # (B, T)
    n = torch.rand(batch, frames, generator=gen).to(device)  # (B, T)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)

    def iteration():
        out, _ = model(x, a, n)
        loss = torch.nn.functional.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_calls(iteration, repeats, warmup=1, device=device)[0]


def plot(records: list[dict], variants: list[str], preset: str, batch: int):
    """ms per iteration vs frames per sequence, one line per variant (log-log; the reference points left out)."""
    fig, ax = figure(figsize=(6, 4.2))
    for variant in variants:
        rs = [r for r in records if r["variant"] == variant and not r["reference_point"]]
        ax.plot([r["frames"] for r in rs], [r["ms_per_iter"] for r in rs], "o-", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("frames per training sequence")
    ax.set_ylabel("ms per iteration (fwd + bwd + AdamW)")
    ax.set_title(f"training cost, {preset} preset, batch {batch}")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> list[dict]:
    """Time every (variant, length) point, write the JSON and PNG, print a table; returns the records."""
    p = benchmark_parser(NAME, __doc__, SIZES)
    SIZES.add(p, "preset", "model size", choices=["tiny", "cpu", "paper"])
    p.add_argument("--variants", default="hybrid,causal_full,causal_window,mamba2", help="backbone variants")
    SIZES.add(p, "frames", "sequence lengths of the sweep")
    SIZES.add(p, "batch", "batch of the length sweep", type=int)
    SIZES.add(p, "reference", "extra BATCHxFRAMES point per variant ('' = none)")
    SIZES.add(p, "latent", "latent C,h,w")
    p.add_argument("--patch", type=int, default=2, help="latent cells per token side")
    SIZES.add(p, "repeats", "timed iterations per point", type=int)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the inputs")
    args = SIZES.fill(p.parse_args(argv))
    out = output_dir(args.out, args.quick, NAME)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    C, h, w = (int(v) for v in args.latent.split(","))
    points = [(args.batch, int(f), False) for f in args.frames.split(",")]
    if args.reference:
        rb, rf = (int(v) for v in args.reference.lower().split("x"))
        points.append((rb, rf, True))
    variants = args.variants.split(",")
    gen = torch.Generator().manual_seed(args.seed)
    machine = machine_info(device)
    records = []
    for variant in tqdm(variants, desc=NAME, unit="variant"):
        cfg = backbone_config(args.preset, variant, latent_channels=C, latent_size=(h, w), patch=args.patch)
        torch.manual_seed(args.seed)
        model = Backbone(cfg).to(device).train()
        for pb, f, is_ref in points:
            times = time_iteration(model, pb, f, args.repeats, device, gen)
            med = statistics.median(times)
            records.append(
                {
                    "variant": variant,
                    "batch": pb,
                    "frames": f,
                    "ms_per_iter": 1000 * med,
                    "ms_per_iter_min": 1000 * min(times),
                    "tokens_per_s": pb * f * cfg.tokens / med,
                    "params": count_parameters(model),
                    "depth": cfg.depth,
                    "dim": cfg.dim,
                    "attn": cfg.attn,
                    "preset": args.preset,
                    "reference_point": is_ref,
                    "device": str(device),
                    "machine": machine,
                }
            )
    print(f"\n{'variant':<15}{'batch':>6}{'frames':>7}{'ms/iter':>10}{'tokens/s':>10}{'params':>10}")
    for r in records:
        print(
            f"{r['variant']:<15}{r['batch']:>6}{r['frames']:>7}{r['ms_per_iter']:>10.0f}"
            f"{r['tokens_per_s']:>10.0f}{r['params']:>10}"
        )
    write_results(NAME, records, plot(records, variants, args.preset, args.batch), out)
    return records


if __name__ == "__main__":
    main()
