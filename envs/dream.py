"""The dream environment: a trained world model served as a Gymnasium env, single and vectorised.

    env = gymnasium.make("longdream/Dream-v0", checkpoint="runs/demo/checkpoint.pt",
                         episodes="data/episodes/mm9")
    obs, info = env.reset(seed=0)                 # warmed on a random window of a real episode
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    venv = DreamVectorEnv(checkpoint=..., episodes=..., num_envs=64)   # many dreams through one model
    sb3_env = DreamSB3VecEnv(venv)                                       # stable-baselines3's VecEnv API

Axis legend: N parallel dreams (slots), Tc context frames, H x W x 3 frames (uint8).

How a dream runs (see worldmodel/model.py for the model's side):
  1. reset picks a real context: `context_frames` frames image[s:s+Tc] of an episode with the actions that
     led into them (action[t] led INTO image[t], the Memory Maze offline-dataset convention), or frames and
     actions passed in `options`; the model is warmed on it with `WorldModel.start`;
  2. the returned observation is the last real context frame;
  3. each `step(a)` imagines the frame that action `a` leads into (`WorldModel.step`) and predicts its reward;
  4. `terminated` is always False (Memory Maze has no terminal states and the model predicts none);
     `truncated` is True once `max_episode_steps` frames have been imagined.

Randomness: `reset(seed=s)` seeds the env's `np_random`, which picks the context window and seeds the torch
Generator of the dream's noise, so the same seed, context and actions give the same frames.

The vector env autoresets in `SAME_STEP` mode (declared in `metadata["autoreset_mode"]`): when a slot's
episode ends, the same `step` call returns the first observation of its next episode, and the last imagined
frame goes into `info["final_obs"]` (with `info["final_info"]`). Finished slots are warmed on new real
contexts in one batched `WorldModel.start` and written into the batched dream state; the other slots keep
dreaming untouched. SAME_STEP is what stable-baselines3 expects (`terminal_observation`), so the SB3 adapter
is a thin translation.
"""

from __future__ import annotations

import collections
import contextlib
import os
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = [
    "DreamEnv",
    "DreamVectorEnv",
    "DreamSB3VecEnv",
    "ContextSampler",
    "ResetNeeded",
    "state_take",
    "state_put",
    "register_dream",
    "DEFAULT_CONTEXT_FRAMES",
    "DEFAULT_MAX_EPISODE_STEPS",
    "PRECISIONS",
]

DEFAULT_CONTEXT_FRAMES = 16       # real frames a dream is warmed on, unless the user or the model wants more
DEFAULT_MAX_EPISODE_STEPS = 1000  # imagined frames per episode (Memory Maze 9x9's real time limit)


# ---------------------------------------------------------------------- model and spaces


def _load_model(checkpoint, device):
    """A WorldModel from a checkpoint path (eval mode) or an already built WorldModel, in inference layout."""
    from worldmodel.model import WorldModel, load

    if isinstance(checkpoint, WorldModel):
        return _inference_layout(checkpoint.eval()), "<WorldModel instance>"
    if checkpoint is None:
        raise ValueError("DreamEnv needs checkpoint=PATH to a trained world model (RUN_DIR/checkpoint.pt)")
    path = Path(os.fspath(checkpoint))
    if not path.is_file():
        raise FileNotFoundError(f"world-model checkpoint not found: {path}")
    return _inference_layout(load(path, device=device)), str(path)


def _inference_layout(model):
    """Store the autoencoder's convolution weights channels-last (NHWC), in place: the same math, but oneDNN
    runs the decoder ~3x faster on CPU in that layout (frames equal to the default layout's up to float
    rounding, at most one intensity level; see benchmarks/dream_speed.py). A model passed in is converted
    too; it stays usable for anything else."""
    model.autoencoder.to(memory_format=torch.channels_last)
    return model


PRECISIONS = ("fp32", "bf16")


def _autocast(model, precision: str):
    """A context-manager factory running the model in `precision`: "fp32" (exact, the default) or "bf16"
    (torch.autocast: matmuls and convolutions in bfloat16, several times faster on CPUs with AMX/AVX512-BF16;
    frames may differ from fp32 by a few intensity levels, see benchmarks/dream_speed.py)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext
    device_type = model.device.type
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16)


def _spaces_of(model) -> tuple[spaces.Box, spaces.Discrete]:
    cfg = model.config
    obs = spaces.Box(0, 255, tuple(cfg.obs_shape), np.uint8)
    act = spaces.Discrete(int(cfg.num_actions))
    return obs, act


def _setup(env, checkpoint, device, precision, observation_space, action_space, render_mode, name,
           context_frames, max_episode_steps):
    """What DreamEnv and DreamVectorEnv share: check render_mode, load the model, set precision, context length
    and episode limit, and return the model's (observation, action) spaces after checking them against the ones
    the caller asks for."""
    if render_mode is not None and render_mode not in env.metadata["render_modes"]:
        raise ValueError(f"render_mode={render_mode!r}: {name} supports {env.metadata['render_modes']}")
    env.model, env.source = _load_model(checkpoint, device)
    env.precision = precision
    env._amp = _autocast(env.model, precision)
    obs_space, act_space = _spaces_of(env.model)
    _check_spaces(obs_space, act_space, env.source, observation_space, action_space,
                  "the env it is asked to stand in for")
    env.min_context_frames = int(env.model.config.min_context_frames)
    env.context_frames = int(context_frames if context_frames is not None
                             else max(env.min_context_frames, DEFAULT_CONTEXT_FRAMES))
    _check_context_length(env.context_frames, env.min_context_frames, f"context_frames={env.context_frames}")
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    env.max_episode_steps = int(max_episode_steps)
    env.render_mode = render_mode
    return obs_space, act_space


def _check_spaces(model_obs, model_act, source: str, obs=None, act=None, against: str = "") -> None:
    """Raise naming both sides when the checkpoint's spaces differ from the expected ones."""
    bad_obs = obs is not None and obs != model_obs
    bad_act = act is not None and act != model_act
    if bad_obs or bad_act:
        raise ValueError(
            f"checkpoint {source} was trained for observation space {model_obs} and action space "
            f"{model_act}, but {against} has observation space {obs if obs is not None else model_obs} "
            f"and action space {act if act is not None else model_act}")


class ResetNeeded(gymnasium.error.ResetNeeded, RuntimeError):
    """step()/render() before reset() or after the episode ended: a RuntimeError like the real env's
    (envs/memory_maze.py) that is also Gymnasium's ResetNeeded."""


def _check_action(action, n: int) -> int:
    """The real env's check (envs/memory_maze.py `_as_action`): a ValueError unless an integer in [0, n)."""
    arr = np.asarray(action)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action={action!r}: expected an integer in [0, {n})")
    a = int(arr)
    if not 0 <= a < n:
        raise ValueError(f"action={a}: expected an integer in [0, {n})")
    return a


def _check_actions(actions, num_envs: int, n: int) -> np.ndarray:
    """Batched `_check_action`: a ValueError unless integers of shape (num_envs,) in [0, n)."""
    arr = np.asarray(actions)
    if arr.shape != (num_envs,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"actions={actions!r}: expected integers in [0, {n}) of shape ({num_envs},), "
                         f"got {arr.dtype} {arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr >= n))
    if len(bad):
        raise ValueError(f"actions[{int(bad[0])}]={int(arr[bad[0]])}: expected integers in [0, {n})")
    return arr.astype(np.int64)


# ---------------------------------------------------------------------- real contexts


class ContextSampler:
    """Windows of real episodes (frames + the actions that led into them) to warm dreams on.

    `episodes` is a folder of episode files (envs.episodes); episodes are loaded lazily and the last
    `cache_size` of them kept in memory.
    """

    def __init__(self, episodes, obs_shape, num_actions: int, source: str, cache_size: int = 32):
        from envs.episodes import EpisodeStore

        if episodes is None:
            raise ValueError("episodes=DIR is required: a folder of real episode files to take contexts from "
                             "(or pass options={'frames': ..., 'actions': ...} to every reset)")
        folder = Path(os.fspath(episodes))
        if not folder.is_dir():
            raise FileNotFoundError(f"episode folder not found: {folder}")
        store = EpisodeStore(folder)  # FileNotFoundError naming the folder when it holds no episode files
        self.folder = folder
        self.paths = [Path(p) for p in store.paths]
        self.lengths = np.asarray(store.lengths, dtype=np.int64)   # frames per episode (T+1)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = int(num_actions)
        self.source = source
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self._cache_size = cache_size
        self.episode(0)  # checks the data against the model's spaces right away

    def __len__(self) -> int:
        return len(self.paths)

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames uint8 (T+1, H, W, 3), actions int64 (T+1,)) of episode `index`."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        from envs.episodes import load_episode

        path = self.paths[index]
        ep = load_episode(path, keys=("image", "action", "reward"))
        frames = np.asarray(ep["image"])
        onehot = np.asarray(ep["action"])
        if frames.dtype != np.uint8 or tuple(frames.shape[1:]) != self.obs_shape or onehot.ndim != 2 \
                or onehot.shape[1] != self.num_actions:
            obs = f"Box(0, 255, {tuple(frames.shape[1:])}, {frames.dtype})"
            act = spaces.Discrete(int(onehot.shape[-1])) if onehot.ndim == 2 else f"actions {onehot.shape}"
            raise ValueError(
                f"checkpoint {self.source} was trained for observation space "
                f"{spaces.Box(0, 255, self.obs_shape, np.uint8)} and action space "
                f"{spaces.Discrete(self.num_actions)}, but episode {path} has observation space {obs} and "
                f"action space {act}")
        actions = onehot.argmax(-1).astype(np.int64)  # one-hot (T+1, A) -> index; the all-zero first is noop
        self._cache[index] = (frames, actions)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return frames, actions

    def index_of(self, episode) -> int:
        """An episode given as an index or a path (absolute, or a file name in the folder) -> its index."""
        if isinstance(episode, (int, np.integer)):
            if not 0 <= int(episode) < len(self.paths):
                raise ValueError(f"options['episode']={int(episode)} is out of range: {self.folder} holds "
                                 f"{len(self.paths)} episodes (0..{len(self.paths) - 1})")
            return int(episode)
        p = Path(os.fspath(episode))
        for i, q in enumerate(self.paths):
            if q == p or q.resolve() == p.resolve() or (not p.is_absolute() and q.name == p.name):
                return i
        raise ValueError(f"options['episode']={str(episode)!r} is not an episode of {self.folder}")

    def window(self, index: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """frames (Tc, H, W, 3), actions (Tc,) of episode `index` from frame `start`."""
        n = int(self.lengths[index])
        if length > n:
            raise ValueError(f"episode {self.paths[index]} has {n} frames, fewer than the {length} context "
                             f"frames asked for")
        if not 0 <= start <= n - length:
            raise ValueError(f"options['start']={start} is out of range for episode {self.paths[index]}: "
                             f"{n} frames and a {length}-frame context allow starts 0..{n - length}")
        frames, actions = self.episode(index)
        return frames[start: start + length], actions[start: start + length]

    def sample(self, rng: np.random.Generator, length: int) -> tuple[int, int]:
        """A random (episode index, start) with a full `length`-frame window, uniform over windows."""
        windows = np.maximum(self.lengths - length + 1, 0)
        if windows.sum() == 0:
            raise ValueError(f"no episode in {self.folder} has the {length} frames a context needs "
                             f"(longest: {int(self.lengths.max())} frames)")
        flat = int(rng.integers(int(windows.sum())))
        index = int(np.searchsorted(np.cumsum(windows), flat, side="right"))
        start = flat - int(np.cumsum(windows)[index] - windows[index])
        return index, start


def _check_context_length(n: int, need: int, what: str) -> None:
    if n < need:
        raise ValueError(f"{what} has {n} frame(s), but the model needs at least {need} context frames")


def _user_context(frames, actions, obs_shape, num_actions: int, need: int):
    """Validate options['frames'] (Tc, H, W, 3) uint8 and options['actions'] (Tc,) ints."""
    frames = np.asarray(frames)
    actions = np.asarray(actions)
    if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != tuple(obs_shape):
        raise ValueError(f"options['frames'] must be uint8 (Tc, {', '.join(map(str, obs_shape))}), "
                         f"got {frames.dtype} {frames.shape}")
    if actions.ndim != 1 or len(actions) != len(frames) or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"options['actions'] must be integers of shape ({len(frames)},) (one per frame: the "
                         f"action that led into it), got {actions.dtype} {actions.shape}")
    if len(actions) and (actions.min() < 0 or actions.max() >= num_actions):
        raise ValueError(f"options['actions'] must lie in [0, {num_actions}), got values in "
                         f"[{actions.min()}, {actions.max()}]")
    _check_context_length(len(frames), need, "options['frames']")
    return frames, actions.astype(np.int64)


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))


# ---------------------------------------------------------------------- batched dream states
# The backbone's streaming state is a nested dict/list whose tensors all carry the batch on axis 0 (per-slot
# frame counters included: worldmodel/backbone.py "State layout"), so slots can be gathered and scattered.


def _check_batch(x: torch.Tensor, batch: int) -> None:
    if x.dim() == 0 or x.shape[0] != batch:
        raise ValueError(f"backbone state tensor of shape {tuple(x.shape)} has no batch axis of {batch} "
                         f"dreams on axis 0")


def state_take(state, index: torch.Tensor, batch: int):
    """The slots `index` (K,) of a batched backbone state of `batch` dreams, as a state of K dreams."""
    from worldmodel.backbone import map_state

    def take(x):
        _check_batch(x, batch)
        return x[index.to(x.device)]                                       # (K, ...)
    return map_state(take, state)


def state_put(state, index: torch.Tensor, sub, batch: int):
    """A copy of the batched state with slots `index` (K,) replaced by the K-dream state `sub`.

    Both states must have the same per-slot shapes: true for every backbone with bounded caches; the
    full-attention baseline ("causal_full"), whose KV cache grows with the frames seen, cannot mix slots.
    """
    def walk(x, y, where):
        if isinstance(x, torch.Tensor):
            _check_batch(x, batch)
            if tuple(x.shape[1:]) != tuple(y.shape[1:]) or y.shape[0] != len(index):
                raise ValueError(
                    f"backbone state {where}: cannot write slots of shape {tuple(y.shape)} into a batch of "
                    f"shape {tuple(x.shape)} (a cache that grows with the frames seen, e.g. the causal_full "
                    f"baseline, cannot be refilled per slot)")
            out = x.clone()
            out[index.to(x.device)] = y.to(device=x.device, dtype=x.dtype)  # (K, ...) into (B, ...)
            return out
        if isinstance(x, dict):
            if set(x) != set(y):
                raise ValueError(f"backbone state {where}: keys differ: {sorted(x)} vs {sorted(y)}")
            return {key: walk(x[key], y[key], f"{where}.{key}") for key in x}
        if isinstance(x, (list, tuple)):
            if len(x) != len(y):
                raise ValueError(f"backbone state {where}: lengths differ: {len(x)} vs {len(y)}")
            out = [walk(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(x, y))]
            return out if isinstance(x, list) else tuple(out)
        if x != y:
            raise ValueError(f"backbone state {where}: a shared non-tensor value differs between dreams "
                             f"({x!r} vs {y!r}): slots cannot be refilled independently")
        return x
    return walk(state, sub, "state")


# ---------------------------------------------------------------------- the single env


class DreamEnv(gymnasium.Env):
    """A trained world model as a `gymnasium.Env` with the real env's observation and action spaces.

    Args:
        checkpoint: path of a `RUN_DIR/checkpoint.pt` (or a `WorldModel` instance).
        episodes: folder of real episode files contexts are taken from.
        context_frames: real frames the dream is warmed on at reset (default: max(model's minimum, 16)).
        max_episode_steps: imagined frames before `truncated` (default 1000, Memory Maze 9x9's limit).
        device: "auto" | "cpu" | "cuda" ...
        render_mode: "rgb_array" (the only mode) or None.
        observation_space / action_space: optional expected spaces (e.g. the real env's); a checkpoint
            trained for other spaces is refused with an error naming both.
        precision: "fp32" (default, exact) or "bf16" (autocast: faster on CPUs with bf16 units).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self, checkpoint=None, episodes=None, context_frames: int | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS, device: str = "auto",
        render_mode: str | None = "rgb_array", observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None, precision: str = "fp32",
    ):
        self.observation_space, self.action_space = _setup(
            self, checkpoint, device, precision, observation_space, action_space, render_mode, "DreamEnv",
            context_frames, max_episode_steps)
        self.contexts = None if episodes is None else ContextSampler(
            episodes, self.observation_space.shape, self.action_space.n, self.source)
        self._dream = None
        self._frame: np.ndarray | None = None
        self._t = 0
        self._context_source: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        frames, actions, source = self._context(options)
        gen = _torch_generator(self.np_random)
        fr = torch.from_numpy(np.ascontiguousarray(frames))[None]                # (1, Tc, H, W, 3)
        ac = torch.from_numpy(np.ascontiguousarray(actions))[None]                # (1, Tc)
        with self._amp():
            self._dream = self.model.start(fr, ac, generator=gen)
        self._frame = np.array(frames[-1], copy=True)
        self._t = 0
        self._context_source = source
        return self._frame.copy(), self._info()

    def _context(self, options: dict):
        unknown = set(options) - {"episode", "start", "context_frames", "frames", "actions"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; known: episode, start, "
                             f"context_frames (a real window) or frames, actions (a context of your own)")
        if "frames" in options or "actions" in options:
            if "frames" not in options or "actions" not in options:
                raise ValueError("options must give both 'frames' (Tc, H, W, 3) uint8 and 'actions' (Tc,)")
            if {"episode", "start", "context_frames"} & set(options):
                raise ValueError("options: give either frames/actions or episode/start/context_frames, "
                                 "not both")
            frames, actions = _user_context(options["frames"], options["actions"],
                                            self.observation_space.shape, self.action_space.n,
                                            self.min_context_frames)
            return frames, actions, "user"
        length = int(options.get("context_frames", self.context_frames))
        _check_context_length(length, self.min_context_frames, f"options['context_frames']={length}")
        if self.contexts is None:
            raise ValueError("this DreamEnv has no episodes folder: pass episodes=DIR at construction, or "
                             "options={'frames': ..., 'actions': ...} to reset")
        if "episode" in options:
            index = self.contexts.index_of(options["episode"])
            if "start" in options:
                start = int(options["start"])
            else:
                start = int(self.np_random.integers(max(int(self.contexts.lengths[index]) - length, 0) + 1))
        else:
            if "start" in options:
                raise ValueError("options['start'] needs options['episode'] too")
            index, start = self.contexts.sample(self.np_random, length)
        frames, actions = self.contexts.window(index, start, length)
        return frames, actions, {"episode": str(self.contexts.paths[index]), "start": start}

    def _info(self) -> dict[str, Any]:
        src = self._context_source
        return {"step": self._t, "context_source": dict(src) if isinstance(src, dict) else src}

    @property
    def dream(self):
        """The current `worldmodel.model.DreamState` (None before reset): planners can fork imagined rollouts
        from it with `model.step`, which never modifies it."""
        return self._dream

    def step(self, action):
        if self._dream is None:
            raise ResetNeeded("DreamEnv: call reset() before step()")
        if self._t >= self.max_episode_steps:
            raise ResetNeeded(
                f"DreamEnv: the episode ended (truncated at max_episode_steps={self.max_episode_steps}); "
                f"call reset()")
        a = _check_action(action, int(self.action_space.n))
        with self._amp():
            frames, rewards, self._dream = self.model.step(self._dream, torch.tensor([a], dtype=torch.int64))
        self._frame = frames[0].cpu().numpy()
        self._t += 1
        truncated = self._t >= self.max_episode_steps
        return self._frame.copy(), float(rewards[0]), False, truncated, self._info()

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("DreamEnv.render() without render_mode: use render_mode='rgb_array'")
            return None
        if self._frame is None:
            raise ResetNeeded("DreamEnv: call reset() before render()")
        return self._frame.copy()


# ---------------------------------------------------------------------- the vector env


class DreamVectorEnv(VectorEnv):
    """`num_envs` dreams batched through one world model (`gymnasium.vector.VectorEnv`, SAME_STEP autoreset).

    All slots are warmed on `context_frames`-frame windows of real episodes; finished slots (truncated at
    `max_episode_steps`) are refilled from new random windows inside the same `step`.

    reset options: {"reset_mask": bool (N,)} resets only those slots (Gymnasium 1.x); {"frames": uint8
    (K, Tc, H, W, 3), "actions": int (K, Tc)} warms the K reset slots on contexts of your own.
    info keys (with their "_key" masks): "step" (N,), "context_source" (N,) objects; after a slot ends,
    "final_obs" and "final_info" as Gymnasium's SAME_STEP vector envs give them.
    Arguments: those of `DreamEnv`, plus `num_envs`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self, checkpoint=None, episodes=None, num_envs: int = 1, context_frames: int | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS, device: str = "auto",
        render_mode: str | None = "rgb_array", observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None, precision: str = "fp32",
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.single_observation_space, self.single_action_space = _setup(
            self, checkpoint, device, precision, observation_space, action_space, render_mode, "DreamVectorEnv",
            context_frames, max_episode_steps)
        self.num_envs = int(num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.contexts = ContextSampler(episodes, self.single_observation_space.shape,
                                       self.single_action_space.n, self.source)
        self._dream = None
        self._gen: torch.Generator | None = None
        self._frames = np.zeros((self.num_envs, *self.single_observation_space.shape), np.uint8)  # (N,H,W,3)
        self._t = np.zeros(self.num_envs, np.int64)
        self._sources = np.full(self.num_envs, None, dtype=object)

    # -- contexts
    def _sample_contexts(self, k: int):
        frames, actions, sources = [], [], []
        for _ in range(k):
            i, s = self.contexts.sample(self.np_random, self.context_frames)
            f, a = self.contexts.window(i, s, self.context_frames)
            frames.append(f)
            actions.append(a)
            sources.append({"episode": str(self.contexts.paths[i]), "start": s})
        return np.stack(frames), np.stack(actions), sources                 # (K, Tc, H, W, 3), (K, Tc)

    def _warm(self, slots: np.ndarray, frames: np.ndarray, actions: np.ndarray, sources) -> None:
        """Warm the model on K contexts and write them into slots `slots` (K,) of the batched state."""
        with self._amp():
            sub = self.model.start(torch.from_numpy(np.ascontiguousarray(frames)),
                                   torch.from_numpy(np.ascontiguousarray(actions)), generator=self._gen)
        if self._dream is None or np.array_equal(slots, np.arange(self.num_envs)):
            self._dream = sub
        else:
            idx = torch.from_numpy(slots.astype(np.int64))
            merged = state_put(self._dream.backbone_state, idx, sub.backbone_state, self.num_envs)
            self._dream = type(self._dream)(merged, self._gen)
        self._frames[slots] = frames[:, -1]
        self._t[slots] = 0
        for j, s in zip(slots, sources):
            self._sources[j] = s

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, (list, tuple)):  # per-env seeds: one batched dream here, so seed[0] seeds it
            seed = seed[0]
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"reset_mask", "frames", "actions"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; known: reset_mask, frames, actions")
        mask = options.get("reset_mask")
        if mask is None:
            slots = np.arange(self.num_envs)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) "
                                 f"with at least one True, got {mask.dtype} {mask.shape}")
            if self._dream is None:
                raise ResetNeeded("DreamVectorEnv: a masked reset needs a full reset() first")
            slots = np.flatnonzero(mask)
        if "frames" in options or "actions" in options:
            frames, actions = self._user_contexts(options.get("frames"), options.get("actions"), len(slots))
            sources = ["user"] * len(slots)
        else:
            frames, actions, sources = self._sample_contexts(len(slots))
        # draws from np_random in DreamEnv.reset's order: context(s) first, then the dream noise seed
        if self._gen is None or seed is not None:
            self._gen = _torch_generator(self.np_random)
        self._warm(slots, frames, actions, sources)
        return self._frames.copy(), self._info()

    def _user_contexts(self, frames, actions, k: int):
        frames, actions = np.asarray(frames), np.asarray(actions)
        if frames.ndim != 5 or len(frames) != k or actions.ndim != 2 or len(actions) != k:
            raise ValueError(f"options['frames'] (K, Tc, H, W, 3) and options['actions'] (K, Tc) need one "
                             f"context per reset slot (K={k}), got {frames.shape} and {actions.shape}")
        checked = [_user_context(f, a, self.single_observation_space.shape, self.single_action_space.n,
                                 self.min_context_frames) for f, a in zip(frames, actions)]
        return np.stack([c[0] for c in checked]), np.stack([c[1] for c in checked])

    def _info(self) -> dict[str, Any]:
        ones = np.ones(self.num_envs, dtype=np.bool_)
        sources = np.empty(self.num_envs, dtype=object)  # fresh dicts: callers may keep and modify infos
        sources[:] = [dict(s) if isinstance(s, dict) else s for s in self._sources]
        return {"step": self._t.copy(), "_step": ones, "context_source": sources,
                "_context_source": ones.copy()}

    @property
    def dream(self):
        """The current batched `worldmodel.model.DreamState` of the N slots (None before reset)."""
        return self._dream

    def step(self, actions):
        if self._dream is None:
            raise ResetNeeded("DreamVectorEnv: call reset() before step()")
        actions = _check_actions(actions, self.num_envs, int(self.single_action_space.n))
        with self._amp():
            frames, rewards, self._dream = self.model.step(self._dream, torch.from_numpy(actions))
        self._frames = frames.cpu().numpy()                                 # (N, H, W, 3)
        rewards = rewards.cpu().numpy().astype(np.float64)
        self._t += 1
        terminated = np.zeros(self.num_envs, dtype=np.bool_)  # Memory Maze has no terminal states
        truncated = self._t >= self.max_episode_steps
        info = self._info()
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            final_obs = self._frames.copy()
            for j in done:
                info = self._add_info(info, {"final_obs": final_obs[j],
                                             "final_info": {"step": int(self._t[j]),
                                                            "context_source": self._sources[j]}}, int(j))
            frames_k, actions_k, sources = self._sample_contexts(len(done))
            self._warm(done, frames_k, actions_k, sources)
            fresh = self._info()
            info["step"], info["context_source"] = fresh["step"], fresh["context_source"]
        return self._frames.copy(), rewards, terminated, truncated, info

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("DreamVectorEnv.render() without render_mode")
            return None
        return tuple(self._frames.copy())

    def close_extras(self, **kwargs):
        self._dream = None


# ---------------------------------------------------------------------- stable-baselines3


def _sb3_vecenv_base():
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError:  # optional: only the adapter needs stable-baselines3
        return object
    return VecEnv


class DreamSB3VecEnv(_sb3_vecenv_base()):
    """stable-baselines3's `VecEnv` API over a `DreamVectorEnv` (both autoreset on the step an episode ends).

    `dones` = terminated | truncated; each ended slot's info holds "terminal_observation" (the last imagined
    frame) and "TimeLimit.truncated"; `reset()` uses the seed given to `seed()` (SB3 2.x).
    """

    def __init__(self, venv: DreamVectorEnv):
        if not isinstance(venv, DreamVectorEnv):
            raise TypeError(f"DreamSB3VecEnv wraps a DreamVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        self.render_mode = venv.render_mode
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs, info = self.venv.reset(seed=seed)
        self._reset_seeds()
        self.reset_infos = self._infos_list(info)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("DreamSB3VecEnv.step_wait() without step_async()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos = self._infos_list(info)
        for j in np.flatnonzero(dones):
            infos[j]["terminal_observation"] = info["final_obs"][j]
            infos[j]["TimeLimit.truncated"] = bool(truncated[j] and not terminated[j])
        return obs, rewards.astype(np.float32), dones, infos

    def _infos_list(self, info: dict) -> list[dict]:
        return [{"step": int(info["step"][j]), "context_source": info["context_source"][j]}
                for j in range(self.num_envs)]

    def close(self) -> None:
        self.venv.close()

    def get_images(self):
        return list(self.venv.render())

    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list:
        method = getattr(self.venv, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)


# ---------------------------------------------------------------------- registration


def register_dream() -> None:
    """Register `longdream/Dream-v0` (gymnasium.make and gymnasium.make_vec with vectorization_mode=
    "vector_entry_point"); idempotent."""
    if "longdream/Dream-v0" in gymnasium.registry:
        return
    gymnasium.register(id="longdream/Dream-v0", entry_point="envs.dream:DreamEnv",
                       vector_entry_point="envs.dream:DreamVectorEnv")
