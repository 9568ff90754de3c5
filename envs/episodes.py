"""Episode files, the data layer: read, validate, write, split, and sample fixed-length windows.

Everything else builds on this module (real envs and collection, the world model, the dream env); it imports
only numpy, torch and the data layer's file helpers (``envs.fileio``).

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
action_box     (T+1, 4)            optional, ours: raw controls of Minecraft data (``envs.convert``) as
                                   [forward, jump, camera pitch, camera yaw]; action_box[0] = 0
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

import hashlib
import json
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from envs.fileio import atomic_write

__all__ = [
    "OFFICIAL_KEYS",
    "REQUIRED_KEYS",
    "EpisodeError",
    "EpisodeStore",
    "WindowSampler",
    "check_episode",
    "derived_seed",
    "episode_length",
    "file_digest",
    "load_episode",
    "read_header",
    "save_episode",
]

OFFICIAL_KEYS = (
    "image",
    "action",
    "reward",
    "maze_layout",
    "agent_pos",
    "agent_dir",
    "targets_pos",
    "targets_vec",
    "target_pos",
    "target_vec",
    "target_color",
)
REQUIRED_KEYS = ("image", "action", "reward")
OUR_EXTRA_KEYS = ("phase", "action_box")
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
    "action_box": (4,),
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
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:  # rare (3, 0): read the member itself
                        arr = np.lib.format.read_array(f, allow_pickle=False)
                        shape, dtype = arr.shape, arr.dtype
                    data_offset = f.tell()
                key, dtype = name[: -len(".npy")], np.dtype(dtype)
                # A header may lie about the shape (a forged or corrupt file): the data behind it must be
                # at least as large as the shape says, or the length would set sampling weights and
                # allocations that the file cannot back. `file_size` is the member's uncompressed size as
                # the archive records it; decompression later checks that too (CRC and length).
                claimed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                held = info.file_size - data_offset
                if not dtype.hasobject and claimed > held:
                    raise EpisodeError(
                        path,
                        f"'{key}' header claims shape {tuple(shape)} ({claimed} bytes) but "
                        f"the archive member holds only {max(held, 0)} bytes of data "
                        f"(forged or corrupt header)",
                    )
                header[key] = (tuple(shape), dtype)
    except EpisodeError:
        raise
    except _READ_ERRORS as e:
        raise EpisodeError(path, f"not a readable .npz archive (corrupt or truncated?): {type(e).__name__}: {e}") from e
    if not header:
        raise EpisodeError(path, "the archive holds no arrays")
    return header


def file_digest(path) -> str:
    """SHA-256 (hex) of a file's bytes: identifies an episode file's content, e.g. to record a train/test split."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_shapes(path, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> int:
    """Header-level checks; returns the number of frames T+1."""
    missing = [k for k in REQUIRED_KEYS if k not in shapes]
    if missing:
        raise EpisodeError(
            path,
            f"missing key(s) {missing}; found {sorted(shapes)} "
            f"(expected the Memory Maze offline-dataset keys {list(OFFICIAL_KEYS)})",
        )
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
                raise EpisodeError(
                    path, f"'maze_layout' has shape {shape}, expected (T+1, n, n) = ({n}, n, n) or (n, n)"
                )
            continue
        if key not in _TRAILING:
            continue  # extra keys (e.g. official 'terminal', 'reset') are allowed and ignored
        if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
            raise EpisodeError(path, f"'{key}' has non-numeric dtype {dtype}")
        want = _TRAILING[key]
        if len(shape) != 1 + len(want) or shape[0] != n:
            raise EpisodeError(
                path,
                f"'{key}' has shape {shape}, expected {_describe(n, want)} "
                f"(the time axis must match the {n} frames of 'image')",
            )
        for size, w in zip(shape[1:], want):
            if w == "K":
                if k_size is None:
                    k_size = size
                elif size != k_size:
                    raise EpisodeError(path, f"'{key}' has {size} targets but another targets_* key has {k_size}")
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

    Returns the official keys present in the file (at least image, action, reward) plus ``phase`` and
    ``action_box`` if present;
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
        raise EpisodeError(path, f"cannot decode the arrays (corrupt or truncated?): {type(e).__name__}: {e}") from e
    _check_values(path, data)
    return data


# --- writing ----------------------------------------------------------------------------------------------
def save_episode(path, data: dict[str, np.ndarray]) -> Path:
    """Validate and write one episode atomically (``envs.fileio.atomic_write``: temp file, fsync, rename).

    The temp name ``.<name>.<random>.tmp`` never matches ``*.npz``, so readers never see a partial file.
    """
    path = Path(path)
    check_episode(path, data)
    with atomic_write(path) as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez_compressed(f, **data)
    return path


# --- a folder of episodes ---------------------------------------------------------------------------------
class EpisodeStore:
    """The episode files (``*.npz``, sorted) of one folder, header-checked; loads validate values too.

    Bad files are reported one way everywhere: ``skip_bad=False`` raises :class:`EpisodeError` naming the file;
    ``skip_bad=True`` leaves the file out, lists it in ``.bad`` as ``(path, reason)`` and warns with the list.
    The header check runs on every file at construction (cheap: no decompression); the value check (finite
    numbers, one-hot actions, data that decompresses) runs when an episode is loaded with :meth:`load`, so a
    file that passes its header but not its values is reported at that point, the same way.
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
        self.skip_bad = bool(skip_bad)
        self.paths: list[Path] = []
        self.lengths: list[int] = []  # frames (T+1) per episode, aligned with .paths
        self.bad: list[tuple[Path, str]] = []
        found = []
        for p in candidates:
            try:
                n = episode_length(p)
            except EpisodeError as e:
                if not self.skip_bad:
                    raise
                found.append(e)
                continue
            self.paths.append(p)
            self.lengths.append(n)
        self._report(found)
        if not self.paths:
            raise FileNotFoundError(
                f"episode folder {self.folder} holds no readable episodes ({len(self.bad)} bad file(s), see .bad)"
            )

    def _report(self, errors: list[EpisodeError]) -> None:
        """Record bad files in ``.bad`` and warn once with the list (the one way bad files are reported)."""
        if not errors:
            return
        self.bad.extend((e.path, e.problem) for e in errors)
        listing = "; ".join(f"{e.path.name}: {e.problem}" for e in errors)
        warnings.warn(f"{self.folder}: skipped {len(errors)} bad episode file(s): {listing}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (
            f"EpisodeStore({str(self.folder)!r}: {len(self)} episodes, {sum(self.lengths)} frames, {len(self.bad)} bad)"
        )

    def load(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray] | None:
        """Episode ``index`` fully validated (:func:`load_episode`). A bad file raises :class:`EpisodeError`,
        or with ``skip_bad=True`` is reported (``.bad`` + a warning) and None is returned: the caller drops it
        (e.g. :meth:`WindowSampler.drop`) and draws another."""
        try:
            return load_episode(self.paths[index], keys=keys)
        except EpisodeError as e:
            if not self.skip_bad:
                raise
            self._report([e])
            return None

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


# --- windows ------------------------------------------------------------------------------------------------
def derived_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer ``keys`` (e.g. run seed, step, sample) with numpy's SeedSequence:
    independent streams for different keys, the same for the same keys on every machine and process."""
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 for k in keys):
        raise ValueError(f"derived_seed takes integers >= 0, got {keys!r}")
    # the key count first: SeedSequence pads with zeros, so (7, 1) and (7, 1, 0) would otherwise be one stream
    entropy = [len(keys), *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _check_share(batch: int, rank: int, world_size: int) -> None:
    """ValueError unless ``batch`` windows split evenly into ``world_size`` shares and ``rank`` names one."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size={world_size!r}: expected a number of processes >= 1")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}: expected 0..{world_size - 1} (world_size={world_size})")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1 or batch % world_size:
        raise ValueError(
            f"batch={batch!r}: the global batch must be a multiple of the {world_size} process(es) (each draws an "
            f"equal share)"
        )


class WindowSampler:
    """Random fixed-length windows over episodes, uniform over every (episode, start) pair.

    The one sampler of the project: training draws its latent windows with it (:meth:`step_batch`: each
    process's share of a step's global batch, seeded by the run's seed and the step, so a resumed run and a run
    on any number of processes draw exactly the batches an uninterrupted one-process run would) and the dream
    env its real contexts (:meth:`sample`, with the env's ``np_random``). It only deals in indices; the caller
    slices its own arrays.

    ``lengths`` are frame counts (T+1) per episode; ``names`` (e.g. file paths) only appear in error messages.
    """

    def __init__(self, lengths: Sequence[int], names: Sequence[str] | None = None):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError(f"WindowSampler needs a non-empty list of episode lengths, got {lengths!r}")
        if (self.lengths < 0).any():
            raise ValueError(f"WindowSampler: negative episode length in {self.lengths.tolist()}")
        self.names = [str(n) for n in names] if names is not None else [f"episode {i}" for i in range(len(lengths))]
        self.active = np.ones(len(self.lengths), dtype=np.bool_)  # False = dropped (a bad file)

    def __len__(self) -> int:
        return len(self.lengths)

    def _windows(self, window: int) -> np.ndarray:
        """Number of valid starts per episode (0 for dropped or too-short episodes)."""
        if int(window) < 1:
            raise ValueError(f"window={window!r}: expected >= 1 frames")
        return np.maximum(self.lengths - int(window) + 1, 0) * self.active

    def count(self, window: int) -> int:
        """How many distinct windows of ``window`` frames there are."""
        return int(self._windows(window).sum())

    def _usable(self, window: int) -> tuple[np.ndarray, int]:
        """(valid starts per episode, their total); a ValueError naming the longest episode when there is none."""
        per_episode = self._windows(window)
        total = int(per_episode.sum())
        if total == 0:
            live = self.lengths[self.active]
            longest = int(live.max()) if len(live) else 0
            raise ValueError(
                f"no episode has the {int(window)} frames a window needs (longest of "
                f"{int(self.active.sum())} usable episode(s): {longest} frames)"
            )
        return per_episode, total

    @staticmethod
    def _locate(per_episode: np.ndarray, flat: np.ndarray) -> list[tuple[int, int]]:
        """Flat window indices -> (episode index, start) pairs."""
        ends = np.cumsum(per_episode)
        episode = np.searchsorted(ends, flat, side="right")
        start = flat - (ends[episode] - per_episode[episode])
        return [(int(e), int(s)) for e, s in zip(episode, start)]

    def sample(self, window: int, n: int, rng: np.random.Generator | torch.Generator) -> list[tuple[int, int]]:
        """``n`` random ``(episode index, start)`` pairs, each window ``start : start + window`` inside its
        episode. ``rng`` is a numpy ``Generator`` or a ``torch.Generator``."""
        per_episode, total = self._usable(window)
        # 1. a flat index over all windows, 2. the episode it falls in, 3. the start inside that episode
        if isinstance(rng, torch.Generator):
            flat = torch.randint(total, (int(n),), generator=rng).numpy()
        elif isinstance(rng, np.random.Generator):
            flat = rng.integers(total, size=int(n))
        else:
            raise TypeError(f"rng must be a numpy Generator or a torch.Generator, got {type(rng).__name__}")
        return self._locate(per_episode, flat)

    def step_batch(
        self, window: int, batch: int, seed: int, step: int, rank: int = 0, world_size: int = 1
    ) -> tuple[list[tuple[int, int]], range]:
        """Process ``rank``'s share of the global batch of optimiser step ``step``: ``(pairs, ids)``, the
        ``(episode index, start)`` pairs of global batch positions ``ids`` (a range of ``batch / world_size``).

        The global batch is ``batch`` windows drawn from a generator seeded by ``derived_seed(seed, step)``, so it
        depends on the seed and the step only: every process draws the same batch and keeps its share (a
        resumed run, or a run on another number of processes, sees the same windows). No window appears twice
        in a step while the data holds ``batch`` distinct windows (with fewer, every one appears before any
        repeats). A ValueError when ``batch`` does not divide into ``world_size`` shares or ``rank`` is not one."""
        _check_share(batch, rank, world_size)
        per_episode, total = self._usable(window)
        gen = torch.Generator().manual_seed(derived_seed(seed, step))
        if total <= 2 * batch:  # few windows: permutations, cut (each window once before any repeats)
            rounds = -(-batch // total)
            flat = torch.cat([torch.randperm(total, generator=gen) for _ in range(rounds)])[:batch].numpy()
        else:  # draw with replacement, then redraw the repeats (few when there are many windows)
            picked: dict[int, None] = {}
            while len(picked) < batch:
                for f in torch.randint(total, (batch - len(picked),), generator=gen).tolist():
                    picked.setdefault(f, None)
            flat = np.fromiter(picked, dtype=np.int64, count=batch)
        share = batch // world_size
        ids = range(rank * share, (rank + 1) * share)
        return self._locate(per_episode, flat[ids.start : ids.stop]), ids

    def drop(self, index: int) -> None:
        """Never sample episode ``index`` again (e.g. its file turned out bad when loaded)."""
        self.active[int(index)] = False
