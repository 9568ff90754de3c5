"""The Mamba2 block: input projection, short causal depthwise conv over time, SSD scan, gated RMSNorm, output
projection (Dao & Gu 2024, "Transformers are SSMs"), with a parallel ``forward`` that can start from and
returns a state, and a single-token recurrent ``step``.

State (a dict of tensors, never modified in place):
    "conv": (b, conv_dim, d_conv - 1)  the last d_conv - 1 pre-conv inputs (x, B, C channels)
    "ssm":  (b, heads, headdim, d_state) float32, the SSD state

Axis legend: b batch, l sequence length, d model width, e inner width (= expand * d), h SSM heads,
p headdim, g groups, n d_state, c conv channels (e + 2 g n), k conv taps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .ssd import ssd, ssd_step

__all__ = ["Mamba2", "Mamba2Config"]

DT_INIT_FLOOR = 1e-4  # smallest initial dt (mamba-ssm's dt_init_floor)
RMS_NORM_EPS = 1e-5  # epsilon of the gated RMSNorm (the value mamba-ssm's Mamba2 gives its RMSNormGated)


@dataclass(frozen=True)
class Mamba2Config:
    """Hyper-parameters of one Mamba2 block (defaults follow mamba-ssm's Mamba2)."""

    dim: int
    """Model width d (input and output features per token)."""
    d_state: int = 64
    """SSM state size n per head and channel."""
    headdim: int = 32
    """Channels p per SSM head (the inner width is split into expand * dim / headdim heads)."""
    expand: int = 2
    """Inner width e = expand * dim."""
    d_conv: int = 4
    """Taps k of the causal depthwise convolution over time."""
    ngroups: int = 1
    """Groups g of heads sharing one B and C projection."""
    chunk_size: int = 64
    """Tokens per chunk of the chunked SSD scan (speed only: the result does not depend on it)."""
    dt_min: float = 0.001
    """Smallest initial step size dt (the initial dt of each head is log-uniform in [dt_min, dt_max])."""
    dt_max: float = 0.1
    """Largest initial step size dt."""
    A_init_range: tuple[float, float] = (1.0, 16.0)
    """Range of the initial decay rates -A (uniform), i.e. of how fast each head forgets."""
    backend: str = "auto"
    """SSD backend: "auto" (mamba-ssm's kernel on CUDA when it imports, else PyTorch), "torch", "mamba"."""

    def __post_init__(self):
        def bad(field, value, expected):
            raise ValueError(f"Mamba2Config.{field}={value!r}: expected {expected}")

        for f in ("dim", "d_state", "headdim", "expand", "d_conv", "ngroups", "chunk_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                bad(f, v, "a positive int")
        if (self.expand * self.dim) % self.headdim:
            bad("headdim", self.headdim, f"a divisor of expand * dim = {self.expand * self.dim}")
        if self.nheads % self.ngroups:
            bad("ngroups", self.ngroups, f"a divisor of the number of SSM heads ({self.nheads})")
        if not 0 < self.dt_min <= self.dt_max:
            bad("dt_min/dt_max", (self.dt_min, self.dt_max), "0 < dt_min <= dt_max")
        if self.backend not in ("auto", "torch", "mamba"):
            bad("backend", self.backend, "'auto', 'torch' or 'mamba'")

    @property
    def d_inner(self) -> int:
        """Inner width e = expand * dim."""
        return self.expand * self.dim

    @property
    def nheads(self) -> int:
        """Number of SSM heads h = d_inner / headdim."""
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels c through the convolution: x (e) plus B and C (g * n each)."""
        return self.d_inner + 2 * self.ngroups * self.d_state


class Mamba2(nn.Module):
    """One Mamba2 block (no residual, no pre-norm: the caller owns those)."""

    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        self.cfg = cfg
        e, c, h = cfg.d_inner, cfg.conv_dim, cfg.nheads
        self.in_proj = nn.Linear(cfg.dim, 2 * e + 2 * cfg.ngroups * cfg.d_state + h, bias=False)  # z, xBC, dt
        self.conv_weight = nn.Parameter(torch.empty(c, 1, cfg.d_conv))  # depthwise, (c, 1, k)
        self.conv_bias = nn.Parameter(torch.empty(c))
        bound = 1.0 / math.sqrt(cfg.d_conv)  # PyTorch's default Conv1d init for a depthwise conv (fan-in k)
        nn.init.uniform_(self.conv_weight, -bound, bound)
        nn.init.uniform_(self.conv_bias, -bound, bound)
        # dt bias: softplus(dt_bias) log-uniform in [dt_min, dt_max] (inverse softplus of a sampled dt)
        dt = torch.exp(torch.rand(h) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=DT_INIT_FLOOR)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        lo, hi = cfg.A_init_range
        self.A_log = nn.Parameter(torch.log(torch.empty(h).uniform_(lo, hi)))  # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(h))  # skip connection y += D x
        self.norm_weight = nn.Parameter(torch.ones(e))  # gated RMSNorm scale
        self.out_proj = nn.Linear(e, cfg.dim, bias=False)

    # ------------------------------------------------------------------------------------------ state

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """Zero state: conv (b, c, k - 1) in ``dtype``, ssm (b, h, p, n) float32."""
        cfg = self.cfg
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        return {
            "conv": torch.zeros(batch_size, cfg.conv_dim, cfg.d_conv - 1, device=device, dtype=dtype),
            "ssm": torch.zeros(batch_size, cfg.nheads, cfg.headdim, cfg.d_state, device=device, dtype=torch.float32),
        }

    # -------------------------------------------------------------------------------------- internals

    def _split_proj(self, zxbcdt: torch.Tensor):
        cfg = self.cfg
        return torch.split(zxbcdt, [cfg.d_inner, cfg.conv_dim, cfg.nheads], dim=-1)  # z, xBC, dt

    def _split_xbc(self, xbc: torch.Tensor):
        cfg = self.cfg
        gn = cfg.ngroups * cfg.d_state
        return torch.split(xbc, [cfg.d_inner, gn, gn], dim=-1)  # x, B, C

    def _gate_norm_out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Gated RMSNorm (norm(y * silu(z)) * w, mamba2's norm_before_gate=False) then out_proj."""
        y = F.rms_norm(y * F.silu(z), (y.shape[-1],), self.norm_weight.to(y.dtype), eps=RMS_NORM_EPS)
        return self.out_proj(y)

    # ---------------------------------------------------------------------------------------- forward

    def forward(self, u: torch.Tensor, state: dict[str, torch.Tensor] | None = None):
        """Parallel pass over a sequence. u (b, l, d); state: the state before u (None = zeros).

        Returns (y (b, l, d), state after u). Equal to ``l`` successive ``step`` calls.
        """
        cfg = self.cfg
        if u.ndim != 3 or u.shape[-1] != cfg.dim:
            raise ValueError(f"Mamba2.forward: u must be (batch, length, {cfg.dim}), got {tuple(u.shape)}")
        b, l, _ = u.shape
        if state is None:
            state = self.init_state(b, u.device, u.dtype)
        z, xbc, dt = self._split_proj(self.in_proj(u))  # (b, l, e), (b, l, c), (b, l, h)

        # 1. causal depthwise conv over time, continuing from the carried last k-1 inputs
        xbc_t = rearrange(xbc, "b l c -> b c l")
        xpad = torch.cat([state["conv"].to(xbc_t.dtype), xbc_t], dim=-1)  # (b, c, k - 1 + l)
        new_conv = xpad[..., xpad.shape[-1] - (cfg.d_conv - 1) :].clone()  # (b, c, k - 1), not a view of xpad
        xbc = F.conv1d(xpad, self.conv_weight, self.conv_bias, groups=cfg.conv_dim)  # (b, c, l)
        xbc = F.silu(rearrange(xbc, "b c l -> b l c"))
        x, B, C = self._split_xbc(xbc)

        # 2. SSD scan from the carried state
        x = rearrange(x, "b l (h p) -> b l h p", p=cfg.headdim)
        B = rearrange(B, "b l (g n) -> b l g n", g=cfg.ngroups)
        C = rearrange(C, "b l (g n) -> b l g n", g=cfg.ngroups)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # (b, l, h) positive
        A = -torch.exp(self.A_log.float())  # (h,) negative
        y, new_ssm = ssd(x, dt, A, B, C, cfg.chunk_size, initial_states=state["ssm"], backend=cfg.backend)
        y = y + x * self.D.to(x.dtype)[:, None]  # (b, l, h, p)

        # 3. gated norm, output projection
        y = self._gate_norm_out(rearrange(y, "b l h p -> b l (h p)"), z)
        return y, {"conv": new_conv, "ssm": new_ssm}

    def step(self, u_t: torch.Tensor, state: dict[str, torch.Tensor]):
        """One token: u_t (b, d) -> (y_t (b, d), new state). The recurrent form; ``state`` is not modified."""
        cfg = self.cfg
        if u_t.ndim != 2 or u_t.shape[-1] != cfg.dim:
            raise ValueError(f"Mamba2.step: u_t must be (batch, {cfg.dim}), got {tuple(u_t.shape)}")
        z, xbc, dt = self._split_proj(self.in_proj(u_t))  # (b, e), (b, c), (b, h)

        # 1. conv: dot product of the last k inputs with the taps
        window = torch.cat([state["conv"].to(xbc.dtype), xbc[..., None]], dim=-1)  # (b, c, k)
        new_conv = window[..., 1:]
        taps = self.conv_weight[:, 0, :].to(window.dtype)  # (c, k)
        xbc = F.silu((window * taps).sum(-1) + self.conv_bias.to(window.dtype))
        x, B, C = self._split_xbc(xbc)

        # 2. one recurrent SSD update
        x = rearrange(x, "b (h p) -> b h p", p=cfg.headdim)
        B = rearrange(B, "b (g n) -> b g n", g=cfg.ngroups)
        C = rearrange(C, "b (g n) -> b g n", g=cfg.ngroups)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        A = -torch.exp(self.A_log.float())
        y, new_ssm = ssd_step(x, dt, A, B, C, state["ssm"])
        y = y + x * self.D.to(x.dtype)[:, None]

        # 3. gated norm, output projection
        y = self._gate_norm_out(rearrange(y, "b h p -> b (h p)"), z)
        return y, {"conv": new_conv, "ssm": new_ssm}
