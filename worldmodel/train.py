"""Train the world model with Diffusion Forcing on real episodes (stage 2; stage 1 runs first if needed).

    python -m worldmodel.train --preset cpu --episodes data/episodes/mm9 --run-dir runs/demo
    python -m worldmodel.train --preset cpu --episodes data/episodes/mm9 --run-dir runs/demo --resume

Run folder layout:
    RUN_DIR/config.json            resolved TrainConfig + WorldModelConfig
    RUN_DIR/autoencoder.pt         stage 1 (trained here when missing)
    RUN_DIR/checkpoint.pt          latest stage-2 checkpoint (weights, optimizer, EMA, RNG, step, config)
    RUN_DIR/eval.json              held-out open-loop PSNR/SSIM vs copying the last context frame, reward P/R
    RUN_DIR/strip.png              real | dream | error on held-out episodes
    RUN_DIR/tb/                    TensorBoard (losses, lr, frames/s, image strips)

Axis legend: B batch, T frames, C x h x w latent grid, H x W x 3 frames.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import WorldModel, WorldModelConfig, check_model_config, config_from_dict, world_model_config
from .utils import (
    atomic_torch_save,
    atomic_write_json,
    config_to_dict,
    image_strip,
    resolve_device,
    save_png,
    torch_load,
)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "cpu"
    variant: str = "hybrid"
    steps: int = 800
    batch_size: int = 8
    # sequence-length curriculum: (fraction of training at which the stage starts, window in frames)
    curriculum: tuple[tuple[float, int], ...] = ((0.0, 32), (0.7, 48))
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ae_steps: int = 800
    ae_batch_size: int = 32
    test_fraction: float = 0.1
    eval_every: int = 200
    ckpt_every: int = 100
    eval_context: int = 16
    eval_horizon: int = 16
    eval_batch: int = 8
    seed: int = 0
    precision: str = "auto"   # "auto": bf16 autocast on CUDA, fp32 on CPU; or "fp32" / "bf16"
    compile: bool = False     # torch.compile the backbone (worth it on a GPU for long runs)

    def window_at(self, step: int) -> int:
        frac = step / max(self.steps, 1)
        window = self.curriculum[0][1]
        for start, w in self.curriculum:
            if frac >= start:
                window = w
        return window

    @property
    def max_window(self) -> int:
        return max(w for _, w in self.curriculum)


TRAIN_PRESETS = {
    "tiny": TrainConfig(preset="tiny", steps=30, batch_size=4, curriculum=((0.0, 8), (0.5, 12)), lr=2e-3,
                        warmup=5, ae_steps=30, ae_batch_size=16, eval_every=1000, ckpt_every=10,
                        eval_context=4, eval_horizon=4, eval_batch=2),
    "cpu": TrainConfig(preset="cpu"),
    "paper": TrainConfig(preset="paper", steps=200_000, batch_size=16, curriculum=((0.0, 400), (0.5, 800)),
                         lr=3e-4, warmup=2000, ae_steps=100_000, ae_batch_size=64, eval_every=5000,
                         ckpt_every=1000, eval_context=400, eval_horizon=400, eval_batch=4, compile=True),
}


# ---------------------------------------------------------------------- data


class LatentEpisodes:
    """All training episodes encoded once to latents, kept in memory; windows sampled with a torch Generator
    (so a resumed run draws exactly the batches an uninterrupted one would)."""

    def __init__(self, model: WorldModel, paths, min_frames: int, desc: str = "encoding", progress: bool = True,
                 keep_frames: bool = False):
        from tqdm import tqdm

        from envs.episodes import load_episode

        self.z, self.actions, self.rewards, self.frames = [], [], [], []
        longest = 0
        for p in tqdm(paths, desc=desc, unit="ep", leave=False, disable=not progress):
            ep = load_episode(p)
            n = len(ep["image"])
            longest = max(longest, n)
            if n < min_frames:
                continue
            frames = torch.from_numpy(ep["image"])                               # (T, H, W, 3) uint8
            if keep_frames:  # only evaluation needs the real frames
                self.frames.append(frames)
            self.z.append(model.encode_frames(frames[None])[0].cpu())            # (T, C, h, w)
            self.actions.append(torch.from_numpy(np.asarray(ep["action"]).argmax(-1)).long())
            self.rewards.append(torch.from_numpy(np.asarray(ep["reward"], dtype=np.float32)))
        if not self.z:
            raise ValueError(f"no episode has the {min_frames} frames a training window needs "
                             f"(longest of {len(paths)} episode(s): {longest} frames)")
        self.lengths = torch.tensor([len(z) for z in self.z])

    def sample(self, batch: int, window: int, gen: torch.Generator):
        """(z (B, T, C, h, w), actions (B, T), rewards (B, T)) with random episodes and offsets."""
        ok = torch.nonzero(self.lengths >= window).squeeze(1)
        if len(ok) == 0:
            raise ValueError(f"no episode has the {window} frames this window needs "
                             f"(longest: {int(self.lengths.max())})")
        eps = ok[torch.randint(len(ok), (batch,), generator=gen)]
        z, a, r = [], [], []
        for e in eps.tolist():
            s = int(torch.randint(int(self.lengths[e]) - window + 1, (1,), generator=gen))
            z.append(self.z[e][s: s + window])
            a.append(self.actions[e][s: s + window])
            r.append(self.rewards[e][s: s + window])
        return torch.stack(z), torch.stack(a), torch.stack(r)


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: WorldModel, data: LatentEpisodes, cfg: TrainConfig, seed: int = 1234) -> dict:
    """Held-out open loop: real context, real actions, imagined frames vs real frames; and reward P/R."""
    from .autoencoder import frames_to_float
    from .metrics import psnr, ssim

    gen = torch.Generator().manual_seed(seed)
    tc, tf = cfg.eval_context, cfg.eval_horizon
    need = tc + tf
    ok = [i for i, f in enumerate(data.frames) if len(f) >= need]
    if not ok:
        return {"error": f"no held-out episode has {need} frames"}
    picks = [ok[i % len(ok)] for i in range(cfg.eval_batch)]
    frames, actions = [], []
    for j, e in enumerate(picks):
        s = (j * 97) % (len(data.frames[e]) - need + 1)
        frames.append(data.frames[e][s: s + need])
        actions.append(data.actions[e][s: s + need])
    frames, actions = torch.stack(frames), torch.stack(actions)          # (B, Tc+Tf, H, W, 3), (B, Tc+Tf)
    out = model.rollout(frames[:, :tc], actions[:, :tc], actions[:, tc:], generator=gen)
    real = frames[:, tc:]
    b = real.shape[0]

    def per_step(metric, a, bb):
        fa = frames_to_float(a.reshape(-1, *a.shape[2:]))
        fb = frames_to_float(bb.reshape(-1, *bb.shape[2:]))
        return metric(fa, fb).reshape(b, tf).mean(0)                    # (Tf,)

    copy_last = frames[:, tc - 1: tc].expand_as(real)
    recon = model.decode_latents(model.encode_frames(real))
    res = {
        "context_frames": tc, "horizon": tf, "episodes": len(set(picks)), "windows": b,
        "psnr_dream": per_step(psnr, out["frames"], real).tolist(),
        "psnr_copy_last": per_step(psnr, copy_last, real).tolist(),
        "psnr_autoencoder": per_step(psnr, recon, real).tolist(),
        "ssim_dream": per_step(ssim, out["frames"], real).tolist(),
        "ssim_copy_last": per_step(ssim, copy_last, real).tolist(),
    }
    for k in list(res):
        if k.startswith(("psnr_", "ssim_")):
            res[k + "_mean"] = float(np.mean(res[k]))
    # reward head on held-out windows (teacher-forced at the stabilisation noise level)
    res.update(reward_precision_recall(model, data))
    res["strip"] = image_strip(real[0, :8], out["frames"][0, :8])
    return res


@torch.no_grad()
def reward_precision_recall(model: WorldModel, data: LatentEpisodes) -> dict:
    """Reward events predicted on held-out episodes, each in one causal pass over the whole episode with the
    real frames fed at the stabilisation noise level (as the dream feeds its committed frames)."""
    from .diffusion import add_noise

    tp = fp = fn = 0
    cn = model.config.diffusion.context_noise
    gen = torch.Generator().manual_seed(0)
    for z, a, r in zip(data.z, data.actions, data.rewards):
        zz = z[None].to(model.device)                                      # (1, T, C, h, w)
        tau = torch.full(zz.shape[:2], cn, device=model.device)
        x = add_noise(zz, tau, torch.randn(zz.shape, generator=gen).to(zz))
        _, feats = model.backbone(x, a[None].to(model.device), tau)
        pred = model.reward_events(feats)[0].cpu()
        true = r > 0
        tp += int((pred & true).sum())
        fp += int((pred & ~true).sum())
        fn += int((~pred & true).sum())
    return {
        "reward_true_positives": tp, "reward_false_positives": fp, "reward_false_negatives": fn,
        "reward_precision": tp / (tp + fp) if tp + fp else None,
        "reward_recall": tp / (tp + fn) if tp + fn else None,
    }


# ---------------------------------------------------------------------- training


def _ema_update(ema: dict, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    prog = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))


class NonFiniteLossError(RuntimeError):
    pass


def train(
    cfg: TrainConfig, episodes: str | Path, run_dir: str | Path, resume: bool = False,
    device: str = "auto", model_cfg: WorldModelConfig | None = None, progress: bool = True,
    stop_after: int | None = None,
) -> tuple[WorldModel, dict]:
    """Train (or resume) a world model; returns the EMA model and the final evaluation.

    `stop_after` ends this invocation after that many steps (checkpoint written, schedule unchanged), as an
    interruption would; `resume=True` continues it exactly."""
    from tqdm import tqdm

    from envs.episodes import EpisodeStore

    from .train_autoencoder import load_autoencoder, train_autoencoder

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model_cfg = model_cfg or world_model_config(cfg.preset, cfg.variant)
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose a new --run-dir")
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
    run_dir.mkdir(parents=True, exist_ok=True)

    # 1. episodes, split by episode
    need = cfg.max_window
    try:
        store = EpisodeStore(episodes)
    except FileNotFoundError as e:
        raise ValueError(f"{e}; training needs episodes of at least {need} frames, found none") from e
    train_paths, test_paths = store.split(test_fraction=cfg.test_fraction, seed=cfg.seed)
    lengths = dict(zip(store.paths, store.lengths))
    longest = max((lengths[p] for p in train_paths), default=0)
    if longest < need:
        raise ValueError(f"{episodes}: training windows need episodes of at least {need} frames; "
                         f"the longest of {len(train_paths)} training episode(s) has {longest}")

    # 2. stage 1: the autoencoder (trained here when the run has none)
    ae_path = run_dir / "autoencoder.pt"
    finished = ae_path.exists() and bool(load_autoencoder(ae_path, allow_unfinished=True).stats_ready)
    if finished:
        autoencoder = load_autoencoder(ae_path, device=dev)
    else:  # none yet, or interrupted mid-way: train (or continue) it
        autoencoder, _ = train_autoencoder(model_cfg.autoencoder, train_paths, test_paths, run_dir,
                                           steps=cfg.ae_steps, batch_size=cfg.ae_batch_size, device=dev,
                                           seed=cfg.seed, log=progress, resume=ae_path.exists())
    if config_to_dict(autoencoder.config) != config_to_dict(model_cfg.autoencoder):
        check_model_config(model_cfg.autoencoder, config_to_dict(autoencoder.config), ae_path)
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    autoencoder.eval()

    # 3. model, optimiser, EMA, data
    torch.manual_seed(cfg.seed)
    model = WorldModel(model_cfg, autoencoder=autoencoder).to(dev)
    trainable = [p for n, p in model.named_parameters() if not n.startswith("autoencoder.")]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume:
        ckpt = torch_load(ckpt_path)
        check_model_config(model_cfg, ckpt["config"]["model"], ckpt_path)
        stored_train = config_from_dict(TrainConfig, ckpt["config"]["train"])
        free = {"precision", "compile", "eval_every", "ckpt_every", "eval_context", "eval_horizon", "eval_batch"}
        diff = {f.name for f in dataclasses.fields(TrainConfig)
                if getattr(stored_train, f.name) != getattr(cfg, f.name) and f.name not in free | {"steps"}}
        if diff:
            raise ValueError(f"{ckpt_path}: training config differs from the checkpoint's in {sorted(diff)}")
        if stored_train.steps != cfg.steps:
            import warnings
            warnings.warn(f"resuming with steps={cfg.steps} (checkpoint planned {stored_train.steps}): the learning-"
                          "rate schedule and curriculum follow the new length, so this is not an exact resume",
                          stacklevel=2)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        ema = {k: v.to(dev) for k, v in ckpt["ema"].items()}
        gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step = int(ckpt["step"])
    atomic_write_json(run_dir / "config.json", {"train": config_to_dict(cfg), "model": config_to_dict(model_cfg)})
    model.autoencoder.eval()
    train_data = LatentEpisodes(model, train_paths, min_frames=cfg.curriculum[0][1], desc="encoding train",
                                progress=progress)
    test_data = LatentEpisodes(model, test_paths, min_frames=2, desc="encoding test", progress=progress,
                               keep_frames=True)

    def save(step_now: int) -> None:
        atomic_torch_save({
            "model": model.state_dict(), "ema": ema, "optimizer": opt.state_dict(),
            "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
            "step": step_now, "config": {"train": config_to_dict(cfg), "model": config_to_dict(model_cfg)},
        }, ckpt_path)

    writer = None
    if progress:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tb"))
    bar = tqdm(total=cfg.steps, initial=step, desc="diffusion forcing", unit="it", disable=not progress)
    history: list[dict] = []
    t_last, frames_since = time.perf_counter(), 0
    model.backbone.train()
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision={cfg.precision!r}: expected 'auto', 'fp32' or 'bf16'")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")

    def autocast():
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    if cfg.compile:
        model.backbone.compile()
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    while step < end:
        window = cfg.window_at(step)
        z, a, r = train_data.sample(cfg.batch_size, window, gen)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        with autocast():
            loss, logs = model.loss(z.to(dev), a.to(dev), r.to(dev), generator=gen)
        if not torch.isfinite(loss):
            bar.close()
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {step}: stopped; the last good checkpoint "
                f"{ckpt_path} (step {_ckpt_step(ckpt_path)}) was kept. Try a lower --lr.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        if not torch.isfinite(gnorm):
            bar.close()
            raise NonFiniteLossError(
                f"non-finite gradient norm at step {step}: stopped before the update; the last good checkpoint "
                f"{ckpt_path} (step {_ckpt_step(ckpt_path)}) was kept. Try a lower --lr.")
        opt.step()
        step += 1
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema, model, decay)
        frames_since += z.shape[0] * z.shape[1]
        logs.update({"wm/lr": opt.param_groups[0]["lr"], "wm/grad_norm": float(gnorm), "wm/window": window})
        history.append({"step": step, **logs})
        bar.update(1)
        bar.set_postfix(loss=f"{logs['wm/loss']:.4f}", T=window)
        if writer is not None and (step % 10 == 0 or step == cfg.steps):
            now = time.perf_counter()
            writer.add_scalar("wm/frames_per_s", frames_since / max(now - t_last, 1e-9), step)
            t_last, frames_since = now, 0
            for k, v in logs.items():
                writer.add_scalar(k, v, step)
        if step % cfg.ckpt_every == 0 or step == end:
            save(step)
        if writer is not None and step % cfg.eval_every == 0 and step < cfg.steps:
            res = _eval_ema(model, ema, test_data, cfg)
            _log_eval(writer, res, step)
    bar.close()

    # 4. final evaluation with the EMA weights (reward events also on the training episodes: held-out
    #    episodes hold few of them, and the gap shows memorisation)
    model.load_state_dict(ema)  # the returned model carries the EMA weights
    model.eval()
    res = evaluate(model, test_data, cfg)
    train_pr = reward_precision_recall(model, train_data)
    res.update({k.replace("reward_", "reward_train_"): v for k, v in train_pr.items()})
    strip = res.pop("strip", None)
    if strip is not None:
        save_png(run_dir / "strip.png", strip, scale=2)
    if writer is not None:
        _log_eval(writer, {**res, "strip": strip}, step)
        writer.close()
    res["steps"] = step
    res["history_tail"] = history[-5:]
    atomic_write_json(run_dir / "eval.json", res)
    return model, res


def _ckpt_step(path: Path):
    try:
        return int(torch_load(path)["step"])
    except Exception:  # noqa: BLE001
        return "none yet"


def _eval_ema(model: WorldModel, ema: dict, data: LatentEpisodes, cfg: TrainConfig) -> dict:
    live = copy.deepcopy(model.state_dict())
    model.load_state_dict(ema)
    model.eval()
    try:
        return evaluate(model, data, cfg)
    finally:
        model.load_state_dict(live)
        model.backbone.train()
        model.reward_head.train()


def _log_eval(writer, res: dict, step: int) -> None:
    for k in ("psnr_dream_mean", "psnr_copy_last_mean", "ssim_dream_mean", "reward_precision", "reward_recall"):
        if res.get(k) is not None:
            writer.add_scalar(f"eval/{k}", res[k], step)
    if res.get("strip") is not None:
        writer.add_image("eval/real_dream_error", res["strip"], step, dataformats="HWC")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m worldmodel.train",
        description="Train the long-context hybrid world model with Diffusion Forcing on episode files "
                    "(trains the latent autoencoder first when RUN_DIR has none).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="cpu",
                    help="tiny: tests (seconds); cpu: the demo (minutes on 2 cores); paper: ~200M params, GPU")
    ap.add_argument("--variant", default="hybrid",
                    help="backbone: hybrid, hybrid_block1, mamba2, mamba2_local_attn, causal_full, causal_window")
    ap.add_argument("--episodes", required=True, help="folder of episode .npz files (ours or official Memory Maze)")
    ap.add_argument("--run-dir", required=True, help="output folder: checkpoint.pt, eval.json, tb/ ...")
    ap.add_argument("--steps", type=int, default=None, help="diffusion-forcing steps (default: the preset's)")
    ap.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt exactly")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                    help="auto: bf16 autocast on CUDA, fp32 on CPU")
    ap.add_argument("--compile", action="store_true", default=None, help="torch.compile the backbone")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop this invocation after N steps (checkpointed; continue later with --resume)")
    args = ap.parse_args(argv)
    cfg = TRAIN_PRESETS[args.preset]
    over = {k: v for k, v in {"steps": args.steps, "ae_steps": args.ae_steps, "batch_size": args.batch_size,
                              "lr": args.lr, "seed": args.seed, "variant": args.variant,
                              "precision": args.precision, "compile": args.compile}.items() if v is not None}
    cfg = dataclasses.replace(cfg, **over)
    try:
        _, res = train(cfg, args.episodes, args.run_dir, resume=args.resume, device=args.device,
                       stop_after=args.stop_after)
    except (ValueError, FileExistsError, FileNotFoundError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: res[k] for k in ("psnr_dream_mean", "psnr_copy_last_mean", "psnr_autoencoder_mean",
                                   "ssim_dream_mean", "reward_precision", "reward_recall") if k in res}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
