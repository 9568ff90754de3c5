"""Dream throughput: imagined frames/s of DreamVectorEnv at batch 1, 16 and 64 vs the real Memory Maze env.

    python -m benchmarks.dream_speed                 # writes benchmarks/results/dream_speed.{json,png}
    python -m benchmarks.dream_speed --checkpoint runs/demo/checkpoint.pt
    python -m benchmarks.dream_speed --quick --out DIR [--checkpoint CKPT]   # smoke run: tiny sizes

Measured side by side in one run on the same machine:

- ``real``: the real env (``envs.memory_maze.MemoryMazeEnv`` 9x9, one process, our exact speed-ups on; the
  stock dm_control code too for reference) stepping random actions; build/reset time excluded;
- ``dream``: ``envs.dream_vector.DreamVectorEnv`` with B slots stepping random actions through one model, in
  fp32 (exact) and in bf16 autocast (``precision="bf16"``; how far its frames drift from fp32 under the same
  noise and actions is measured too, ``bf16_vs_fp32``). Each imagined frame costs ``sampling_steps`` denoising
  passes of the backbone plus one commit pass (the finished frame fed back at the stabilisation noise level,
  whose features give the reward), then the autoencoder decode; the split is timed by wrapping
  ``Backbone.step`` (denoising = the first ``sampling_steps`` calls of a step, commit = the last),
  ``WorldModel.step`` (decode, noise draws, reward head = model step minus backbone) and the env step (the
  env's own overhead = env step minus model step).

Single-process runs are interleaved over ``--rounds`` rounds and the median is reported, so load drifts on a
shared machine hit every variant alike. Speed does not depend on the weights, so by default the model is the
``cpu`` preset freshly initialised (the size the demo trains); ``--checkpoint`` times a trained one.
Contexts are real frames: the real env's own recorded run is saved as the episode the dreams start from.
The dream env stores the autoencoder's conv weights channels-last (``decoder_layout`` times the decode both
ways). Goal: at batch 64 the dream produces frames at least as fast as the real env's single process
(stretch: 5x).
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    Sizes,
    benchmark_parser,
    figure,
    interleaved_rounds,
    machine_info,
    output_dir,
    timed_calls,
    write_results,
)
from envs.dream_vector import DreamVectorEnv
from envs.episodes import save_episode
from envs.memory_maze import ACTION_NAMES, STATE_KEYS, MemoryMazeEnv
from worldmodel.evaluate import frame_psnr
from worldmodel.model import WorldModel, load, world_model_config

NAME = "dream_speed"
SIZES = Sizes(
    full={
        "preset": "cpu",
        "batches": [1, 16, 64],
        "context": 16,
        "dream_frames": 256,
        "real_steps": 200,
        "rounds": 3,
        "drift_steps": 32,
        "drift_batch": 8,
    },
    quick={
        "preset": "tiny",
        "batches": [1, 4],
        "context": 4,
        "dream_frames": 8,
        "real_steps": 20,
        "rounds": 1,
        "drift_steps": 4,
        "drift_batch": 2,
    },
)
"""Full run: the published results. --quick: the tiny preset (4 context frames: what the shared tiny test
model needs), a few frames per batch, one round."""
GOAL_X_REAL, STRETCH_X_REAL = 1.0, 5.0
"""The goal: at the largest batch, imagined frames/s at least the real env's steps/s (stretch: 5 times)."""
NUM_ACTIONS = len(ACTION_NAMES)
"""Memory Maze's discrete actions (random actions are drawn from them)."""
NEVER_TRUNCATE = 10**9
"""max_episode_steps of the timed dream envs: no slot ends (and autoresets) in the middle of a measurement."""
DREAM_WARMUP_STEPS = 2
"""Untimed dream steps before each timed block (allocator, first-call costs)."""
MIN_DREAM_STEPS = 2
"""Timed dream steps per round at the least, however large the batch."""
REFILL_SHARE = 4
"""The refill measurement re-warms one slot in this many (a quarter of the batch, at least one)."""
FLOP_BATCH = 8
"""Batch of the FLOP count (FLOPs per frame barely depend on it)."""
EXTRA_CONTEXT_FRAMES = 8
"""Real frames recorded beyond the context (the episode the dreams start from must be longer than it)."""


# ---------------------------------------------------------------------- the real env


def real_env_round(fast: bool, steps: int, seed: int, record: bool = False):
    """steps/s of the real 9x9 env over `steps` random actions (reset excluded); optionally the episode."""
    env = MemoryMazeEnv(size="9x9", fast=fast)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, NUM_ACTIONS, steps)
    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    reset_s = time.perf_counter() - t0
    frames, states = [obs], {k: [info[k]] for k in STATE_KEYS}
    rewards = [0.0]
    t0 = time.perf_counter()
    for a in actions:
        obs, r, _, _, info = env.step(int(a))
        if record:
            frames.append(obs)
            rewards.append(r)
            for k in STATE_KEYS:
                states[k].append(info[k])
    dt = time.perf_counter() - t0
    env.close()
    episode = None
    if record:
        onehot = np.zeros((steps + 1, NUM_ACTIONS), np.float32)  # action[t] led into frame t; none into frame 0
        onehot[np.arange(1, steps + 1), actions] = 1.0
        episode = {
            "image": np.stack(frames),
            "action": onehot,
            "reward": np.asarray(rewards, np.float32),
            **{k: np.stack(v) for k, v in states.items()},
        }
    return steps / dt, reset_s, episode


# ---------------------------------------------------------------------- the dream


class SplitTimer:
    """Wraps model.backbone.step, model.step and the env step to time the parts of an imagined frame."""

    def __init__(self, model):
        self.model = model
        self.sampling_steps = model.config.diffusion.sampling_steps
        self.calls: list[float] = []
        self.model_s = 0.0
        self._bb_step = model.backbone.step
        self._model_step = model.step

        def bb_step(*a, **k):
            t = time.perf_counter()
            out = self._bb_step(*a, **k)
            self.calls.append(time.perf_counter() - t)
            return out

        def model_step(*a, **k):
            t = time.perf_counter()
            out = self._model_step(*a, **k)
            self.model_s += time.perf_counter() - t
            return out

        model.backbone.step = bb_step
        model.step = model_step

    def reset(self):
        """Forget the times recorded so far."""
        self.calls, self.model_s = [], 0.0

    def split(self, steps: int) -> tuple[float, float]:
        """(denoising seconds, commit seconds) over `steps` model steps (S + 1 backbone calls each)."""
        per = self.sampling_steps + 1
        if len(self.calls) != steps * per:
            raise RuntimeError(f"expected {steps * per} backbone calls ({per} per frame), got {len(self.calls)}")
        calls = np.asarray(self.calls).reshape(steps, per)  # (steps, S + 1)
        return float(calls[:, :-1].sum()), float(calls[:, -1].sum())

    def restore(self):
        """Unwrap the model's methods."""
        del self.model.backbone.step, self.model.step


def dream_round(venv, timer: SplitTimer, steps: int, rng: np.random.Generator) -> dict:
    """Time `steps` steps of every slot of `venv` under random actions, split into the parts of a frame."""
    n = venv.num_envs
    for _ in range(DREAM_WARMUP_STEPS):
        venv.step(rng.integers(0, NUM_ACTIONS, n))
    timer.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        venv.step(rng.integers(0, NUM_ACTIONS, n))
    total = time.perf_counter() - t0
    denoise, commit = timer.split(steps)
    frames = n * steps
    return {
        "frames_per_s": frames / total,
        "ms_per_env_step": 1e3 * total / steps,
        "ms_per_frame": {
            "total": 1e3 * total / frames,
            "denoising_passes": 1e3 * denoise / frames,
            "commit_pass": 1e3 * commit / frames,
            "decode_noise_reward": 1e3 * (timer.model_s - denoise - commit) / frames,
            "env_overhead": 1e3 * (total - timer.model_s) / frames,
        },
    }


def dream_steps(frames: int, batch: int) -> int:
    """Timed steps of a dream round: enough for ``frames`` imagined frames over the batch, MIN_DREAM_STEPS at least."""
    return max(MIN_DREAM_STEPS, math.ceil(frames / batch))


def refill_seconds(venv, k: int) -> float:
    """Seconds to warm k slots on new real contexts and write them into the batch (what autoreset does)."""
    t0 = time.perf_counter()
    mask = np.zeros(venv.num_envs, dtype=bool)
    mask[:k] = True
    venv.reset(options={"reset_mask": mask})
    return time.perf_counter() - t0


def precision_drift(model, episodes: Path, context: int, batch: int, steps: int, seed: int) -> dict:
    """Per-step PSNR between bf16 and fp32 dreams from the same contexts (``context`` real frames), noise and
    actions."""
    actions = np.random.default_rng(seed).integers(0, NUM_ACTIONS, (steps, batch))
    frames = {}
    for prec in ("fp32", "bf16"):
        v = DreamVectorEnv(
            model,
            episodes,
            num_envs=batch,
            context_frames=context,
            max_episode_steps=steps + 1,
            device="cpu",
            precision=prec,
        )
        v.reset(seed=seed)
        frames[prec] = np.stack([v.step(a)[0] for a in actions])  # (steps, N, H, W, 3)
    per_step = frame_psnr(frames["fp32"], frames["bf16"]).mean(1)  # (steps,), identical frames count as the cap
    diff = np.abs(frames["fp32"].astype(np.int16) - frames["bf16"].astype(np.int16))
    return {
        "psnr_bf16_vs_fp32_per_step": per_step.tolist(),
        "psnr_mean": float(per_step.mean()),
        "psnr_last": float(per_step[-1]),
        "max_abs_diff_levels": int(diff.max()),
        "mean_abs_diff_levels": float(diff.mean()),
        "batch": batch,
        "steps": steps,
    }


def decoder_layouts(model, batch: int, reps: int) -> dict:
    """ms per frame of the autoencoder decode at `batch` with the conv weights in the default (NCHW) layout vs
    channels-last (NHWC, what the dream env uses), fp32 and bf16, interleaved; plus their largest frame
    difference in intensity levels."""
    c, h, w = model.config.autoencoder_latent_shape
    z = torch.randn(batch, 1, c, h, w, generator=torch.Generator().manual_seed(0))
    models = {"nchw": copy.deepcopy(model), "nhwc": copy.deepcopy(model)}
    models["nchw"].autoencoder.to(memory_format=torch.contiguous_format)
    models["nhwc"].autoencoder.to(memory_format=torch.channels_last)
    amp = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}

    def timed_decode(lay: str, prec: str) -> float:
        with amp[prec]():
            return timed_calls(lambda: models[lay].decode_latents(z), 1, warmup=1)[0][0]

    with torch.no_grad():
        outs = {lay: m.decode_latents(z) for lay, m in models.items()}
        times = interleaved_rounds(
            {(lay, prec): (lambda r, lay=lay, prec=prec: timed_decode(lay, prec)) for lay in models for prec in amp},
            reps,
        )
    out = {f"{lay}_{prec}_ms_per_frame": 1e3 * statistics.median(ts) / batch for (lay, prec), ts in times.items()}
    out["max_abs_diff_levels_fp32"] = int((outs["nchw"].int() - outs["nhwc"].int()).abs().max())
    out["batch"] = batch
    return out


def gflop_per_frame(model) -> dict:
    """FLOPs of one imagined frame (torch's FLOP counter, batch FLOP_BATCH): backbone passes and decoder."""
    b = FLOP_BATCH
    c, h, w = model.config.autoencoder_latent_shape
    with torch.no_grad():
        state = model.backbone.init_state(b)
        # one backbone pass on a random latent frame, action 0, noise level 0.5 (any input costs the same)
        x, a, t = torch.randn(b, c, h, w), torch.zeros(b, dtype=torch.long), torch.full((b,), 0.5)
        with FlopCounterMode(display=False) as fc:
            model.backbone.step(x, a, t, state)
        per_pass = fc.get_total_flops() / b / 1e9
        with FlopCounterMode(display=False) as fc:
            model.decode_latents(torch.randn(b, 1, c, h, w))
        decode = fc.get_total_flops() / b / 1e9
    passes = model.config.diffusion.sampling_steps + 1
    return {"backbone_pass": per_pass, "backbone_passes": passes, "decode": decode, "total": per_pass * passes + decode}


# ---------------------------------------------------------------------- the benchmark


def run(args) -> dict:
    """The benchmark: interleaved rounds of the real env and every (precision, batch) dream, then the extras."""
    # 1. the model, and a recorded real episode as the dreams' context
    torch.manual_seed(0)
    if args.checkpoint:
        model, source = load(args.checkpoint, device="cpu"), str(args.checkpoint)
    else:
        model, source = WorldModel(world_model_config(args.preset)).eval(), f"untrained {args.preset} preset"
    n_params = sum(p.numel() for p in model.parameters())
    tmp = Path(tempfile.mkdtemp(prefix=f"{NAME}_"))
    _, _, episode = real_env_round(True, args.context + EXTRA_CONTEXT_FRAMES, seed=args.seed, record=True)
    save_episode(tmp / "ep_00000.npz", episode)

    # 2. the decoder's weight layouts, then the interleaved rounds with the frame split timed
    layouts = decoder_layouts(model, batch=max(args.batches), reps=args.rounds)
    timer = SplitTimer(model)
    keys = [(prec, b) for prec in args.precisions for b in args.batches]
    venvs = {
        k: DreamVectorEnv(
            model,
            tmp,
            num_envs=k[1],
            context_frames=args.context,
            max_episode_steps=NEVER_TRUNCATE,
            device="cpu",
            precision=k[0],
        )
        for k in keys
    }
    for (_, b), v in venvs.items():
        v.reset(seed=b)
    rng = np.random.default_rng(0)
    variants = {
        "real_fast": lambda r: real_env_round(True, args.real_steps, seed=args.seed + 1 + r),
        "real_stock": lambda r: real_env_round(False, args.real_steps, seed=args.seed + 1 + r),
        **{k: (lambda r, k=k: dream_round(venvs[k], timer, dream_steps(args.dream_frames, k[1]), rng)) for k in keys},
    }
    rounds = interleaved_rounds(variants, args.rounds, progress=NAME)
    refill = {k: refill_seconds(venvs[k], max(1, k[1] // REFILL_SHARE)) for k in keys}
    timer.restore()
    # 3. how far bf16 dreams drift from fp32 ones
    drift = (
        precision_drift(model, tmp, args.context, batch=args.drift_batch, steps=args.drift_steps, seed=args.seed)
        if {"fp32", "bf16"} <= set(args.precisions)
        else None
    )

    def med(xs):
        return float(statistics.median(xs))

    real_rates = {key: [sps for sps, _, _ in rounds[key]] for key in ("real_fast", "real_stock")}
    real = med(real_rates["real_fast"])
    dream: dict = {prec: {} for prec in args.precisions}
    for prec, b in keys:
        rs = rounds[(prec, b)]
        mid = sorted(rs, key=lambda d: d["frames_per_s"])[len(rs) // 2]  # the median round, kept whole
        dream[prec][str(b)] = {
            **mid,
            "frames_per_s_rounds": [d["frames_per_s"] for d in rs],
            "x_real_env": mid["frames_per_s"] / real,
            "refill": {"slots": max(1, b // REFILL_SHARE), "seconds": refill[(prec, b)]},
        }
    top = str(max(args.batches))
    goal = {
        prec: {
            "batch": int(top),
            "x_real_env": dream[prec][top]["x_real_env"],
            "met_1x": dream[prec][top]["x_real_env"] >= GOAL_X_REAL,
            "met_stretch_5x": dream[prec][top]["x_real_env"] >= STRETCH_X_REAL,
        }
        for prec in args.precisions
    }
    return {
        "benchmark": NAME,
        "what": "imagined frames/s of DreamVectorEnv vs real Memory Maze 9x9 steps/s (1 process)",
        "model": {
            "source": source,
            "preset": args.preset if not args.checkpoint else None,
            "weights": "trained" if args.checkpoint else "freshly initialised (speed does not depend on the weights)",
            "parameters": n_params,
            "sampling_steps": model.config.diffusion.sampling_steps,
            "backbone": {
                k: getattr(model.config.backbone, k) for k in ("dim", "depth", "heads", "patch", "attn", "block_sizes")
            },
            "latent_shape": list(model.config.autoencoder_latent_shape),
            "gflop_per_frame": gflop_per_frame(model),
        },
        "context_frames": args.context,
        "real_env": {
            "steps_per_s": real,
            "steps_per_s_rounds": real_rates["real_fast"],
            "stock_steps_per_s": med(real_rates["real_stock"]),
            "stock_steps_per_s_rounds": real_rates["real_stock"],
            "reset_seconds": med(reset_s for _, reset_s, _ in rounds["real_fast"]),
            "steps_per_round": args.real_steps,
            "env": "envs.memory_maze.MemoryMazeEnv(size='9x9', fast=True); stock = fast=False",
        },
        "dream": dream,
        "goal": goal,
        "bf16_vs_fp32": drift,
        "decoder_layout": layouts,
        "machine": {
            **machine_info("cpu"),
            "rounds": args.rounds,
            "note": "shared 2-core machine: other jobs may run at the same time; medians of interleaved rounds",
        },
    }


def plot(res: dict):
    """Frames/s per batch and precision against the real env (left) and where a frame's time goes (right)."""
    precs = list(res["dream"])
    batches = list(res["dream"][precs[0]])
    fig, (ax1, ax2) = figure(1, 2, figsize=(12, 4.4))
    width = 0.8 / len(precs)  # the precisions' bars share 80% of each batch's slot
    for j, prec in enumerate(precs):
        fps = [res["dream"][prec][b]["frames_per_s"] for b in batches]
        xs = np.arange(len(batches)) + (j - (len(precs) - 1) / 2) * width
        ax1.bar(xs, fps, width, label=f"dream {prec}")
        for x, b, v in zip(xs, batches, fps):
            ax1.text(x, v, f"{v:.0f}\n{res['dream'][prec][b]['x_real_env']:.1f}x", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(np.arange(len(batches)), [f"batch {b}" for b in batches])
    ax1.axhline(res["real_env"]["steps_per_s"], color="tab:red", label="real env, 1 process (fast adapter)")
    ax1.axhline(res["real_env"]["stock_steps_per_s"], color="tab:red", ls="--", label="real env (stock)")
    ax1.set_ylabel("frames / s")
    ax1.set_title(
        f"imagined frames/s: {res['model']['parameters'] / 1e6:.1f}M params, "
        f"{res['model']['sampling_steps']} denoising steps"
    )
    ax1.legend(loc="upper left")
    ax1.margins(y=0.25)  # room for the bar labels
    parts = ["denoising_passes", "commit_pass", "decode_noise_reward", "env_overhead"]
    labels = [f"{prec}\nbatch {b}" for prec in precs for b in batches]
    bottom = np.zeros(len(labels))
    for part in parts:
        vals = np.array([res["dream"][prec][b]["ms_per_frame"][part] for prec in precs for b in batches])
        ax2.bar(labels, vals, bottom=bottom, label=part.replace("_", " "))
        bottom += vals
    ax2.set_ylabel("ms per imagined frame")
    ax2.set_title("where the time goes")
    ax2.tick_params(axis="x", labelsize=8)
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(False)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write its JSON and PNG, print a summary."""
    p = benchmark_parser(NAME, __doc__, SIZES)
    p.add_argument("--checkpoint", type=Path, default=None, help="time a trained model (default: a fresh --preset one)")
    SIZES.add(p, "preset", "model size of the fresh model", choices=["tiny", "cpu", "paper"])
    SIZES.add(p, "batches", "dream batch sizes", type=int, nargs="+")
    SIZES.add(p, "context", "real context frames each dream is warmed on", type=int)
    SIZES.add(p, "dream_frames", "imagined frames per batch size per round", type=int)
    SIZES.add(p, "real_steps", "real env steps per round", type=int)
    SIZES.add(p, "rounds", "interleaved rounds", type=int)
    p.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"], help="dream precisions"
    )
    SIZES.add(p, "drift_steps", "steps of the bf16-vs-fp32 comparison", type=int)
    SIZES.add(p, "drift_batch", "dreams of the bf16-vs-fp32 comparison", type=int)
    p.add_argument("--seed", type=int, default=0, help="seed of the real env runs and the dreams' contexts")
    args = SIZES.fill(p.parse_args(argv))
    out = output_dir(args.out, args.quick, NAME)

    res = run(args)
    write_results(NAME, res, plot(res), out)
    real = res["real_env"]
    print(f"real env {real['steps_per_s']:.1f} steps/s (stock {real['stock_steps_per_s']:.1f})")
    for prec, per_batch in res["dream"].items():
        for b, d in per_batch.items():
            ms = d["ms_per_frame"]
            print(
                f"dream {prec} batch {b:>3}: {d['frames_per_s']:7.1f} frames/s "
                f"({d['x_real_env']:.2f}x real); ms/frame: denoise {ms['denoising_passes']:.2f} "
                f"commit {ms['commit_pass']:.2f} "
                f"decode/noise/reward {ms['decode_noise_reward']:.2f} env {ms['env_overhead']:.2f}"
            )
    if res["bf16_vs_fp32"]:
        print(
            f"bf16 vs fp32 frames: PSNR {res['bf16_vs_fp32']['psnr_mean']:.1f} dB mean over "
            f"{res['bf16_vs_fp32']['steps']} steps"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
