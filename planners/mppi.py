"""Model-predictive path integral control (Williams et al. 2017), as TD-MPC2 runs it (Hansen et al. 2024).

Each round keeps the ``elites`` best candidates and weighs them by softmax(return / temperature) (returns
shifted by their maximum for stability): Box actions get the weighted mean and std of the elites (TD-MPC2's
update, std clipped to [min_std, max_std]), Discrete actions the weighted action frequencies per step (the
exponentiated-return reweighting of the categorical); both smoothed with the previous distribution.
"""

from __future__ import annotations

import numpy as np

from planners.base import Distribution, Planner

__all__ = ["MPPI", "mppi_weights"]


def mppi_weights(returns: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(returns / temperature) (n,) summing to 1, computed stably (shifted by the maximum)."""
    z = (np.asarray(returns, dtype=np.float64) - np.max(returns)) / temperature
    w = np.exp(z)
    return w / w.sum()


class MPPI(Planner):
    """MPPI: refit on the elites weighted by their exponentiated returns."""

    name = "mppi"

    def refit(self, dist: Distribution, cand: np.ndarray, returns: np.ndarray) -> Distribution:
        """Refit on the top ``elites`` weighted by softmax(return / temperature) (smoothed, floored / clipped)."""
        top = self.elites(returns)
        weights = np.zeros(len(returns))
        weights[top] = mppi_weights(returns[top], self.config.temperature)
        return self.fit(dist, cand, weights)
