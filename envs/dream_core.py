"""What the single and the vectorised dream env share: one `DreamCore` object holding the trained world model.

`DreamEnv` (envs/dream.py) and `DreamVectorEnv` (envs/dream_vector.py) are thin Gymnasium faces over a core:

  1. the model, loaded from a checkpoint (or given) and put in inference layout, and the precision it runs in;
  2. its spaces (the real env's), checked against any the caller expects;
  3. the context length a dream is warmed on and the episode limit;
  4. the real contexts (`envs.contexts.ContextSampler`) when an episode folder is given;
  5. the two model calls: `warm` (real context -> `DreamState`) and `imagine` (state, actions -> next frames,
     rewards, new state), both on numpy in and out.

Axis legend: N dreams, K dreams being (re)warmed, Tc context frames, H x W x 3 frames (uint8).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from envs.contexts import ContextSampler, check_context_length, exact_int
from worldmodel.model import DreamState, WorldModel, check_finite_weights, load

__all__ = [
    "DEFAULT_CONTEXT_FRAMES",
    "DEFAULT_MAX_EPISODE_STEPS",
    "PRECISIONS",
    "ClosedEnvError",
    "DreamCore",
    "ResetNeeded",
    "check_action",
    "check_actions",
    "torch_generator",
]

DEFAULT_CONTEXT_FRAMES = 16  # real frames a dream is warmed on, unless the user or the model wants more
DEFAULT_MAX_EPISODE_STEPS = 1000  # imagined frames per episode (Memory Maze 9x9's real time limit)
PRECISIONS = ("fp32", "bf16")


class ResetNeeded(gymnasium.error.ResetNeeded, RuntimeError):
    """step()/render() before reset() or after the episode ended: a RuntimeError like the real env's
    (envs/memory_maze.py) that is also Gymnasium's ResetNeeded."""


class ClosedEnvError(RuntimeError):
    """reset()/step()/render() on a dream env after close()."""


def check_action(action, n: int) -> int:
    """The real env's check (envs/memory_maze.py `_as_action`): a ValueError unless an integer in [0, n)."""
    arr = np.asarray(action)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action={action!r}: expected an integer in [0, {n})")
    a = int(arr)
    if not 0 <= a < n:
        raise ValueError(f"action={a}: expected an integer in [0, {n})")
    return a


def check_actions(actions, num_envs: int, n: int) -> np.ndarray:
    """Batched `check_action`: a ValueError unless integers of shape (num_envs,) in [0, n)."""
    arr = np.asarray(actions)
    if arr.shape != (num_envs,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"actions={actions!r}: expected integers in [0, {n}) of shape ({num_envs},), got {arr.dtype} {arr.shape}"
        )
    bad = np.flatnonzero((arr < 0) | (arr >= n))
    if len(bad):
        raise ValueError(f"actions[{int(bad[0])}]={int(arr[bad[0]])}: expected integers in [0, {n})")
    return arr.astype(np.int64)


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch Generator for the dream's noise, seeded from the env's ``np_random`` (so one seed fixes both)."""
    return torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))


def _load_model(checkpoint, device) -> tuple[WorldModel, str]:
    """A WorldModel from a checkpoint path (eval mode) or an already built WorldModel, in inference layout."""
    if isinstance(checkpoint, WorldModel):
        check_finite_weights(checkpoint, "<WorldModel instance>")
        return _inference_layout(checkpoint.eval()), "<WorldModel instance>"
    if checkpoint is None:
        raise ValueError("a dream env needs checkpoint=PATH to a trained world model (RUN_DIR/checkpoint.pt)")
    path = Path(os.fspath(checkpoint))
    if not path.is_file():
        raise FileNotFoundError(f"world-model checkpoint not found: {path}")
    return _inference_layout(load(path, device=device)), str(path)


def _inference_layout(model: WorldModel) -> WorldModel:
    """Store the autoencoder's convolution weights channels-last (NHWC), in place: the same math, but oneDNN
    runs the decoder ~3x faster on CPU in that layout (frames equal to the default layout's up to float
    rounding, at most one intensity level; see benchmarks/dream_speed.py). A model passed in is converted
    too; it stays usable for anything else."""
    model.autoencoder.to(memory_format=torch.channels_last)
    return model


def _autocast(model: WorldModel, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A context-manager factory running the model in ``precision``: "fp32" (exact, the default) or "bf16"
    (torch.autocast: matmuls and convolutions in bfloat16, several times faster on CPUs with AMX/AVX512-BF16;
    frames may differ from fp32 by a few intensity levels, see benchmarks/dream_speed.py)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext
    device_type = model.device.type
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16)


def _check_spaces(model_obs, model_act, source: str, obs=None, act=None) -> None:
    """Raise naming both sides when the checkpoint's spaces differ from the expected ones."""
    bad_obs = obs is not None and obs != model_obs
    bad_act = act is not None and act != model_act
    if bad_obs or bad_act:
        raise ValueError(
            f"checkpoint {source} was trained for observation space {model_obs} and action space "
            f"{model_act}, but the env it is asked to stand in for has observation space "
            f"{obs if obs is not None else model_obs} and action space {act if act is not None else model_act}"
        )


class DreamCore:
    """The trained world model behind a dream env, with everything both env faces need (see module docstring).

    Args:
        checkpoint: path of a ``RUN_DIR/checkpoint.pt`` (or a ``WorldModel`` instance).
        episodes: folder of real episode files contexts are taken from (None: only user contexts).
        context_frames: real frames a dream is warmed on (default: max(the model's minimum, 16)).
        max_episode_steps: imagined frames before an episode is truncated.
        device: "auto" | "cpu" | "cuda" ...
        precision: "fp32" (exact) or "bf16" (autocast).
        observation_space / action_space: optional expected spaces; a checkpoint for others is refused.
        skip_bad: leave bad episode files out (reported, with a warning) instead of raising.
    """

    def __init__(
        self,
        checkpoint,
        episodes=None,
        context_frames: int | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        device: str = "auto",
        precision: str = "fp32",
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
        skip_bad: bool = False,
    ):
        # 3. (checked first: no model is loaded for a bad argument)
        self.max_episode_steps = exact_int(max_episode_steps, "max_episode_steps", minimum=1)
        if context_frames is not None:
            context_frames = exact_int(context_frames, "context_frames", minimum=1)
        # 1.
        self.model, self.source = _load_model(checkpoint, device)
        self.precision = precision
        self.amp = _autocast(self.model, precision)
        # 2.
        cfg = self.model.config
        self.observation_space = spaces.Box(0, 255, tuple(cfg.obs_shape), np.uint8)
        self.action_space = spaces.Discrete(int(cfg.num_actions))
        _check_spaces(self.observation_space, self.action_space, self.source, observation_space, action_space)
        # 3.
        self.min_context_frames = int(cfg.min_context_frames)
        self.context_frames = (
            context_frames if context_frames is not None else max(self.min_context_frames, DEFAULT_CONTEXT_FRAMES)
        )
        check_context_length(self.context_frames, self.min_context_frames, f"context_frames={self.context_frames}")
        # 4.
        self.contexts = (
            None
            if episodes is None
            else ContextSampler(
                episodes, self.observation_space.shape, self.action_space.n, self.source, skip_bad=skip_bad
            )
        )

    def sample_contexts(self, rng: np.random.Generator, k: int, length: int | None = None):
        """K random real contexts: frames (K, Tc, H, W, 3), actions (K, Tc), sources [{"episode", "start"}]."""
        if self.contexts is None:
            raise ValueError(
                "this dream env has no episodes folder: pass episodes=DIR at construction, or "
                "options={'frames': ..., 'actions': ...} to reset"
            )
        length = self.context_frames if length is None else length
        frames, actions, sources = [], [], []
        for _ in range(k):
            i, s = self.contexts.sample(rng, length)
            f, a = self.contexts.window(i, s, length)
            frames.append(f)
            actions.append(a)
            sources.append({"episode": str(self.contexts.paths[i]), "start": s})
        return np.stack(frames), np.stack(actions), sources

    def warm(self, frames: np.ndarray, actions: np.ndarray, generator: torch.Generator) -> DreamState:
        """K dreams warmed on real contexts: frames uint8 (K, Tc, H, W, 3), actions int64 (K, Tc)."""
        with self.amp():
            return self.model.start(
                torch.from_numpy(np.ascontiguousarray(frames)),
                torch.from_numpy(np.ascontiguousarray(actions)),
                generator=generator,
            )

    def imagine(self, dream: DreamState, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, DreamState]:
        """One imagined frame per dream: actions int64 (N,) -> frames uint8 (N, H, W, 3), rewards float64 (N,),
        and the new state (``dream`` is not modified)."""
        with self.amp():
            frames, rewards, new = self.model.step(dream, torch.from_numpy(np.ascontiguousarray(actions)))
        return frames.cpu().numpy(), rewards.cpu().numpy().astype(np.float64), new
