"""Dream fidelity, open loop: the same actions in the real Memory Maze env and in the dream from one context.

    python -m benchmarks.dream_fidelity --checkpoint runs/demo/checkpoint.pt --episodes data/episodes/mm9
    python -m benchmarks.dream_fidelity --quick       # smoke test: a tiny model trained here in seconds

For each of ``--windows`` fresh real episodes (env seeds ``--seed``, ``--seed + 1``, ... by default far from
the seeds the training data was collected with, so the mazes are unseen):

  1. the real env runs the data-collection policy (``--policy``) for ``context + horizon`` frames;
  2. the dream (``envs.dream.DreamVectorEnv``, all windows batched) is warmed on the first ``context`` real
     frames and the actions that led into them (``reset(options={"frames", "actions"})``);
  3. the dream imagines ``horizon`` frames under the actions the real env took next (open loop: the dream
     never sees the real future frames);
  4. per step t: PSNR and SSIM of dream vs real frame t, averaged over windows; beside them two references,
     "copy last context frame" (what a model that has learnt nothing scores) and the autoencoder's
     reconstruction of the real frame (the ceiling the latent space allows); LPIPS when its weights are on
     disk. Rewards: real vs predicted reward events over the horizon.

Writes ``dream_fidelity.json`` (per-step and mean metrics, settings) and ``dream_fidelity.png`` (per-step
curves above strips laid out real | dream | error for the first windows). ``--episodes`` is the folder the
model was trained on: the dream env checks the checkpoint against its data (spaces), and ``--quick`` trains on
it (or on 3 short episodes collected here when not given). ``--quick`` writes to a temporary folder unless
``--out`` is given.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

RESULTS = Path(__file__).resolve().parent / "results"


def real_windows(env_id: str, policy: str, seeds: list[int], frames: int, progress: bool = True):
    """Run the real env for `frames` frames per seed: images (K, T, H, W, 3), actions (K, T), rewards (K, T).

    action[t] led INTO image[t]; action[0] is noop (nothing led into the first frame)."""
    from tqdm import tqdm

    from envs.collect import collect_episode, make_env
    from envs.policies import make_policy

    env = make_env(env_id)
    images, actions, rewards = [], [], []
    for seed in tqdm(seeds, desc="real env", unit="episode", disable=not progress):
        ep = collect_episode(env, make_policy(policy, steps=frames - 1), seed=seed, steps=frames - 1)
        images.append(ep["image"])
        actions.append(ep["action"].argmax(-1))
        rewards.append(ep["reward"])
    env.close()
    return np.stack(images), np.stack(actions).astype(np.int64), np.stack(rewards)


def dream_windows(model, episodes, ctx_frames, ctx_actions, future_actions, seed: int, progress: bool = True):
    """Open-loop dreams for K windows at once: imagined frames (K, Tf, H, W, 3) and rewards (K, Tf)."""
    from tqdm import tqdm

    from envs.dream_vector import DreamVectorEnv

    k, tc = ctx_actions.shape
    tf = future_actions.shape[1]
    venv = DreamVectorEnv(model, episodes, num_envs=k, context_frames=tc, max_episode_steps=tf + 1,
                          device="cpu")
    venv.reset(seed=seed, options={"frames": ctx_frames, "actions": ctx_actions})
    frames, rewards = [], []
    for t in tqdm(range(tf), desc="dream", unit="frame", disable=not progress):
        obs, rew, _, trunc, _ = venv.step(future_actions[:, t])
        assert not trunc.any()
        frames.append(obs)
        rewards.append(rew)
    venv.close()
    return np.stack(frames, 1), np.stack(rewards, 1)


def per_step_metrics(real: np.ndarray, other: np.ndarray) -> dict[str, list[float]]:
    """Per-step PSNR (dB), SSIM (and LPIPS when available) averaged over windows; inputs (K, T, H, W, 3)."""
    import torch

    from worldmodel.autoencoder import frames_to_float
    from worldmodel.metrics import lpips, lpips_available, psnr, ssim

    k, t = real.shape[:2]
    a = frames_to_float(torch.from_numpy(real.reshape(k * t, *real.shape[2:])))
    b = frames_to_float(torch.from_numpy(other.reshape(k * t, *other.shape[2:])))
    p = psnr(a, b).clamp(max=100.0)  # identical frames (inf dB) capped so means stay finite
    out = {"psnr": p.reshape(k, t).mean(0).tolist(), "ssim": ssim(a, b).reshape(k, t).mean(0).tolist()}
    if lpips_available():
        out["lpips"] = lpips(a, b).reshape(k, t).mean(0).tolist()
    return out


def evaluate(model, episodes, args, progress: bool = True) -> tuple[dict, dict]:
    import torch

    from worldmodel.metrics import LPIPS_MISSING_MESSAGE, lpips_available

    tc, tf, k = args.context, args.horizon, args.windows
    seeds = [args.seed + i for i in range(k)]
    t0 = time.perf_counter()
    images, actions, rewards = real_windows(args.env, args.policy, seeds, tc + tf, progress)
    real_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dream, dream_rew = dream_windows(model, episodes, images[:, :tc], actions[:, :tc], actions[:, tc:],
                                     seed=args.seed, progress=progress)
    dream_s = time.perf_counter() - t0
    real = images[:, tc:]                                                   # (K, Tf, H, W, 3)
    copy_last = np.repeat(images[:, tc - 1: tc], tf, axis=1)                # (K, Tf, H, W, 3)
    with torch.no_grad():
        recon = model.decode_latents(model.encode_frames(torch.from_numpy(real))).numpy()
    m_dream = per_step_metrics(real, dream)
    m_copy = per_step_metrics(real, copy_last)
    m_ae = per_step_metrics(real, recon)
    real_r, pred_r = rewards[:, tc:] > 0, dream_rew > 0
    res = {
        "benchmark": "dream_fidelity",
        "what": "open loop: real env and dream under the same actions from the same real context",
        "checkpoint": str(args.checkpoint) if args.checkpoint else "tiny model trained by --quick",
        "episodes": str(episodes), "env": args.env, "policy": args.policy, "env_seeds": seeds,
        "context_frames": tc, "horizon": tf, "windows": k,
        "per_step": {
            "psnr_dream": m_dream["psnr"], "ssim_dream": m_dream["ssim"],
            "psnr_copy_last": m_copy["psnr"], "ssim_copy_last": m_copy["ssim"],
            "psnr_autoencoder": m_ae["psnr"], "ssim_autoencoder": m_ae["ssim"],
        },
        "rewards": {"real_events": int(real_r.sum()), "predicted_events": int(pred_r.sum()),
                    "matched_steps": int((real_r & pred_r).sum())},
        "seconds": {"real_env": real_s, "dream": dream_s},
    }
    if "lpips" in m_dream:
        res["per_step"].update(lpips_dream=m_dream["lpips"], lpips_copy_last=m_copy["lpips"])
    else:
        res["lpips"] = LPIPS_MISSING_MESSAGE + (" (lpips available)" if lpips_available() else "")
    res["mean"] = {key: float(np.mean(v)) for key, v in res["per_step"].items()}
    q = max(1, tf // 4)
    for name, span in (("first_quarter", slice(0, q)), ("last_quarter", slice(-q, None))):
        res[f"mean_{name}"] = {key: float(np.mean(v[span])) for key, v in res["per_step"].items()}
    arrays = {"real": real, "dream": dream}
    return res, arrays


def strips(real: np.ndarray, dream: np.ndarray, windows: int, frames: int) -> np.ndarray:
    """real | dream | error rows for the first `windows` windows at `frames` evenly spaced steps, stacked."""
    from worldmodel.utils import image_strip

    tf = real.shape[1]
    idx = np.unique(np.linspace(0, tf - 1, min(frames, tf)).round().astype(int))
    blocks = [image_strip(real[k, idx], dream[k, idx]) for k in range(min(windows, len(real)))]
    gap = np.full((6, blocks[0].shape[1], 3), 255, np.uint8)
    out = [blocks[0]]
    for b in blocks[1:]:
        out += [gap, b]
    return np.concatenate(out, 0), idx


def plot(res: dict, strip: np.ndarray, idx: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worldmodel.utils import save_figure

    ps = res["per_step"]
    steps = np.arange(1, res["horizon"] + 1)
    h = strip.shape[0] / strip.shape[1] * 12
    fig = plt.figure(figsize=(12, 3.6 + h))
    grid = fig.add_gridspec(2, 2, height_ratios=[3.2, h])
    for col, metric in enumerate(("psnr", "ssim")):
        ax = fig.add_subplot(grid[0, col])
        ax.plot(steps, ps[f"{metric}_dream"], label="dream", color="tab:blue")
        ax.plot(steps, ps[f"{metric}_copy_last"], label="copy last context frame", color="tab:gray", ls="--")
        ax.plot(steps, ps[f"{metric}_autoencoder"], label="autoencoder reconstruction", color="tab:green",
                ls=":")
        ax.set_xlabel("imagined step")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.set_title(f"{metric.upper()} vs real: {res['windows']} windows, "
                     f"{res['context_frames']} context frames")
        ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(strip, interpolation="nearest")
    ax.set_title(f"rows per window: real | dream | error (x4); steps {', '.join(str(i + 1) for i in idx)}",
                 fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def quick_model(episodes: Path | None, workdir: Path):
    """--quick: collect 3 short real episodes (unless given) and train the tiny preset on them."""
    from envs.collect import CollectConfig, collect
    from worldmodel.model import load
    from worldmodel.train import TRAIN_PRESETS, train

    if episodes is None:
        episodes = workdir / "episodes"
        collect(CollectConfig(episodes=3, steps=40, out=str(episodes), seed=0), progress=False)
    train(TRAIN_PRESETS["tiny"], episodes, workdir / "run", device="cpu", progress=False)
    return load(workdir / "run" / "checkpoint.pt", device="cpu"), episodes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dream_fidelity",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None, help="RUN_DIR/checkpoint.pt of a trained model")
    p.add_argument("--episodes", type=Path, default=None, help="the episode folder the model was trained on")
    p.add_argument("--quick", action="store_true", help="smoke test: train a tiny model here, small windows")
    p.add_argument("--env", default="longdream/MemoryMaze-9x9-v0", help="the real env id")
    p.add_argument("--policy", default="explore", help="action policy in the real env (envs.policies)")
    p.add_argument("--context", type=int, default=None, help="real context frames (default 32; --quick 6)")
    p.add_argument("--horizon", type=int, default=None, help="imagined frames (default 32; --quick 6)")
    p.add_argument("--windows", type=int, default=None, help="real episodes / dreams (default 8; --quick 2)")
    p.add_argument("--seed", type=int, default=100_000, help="env seed of the first window (unseen mazes)")
    p.add_argument("--strip-windows", type=int, default=4)
    p.add_argument("--strip-frames", type=int, default=16)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path, PNG beside it (default: benchmarks/results/dream_fidelity.json; "
                        "--quick: a temporary folder)")
    args = p.parse_args(argv)
    args.context = args.context or (6 if args.quick else 32)
    args.horizon = args.horizon or (6 if args.quick else 32)
    args.windows = args.windows or (2 if args.quick else 8)

    from worldmodel.model import load
    from worldmodel.utils import atomic_write_json

    work = Path(tempfile.mkdtemp(prefix="dream_fidelity_"))
    if args.quick and args.checkpoint is None:
        model, episodes = quick_model(args.episodes, work)
    else:
        if args.checkpoint is None or args.episodes is None:
            p.error("--checkpoint and --episodes are required (or use --quick)")
        model, episodes = load(args.checkpoint, device="cpu"), args.episodes
    out = args.out or ((work / "dream_fidelity.json") if args.quick else RESULTS / "dream_fidelity.json")
    res, arrays = evaluate(model, episodes, args)
    strip, idx = strips(arrays["real"], arrays["dream"], args.strip_windows, args.strip_frames)
    atomic_write_json(out, res)
    plot(res, strip, idx, out.with_suffix(".png"))
    m = res["mean"]
    print(f"mean over {args.horizon} steps: PSNR dream {m['psnr_dream']:.2f} dB "
          f"(copy-last {m['psnr_copy_last']:.2f}, autoencoder {m['psnr_autoencoder']:.2f}); "
          f"SSIM dream {m['ssim_dream']:.3f} "
          f"(copy-last {m['ssim_copy_last']:.3f}, autoencoder {m['ssim_autoencoder']:.3f})")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
