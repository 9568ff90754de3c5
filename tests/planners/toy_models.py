"""Synthetic models implementing the planners' DreamModel interface, with known optimal action sequences."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces


class ToyDiscreteModel:
    """Reward 1 at imagined step t iff the action is ``target[t]`` (state: the step counter per dream)."""

    def __init__(self, target, num_actions: int):
        self.target = torch.as_tensor(target)
        self.action_space = spaces.Discrete(num_actions)
        self.calls: list[int] = []  # batch size of every plan_step call

    def fork(self, state, n):
        """The (B,) step counters repeated n times."""
        return state.repeat_interleave(n, 0)

    def plan_step(self, state, actions, sampling_steps=None):
        """reward (B,), one-hot features of the action (B, K), counters + 1."""
        self.calls.append(len(actions))
        t = state.clamp(max=len(self.target) - 1)
        reward = (actions == self.target[t]).double()
        feats = torch.nn.functional.one_hot(actions.long(), self.action_space.n).double()
        return reward, feats, state + 1


class ToyQuadraticModel:
    """Continuous Box actions in [-1, 1]^A; reward = -||a - optimum||^2 at every step."""

    def __init__(self, optimum):
        self.optimum = torch.as_tensor(optimum, dtype=torch.float64)
        a = len(self.optimum)
        self.action_space = spaces.Box(-1.0, 1.0, (a,), np.float32)

    def fork(self, state, n):
        """The (B,) step counters repeated n times."""
        return state.repeat_interleave(n, 0)

    def plan_step(self, state, actions, sampling_steps=None):
        """reward (B,) = -squared distance to the optimum; features = the actions."""
        reward = -((actions.double() - self.optimum) ** 2).sum(-1)
        return reward, actions.double(), state + 1


def start_state() -> torch.Tensor:
    """One dream at step 0."""
    return torch.zeros(1, dtype=torch.long)
