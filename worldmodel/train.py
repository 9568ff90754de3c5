"""Train the world model with Diffusion Forcing on real episodes (stage 2; stage 1 runs first if needed).

    python -m worldmodel.train --preset cpu --episodes data/episodes/mm9 --run-dir runs/demo
    python -m worldmodel.train --preset cpu --episodes data/episodes/mm9 --run-dir runs/demo --resume
    python -m worldmodel.train --help          (every option, its meaning and the cpu preset's value)
    torchrun --nproc_per_node=2 -m worldmodel.train --preset cpu ...   (DistributedDataParallel, 2 processes)

One process or many (``torchrun``: worldmodel/distributed.py) follow the same optimisation: ``--batch-size`` is
the global batch (windows per optimiser step, summed over processes and micro-batches), each process takes an
equal share of it, ``micro_batch`` windows at a time (gradient accumulation); the windows of a step and each
window's noise are drawn from seeds derived from (seed, step, position in the global batch), so neither the
number of processes nor the micro-batch changes what is learned, and a checkpoint written by N processes
resumes on M. Only rank 0 writes files (checkpoint, config, split, TensorBoard, evaluation, strip) and holds
the lock; it evaluates while the others wait (the final evaluation after they have returned).

Run folder layout:
    RUN_DIR/config.json            resolved TrainConfig + WorldModelConfig
    RUN_DIR/split.json             the training / held-out episode files and their sha256 (kept on --resume)
    RUN_DIR/autoencoder.pt         stage 1 (trained here when missing)
    RUN_DIR/checkpoint.pt          latest stage-2 checkpoint (weights, optimizer, EMA, RNG, step, config; the
                                   unwrapped model's state, whatever the number of processes)
    RUN_DIR/eval.json              held-out open-loop PSNR/SSIM vs copying the last context frame, reward P/R
    RUN_DIR/strip.png              real | dream | error on held-out episodes
    RUN_DIR/tb/                    TensorBoard (losses, lr, frames/s, image strips)
    RUN_DIR/.lock                  held by the running job (a second job on the folder is refused)

Axis legend: B batch, T frames, C x h x w latent grid, H x W x 3 frames.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro
from tqdm import tqdm

from envs.episodes import EpisodeStore, WindowSampler, derived_seed, load_episode
from envs.fileio import RunLockedError

from . import distributed, presets
from .backbone import VARIANTS, Variant
from .config import check_config, config_from_dict, config_to_dict
from .evaluate import evaluate, reward_precision_recall
from .model import LossNoise, WorldModel, WorldModelConfig, check_model_config, with_env, world_model_config
from .run_folder import (
    RunSplit,
    check_frame_shapes,
    episode_actions,
    episode_env,
    open_run_folder,
    plan_split,
    write_split,
)
from .train_autoencoder import load_autoencoder, train_autoencoder
from .utils import (
    atomic_torch_save,
    atomic_write_json,
    get_rng_state,
    resolve_device,
    save_png,
    seed_everything,
    set_rng_state,
    torch_load,
    warmup_cosine_lr,
)

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Stage-2 training settings (Diffusion Forcing), stored in every checkpoint. Build one with
    :func:`train_config` (a preset plus overrides): the fields without a default take the preset's value
    (worldmodel/presets.py: TRAINING, AUTOENCODER_TRAINING). Every field is checked when the config is built."""

    preset: presets.Preset
    """Scale of model and training: tiny (tests, seconds), cpu (the demo, minutes on 2 cores), paper (~200M
    parameters, a GPU)."""
    variant: Variant = "hybrid"
    """Backbone: the paper's hybrid, or a baseline of the paper (see worldmodel.backbone.backbone_config)."""
    steps: int
    """Diffusion-forcing optimiser steps of the whole run (also when resuming)."""
    batch_size: int
    """Windows per optimiser step: the global batch, split equally among the processes (torchrun) and, in each,
    into micro-batches of micro_batch windows (gradient accumulation); one config learns the same on any number
    of processes."""
    micro_batch: int | None = None
    """Windows per forward/backward pass of one process (None: its whole share of batch_size at once); it must
    divide batch_size / processes. Saves memory, changes nothing learned."""
    curriculum: tuple[tuple[float, int], ...]
    """Sequence-length curriculum: (fraction of training at which a stage starts, window in frames) pairs,
    the first starting at 0.0."""
    lr: float
    """Peak learning rate (linear warm-up, then cosine decay to worldmodel.utils.LR_FLOOR of it)."""
    warmup: int
    """Learning-rate warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clipping threshold."""
    ema_decay: float = 0.999
    """Decay of the weights' exponential moving average (the evaluated and saved model), reached after the
    warm-up of ema_decay_at."""
    ae_steps: int
    """Autoencoder (stage 1) optimiser steps, when the run has no trained autoencoder yet."""
    ae_batch_size: int
    """Autoencoder (stage 1) frames per optimiser step (the global batch, as batch_size)."""
    ae_micro_batch: int | None = None
    """Autoencoder (stage 1) frames per forward/backward pass of one process (None: its whole share)."""
    test_fraction: float = 0.1
    """Fraction of the episodes held out for evaluation (split by episode, recorded in RUN_DIR/split.json)."""
    eval_every: int
    """Held-out evaluation (TensorBoard) every this many steps; the final one always runs."""
    ckpt_every: int
    """Checkpoint every this many steps (and at the last step of the invocation)."""
    eval_context: int
    """Real context frames before the imagined ones in the held-out evaluation."""
    eval_horizon: int
    """Imagined frames compared with the real ones in the held-out evaluation."""
    eval_batch: int
    """Held-out windows in the evaluation."""
    seed: int = 0
    """Seed of the split, the weights' initialisation, the batches and the noise."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on CPU."""
    compile: bool
    """torch.compile the backbone (worth it on a GPU for long runs)."""

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: expected {expected}")

        presets.check_preset(self.preset, "training preset")
        if self.variant not in VARIANTS:
            bad("variant", f"one of {VARIANTS}")
        if self.precision not in PRECISIONS:
            bad("precision", f"one of {PRECISIONS}")
        for name in (
            "steps",
            "batch_size",
            "ae_steps",
            "ae_batch_size",
            "eval_every",
            "ckpt_every",
            "eval_context",
            "eval_horizon",
            "eval_batch",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, "an integer >= 1")
        for name in ("micro_batch", "ae_micro_batch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                bad(name, "an integer >= 1 (or None: no gradient accumulation)")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            bad("warmup", "an integer >= 0")
        if not 0.0 < self.lr < float("inf"):
            bad("lr", "a positive number")
        if not 0.0 <= self.weight_decay < float("inf"):
            bad("weight_decay", "a number >= 0")
        if not 0.0 < self.grad_clip < float("inf"):
            bad("grad_clip", "a positive number")
        if not 0.0 <= self.ema_decay < 1.0:
            bad("ema_decay", "a number in [0, 1)")
        if not 0.0 <= self.test_fraction < 1.0:
            bad("test_fraction", "a fraction in [0, 1)")
        stages = self.curriculum
        if (
            not stages
            or any(len(s) != 2 for s in stages)
            or stages[0][0] != 0.0
            or any(not 0.0 <= f < 1.0 for f, _ in stages)
            or any(b[0] <= a[0] for a, b in zip(stages, stages[1:]))
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 2 for _, w in stages)
        ):
            bad(
                "curriculum",
                "(fraction, window) pairs with fractions rising from 0.0 below 1 and windows of >= 2 "
                "frames, e.g. ((0.0, 32), (0.7, 48))",
            )

    def window_at(self, step: int) -> int:
        """Training window (frames) at optimiser step ``step``, from the curriculum."""
        frac = step / max(self.steps, 1)
        window = self.curriculum[0][1]
        for start, w in self.curriculum:
            if frac >= start:
                window = w
        return window

    @property
    def max_window(self) -> int:
        """The longest training window of the curriculum (frames)."""
        return max(w for _, w in self.curriculum)


def train_config(preset: str, **overrides) -> TrainConfig:
    """The TrainConfig of ``preset`` ("tiny" | "cpu" | "paper", numbers from worldmodel/presets.py), with
    field overrides."""
    presets.check_preset(preset, "training preset")
    stage1 = presets.AUTOENCODER_TRAINING[preset]
    values = {**presets.TRAINING[preset], "ae_steps": stage1["steps"], "ae_batch_size": stage1["batch_size"]}
    return TrainConfig(preset=preset, **{**values, **overrides})


TRAIN_PRESETS: dict[str, TrainConfig] = {name: train_config(name) for name in presets.PRESETS}

# Fields that may differ on --resume: they change what is logged, checked or how fast it runs, not what is
# learned (`steps` may differ too, with a warning: the schedule then follows the new length).
RESUME_FREE_FIELDS = (
    "precision",
    "compile",
    "eval_every",
    "ckpt_every",
    "eval_context",
    "eval_horizon",
    "eval_batch",
    "micro_batch",
    "ae_micro_batch",
)


# ---------------------------------------------------------------------- data


class LatentEpisodes:
    """Episodes encoded once to latents and kept in memory with their actions and rewards.

    Training windows are drawn by ``envs.episodes.WindowSampler`` (uniform over every (episode, start) pair;
    :meth:`step_batch`: a process's share of a step's global batch, from seeds derived from the run's seed and
    the step, so a resumed run, or one on another number of processes, draws exactly the same batches). Episodes
    shorter than ``min_frames`` are left out; ``keep_frames`` also keeps the uint8 frames (evaluation needs
    them). A file whose frames are not the model's size is a ValueError naming it."""

    def __init__(
        self,
        model: WorldModel,
        paths: Sequence[str | Path],
        min_frames: int,
        desc: str = "encoding",
        progress: bool = True,
        keep_frames: bool = False,
    ):
        self.z, self.actions, self.rewards, self.frames = [], [], [], []
        self.paths: list[Path] = []
        obs_shape = tuple(model.config.obs_shape)
        longest = 0
        for p in tqdm(paths, desc=desc, unit="ep", leave=False, disable=not progress):
            ep = load_episode(p)
            n = len(ep["image"])
            longest = max(longest, n)
            if tuple(ep["image"].shape[1:]) != obs_shape:
                raise ValueError(
                    f"{p}: frames are {'x'.join(map(str, ep['image'].shape[1:]))}, the model "
                    f"expects {'x'.join(map(str, obs_shape))} (H x W x channels)"
                )
            if n < min_frames:
                continue
            frames = torch.from_numpy(ep["image"])  # (T, H, W, 3) uint8
            if keep_frames:  # only evaluation needs the real frames
                self.frames.append(frames)
            self.z.append(model.encode_frames(frames[None])[0].cpu())  # (T, C, h, w)
            self.actions.append(torch.from_numpy(np.asarray(ep["action"]).argmax(-1)).long())
            self.rewards.append(torch.from_numpy(np.asarray(ep["reward"], dtype=np.float32)))
            self.paths.append(Path(p))
        if not self.z:
            raise ValueError(
                f"no episode has the {min_frames} frames a training window needs "
                f"(longest of {len(paths)} episode(s): {longest} frames)"
            )
        self.lengths = torch.tensor([len(z) for z in self.z])
        self.sampler = WindowSampler(self.lengths.tolist(), names=[str(p) for p in self.paths])

    def sample(self, batch: int, window: int, gen: torch.Generator):
        """(z (B, T, C, h, w), actions (B, T), rewards (B, T)): ``batch`` random windows of ``window`` frames."""
        return self._gather(self.sampler.sample(window, batch, gen), window)  # B x (episode, start)

    def step_batch(self, batch: int, window: int, seed: int, step: int, rank: int = 0, world_size: int = 1):
        """Process ``rank``'s share of optimiser step ``step``'s global batch of ``batch`` windows
        (``WindowSampler.step_batch``): (z (b, T, C, h, w), actions (b, T), rewards (b, T), ids), b = batch /
        world_size, ``ids`` their positions in the global batch."""
        picks, ids = self.sampler.step_batch(window, batch, seed, step, rank, world_size)
        return (*self._gather(picks, window), ids)

    def _gather(self, picks: Sequence[tuple[int, int]], window: int):
        """The windows ``picks`` ((episode, start) pairs) of ``window`` frames as stacked (z, actions, rewards)."""
        z = torch.stack([self.z[e][s : s + window] for e, s in picks])
        a = torch.stack([self.actions[e][s : s + window] for e, s in picks])
        r = torch.stack([self.rewards[e][s : s + window] for e, s in picks])
        return z, a, r


# ---------------------------------------------------------------------- training

# The EMA warm-up: see ema_decay_at.
EMA_WARMUP = 10


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay used after optimiser step ``step``: ``min(decay, (1 + step) / (EMA_WARMUP + step))``.

    A fixed 0.999 from the start would keep the average near the random initial weights for thousands of steps
    (a short run would evaluate an almost untrained model). The ramp (as TensorFlow's ExponentialMovingAverage
    with ``num_updates``) lets the average follow the weights closely at first and reaches ``decay`` after about
    (EMA_WARMUP - 1) / (1 - decay) steps: 9,000 for 0.999 (a cpu run of 800 steps ends at 0.989)."""
    return min(decay, (1 + step) / (EMA_WARMUP + step))


def _ema_update(ema: dict, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, for every floating tensor of the state dict (others copied)."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)


NOISE_STREAM = 1
"""The loss's draws for window i of step s come from ``derived_seed(seed, s, NOISE_STREAM, i)`` (the windows
themselves from ``derived_seed(seed, s)``: WindowSampler.step_batch)."""


def step_noise(model: WorldModel, window: int, seed: int, step: int, ids: Sequence[int]) -> LossNoise:
    """The loss's random draws for the windows at global batch positions ``ids`` of step ``step``: each from its
    own generator, seeded by (seed, step, position), so a window's draws do not depend on the process or the
    micro-batch it lands in."""
    draws = []
    for i in ids:
        gen = torch.Generator().manual_seed(derived_seed(seed, step, NOISE_STREAM, i))
        draws.append(model.draw_loss_noise(1, window, gen))
    return LossNoise.cat(draws)


def accumulate_gradients(
    loss_fn,
    model: WorldModel,
    data: LatentEpisodes,
    cfg: TrainConfig,
    step: int,
    micro: int,
    dev: torch.device,
    autocast=contextlib.nullcontext,
) -> dict[str, float]:
    """Forward and backward of this process's share of step ``step``'s global batch, ``micro`` windows at a time
    (``loss_fn``: ``model.loss``, or it wrapped by DistributedDataParallel: distributed.wrap). The gradients left
    in the parameters are those of the whole global batch's loss, on every process; returns that loss's logs.

    1. the share (windows and their draws, from seeds of (seed, step, position): the same whatever the split);
    2. the global totals the loss's means divide by (noised frames, reward-scored frames), summed over processes;
    3. per micro-batch, its part of the global loss; backward of that part times the number of processes (DDP
       averages the gradients over processes, the parts add up), DDP's gradient sync after the last one only;
    4. the logs summed over micro-batches and processes."""
    ctx = distributed.current()
    window = cfg.window_at(step)
    # 1. this process's windows and draws
    z, a, r, ids = data.step_batch(cfg.batch_size, window, cfg.seed, step, ctx.rank, ctx.world_size)
    noise = step_noise(model, window, cfg.seed, step, ids)
    # 2. the whole batch's totals
    totals = distributed.all_reduce_sum(model.loss_totals(noise).to(dev)).tolist()
    # 3. the micro-batches
    sums = torch.zeros(3, dtype=torch.float64)
    starts = range(0, len(ids), micro)
    for k, i in enumerate(starts):
        part = slice(i, i + micro)
        with distributed.micro_batch_context(loss_fn, last=k == len(starts) - 1):
            with autocast():
                loss, logs = loss_fn(
                    z[part].to(dev), a[part].to(dev), r[part].to(dev), noise=noise[part], totals=tuple(totals)
                )
            (loss * ctx.world_size).backward()
        sums += torch.tensor([loss.item(), logs["wm/diffusion"], logs["wm/reward_bce"]], dtype=torch.float64)
    # 4. the logs of the whole batch
    sums = distributed.all_reduce_sum(sums.to(dev)).tolist()
    return {
        "wm/loss": sums[0],
        "wm/diffusion": sums[1],
        "wm/reward_bce": sums[2],
        "wm/noised_frac": totals[0] / (cfg.batch_size * window),
    }


class NonFiniteLossError(RuntimeError):
    """Training met a non-finite loss or gradient norm and stopped; the last good checkpoint was kept."""


CHECKPOINT_KEYS = ("model", "ema", "optimizer", "rng", "step", "config")


def _read_checkpoint(path: Path) -> dict:
    """The checkpoint of a worldmodel.train run at ``path``; a ValueError naming what is missing otherwise."""
    ckpt = torch_load(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if not missing and not (isinstance(ckpt["config"], dict) and {"train", "model"} <= set(ckpt["config"])):
        missing = ["config.train", "config.model"]
    if missing:
        raise ValueError(
            f"{path} is not a checkpoint of python -m worldmodel.train (missing {missing}); "
            "--resume continues a run this job wrote"
        )
    return ckpt


def _check_resumable(stored: TrainConfig, cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume with a training config that changes what is learned; warn when only `steps` changed."""
    diff = {
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(stored, f.name) != getattr(cfg, f.name) and f.name not in (*RESUME_FREE_FIELDS, "steps")
    }
    if diff:
        raise ValueError(f"{path}: training config differs from the checkpoint's in {sorted(diff)}")
    if stored.steps != cfg.steps:
        warnings.warn(
            f"resuming with steps={cfg.steps} (checkpoint planned {stored.steps}): the learning-"
            "rate schedule and curriculum follow the new length, so this is not an exact resume",
            stacklevel=5,  # the caller of train() (through train's prepare and distributed.from_main)
        )


def _restore_rng(ckpt: dict) -> None:
    """Restore the global RNGs saved in a checkpoint (the batches and their noise need no state: their seeds
    derive from the run's seed and the step)."""
    if "python" in ckpt["rng"]:
        set_rng_state(ckpt["rng"])
    else:  # checkpoints written before the global RNGs were captured with get_rng_state
        torch.set_rng_state(ckpt["rng"]["torch"])


def train(
    cfg: TrainConfig,
    episodes: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    device: str | torch.device = "auto",
    model_cfg: WorldModelConfig | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    heldout: str | Path | None = None,
) -> tuple[WorldModel, dict]:
    """Train (or resume) a world model on the episode files of ``episodes`` in ``run_dir``; returns the EMA
    model and the final held-out evaluation (also written to RUN_DIR/eval.json).

    The evaluations run on the split's test episodes, or on the episodes of the folder ``heldout`` when given
    (episodes collected with other seeds: unseen mazes, and enough of them to hold some reward events).

    ``model_cfg`` defaults to ``world_model_config(cfg.preset, cfg.variant)``; either way its env comes from the
    episodes: the number of actions from their one-hot width, the env id from the folder's manifest when it has
    one (``worldmodel.model.with_env``; Crafter episodes give 17 actions and ``longdream/Crafter-v0``). The
    autoencoder (stage 1) is
    trained first when the run has none (or continued when interrupted). ``resume=True`` continues
    RUN_DIR/checkpoint.pt exactly; without it an existing checkpoint is refused. ``stop_after`` ends this
    invocation after that many steps (checkpoint written, schedule unchanged), as an interruption would.

    Under a process group (torchrun; see worldmodel/distributed.py) every process calls this with its own
    ``device``: they train one model with DistributedDataParallel, rank 0 alone checks the run folder, holds its
    lock, writes and evaluates, and the others return the same model with ``{"steps": N}``.

    Every argument, the checkpoint to resume and the episode files (split, frame size, length) are checked
    before any work; then the run folder is locked for the whole run (a second job on it raises
    ``envs.fileio.RunLockedError``), stale temp files are removed and the split is recorded (run_folder.py).
    Refusals are ValueError / FileExistsError / FileNotFoundError with a message; a non-finite loss raises
    NonFiniteLossError."""
    # 0. arguments (the configs checked themselves when built), and the global batches among the processes
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after={stop_after!r}: expected a number of steps >= 1 (or None for the whole run)")
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model_cfg = model_cfg or world_model_config(cfg.preset, cfg.variant)
    world = distributed.current().world_size
    distributed.accumulation(cfg.batch_size, cfg.micro_batch, world, "batch_size")
    distributed.accumulation(cfg.ae_batch_size, cfg.ae_micro_batch, world, "ae_batch_size")
    ckpt_path = run_dir / "checkpoint.pt"
    held: dict = {}  # what rank 0's preparation keeps for itself: the run folder's lock, the checkpoint read

    def prepare() -> tuple[RunSplit, list[Path], WorldModelConfig]:
        """1.-2. (rank 0) the checks on files, then the run folder locked and the split recorded."""
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"run folder {run_dir} is a file, not a folder")
        if ckpt_path.exists() and not resume:
            raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose a new --run-dir")
        if resume and not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        if resume:
            held["ckpt"] = ckpt = _read_checkpoint(ckpt_path)
            _check_resumable(config_from_dict(TrainConfig, ckpt["config"]["train"], ckpt_path), cfg, ckpt_path)
        split, eval_paths, env_cfg = _plan_episodes(cfg, model_cfg, episodes, run_dir, heldout)
        if resume:
            check_model_config(env_cfg, held["ckpt"]["config"]["model"], ckpt_path)
        # 2. the run folder, locked for the whole run
        held["lock"] = open_run_folder(run_dir, what="training")
        write_split(run_dir, split)
        return split, eval_paths, env_cfg

    try:
        split, eval_paths, model_cfg = distributed.from_main(prepare)
        ckpt = held.get("ckpt") or (_read_checkpoint(ckpt_path) if resume else None)
        return _fit(cfg, model_cfg, run_dir, dev, split, ckpt, stop_after, progress, eval_paths)
    finally:
        if "lock" in held:
            held["lock"].release()


def _plan_episodes(
    cfg: TrainConfig,
    model_cfg: WorldModelConfig,
    episodes: str | Path,
    run_dir: Path,
    heldout: str | Path | None,
) -> tuple[RunSplit, list[Path], WorldModelConfig]:
    """1. the run's split (drawn at its first start, recorded, kept after), the evaluation episodes, checked
    before any work (frame size, windows long enough), and ``model_cfg`` for the env the episodes come from
    (its action count and id)."""
    need = cfg.max_window
    try:
        store = EpisodeStore(episodes)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ValueError(f"{e}; training needs episodes of at least {need} frames, found none") from e
    split = plan_split(store, run_dir, test_fraction=cfg.test_fraction, seed=cfg.seed)
    check_frame_shapes(split.train + split.test, model_cfg.obs_shape, what=f"the {cfg.preset} model")
    eval_paths = split.test
    if heldout is not None:
        try:
            eval_paths = EpisodeStore(heldout).paths
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ValueError(f"held-out episodes: {e}") from e
        check_frame_shapes(eval_paths, model_cfg.obs_shape, what=f"the {cfg.preset} model")
        if Path(heldout).resolve() == Path(episodes).resolve():
            raise ValueError(f"held-out episodes {heldout}: that is the training folder (its episodes are trained on)")
    # the env the model stands in for: its actions and id, from the episodes
    model_cfg = with_env(model_cfg, episode_actions(split.train + split.test + eval_paths), episode_env(store))
    lengths = dict(zip(store.paths, store.lengths))
    longest = max((lengths[p] for p in split.train), default=0)
    if longest < need:
        raise ValueError(
            f"{episodes}: training windows need episodes of at least {need} frames; "
            f"the longest of {len(split.train)} training episode(s) has {longest}"
        )
    return split, eval_paths, model_cfg


def _fit(
    cfg: TrainConfig,
    model_cfg: WorldModelConfig,
    run_dir: Path,
    dev: torch.device,
    split: RunSplit,
    ckpt: dict | None,
    stop_after: int | None,
    progress: bool,
    eval_paths: list[Path],
) -> tuple[WorldModel, dict]:
    """The stages of :func:`train` once everything is checked and the run folder is locked."""
    ctx = distributed.current()
    main = ctx.is_main
    ckpt_path = run_dir / "checkpoint.pt"
    train_paths, test_paths = split.train, split.test

    # 3. stage 1: the autoencoder (trained here when the run has none)
    ae_path = run_dir / "autoencoder.pt"
    found, finished = distributed.from_main(_autoencoder_state, ae_path)
    if finished:
        autoencoder = load_autoencoder(ae_path, device=dev)
    else:  # none yet, or interrupted mid-way: train (or continue) it; this job already holds the lock
        autoencoder, _ = train_autoencoder(
            model_cfg.autoencoder,
            train_paths,
            test_paths,
            run_dir,
            steps=cfg.ae_steps,
            batch_size=cfg.ae_batch_size,
            micro_batch=cfg.ae_micro_batch,
            device=dev,
            seed=cfg.seed,
            log=progress,
            resume=found,
            lock=False,
        )
    check_config(model_cfg.autoencoder, config_to_dict(autoencoder.config), what=f"autoencoder {ae_path}")
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    autoencoder.eval()

    # 4. model, optimiser, EMA, data
    seed_everything(cfg.seed)
    model = WorldModel(model_cfg, autoencoder=autoencoder).to(dev)
    trainable = [p for n, p in model.named_parameters() if not n.startswith("autoencoder.")]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = copy.deepcopy(model.state_dict())
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        ema = {k: v.to(dev) for k, v in ckpt["ema"].items()}
        _restore_rng(ckpt)
        step = int(ckpt["step"])
    if main:
        atomic_write_json(run_dir / "config.json", {"train": config_to_dict(cfg), "model": config_to_dict(model_cfg)})
    model.autoencoder.eval()
    train_data = LatentEpisodes(
        model, train_paths, min_frames=cfg.curriculum[0][1], desc="encoding train", progress=progress and main
    )
    test_data = None  # only rank 0 evaluates
    if main:
        test_data = LatentEpisodes(
            model, eval_paths, min_frames=2, desc="encoding held-out", progress=progress, keep_frames=True
        )

    def save(step_now: int) -> None:
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "ema": ema,
                "optimizer": opt.state_dict(),
                "rng": get_rng_state(),
                "step": step_now,  # the batches and their noise follow from (seed, step): the sampler's position
                "world_size": ctx.world_size,  # of the run that wrote it (any number of processes resumes it)
                "config": {"train": config_to_dict(cfg), "model": config_to_dict(model_cfg)},
            },
            ckpt_path,
        )

    writer = None
    if progress and main:
        from torch.utils.tensorboard import SummaryWriter  # heavy, and only for logging

        writer = SummaryWriter(str(run_dir / "tb"))
    bar = tqdm(total=cfg.steps, initial=step, desc="diffusion forcing", unit="it", disable=not (progress and main))
    history: list[dict] = []
    t_last, frames_since = time.perf_counter(), 0
    model.backbone.train()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")

    def autocast():
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    if cfg.compile:
        model.backbone.compile()
    loss_fn = distributed.wrap(model, dev)  # model.loss, or it through DistributedDataParallel
    micro, _ = distributed.accumulation(cfg.batch_size, cfg.micro_batch, ctx.world_size, "batch_size")

    # 5. the training loop: Diffusion Forcing on latent windows, the curriculum's window length at each step
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    loop_start = time.perf_counter()
    while step < end:
        window = cfg.window_at(step)
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        opt.zero_grad(set_to_none=True)
        logs = accumulate_gradients(loss_fn, model, train_data, cfg, step, micro, dev, autocast)
        if not math.isfinite(logs["wm/loss"]):
            bar.close()
            raise NonFiniteLossError(
                f"non-finite loss ({logs['wm/loss']}) at step {step}: stopped; the last good checkpoint "
                f"{ckpt_path} (step {_ckpt_step(ckpt_path)}) was kept. Try a lower --lr."
            )
        gnorm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        if not torch.isfinite(gnorm):
            bar.close()
            raise NonFiniteLossError(
                f"non-finite gradient norm at step {step}: stopped before the update; the last good checkpoint "
                f"{ckpt_path} (step {_ckpt_step(ckpt_path)}) was kept. Try a lower --lr."
            )
        opt.step()
        step += 1
        _ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
        frames_since += cfg.batch_size * window
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
        if main and (step % cfg.ckpt_every == 0 or step == end):
            save(step)
        if writer is not None and step % cfg.eval_every == 0 and step < cfg.steps:
            res = _eval_ema(model, ema, test_data, cfg)
            _log_eval(writer, res, step)
    bar.close()
    loop_seconds = time.perf_counter() - loop_start  # this invocation's training, without the final evaluation

    # 6. final evaluation with the EMA weights, on rank 0 (reward events also on the training episodes: held-out
    #    episodes hold few of them, and the gap shows memorisation)
    model.load_state_dict(ema)  # the returned model carries the EMA weights
    model.eval()
    res: dict = {"steps": step}
    if main:
        res = evaluate(model, test_data, cfg.eval_context, cfg.eval_horizon, cfg.eval_batch)
        train_pr = reward_precision_recall(model, train_data)
        res.update({k.replace("reward_", "reward_train_"): v for k, v in train_pr.items()})
        strip = res.pop("strip", None)
        if strip is not None:
            save_png(run_dir / "strip.png", strip, scale=2)
        if writer is not None:
            _log_eval(writer, {**res, "strip": strip}, step)
            writer.close()
        res["steps"] = step
        res["eval_episodes"] = [str(p) for p in eval_paths]
        res["train_seconds"] = loop_seconds
        res["processes"] = ctx.world_size
        res["history_tail"] = history[-5:]
        atomic_write_json(run_dir / "eval.json", res)
    # no barrier: the others return now instead of waiting for this evaluation at a collective, whose timeout
    # (distributed.TIMEOUT) a paper-scale one (every training episode) outlasts; torchrun waits for every process
    return model, res


def _autoencoder_state(path: Path) -> tuple[bool, bool]:
    """(the run has an autoencoder.pt, it is finished: its latent statistics are set)."""
    found = path.exists()
    return found, found and bool(load_autoencoder(path, allow_unfinished=True).stats_ready)


def _ckpt_step(path: Path):
    """The step of the checkpoint at ``path``, or "none yet"."""
    try:
        return int(torch_load(path)["step"])
    except Exception:  # noqa: BLE001
        return "none yet"


def _eval_ema(model: WorldModel, ema: dict, data: LatentEpisodes, cfg: TrainConfig) -> dict:
    live = copy.deepcopy(model.state_dict())
    model.load_state_dict(ema)
    model.eval()
    try:
        return evaluate(model, data, cfg.eval_context, cfg.eval_horizon, cfg.eval_batch)
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


# ---------------------------------------------------------------------- command line


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    """Train the long-context hybrid world model with Diffusion Forcing on a folder of episode files (stage 1,
    the latent autoencoder, is trained first when RUN_DIR has none). Options not given on the command line
    take the values of --preset; the defaults shown are those of the preset named on the command line (cpu
    when none: try `--preset tiny --help`). Started by `torchrun --nproc_per_node=N -m worldmodel.train ...` it
    trains on N processes (DistributedDataParallel; --batch-size stays the global batch)."""

    episodes: Path
    """Folder of episode .npz files (ours or official Memory Maze ones)."""
    run_dir: Path
    """Output folder: checkpoint.pt, config.json, split.json, eval.json, strip.png, tb/."""
    heldout: Path | None = None
    """Folder of episodes never trained on (other seeds: unseen mazes) to evaluate on; default: the split's
    test episodes (10% of EPISODES, often too few to hold 10 reward events)."""
    resume: bool = False
    """Continue RUN_DIR/checkpoint.pt exactly (same split, batches and schedule)."""
    stop_after: int | None = None
    """Stop this invocation after N steps (checkpointed; continue later with --resume)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    threads: int | None = None
    """torch CPU threads; None leaves torch's choice (1 can be faster on a busy machine)."""
    config: Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]
    """Training settings (stored in the checkpoint)."""

    def __post_init__(self) -> None:
        if self.stop_after is not None and (isinstance(self.stop_after, bool) or self.stop_after < 1):
            raise ValueError(f"--stop-after {self.stop_after}: expected a number of steps >= 1")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"--threads {self.threads}: expected a number of threads >= 1")
        resolve_device(self.device)  # an unknown or unavailable device is refused here


def parse_args(argv: Sequence[str] | None = None) -> TrainJob:
    """The TrainJob of a command line (tyro, from the documented dataclasses); every value is checked here, and
    a refused one exits with status 2 and a message before anything is written."""
    argv = sys.argv[1:] if argv is None else list(argv)
    preset = presets.preset_from_argv(argv)
    default = TrainJob(episodes=tyro.MISSING, run_dir=tyro.MISSING, config=train_config(preset))
    return tyro.cli(TrainJob, args=argv, default=default, prog="python -m worldmodel.train")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worldmodel.train``: train, then print the held-out summary (rank 0 under torchrun). Exit status 2
    with a message (no traceback) for a refused argument, episode folder, run folder or checkpoint."""
    job = parse_args(argv)
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    with distributed.session(job.device) as (ctx, dev):  # under torchrun: the process group; else nothing
        try:
            _, res = train(
                job.config,
                job.episodes,
                job.run_dir,
                resume=job.resume,
                device=dev,
                stop_after=job.stop_after,
                heldout=job.heldout,
            )
        except (ValueError, OSError, RunLockedError, NonFiniteLossError) as e:
            print(f"error{f' (rank {ctx.rank})' if ctx.distributed else ''}: {e}", file=sys.stderr)
            return 2
    if not ctx.is_main:
        return 0
    summary = {
        k: res[k]
        for k in (
            "psnr_dream_mean",
            "psnr_copy_last_mean",
            "psnr_autoencoder_mean",
            "ssim_dream_mean",
            "reward_precision",
            "reward_recall",
        )
        if k in res
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
