"""The receding-horizon MPC loop on a real Gymnasium env, with the dream kept in step with reality.

    controller = MPCController(WorldModelDream(worldmodel.load(path)), CEM(planner_config("cpu"), space))
    result = controller.run_episode(gymnasium.make("longdream/MemoryMaze-9x9-v0"), seed=2000, max_steps=200)

Each real step:
  1. observe: the real frame and the action that led into it go into the model's state (``observe``; the first
     ``min_context_frames`` frames warm it with ``start``, under ``warmup_action`` until then);
  2. plan, when the previous plan's first ``replan`` actions are used up (``Planner.plan`` on the state);
  3. execute the next planned action.
The state's frame counter must equal the real frames seen after every step (checked: a RuntimeError otherwise).
Works on any env whose action space is the model's and whose observations are its frames (or a Dict holding
them under ``image``), so Memory Maze now and other envs with their own checkpoints later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from planners.base import Plan, Planner
from planners.dream_model import ObservableModel

__all__ = ["Decision", "EpisodeResult", "MPCController", "frame_of"]


def frame_of(obs: Any) -> np.ndarray:
    """The image of an observation: the array itself, or ``obs["image"]`` of a Dict observation."""
    if isinstance(obs, dict):
        if "image" not in obs:
            raise ValueError(f"a Dict observation needs an 'image' entry, got keys {sorted(obs)}")
        obs = obs["image"]
    return np.asarray(obs)


@dataclass
class Decision:
    """One decision: the real step it was taken at, the state it planned from and its plan."""

    step: int
    """Real steps taken before the decision."""
    state: Any
    """The model state planned from (states are never modified, so it can be rolled out again later)."""
    plan: Plan
    """What the planner returned."""


@dataclass
class EpisodeResult:
    """What one controlled episode did in the real env."""

    seed: int
    steps: int
    """Real steps taken."""
    rewards: list[float]
    """The real reward of every step."""
    decisions: list[Decision] = field(default_factory=list)
    """Every decision (its state only for the first ``record`` ones, else None)."""
    frames: np.ndarray | None = None
    """Every real frame uint8 (steps + 1, H, W, 3), first one from reset (kept when ``keep_frames``)."""
    actions: list[int] = field(default_factory=list)
    """The executed actions."""
    frames_seen: int = 0
    """The model state's frame counter at the end (== steps + 1 when in step with reality)."""

    @property
    def total_reward(self) -> float:
        """Sum of the real rewards."""
        return float(np.sum(self.rewards))

    @property
    def decision_seconds(self) -> list[float]:
        """Wall seconds of every decision."""
        return [d.plan.seconds for d in self.decisions]

    @property
    def imagined_samples(self) -> int:
        """Imagined sample-steps of all decisions."""
        return int(sum(d.plan.samples for d in self.decisions))


class MPCController:
    """Receding-horizon control of a real env with a planner over a world model (see the module docstring).

    Args:
        model: the world model (an :class:`~planners.dream_model.ObservableModel`, e.g. WorldModelDream).
        planner: the planner (its action space must be the model's).
        warmup_action: the action taken while the model still lacks ``min_context_frames`` real frames.
        record: decisions whose state is kept in the result (for logging imagined futures); the others drop it.
    """

    def __init__(self, model: ObservableModel, planner: Planner, warmup_action: Any = 0, record: int = 0):
        if planner.action_space != model.action_space:
            raise ValueError(f"action space mismatch: planner {planner.action_space} vs model {model.action_space}")
        self.model = model
        self.planner = planner
        self.warmup_action = warmup_action
        self.record = int(record)

    def check_env(self, env: gymnasium.Env) -> None:
        """ValueError naming both sides unless the env's action space and frames are the model's."""
        if env.action_space != self.model.action_space:
            raise ValueError(
                f"action space mismatch: the env has action_space={env.action_space} but the world model was "
                f"trained for {self.model.action_space}"
            )
        obs_space = env.observation_space
        if isinstance(obs_space, spaces.Dict) and "image" in obs_space.spaces:
            obs_space = obs_space["image"]
        want = self.model.observation_space
        if not isinstance(obs_space, spaces.Box) or obs_space.shape != want.shape or obs_space.dtype != want.dtype:
            raise ValueError(
                f"observation space mismatch: the env's frames are {obs_space} but the world model was trained "
                f"on {want}"
            )

    def run_episode(
        self,
        env: gymnasium.Env,
        seed: int,
        max_steps: int,
        keep_frames: bool = False,
        on_step: Callable[[int, float], None] | None = None,
    ) -> EpisodeResult:
        """Control ``env`` from ``reset(seed=seed)`` for at most ``max_steps`` real steps (fewer if it ends).

        ``on_step(step, reward)`` is called after every real step (e.g. a progress bar)."""
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r}: expected an integer >= 1")
        self.check_env(env)
        model, replan = self.model, self.planner.config.replan
        self.planner.reset(seed)
        obs, _ = env.reset(seed=int(seed))
        frames = [frame_of(obs)]
        actions = [0]  # the first frame's action is the noop (the offline-dataset convention)
        state = None
        queue: list = []
        res = EpisodeResult(seed=int(seed), steps=0, rewards=[])
        for step in range(max_steps):
            # 1. the model's state after every real frame so far
            if state is None and len(frames) >= model.min_context_frames:
                state = model.start(np.stack(frames), np.asarray(actions), seed=seed)
            # 2. plan when the queue of planned actions is used up
            if state is None:
                action = self.warmup_action
            else:
                if not queue:
                    plan = self.planner.plan(state, model)
                    keep = state if len(res.decisions) < self.record else None
                    res.decisions.append(Decision(step=step, state=keep, plan=plan))
                    queue = list(plan.actions[:replan])
                action = queue.pop(0)
            action = int(action) if isinstance(env.action_space, spaces.Discrete) else np.asarray(action)
            # 3. act in the real env, then observe what happened
            obs, reward, terminated, truncated, _ = env.step(action)
            frame = frame_of(obs)
            frames.append(frame)
            actions.append(action)
            res.rewards.append(float(reward))
            res.steps = step + 1
            if state is not None:
                state = model.observe(state, frame, action)
                seen = model.frames_seen(state)
                if seen != len(frames):
                    raise RuntimeError(
                        f"the model state is out of step with the real env: {seen} frames seen, {len(frames)} real"
                    )
            if on_step is not None:
                on_step(step, float(reward))
            if terminated or truncated:
                break
        res.actions = [a if not isinstance(a, np.ndarray) else a.tolist() for a in actions[1:]]
        res.frames_seen = model.frames_seen(state) if state is not None else 0
        if keep_frames:
            res.frames = np.stack(frames)
        return res
