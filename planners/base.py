"""The one interface of every planner, and the machinery they share: sampling, batched rollouts, refits.

    planner = CEM(planner_config("cpu"), model.action_space, terminal_value=None)
    plan = planner.plan(state, model)      # Plan(actions (H,), expected_return, ...)
    planner.reset()                        # a new episode: forget the warm start

A decision (:meth:`Planner.plan`), for ``iterations`` rounds:
  1. sample ``population`` action sequences of ``horizon`` steps from the current per-step distribution
     (Discrete: a categorical per step; Box: a Gaussian per step, clipped to the space); candidate 0 is the
     distribution's mode / mean (round 0: the previous plan shifted by ``replan`` steps, the warm start);
  2. roll all of them out as ONE batch through the model (:func:`rollout_returns`) from N forks of the state:
     return = sum_t discount^t E[r_t] + discount^H V(feats_H) (V: the optional terminal value);
  3. refit the distribution (:meth:`Planner.refit`): random shooting keeps it uniform, CEM refits on the elites,
     MPPI on the elites weighted by softmax(return / temperature).
The plan is the best sequence evaluated in any round (its expected return is known exactly, and the
distribution's mode being a candidate makes it at least as good as what the refit converged to).

Axis legend: N candidates, H horizon, K discrete actions, A continuous action dims, D feature dim.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from planners.config import PlannerConfig
from planners.dream_model import DreamModel

__all__ = ["Distribution", "Plan", "Planner", "TerminalValue", "check_action_space", "rollout_returns"]

TerminalValue = Callable[[torch.Tensor], torch.Tensor]
"""A value of the final imagined frame: per-frame features (N, D) -> values (N,) (e.g. an agent's critic)."""


@dataclass(frozen=True)
class Plan:
    """One decision's result."""

    actions: np.ndarray
    """The chosen sequence: int64 (H,) for Discrete, float32 (H, A) for Box."""
    expected_return: float
    """Its imagined return: discounted expected rewards (+ terminal value)."""
    mean_return: float
    """Mean return of the last round's candidates (how good the sampling distribution is on average)."""
    samples: int
    """Imagined sample-steps spent (rounds x population x horizon)."""
    seconds: float
    """Wall time of the decision."""
    returns: list[float] = field(default_factory=list)
    """Best return after each round."""


@dataclass
class Distribution:
    """The per-step sampling distribution: ``probs`` (H, K) for Discrete, ``mean`` and ``std`` (H, A) for Box."""

    probs: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


def check_action_space(space: spaces.Space) -> spaces.Space:
    """Return ``space`` if planners support it (Discrete starting at 0, or a bounded float Box); else ValueError."""
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"action_space={space}: planners need Discrete actions starting at 0")
        return space
    if isinstance(space, spaces.Box):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"action_space={space}: planners need a bounded Box (finite low and high)")
        return space
    raise ValueError(f"action_space={space}: planners support Discrete and Box actions")


@torch.no_grad()
def rollout_returns(
    model: DreamModel,
    states: Any,
    candidates: np.ndarray,
    discount: float,
    sampling_steps: int | None = None,
    terminal_value: TerminalValue | None = None,
) -> np.ndarray:
    """Discounted imagined returns (N,) float64 of N candidate sequences rolled out as ONE batch.

    ``states``: N dreams (``model.fork(state, N)``; not modified); candidates int64 (N, H) or float32 (N, H, A).
    Return = sum_t discount^t E[r_t] + discount^H terminal_value(features of the last frame)."""
    n, h = candidates.shape[:2]
    ret = torch.zeros(n, dtype=torch.float64)
    g = 1.0
    feats = None
    for t in range(h):
        a = torch.from_numpy(np.ascontiguousarray(candidates[:, t]))  # (N,) or (N, A)
        r, feats, states = model.plan_step(states, a, sampling_steps)  # (N,), (N, D)
        ret += g * r.detach().double().cpu()
        g *= discount
    if terminal_value is not None and feats is not None:
        ret += g * terminal_value(feats).detach().double().cpu().reshape(n)
    return ret.numpy()


class Planner(ABC):
    """Model-predictive planner over a :class:`~planners.dream_model.DreamModel` (see the module docstring).

    Args:
        config: the search settings (:class:`~planners.config.PlannerConfig`).
        action_space: the env's actions (Discrete or bounded Box); the model's must be the same.
        terminal_value: optional value of the last imagined frame's features, added discounted to the return.
    """

    name: str = "planner"
    refits: bool = True
    """False for random shooting: the distribution stays uniform (no refit, no warm-started distribution)."""

    def __init__(
        self,
        config: PlannerConfig,
        action_space: spaces.Space,
        terminal_value: TerminalValue | None = None,
    ):
        self.config = config
        self.action_space = check_action_space(action_space)
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            k = int(action_space.n)
            if config.min_prob * k > 1:
                raise ValueError(
                    f"PlannerConfig.min_prob={config.min_prob}: with {k} actions at most 1/{k} = {1 / k:.4f}"
                )
        else:
            self._low = action_space.low.astype(np.float32)
            self._high = action_space.high.astype(np.float32)
            self._range = self._high - self._low  # (A,)
        self.terminal_value = terminal_value
        self.reset()

    # ----------------------------------------------------------------------------------------- public

    def reset(self, seed: int | None = None) -> None:
        """Forget the warm start (a new episode); reseed the candidates' generator (``seed`` or config.seed)."""
        self.rng = np.random.default_rng(self.config.seed if seed is None else seed)
        self._dist: Distribution | None = None
        self._plan: np.ndarray | None = None

    def plan(self, state: Any, model: DreamModel) -> Plan:
        """The best action sequence from a 1-dream ``state`` (left untouched) and its expected return."""
        if model.action_space != self.action_space:
            raise ValueError(
                f"action space mismatch: the planner's action_space={self.action_space} but the model's is "
                f"{model.action_space}"
            )
        cfg = self.config
        t0 = time.perf_counter()
        dist = self.initial_distribution()
        anchor = self.warm_plan()
        states = model.fork(state, cfg.population)  # 1 -> N dreams, forked once for every round
        best_ret, best, trace, mean_ret = -np.inf, None, [], float("nan")
        for it in range(cfg.iterations):
            # 1. sample; candidate 0 = the warm plan (round 0) or the distribution's mode / mean
            cand = self.sample(dist, cfg.population)  # (N, H[, A])
            if it > 0 and self.refits:
                anchor = self.mode(dist)
            if anchor is not None:
                cand[0] = anchor
            # 2. one batched rollout
            returns = rollout_returns(model, states, cand, cfg.discount, cfg.sampling_steps, self.terminal_value)
            i = int(np.argmax(returns))
            if returns[i] > best_ret:
                best_ret, best = float(returns[i]), cand[i].copy()
            trace.append(best_ret)
            mean_ret = float(returns.mean())
            # 3. refit
            dist = self.refit(dist, cand, returns)
        self._dist, self._plan = dist, best
        return Plan(
            actions=best,
            expected_return=best_ret,
            mean_return=mean_ret,
            samples=cfg.iterations * cfg.population * cfg.horizon,
            seconds=time.perf_counter() - t0,
            returns=trace,
        )

    def warm_plan(self) -> np.ndarray | None:
        """The previous plan shifted by ``replan`` steps, its last action repeated at the end (None: no previous
        plan, or warm_start is 0): candidate 0 of the next decision."""
        if self._plan is None or self.config.warm_start == 0:
            return None
        k = self.config.replan
        tail = np.repeat(self._plan[-1:], k, axis=0)
        return np.concatenate([self._plan[k:], tail], axis=0)

    # ------------------------------------------------------------------------------------ distributions

    def uniform(self) -> Distribution:
        """The distribution a decision starts from without warm start: uniform categoricals / centred, widest
        Gaussians (std = max_std of each dimension's range)."""
        h = self.config.horizon
        if self.discrete:
            k = int(self.action_space.n)
            return Distribution(probs=np.full((h, k), 1.0 / k))
        centre = (self._low + self._high) / 2
        return Distribution(
            mean=np.tile(centre, (h, 1)).astype(np.float32),
            std=np.tile(self.config.max_std * self._range, (h, 1)).astype(np.float32),
        )

    def initial_distribution(self) -> Distribution:
        """The start of a decision: the previous decision's distribution shifted by ``replan`` steps, blended
        with :meth:`uniform` by ``warm_start`` (Box: means blended, std back to max_std, as TD-MPC2)."""
        base = self.uniform()
        if self._dist is None or not self.refits or self.config.warm_start == 0:
            return base
        w, k = self.config.warm_start, self.config.replan
        if self.discrete:
            shifted = base.probs.copy()
            shifted[:-k] = self._dist.probs[k:]
            return Distribution(probs=w * shifted + (1 - w) * base.probs)
        shifted = base.mean.copy()
        shifted[:-k] = self._dist.mean[k:]
        return Distribution(mean=(w * shifted + (1 - w) * base.mean).astype(np.float32), std=base.std)

    def sample(self, dist: Distribution, n: int) -> np.ndarray:
        """n sequences from the per-step distribution: int64 (n, H) or float32 (n, H, A) clipped to the Box."""
        if self.discrete:
            cum = np.cumsum(dist.probs, axis=-1)  # (H, K)
            u = self.rng.random((n, cum.shape[0], 1))  # (n, H, 1)
            return np.minimum((u >= cum[None]).sum(-1), cum.shape[1] - 1).astype(np.int64)  # (n, H)
        noise = self.rng.standard_normal((n, *dist.mean.shape)).astype(np.float32)  # (n, H, A)
        return np.clip(dist.mean[None] + dist.std[None] * noise, self._low, self._high).astype(np.float32)

    def mode(self, dist: Distribution) -> np.ndarray:
        """The most likely sequence: per-step argmax (Discrete) or the means (Box)."""
        if self.discrete:
            return dist.probs.argmax(-1).astype(np.int64)
        return dist.mean.copy()

    def fit(self, dist: Distribution, cand: np.ndarray, weights: np.ndarray) -> Distribution:
        """Refit on candidates weighted by ``weights`` (n,) (>= 0, summing to 1), smoothed with the old
        distribution by ``smoothing``; Discrete probabilities floored at ``min_prob``, Box stds clipped to
        [min_std, max_std] of each dimension's range."""
        cfg, s = self.config, self.config.smoothing
        if self.discrete:
            k = int(self.action_space.n)
            onehot = np.eye(k)[cand]  # (n, H, K)
            freq = np.einsum("n,nhk->hk", weights, onehot)  # (H, K)
            probs = s * dist.probs + (1 - s) * freq
            probs = (1 - k * cfg.min_prob) * probs + cfg.min_prob  # every action keeps >= min_prob
            return Distribution(probs=probs / probs.sum(-1, keepdims=True))
        mean = np.einsum("n,nha->ha", weights, cand)  # (H, A)
        var = np.einsum("n,nha->ha", weights, (cand - mean[None]) ** 2)
        std = np.clip(np.sqrt(var), cfg.min_std * self._range, cfg.max_std * self._range)
        mean = s * dist.mean + (1 - s) * mean
        std = s * dist.std + (1 - s) * std
        return Distribution(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def elites(self, returns: np.ndarray) -> np.ndarray:
        """Indices (elites,) of the best candidates, best first."""
        k = self.config.elites
        top = np.argpartition(-returns, k - 1)[:k]
        return top[np.argsort(-returns[top], kind="stable")]

    @abstractmethod
    def refit(self, dist: Distribution, cand: np.ndarray, returns: np.ndarray) -> Distribution:
        """The next round's distribution from this round's candidates and their returns (n,)."""
