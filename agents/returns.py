"""Return helpers of DreamerV3 (Hafner et al., 2023) for actor-critics learning on imagined (or real) rollouts.

    ret = lambda_returns(rewards, values, continues, discount=0.99, lam=0.95)   # (H, B) targets
    twohot = TwoHot()                                     # 255 bins on symlog scale in [-20, 20]
    loss = twohot.loss(critic_logits, ret)                # cross-entropy against the two-hot of symlog(ret)
    value = twohot.decode(critic_logits)                  # symexp of the expected bin
    norm = PercentileNormalizer(); scale = norm.update(ret); adv = (ret - value) / scale

Axis legend: H horizon (imagined steps), B batch (dreams), K bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PercentileNormalizer", "TwoHot", "discount_from_horizon", "lambda_returns", "symexp", "symlog"]


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|) (DreamerV3, eq. 1): compresses large magnitudes, identity near 0."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`symlog`: sign(x) (exp(|x|) - 1)."""
    return torch.sign(x) * torch.expm1(x.abs())


def discount_from_horizon(horizon: float) -> float:
    """The discount whose effective horizon 1 / (1 - discount) is ``horizon`` steps (DreamerV3: 333 -> 0.997)."""
    if not horizon >= 1:
        raise ValueError(f"discount horizon={horizon!r}: expected a number of steps >= 1")
    return 1.0 - 1.0 / float(horizon)


def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    continues: torch.Tensor | None,
    discount: float,
    lam: float = 0.95,
) -> torch.Tensor:
    """TD(λ) returns (DreamerV3, eq. 7): R_t = r_t + γ c_t ((1 - λ) v_{t+1} + λ R_{t+1}), with R_H = v_H.

    rewards (H, B): the reward of the step from frame t to frame t + 1; values (H + 1, B): the critic at frames
    0..H; continues (H, B) in {0, 1}: 0 where frame t + 1 ends the episode (None: every step continues).
    Returns (H, B)."""
    h = rewards.shape[0]
    if values.shape[0] != h + 1 or values.shape[1:] != rewards.shape[1:]:
        raise ValueError(
            f"lambda_returns: values must be (H + 1, ...)={(h + 1, *rewards.shape[1:])}, got {tuple(values.shape)}"
        )
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda={lam!r}: expected a value in [0, 1]")
    c = torch.ones_like(rewards) if continues is None else continues.to(rewards.dtype)
    out = torch.empty_like(rewards)
    nxt = values[-1]
    for t in reversed(range(h)):
        nxt = rewards[t] + discount * c[t] * ((1 - lam) * values[t + 1] + lam * nxt)
        out[t] = nxt
    return out


class TwoHot:
    """A scalar as a two-hot distribution over fixed bins on the symlog scale (DreamerV3, "symlog two-hot").

    Args:
        bins: number of bins K (DreamerV3: 255).
        low, high: the symlog range the bins span (DreamerV3: -20, 20).
    """

    def __init__(self, bins: int = 255, low: float = -20.0, high: float = 20.0):
        if bins < 2 or not high > low:
            raise ValueError(f"TwoHot(bins={bins}, low={low}, high={high}): expected bins >= 2 and high > low")
        self.bins = torch.linspace(low, high, bins)  # (K,) on the symlog scale

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """Values (...) -> two-hot weights (..., K): symlog(y) split between its two neighbouring bins (clamped
        to the range) so that their weighted mean is exactly symlog(y)."""
        bins = self.bins.to(y.device, y.dtype)
        x = symlog(y).clamp(bins[0], bins[-1])
        hi = torch.searchsorted(bins, x.contiguous(), right=True).clamp(1, len(bins) - 1)  # (...) upper neighbour
        lo = hi - 1
        w_hi = (x - bins[lo]) / (bins[hi] - bins[lo])
        out = torch.zeros((*y.shape, len(bins)), dtype=y.dtype, device=y.device)
        out.scatter_(-1, lo[..., None], (1 - w_hi)[..., None])
        out.scatter_add_(-1, hi[..., None], w_hi[..., None])
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (..., K) -> the value symexp(E[bin]) (...)."""
        bins = self.bins.to(logits.device, logits.dtype)
        return symexp((logits.softmax(-1) * bins).sum(-1))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (...) of the predicted bins against the two-hot of ``target`` (no gradient to it)."""
        return -(self.encode(target.detach()) * F.log_softmax(logits, -1)).sum(-1)


class PercentileNormalizer:
    """DreamerV3's return scale: S = max(1, EMA(P95(R)) - EMA(P5(R))); advantages are divided by S, so large
    returns are scaled down while small (sparse-reward) returns are not scaled up.

    Args:
        decay: EMA decay of the percentiles (DreamerV3: 0.99).
        low, high: the percentiles (5 and 95).
        floor: the smallest scale (1).
    """

    def __init__(self, decay: float = 0.99, low: float = 5.0, high: float = 95.0, floor: float = 1.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"PercentileNormalizer decay={decay!r}: expected a value in [0, 1)")
        self.decay, self.low, self.high, self.floor = float(decay), float(low), float(high), float(floor)
        self.lo: float | None = None
        self.hi: float | None = None

    def update(self, returns: torch.Tensor) -> float:
        """Fold a batch of returns into the EMAs (the first batch sets them); returns the scale S."""
        x = returns.detach().flatten().float()
        q = torch.quantile(x, torch.tensor([self.low / 100, self.high / 100], dtype=x.dtype, device=x.device))
        lo, hi = float(q[0]), float(q[1])
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.decay * self.lo + (1 - self.decay) * lo
            self.hi = self.decay * self.hi + (1 - self.decay) * hi
        return self.scale

    @property
    def scale(self) -> float:
        """max(floor, hi - lo) (the floor before any update)."""
        if self.lo is None:
            return self.floor
        return max(self.floor, self.hi - self.lo)

    def state_dict(self) -> dict:
        """The EMAs (for checkpoints)."""
        return {"lo": self.lo, "hi": self.hi}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.lo, self.hi = state["lo"], state["hi"]
