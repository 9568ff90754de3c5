"""Random shooting: sample sequences uniformly, keep the best (Nagabandi et al. 2018's MPC baseline).

Every round draws ``population`` sequences from the uniform distribution (Discrete: uniform actions; Box:
centred Gaussians of std ``max_std`` of the range, clipped); nothing is refitted. The warm start is the previous
plan shifted by ``replan`` steps as one candidate of the first round.
"""

from __future__ import annotations

import numpy as np

from planners.base import Distribution, Planner

__all__ = ["RandomShooting"]


class RandomShooting(Planner):
    """The best of ``iterations x population`` uniformly sampled sequences (plus the shifted previous plan)."""

    name = "random_shooting"
    refits = False

    def refit(self, dist: Distribution, cand: np.ndarray, returns: np.ndarray) -> Distribution:
        """No refit: every round samples the uniform distribution again."""
        return dist
