"""Stage 1: train the frame <-> latent autoencoder on episode files.

    python -m worldmodel.train_autoencoder --preset cpu --episodes data/episodes/mm9 --out runs/ae
    python -m worldmodel.train_autoencoder --preset cpu --episodes data/episodes/mm9 --out runs/ae --resume
    python -m worldmodel.train_autoencoder --help   (every option, its meaning and the cpu preset's value)
    torchrun --nproc_per_node=2 -m worldmodel.train_autoencoder ...   (DistributedDataParallel, 2 processes)

Writes OUT/autoencoder.pt (weights, config, latent statistics, optimizer, RNG, step; atomic, resumable),
OUT/autoencoder_report.json (held-out PSNR/SSIM), OUT/autoencoder_strip.png (rows real | recon | error),
OUT/split.json (the training / held-out episode files and their sha256, kept on --resume) and TensorBoard logs
under OUT/tb (losses, learning rate, frames/s, held-out PSNR/SSIM, image strips). The job locks OUT for its
whole run. `worldmodel.train` calls `train_autoencoder` when its run has no autoencoder.

Under torchrun (worldmodel/distributed.py) every process draws the same global batch of frames and the same
reparameterisation noise and trains on its share (`micro_batch` frames at a time: gradient accumulation), so the
optimisation does not depend on the number of processes; only rank 0 writes files, holds the lock and reports.

Axis legend: N frames, B batch, H x W x 3 images, C x h x w latents.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm import tqdm

from envs.episodes import EpisodeStore, load_episode
from envs.fileio import RunLockedError

from . import distributed, presets
from .autoencoder import Autoencoder, AutoencoderConfig, autoencoder_config, frames_to_float
from .config import check_config, config_to_dict
from .metrics import LPIPS_MISSING_MESSAGE, lpips, lpips_available, psnr, ssim
from .run_folder import check_frame_shapes, open_run_folder, plan_split, write_split
from .utils import (
    atomic_torch_save,
    atomic_write_json,
    get_rng_state,
    image_strip,
    resolve_device,
    save_png,
    seed_everything,
    set_rng_state,
    torch_load,
    warmup_cosine_lr,
)

__all__ = [
    "AutoencoderJob",
    "accumulate_gradients",
    "train_autoencoder",
    "load_autoencoder",
    "evaluate_autoencoder",
    "load_frames",
    "main",
    "parse_args",
]

CHECKPOINT_KIND = "longdream.autoencoder/1"  # format tag stored in autoencoder.pt
LR = 2e-3  # peak learning rate of stage 1 (every preset)
MAX_WARMUP = 100  # learning-rate warm-up: a tenth of the run, at most this many steps


def load_frames(
    paths: Sequence, max_frames: int | None = None, seed: int = 0, shape: Sequence[int] | None = None
) -> torch.Tensor:
    """All frames of the episode files as uint8 (N, H, W, 3); a random subsample (kept in file order) of
    `max_frames` when set. `shape` (H, W, C): a file whose frames differ is a ValueError naming it."""
    if not paths:
        raise ValueError("no episode files to read frames from (need at least one .npz episode)")
    images = []
    for p in paths:
        image = load_episode(p, keys=("image",))["image"]  # (T, H, W, 3) uint8
        if shape is not None and tuple(image.shape[1:]) != tuple(shape):
            raise ValueError(
                f"{p}: frames are {'x'.join(map(str, image.shape[1:]))}, the autoencoder expects "
                f"{'x'.join(map(str, shape))} (H x W x channels)"
            )
        images.append(image)
    frames = torch.from_numpy(np.concatenate(images))  # (N, H, W, 3)
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"episode images must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape[1:])}")
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
        real = frames_to_float(frames[i : i + batch_size]).to(model.device)  # (B, 3, H, W)
        rec = model.reconstruct(real)
        p.append(psnr(rec, real).cpu())
        s.append(ssim(rec, real).cpu())
    model.train(was)
    p, s = torch.cat(p), torch.cat(s)
    return {
        "psnr": float(p.mean()),
        "ssim": float(s.mean()),
        "psnr_min": float(p.min()),
        "psnr_p10": float(p.quantile(0.1)),
        "frames": len(frames),
    }


def load_autoencoder(
    path, device: str | torch.device = "cpu", expected: AutoencoderConfig | None = None, allow_unfinished: bool = False
) -> Autoencoder:
    """The trained Autoencoder stored in `path` (loaded with weights_only=True), in eval mode.

    `expected`: raise a ValueError naming every differing field when the stored config is not this one.
    A checkpoint written mid-training has no latent statistics yet; it is refused unless allow_unfinished."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not an autoencoder checkpoint (needs 'config' and 'model' entries)")
    if expected is not None:
        check_config(expected, ckpt["config"], what=f"autoencoder checkpoint {path}")
    model = Autoencoder(AutoencoderConfig.from_dict(ckpt["config"], source=str(path)))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the stored config: {e}") from e
    if not bool(model.stats_ready) and not allow_unfinished:
        raise ValueError(
            f"{path} is an unfinished autoencoder run (step {ckpt.get('step')} of "
            f"{ckpt.get('total_steps')}, no latent statistics yet): finish it with "
            f"`python -m worldmodel.train_autoencoder ... --out {Path(path).parent} --resume`"
        )
    return model.to(resolve_device(device)).eval()


def _int_at_least(name: str, value, low: int) -> None:
    """ValueError unless ``value`` is an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r}: expected an integer >= {low}")


def _read_checkpoint(path: Path, cfg: AutoencoderConfig) -> dict:
    """The stage-1 checkpoint at ``path`` to resume, checked against ``cfg``."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an autoencoder checkpoint (kind {kind!r})")
    check_config(cfg, ckpt["config"], what=f"autoencoder checkpoint {path}")
    return ckpt


def train_autoencoder(
    cfg: AutoencoderConfig,
    train_paths,
    test_paths,
    out_dir,
    steps: int,
    batch_size: int = 32,
    micro_batch: int | None = None,
    lr: float = LR,
    device: str | torch.device = "auto",
    seed: int = 0,
    log: bool = True,
    resume: bool = False,
    ckpt_every: int = 250,
    eval_every: int | None = None,
    max_eval_frames: int = 2048,
    stop_after: int | None = None,
    lock: bool = True,
) -> tuple[Autoencoder, dict]:
    """Train stage 1 on the frames of `train_paths` and report reconstruction quality on `test_paths`.

    Returns the trained autoencoder (eval mode, latent statistics set) and the report dict also written to
    out_dir/autoencoder_report.json. `resume=True` continues out_dir/autoencoder.pt exactly (same batches,
    same noise, same learning-rate schedule); without it an existing checkpoint is refused (FileExistsError).
    A non-finite loss stops training with FloatingPointError and leaves the last good checkpoint in place.
    `stop_after` ends this call once the run reaches that step (checkpoint written, schedule unchanged), as
    an interruption would; it then returns the unfinished model (no latent statistics) and {"stopped_at": step}.

    `batch_size` is the global batch: under a process group (torchrun) each process trains on its equal share,
    `micro_batch` frames per forward/backward pass (None: the whole share); only rank 0 writes, the others
    return the same model and an empty report.

    Arguments, the checkpoint to resume and the frame size of every file are checked before any work. With
    `lock` the call holds out_dir's lock while it runs (envs.fileio.RunLock; a second job on the folder raises
    RunLockedError) and first removes temp files a killed job left; pass lock=False when the caller holds it
    (worldmodel.train does)."""
    t_call = time.perf_counter()
    # 0. checks before any work
    _int_at_least("steps", steps, 1)
    _int_at_least("batch_size", batch_size, 1)
    _int_at_least("ckpt_every", ckpt_every, 1)
    _int_at_least("max_eval_frames", max_eval_frames, 1)
    if eval_every is not None:
        _int_at_least("eval_every", eval_every, 1)
    if stop_after is not None:
        _int_at_least("stop_after", stop_after, 1)
    if not 0.0 < lr < float("inf"):
        raise ValueError(f"lr={lr!r}: expected a positive number")
    if not train_paths:
        raise ValueError("train_autoencoder: no training episodes (train_paths is empty)")
    if not test_paths:
        raise ValueError(
            "train_autoencoder: no held-out episodes (test_paths is empty); the report needs at "
            "least one episode not used for training"
        )
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    distributed.accumulation(batch_size, micro_batch, distributed.current().world_size, "batch_size")
    ckpt_path = out_dir / "autoencoder.pt"
    held: dict = {}  # rank 0's: the folder's lock, the checkpoint read

    def prepare() -> None:
        """(rank 0) the checks on files, then the folder locked."""
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"output folder {out_dir} is a file, not a folder")
        if ckpt_path.exists() and not resume:
            raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose a new --out")
        held["ckpt"] = _read_checkpoint(ckpt_path, cfg) if resume and ckpt_path.exists() else None
        shape = (cfg.image_size, cfg.image_size, cfg.image_channels)
        check_frame_shapes(list(train_paths) + list(test_paths), shape, what="the autoencoder")
        if lock:
            held["lock"] = open_run_folder(out_dir, what="autoencoder training")

    try:
        distributed.from_main(prepare)
        if "ckpt" in held:
            ckpt = held["ckpt"]
        else:  # the other processes read the checkpoint rank 0 checked
            ckpt = _read_checkpoint(ckpt_path, cfg) if resume and ckpt_path.exists() else None
        return _fit(
            cfg,
            list(train_paths),
            list(test_paths),
            out_dir,
            ckpt,
            steps=steps,
            batch_size=batch_size,
            micro_batch=micro_batch,
            lr=lr,
            dev=dev,
            seed=seed,
            log=log,
            ckpt_every=ckpt_every,
            eval_every=eval_every,
            max_eval_frames=max_eval_frames,
            stop_after=stop_after,
            t_call=t_call,
        )
    finally:
        if "lock" in held:
            held["lock"].release()


def accumulate_gradients(
    loss_fn, frames: torch.Tensor, noise: torch.Tensor, micro: int, dev: torch.device
) -> dict[str, float]:
    """Forward and backward of this process's share of one global batch, ``micro`` frames at a time.

    ``frames`` uint8 (B, H, W, 3) and ``noise`` (B, C, h, w) are the whole global batch and its reparameterisation
    noise, the same on every process; ``loss_fn`` is ``model.loss`` or it through DistributedDataParallel
    (distributed.wrap). The gradients left in the parameters are those of the global batch's mean loss on every
    process (each micro-batch's mean weighs 1 / micro-batches of the share; DDP averages the processes, whose
    shares are equal); returns that loss's logs, averaged over the global batch."""
    ctx = distributed.current()
    share = len(frames) // ctx.world_size
    mine = range(ctx.rank * share, (ctx.rank + 1) * share)  # this process's positions in the global batch
    starts = range(mine.start, mine.stop, micro)
    sums = torch.zeros(4, dtype=torch.float64)  # loss, recon, kl, psnr
    for k, i in enumerate(starts):
        with distributed.micro_batch_context(loss_fn, last=k == len(starts) - 1):
            loss, logs = loss_fn(frames[i : i + micro].to(dev), noise=noise[i : i + micro])
            (loss / len(starts)).backward()
        sums += torch.tensor([loss.item(), logs["ae/recon"], logs["ae/kl"], logs["ae/psnr"]], dtype=torch.float64)
    sums = (distributed.all_reduce_sum(sums.to(dev)) / (len(starts) * ctx.world_size)).tolist()
    return {"ae/loss": sums[0], "ae/recon": sums[1], "ae/kl": sums[2], "ae/psnr": sums[3]}


def _fit(
    cfg: AutoencoderConfig,
    train_paths: list,
    test_paths: list,
    out_dir: Path,
    ckpt: dict | None,
    *,
    steps: int,
    batch_size: int,
    micro_batch: int | None,
    lr: float,
    dev: torch.device,
    seed: int,
    log: bool,
    ckpt_every: int,
    eval_every: int | None,
    max_eval_frames: int,
    stop_after: int | None,
    t_call: float,
) -> tuple[Autoencoder, dict]:
    """The training of :func:`train_autoencoder` once everything is checked (and the folder locked)."""
    ckpt_path = out_dir / "autoencoder.pt"
    ctx = distributed.current()
    main = ctx.is_main
    micro, _ = distributed.accumulation(batch_size, micro_batch, ctx.world_size, "batch_size")
    # 1. model, optimiser, data-order generator; restored from the checkpoint when resuming
    seed_everything(seed)
    model = Autoencoder(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        set_rng_state(ckpt["rng"])
        step = int(ckpt["step"])

    # 2. frames: all training frames in memory, an even subsample of the held-out ones
    shape = (cfg.image_size, cfg.image_size, cfg.image_channels)
    train_frames = load_frames(train_paths, shape=shape)  # (N, H, W, 3) uint8
    test_frames = load_frames(test_paths, max_frames=max_eval_frames, seed=seed, shape=shape)
    strip_idx = torch.linspace(0, len(test_frames) - 1, 8).round().long()
    strip_real = frames_to_float(test_frames[strip_idx]).to(dev)  # (8, 3, H, W)

    def save(step_now: int) -> None:
        if not main:
            return
        atomic_torch_save(
            {
                "kind": CHECKPOINT_KIND,
                "config": config_to_dict(cfg),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
                "rng": get_rng_state(),
                "step": step_now,
                "total_steps": steps,
            },
            ckpt_path,
        )

    writer = None
    if log and main:
        try:
            from torch.utils.tensorboard import SummaryWriter  # heavy, optional: only for logging
        except ImportError:  # tensorboard missing: train anyway
            SummaryWriter = None
        writer = SummaryWriter(str(out_dir / "tb")) if SummaryWriter is not None else None
    warmup = max(1, min(MAX_WARMUP, steps // 10))
    eval_every = eval_every or max(100, steps // 5)
    log_every = 25

    # 3. the training loop
    t_start = time.perf_counter()
    step_start = step
    t_log, n_log = time.perf_counter(), 0
    model.train()
    bar = tqdm(
        total=steps,
        initial=min(step, steps),
        desc="autoencoder",
        unit="step",
        disable=not (log and main),
        dynamic_ncols=True,
    )
    loss_fn = distributed.wrap(model, dev)  # model.loss, or it through DistributedDataParallel
    while step < steps:
        if stop_after is not None and step >= stop_after:
            bar.close()
            save(step)
            return model.eval(), {"stopped_at": step}
        # the global batch and its reparameterisation noise, drawn alike on every process; this one's share
        idx = torch.randint(len(train_frames), (batch_size,), generator=gen)  # (batch_size,)
        eps = torch.randn((batch_size, *cfg.latent_shape))  # (batch_size, C, h, w), torch's global generator
        lr_now = warmup_cosine_lr(step, steps, lr, warmup)
        for g in opt.param_groups:
            g["lr"] = lr_now
        opt.zero_grad(set_to_none=True)
        logs = accumulate_gradients(loss_fn, train_frames[idx], eps, micro, dev)
        if not math.isfinite(logs["ae/loss"]):
            bar.close()
            raise FloatingPointError(
                f"autoencoder loss is {logs['ae/loss']} at step {step}; stopped. The last good checkpoint "
                f"({ckpt_path if ckpt_path.exists() else 'none written yet'}) was kept; try a lower --lr."
            )
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
    model.set_latent_stats(sub)  # on every process: each needs the finished autoencoder
    save(step)
    if not main:
        return model, {}

    # 5. held-out report and example strip (rank 0)
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


@dataclass(frozen=True, kw_only=True)
class AutoencoderJob:
    """Train the frame <-> latent autoencoder (stage 1) on a folder of episode .npz files, split by episode, and
    report held-out reconstruction PSNR/SSIM. Writes OUT/autoencoder.pt, OUT/autoencoder_report.json,
    OUT/autoencoder_strip.png, OUT/split.json and TensorBoard logs in OUT/tb. Options not given on the command
    line take the values of --preset; the defaults shown are those of the preset named on the command line
    (cpu when none). Started by `torchrun --nproc_per_node=N -m worldmodel.train_autoencoder ...` it trains on N
    processes (DistributedDataParallel; --batch-size stays the global batch)."""

    preset: presets.Preset
    """Model size: tiny (tests), cpu (minutes on 2 cores), paper (GPU)."""
    episodes: Path
    """Folder of episode .npz files."""
    out: Path
    """Output folder (autoencoder.pt, report, strip, split.json, tb/)."""
    steps: int
    """Optimiser steps in total, also when resuming."""
    batch_size: int
    """Frames per optimiser step: the global batch, split equally among the processes (torchrun)."""
    micro_batch: int | None = None
    """Frames per forward/backward pass of one process (None: its whole share of batch_size; a divisor of it:
    gradient accumulation, same optimisation in less memory)."""
    lr: float = LR
    """Peak learning rate (linear warm-up, then cosine decay)."""
    test_fraction: float = 0.1
    """Fraction of the episodes held out (recorded in OUT/split.json)."""
    seed: int = 0
    """Seed of the split, the initialisation and the batches."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    threads: int | None = None
    """torch CPU threads; None leaves torch's choice (1 can be faster on a busy machine)."""
    resume: bool = False
    """Continue OUT/autoencoder.pt exactly."""

    def __post_init__(self) -> None:
        presets.check_preset(self.preset)
        _int_at_least("--steps", self.steps, 1)
        _int_at_least("--batch-size", self.batch_size, 1)
        if self.threads is not None:
            _int_at_least("--threads", self.threads, 1)
        if self.micro_batch is not None:
            _int_at_least("--micro-batch", self.micro_batch, 1)
        if not 0.0 < self.lr < float("inf"):
            raise ValueError(f"--lr {self.lr}: expected a positive number")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"--test-fraction {self.test_fraction}: expected a fraction in [0, 1)")
        resolve_device(self.device)  # an unknown or unavailable device is refused here


def parse_args(argv: Sequence[str] | None = None) -> AutoencoderJob:
    """The AutoencoderJob of a command line (tyro, from the documented dataclass); every value is checked here,
    and a refused one exits with status 2 and a message before anything is written."""
    argv = sys.argv[1:] if argv is None else list(argv)
    preset = presets.preset_from_argv(argv)
    stage1 = presets.AUTOENCODER_TRAINING[preset]
    default = AutoencoderJob(
        preset=preset, episodes=tyro.MISSING, out=tyro.MISSING, steps=stage1["steps"], batch_size=stage1["batch_size"]
    )
    return tyro.cli(AutoencoderJob, args=argv, default=default, prog="python -m worldmodel.train_autoencoder")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worldmodel.train_autoencoder``: train, then print the held-out summary. Exit status 2 with a
    message (no traceback) for a refused argument, episode folder, output folder or checkpoint."""
    job = parse_args(argv)
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    cfg = autoencoder_config(job.preset)
    held: dict = {}  # rank 0's lock on the output folder

    def prepare():
        """(rank 0) the episodes, the split, the folder locked and the split recorded."""
        store = EpisodeStore(job.episodes)
        if len(store) < 2:
            raise ValueError(f"{job.episodes}: need at least 2 episodes (one is held out), found {len(store)}")
        ckpt = job.out / "autoencoder.pt"
        if job.resume and not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        if ckpt.exists() and not job.resume:
            raise FileExistsError(f"{ckpt} exists: pass --resume to continue it, or choose a new --out")
        split = plan_split(store, job.out, test_fraction=job.test_fraction, seed=job.seed)
        check_frame_shapes(
            split.train + split.test, (cfg.image_size, cfg.image_size, cfg.image_channels), what="the autoencoder"
        )
        held["lock"] = open_run_folder(job.out, what="autoencoder training")
        write_split(job.out, split)
        return split

    with distributed.session(job.device) as (ctx, dev):  # under torchrun: the process group; else nothing
        try:
            try:
                split = distributed.from_main(prepare)
                _, report = train_autoencoder(
                    cfg,
                    split.train,
                    split.test,
                    job.out,
                    steps=job.steps,
                    batch_size=job.batch_size,
                    micro_batch=job.micro_batch,
                    lr=job.lr,
                    device=dev,
                    seed=job.seed,
                    resume=job.resume,
                    lock=False,
                )
            finally:
                if "lock" in held:
                    held["lock"].release()
        except (ValueError, OSError, FloatingPointError, RunLockedError) as e:
            print(f"error{f' (rank {ctx.rank})' if ctx.distributed else ''}: {e}", file=sys.stderr)
            return 2
    if not ctx.is_main:
        return 0
    keys = ("psnr_mean", "ssim_mean", "n_frames", "train_time_s", "wall_time_s")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
