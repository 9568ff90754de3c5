"""The dream environment: a trained world model served as a single `gymnasium.Env`.

    env = gymnasium.make("longdream/Dream-v0", checkpoint="runs/demo/checkpoint.pt",
                         episodes="data/episodes/mm9")
    obs, info = env.reset(seed=0)                 # warmed on a random window of a real episode
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Many dreams through one model: `envs.dream_vector.DreamVectorEnv`; stable-baselines3: `envs.sb3.DreamSB3VecEnv`.
Both envs are faces of one `envs.dream_core.DreamCore` (the model, its spaces, contexts and calls).

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

Axis legend: Tc context frames, H x W x 3 frames (uint8).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.contexts import check_context_length, check_user_context, exact_int
from envs.dream_core import (
    DEFAULT_MAX_EPISODE_STEPS,
    ClosedEnvError,
    DreamCore,
    ResetNeeded,
    check_action,
    torch_generator,
)

__all__ = ["DreamEnv"]

_RESET_OPTIONS = ("episode", "start", "context_frames", "frames", "actions")


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
        skip_bad: leave bad episode files out (reported with a warning) instead of raising.

    reset options: {"episode": index or file name, "start": int, "context_frames": int} pick a real window;
    {"frames": uint8 (Tc, H, W, 3), "actions": int (Tc,)} give a context of your own.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        checkpoint=None,
        episodes=None,
        context_frames: int | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        device: str = "auto",
        render_mode: str | None = "rgb_array",
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
        precision: str = "fp32",
        skip_bad: bool = False,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: DreamEnv supports {self.metadata['render_modes']}")
        self.core = DreamCore(
            checkpoint,
            episodes,
            context_frames,
            max_episode_steps,
            device,
            precision,
            observation_space,
            action_space,
            skip_bad,
        )
        self.observation_space, self.action_space = self.core.observation_space, self.core.action_space
        self.render_mode = render_mode
        self._dream = None
        self._frame: np.ndarray | None = None
        self._t = 0
        self._context_source: Any = None
        self._closed = False

    @property
    def model(self):
        """The `worldmodel.model.WorldModel` behind the dream."""
        return self.core.model

    @property
    def dream(self):
        """The current `worldmodel.model.DreamState` (None before reset): planners can fork imagined rollouts
        from it with `model.step`, which never modifies it."""
        return self._dream

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Warm a new dream on a real context (see the class docstring for options); returns its last frame."""
        self._check_open("reset")
        super().reset(seed=seed)
        # a failed reset leaves no half-started episode behind: step() then asks for a reset
        self._dream, self._frame, self._t = None, None, 0
        frames, actions, source = self._context(dict(options or {}))
        # draws from np_random in this order: the context first, then the dream noise seed
        dream = self.core.warm(frames[None], actions[None], torch_generator(self.np_random))
        self._dream, self._frame, self._context_source = dream, np.array(frames[-1], copy=True), source
        return self._frame.copy(), self._info()

    def _context(self, options: dict):
        unknown = set(options) - set(_RESET_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; known: episode, start, "
                f"context_frames (a real window) or frames, actions (a context of your own)"
            )
        core = self.core
        if "frames" in options or "actions" in options:
            if "frames" not in options or "actions" not in options:
                raise ValueError("options must give both 'frames' (Tc, H, W, 3) uint8 and 'actions' (Tc,)")
            if {"episode", "start", "context_frames"} & set(options):
                raise ValueError("options: give either frames/actions or episode/start/context_frames, not both")
            frames, actions = check_user_context(
                options["frames"],
                options["actions"],
                self.observation_space.shape,
                self.action_space.n,
                core.min_context_frames,
            )
            return frames, actions, "user"
        length = exact_int(options.get("context_frames", core.context_frames), "options['context_frames']")
        check_context_length(length, core.min_context_frames, f"options['context_frames']={length}")
        if "episode" not in options:
            if "start" in options:
                raise ValueError("options['start'] needs options['episode'] too")
            f, a, sources = core.sample_contexts(self.np_random, 1, length)
            return f[0], a[0], sources[0]
        if core.contexts is None:
            raise ValueError(
                "this DreamEnv has no episodes folder: pass episodes=DIR at construction, or "
                "options={'frames': ..., 'actions': ...} to reset"
            )
        index = core.contexts.index_of(options["episode"])
        if "start" in options:
            start = exact_int(options["start"], "options['start']")
        else:
            start = int(self.np_random.integers(max(int(core.contexts.lengths[index]) - length, 0) + 1))
        frames, actions = core.contexts.window(index, start, length)
        return frames, actions, {"episode": str(core.contexts.paths[index]), "start": start}

    def _info(self) -> dict[str, Any]:
        src = self._context_source
        return {"step": self._t, "context_source": dict(src) if isinstance(src, dict) else src}

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ClosedEnvError(f"DreamEnv.{what}() after close(): make a new env")

    def step(self, action):
        """Imagine the frame ``action`` leads into: (frame, predicted reward, False, truncated, info)."""
        self._check_open("step")
        if self._dream is None:
            raise ResetNeeded("DreamEnv: call reset() before step()")
        if self._t >= self.core.max_episode_steps:
            raise ResetNeeded(
                f"DreamEnv: the episode ended (truncated at max_episode_steps={self.core.max_episode_steps}); "
                f"call reset()"
            )
        a = check_action(action, int(self.action_space.n))
        frames, rewards, self._dream = self.core.imagine(self._dream, np.array([a], dtype=np.int64))
        self._frame = frames[0]
        self._t += 1
        truncated = self._t >= self.core.max_episode_steps
        return self._frame.copy(), float(rewards[0]), False, truncated, self._info()

    def render(self):
        """The latest frame (the last context frame right after reset), uint8 (H, W, 3)."""
        self._check_open("render")
        if self.render_mode is None:
            gymnasium.logger.warn("DreamEnv.render() without render_mode: use render_mode='rgb_array'")
            return None
        if self._frame is None:
            raise ResetNeeded("DreamEnv: call reset() before render()")
        return self._frame.copy()

    def close(self):
        """Drop the dream; the env cannot be used afterwards."""
        self._dream, self._frame, self._closed = None, None, True
        super().close()
