"""The hybrid video backbone of "Long-Context State-Space Video World Models" (Po et al. 2025): per layer
a block-wise Mamba2 scan through time, frame-local attention, then an MLP, each pre-normed and modulated per
frame (adaLN-Zero) by the noise-level embedding plus the action embedding. The baselines of the paper are
configurations of the same code (``backbone_config(preset, variant)``).

Data flow for T frames (frame-major tokens: all tokens of frame t before frame t+1):

    x (B, T, C, h, w) --patchify p x p--> (B, T, S, C p p) --linear + spatial pos--> tokens (B, T, S, D)
                      (+ the action vector of frame t on each of its tokens, with ``action_tokens``)
    per layer:  tokens += gate * BlockwiseSSM(adaLN(tokens))     every bh x bw block of the gh x gw token
                                                                  grid is its own sequence through time (its
                                                                  tokens frame by frame), with its own state
                tokens += gate * FrameAttention(adaLN(tokens))    chunk-causal frame-local (see attention.py)
                tokens += gate * MLP(adaLN(tokens))
    final:  LayerNorm -> feats = mean over tokens (B, T, D);  adaLN -> linear (zero-init) -> unpatchify -> out

Streaming: ``init_state`` / ``step`` process one frame from per-layer caches (conv + SSM state per block, the
KV of the frames the attention window can still see), so a frame costs the same whatever came before
(except for the "causal" full-attention baseline, whose KV cache grows: the quadratic reference).
``prefill`` is the parallel forward that also returns the state T steps would leave.

State layout: {"t": (B,) int64 frames seen, "layers": [per layer {"ssm": {"conv": (B, nb, c, k-1),
"ssm": (B, nb, h, p, n)}, "attn": {"k", "v": (B, K, S, H, d), "t": (B,)}}]}, plus with ``prev_frame``
"prev": {"x": (B, C, h, w), "noise": (B,)} (the last frame as fed). Every tensor has the batch on
axis 0, so states can be indexed / repeated / moved with worldmodel/state.py. ``step`` never modifies its input
state.

Axis legend: B batch, T frames, C latent channels, h x w latent grid, p patch, gh x gw token grid,
S = gh gw tokens per frame, D model width, nh x nw blocks per frame (nb = nh nw), bh x bw block size (tokens),
A action dim.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import presets
from .attention import FrameAttention
from .mamba2 import Mamba2, Mamba2Config

__all__ = [
    "ATTN_MODES",
    "PRESETS",
    "VARIANTS",
    "Variant",
    "Backbone",
    "BackboneConfig",
    "BlockwiseSSM",
    "backbone_config",
    "count_config_parameters",
    "count_parameters",
]

State = dict[str, Any]
ATTN_MODES = ("local", "causal", "window", "none")
# the paper's model and its baselines (see backbone_config)
Variant = Literal["hybrid", "hybrid_block1", "mamba2", "mamba2_local_attn", "causal_full", "causal_window"]
VARIANTS: tuple[str, ...] = get_args(Variant)


# ------------------------------------------------------------------------------------------------ config


def _pair(value, field: str) -> tuple[int, int]:
    try:
        a, b = value
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"BackboneConfig.{field}={value!r}: expected a pair of ints (rows, cols)") from None
    return a, b


@dataclass(frozen=True)
class BackboneConfig:
    """Hyper-parameters of the backbone. Lists (e.g. from JSON) are accepted and stored as tuples. The presets'
    sizes are in worldmodel/presets.py (BACKBONE); the defaults here are the cpu preset's."""

    latent_channels: int  # C of the autoencoder's latent grid
    latent_size: tuple[int, int]  # (h, w) of the latent grid
    patch: int  # patchify p x p latent cells into one token
    num_actions: int | None = 6  # discrete actions -> nn.Embedding; None -> continuous
    action_dim: int = 0  # continuous actions -> small MLP (used when num_actions is None)
    action_tokens: bool = False  # also add a learnt action vector to every token of its frame (an input path
    #   beside adaLN, so attention and the scan see the action directly; see ACTION_TOKEN_INIT_STD)
    null_action: bool = False  # one more learnt discrete action, index num_actions: "no action given" (action
    #   dropout in training, classifier-free guidance when imagining; see WorldModelConfig.action_dropout)
    prev_frame: bool = False  # also feed each token the same patch of the previous frame as it was fed (its noisy
    #   latent and noise level; frame 0 sees zeros at level 1): a one-frame local shortcut beside the scan and
    #   attention, as DIAMOND conditions its denoiser on past frames stacked on the channels
    dim: int = 128  # model width D
    depth: int = 6  # layers
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * dim
    d_state: int = 16  # SSM state size n
    headdim: int = 32  # SSM head dim p
    expand: int = 2  # SSM inner width = expand * dim
    d_conv: int = 4  # SSM causal conv taps
    chunk_size: int = 32  # SSD chunk length (tokens; 32-64 suit a CPU, the GPU kernel likes 128-256)
    block_sizes: tuple[tuple[int, int], ...] = ()  # (bh, bw) in TOKENS per layer: depth, 1 (all) or 0 (frame)
    attn: str = "local"  # "local" chunk-causal frame-local | "causal" full | "window" last W frames | "none"
    attn_chunk: int = 5  # frames per chunk of "local" (window = 2 chunks)
    window_frames: int = 192  # W of "window"
    ssm: bool = True  # False -> no SSM (pure Transformer baselines)
    rope: bool = False  # rotary embedding of the frame index in attention (the Transformer baselines)
    attn_backend: str = "sdpa"  # "sdpa" (blocked, linear) | "flex" | "dense" (reference)
    ssd_backend: str = "auto"  # "auto" (mamba-ssm kernel on CUDA when installed) | "torch" | "mamba"

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("latent_size", _pair(self.latent_size, "latent_size"))
        blocks = self.block_sizes
        if blocks is None or (
            isinstance(blocks, (tuple, list)) and len(blocks) == 2 and all(isinstance(v, int) for v in blocks)
        ):
            raise ValueError(
                f"BackboneConfig.block_sizes={blocks!r}: expected a sequence of (bh, bw) pairs like ((2, 2),)"
            )
        set_("block_sizes", tuple(_pair(b, "block_sizes") for b in blocks))

        def bad(field, expected):
            raise ValueError(f"BackboneConfig.{field}={getattr(self, field)!r}: expected {expected}")

        for f in (
            "latent_channels",
            "patch",
            "dim",
            "depth",
            "heads",
            "d_state",
            "headdim",
            "expand",
            "d_conv",
            "chunk_size",
            "attn_chunk",
            "window_frames",
        ):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f, "a positive int")
        h, w = self.latent_size
        if h < 1 or w < 1 or h % self.patch or w % self.patch:
            bad("latent_size", f"positive sizes divisible by patch={self.patch}")
        if self.num_actions is None:
            if self.action_dim < 1:
                bad("action_dim", "a positive int when num_actions is None (continuous actions)")
        elif type(self.num_actions) is not int or self.num_actions < 1:
            bad("num_actions", "a positive int (discrete actions) or None (continuous)")
        if self.null_action and self.num_actions is None:
            bad("null_action", "False for continuous actions (the null action is a discrete embedding row)")
        if self.attn not in ATTN_MODES:
            bad("attn", f"one of {ATTN_MODES}")
        if not self.ssm and self.attn == "none":
            bad("attn", "an attention mode when ssm=False (otherwise nothing mixes frames)")
        if self.dim % self.heads:
            bad("heads", f"a divisor of dim={self.dim}")
        if self.rope and (self.dim // self.heads) % 2:
            bad("rope", f"False, or an even attention head dim (dim/heads = {self.dim // self.heads})")
        if self.ssm and (self.expand * self.dim) % self.headdim:
            bad("headdim", f"a divisor of expand * dim = {self.expand * self.dim}")
        if not self.mlp_ratio > 0:
            bad("mlp_ratio", "> 0")
        if self.attn_backend not in ("sdpa", "flex", "dense"):
            bad("attn_backend", "'sdpa', 'flex' or 'dense'")
        if self.ssd_backend not in ("auto", "torch", "mamba"):
            bad("ssd_backend", "'auto', 'torch' or 'mamba'")
        if len(self.block_sizes) not in (0, 1, self.depth):
            bad("block_sizes", f"0 (whole frame), 1 (all layers) or depth={self.depth} (bh, bw) pairs")
        gh, gw = self.grid
        for bh, bw in self.block_sizes:
            if bh < 1 or bw < 1 or gh % bh or gw % bw:
                bad("block_sizes", f"blocks (bh, bw) dividing the token grid {self.grid} (latent/patch)")

    @property
    def action_rows(self) -> int:
        """Rows of the discrete action embeddings: the env's actions, plus the null action when enabled."""
        return int(self.num_actions) + int(self.null_action)

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) token grid after patchify."""
        return self.latent_size[0] // self.patch, self.latent_size[1] // self.patch

    @property
    def tokens(self) -> int:
        """S, tokens per frame."""
        return self.grid[0] * self.grid[1]

    def layer_block_sizes(self) -> tuple[tuple[int, int], ...]:
        """(bh, bw) of every layer (whole frame when block_sizes is empty)."""
        if not self.block_sizes:
            return (self.grid,) * self.depth
        if len(self.block_sizes) == 1:
            return self.block_sizes * self.depth
        return self.block_sizes

    def mamba(self) -> Mamba2Config:
        """The config of the Mamba2 (SSD) layer every block of the block-wise scan runs."""
        return Mamba2Config(
            dim=self.dim,
            d_state=self.d_state,
            headdim=self.headdim,
            expand=self.expand,
            d_conv=self.d_conv,
            chunk_size=self.chunk_size,
            backend=self.ssd_backend,
        )


# The presets' numbers live in worldmodel/presets.py (BACKBONE); this name is kept for existing imports.
PRESETS: dict[str, dict[str, Any]] = presets.BACKBONE

_VARIANT_SETTINGS: dict[str, dict[str, Any]] = {
    "hybrid": {},
    "hybrid_block1": dict(block_sizes=((1, 1),)),  # ablation "block size 1"
    "mamba2": dict(attn="none", block_sizes=()),  # one scan over the whole frame, no attention
    "mamba2_local_attn": dict(block_sizes=()),  # "w/o block-wise": whole-frame scan + frame-local attention
    "causal_full": dict(ssm=False, attn="causal", rope=True, block_sizes=()),
    "causal_window": dict(ssm=False, attn="window", rope=True, block_sizes=()),
}


def _largest_divisor_at_most(n: int, b: int) -> int:
    return max(d for d in range(1, min(n, b) + 1) if n % d == 0)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (shared ones once)."""
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=512)
def count_config_parameters(cfg: BackboneConfig) -> int:
    """Parameters a Backbone(cfg) would have, counted on the meta device (no memory, any size)."""
    with torch.device("meta"):
        return count_parameters(Backbone(cfg))


def _valid_dim(cfg: BackboneConfig, dim: int) -> bool:
    if dim % cfg.heads or (cfg.rope and (dim // cfg.heads) % 2):
        return False
    return not (cfg.ssm and (cfg.expand * dim) % cfg.headdim)


def _match_parameters(cfg: BackboneConfig, target: int, tol: float = 0.10, close: float = 0.05):
    """The (depth, dim) whose parameter count is near ``target``: the width closest to cfg.dim (trying widths
    in [dim/2, 2 dim], nearest first) at which some depth lands within ``close``; else the best found within
    ``tol``; else ValueError."""
    counting = dataclasses.replace(cfg, block_sizes=())  # parameters do not depend on block sizes

    def best_depth(dim: int) -> tuple[float, int]:
        c1 = count_config_parameters(dataclasses.replace(counting, dim=dim, depth=1))
        c2 = count_config_parameters(dataclasses.replace(counting, dim=dim, depth=2))
        per, base = c2 - c1, 2 * c1 - c2  # count(depth) = base + depth * per
        d0 = max(1, round((target - base) / per))
        d = min((d for d in (d0 - 1, d0, d0 + 1) if d >= 1), key=lambda d: abs(base + d * per - target))
        return abs(base + d * per - target) / target, d

    step = math.gcd(cfg.dim, 8)
    dims = sorted(
        (d for d in range(max(step, cfg.dim // 2), 2 * cfg.dim + 1, step) if _valid_dim(cfg, d)),
        key=lambda d: (abs(d - cfg.dim), d),
    )
    best = None
    for dim in [cfg.dim] + [d for d in dims if d != cfg.dim]:
        err, depth = best_depth(dim)
        if best is None or err < best[0]:
            best = (err, depth, dim)
        if err <= close:
            break
    err, depth, dim = best
    if err > tol:
        raise ValueError(
            f"backbone_config: cannot match {target} parameters within {tol:.0%} for {cfg} (best error {err:.1%})"
        )
    return dataclasses.replace(cfg, dim=dim, depth=depth)


def backbone_config(
    preset: str,
    variant: str = "hybrid",
    *,
    latent_channels: int,
    latent_size,
    patch: int | None = None,
    num_actions: int | None = 6,
    **overrides,
) -> BackboneConfig:
    """Config of ``variant`` at the scale of ``preset``.

    preset: "tiny" (tests), "cpu" (the 2-core demo), "paper" (~200M). variant: "hybrid" (the paper's model),
    "hybrid_block1" (block size 1), "mamba2" (single whole-frame scan, no attention), "mamba2_local_attn"
    (whole-frame scan + frame-local attention), "causal_full" (causal Transformer, full context),
    "causal_window" (causal Transformer, ``window_frames`` window). Non-hybrid variants get the depth/width
    whose parameter count is close to the hybrid's (within 10%), unless ``depth`` or ``dim`` is overridden.
    ``patch`` defaults to the preset's. ``overrides`` are BackboneConfig fields; they apply to the hybrid
    reference and to the variant.
    """
    if preset not in presets.PRESETS:
        raise ValueError(f"backbone_config: preset must be one of {presets.PRESETS}, got {preset!r}")
    if variant not in VARIANTS:
        raise ValueError(f"backbone_config: variant must be one of {VARIANTS}, got {variant!r}")
    fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"backbone_config: unknown BackboneConfig fields {unknown}; valid: {sorted(fields)}")
    base = dict(presets.BACKBONE[preset])
    cycle = base.pop("block_cycle")
    kw: dict[str, Any] = dict(base, latent_channels=latent_channels, latent_size=latent_size, num_actions=num_actions)
    if patch is not None:
        kw["patch"] = patch
    kw.update(overrides)
    if "block_sizes" not in overrides:
        probe = BackboneConfig(**kw)  # validates latent_size / patch before the grid is used
        gh, gw = probe.grid
        kw["block_sizes"] = tuple(
            (_largest_divisor_at_most(gh, bh), _largest_divisor_at_most(gw, bw))
            for bh, bw in (cycle[i % len(cycle)] for i in range(probe.depth))
        )
    hybrid = BackboneConfig(**kw)
    if variant == "hybrid":
        return hybrid
    cfg = BackboneConfig(**{**kw, **_VARIANT_SETTINGS[variant], **overrides})
    if "depth" in overrides or "dim" in overrides:
        return cfg
    return _match_parameters(cfg, count_config_parameters(dataclasses.replace(hybrid, block_sizes=())))


# ----------------------------------------------------------------------------------------------- layers


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one pass


def _norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class BlockwiseSSM(nn.Module):
    """Mamba2 over every (bh x bw) block of the token grid: each block is a sequence through time (its
    tokens frame by frame, row-major inside the block) with its own state; all blocks batched, shared weights.
    Block = whole grid: a single scan over the frame; 1 x 1: one scan per token position."""

    def __init__(self, mcfg: Mamba2Config, grid: tuple[int, int], block: tuple[int, int]):
        super().__init__()
        self.grid, self.block = grid, block
        self.nh, self.nw = grid[0] // block[0], grid[1] // block[1]
        self.mamba = Mamba2(mcfg)

    def _to_blocks(self, x: Tensor) -> Tensor:  # (B, T, S, D) -> (B nb, T bh bw, D)
        return rearrange(
            x,
            "b t (nh bh nw bw) d -> (b nh nw) (t bh bw) d",
            nh=self.nh,
            nw=self.nw,
            bh=self.block[0],
            bw=self.block[1],
        )

    def _from_blocks(self, y: Tensor, B: int) -> Tensor:  # (B nb, T bh bw, D) -> (B, T, S, D)
        return rearrange(
            y,
            "(b nh nw) (t bh bw) d -> b t (nh bh nw bw) d",
            b=B,
            nh=self.nh,
            nw=self.nw,
            bh=self.block[0],
            bw=self.block[1],
        )

    def _flat(self, state: State) -> State:  # (B, nb, ...) -> (B nb, ...)
        return {k: rearrange(v, "b n ... -> (b n) ...") for k, v in state.items()}

    def _unflat(self, state: State, B: int) -> State:  # (B nb, ...) -> (B, nb, ...)
        return {k: rearrange(v, "(b n) ... -> b n ...", b=B) for k, v in state.items()}

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        """The zero state before the first frame: conv and SSM state of every block."""
        return self._unflat(self.mamba.init_state(batch_size * self.nh * self.nw, device, dtype), batch_size)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (B, T, S, D), state before x (None = zeros) -> (y (B, T, S, D), state after x)."""
        B = x.shape[0]
        y, st = self.mamba(self._to_blocks(x), None if state is None else self._flat(state))
        return self._from_blocks(y, B), self._unflat(st, B)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One frame x_t (B, S, D) -> (y_t (B, S, D), new state)."""
        B = x_t.shape[0]
        u = self._to_blocks(x_t[:, None])  # (B nb, bh bw, D)
        if u.shape[1] == 1:  # one token per block and frame: the recurrent update
            y, st = self.mamba.step(u[:, 0], self._flat(state))
            y = y[:, None]
        else:  # a few tokens per block: the chunked scan from the carried state
            y, st = self.mamba(u, self._flat(state))
        return self._from_blocks(y, B)[:, 0], self._unflat(st, B)


class _Layer(nn.Module):
    """[block-wise SSM] -> [frame attention] -> MLP, each pre-norm + adaLN-Zero (shift, scale, gate)."""

    def __init__(self, cfg: BackboneConfig, block: tuple[int, int]):
        super().__init__()
        D = cfg.dim
        self.ssm = BlockwiseSSM(cfg.mamba(), cfg.grid, block) if cfg.ssm else None
        self.attn = (
            FrameAttention(D, cfg.heads, cfg.attn, cfg.attn_chunk, cfg.window_frames, cfg.rope, cfg.attn_backend)
            if cfg.attn != "none"
            else None
        )
        hidden = int(round(cfg.mlp_ratio * D))
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, D))
        self.subs = [n for n, m in (("ssm", self.ssm), ("attn", self.attn)) if m is not None] + ["mlp"]
        self.ada = nn.Linear(D, 3 * len(self.subs) * D)  # on silu(cond); zero-init: starts as identity
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def _run(self, h: Tensor, cond: Tensor, ssm_fn, attn_fn) -> tuple[Tensor, State]:
        """h (B, T, S, D), cond (B, T, D)."""
        mods = rearrange(
            self.ada(F.silu(cond)), "b t (n three d) -> n three b t 1 d", n=len(self.subs), three=3
        )  # (subs, 3, B, T, 1, D)
        new: State = {}
        for (shift, scale, gate), name in zip(mods, self.subs):
            x = _modulate(_norm(h), shift, scale)
            if name == "ssm":
                y, new["ssm"] = ssm_fn(x)
            elif name == "attn":
                y, new["attn"] = attn_fn(x)
            else:
                y = self.mlp(x)
            h = torch.addcmul(h, gate, y)  # h + gate * y
        return h, new

    def forward(self, h: Tensor, cond: Tensor, return_state: bool = False) -> tuple[Tensor, State]:
        def attn_fn(x):
            if return_state:
                return self.attn(x, return_cache=True)
            return self.attn(x), None

        return self._run(h, cond, lambda x: self.ssm(x), attn_fn)

    def step(self, h_t: Tensor, cond_t: Tensor, state: State) -> tuple[Tensor, State]:
        """h_t (B, S, D), cond_t (B, D)."""

        def ssm_fn(x):  # x (B, 1, S, D)
            y, st = self.ssm.step(x[:, 0], state["ssm"])
            return y[:, None], st

        def attn_fn(x):
            y, st = self.attn.step(x[:, 0], state["attn"])
            return y[:, None], st

        h, new = self._run(h_t[:, None], cond_t[:, None], ssm_fn, attn_fn)
        return h[:, 0], new

    def init_state(self, batch_size: int, tokens: int, device, dtype) -> State:
        st: State = {}
        if self.ssm is not None:
            st["ssm"] = self.ssm.init_state(batch_size, device, dtype)
        if self.attn is not None:
            st["attn"] = self.attn.init_cache(batch_size, tokens, device, dtype)
        return st


# Noise levels are continuous in [0, 1], but the sinusoidal embedding (DDPM / DiT) was designed for integer
# timesteps 0..1000: its frequencies run from 1 to 1/max_period per unit, so on [0, 1] every component but the
# fastest few would stay near cos(0) = 1 and nearby noise levels would embed almost alike. Scaling by 1000
# spreads [0, 1] over the range the frequencies were chosen for.
NOISE_LEVEL_SCALE = 1000.0


def _timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (scaled) noise levels: t (...) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


# Init std of the per-token action vectors (``action_tokens``). The tokens they are added to start with a std of
# ~0.5 per channel (in_proj of unit-variance latents); 0.5 makes the action as visible as the frame content from
# the first step, where the adaLN path's 0.02 (DiT's init) starts it next to a large noise-level embedding.
ACTION_TOKEN_INIT_STD = 0.5

# --------------------------------------------------------------------------------------------- backbone


class Backbone(nn.Module):
    """The sequence model: noisy latent frames + actions + per-frame noise levels -> per-frame prediction."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        D, S, p, C = cfg.dim, cfg.tokens, cfg.patch, cfg.latent_channels
        self.in_proj = nn.Linear(C * p * p, D)
        # ``prev_frame``: the previous frame's patch and its noise level, projected and added to the tokens
        self.prev_proj = nn.Linear(C * p * p + 1, D) if cfg.prev_frame else None
        self.pos_emb = nn.Parameter(torch.randn(S, D) * 0.02)  # learned spatial position per token
        self.freq_dim = min(D, 256)
        self.noise_mlp = nn.Sequential(nn.Linear(self.freq_dim, D), nn.SiLU(), nn.Linear(D, D))
        if cfg.num_actions is not None:
            self.action_emb = nn.Embedding(cfg.action_rows, D)
            nn.init.normal_(self.action_emb.weight, std=0.02)
        else:
            self.action_emb = nn.Sequential(nn.Linear(cfg.action_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.action_tok = None
        if cfg.action_tokens:
            if cfg.num_actions is not None:
                self.action_tok = nn.Embedding(cfg.action_rows, D)
                nn.init.normal_(self.action_tok.weight, std=ACTION_TOKEN_INIT_STD)
            else:
                self.action_tok = nn.Linear(cfg.action_dim, D)
        self.layers = nn.ModuleList(_Layer(cfg, blk) for blk in cfg.layer_block_sizes())
        self.final_ada = nn.Linear(D, 2 * D)  # shift, scale of the output head
        self.out_proj = nn.Linear(D, C * p * p)
        for lin in (self.final_ada, self.out_proj):  # zero-init: the prediction starts at 0
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ---------------------------------------------------------------------------------------- pieces

    def _check(self, x: Tensor, actions: Tensor, noise: Tensor, where: str, frames: bool) -> None:
        cfg = self.cfg
        lead = "(B, T, " if frames else "(B, "
        nlead = 2 if frames else 1
        want = (cfg.latent_channels, *cfg.latent_size)
        if x.ndim != nlead + 3 or tuple(x.shape[nlead:]) != want:
            raise ValueError(
                f"Backbone.{where}: x has shape {tuple(x.shape)}, expected {lead}C, h, w) = "
                f"{lead}{want[0]}, {want[1]}, {want[2]})"
            )
        bt = tuple(x.shape[:nlead])
        if tuple(noise.shape) != bt:
            raise ValueError(f"Backbone.{where}: noise levels have shape {tuple(noise.shape)}, expected {bt}")
        if cfg.num_actions is not None:
            if tuple(actions.shape) != bt or actions.dtype.is_floating_point or actions.dtype == torch.bool:
                raise ValueError(
                    f"Backbone.{where}: discrete actions must be integer {bt}, got "
                    f"{actions.dtype} {tuple(actions.shape)}"
                )
            if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= cfg.action_rows):
                null = f" ({cfg.num_actions} = the null action)" if cfg.null_action else ""
                raise ValueError(
                    f"Backbone.{where}: actions must be in [0, {cfg.action_rows}){null}, got values "
                    f"in [{int(actions.min())}, {int(actions.max())}]"
                )
        elif tuple(actions.shape) != (*bt, cfg.action_dim) or not actions.dtype.is_floating_point:
            raise ValueError(
                f"Backbone.{where}: continuous actions must be float {(*bt, cfg.action_dim)}, "
                f"got {actions.dtype} {tuple(actions.shape)}"
            )

    def _patches(self, x: Tensor) -> Tensor:
        """x (B, T, C, h, w) -> (B, T, S, C p p)."""
        p = self.cfg.patch
        return rearrange(x, "b t c (gh p1) (gw p2) -> b t (gh gw) (c p1 p2)", p1=p, p2=p)

    def _embed(
        self, x: Tensor, actions: Tensor, noise: Tensor, prev: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, C, h, w) -> tokens (B, T, S, D); actions, noise (B, T[, A]) -> cond (B, T, D).

        ``prev`` (``prev_frame`` only): the frame before each frame and its noise level, (B, T, C, h, w), (B, T)."""
        h = self.in_proj(self._patches(x)) + self.pos_emb  # (B, T, S, D)
        if self.prev_proj is not None:
            px, pn = prev
            pp = self._patches(px)  # (B, T, S, C p p)
            level = pn[:, :, None, None].expand(*pp.shape[:3], 1).to(pp.dtype)  # (B, T, S, 1)
            h = h + self.prev_proj(torch.cat([pp, level], -1))
        if self.action_tok is not None:
            h = h + self.action_tok(actions)[:, :, None, :]  # the same vector on every token of frame t
        cond = self.noise_mlp(_timestep_embedding(NOISE_LEVEL_SCALE * noise, self.freq_dim)) + self.action_emb(actions)
        return h, cond.to(h.dtype)

    def _head(self, h: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """h (B, T, S, D) -> out (B, T, C, h, w), feats (B, T, D)."""
        hn = _norm(h)
        feats = hn.mean(dim=2)  # (B, T, D) per-frame features, after the final norm
        shift, scale = rearrange(self.final_ada(F.silu(cond)), "b t (two d) -> two b t 1 d", two=2)
        y = self.out_proj(_modulate(hn, shift, scale))  # (B, T, S, C p p)
        p, (gh, gw) = self.cfg.patch, self.cfg.grid
        out = rearrange(y, "b t (gh gw) (c p1 p2) -> b t c (gh p1) (gw p2)", gh=gh, gw=gw, p1=p, p2=p)
        return out, feats

    # ---------------------------------------------------------------------------------------- public

    def forward(self, x: Tensor, actions: Tensor, noise_levels: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, C, h, w) noisy latents, actions (B, T) int or (B, T, A) float, noise_levels (B, T) in
        [0, 1] -> (out (B, T, C, h, w), feats (B, T, D)). Frame t only depends on frames <= t."""
        out, feats, _ = self._forward(x, actions, noise_levels, return_state=False)
        return out, feats

    def prefill(self, x: Tensor, actions: Tensor, noise_levels: Tensor) -> tuple[Tensor, Tensor, State]:
        """``forward`` that also returns the state T ``step`` calls from ``init_state`` would leave."""
        return self._forward(x, actions, noise_levels, return_state=True)

    def _forward(self, x, actions, noise_levels, return_state: bool):
        self._check(x, actions, noise_levels, "forward", frames=True)
        # 1. patchify + spatial positions; per-frame condition = noise-level embedding + action embedding
        prev = None
        if self.prev_proj is not None:  # frame t also sees frame t-1 as fed (frame 0: zeros at level 1)
            prev = (
                torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1),  # (B, T, C, h, w)
                torch.cat([torch.ones_like(noise_levels[:, :1]), noise_levels[:, :-1]], 1),  # (B, T)
            )
        h, cond = self._embed(x, actions, noise_levels, prev)  # (B, T, S, D), (B, T, D)
        # 2. layers: block-wise SSM scan through time, frame attention, MLP (each adaLN-modulated per frame)
        layer_states = []
        for layer in self.layers:
            h, st = layer(h, cond, return_state=return_state)
            layer_states.append(st)
        # 3. final norm -> per-frame features; adaLN + zero-init projection -> unpatchify
        out, feats = self._head(h, cond)
        if not return_state:
            return out, feats, None
        B, T = x.shape[:2]
        t = torch.full((B,), T, device=x.device, dtype=torch.long)
        state = {"t": t, "layers": layer_states}
        if self.prev_proj is not None:
            state["prev"] = {"x": x[:, -1], "noise": noise_levels[:, -1]}
        return out, feats, state

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        """State before the first frame (zeros; empty / masked caches)."""
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        state = {
            "t": torch.zeros(batch_size, device=device, dtype=torch.long),
            "layers": [layer.init_state(batch_size, self.cfg.tokens, device, dtype) for layer in self.layers],
        }
        if self.prev_proj is not None:  # the frame before the first: zeros at noise level 1
            c, (lh, lw) = self.cfg.latent_channels, self.cfg.latent_size
            state["prev"] = {
                "x": torch.zeros(batch_size, c, lh, lw, device=device, dtype=dtype),
                "noise": torch.ones(batch_size, device=device, dtype=dtype),
            }
        return state

    def step(self, x_t: Tensor, action_t: Tensor, noise_t: Tensor, state: State):
        """One frame: x_t (B, C, h, w), action_t (B,) or (B, A), noise_t (B,) -> (out_t (B, C, h, w),
        feat_t (B, D), new_state). Pure: ``state`` is not modified, so it can be reused (denoising steps)."""
        self._check(x_t, action_t, noise_t, "step", frames=False)
        if state["t"].shape[0] != x_t.shape[0]:
            raise ValueError(
                f"Backbone.step: the state holds {state['t'].shape[0]} streams, x_t has batch "
                f"{x_t.shape[0]} (make the state with init_state/prefill of that batch)"
            )
        # 1. embed the one frame, as in forward (with the previous frame as fed, kept in the state)
        prev = None
        if self.prev_proj is not None:
            prev = (state["prev"]["x"][:, None], state["prev"]["noise"][:, None])
        h, cond = self._embed(x_t[:, None], action_t[:, None], noise_t[:, None], prev)  # (B, 1, S, D), (B, 1, D)
        h, cond = h[:, 0], cond[:, 0]
        # 2. every layer continues from its cache: SSM + conv state per block, KV of the visible frames
        new_layers = []
        for layer, st in zip(self.layers, state["layers"]):
            h, new = layer.step(h, cond, st)
            new_layers.append(new)
        # 3. the same head as forward
        out, feat = self._head(h[:, None], cond[:, None])
        new_state = {"t": state["t"] + 1, "layers": new_layers}
        if self.prev_proj is not None:
            new_state["prev"] = {"x": x_t, "noise": noise_t.to(x_t.dtype)}
        return out[:, 0], feat[:, 0], new_state
