"""Actor and critic MLPs on a world model's per-frame features, for Discrete and Box actions.

    actor = Actor(feat_dim=256, action_space=spaces.Discrete(6))
    a, raw = actor.sample(feats, generator)              # feats (B, D) -> env actions, what log_prob takes
    dist = actor.dist(feats); logp = actor.log_prob(dist, raw); ent = actor.entropy(dist)
    critic = Critic(feat_dim=256)                         # symlog two-hot head (or "mse": a plain regression)
    v = critic.value(feats)                               # (B,)
    value_fn = critic.as_terminal_value()                 # a planners.TerminalValue (features -> values)

Axis legend: B batch, D feature dim, K discrete actions or value bins, A continuous action dims.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from agents.returns import TwoHot
from planners.base import TerminalValue, check_action_space

__all__ = ["Actor", "Critic", "mlp"]


def mlp(inp: int, hidden: int, layers: int, out: int, zero_out: bool = False) -> nn.Sequential:
    """``layers`` x (Linear, LayerNorm, SiLU) then a Linear to ``out`` (DreamerV3's MLP blocks); ``zero_out``
    initialises the last layer to zero (DreamerV3 does so for the critic and reward heads: predictions start at 0)."""
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        d = hidden
    last = nn.Linear(d, out)
    if zero_out:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    mods.append(last)
    return nn.Sequential(*mods)


class Actor(nn.Module):
    """π(a | features): a categorical for Discrete actions, a Gaussian per dimension for a bounded Box.

    Box: mean = centre + half-range tanh(μ), std = half-range (min_std + (max_std - min_std) sigmoid(σ + 2))
    (DreamerV3's bounded std); samples are clipped to the space for the env, the unclipped sample is what
    :meth:`log_prob` scores (REINFORCE needs the density of what was drawn).

    Args:
        feat_dim: D. action_space: Discrete (from 0) or a bounded Box. hidden, layers: the MLP.
        min_std, max_std: the Box std range, as fractions of each dimension's half range.
    """

    def __init__(
        self,
        feat_dim: int,
        action_space: spaces.Space,
        hidden: int = 256,
        layers: int = 2,
        min_std: float = 0.1,
        max_std: float = 1.0,
    ):
        super().__init__()
        self.action_space = check_action_space(action_space)
        self.discrete = isinstance(action_space, spaces.Discrete)
        if self.discrete:
            self.net = mlp(feat_dim, hidden, layers, int(action_space.n))
        else:
            a = int(np.prod(action_space.shape))
            self.net = mlp(feat_dim, hidden, layers, 2 * a)
            low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
            high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
            self.register_buffer("centre", (low + high) / 2)
            self.register_buffer("half_range", (high - low) / 2)
            self.register_buffer("low", low)
            self.register_buffer("high", high)
            self.min_std, self.max_std = float(min_std), float(max_std)

    def dist(self, feats: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution at features (B, D) (Categorical, or Normal over (B, A))."""
        out = self.net(feats)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        mu, sig = out.chunk(2, -1)
        std = self.half_range * (self.min_std + (self.max_std - self.min_std) * torch.sigmoid(sig + 2.0))
        return torch.distributions.Normal(self.centre + self.half_range * torch.tanh(mu), std)

    @torch.no_grad()
    def sample(
        self, feats: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(env actions, raw samples) at features (B, D): Discrete int64 (B,) twice; Box: clipped float32 (B, A)
        and the unclipped draw. ``deterministic``: the mode (argmax / mean). Draws come from ``generator`` on the
        CPU, so a seed gives the same actions on every device."""
        d = self.dist(feats)
        if self.discrete:
            probs = d.probs
            if deterministic:
                a = probs.argmax(-1)
            else:
                a = torch.multinomial(probs.cpu().float(), 1, generator=generator)[:, 0].to(probs.device)
            return a, a
        if deterministic:
            raw = d.mean
        else:
            eps = torch.randn(d.mean.shape, generator=generator).to(d.mean)
            raw = d.mean + d.stddev * eps
        return torch.max(torch.min(raw, self.high), self.low), raw

    def log_prob(self, dist: torch.distributions.Distribution, raw: torch.Tensor) -> torch.Tensor:
        """log π of the raw samples (B,) (summed over Box dimensions)."""
        lp = dist.log_prob(raw)
        return lp if self.discrete else lp.sum(-1)

    def entropy(self, dist: torch.distributions.Distribution) -> torch.Tensor:
        """The policy's entropy (B,) (summed over Box dimensions)."""
        h = dist.entropy()
        return h if self.discrete else h.sum(-1)


class Critic(nn.Module):
    """v(features): DreamerV3's symlog two-hot head (``loss="twohot"``) or a plain regression (``"mse"``: the
    output is the value, trained with squared error; simpler, and fine when returns are small).

    Args:
        feat_dim: D. hidden, layers: the MLP. loss: "twohot" | "mse". bins: two-hot bins.
    """

    def __init__(
        self, feat_dim: int, hidden: int = 256, layers: int = 2, loss: Literal["twohot", "mse"] = "twohot", bins=255
    ):
        super().__init__()
        if loss not in ("twohot", "mse"):
            raise ValueError(f"critic loss={loss!r}: expected 'twohot' or 'mse'")
        self.kind = loss
        self.twohot = TwoHot(bins) if loss == "twohot" else None
        self.net = mlp(feat_dim, hidden, layers, bins if loss == "twohot" else 1, zero_out=True)

    def value(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (..., D) -> values (...)."""
        out = self.net(feats)
        return self.twohot.decode(out) if self.twohot is not None else out.squeeze(-1)

    def loss(self, feats: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (...) against ``target`` values (...) (no gradient flows into the target)."""
        out = self.net(feats)
        if self.twohot is not None:
            return self.twohot.loss(out, target)
        return 0.5 * (out.squeeze(-1) - target.detach()) ** 2

    def as_terminal_value(self) -> TerminalValue:
        """This critic as a planner's terminal value: features (N, D) -> values (N,) (no gradient, eval mode)."""

        @torch.no_grad()
        def value(feats: torch.Tensor) -> torch.Tensor:
            p = next(self.parameters())
            return self.value(feats.to(p.device, p.dtype))

        return value
