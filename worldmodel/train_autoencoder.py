"""Stage 1: train the frame <-> latent autoencoder on episode files.

    python -m worldmodel.train_autoencoder --preset cpu --episodes data/episodes/mm9 --out runs/ae
    python -m worldmodel.train_autoencoder --preset cpu --episodes data/episodes/mm9 --out runs/ae --resume

Writes OUT/autoencoder.pt (weights, config, latent statistics, optimizer, RNG, step; atomic, resumable),
OUT/autoencoder_report.json (held-out PSNR/SSIM), OUT/autoencoder_strip.png (rows real | recon | error) and
TensorBoard logs under OUT/tb (losses, learning rate, frames/s, held-out PSNR/SSIM, image strips).
`worldmodel.train` calls `train_autoencoder` when its run has no autoencoder.

Axis legend: N frames, B batch, H x W x 3 images, C x h x w latents.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .autoencoder import (
    AUTOENCODER_PRESETS,
    Autoencoder,
    AutoencoderConfig,
    autoencoder_config,
    frames_to_float,
)
from .metrics import LPIPS_MISSING_MESSAGE, lpips, lpips_available, psnr, ssim
from .utils import (
    atomic_torch_save,
    atomic_write_json,
    check_config,
    config_to_dict,
    get_rng_state,
    image_strip,
    resolve_device,
    save_png,
    seed_everything,
    set_rng_state,
    torch_load,
)

__all__ = ["train_autoencoder", "load_autoencoder", "evaluate_autoencoder", "load_frames", "main"]

CHECKPOINT_KIND = "longdream.autoencoder/1"
# default optimiser steps / batch size of the CLI per preset (cpu: about 3-4 minutes on 2 cores)
DEFAULT_STEPS = {"tiny": 50, "cpu": 800, "paper": 100_000}
DEFAULT_BATCH = {"tiny": 16, "cpu": 32, "paper": 64}


def _read_images(path) -> np.ndarray:
    """The `image` array (T+1, H, W, 3) uint8 of one episode file."""
    try:
        from envs.episodes import load_episode
    except ImportError:  # envs not importable (library used on its own): read the .npz directly
        with np.load(path, allow_pickle=False) as f:
            if "image" not in f.files:
                raise ValueError(f"{path}: no 'image' array (keys: {sorted(f.files)})") from None
            return f["image"]
    return load_episode(path, keys=("image",))["image"]


def load_frames(paths: Sequence, max_frames: int | None = None, seed: int = 0) -> torch.Tensor:
    """All frames of the episode files as uint8 (N, H, W, 3); a random subsample (kept in file order) of
    `max_frames` when set."""
    if not paths:
        raise ValueError("no episode files to read frames from (need at least one .npz episode)")
    frames = torch.from_numpy(np.concatenate([_read_images(p) for p in paths]))  # (N, H, W, 3)
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"episode images must be uint8 (T, H, W, 3), "
                         f"got {frames.dtype} {tuple(frames.shape[1:])}")
    if max_frames is not None and len(frames) > max_frames:
        idx = torch.randperm(len(frames), generator=torch.Generator().manual_seed(seed))[:max_frames]
        frames = frames[idx.sort().values]
    return frames


@torch.no_grad()
def evaluate_autoencoder(model: Autoencoder, frames: torch.Tensor, batch_size: int = 256) -> dict:
    """Reconstruction quality over `frames` uint8 (N, H, W, 3): mean PSNR (dB) and SSIM, spread, count."""
    was = model.training
    model.eval()
    p, s = [], []
    for i in range(0, len(frames), batch_size):
        real = frames_to_float(frames[i: i + batch_size]).to(model.device)  # (B, 3, H, W)
        rec = model.reconstruct(real)
        p.append(psnr(rec, real).cpu())
        s.append(ssim(rec, real).cpu())
    model.train(was)
    p, s = torch.cat(p), torch.cat(s)
    return {"psnr": float(p.mean()), "ssim": float(s.mean()), "psnr_min": float(p.min()),
            "psnr_p10": float(p.quantile(0.1)), "frames": len(frames)}


def load_autoencoder(path, device: str | torch.device = "cpu", expected: AutoencoderConfig | None = None,
                     allow_unfinished: bool = False) -> Autoencoder:
    """The trained Autoencoder stored in `path` (loaded with weights_only=True), in eval mode.

    `expected`: raise a ValueError naming every differing field when the stored config is not this one.
    A checkpoint written mid-training has no latent statistics yet; it is refused unless allow_unfinished."""
    ckpt = torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not an autoencoder checkpoint (needs 'config' and 'model' entries)")
    if expected is not None:
        check_config(expected, ckpt["config"], what=f"autoencoder checkpoint {path}")
    model = Autoencoder(AutoencoderConfig.from_dict(ckpt["config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the stored config: {e}") from e
    if not bool(model.stats_ready) and not allow_unfinished:
        raise ValueError(f"{path} is an unfinished autoencoder run (step {ckpt.get('step')} of "
                         f"{ckpt.get('total_steps')}, no latent statistics yet): finish it with "
                         f"`python -m worldmodel.train_autoencoder ... --out {Path(path).parent} --resume`")
    return model.to(resolve_device(device)).eval()


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of `lr` at `steps`."""
    cosine = 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    return lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * cosine)


def train_autoencoder(
    cfg: AutoencoderConfig, train_paths, test_paths, out_dir, steps: int, batch_size: int = 32,
    lr: float = 2e-3, device: str | torch.device = "auto", seed: int = 0, log: bool = True,
    resume: bool = False, ckpt_every: int = 250, eval_every: int | None = None, max_eval_frames: int = 2048,
    stop_after: int | None = None,
) -> tuple[Autoencoder, dict]:
    """Train stage 1 on the frames of `train_paths` and report reconstruction quality on `test_paths`.

    Returns the trained autoencoder (eval mode, latent statistics set) and the report dict also written to
    out_dir/autoencoder_report.json. `resume=True` continues out_dir/autoencoder.pt exactly (same batches,
    same noise, same learning-rate schedule); without it an existing checkpoint is overwritten.
    A non-finite loss stops training with FloatingPointError and leaves the last good checkpoint in place.
    `stop_after` ends this call after that many steps of the run (checkpoint written, schedule unchanged), as
    an interruption would; it then returns the unfinished model (no latent statistics) and {"stopped_at": step}."""
    from tqdm import tqdm

    t_call = time.perf_counter()
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if not train_paths:
        raise ValueError("train_autoencoder: no training episodes (train_paths is empty)")
    if not test_paths:
        raise ValueError("train_autoencoder: no held-out episodes (test_paths is empty); the report needs at "
                         "least one episode not used for training")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "autoencoder.pt"
    dev = resolve_device(device)

    # 1. model, optimiser, data-order generator; restored from the checkpoint when resuming
    seed_everything(seed)
    model = Autoencoder(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    step = 0
    if resume and ckpt_path.exists():
        ckpt = torch_load(ckpt_path)
        if ckpt.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{ckpt_path} is not an autoencoder checkpoint (kind {ckpt.get('kind')!r})")
        check_config(cfg, ckpt["config"], what=f"autoencoder checkpoint {ckpt_path}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        set_rng_state(ckpt["rng"])
        step = int(ckpt["step"])

    # 2. frames: all training frames in memory, an even subsample of the held-out ones
    train_frames = load_frames(train_paths)  # (N, H, W, 3) uint8
    test_frames = load_frames(test_paths, max_frames=max_eval_frames, seed=seed)
    s = cfg.image_size
    if tuple(train_frames.shape[1:]) != (s, s, cfg.image_channels):
        raise ValueError(f"episode frames are {tuple(train_frames.shape[1:])}, the autoencoder config "
                         f"expects ({s}, {s}, {cfg.image_channels})")
    strip_idx = torch.linspace(0, len(test_frames) - 1, 8).round().long()
    strip_real = frames_to_float(test_frames[strip_idx]).to(dev)  # (8, 3, H, W)

    def save(step_now: int) -> None:
        atomic_torch_save({"kind": CHECKPOINT_KIND, "config": config_to_dict(cfg),
                           "model": model.state_dict(), "optimizer": opt.state_dict(),
                           "generator": gen.get_state(), "rng": get_rng_state(),
                           "step": step_now, "total_steps": steps}, ckpt_path)

    writer = None
    if log:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard missing: train anyway
            SummaryWriter = None
        writer = SummaryWriter(str(out_dir / "tb")) if SummaryWriter is not None else None
    warmup = max(1, min(100, steps // 10))
    eval_every = eval_every or max(100, steps // 5)
    log_every = 25

    # 3. the training loop
    t_start = time.perf_counter()
    step_start = step
    t_log, n_log = time.perf_counter(), 0
    model.train()
    bar = tqdm(total=steps, initial=min(step, steps), desc="autoencoder", unit="step", disable=not log,
               dynamic_ncols=True)
    while step < steps:
        if stop_after is not None and step >= stop_after:
            bar.close()
            save(step)
            return model.eval(), {"stopped_at": step}
        idx = torch.randint(len(train_frames), (batch_size,), generator=gen)
        lr_now = _lr_at(step, steps, lr, warmup)
        for g in opt.param_groups:
            g["lr"] = lr_now
        loss, logs = model.loss(train_frames[idx].to(dev))
        if not math.isfinite(logs["ae/loss"]):
            bar.close()
            raise FloatingPointError(
                f"autoencoder loss is {logs['ae/loss']} at step {step}; stopped. The last good checkpoint "
                f"({ckpt_path if ckpt_path.exists() else 'none written yet'}) was kept; try a lower --lr.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        n_log += batch_size
        bar.update(1)
        bar.set_postfix(psnr=f"{logs['ae/psnr']:.1f}", loss=f"{logs['ae/loss']:.2e}")
        if writer is not None and step % log_every == 0:
            now = time.perf_counter()
            for k, v in logs.items():
                writer.add_scalar(k, v, step)
            writer.add_scalar("ae/lr", lr_now, step)
            writer.add_scalar("ae/frames_per_s", n_log / max(now - t_log, 1e-9), step)
            t_log, n_log = now, 0
        if writer is not None and step % eval_every == 0 and step < steps:
            with torch.no_grad():
                ev = evaluate_autoencoder(model, test_frames[: min(len(test_frames), 256)])
                writer.add_scalar("ae/heldout_psnr", ev["psnr"], step)
                writer.add_scalar("ae/heldout_ssim", ev["ssim"], step)
                model.eval()
                strip = image_strip(strip_real, model.reconstruct(strip_real))
                model.train()
            writer.add_image("ae/real_recon_error", strip, step, dataformats="HWC")
        if step % ckpt_every == 0 and step < steps:
            save(step)
    bar.close()
    train_time = time.perf_counter() - t_start

    # 4. latent statistics on (a subsample of) the training frames, then the final checkpoint
    model.eval()
    perm = torch.randperm(len(train_frames), generator=torch.Generator().manual_seed(seed))
    sub = train_frames[perm[:4096]]  # (<=4096, H, W, 3)
    model.set_latent_stats(sub)
    save(step)

    # 5. held-out report and example strip
    held = evaluate_autoencoder(model, test_frames)
    report = {
        "config": config_to_dict(cfg),
        "latent_shape": list(cfg.latent_shape),
        "parameters": model.num_parameters(),
        "steps": step,
        "batch_size": batch_size,
        "lr": lr,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "train_episodes": len(train_paths),
        "train_frames": len(train_frames),
        "test_episodes": len(test_paths),
        "held_out": held,
        "psnr_mean": held["psnr"],
        "ssim_mean": held["ssim"],
        "n_frames": held["frames"],
        "train_time_s": round(train_time, 1),
        "train_frames_per_s": round((step - step_start) * batch_size / max(train_time, 1e-9), 1),
        "latent_mean": model.latent_mean.tolist(),
        "latent_std": model.latent_std.tolist(),
        "lpips": LPIPS_MISSING_MESSAGE,
    }
    with torch.no_grad():
        if lpips_available():
            real = frames_to_float(test_frames[:256]).to(dev)
            report["lpips"] = float(lpips(model.reconstruct(real), real).mean())
        strip = image_strip(strip_real, model.reconstruct(strip_real))
    report["wall_time_s"] = round(time.perf_counter() - t_call, 1)  # loading + training + evaluation
    atomic_write_json(out_dir / "autoencoder_report.json", report)
    save_png(out_dir / "autoencoder_strip.png", strip, scale=2)
    if writer is not None:
        writer.add_scalar("ae/heldout_psnr", held["psnr"], step)
        writer.add_scalar("ae/heldout_ssim", held["ssim"], step)
        writer.add_image("ae/real_recon_error", strip, step, dataformats="HWC")
        writer.close()
    return model, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m worldmodel.train_autoencoder",
        description="Train the frame <-> latent autoencoder (stage 1) on a folder of episode .npz files, "
                    "split by episode, and report held-out reconstruction PSNR/SSIM. Writes "
                    "OUT/autoencoder.pt, OUT/autoencoder_report.json, OUT/autoencoder_strip.png and "
                    "TensorBoard logs in OUT/tb.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", choices=sorted(AUTOENCODER_PRESETS), default="cpu",
                    help="model size: tiny (tests), cpu (minutes on 2 cores), paper (GPU)")
    ap.add_argument("--episodes", required=True, help="folder of episode .npz files")
    ap.add_argument("--out", required=True, help="output folder (autoencoder.pt, report, strip, tb/)")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"optimiser steps in total, also when resuming (default per preset: {DEFAULT_STEPS})")
    ap.add_argument("--batch-size", type=int, default=None, help=f"default per preset: {DEFAULT_BATCH}")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warm-up, cosine decay)")
    ap.add_argument("--test-fraction", type=float, default=0.1, help="fraction of episodes held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; 1 can be faster on a busy machine)")
    ap.add_argument("--resume", action="store_true", help="continue OUT/autoencoder.pt exactly")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.preset]
    batch_size = args.batch_size if args.batch_size is not None else DEFAULT_BATCH[args.preset]
    from envs.episodes import EpisodeStore

    try:
        store = EpisodeStore(args.episodes)
        if len(store) < 2:
            raise ValueError(f"{args.episodes}: need at least 2 episodes (one is held out), "
                             f"found {len(store)}")
        train_paths, test_paths = store.split(test_fraction=args.test_fraction, seed=args.seed)
        ckpt = Path(args.out) / "autoencoder.pt"
        if args.resume and not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        _, report = train_autoencoder(autoencoder_config(args.preset), train_paths, test_paths, args.out,
                                      steps=steps, batch_size=batch_size, lr=args.lr,
                                      device=args.device, seed=args.seed, resume=args.resume)
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = ("psnr_mean", "ssim_mean", "n_frames", "train_time_s", "wall_time_s")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
