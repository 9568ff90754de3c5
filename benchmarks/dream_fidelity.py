"""Dream fidelity, open loop: the same actions in the real env and in the dream from one context (any world).

    python -m benchmarks.dream_fidelity --checkpoint runs/demo/checkpoint.pt --episodes data/episodes/mm9
    python -m benchmarks.dream_fidelity --checkpoint runs/crafter/checkpoint.pt --episodes data/episodes/crafter
    python -m benchmarks.dream_fidelity --quick --checkpoint RUN/checkpoint.pt --episodes DIR --out DIR
    python -m benchmarks.dream_fidelity --quick   # no checkpoint: trains a tiny model here first (a minute)

The real env is the one the checkpoint stands in for (its ``env_id``, e.g. ``longdream/Crafter-v0`` for a model
trained on Crafter episodes; ``--env`` overrides it, with the same number of actions). For each of ``--windows``
fresh real episodes (env seeds ``--seed``, ``--seed + 1``, ... by default far from the seeds the training data
was collected with, so the mazes or Crafter maps are unseen):

  1. the real env runs the data-collection policy (``--policy``; default: Memory Maze's ``explore`` where it fits
     the env, else ``random_repeat``, Crafter's: ``envs.policies``) for ``context + horizon`` frames; an
     episode that ends sooner (a Crafter player who dies) is replaced by the next seed's, and the results list it;
  2. the dream (``envs.dream_vector.DreamVectorEnv``, all windows batched) is warmed on the first ``context``
     real frames and the actions that led into them (``reset(options={"frames", "actions"})``);
  3. the dream imagines ``horizon`` frames under the actions the real env took next (open loop: the dream
     never sees the real future frames);
  4. per step t, scored by ``worldmodel.evaluate.compare_open_loop`` (the evaluation training uses, with its
     rule for identical frames): PSNR and SSIM of dream vs real frame t, averaged over windows, beside
     "copy last context frame" (what a model that has learnt nothing scores) and the autoencoder's
     reconstruction of the real frame (the ceiling the latent space allows); LPIPS when its weights are on
     disk. Rewards: real vs predicted reward events over the horizon (``event_precision_recall``).

Writes ``NAME.json`` (per-step and mean metrics, settings, the world) and ``NAME.png`` (per-step curves above
strips laid out real | dream | error for the first windows) into ``--out`` (default benchmarks/results/; with
``--quick`` a temporary folder). NAME (``--name``) is per world, so one world's run never replaces another's:
``dream_fidelity`` for Memory Maze, ``dream_fidelity_crafter`` for Crafter (``envs.worlds.result_name``).
``--episodes`` is the folder the model was trained on: the dream env checks the checkpoint against its data
(spaces), and ``--quick`` without a checkpoint trains on it (or on 3 short episodes of ``--env``, default Memory
Maze, collected here when not given). ``--quick`` also shrinks the run to ``QUICK`` windows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from envs.collect import CollectConfig, collect, collect_episode, env_policy, make_env
from envs.dream_vector import DreamVectorEnv
from envs.policies import POLICIES
from envs.worlds import env_world, result_name, world_label
from worldmodel.evaluate import compare_open_loop, event_precision_recall
from worldmodel.metrics import LPIPS_MISSING_MESSAGE, lpips_available
from worldmodel.model import WorldModel, load
from worldmodel.train import TRAIN_PRESETS, train
from worldmodel.utils import atomic_write_json, image_strip, save_figure

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "dream_fidelity"
"""The benchmark's name; its results are named per world (``result_name``: ``dream_fidelity_crafter``)."""
DEFAULT_POLICIES = ("explore", "random_repeat")
"""Without ``--policy``: the first of these that fits the real env (explore: Memory Maze's; random_repeat: any
Discrete env, Crafter's collection policy)."""
SEED_TRIES = 10
"""Seeds tried per window at most, when episodes end before the window does (a Crafter player dies)."""

FULL = {"context": 32, "horizon": 32, "windows": 8}
"""Default window settings: 32 imagined frames after 32 real ones, 8 unseen mazes."""
QUICK = {"context": 6, "horizon": 6, "windows": 2}
"""--quick window settings: enough frames for any model of ours to warm up (the tiny test model needs 4)."""
QUICK_EPISODES, QUICK_STEPS = 3, 40
"""--quick without --episodes and --checkpoint: the real episodes collected here to train a tiny model on."""
FIRST_UNSEEN_SEED = 100_000
"""Env seed of the first window: far above the seeds training data is collected with (0, 1, ...)."""


def fitting_policy(env, env_id: str, name: str | None, steps: int):
    """Policy ``name`` for ``env``'s actions (``envs.collect.env_policy``: a ValueError when it does not fit), or
    with ``name`` None the first of DEFAULT_POLICIES that fits."""
    if name is not None:
        return env_policy(env, env_id, name, steps)
    refused = []
    for candidate in DEFAULT_POLICIES:
        try:
            return env_policy(env, env_id, candidate, steps)
        except ValueError as e:
            refused.append(str(e))
    raise ValueError(f"--env {env_id}: none of the default policies fits ({'; '.join(refused)}); give --policy")


def real_windows(
    env_id: str,
    policy: str | None,
    first_seed: int,
    windows: int,
    frames: int,
    num_actions: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the real env for `frames` frames from `windows` seeds (`first_seed`, +1, ...; a seed whose episode ends
    sooner is passed over, at most SEED_TRIES per window). Returns {"image": (K, T, H, W, 3) uint8, "action": (K, T)
    int64, "reward": (K, T), "seeds": used, "ended_early": passed over, "policy": its name}.

    action[t] led INTO image[t]; action[0] is noop (nothing led into the first frame). `num_actions`: the model's;
    a real env with another number is a ValueError."""
    env = make_env(env_id)
    images, actions, rewards, seeds, early = [], [], [], [], []
    try:
        name = fitting_policy(env, env_id, policy, frames - 1).name
        if num_actions is not None and env.action_space.n != num_actions:
            raise ValueError(
                f"--env {env_id}: {env.action_space.n} actions, but the checkpoint's model acts in {num_actions}: "
                "leave --env out (the checkpoint's env) or give an env of the same world"
            )
        with tqdm(total=windows, desc="real env", unit="episode", disable=not progress) as bar:
            for seed in range(first_seed, first_seed + SEED_TRIES * windows):
                if len(seeds) == windows:
                    break
                ep = collect_episode(env, env_policy(env, env_id, name, frames - 1), seed=seed, steps=frames - 1)
                if len(ep["image"]) < frames:  # the episode ended (terminated) before the window did
                    early.append(seed)
                    continue
                images.append(ep["image"])
                actions.append(ep["action"].argmax(-1))
                rewards.append(ep["reward"])
                seeds.append(seed)
                bar.update()
    finally:
        env.close()
    if len(seeds) < windows:
        raise ValueError(
            f"--env {env_id}: only {len(seeds)} of {len(seeds) + len(early)} episodes (seeds {first_seed}.."
            f"{first_seed + len(seeds) + len(early) - 1}) lasted {frames} frames under --policy {name}, "
            f"{windows} needed: use a shorter --context/--horizon"
        )
    return {
        "image": np.stack(images),
        "action": np.stack(actions).astype(np.int64),
        "reward": np.stack(rewards),
        "seeds": seeds,
        "ended_early": early,
        "policy": name,
    }


def dream_windows(
    model: WorldModel,
    episodes: Path,
    ctx_frames: np.ndarray,
    ctx_actions: np.ndarray,
    future_actions: np.ndarray,
    seed: int,
    progress: bool = True,
):
    """Open-loop dreams for K windows at once: imagined frames (K, Tf, H, W, 3) and rewards (K, Tf)."""
    k, tc = ctx_actions.shape
    tf = future_actions.shape[1]
    venv = DreamVectorEnv(model, episodes, num_envs=k, context_frames=tc, max_episode_steps=tf + 1, device="cpu")
    try:
        venv.reset(seed=seed, options={"frames": ctx_frames, "actions": ctx_actions})
        frames, rewards = [], []
        for t in tqdm(range(tf), desc="dream", unit="frame", disable=not progress):
            obs, rew, _, trunc, _ = venv.step(future_actions[:, t])
            if trunc.any():  # max_episode_steps is tf + 1: an autoreset would replace the dream mid-window
                raise RuntimeError(f"dream truncated at imagined step {t + 1} of {tf}")
            frames.append(obs)
            rewards.append(rew)
    finally:
        venv.close()
    return np.stack(frames, 1), np.stack(rewards, 1)


def run(model: WorldModel, episodes: Path, args: argparse.Namespace, progress: bool = True) -> tuple[dict, dict]:
    """The benchmark: real windows, dreams from their contexts, scores. Returns (results, {"real", "dream"}).

    The real env is ``args.env``, or the checkpoint's (``model.config.env_id``) when None."""
    tc, tf, k = args.context, args.horizon, args.windows
    env_id = args.env or model.config.env_id
    # 1. the real env under the collection policy
    t0 = time.perf_counter()
    win = real_windows(env_id, args.policy, args.seed, k, tc + tf, model.config.num_actions, progress)
    images, actions, rewards = win["image"], win["action"], win["reward"]
    real_s = time.perf_counter() - t0
    # 2-3. the dream from the first tc real frames, under the real env's next actions
    t0 = time.perf_counter()
    dream, dream_rew = dream_windows(
        model, episodes, images[:, :tc], actions[:, :tc], actions[:, tc:], seed=args.seed, progress=progress
    )
    dream_s = time.perf_counter() - t0
    # 4. per-step scores of the dream, copy-last and the autoencoder against the real frames
    real = images[:, tc:]  # (K, Tf, H, W, 3)
    with_lpips = lpips_available()
    per_step = compare_open_loop(model, images[:, :tc], real, dream, with_lpips=with_lpips)
    ev = event_precision_recall(dream_rew > 0, rewards[:, tc:] > 0, prefix="")
    res = {
        "benchmark": NAME,
        "what": "open loop: real env and dream under the same actions from the same real context",
        "checkpoint": str(args.checkpoint) if args.checkpoint else "tiny model trained by --quick",
        "episodes": str(episodes),
        "env": env_id,
        "world": world_label(env_world(env_id)),
        "policy": win["policy"],
        "env_seeds": win["seeds"],
        "env_seeds_ended_early": win["ended_early"],
        "context_frames": tc,
        "horizon": tf,
        "windows": k,
        "quick": bool(args.quick),
        "per_step": per_step,
        "rewards": {
            "real_events": ev["true_positives"] + ev["false_negatives"],
            "predicted_events": ev["true_positives"] + ev["false_positives"],
            "matched_steps": ev["true_positives"],
            "precision": ev["precision"],
            "recall": ev["recall"],
        },
        "seconds": {"real_env": real_s, "dream": dream_s},
    }
    if not with_lpips:
        res["lpips"] = LPIPS_MISSING_MESSAGE
    res["mean"] = {key: float(np.mean(v)) for key, v in per_step.items()}
    q = max(1, tf // 4)
    for name, span in (("first_quarter", slice(0, q)), ("last_quarter", slice(-q, None))):
        res[f"mean_{name}"] = {key: float(np.mean(v[span])) for key, v in per_step.items()}
    return res, {"real": real, "dream": dream}


def strips(real: np.ndarray, dream: np.ndarray, windows: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """real | dream | error rows for the first `windows` windows at `frames` evenly spaced steps, stacked;
    returns (image, the steps shown)."""
    tf = real.shape[1]
    idx = np.unique(np.linspace(0, tf - 1, min(frames, tf)).round().astype(int))
    blocks = [image_strip(real[k, idx], dream[k, idx]) for k in range(min(windows, len(real)))]
    gap = np.full((6, blocks[0].shape[1], 3), 255, np.uint8)
    out = [blocks[0]]
    for b in blocks[1:]:
        out += [gap, b]
    return np.concatenate(out, 0), idx


def plot(res: dict, strip: np.ndarray, idx: np.ndarray, path: Path) -> None:
    """Per-step PSNR and SSIM curves (dream, copy-last, autoencoder) above the strips, saved as PNG at `path`."""
    ps = res["per_step"]
    steps = np.arange(1, res["horizon"] + 1)
    h = strip.shape[0] / strip.shape[1] * 12
    fig = Figure(figsize=(12, 3.6 + h))
    grid = fig.add_gridspec(2, 2, height_ratios=[3.2, h])
    for col, metric in enumerate(("psnr", "ssim")):
        ax = fig.add_subplot(grid[0, col])
        ax.plot(steps, ps[f"{metric}_dream"], label="dream", color="tab:blue")
        ax.plot(steps, ps[f"{metric}_copy_last"], label="copy last context frame", color="tab:gray", ls="--")
        ax.plot(steps, ps[f"{metric}_autoencoder"], label="autoencoder reconstruction", color="tab:green", ls=":")
        ax.set_xlabel("imagined step")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.set_title(
            f"{res['world']}, {metric.upper()} vs real: {res['windows']} windows, {res['context_frames']} context "
            "frames"
        )
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(strip, interpolation="nearest")
    ax.set_title(f"rows per window: real | dream | error (x4); steps {', '.join(str(i + 1) for i in idx)}", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def quick_model(
    episodes: Path | None, workdir: Path, env_id: str | None = None, policy: str | None = None
) -> tuple[WorldModel, Path]:
    """--quick without a checkpoint: collect a few short real episodes of ``env_id`` (default: collection's, Memory
    Maze) under ``policy`` (default: the first of DEFAULT_POLICIES that fits), unless given; train the tiny preset."""
    if episodes is None:
        episodes = workdir / "episodes"
        env_id = env_id or CollectConfig.env
        env = make_env(env_id)
        try:
            policy = fitting_policy(env, env_id, policy, QUICK_STEPS).name
        finally:
            env.close()
        cfg = CollectConfig(env=env_id, episodes=QUICK_EPISODES, steps=QUICK_STEPS, out=str(episodes), policy=policy)
        collect(cfg, progress=False)
    train(TRAIN_PRESETS["tiny"], episodes, workdir / "run", device="cpu", progress=False)
    return load(workdir / "run" / "checkpoint.pt", device="cpu"), episodes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (window settings default to FULL, or QUICK with --quick)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.dream_fidelity",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="RUN_DIR/checkpoint.pt of a trained model")
    p.add_argument("--episodes", type=Path, default=None, help="the episode folder the model was trained on")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['windows']} windows of {QUICK['context']} + {QUICK['horizon']} frames "
        "(and a tiny model trained here when no --checkpoint is given)",
    )
    p.add_argument(
        "--env",
        default=None,
        help="the real env id (default: the one the checkpoint stands in for, e.g. longdream/Crafter-v0)",
    )
    p.add_argument(
        "--policy",
        default=None,
        choices=POLICIES,
        help=f"action policy in the real env (envs.policies; default: the first of {', '.join(DEFAULT_POLICIES)} "
        "that fits the env: explore in Memory Maze, random_repeat in Crafter)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=None,
        help=f"real context frames (default {FULL['context']}; --quick {QUICK['context']})",
    )
    p.add_argument(
        "--horizon",
        type=int,
        default=None,
        help=f"imagined frames (default {FULL['horizon']}; --quick {QUICK['horizon']})",
    )
    p.add_argument(
        "--windows",
        type=int,
        default=None,
        help=f"real episodes / dreams (default {FULL['windows']}; --quick {QUICK['windows']})",
    )
    p.add_argument(
        "--seed", type=int, default=FIRST_UNSEEN_SEED, help="env seed of the first window (unseen mazes, Crafter maps)"
    )
    p.add_argument("--strip-windows", type=int, default=4, help="windows shown in the PNG's strips")
    p.add_argument("--strip-frames", type=int, default=16, help="imagined steps shown per strip")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for NAME.json and .png (default: benchmarks/results; --quick: a temporary folder)",
    )
    p.add_argument(
        "--name",
        default=None,
        help=f"file-name stem of the results (default: per world, {NAME} for Memory Maze, {NAME}_crafter for Crafter)",
    )
    args = p.parse_args(argv)
    if args.name is not None and (not args.name or "/" in args.name or args.name.endswith(".json")):
        p.error(f"--name {args.name!r}: expected a plain file-name stem (e.g. {NAME}_crafter)")
    sizes = QUICK if args.quick else FULL
    for key in ("context", "horizon", "windows"):
        if getattr(args, key) is None:
            setattr(args, key, sizes[key])
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.checkpoint is not None and args.episodes is None:
        p.error("--checkpoint needs --episodes (the folder the model was trained on)")
    if args.checkpoint is None and not args.quick:
        p.error("--checkpoint and --episodes are required (or use --quick)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON and PNG."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix=f"{NAME}_")) if args.quick else None
    try:
        if args.checkpoint is None:
            model, episodes = quick_model(args.episodes, work, args.env, args.policy)
        else:
            model, episodes = load(args.checkpoint, device="cpu"), args.episodes
        out_dir = args.out or (work if args.quick else RESULTS)
        out_dir.mkdir(parents=True, exist_ok=True)
        res, arrays = run(model, episodes, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.name or result_name(NAME, env_world(res["env"]))
    res["name"] = name
    strip, idx = strips(arrays["real"], arrays["dream"], args.strip_windows, args.strip_frames)
    out = out_dir / f"{name}.json"
    atomic_write_json(out, res)
    plot(res, strip, idx, out.with_suffix(".png"))
    m = res["mean"]
    print(
        f"{res['world']}, mean over {args.horizon} steps: PSNR dream {m['psnr_dream']:.2f} dB "
        f"(copy-last {m['psnr_copy_last']:.2f}, autoencoder {m['psnr_autoencoder']:.2f}); "
        f"SSIM dream {m['ssim_dream']:.3f} "
        f"(copy-last {m['ssim_copy_last']:.3f}, autoencoder {m['ssim_autoencoder']:.3f})"
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
