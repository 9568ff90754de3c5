"""The cross-entropy method (Rubinstein 1999; PlaNet's planner, Hafner et al. 2019).

Each round refits the per-step distribution on the ``elites`` best candidates with equal weights: Discrete
actions get the elites' action frequencies per step (the categorical's maximum-likelihood fit), Box actions the
elites' mean and std; both smoothed with the previous distribution by ``smoothing``.
"""

from __future__ import annotations

import numpy as np

from planners.base import Distribution, Planner

__all__ = ["CEM"]


class CEM(Planner):
    """Cross-entropy method: refit on the elites, equally weighted."""

    name = "cem"

    def refit(self, dist: Distribution, cand: np.ndarray, returns: np.ndarray) -> Distribution:
        """Maximum-likelihood refit on the top ``elites`` candidates (smoothed, floored / clipped)."""
        top = self.elites(returns)
        weights = np.zeros(len(returns))
        weights[top] = 1.0 / len(top)
        return self.fit(dist, cand, weights)
