"""Collect real episodes (Memory Maze, Crafter) into a folder of ``.npz`` files (official offline-dataset keys).

    python -m envs.collect --env longdream/MemoryMaze-9x9-ExtraObs-v0 --episodes 40 --steps 500 \\
        --out data/episodes/mm9 --workers 2 --seed 0 --policy explore
    python -m envs.collect --env longdream/Crafter-v0 --episodes 100 --steps 500 \\
        --out data/episodes/crafter --workers 2 --seed 0 --policy random_repeat

- Episode ``i`` is ``DIR/ep_{i:05d}.npz``, collected with env seed ``S+i`` (the policy's seed is derived from
  it), so the data does not depend on ``--workers``. ``DIR/manifest.json`` records settings and versions.
- Every argument is checked before anything is written, so a refused command leaves no trace and the corrected
  one is accepted. Errors are one line on stderr with exit code 2.
- One collection per folder at a time (``DIR/.lock``, see :class:`envs.fileio.RunLock`; a second one is refused
  naming the first). Writes are atomic (``.ep_00003.npz.<random>.tmp`` then rename). Re-running the same
  command resumes: finished episodes are skipped, temp files of killed runs are removed, and no partial file
  ever has a final name. Re-running with different settings (env, seed, policy, steps, ...) into the same
  folder is refused.
- ``--num-shards K --shard-index i`` collects only episodes ``i, i+K, i+2K, ...`` (a disjoint, deterministic
  share; episode j keeps seed S+j and file ``ep_{j:05d}.npz``), so K jobs of a cluster scheduler (a Slurm array)
  can collect one data set into K folders; ``--merge SHARD_DIR ... --out DIR`` copies their episode files into one
  folder and writes its manifest: the folder then equals the unsharded collection, file for file (and the
  unsharded command run on it resumes it).
- ``--workers W`` runs W processes (spawned; each keeps one env). Workers die with the collection: on Linux the
  kernel kills them when it dies (``PR_SET_PDEATHSIG``), elsewhere a watchdog thread notices within a second.
  Ctrl-C (SIGINT) or SIGTERM stops the collection with a one-line message (exit code 130 / 143); finished
  episodes are kept and the same command resumes. ``--no-fast`` uses stock dm_control code.

``--env`` takes a registered real env id (``envs.REAL_ENV_IDS``: ``longdream/MemoryMaze-*``, ``longdream/Crafter-v0``
...) or Gymnasium's ``module:id`` form of any env (the module is imported first; the tests collect from a fake env
so). Besides ``image``, ``action`` and ``reward``, each frame's state is recorded: the arrays of the env's
``episode_state(info)`` when it has one (Crafter: ``player_pos``, ``inventory``, ``achievements``), else the
format's Memory Maze state keys read from ``info``. The policy must fit the env: the Memory Maze policies read
its map from ``info`` (refused, before anything is written, for an env whose ``info_keys`` lack it); ``random``
and ``random_repeat`` act in any ``Discrete`` action space. An episode ends after ``--steps`` actions, or earlier
when the env terminates (a Crafter player dies): its file is then shorter. The episode layout and alignment are
described in :mod:`envs.episodes`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402  (registers the Memory Maze ids)
from envs.episodes import EpisodeError, episode_length, save_episode  # noqa: E402
from envs.fileio import RunLock, RunLockedError, atomic_write, atomic_write_json, clean_stale_temps  # noqa: E402
from envs.memory_maze import STATE_KEYS, RenderingError  # noqa: E402
from envs.policies import PHASES, POLICIES, make_policy  # noqa: E402

__all__ = [
    "CollectArgs",
    "CollectConfig",
    "Stopped",
    "check_config",
    "collect",
    "collect_episode",
    "episode_path",
    "env_policy",
    "main",
    "make_env",
    "merge_shards",
    "shard_indices",
]

MANIFEST = "manifest.json"
FORMAT = "longdream-episodes/1 (Memory Maze offline-dataset keys; action[t] led into image[t], action[0]=0)"
_SETTINGS = ("env", "seed", "policy", "steps", "noise", "revisit_steps", "fast")
MAX_SEED = 2**32 - 1  # episode seeds seed + i seed numpy's RandomState (the maze generator), which takes 32 bits
WATCHDOG_SECONDS = 0.5  # how often a worker checks that its parent is still alive (where prctl is missing)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>: deliver a signal to this process when its parent thread dies
EXIT_USAGE = 2  # a refused command (bad argument, folder in use or not writable), like argparse's
_EXIT_SIGNAL_BASE = 128  # the shell's convention: a run stopped by signal N exits with 128 + N (130, 143)


@dataclass(frozen=True)
class CollectConfig:
    """One collection run: what to collect and where (the settings a folder's manifest records)."""

    env: str = "longdream/MemoryMaze-9x9-ExtraObs-v0"
    """Gymnasium id, longdream/MemoryMaze-{9x9,11x11,13x13,15x15}[-ExtraObs|-Vis|-Top|-ExtraObs-Vis|-ExtraObs-Top]-v0,
    longdream/Crafter-v0 or longdream/CrafterNoReward-v0 (or module:id of any env)."""
    episodes: int = 24
    """Number of episodes, indices 0..N-1 (re-running with a larger N adds episodes)."""
    steps: int | None = None
    """Actions per episode (None: the task's full length, 1000 for 9x9)."""
    out: str = "data/episodes/mm9"
    """Output folder (created if missing)."""
    workers: int = 1
    """Worker processes, each with its own env."""
    seed: int = 0
    """Episode i uses env seed SEED+i (0 <= SEED+i < 2**32)."""
    policy: Literal["explore", "random", "revisit", "mixed", "random_repeat"] = "explore"
    """explore: BFS walks to random cells with action noise; random; revisit: walk out, then retrace the path;
    mixed: explore with segments of random held actions (about half the steps) (these three read Memory Maze's
    map); random_repeat: random actions held 1-4 steps, half of them walking (any env; Crafter's)."""
    noise: float = 0.1
    """Probability of a random action (explore, revisit, mixed between segments), in [0, 1]."""
    revisit_steps: int | None = None
    """revisit: outward steps before retracing (None: half of --steps)."""
    fast: bool = True
    """Memory Maze: use the exact speed-ups (vectorised activation check, camera reuse); --no-fast runs stock
    dm_control."""
    num_shards: int = 1
    """Split the episodes into this many shards (one job each, e.g. a Slurm array) ..."""
    shard_index: int = 0
    """... and collect only shard i: episodes i, i+K, i+2K, ... (seeds and file names as unsharded)."""


@dataclass(frozen=True)
class CollectArgs(CollectConfig):
    """The command line: a collection run plus how it reports progress."""

    quiet: bool = False
    """No progress bar."""
    merge: tuple[str, ...] = ()
    """Merge these shard folders into --out (copy their episode files, write one manifest) instead of collecting."""

    def config(self) -> CollectConfig:
        """The collection settings without the display options."""
        return CollectConfig(**{f.name: getattr(self, f.name) for f in fields(CollectConfig)})


class Stopped(BaseException):
    """The collection was asked to stop by a signal (SIGTERM); ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def shard_indices(episodes: int, num_shards: int = 1, shard_index: int = 0) -> range:
    """The episode indices of shard ``shard_index`` of ``num_shards``: ``shard_index, shard_index + K, ...`` below
    ``episodes``. The shards are disjoint, cover every episode, and an episode's shard does not change when more
    episodes are collected later."""
    return range(shard_index, episodes, num_shards)


def episode_path(out, index: int) -> Path:
    """The file of episode ``index`` in folder ``out``: ``out/ep_{index:05d}.npz``."""
    return Path(out) / f"ep_{index:05d}.npz"


def episode_origin(path) -> tuple[str, int, bool]:
    """(env id, reset seed, fast) an episode file written by this module was collected with: the inverse of
    :func:`episode_path` and the manifest's ``seed`` (episode ``i`` has env seed ``seed + i``), so the episode can
    be replayed exactly. A ValueError naming the file for anything else (converted or downloaded episodes)."""
    path = Path(path)
    manifest_path = path.parent / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{manifest_path}: unreadable ({e}); replaying {path.name} needs it") from e
    stem = path.name.removeprefix("ep_").removesuffix(".npz")
    if (
        not isinstance(manifest, dict)
        or not manifest.get("env")
        or not isinstance(manifest.get("seed"), int)
        or manifest.get("episode_seed") != "seed + index"
        or not stem.isdigit()
        or episode_path(path.parent, int(stem)).name != path.name
    ):
        raise ValueError(
            f"{path}: cannot be replayed in the real env: expected an envs.collect episode ep_NNNNN.npz beside a "
            f"{MANIFEST} with 'env', an integer 'seed' and episode_seed 'seed + index'"
        )
    return str(manifest["env"]), manifest["seed"] + int(stem), bool(manifest.get("fast", True))


def _spec(env_id: str) -> gymnasium.envs.registration.EnvSpec:
    """The registered spec of ``env_id`` (``module:id`` imports ``module`` first), or a ValueError naming it."""
    module, _, name = env_id.rpartition(":")
    if not module and name not in envs.REAL_ENV_IDS:
        raise ValueError(
            f"--env {env_id!r}: expected a real env id ({', '.join(envs.REAL_ENV_IDS)}) or module:id of another env"
        )
    try:
        if module:
            importlib.import_module(module)
        return gymnasium.spec(name)
    except (gymnasium.error.Error, ImportError) as e:
        raise ValueError(f"--env {env_id!r}: {e}. Known ids: {', '.join(envs.REAL_ENV_IDS)}") from e


def make_env(env_id: str, fast: bool = True) -> gymnasium.Env:
    """``gymnasium.make(env_id)`` for a real env id (or a ``module:id``); ``fast=False`` (Memory Maze's stock
    code) is passed on to the env, and an env without that switch is a ValueError saying so."""
    _spec(env_id)
    try:
        return gymnasium.make(env_id) if fast else gymnasium.make(env_id, fast=False)
    except TypeError as e:
        if fast:
            raise
        raise ValueError(f"--no-fast: {env_id} has no stock/fast switch (Memory Maze has one)") from e


def _action_count(env: gymnasium.Env, env_id: str) -> int:
    """The size of ``env``'s Discrete action space; a ValueError naming the env for any other space."""
    if not isinstance(env.action_space, gymnasium.spaces.Discrete):
        raise ValueError(f"--env {env_id}: action space {env.action_space}; collection records Discrete actions")
    return int(env.action_space.n)


def env_policy(
    env: gymnasium.Env, env_id: str, name: str, steps: int, noise: float = 0.1, revisit_steps: int | None = None
):
    """Policy ``name`` (``envs.policies.make_policy``) for ``env``'s actions (their number, its ``move_actions``);
    a ValueError naming the policies that fit when it reads ``info`` keys the env does not report (its
    ``info_keys``; envs without that attribute are checked on the first reset) or acts in other actions."""
    n_actions = _action_count(env, env_id)
    policy = make_policy(
        name,
        steps=steps,
        noise=noise,
        revisit_steps=revisit_steps,
        n_actions=n_actions,
        move_actions=tuple(getattr(env.unwrapped, "move_actions", ())),
    )
    reported = getattr(env.unwrapped, "info_keys", None)
    missing = [k for k in policy.needs if reported is not None and k not in reported]
    if missing or policy.n_actions != n_actions:
        fits = [p for p in POLICIES if not make_policy(p, n_actions=n_actions).needs]
        what = (
            f"reads info keys {', '.join(missing)} (Memory Maze's map), which {env_id} does not report"
            if missing
            else f"acts in {policy.n_actions} actions (Memory Maze's), {env_id} has {n_actions}"
        )
        raise ValueError(f"--policy {name}: {what}; use one of {', '.join(fits)}")
    return policy


def _env_policy(cfg: CollectConfig, env: gymnasium.Env, steps: int):
    """The collection policy of ``cfg`` for ``env`` (:func:`env_policy`)."""
    return env_policy(env, cfg.env, cfg.policy, steps, noise=cfg.noise, revisit_steps=cfg.revisit_steps)


def collect_episode(env, policy, seed: int, steps: int) -> dict[str, np.ndarray]:
    """Run one episode of ``steps`` actions from ``env.reset(seed=seed)``, or fewer when the env terminates;
    returns the episode arrays.

    The policy's random generator is seeded from ``seed`` too (a separate stream from the env's). Each frame's
    state is ``env.unwrapped.episode_state(info)`` when the env has it, else Memory Maze's state keys
    (``envs.memory_maze.STATE_KEYS``), which ``info`` must then hold; ``info`` must hold what the policy reads
    (its ``needs``) and the policy must act in the env's number of actions.
    """
    obs, info = env.reset(seed=int(seed))
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    state_of = getattr(env.unwrapped, "episode_state", None)
    if state_of is None:
        missing = [k for k in STATE_KEYS if k not in info]
        if missing:
            raise ValueError(
                f"env {name}: reset() info lacks {', '.join(missing)} (collection records Memory "
                f"Maze's state keys {', '.join(STATE_KEYS)} from envs without episode_state())"
            )

        def state_of(info):
            return {k: info[k] for k in STATE_KEYS}

    missing = [k for k in getattr(policy, "needs", ()) if k not in info]
    if missing:
        raise ValueError(f"env {name}: reset() info lacks {', '.join(missing)}, which policy {policy.name} reads")
    n_actions = int(env.action_space.n)
    if getattr(policy, "n_actions", n_actions) != n_actions:
        raise ValueError(f"policy {policy.name} acts in {policy.n_actions} actions, env {name} has {n_actions}")
    policy.reset(info, np.random.default_rng([int(seed), 1]))
    frames = [env.unwrapped.render()]
    actions = np.zeros((steps + 1, n_actions), np.float32)  # action[0] = 0: nothing led into the first frame
    rewards = np.zeros(steps + 1, np.float32)
    phases = np.zeros(steps + 1, np.int8)
    states = {k: [v] for k, v in state_of(info).items()}
    phases[0] = getattr(policy, "phase", 0)
    end = steps
    for t in range(1, steps + 1):
        a = int(policy.act(info))
        phases[t] = getattr(policy, "phase", 0)  # the phase the action was chosen in
        obs, reward, terminated, truncated, info = env.step(a)
        actions[t, a] = 1.0
        rewards[t] = reward
        frames.append(env.unwrapped.render())
        for k, v in state_of(info).items():
            states[k].append(v)
        if terminated and t < steps:  # e.g. a Crafter player died: the episode ends here, its file is shorter
            end = t
            break
        if truncated and t < steps:
            raise RuntimeError(f"episode truncated after {t} of {steps} steps (the task's limit is lower)")
    data = {"image": np.stack(frames), "action": actions[: end + 1], "reward": rewards[: end + 1]}
    data.update({k: np.stack(v) for k, v in states.items()})
    if getattr(policy, "name", "") in PHASES:  # revisit: 0 outward / 1 retracing; mixed: 1 = random segment
        data["phase"] = phases[: end + 1]
    return data


# --- checks before any work -------------------------------------------------------------------------------
def _int_in(flag: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{flag} {value!r}: expected an integer")
    if value < low or (high is not None and value > high):
        raise ValueError(
            f"{flag} {value}: expected {low}..{high}" if high is not None else f"{flag} {value}: expected >= {low}"
        )
    return int(value)


def check_config(cfg: CollectConfig) -> int:
    """Check every setting of ``cfg`` (ValueError naming the option and value); returns the steps per episode.

    Reads nothing but the env registry, the env's spaces (it is made and closed, never reset) and ``cfg.out``'s
    type, writes nothing.
    """
    if cfg.policy not in POLICIES:
        raise ValueError(f"--policy {cfg.policy!r}: expected one of {', '.join(POLICIES)}")
    episodes = _int_in("--episodes", cfg.episodes, 1)
    _int_in("--workers", cfg.workers, 1)
    shards = _int_in("--num-shards", cfg.num_shards, 1)
    _int_in("--shard-index", cfg.shard_index, 0, shards - 1)
    seed = _int_in("--seed", cfg.seed, 0)
    if seed + episodes - 1 > MAX_SEED:
        raise ValueError(f"--seed {seed}: the episode seeds SEED..SEED+{episodes - 1} must stay <= {MAX_SEED}")
    if isinstance(cfg.noise, bool) or not isinstance(cfg.noise, (int, float)) or not 0.0 <= cfg.noise <= 1.0:
        raise ValueError(f"--noise {cfg.noise!r}: expected a probability in [0, 1]")
    limit = int(_spec(cfg.env).max_episode_steps or 0)
    if limit < 1:
        raise ValueError(f"--env {cfg.env!r} has no time limit (max_episode_steps); register it with one")
    steps = limit if cfg.steps is None else _int_in("--steps", cfg.steps, 1, limit)
    if cfg.revisit_steps is not None:
        _int_in("--revisit-steps", cfg.revisit_steps, 1, steps)
    if not isinstance(cfg.fast, bool):
        raise ValueError(f"fast={cfg.fast!r}: expected True or False")
    env = make_env(cfg.env, fast=cfg.fast)  # cheap: Memory Maze builds its task on the first reset
    try:
        _env_policy(cfg, env, steps)  # the policy's own checks, and that it fits the env
    finally:
        env.close()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder; choose a folder for the episodes")
    return steps


# --- one process's work -----------------------------------------------------------------------------------
_WORKER: dict = {}


def _set_parent_death_signal() -> None:
    """Linux: have the kernel SIGKILL this process when the thread that started it dies; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # if it fails, the watchdog thread still acts


def _init_worker(parent_pid: int) -> None:
    """Tie a worker's life to the collection's: it ignores Ctrl-C (the parent decides) and dies with the parent.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel kill the worker when the thread that started it
    (the collection's main thread) dies, ``kill -9`` included. Everywhere: a daemon thread exits the worker
    within ``WATCHDOG_SECONDS`` of its parent going away (its parent pid changes when it is re-parented).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the whole process group
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watchdog():
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def _worker_episode(cfg: CollectConfig, steps: int, index: int) -> tuple[int, int, float, float]:
    """Collect and save episode ``index`` with this process's env; returns (index, steps, secs, return)."""
    key = (cfg.env, cfg.fast)
    if _WORKER.get("key") != key:
        if "env" in _WORKER:
            _WORKER["env"].close()
        _WORKER["env"] = make_env(cfg.env, fast=cfg.fast)
        _WORKER["key"] = key
    env = _WORKER["env"]
    policy = _env_policy(cfg, env, steps)
    t0 = time.perf_counter()
    data = collect_episode(env, policy, cfg.seed + index, steps)
    save_episode(episode_path(cfg.out, index), data)
    return index, len(data["action"]) - 1, time.perf_counter() - t0, float(data["reward"].sum())


def _close_worker_env():
    if "env" in _WORKER:
        _WORKER.pop("env").close()
        _WORKER.pop("key", None)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (their current episodes are abandoned; their temp files die with them)."""
    kill = getattr(pool, "kill_workers", None)  # public from Python 3.14
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()


# --- bookkeeping ------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("longdream", "memory-maze", "dm-control", "mujoco", "labmaze", "crafter", "numpy", "gymnasium"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _read_manifest(path: Path) -> dict:
    """The manifest at ``path``; a ValueError naming it when it is not JSON or not a JSON object."""
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable manifest ({e}); move it away or use a new --out") from e
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: holds a JSON {type(manifest).__name__}; expected an object")
    return manifest


def _check_manifest(out: Path, settings: dict) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    old = _read_manifest(path)
    diff = {k: (old.get(k), settings[k]) for k in _SETTINGS if old.get(k) != settings[k]}
    if diff:
        listing = ", ".join(f"{k}: folder has {a!r}, command has {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{out} holds a different collection ({listing}); use a new --out to collect these "
            f"settings, or repeat the original command to resume"
        )
    return old


def _shard_record(cfg: CollectConfig, old: dict | None, out: Path) -> dict:
    """The manifest's shard fields: none for an unsharded collection (or a folder that holds one), else
    ``num_shards`` and the ``shard_indices`` collected into the folder so far."""
    if cfg.num_shards == 1 or (old is not None and "num_shards" not in old):
        return {}
    if old is not None and old["num_shards"] != cfg.num_shards:
        raise ValueError(
            f"{out} holds shards of a {old['num_shards']}-way split, not of --num-shards {cfg.num_shards}; use "
            "a new --out, or the original --num-shards"
        )
    done = set((old or {}).get("shard_indices", [])) | {cfg.shard_index}
    return {"num_shards": cfg.num_shards, "shard_indices": sorted(done)}


def merge_shards(shards: list[str | Path], out: str | Path) -> dict:
    """Merge shard folders (``--num-shards K --shard-index i`` collections of one data set) into ``out``: copy
    their episode files (atomically; a file already in ``out`` must hold the same bytes) and write the manifest
    of the unsharded collection. Returns a summary with the episode indices still missing (the shards not yet
    collected, or not finished: re-run those, or the unsharded command on ``out``).

    Refused (ValueError naming the folder) when a shard has no manifest or the shards' settings differ."""
    out = Path(out)
    if not shards:
        raise ValueError("--merge: name the shard folders to merge")
    manifests = {}
    for folder in map(Path, shards):
        path = folder / MANIFEST
        if not path.is_file():
            raise ValueError(f"--merge {folder}: no {MANIFEST}; expected a folder written by python -m envs.collect")
        manifests[folder] = _read_manifest(path)
        lacks = [k for k in ("format", *_SETTINGS, "episode_seed", "files") if k not in manifests[folder]]
        if lacks:
            raise ValueError(f"{path}: lacks {lacks}; expected the manifest of a python -m envs.collect folder")
    first, ref = next(iter(manifests.items()))
    for folder, m in manifests.items():
        diff = [k for k in (*_SETTINGS, "episode_seed", "files") if m.get(k) != ref.get(k)]
        if diff:
            raise ValueError(f"--merge: {folder} and {first} hold different collections (they differ in {diff})")
    lock = _open_folder(out)
    try:
        old = _check_manifest(out, ref)  # a folder that already holds another collection is refused
        clean_stale_temps(out)
        copied = kept = 0
        for folder in manifests:
            for src in sorted(folder.glob("ep_*.npz")):
                dst = out / src.name
                if dst.exists():
                    if dst.read_bytes() != src.read_bytes():
                        raise ValueError(f"--merge: {dst} exists and differs from {src}")
                    kept += 1
                    continue
                episode_length(src)  # the header check of a finished episode
                with open(src, "rb") as f, atomic_write(dst) as g:
                    shutil.copyfileobj(f, g)
                copied += 1
        episodes = max([m.get("episodes", 0) for m in manifests.values()] + [(old or {}).get("episodes", 0)])
        manifest = {k: ref[k] for k in ("format", *_SETTINGS, "episode_seed", "files")}
        manifest.update(episodes=episodes, versions=ref.get("versions"), created=(old or ref).get("created"))
        atomic_write_json(out / MANIFEST, manifest)
        missing = [i for i in range(episodes) if not episode_path(out, i).is_file()]
    finally:
        lock.release()
    return {"out": str(out), "copied": copied, "already_there": kept, "episodes": episodes, "missing": missing}


def _done(out: Path, index: int) -> bool:
    """An episode counts as done when its final file exists and its header checks out."""
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


def _open_folder(out: Path) -> RunLock:
    """Create ``out`` and take its lock; a folder that cannot be written is a ValueError naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return RunLock(out, what="collection").acquire()
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e})") from e


def collect(cfg: CollectConfig, progress: bool = True) -> dict:
    """Collect ``cfg.episodes`` episodes into ``cfg.out`` (resuming); returns a summary dict.

    Raises ValueError for a bad setting or folder before anything is written, and
    :class:`envs.fileio.RunLockedError` when another collection is using the folder.
    """
    # 1. every check that needs no folder, then the folder and its lock, then the folder's own record
    steps = check_config(cfg)
    out = Path(cfg.out)
    lock = _open_folder(out)
    try:
        settings = {**asdict(cfg), "steps": steps}
        old = _check_manifest(out, settings)
        # 2. the folder is ours: drop what killed runs left, record the settings, find the missing episodes
        clean_stale_temps(out)
        manifest = {
            "format": FORMAT,
            **{k: settings[k] for k in _SETTINGS},
            "episodes": max(cfg.episodes, (old or {}).get("episodes", 0)),
            "episode_seed": "seed + index",
            "files": "ep_{index:05d}.npz",
            "versions": _versions(),
            "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
            **_shard_record(cfg, old, out),
        }
        atomic_write_json(out / MANIFEST, manifest)
        share = shard_indices(cfg.episodes, cfg.num_shards, cfg.shard_index)
        todo = [i for i in share if not _done(out, i)]
        # 3. collect them
        return _collect_missing(cfg, steps, out, todo, progress, requested=len(share))
    finally:
        lock.release()


def _collect_missing(
    cfg: CollectConfig, steps: int, out: Path, todo: list[int], progress: bool, requested: int
) -> dict:
    summary = {
        "out": str(out),
        "requested": requested,
        "skipped": requested - len(todo),
        "collected": 0,
        "steps": 0,
        "seconds": 0.0,
        "return_mean": None,
    }
    if not todo:
        return summary
    bar = tqdm(
        total=len(todo), unit="ep", desc=f"collect {cfg.env.split('/')[-1]}", disable=not progress, dynamic_ncols=True
    )
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
            pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
            )
            try:
                pending = {pool.submit(_worker_episode, cfg, steps, i) for i in todo}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        finished(fut.result())
            except BaseException:
                _kill_workers(pool)  # do not wait for the episodes in flight
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    summary["seconds"] = time.perf_counter() - t0
    summary["return_mean"] = float(np.mean(returns)) if returns else None
    return summary


# --- command line -----------------------------------------------------------------------------------------
def _raise_stopped(signum, frame):
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    """``python -m envs.collect``: parse the options, collect, print a summary; returns the exit code."""
    args = tyro.cli(
        CollectArgs,
        args=argv,
        prog="python -m envs.collect",
        description="Collect real episodes of Memory Maze or Crafter (one .npz per episode, official "
        "offline-dataset keys) with N worker processes. Re-running the same command resumes.",
    )
    if args.merge:
        try:
            merged = merge_shards(list(args.merge), args.out)
        except (ValueError, OSError, RunLockedError, EpisodeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
        missing = merged["missing"]
        print(
            f"{merged['out']}: {merged['copied']} episode files copied, {merged['already_there']} already there; "
            + (f"{len(missing)} of {merged['episodes']} missing: {missing[:10]}" if missing else "complete")
        )
        return 0
    stop = "re-run the same command to resume (finished episodes are kept)"
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        summary = collect(args.config(), progress=not args.quiet)
    except (ValueError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RenderingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted (SIGINT): {stop}", file=sys.stderr)
        return _EXIT_SIGNAL_BASE + signal.SIGINT
    except Stopped as e:
        print(f"stopped ({e}): {stop}", file=sys.stderr)
        return _EXIT_SIGNAL_BASE + e.signum
    finally:
        signal.signal(signal.SIGTERM, previous)
    rate = summary["steps"] / summary["seconds"] if summary["seconds"] else 0.0
    print(
        f"{summary['out']}: collected {summary['collected']}, skipped {summary['skipped']} already done "
        f"({summary['steps']} steps in {summary['seconds']:.1f} s, {rate:.0f} steps/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
