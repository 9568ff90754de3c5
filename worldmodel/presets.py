"""Every number that differs between the presets, in one place.

Presets: ``tiny`` (tests: seconds on a CPU), ``cpu`` (the demo: minutes on 2 cores), ``long`` (the cpu model
trained 4x longer, about an hour on 2 cores: ``make train-long``), ``recall`` (the cpu model trained on 64- then
96-frame windows, for the recall benchmark's sweep of every variant: ``make bench-recall``), ``crafter`` (the cpu
model for Crafter's busier frames: a 16-channel latent, within the demo's budget: ``make train-crafter``),
``paper`` (~200M parameters, the paper's windows, a GPU). ``long`` shares every table entry with ``cpu`` except
its world-model training steps; ``recall`` shares the cpu autoencoder and sampler, its backbone differs only in
the windowed Transformer baseline's window; ``crafter`` shares the cpu backbone and sampler.

One table per component; each entry holds keyword arguments of that component's config, and a field an entry does
not name keeps its dataclass default. The functions that build
configs read these tables and nothing else:

    AUTOENCODER            -> worldmodel.autoencoder.autoencoder_config
    BACKBONE               -> worldmodel.backbone.backbone_config (``block_cycle``: see that table)
    DIFFUSION              -> worldmodel.model.world_model_config (the sampler)
    TRAINING               -> worldmodel.train.train_config / TRAIN_PRESETS (``python -m worldmodel.train``)
    AUTOENCODER_TRAINING   -> stage 1, both when ``worldmodel.train`` trains it and in
                              ``python -m worldmodel.train_autoencoder``

This module imports nothing of ours, so every module can read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

__all__ = [
    "AUTOENCODER",
    "AUTOENCODER_TRAINING",
    "BACKBONE",
    "DIFFUSION",
    "PRESETS",
    "TRAINING",
    "Preset",
    "check_preset",
    "preset_from_argv",
]

Preset = Literal["tiny", "cpu", "long", "recall", "crafter", "paper"]
PRESETS: tuple[str, ...] = get_args(Preset)

# The frame <-> latent autoencoder (AutoencoderConfig fields).
AUTOENCODER: dict[str, dict[str, Any]] = {
    # a few thousand parameters, milliseconds per step
    "tiny": dict(channels=(8, 16, 16, 16), blocks=(0, 0, 0, 1), latent_channels=4, norm_groups=4),
    # 64x64x3 -> 8 x 8x8, 1.7M parameters; > 30 dB held-out PSNR on Memory Maze in ~800 steps
    "cpu": dict(channels=(16, 32, 64, 128), blocks=(0, 1, 1, 2), latent_channels=8),
    "long": "cpu",
    "recall": "cpu",  # the same frames and latent: the demo's trained autoencoder can be shared (--autoencoder)
    # Crafter's frames are busier than the maze's: a 9x7 grid of 7-pixel textured cells (grass, trees, stone,
    # water, creatures) over two rows of inventory icons and digits, where the maze is walls, floor and sky. The
    # cpu encoder with twice the latent channels: 64x64x3 -> 16 x 8x8 (1024 numbers per frame, 12x compression
    # instead of 24x); the tokens the backbone sees grow from 32 to 64 numbers, its cost hardly changes.
    "crafter": dict(channels=(16, 32, 64, 128), blocks=(0, 1, 1, 2), latent_channels=16),
    # 64x64x3 -> 8 x 16x16, wider and deeper
    "paper": dict(downsample=4, channels=(64, 128, 256), blocks=(1, 2, 2), latent_channels=8, norm_groups=32),
}

# The sequence model (BackboneConfig fields). `patch`: latent cells per token side. `block_cycle`: the
# (bh, bw) block sizes (in tokens) of the block-wise scan, cycled over the layers and each clipped to a
# divisor of the token grid (the paper varies block sizes per layer without publishing them).
# action_tokens + prev_frame: the lever study's winner for following the actions (benchmarks.train_levers)
_CPU_BACKBONE: dict[str, Any] = dict(
    patch=2,
    dim=128,
    depth=6,
    heads=4,
    mlp_ratio=4.0,
    d_state=16,
    headdim=32,
    expand=2,
    d_conv=4,
    chunk_size=32,
    block_cycle=((2, 2), (4, 4)),
    action_tokens=True,
    prev_frame=True,
)
BACKBONE: dict[str, dict[str, Any]] = {
    "tiny": dict(
        patch=2,
        dim=32,
        depth=2,
        heads=2,
        mlp_ratio=2.0,
        d_state=8,
        headdim=16,
        expand=2,
        d_conv=4,
        chunk_size=16,
        block_cycle=((1, 1), (2, 2)),
        action_tokens=True,  # as cpu, so the tests exercise the same paths
        prev_frame=True,
    ),
    "cpu": _CPU_BACKBONE,
    "long": "cpu",
    # the cpu backbone (16 tokens per frame, ~2.8M parameters; every variant matched to it). window_frames: the
    # windowed causal Transformer baseline sees the last 24 frames, a quarter of the 96-frame training window
    # as the paper's 192 frames are of its 800 (frame-local attention: 10 frames); revisits in the recall data
    # come 40-80 frames later (see benchmarks/recall.py), beyond both windows and inside the training window.
    "recall": {**_CPU_BACKBONE, "window_frames": 24},
    "crafter": "cpu",  # 16 tokens per frame: more tokens (patch 1: 64) would cost ~4x, beyond the demo budget
    "paper": dict(
        patch=2,
        dim=768,
        depth=12,
        heads=12,
        mlp_ratio=4.0,
        d_state=64,
        headdim=64,
        expand=2,
        d_conv=4,
        chunk_size=128,
        block_cycle=((2, 2), (4, 4), (8, 8)),
    ),
}

# The sampler (DiffusionConfig fields). cpu: 2 DDIM steps measured better than 4, 8 or 16 on held-out PSNR/SSIM
# for the demo model, and faster.
DIFFUSION: dict[str, dict[str, Any]] = {
    "tiny": dict(sampling_steps=2),
    "cpu": dict(sampling_steps=2),
    "long": "cpu",
    "recall": "cpu",
    "crafter": "cpu",
    "paper": dict(sampling_steps=10),
}

# Stage 2, Diffusion Forcing (worldmodel.train.TrainConfig fields). `curriculum`: (fraction of training at
# which a stage starts, window in frames); the cpu windows (32, then 48 frames) are longer than the 10-frame
# attention window, so the model has to use its SSM memory.
TRAINING: dict[str, dict[str, Any]] = {
    "tiny": dict(
        steps=30,
        batch_size=4,
        curriculum=((0.0, 8), (0.5, 12)),
        lr=2e-3,
        warmup=5,
        eval_every=1000,
        ckpt_every=10,
        eval_context=4,
        eval_horizon=4,
        eval_batch=2,
        compile=False,
    ),
    "cpu": dict(
        steps=800,
        batch_size=8,
        curriculum=((0.0, 32), (0.7, 48)),
        lr=1e-3,
        warmup=100,
        eval_every=200,
        ckpt_every=100,
        eval_context=16,
        eval_horizon=16,
        eval_batch=8,
        compile=False,
    ),
    "long": dict(
        steps=3200,
        batch_size=8,
        curriculum=((0.0, 32), (0.7, 48)),
        lr=1e-3,
        warmup=200,
        eval_every=400,
        ckpt_every=100,
        eval_context=16,
        eval_horizon=16,
        eval_batch=8,
        compile=False,
    ),
    # The recall sweep (benchmarks/recall.py): 7 variants trained alike, so one step of each is the unit of cost.
    # Windows: 64 frames, then 96 for the second half (the paper: 400 then 800): retrieval needs 33 context + up
    # to 40 return frames, reasoning 64 + 32, so every revisit the benchmark scores lies inside the training
    # window. Batch 4 keeps the frames per step of the cpu preset (4 x 96 = 8 x 48).
    # Measured (1 torch thread, random latents, median of 3 steps after 1 warm-up, on a 2-core machine whose
    # other core was busy): seconds per step at 96 frames: hybrid 2.22, causal_full 3.77, causal_window 2.16,
    # mamba2 1.97, mamba2_local_attn 2.05, hybrid_block1 2.17 (hybrid_no_trick = hybrid); at 64 frames: hybrid
    # 1.67, causal_full 2.24, mamba2 1.75. All 7 variants: 16.6 s per step at 96 frames, ~12.2 s at 64 frames,
    # 14.4 s averaged over the curriculum. Calibration under the same load: the cpu preset's step (8 x 48) took
    # 2.04 s at 1 thread, against 0.91 s on a quiet 2-core machine (DESIGN.md: ~1.1 steps/s), so quiet 2 cores
    # run these steps at 0.45x: ~6.4 s per step of all 7 variants. Per variant, besides training (measured the
    # same way on an untrained model and scaled alike): encoding its episodes (2.8 ms/frame at 1 thread), the
    # run's own evaluations, scoring 48 held-out generations and the latency probe, ~1.2 min; the shared
    # autoencoder ~4 min (none with --autoencoder runs/demo/autoencoder.pt). 600 steps: 64 min of training +
    # 8 + 4 min = ~76 min estimated for the whole sweep on 2 quiet cores, ~14 min of margin under 90 for the
    # extrapolation. (3x the steps would need ~3.5 hours.)
    "recall": dict(
        steps=600,
        batch_size=4,
        curriculum=((0.0, 64), (0.5, 96)),
        lr=1e-3,
        warmup=60,
        eval_every=300,
        ckpt_every=50,
        eval_context=16,
        eval_horizon=16,
        eval_batch=8,
        compile=False,
    ),
    # Crafter within the demo's budget (at most ~15 minutes of world-model training on 2 cores): the cpu recipe
    # with 720 steps instead of 800. At the measured cpu-preset speed on quiet cores (DESIGN.md: ~1.1 steps/s at
    # 8 x 32 frames, so ~1.4 s per step at 48), 504 steps at 32 frames + 216 at 48 are ~13 min, plus evaluations.
    # The 48-frame windows also hold the recall benchmark's crafter reasoning protocol (32 context + 16
    # generated, the paper's Minecraft 100 + 50 scaled). A random-repeat Crafter player lives 150-250 steps, so
    # every episode holds several windows.
    "crafter": dict(
        steps=720,
        batch_size=8,
        curriculum=((0.0, 32), (0.7, 48)),
        lr=1e-3,
        warmup=100,
        eval_every=240,
        ckpt_every=80,
        eval_context=16,
        eval_horizon=16,
        eval_batch=8,
        compile=False,
    ),
    "paper": dict(
        steps=200_000,
        batch_size=16,
        curriculum=((0.0, 400), (0.5, 800)),
        lr=3e-4,
        warmup=2000,
        eval_every=5000,
        ckpt_every=1000,
        eval_context=400,
        eval_horizon=400,
        eval_batch=4,
        compile=True,
    ),
}

# Stage 1, the autoencoder: optimiser steps and batch size (cpu: about 3-4 minutes on 2 cores; crafter: 1.5x the
# steps for the busier frames, about 5 minutes).
AUTOENCODER_TRAINING: dict[str, dict[str, Any]] = {
    "tiny": dict(steps=30, batch_size=16),
    "cpu": dict(steps=800, batch_size=32),
    "long": "cpu",
    "recall": "cpu",
    "crafter": dict(steps=1200, batch_size=32),
    "paper": dict(steps=100_000, batch_size=64),
}


def _resolve_aliases(*tables: dict[str, Any]) -> None:
    """An entry that is a preset's name (``"long": "cpu"``) is that preset's entry (the same dict)."""
    for table in tables:
        for name, entry in table.items():
            if isinstance(entry, str):
                table[name] = table[entry]


_resolve_aliases(AUTOENCODER, BACKBONE, DIFFUSION, TRAINING, AUTOENCODER_TRAINING)


def check_preset(preset: str, what: str = "preset") -> str:
    """``preset`` itself when it names a preset; else a ValueError listing the presets."""
    if preset not in PRESETS:
        raise ValueError(f"unknown {what} {preset!r}; choose one of {sorted(PRESETS)}")
    return preset


def preset_from_argv(argv: Sequence[str], default: str = "cpu") -> str:
    """The ``--preset NAME`` of a command line (``default`` when absent or not a preset name).

    The jobs read it before parsing the rest, so every option not given on the command line takes the
    preset's value; an unknown name is left for the full parser to report with the choices."""
    preset = default
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--preset" and i + 1 < len(args):
            preset = args[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    return preset if preset in PRESETS else default
