"""Episode files: read, validate, write, split, and serve fixed-length windows to PyTorch.

Format: one ``.npz`` per episode with the keys of the official Memory Maze offline dataset
(https://github.com/jurgisp/memory-maze, "Offline Dataset"); every array has a leading time axis of
length T+1 for an episode of T actions:

=============  ==================  ======================================================================
key            shape               meaning
=============  ==================  ======================================================================
image          (T+1, H, W, 3)      uint8 first-person frames (64x64 for Memory Maze)
action         (T+1, A)            one-hot of the action that led INTO image[t]; action[0] is all zeros
reward         (T+1,)              reward received on entering image[t]; reward[0] = 0
maze_layout    (T+1, n, n)         1 = free cell, indexed [y][x], row 0 at the bottom (a (n, n) array is
                                   accepted too)
agent_pos      (T+1, 2)            (x, y) in cell units, cell centres at .5
agent_dir      (T+1, 2)            unit heading (dx, dy)
targets_pos    (T+1, K, 2)         all target positions (cell units); targets_vec: agent-centric
target_pos     (T+1, 2)            current target (cell units); target_vec: agent-centric
target_color   (T+1, 3)            current target colour, RGB in [0, 1]
phase          (T+1,)              optional, ours: 0 outward / 1 retracing (``revisit`` policy)
=============  ==================  ======================================================================

Alignment (checked against the official recording code, ``gui/recording.py`` of jurgisp/memory-maze, which
uses pydreamer's ``ActionRewardResetWrapper``): the reset observation gets ``action = zeros(A)`` and
``reward = 0``, and each later observation carries the one-hot of the action just taken and its reward.
So ``image[0]`` is the observation before the first action, ``action[t]`` (t >= 1) led from ``image[t-1]``
to ``image[t]``, and ``action[0]`` is all zeros. Official files may carry extra keys (``terminal``,
``reset``); they are read and ignored. Files are read with ``np.load(allow_pickle=False)``.

Validation has two levels. The header check (no decompression: the ``.npy`` headers inside the zip) finds
unreadable/truncated archives, missing keys, object arrays, wrong shapes and inconsistent lengths; it is
what :class:`EpisodeStore` runs on every file. :func:`load_episode` adds the value checks (one-hot actions,
finite numbers). Every problem raises :class:`EpisodeError`, whose message starts with the file path.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

__all__ = [
    "OFFICIAL_KEYS",
    "REQUIRED_KEYS",
    "EpisodeError",
    "EpisodeStore",
    "WindowDataset",
    "check_episode",
    "episode_length",
    "load_episode",
    "read_header",
    "save_episode",
]

OFFICIAL_KEYS = (
    "image", "action", "reward", "maze_layout", "agent_pos", "agent_dir",
    "targets_pos", "targets_vec", "target_pos", "target_vec", "target_color",
)
REQUIRED_KEYS = ("image", "action", "reward")
OUR_EXTRA_KEYS = ("phase",)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)

# trailing shape after the time axis; None = any size, "K" = the same size across the targets_* keys
_TRAILING: dict[str, tuple] = {
    "image": (None, None, 3),
    "action": (None,),
    "reward": (),
    "agent_pos": (2,),
    "agent_dir": (2,),
    "target_pos": (2,),
    "target_vec": (2,),
    "target_color": (3,),
    "targets_pos": ("K", 2),
    "targets_vec": ("K", 2),
    "phase": (),
}


class EpisodeError(ValueError):
    """A bad episode file. ``str(e)`` is ``"<path>: <what is wrong>"``; ``e.path`` and ``e.problem`` too."""

    def __init__(self, path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --- reading ----------------------------------------------------------------------------------------------
def read_header(path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of every array in an ``.npz`` without decompressing the data."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(path, "file not found")
    header = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:  # rare (3, 0): read the member itself
                        arr = np.lib.format.read_array(f, allow_pickle=False)
                        shape, dtype = arr.shape, arr.dtype
                header[name[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
    except _READ_ERRORS as e:
        raise EpisodeError(path, f"not a readable .npz archive (corrupt or truncated?): "
                                 f"{type(e).__name__}: {e}") from e
    if not header:
        raise EpisodeError(path, "the archive holds no arrays")
    return header


def _check_shapes(path, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> int:
    """Header-level checks; returns the number of frames T+1."""
    missing = [k for k in REQUIRED_KEYS if k not in shapes]
    if missing:
        raise EpisodeError(path, f"missing key(s) {missing}; found {sorted(shapes)} "
                                 f"(expected the Memory Maze offline-dataset keys {list(OFFICIAL_KEYS)})")
    for key, (_, dtype) in shapes.items():
        if dtype.hasobject:
            raise EpisodeError(path, f"'{key}' holds Python objects (dtype=object); refusing to unpickle it")
    img_shape, img_dtype = shapes["image"]
    if len(img_shape) != 4 or img_shape[-1] != 3:
        raise EpisodeError(path, f"'image' has shape {img_shape}, expected (T+1, H, W, 3)")
    if img_dtype != np.uint8:
        raise EpisodeError(path, f"'image' has dtype {img_dtype}, expected uint8")
    n = img_shape[0]
    if n < 1:
        raise EpisodeError(path, "'image' has no frames")
    k_size = None
    for key, (shape, dtype) in shapes.items():
        if key == "maze_layout":
            if not (len(shape) == 2 or (len(shape) == 3 and shape[0] == n)):
                raise EpisodeError(path, f"'maze_layout' has shape {shape}, expected (T+1, n, n) = "
                                         f"({n}, n, n) or (n, n)")
            continue
        if key not in _TRAILING:
            continue  # extra keys (e.g. official 'terminal', 'reset') are allowed and ignored
        if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
            raise EpisodeError(path, f"'{key}' has non-numeric dtype {dtype}")
        want = _TRAILING[key]
        if len(shape) != 1 + len(want) or shape[0] != n:
            raise EpisodeError(path, f"'{key}' has shape {shape}, expected {_describe(n, want)} "
                                     f"(the time axis must match the {n} frames of 'image')")
        for size, w in zip(shape[1:], want):
            if w == "K":
                if k_size is None:
                    k_size = size
                elif size != k_size:
                    raise EpisodeError(path, f"'{key}' has {size} targets but another targets_* key "
                                             f"has {k_size}")
            elif w is not None and size != w:
                raise EpisodeError(path, f"'{key}' has shape {shape}, expected {_describe(n, want)}")
    return n


def _describe(n: int, trailing: tuple) -> str:
    dims = [str(n)] + ["K" if w == "K" else ("*" if w is None else str(w)) for w in trailing]
    return "(" + ", ".join(dims) + ("," if not trailing else "") + ")"


def episode_length(path) -> int:
    """Number of frames (T+1) of an episode file, after the header check."""
    return _check_shapes(path, read_header(path))


def check_episode(path, data: dict[str, np.ndarray]) -> int:
    """Full validation of loaded arrays (shapes, dtypes, one-hot actions, finite values); returns T+1."""
    n = _check_shapes(path, {k: (np.shape(v), np.asarray(v).dtype) for k, v in data.items()})
    _check_values(path, data)
    return n


def _check_values(path, data: dict[str, np.ndarray]) -> None:
    """Value checks on whichever arrays are present: one-hot actions, finite floats."""
    for key, value in data.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise EpisodeError(path, f"'{key}' has non-finite values (NaN or inf)")
    if "action" not in data:
        return
    action = np.asarray(data["action"])
    n = len(action)
    if not np.all((action == 0) | (action == 1)):
        bad = int(np.argwhere(~((action == 0) | (action == 1)))[0, 0])
        raise EpisodeError(path, f"'action' row {bad} is not one-hot: {action[bad].tolist()}")
    sums = action.sum(axis=1)
    if n > 1 and not np.all(sums[1:] == 1):
        bad = int(np.argwhere(sums[1:] != 1)[0, 0]) + 1
        raise EpisodeError(path, f"'action' row {bad} is not one-hot: {action[bad].tolist()}")
    if n and sums[0] > 1:
        raise EpisodeError(path, f"'action' row 0 is not one-hot or zero: {action[0].tolist()}")


def load_episode(path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Load and validate one episode file (ours or an official Memory Maze one).

    Returns the official keys present in the file (at least image, action, reward) plus ``phase`` if present;
    ``keys`` restricts the result (the validation still covers the whole file's headers).
    """
    path = Path(path)
    shapes = read_header(path)
    _check_shapes(path, shapes)
    wanted = [k for k in (*OFFICIAL_KEYS, *OUR_EXTRA_KEYS) if k in shapes]
    if keys is not None:
        keys = list(keys)
        absent = [k for k in keys if k not in shapes]
        if absent:
            raise EpisodeError(path, f"missing key(s) {absent}; found {sorted(shapes)}")
        wanted = keys
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in wanted}
    except _READ_ERRORS as e:
        raise EpisodeError(path, f"cannot decode the arrays (corrupt or truncated?): "
                                 f"{type(e).__name__}: {e}") from e
    _check_values(path, data)
    return data


# --- writing ----------------------------------------------------------------------------------------------
def save_episode(path, data: dict[str, np.ndarray]) -> Path:
    """Validate and write one episode atomically (temp file in the same folder, then ``os.replace``).

    The temp name ``.<name>.<pid>.tmp`` never matches ``*.npz``, so readers never see a partial file.
    """
    path = Path(path)
    check_episode(path, data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez_compressed(f, **data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --- a folder of episodes ---------------------------------------------------------------------------------
class EpisodeStore:
    """The episode files (``*.npz``, sorted) of one folder, header-checked.

    ``skip_bad=False`` raises :class:`EpisodeError` on the first bad file; ``skip_bad=True`` leaves bad files
    out, lists them in ``.bad`` as ``(path, reason)`` and warns once with the list.
    """

    def __init__(self, folder, skip_bad: bool = False):
        self.folder = Path(folder)
        if not self.folder.exists():
            raise FileNotFoundError(f"episode folder {self.folder} does not exist")
        if not self.folder.is_dir():
            raise NotADirectoryError(f"episode folder {self.folder} is not a directory")
        candidates = sorted(p for p in self.folder.glob("*.npz") if p.is_file())
        if not candidates:
            raise FileNotFoundError(f"episode folder {self.folder} holds no episode files (*.npz)")
        self.paths: list[Path] = []
        self.lengths: list[int] = []  # frames (T+1) per episode, aligned with .paths
        self.bad: list[tuple[Path, str]] = []
        for p in candidates:
            try:
                n = episode_length(p)
            except EpisodeError as e:
                if not skip_bad:
                    raise
                self.bad.append((p, e.problem))
                continue
            self.paths.append(p)
            self.lengths.append(n)
        if self.bad:
            listing = "; ".join(f"{p.name}: {why}" for p, why in self.bad)
            warnings.warn(f"{self.folder}: skipped {len(self.bad)} bad episode file(s): {listing}",
                          stacklevel=2)
        if not self.paths:
            raise FileNotFoundError(f"episode folder {self.folder} holds no readable episodes "
                                    f"({len(self.bad)} bad file(s), see .bad)")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"EpisodeStore({str(self.folder)!r}: {len(self)} episodes, {sum(self.lengths)} frames, "
                f"{len(self.bad)} bad)")

    def load(self, index: int) -> dict[str, np.ndarray]:
        return load_episode(self.paths[index])

    @property
    def manifest(self) -> dict | None:
        """``manifest.json`` of the folder (written by ``python -m envs.collect``), or None."""
        p = self.folder / "manifest.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def split(self, test_fraction: float = 0.1, seed: int = 0) -> tuple[list[Path], list[Path]]:
        """Deterministic train/test split by episode; with >= 2 episodes neither part is empty."""
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction!r}: expected a fraction in [0, 1)")
        n = len(self.paths)
        n_test = int(round(test_fraction * n))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        order = np.random.default_rng(seed).permutation(n)
        test_idx = set(order[:n_test].tolist())
        train = [p for i, p in enumerate(self.paths) if i not in test_idx]
        test = [p for i, p in enumerate(self.paths) if i in test_idx]
        return train, test


# --- windows for training ---------------------------------------------------------------------------------
class WindowDataset(Dataset):
    """A torch ``Dataset`` of fixed-length windows over episode files.

    Item ``i`` is a dict of tensors: ``frames`` uint8 (T,H,W,3), ``actions`` int64 (T,) (argmax of the
    one-hot; the all-zero ``action[0]`` maps to 0 = noop), ``rewards`` float32 (T,), ``positions`` float32
    (T,2) (``agent_pos``; zeros when the file has none), ``episode`` int64 (index into ``paths``),
    ``start`` int64.

    The index enumerates windows ``(episode, start)`` with ``start = 0, stride, 2*stride, ...``
    (``stride`` defaults to ``window``). With ``random_offset=False`` those are the windows returned
    (deterministic); with ``random_offset=True`` item ``i`` keeps the episode of window ``i`` but draws its
    start uniformly from all valid starts (seeded by ``seed`` and the DataLoader worker id). Episodes shorter
    than ``window`` frames are skipped. Decoded episodes are cached lazily (LRU, ``max_cached_episodes``).
    """

    def __init__(self, paths, window: int, random_offset: bool = True, seed: int = 0,
                 stride: int | None = None, max_cached_episodes: int = 256,
                 lengths: Sequence[int] | None = None):
        if hasattr(paths, "paths"):  # an EpisodeStore
            lengths = lengths if lengths is not None else paths.lengths
            paths = paths.paths
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("WindowDataset got no episode paths")
        if int(window) < 1:
            raise ValueError(f"window={window!r}: expected >= 1 frames")
        self.window = int(window)
        self.stride = int(stride) if stride is not None else self.window
        if self.stride < 1:
            raise ValueError(f"stride={stride!r}: expected >= 1")
        self.random_offset = bool(random_offset)
        self.seed = int(seed)
        self.max_cached_episodes = max(1, int(max_cached_episodes))
        if lengths is None:
            lengths = [episode_length(p) for p in self.paths]
        if len(lengths) != len(self.paths):
            raise ValueError(f"got {len(lengths)} lengths for {len(self.paths)} paths")
        self.lengths = [int(n) for n in lengths]
        self.episodes = [i for i, n in enumerate(self.lengths) if n >= self.window]
        if not self.episodes:
            raise ValueError(f"no episode is long enough for window={self.window}: need {self.window} "
                             f"frames, the longest of the {len(self.paths)} episode(s) has "
                             f"{max(self.lengths)}")
        self.index: list[tuple[int, int]] = [  # (episode, start) of every fixed window
            (ep, start)
            for ep in self.episodes
            for start in range(0, self.lengths[ep] - self.window + 1, self.stride)
        ]
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._rng = None
        self._rng_owner = None

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, ep: int) -> dict[str, np.ndarray]:
        if ep in self._cache:
            self._cache.move_to_end(ep)
            return self._cache[ep]
        data = load_episode(self.paths[ep])
        n = len(data["image"])
        pos = data.get("agent_pos")
        positions = np.asarray(pos, dtype=np.float32) if pos is not None else np.zeros((n, 2), np.float32)
        decoded = {
            "frames": data["image"],
            "actions": np.argmax(data["action"], axis=1).astype(np.int64),  # all-zero row -> 0 (noop)
            "rewards": np.asarray(data["reward"], dtype=np.float32),
            "positions": positions,
        }
        self._cache[ep] = decoded
        while len(self._cache) > self.max_cached_episodes:
            self._cache.popitem(last=False)
        return decoded

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        owner = (os.getpid(), info.id if info is not None else -1)
        if self._rng is None or self._rng_owner != owner:
            worker = info.id if info is not None else 0
            self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, worker]))
            self._rng_owner = owner
        return self._rng

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window index {i} out of range for {len(self)} windows")
        ep, start = self.index[i]
        if self.random_offset:
            start = int(self._generator().integers(0, self.lengths[ep] - self.window + 1))
        e = self._episode(ep)
        sl = slice(start, start + self.window)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(e["frames"][sl])),  # (T,H,W,3) uint8
            "actions": torch.from_numpy(e["actions"][sl].copy()),  # (T,) int64
            "rewards": torch.from_numpy(e["rewards"][sl].copy()),  # (T,) float32
            "positions": torch.from_numpy(e["positions"][sl].copy()),  # (T,2) float32
            "episode": torch.tensor(ep, dtype=torch.int64),
            "start": torch.tensor(start, dtype=torch.int64),
        }
