"""Safe file writing for every job: atomic writes, pickle-free checkpoint loading, stale temp files, folder locks.

Part of the data layer (imports only the standard library, numpy and torch), so collection, training and the
dream env all write files one way.

- Atomic writes (:func:`atomic_write`, :func:`atomic_write_bytes`, :func:`atomic_write_text`,
  :func:`atomic_write_json`, :func:`atomic_torch_save`): the data goes to a temp file ``.<name>.<random>.tmp``
  in the destination folder, is fsynced, then renamed over the destination with ``os.replace``. A reader sees
  the old file or the new one, never a partial one. The temp file is created the way ``open(path, "w")``
  creates a file, so the final file's mode is ``0o666 & ~umask`` like any other file the process writes.
- :func:`clean_stale_temps`: a process killed with ``kill -9`` in the middle of a write leaves its temp file
  behind (a checkpoint's can be gigabytes). A job removes them at start, while it holds the folder's lock.
- :class:`RunLock`: one job per folder. An exclusive ``flock`` on ``FOLDER/.lock``, which the kernel drops when
  the holder exits however it exits (``kill -9`` included), so a crashed job never leaves a folder locked. The
  holder writes who it is (pid, host, command line, start time) into the lock file; a second job is refused
  with :class:`RunLockedError` naming it.
- :func:`torch_load`: ``torch.load(weights_only=True)`` (no arbitrary pickle) with errors naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "LOCK_FILE",
    "RunLock",
    "RunLockedError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "clean_stale_temps",
    "is_temp_name",
    "torch_load",
]

LOCK_FILE = ".lock"
# ".<final name>.<token>.tmp": the token is random hex (older writers used a pid or mkstemp's 8 characters).
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<token>[A-Za-z0-9_]+)\.tmp$")
_TOKEN_BYTES = 6  # 12 hex digits: a name collision (retried anyway) is practically impossible
_NEW_FILE_MODE = 0o666  # what open(path, "w") asks for; the kernel applies the umask to it


# ------------------------------------------------------------------------------------------ atomic writes


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Context manager yielding a binary file; on a clean exit its content replaces ``path`` atomically.

    The file is a temp file ``.<name>.<random>.tmp`` in ``path``'s folder (created if missing), flushed and
    fsynced before ``os.replace``. On an exception the temp file is deleted and ``path`` is untouched. The
    final mode is ``0o666 & ~umask``, as for a plain ``open(path, "wb")``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp")
        try:
            # O_EXCL: never reuse another writer's temp file; the mode goes through the umask like open()'s
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), _NEW_FILE_MODE)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; returns the path.

    Dataclasses become dicts, tuples lists, numpy/torch scalars numbers, paths strings, and non-finite floats
    the strings ``"nan"``/``"inf"``/``"-inf"`` (JSON has no such numbers).
    """
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, torch.Tensor)) and np.asarray(obj).size == 1:
        obj = np.asarray(obj).item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` (no arbitrary pickle).

    Raises FileNotFoundError for a missing file and ValueError naming the file for one that cannot be loaded
    (truncated, not a torch file, or holding objects other than tensors and plain containers).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"could not load checkpoint {path} with weights_only=True: {e}") from e


# ------------------------------------------------------------------------------------------ stale temp files


def is_temp_name(name: str) -> bool:
    """True when ``name`` has the form of an atomic write's temp file, ``.<final name>.<token>.tmp``."""
    return _TEMP_NAME.match(name) is not None


def clean_stale_temps(folder: str | os.PathLike, pattern: str = ".*.tmp") -> list[Path]:
    """Delete the temp files interrupted atomic writes left in ``folder``; returns the deleted paths.

    Only regular files matching the glob ``pattern`` and the temp-name form ``.<name>.<token>.tmp`` are
    deleted (a user's ``.notes.tmp`` or ``x.tmp`` is kept). Call it while holding the folder's
    :class:`RunLock`: a temp file of a job that is still writing into the folder would be deleted too.
    """
    removed = []
    for path in sorted(Path(folder).glob(pattern)):
        if is_temp_name(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------ folder lock


class RunLockedError(RuntimeError):
    """Another live process holds the folder's :class:`RunLock`; ``holder`` is what it wrote (may be empty)."""

    def __init__(self, message: str, holder: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.holder = dict(holder or {})


_HOLDER_READ_TRIES = 20  # the holder writes its details right after locking: wait up to 20 x 50 ms for them
_HOLDER_READ_WAIT = 0.05


class RunLock:
    """An exclusive lock on a folder for one job (``flock`` on ``FOLDER/.lock``); a context manager.

    ``with RunLock(folder, what="training"):`` or ``lock = RunLock(folder).acquire()`` ... ``lock.release()``.
    ``acquire`` creates the folder if needed and raises :class:`RunLockedError` naming the holder (pid, host,
    command line, start time) when another live process holds the lock; OSError when the folder cannot be
    written. The kernel releases an ``flock`` when its holder dies, so a killed job never leaves the folder
    locked. The lock file itself stays (deleting it would let two jobs lock two different files).
    A second ``RunLock`` on the same folder in the same process is refused too.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "job"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = str(what)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (without waiting) and record this process as its holder; returns ``self``."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunLock is already held")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _NEW_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self._read_holder(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
            os.close(fd)
            if holder is None:
                raise
            raise RunLockedError(self._locked_message(holder), holder) from None
        except BaseException:
            os.close(fd)
            raise
        info = {
            "what": self.what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": shlex.join(sys.orig_argv).replace("\n", "\\n"),  # one line, as typed
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (clearing the holder details); a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _read_holder(self, fd: int) -> dict[str, Any]:
        for _ in range(_HOLDER_READ_TRIES):
            raw = os.pread(fd, 1 << 16, 0)
            if raw.strip():
                try:
                    holder = json.loads(raw)
                    return holder if isinstance(holder, dict) else {}
                except json.JSONDecodeError:
                    pass  # being written right now: read again
            time.sleep(_HOLDER_READ_WAIT)
        return {}

    def _locked_message(self, holder: Mapping[str, Any]) -> str:
        if not holder:
            who = "another process (it has not written its details)"
        else:
            who = (
                f"{holder.get('what', 'a job')} pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}: {holder.get('command', '?')}"
            )
        return (
            f"{self.folder} is in use by {who}. Wait for it to finish or stop it, or use another folder "
            f"(lock file {self.path})"
        )
