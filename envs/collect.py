"""Collect real Memory Maze episodes into a folder of ``.npz`` files (official offline-dataset keys).

    python -m envs.collect --env longdream/MemoryMaze-9x9-ExtraObs-v0 --episodes 40 --steps 500 \\
        --out data/episodes/mm9 --workers 2 --seed 0 --policy explore

- Episode ``i`` is ``DIR/ep_{i:05d}.npz``, collected with env seed ``S+i`` (the policy's seed is derived from
  it), so the data does not depend on ``--workers``. ``DIR/manifest.json`` records settings and versions.
- Writes are atomic (``.ep_00003.npz.<pid>.tmp`` then rename). Re-running the same command resumes: finished
  episodes are skipped, stale temp files of dead runs are removed, and no partial file ever has a final name.
  Re-running with different settings (env, seed, policy, steps, ...) into the same folder is refused.
- ``--workers W`` runs W processes (spawned; each keeps one env). ``--no-fast`` uses stock dm_control code.

The episode layout and alignment are described in :mod:`envs.episodes`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = ["CollectConfig", "collect", "collect_episode", "episode_path", "main", "make_env"]

MANIFEST = "manifest.json"
FORMAT = "longdream-episodes/1 (Memory Maze offline-dataset keys; action[t] led into image[t], action[0]=0)"
_SETTINGS = ("env", "seed", "policy", "steps", "noise", "revisit_steps", "fast")


@dataclass(frozen=True)
class CollectConfig:
    """One collection run (the command-line options)."""

    env: str = "longdream/MemoryMaze-9x9-ExtraObs-v0"
    episodes: int = 24
    steps: int | None = None  # None -> the task's full episode length
    out: str = "data/episodes/mm9"
    workers: int = 1
    seed: int = 0
    policy: str = "explore"
    noise: float = 0.1
    revisit_steps: int | None = None  # revisit: outward steps per cycle (None -> steps // 2)
    fast: bool = True


def episode_path(out, index: int) -> Path:
    return Path(out) / f"ep_{index:05d}.npz"


def make_env(env_id: str, fast: bool = True):
    """``gymnasium.make(env_id)`` for a ``longdream/MemoryMaze-*`` id (registers the ids first)."""
    import gymnasium

    import envs  # noqa: F401  (registers the ids)

    if not env_id.startswith("longdream/MemoryMaze-"):
        raise ValueError(f"--env {env_id!r}: expected a longdream/MemoryMaze-* id, e.g. "
                         f"longdream/MemoryMaze-9x9-ExtraObs-v0 (see envs.MEMORY_MAZE_IDS)")
    try:
        return gymnasium.make(env_id, fast=fast)
    except gymnasium.error.Error as e:
        raise ValueError(f"--env {env_id!r}: {e}. Known ids: {', '.join(envs.MEMORY_MAZE_IDS)}") from e


def _max_steps(env_id: str) -> int:
    import gymnasium

    import envs  # noqa: F401

    try:
        spec = gymnasium.spec(env_id)
    except gymnasium.error.Error as e:
        raise ValueError(f"--env {env_id!r}: {e}. Known ids: {', '.join(envs.MEMORY_MAZE_IDS)}") from e
    return int(spec.max_episode_steps)


def collect_episode(env, policy, seed: int, steps: int) -> dict[str, np.ndarray]:
    """Run one episode of ``steps`` actions from ``env.reset(seed=seed)``; returns the episode arrays.

    The policy's random generator is seeded from ``seed`` too (a separate stream from the env's).
    """
    from envs.memory_maze import STATE_KEYS

    obs, info = env.reset(seed=int(seed))
    policy.reset(info, np.random.default_rng([int(seed), 1]))
    n_actions = int(env.action_space.n)
    frames = [env.unwrapped.render()]
    actions = np.zeros((steps + 1, n_actions), np.float32)  # action[0] = 0: nothing led into the first frame
    rewards = np.zeros(steps + 1, np.float32)
    phases = np.zeros(steps + 1, np.int8)
    states = {k: [info[k]] for k in STATE_KEYS}
    phases[0] = getattr(policy, "phase", 0)
    for t in range(1, steps + 1):
        a = int(policy.act(info))
        phases[t] = getattr(policy, "phase", 0)  # the phase the action was chosen in
        obs, reward, terminated, truncated, info = env.step(a)
        actions[t, a] = 1.0
        rewards[t] = reward
        frames.append(env.unwrapped.render())
        for k in STATE_KEYS:
            states[k].append(info[k])
        if (terminated or truncated) and t < steps:
            raise RuntimeError(f"episode ended after {t} of {steps} steps (the task's limit is lower)")
    data = {"image": np.stack(frames), "action": actions, "reward": rewards}
    data.update({k: np.stack(v) for k, v in states.items()})
    if getattr(policy, "name", "") == "revisit":
        data["phase"] = phases
    return data


# --- one process's work -----------------------------------------------------------------------------------
_WORKER: dict = {}


def _worker_episode(cfg: CollectConfig, steps: int, index: int) -> tuple[int, int, float, float]:
    """Collect and save episode ``index`` with this process's env; returns (index, steps, secs, return)."""
    from envs.episodes import save_episode
    from envs.policies import make_policy

    key = (cfg.env, cfg.fast)
    if _WORKER.get("key") != key:
        if "env" in _WORKER:
            _WORKER["env"].close()
        _WORKER["env"] = make_env(cfg.env, fast=cfg.fast)
        _WORKER["key"] = key
    env = _WORKER["env"]
    policy = make_policy(cfg.policy, steps=steps, noise=cfg.noise, revisit_steps=cfg.revisit_steps)
    t0 = time.perf_counter()
    data = collect_episode(env, policy, cfg.seed + index, steps)
    save_episode(episode_path(cfg.out, index), data)
    return index, steps, time.perf_counter() - t0, float(data["reward"].sum())


def _close_worker_env():
    if "env" in _WORKER:
        _WORKER.pop("env").close()
        _WORKER.pop("key", None)


# --- bookkeeping ------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("longdream", "memory-maze", "dm-control", "mujoco", "labmaze", "numpy", "gymnasium"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` files left by collections that are no longer running."""
    removed = []
    for tmp in out.glob(".*.tmp"):
        parts = tmp.name.rsplit(".", 2)  # ['.ep_00003.npz', '<pid>', 'tmp']
        owner = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if owner is not None and owner != os.getpid() and _pid_alive(owner):
            continue  # a live collection owns it
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _check_manifest(out: Path, settings: dict) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable manifest ({e}); move it away or use a new --out") from e
    diff = {k: (old.get(k), settings[k]) for k in _SETTINGS if old.get(k) != settings[k]}
    if diff:
        listing = ", ".join(f"{k}: folder has {a!r}, command has {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{out} holds a different collection ({listing}); use a new --out to collect these "
                         f"settings, or repeat the original command to resume")
    return old


def _done(out: Path, index: int) -> bool:
    """An episode counts as done when its final file exists and its header checks out."""
    from envs.episodes import EpisodeError, episode_length

    path = episode_path(out, index)
    if not path.is_file():
        return False
    try:
        episode_length(path)
    except EpisodeError as e:
        print(f"warning: re-collecting {path.name}: {e.problem}", file=sys.stderr)
        path.unlink()
        return False
    return True


def collect(cfg: CollectConfig, progress: bool = True) -> dict:
    """Collect ``cfg.episodes`` episodes into ``cfg.out`` (resuming); returns a summary dict."""
    from tqdm import tqdm

    from envs.policies import POLICIES

    if cfg.policy not in POLICIES:
        raise ValueError(f"--policy {cfg.policy!r}: expected one of {', '.join(POLICIES)}")
    if cfg.episodes < 1:
        raise ValueError(f"--episodes {cfg.episodes}: expected >= 1")
    if cfg.workers < 1:
        raise ValueError(f"--workers {cfg.workers}: expected >= 1")
    limit = _max_steps(cfg.env)
    steps = limit if cfg.steps is None else int(cfg.steps)
    if not 1 <= steps <= limit:
        raise ValueError(f"--steps {steps}: expected 1..{limit} (the time limit of {cfg.env})")

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(cfg), "steps": steps}
    old = _check_manifest(out, settings)
    manifest = {
        "format": FORMAT,
        **{k: settings[k] for k in _SETTINGS},
        "episodes": max(cfg.episodes, (old or {}).get("episodes", 0)),
        "episode_seed": "seed + index",
        "files": "ep_{index:05d}.npz",
        "versions": _versions(),
        "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
    }
    from worldmodel.utils import atomic_write_json

    atomic_write_json(out / MANIFEST, manifest)
    remove_stale_temp_files(out)

    todo = [i for i in range(cfg.episodes) if not _done(out, i)]
    summary = {"out": str(out), "requested": cfg.episodes, "skipped": cfg.episodes - len(todo),
               "collected": 0, "steps": 0, "seconds": 0.0, "return_mean": None}
    if not todo:
        return summary
    bar = tqdm(total=len(todo), unit="ep", desc=f"collect {cfg.env.split('/')[-1]}", disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    returns = []

    def finished(result):
        _, n, _, ret = result
        summary["collected"] += 1
        summary["steps"] += n
        returns.append(ret)
        rate = summary["steps"] / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{rate:.0f} steps/s, return {np.mean(returns):.2f}")
        bar.update(1)

    workers = min(cfg.workers, len(todo))
    try:
        if workers == 1:
            try:
                for i in todo:
                    finished(_worker_episode(cfg, steps, i))
            finally:
                _close_worker_env()
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                pending = {pool.submit(_worker_episode, cfg, steps, i) for i in todo}
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            finished(fut.result())
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    summary["seconds"] = time.perf_counter() - t0
    summary["return_mean"] = float(np.mean(returns)) if returns else None
    return summary


def _parser() -> argparse.ArgumentParser:
    d = CollectConfig()
    p = argparse.ArgumentParser(
        prog="python -m envs.collect",
        description="Collect real Memory Maze episodes (one .npz per episode, official offline-dataset keys) "
                    "with N worker processes. Re-running the same command resumes.",
    )
    p.add_argument("--env", default=d.env,
                   help="Gymnasium id, longdream/MemoryMaze-{9x9,11x11,13x13,15x15}[-ExtraObs|-Vis|-Top]-v0 "
                        f"(default: {d.env})")
    p.add_argument("--episodes", type=int, default=d.episodes,
                   help=f"number of episodes, indices 0..N-1 (default: {d.episodes})")
    p.add_argument("--steps", type=int, default=None,
                   help="actions per episode (default: the task's full length, 1000 for 9x9)")
    p.add_argument("--out", default=d.out, help=f"output folder (default: {d.out})")
    p.add_argument("--workers", type=int, default=d.workers, help=f"worker processes (default: {d.workers})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"episode i uses env seed SEED+i (default: {d.seed})")
    p.add_argument("--policy", default=d.policy, choices=["explore", "random", "revisit"],
                   help="explore: BFS walks to random cells with action noise; random; "
                        f"revisit: walk out, then retrace the path back (default: {d.policy})")
    p.add_argument("--noise", type=float, default=d.noise,
                   help=f"probability of a random action, explore/revisit (default: {d.noise})")
    p.add_argument("--revisit-steps", type=int, default=None,
                   help="revisit: outward steps before retracing (default: half of --steps)")
    p.add_argument("--no-fast", dest="fast", action="store_false",
                   help="use stock dm_control code (default: the exact vectorised activation check and "
                        "camera reuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = CollectConfig(env=args.env, episodes=args.episodes, steps=args.steps, out=args.out,
                        workers=args.workers, seed=args.seed, policy=args.policy, noise=args.noise,
                        revisit_steps=args.revisit_steps, fast=args.fast)
    try:
        summary = collect(cfg, progress=not args.quiet)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rate = summary["steps"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"{summary['out']}: collected {summary['collected']}, skipped {summary['skipped']} already done "
          f"({summary['steps']} steps in {summary['seconds']:.1f} s, {rate:.0f} steps/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
