"""Many dreams batched through one world model: `DreamVectorEnv`, a `gymnasium.vector.VectorEnv`.

    venv = DreamVectorEnv(checkpoint="runs/demo/checkpoint.pt", episodes="data/episodes/mm9", num_envs=64)
    obs, info = venv.reset(seed=0)                        # (N, H, W, 3): each slot warmed on a real window
    obs, rewards, terminated, truncated, info = venv.step(venv.action_space.sample())

It autoresets in `SAME_STEP` mode (declared in `metadata["autoreset_mode"]`): when a slot's episode ends, the
same `step` call returns the first observation of its next episode, and the last imagined frame goes into
`info["final_obs"]` (with `info["final_info"]`). Finished slots are warmed on new real contexts in one batched
warm-up and written into the batched dream state (`worldmodel.state.state_put`); the other slots keep
dreaming untouched. SAME_STEP is what stable-baselines3 expects (`terminal_observation`), so the SB3 adapter
(envs/sb3.py) is a thin translation. The model, spaces and contexts are those of a `DreamCore`, as for
`envs.dream.DreamEnv`: with one slot and one seed both give the same frames.

Axis legend: N slots (parallel dreams), K slots being (re)warmed, Tc context frames, H x W x 3 frames (uint8).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.contexts import check_user_context, exact_int
from envs.dream_core import (
    DEFAULT_MAX_EPISODE_STEPS,
    ClosedEnvError,
    DreamCore,
    ResetNeeded,
    check_actions,
    torch_generator,
)
from worldmodel.model import DreamState
from worldmodel.state import state_put

__all__ = ["DreamVectorEnv"]


class DreamVectorEnv(VectorEnv):
    """`num_envs` dreams batched through one world model (`gymnasium.vector.VectorEnv`, SAME_STEP autoreset).

    All slots are warmed on `context_frames`-frame windows of real episodes; finished slots (truncated at
    `max_episode_steps`) are refilled from new random windows inside the same `step`.

    reset options: {"reset_mask": bool (N,)} resets only those slots (Gymnasium 1.x); {"frames": uint8
    (K, Tc, H, W, 3), "actions": int (K, Tc)} warms the K reset slots on contexts of your own.
    info keys (with their "_key" masks): "step" (N,), "context_source" (N,) objects; after a slot ends,
    "final_obs" and "final_info" as Gymnasium's SAME_STEP vector envs give them.
    Arguments: those of `envs.dream.DreamEnv`, plus `num_envs`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        checkpoint=None,
        episodes=None,
        num_envs: int = 1,
        context_frames: int | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        device: str = "auto",
        render_mode: str | None = "rgb_array",
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
        precision: str = "fp32",
        skip_bad: bool = False,
    ):
        self.num_envs = exact_int(num_envs, "num_envs", minimum=1)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: DreamVectorEnv supports {self.metadata['render_modes']}")
        if episodes is None:
            raise ValueError(
                "DreamVectorEnv needs episodes=DIR: a folder of real episode files to warm its "
                "slots on (finished slots are refilled from it)"
            )
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
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = render_mode
        self._dream: DreamState | None = None
        self._gen: torch.Generator | None = None
        self._frames = np.zeros((self.num_envs, *self.single_observation_space.shape), np.uint8)  # (N,H,W,3)
        self._t = np.zeros(self.num_envs, np.int64)
        self._sources = np.full(self.num_envs, None, dtype=object)
        self._closed = False

    @property
    def model(self):
        """The `worldmodel.model.WorldModel` behind the dreams."""
        return self.core.model

    @property
    def dream(self) -> DreamState | None:
        """The current batched `worldmodel.model.DreamState` of the N slots (None before reset)."""
        return self._dream

    def _warm(self, slots: np.ndarray, frames: np.ndarray, actions: np.ndarray, sources) -> None:
        """Warm the model on K contexts and write them into slots `slots` (K,) of the batched state."""
        sub = self.core.warm(frames, actions, self._gen)
        if self._dream is None or np.array_equal(slots, np.arange(self.num_envs)):
            self._dream = sub
        else:
            idx = torch.from_numpy(slots.astype(np.int64))
            merged = state_put(self._dream.backbone_state, idx, sub.backbone_state, self.num_envs)
            self._dream = DreamState(merged, self._gen)
        self._frames[slots] = frames[:, -1]
        self._t[slots] = 0
        for j, s in zip(slots, sources):
            self._sources[j] = s

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Warm all slots (or those of ``options["reset_mask"]``) on real contexts; returns (N, H, W, 3) frames."""
        self._check_open("reset")
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
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) "
                    f"with at least one True, got {mask.dtype} {mask.shape}"
                )
            if self._dream is None:
                raise ResetNeeded("DreamVectorEnv: a masked reset needs a full reset() first")
            slots = np.flatnonzero(mask)
        if "frames" in options or "actions" in options:
            frames, actions = self._user_contexts(options.get("frames"), options.get("actions"), len(slots))
            sources = ["user"] * len(slots)
        else:
            frames, actions, sources = self.core.sample_contexts(self.np_random, len(slots))
        # draws from np_random in DreamEnv.reset's order: context(s) first, then the dream noise seed
        if self._gen is None or seed is not None:
            self._gen = torch_generator(self.np_random)
        self._warm(slots, frames, actions, sources)
        return self._frames.copy(), self._info()

    def _user_contexts(self, frames, actions, k: int):
        frames, actions = np.asarray(frames), np.asarray(actions)
        if frames.ndim != 5 or len(frames) != k or actions.ndim != 2 or len(actions) != k:
            raise ValueError(
                f"options['frames'] (K, Tc, H, W, 3) and options['actions'] (K, Tc) need one "
                f"context per reset slot (K={k}), got {frames.shape} and {actions.shape}"
            )
        checked = [
            check_user_context(
                f, a, self.single_observation_space.shape, self.single_action_space.n, self.core.min_context_frames
            )
            for f, a in zip(frames, actions)
        ]
        return np.stack([c[0] for c in checked]), np.stack([c[1] for c in checked])

    def _info(self) -> dict[str, Any]:
        ones = np.ones(self.num_envs, dtype=np.bool_)
        sources = np.empty(self.num_envs, dtype=object)  # fresh dicts: callers may keep and modify infos
        sources[:] = [dict(s) if isinstance(s, dict) else s for s in self._sources]
        return {"step": self._t.copy(), "_step": ones, "context_source": sources, "_context_source": ones.copy()}

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ClosedEnvError(f"DreamVectorEnv.{what}() after close(): make a new env")

    def step(self, actions):
        """Imagine one frame per slot; finished slots are refilled in the same call (SAME_STEP autoreset)."""
        self._check_open("step")
        if self._dream is None:
            raise ResetNeeded("DreamVectorEnv: call reset() before step()")
        actions = check_actions(actions, self.num_envs, int(self.single_action_space.n))
        frames, rewards, dream = self.core.imagine(self._dream, actions)  # (N, H, W, 3), (N,)
        t = self._t + 1
        terminated = np.zeros(self.num_envs, dtype=np.bool_)  # Memory Maze has no terminal states
        truncated = t >= self.core.max_episode_steps
        done = np.flatnonzero(terminated | truncated)
        # new contexts for the finished slots are drawn BEFORE anything changes: a bad episode file met
        # here raises with the env still at its previous, consistent step
        refill = self.core.sample_contexts(self.np_random, len(done)) if len(done) else None
        self._dream, self._frames, self._t = dream, frames, t
        info = self._info()
        if refill is not None:
            final_obs = self._frames.copy()
            for j in done:
                info = self._add_info(
                    info,
                    {
                        "final_obs": final_obs[j],
                        "final_info": {"step": int(self._t[j]), "context_source": self._sources[j]},
                    },
                    int(j),
                )
            self._warm(done, *refill)
            fresh = self._info()
            info["step"], info["context_source"] = fresh["step"], fresh["context_source"]
        return self._frames.copy(), rewards, terminated, truncated, info

    def render(self):
        """The N latest frames, a tuple of uint8 (H, W, 3)."""
        self._check_open("render")
        if self.render_mode is None:
            gymnasium.logger.warn("DreamVectorEnv.render() without render_mode")
            return None
        if self._dream is None:
            raise ResetNeeded("DreamVectorEnv: call reset() before render()")
        return tuple(self._frames.copy())

    def close_extras(self, **kwargs):
        """Drop the dreams; the env cannot be used afterwards."""
        self._dream, self._closed = None, True
