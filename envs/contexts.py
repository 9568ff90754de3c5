"""Real contexts for dreams: windows of real episodes (frames + the actions that led into them) to warm on.

A dream starts from real history: `ContextSampler` draws windows of an episode folder with the project's one
window sampler (`envs.episodes.WindowSampler`), keeps recently used episodes in memory, and validates every
episode fully (finite values, one-hot actions, data that decompresses) BEFORE a window of it is used, so a
bad file fails at the draw with its name, or with `skip_bad=True` is reported like everywhere else (the
store's `.bad` list and one warning) and another window is drawn. `check_user_context` validates a context
the user passes in instead.

Axis legend: Tc context frames, H x W x 3 frames (uint8).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
from gymnasium import spaces

from envs.episodes import EpisodeError, EpisodeStore, WindowSampler, read_header

__all__ = ["ContextSampler", "check_context_length", "check_user_context", "exact_int"]


def exact_int(value, what: str, minimum: int | None = None) -> int:
    """``value`` as an int if it is an integer (Python or numpy, not a bool, not a float or a string), else a
    ValueError naming ``what``; ``minimum`` bounds it from below."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what}={value!r}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{what}={value}: expected an integer >= {minimum}")
    return value


def check_context_length(n: int, need: int, what: str) -> None:
    """A ValueError unless a context of ``n`` frames reaches the model's minimum ``need``."""
    if n < need:
        raise ValueError(f"{what} has {n} frame(s), but the model needs at least {need} context frames")


def check_user_context(frames, actions, obs_shape, num_actions: int, need: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a context of the user's: frames uint8 (Tc, H, W, 3) and actions ints (Tc,) in [0, num_actions)
    (``actions[t]`` led into ``frames[t]``); returns them as (uint8, int64) arrays."""
    frames = np.asarray(frames)
    actions = np.asarray(actions)
    if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != tuple(obs_shape):
        raise ValueError(
            f"options['frames'] must be uint8 (Tc, {', '.join(map(str, obs_shape))}), got {frames.dtype} {frames.shape}"
        )
    if actions.ndim != 1 or len(actions) != len(frames) or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(
            f"options['actions'] must be integers of shape ({len(frames)},) (one per frame: the "
            f"action that led into it), got {actions.dtype} {actions.shape}"
        )
    if len(actions) and (actions.min() < 0 or actions.max() >= num_actions):
        raise ValueError(
            f"options['actions'] must lie in [0, {num_actions}), got values in [{actions.min()}, {actions.max()}]"
        )
    check_context_length(len(frames), need, "options['frames']")
    return frames, actions.astype(np.int64)


class ContextSampler:
    """Windows of the real episodes of one folder, checked against the model's spaces.

    Args:
        episodes: folder of episode files (`envs.episodes` format).
        obs_shape, num_actions: the model's frame shape and number of actions; an episode of another kind is
            refused naming both.
        source: what the model came from (for error messages).
        skip_bad: leave bad files out (reported in ``.store.bad`` with a warning) instead of raising.
        cache_size: decoded episodes kept in memory (least recently used dropped first).
    """

    def __init__(
        self, episodes, obs_shape, num_actions: int, source: str, skip_bad: bool = False, cache_size: int = 32
    ):
        if episodes is None:
            raise ValueError(
                "episodes=DIR is required: a folder of real episode files to take contexts from "
                "(or pass options={'frames': ..., 'actions': ...} to every reset)"
            )
        folder = Path(os.fspath(episodes))
        if not folder.is_dir():
            raise FileNotFoundError(f"episode folder not found: {folder}")
        self.store = EpisodeStore(folder, skip_bad=skip_bad)  # header checks: names a bad file, or skips it
        self.folder = folder
        self.paths = list(self.store.paths)
        self.lengths = np.asarray(self.store.lengths, dtype=np.int64)  # frames per episode (T+1)
        self.windows = WindowSampler(self.lengths, self.paths)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = int(num_actions)
        self.source = source
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self._cache_size = int(cache_size)
        self._check_kind(0)  # the data against the model's spaces, right away (headers only: no decoding)

    def __len__(self) -> int:
        return len(self.paths)

    def _check_kind(self, index: int) -> None:
        """Refuse an episode whose frames or actions are of another kind than the model's, naming both."""
        header = {k: v[0] for k, v in read_header(self.paths[index]).items()}
        img, act = header["image"], header["action"]
        if tuple(img[1:]) != self.obs_shape or len(act) != 2 or act[1] != self.num_actions:
            obs = f"Box(0, 255, {tuple(img[1:])}, uint8)"
            got = spaces.Discrete(int(act[1])) if len(act) == 2 else f"actions {act}"
            raise ValueError(
                f"checkpoint {self.source} was trained for observation space "
                f"{spaces.Box(0, 255, self.obs_shape, np.uint8)} and action space "
                f"{spaces.Discrete(self.num_actions)}, but episode {self.paths[index]} has observation space "
                f"{obs} and action space {got}"
            )

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(frames uint8 (T+1, H, W, 3), actions int64 (T+1,)) of episode ``index``, fully validated; None if
        the file is bad and ``skip_bad`` (it is then reported and never drawn again)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        self._check_kind(index)
        ep = self.store.load(index, keys=("image", "action", "reward"))
        if ep is None:
            self.windows.drop(index)
            return None
        actions = ep["action"].argmax(-1).astype(np.int64)  # one-hot (T+1, A) -> index; the all-zero first: noop
        self._cache[index] = (ep["image"], actions)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return self._cache[index]

    def index_of(self, episode) -> int:
        """An episode given as an index or a path (absolute, or a file name in the folder) -> its index."""
        if isinstance(episode, (int, np.integer)) and not isinstance(episode, (bool, np.bool_)):
            if not 0 <= int(episode) < len(self.paths):
                raise ValueError(
                    f"options['episode']={int(episode)} is out of range: {self.folder} holds "
                    f"{len(self.paths)} episodes (0..{len(self.paths) - 1})"
                )
            return int(episode)
        if not isinstance(episode, (str, os.PathLike)):
            raise ValueError(f"options['episode']={episode!r}: expected an episode index (int) or a file path")
        p = Path(os.fspath(episode))
        for i, q in enumerate(self.paths):
            if q == p or q.resolve() == p.resolve() or (not p.is_absolute() and q.name == p.name):
                return i
        raise ValueError(f"options['episode']={str(episode)!r} is not an episode of {self.folder}")

    def window(self, index: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """frames (Tc, H, W, 3), actions (Tc,) of episode ``index`` from frame ``start`` (a bad file raises)."""
        n = int(self.lengths[index])
        if length > n:
            raise ValueError(
                f"episode {self.paths[index]} has {n} frames, fewer than the {length} context frames asked for"
            )
        if not 0 <= start <= n - length:
            raise ValueError(
                f"options['start']={start} is out of range for episode {self.paths[index]}: "
                f"{n} frames and a {length}-frame context allow starts 0..{n - length}"
            )
        ep = self.episode(index)
        if ep is None:
            bad = dict(self.store.bad)[self.paths[index]]
            raise EpisodeError(self.paths[index], bad)
        frames, actions = ep
        return frames[start : start + length], actions[start : start + length]

    def sample(self, rng: np.random.Generator, length: int) -> tuple[int, int]:
        """A random (episode index, start) with a full ``length``-frame window of a VALID episode, uniform over
        windows; a bad file met on the way is raised (or, with ``skip_bad``, reported and another drawn)."""
        while True:
            index, start = self.windows.sample(length, 1, rng)[0]  # ValueError when no episode is long enough
            if self.episode(index) is not None:
                return index, start
