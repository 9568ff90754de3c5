"""The run folder of a training job: its lock, the temp files a killed job left, and the run's episodes (the
train/held-out split, recorded in the folder and kept for the life of the run, and the checks its files must
pass before any work starts).

A job takes the folder's lock for its whole run (``open_run_folder``): a second job on the same folder is
refused with a message naming the holder, and a crashed job never leaves the lock stuck (``envs.fileio.RunLock``,
an flock). Under the lock, temp files of interrupted atomic writes (``.<name>.<random>.tmp``) are removed.

At the first start of a run the split is drawn (``EpisodeStore.split``: by episode, deterministic in the seed)
and recorded in ``RUN_DIR/split.json`` with the SHA-256 of every file. Every later start of the same run
(``--resume``, or re-running a run interrupted during stage 1) reads that record instead of drawing again:

- a recorded file that is missing from the episode folder, or whose content changed, is refused with a
  message naming the files (the run would train or evaluate on other data than it did so far);
- files added to the folder since are left out of the run, with a warning: they never move into the
  held-out set (nor into training, so a resumed run draws the same batches as an uninterrupted one);
- another folder holding the same files (names and hashes) is accepted, with a warning naming both folders.

Record layout (JSON): {"folder": absolute path, "test_fraction", "seed", "train": {file name: sha256},
"test": {file name: sha256}}.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs import frame_env_id
from envs.episodes import EpisodeStore, file_digest, read_header
from envs.fileio import RunLock, clean_stale_temps

from .utils import atomic_write_json

__all__ = [
    "SPLIT_FILE",
    "RunSplit",
    "check_frame_shapes",
    "episode_actions",
    "episode_env",
    "open_run_folder",
    "plan_split",
    "write_split",
]

SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class RunSplit:
    """The training and held-out episode files of a run (paths in the episode folder given now)."""

    folder: Path
    """The episode folder the paths are in."""
    train: list[Path]
    """Episodes the model trains on."""
    test: list[Path]
    """Held-out episodes (evaluation only)."""
    record: dict[str, Any]
    """What RUN_DIR/split.json holds (or will hold once written)."""
    recorded: bool
    """True when the record was read from the run folder, False when drawn now (not written yet)."""


def _describe(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def plan_split(store: EpisodeStore, run_dir: str | os.PathLike, test_fraction: float, seed: int) -> RunSplit:
    """The run's split: read from ``RUN_DIR/split.json`` and checked against the folder's files when the run
    records one, else drawn from ``store`` (not written: see :func:`write_split`). Writes nothing.

    Raises ValueError naming the files when recorded files are missing or changed, and when ``test_fraction``
    or ``seed`` differ from the recorded ones."""
    run_dir = Path(run_dir)
    folder = store.folder.resolve()
    path = run_dir / SPLIT_FILE
    if not path.is_file():
        train, test = store.split(test_fraction=test_fraction, seed=seed)
        record = {
            "folder": str(folder),
            "test_fraction": test_fraction,
            "seed": seed,
            "train": {p.name: file_digest(p) for p in train},
            "test": {p.name: file_digest(p) for p in test},
        }
        return RunSplit(store.folder, train, test, record, recorded=False)

    # 1. the record itself
    try:
        record = json.loads(path.read_text())
        recorded_train, recorded_test = dict(record["train"]), dict(record["test"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: not a readable split record ({type(e).__name__}: {e}); it names the "
            "episodes this run trains and evaluates on; use a new run folder"
        ) from e
    if (record.get("test_fraction"), record.get("seed")) != (test_fraction, seed):
        raise ValueError(
            f"{path}: this run's split was drawn with test_fraction={record.get('test_fraction')}, "
            f"seed={record.get('seed')}, not test_fraction={test_fraction}, seed={seed}; keep "
            "them, or use a new run folder"
        )
    # 2. every recorded file present with the same content
    by_name = {p.name: p for p in store.paths}
    expected = {**recorded_train, **recorded_test}
    missing = sorted(n for n in expected if n not in by_name)
    changed = sorted(n for n in expected if n in by_name and file_digest(by_name[n]) != expected[n])
    held_out = set(recorded_test)
    problems = []
    if missing:
        kinds = (
            "held-out and training"
            if held_out & set(missing) and set(missing) - held_out
            else ("held-out" if held_out & set(missing) else "training")
        )
        problems.append(f"{len(missing)} recorded {kinds} episode file(s) missing: {_describe(missing)}")
    if changed:
        problems.append(
            f"{len(changed)} episode file(s) changed since the run started (content hash differs): {_describe(changed)}"
        )
    if problems:
        raise ValueError(
            f"{store.folder}: does not hold the episodes this run was started with "
            f"(recorded in {path}, from {record.get('folder')}): "
            + "; ".join(problems)
            + ". Point --episodes at that folder, or start a new run folder"
        )
    # 3. what differs but is harmless: another folder with the same files; files added since
    if str(folder) != record.get("folder"):
        warnings.warn(
            f"episode folder {folder} is not the one this run started with ({record.get('folder')}); "
            f"its files match the recorded split ({path}: names and sha256), so the run continues",
            stacklevel=2,
        )
    new = sorted(set(by_name) - set(expected))
    if new:
        warnings.warn(
            f"{store.folder}: {len(new)} episode file(s) added since this run started are left out of "
            f"it (neither trained on nor held out; the split is recorded in {path}): {_describe(new)}. "
            "Start a new run folder to use them",
            stacklevel=2,
        )
    train = [by_name[n] for n in sorted(recorded_train)]
    test = [by_name[n] for n in sorted(recorded_test)]
    return RunSplit(store.folder, train, test, record, recorded=True)


def write_split(run_dir: str | os.PathLike, split: RunSplit) -> None:
    """Record a newly drawn split in ``RUN_DIR/split.json`` (atomically); a recorded one is left as it is."""
    if not split.recorded:
        atomic_write_json(Path(run_dir) / SPLIT_FILE, split.record)


def check_frame_shapes(paths: Sequence[str | os.PathLike], shape: Sequence[int], what: str = "the model") -> None:
    """ValueError naming the first file whose frames are not ``shape`` (H, W, C); reads only the headers."""
    want = tuple(int(s) for s in shape)
    for p in paths:
        got = tuple(read_header(p)["image"][0][1:])
        if got != want:
            raise ValueError(
                f"{p}: frames are {'x'.join(map(str, got))}, {what} expects "
                f"{'x'.join(map(str, want))} (H x W x channels)"
            )


def episode_actions(paths: Sequence[str | os.PathLike]) -> int:
    """The number of discrete actions of the episode files (the width A of their one-hot ``action`` (T+1, A)),
    the same in every file; a ValueError naming the first file that differs. Reads only the headers."""
    count, first = None, None
    for p in paths:
        width = int(read_header(p)["action"][0][1])
        if count is None:
            count, first = width, p
        elif width != count:
            raise ValueError(
                f"{p}: actions are one-hot over {width} actions, but {first} has {count}: one model learns one env's "
                "actions (keep each env's episodes in their own folder)"
            )
    if count is None:
        raise ValueError("no episode files: cannot tell the number of actions")
    return count


def episode_env(store: EpisodeStore) -> str | None:
    """The env id the folder's episodes were collected from (its ``manifest.json``, written by
    ``python -m envs.collect``), as the world model stands in for it (``envs.frame_env_id``: a Memory Maze
    ``-ExtraObs`` id becomes its frame-only twin); None without a manifest (e.g. the official Memory Maze data)."""
    try:
        manifest = store.manifest
    except (ValueError, OSError) as e:
        raise ValueError(f"{store.folder / 'manifest.json'}: unreadable ({e}); move it away or repair it") from e
    env = (manifest or {}).get("env")
    return frame_env_id(str(env)) if env else None


def open_run_folder(run_dir: str | os.PathLike, what: str) -> RunLock:
    """Create ``run_dir`` if needed, take its lock (held until ``.release()``) and remove the temp files a killed
    job left there. A folder that cannot be written is a ValueError naming it; a folder another live job holds
    raises ``envs.fileio.RunLockedError`` naming that job."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir, what=what)
        lock.acquire()
    except OSError as e:
        raise ValueError(f"cannot write to the run folder {run_dir}: {e.strerror or e}") from e
    clean_stale_temps(run_dir)
    return lock
