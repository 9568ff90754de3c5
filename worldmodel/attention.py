"""Frame-level attention over frame-major token sequences: frame-local (the paper's), full causal, sliding
window; a linear-cost blocked implementation, a dense SDPA reference, an optional FlexAttention path, and a
streaming ``step`` with a KV cache.

Masks are defined between FRAMES (every token of a frame sees every token of an allowed frame; inside a frame
attention is bidirectional). With q the query frame and k the key frame:

    "local"        chunk-causal frame-local attention (what we train and generate with): chunks of c frames,
                   q in chunk i = q // c sees all of chunk i-1 and the frames c*i .. q of its own chunk.
    "local_bidir"  the paper's mask: q sees all of chunks i-1 and i (its own chunk's future frames too).
    "causal"       k <= q (the full-context causal Transformer; quadratic in frames).
    "window"       q - W < k <= q (the causal Transformer with a W-frame window).

Why we train and generate with "local" (chunk-causal) and not the paper's bidirectional chunk: generation is
frame by frame, so at generation a frame can only see frames that already exist. A model trained with
"local_bidir" would meet, at generation, a pattern it was never trained on (or would need the chunk's future
frames fed as pure noise and recomputed each frame). Training the chunk-causal variant makes the training
pattern exactly the generation pattern, so streaming with a cache reproduces the parallel forward exactly
(tested), and no compute is spent on pure-noise future frames. "local_bidir" stays available in the dense
reference and the blocked implementation, for comparison.

Cost: ``frame_attention`` cuts the frames into blocks; queries of block i only meet the keys of a fixed
span before them (local: chunk i-1 and chunk i; window: the last W-1 frames), so the work is linear in the
number of frames. "causal" loops over query blocks against all earlier keys (quadratic by definition).
The score tensor is processed in groups of blocks that fit a memory budget, so long sequences fit in memory.

Positions: the Transformer baselines rotate q and k by the absolute frame index (RoPE, all tokens of a frame
share it). Only relative offsets enter the scores, so this works with a sliding cache at any length.

Axis legend: B batch, T frames, S tokens per frame, H heads, d head dim, D model width, n blocks of frames,
f frames per block, w key frames per block, K cached frames.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

__all__ = [
    "MODES",
    "PAPER_CHUNK",
    "PAPER_WINDOW",
    "STREAMING_MODES",
    "FrameAttention",
    "allowed_frames",
    "frame_mask",
    "frame_attention",
    "frame_attention_dense",
    "frame_attention_flex",
    "rope_rotate",
    "has_flex_attention",
]

MODES = ("local", "local_bidir", "causal", "window")
STREAMING_MODES = ("local", "causal", "window")  # modes whose frame q never sees a frame after q

try:  # optional path; the blocked SDPA implementation never needs it
    from torch.nn.attention.flex_attention import create_block_mask as _create_block_mask
    from torch.nn.attention.flex_attention import flex_attention as _flex_attention
except Exception:
    _flex_attention = None
    _create_block_mask = None

PAPER_CHUNK = 5  # the paper's frame-local attention: chunks of 5 frames (a 10-frame window with the previous one)
PAPER_WINDOW = 192  # the paper's windowed causal Transformer baseline sees the last 192 frames
_SCORE_BUDGET = 2**25  # elements of the attention score tensor materialised at once (128 MB in fp32)
_compiled_flex = None  # torch.compile(flex_attention), built on first CUDA use


def has_flex_attention() -> bool:
    """True when torch.nn.attention.flex_attention imported."""
    return _flex_attention is not None


def _check_mode(mode: str, chunk: int, window: int) -> None:
    if mode not in MODES:
        raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
    if int(chunk) < 1:
        raise ValueError(f"attention chunk (frames per chunk) must be >= 1, got {chunk}")
    if int(window) < 1:
        raise ValueError(f"attention window (frames) must be >= 1, got {window}")


def allowed_frames(q: torch.Tensor, k: torch.Tensor, mode: str, chunk: int = PAPER_CHUNK, window: int = PAPER_WINDOW):
    """Boolean (broadcast of q and k): may query frame q attend to key frame k? Integer frame indices;
    negative key indices never match (they stand for 'before the start')."""
    if mode == "local":
        qc, kc = q // chunk, k // chunk
        ok = (kc == qc - 1) | ((kc == qc) & (k <= q))
    elif mode == "local_bidir":
        qc, kc = q // chunk, k // chunk
        ok = (kc == qc - 1) | (kc == qc)
    elif mode == "causal":
        ok = k <= q
    elif mode == "window":
        ok = (k <= q) & (k > q - window)
    else:
        raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
    return ok & (k >= 0)


def frame_mask(T: int, mode: str, chunk: int = PAPER_CHUNK, window: int = PAPER_WINDOW, device=None) -> torch.Tensor:
    """(T, T) boolean [query frame, key frame] mask of ``mode``."""
    _check_mode(mode, chunk, window)
    f = torch.arange(T, device=device)
    return allowed_frames(f[:, None], f[None, :], mode, chunk, window)


def rope_rotate(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding over the last axis (rotate-half convention) by integer frame positions, shared by
    the tokens and heads of a frame: x (..., S, H, d) with pos broadcasting against x's axes before (S, H),
    e.g. x (B, T, S, H, d) with pos (T,) or (B, T); x (B, S, H, d) with pos (B,)."""
    d = x.shape[-1]
    half = d // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (d/2,)
    ang = pos.to(torch.float32)[..., None, None, None] * inv_freq  # (*pos, 1, 1, d/2): S and H broadcast
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# ------------------------------------------------------------------------------------------ attention


def _check_qkv(q, k, v, where):
    if q.ndim != 5 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"{where}: q, k, v must all be (batch, frames, tokens, heads, head_dim), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def frame_attention_dense(q, k, v, mode: str, chunk: int = PAPER_CHUNK, window: int = PAPER_WINDOW) -> torch.Tensor:
    """Reference: one SDPA call over all T*S tokens with the explicit (T*S, T*S) boolean mask.
    q, k, v (B, T, S, H, d) -> (B, T, S, H, d). Quadratic; for tests and short sequences."""
    _check_qkv(q, k, v, "frame_attention_dense")
    B, T, S, H, d = q.shape
    mask = frame_mask(T, mode, chunk, window, device=q.device)
    mask = repeat(mask, "q k -> (q s) (k r)", s=S, r=S)  # (T S, T S)
    qq, kk, vv = (rearrange(t, "b t s h d -> b h (t s) d") for t in (q, k, v))
    out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)
    return rearrange(out, "b h (t s) d -> b t s h d", s=S)


def _pad_frames(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Zero frames before/after along axis 1 of (B, T, S, H, d)."""
    if before == 0 and after == 0:
        return x
    return F.pad(x, (0, 0, 0, 0, 0, 0, before, after))


def _banded(q, k, v, mode, chunk, window, f: int, lookback: int) -> torch.Tensor:
    """Queries of block i (frames i*f .. i*f+f-1) against the key frames of blocks i-m .. i, m = ceil(lookback
    / f), all blocks batched (in groups that fit the score budget); the mask drops what the mode forbids.
    Linear in T."""
    B, T, S, H, d = q.shape
    n = -(-T // f)  # query blocks
    m = min(-(-lookback // f), n - 1)  # earlier blocks each query block looks at (there are only n - 1)
    w = (m + 1) * f  # key frames per query block
    Tp = n * f
    qb = rearrange(_pad_frames(q, 0, Tp - T), "b (n f) s h d -> b n f s h d", f=f)
    # key block j of kb/vb is frame block j - m (m zero blocks in front, zero frames at the end)
    kb = rearrange(_pad_frames(k, m * f, Tp - T), "b (n f) s h d -> b n f s h d", f=f)  # (B, m+n, f, S, H, d)
    vb = rearrange(_pad_frames(v, m * f, Tp - T), "b (n f) s h d -> b n f s h d", f=f)
    dev = q.device
    qf = torch.arange(Tp, device=dev).view(n, f)  # (n, f) global query frames
    kf = (torch.arange(n, device=dev)[:, None] - m) * f + torch.arange(w, device=dev)[None, :]  # (n, w)
    ok = allowed_frames(qf[:, :, None], kf[:, None, :], mode, chunk, window)  # (n, f, w)
    # padded key frames are invisible; a padded query frame sees itself (no empty rows -> no NaN)
    ok = ok & ((kf[:, None, :] < T) | (kf[:, None, :] == qf[:, :, None]))
    # the key window of every block at once: m + 1 shifted copies of the blocks (one cat; its backward and
    # the split's are single ops, where per-group slices would each scatter into a full-size zero tensor)
    kw = torch.cat([kb[:, j : j + n] for j in range(m + 1)], dim=2)  # (B, n, w, S, H, d)
    vw = torch.cat([vb[:, j : j + n] for j in range(m + 1)], dim=2)
    G = max(1, min(n, _SCORE_BUDGET // max(1, B * H * f * S * w * S)))  # query blocks per group
    outs = []
    for qq, kk, vv, okg in zip(qb.split(G, 1), kw.split(G, 1), vw.split(G, 1), ok.split(G, 0)):
        qq = rearrange(qq, "b g f s h d -> (b g) h (f s) d")
        kk = rearrange(kk, "b g w s h d -> (b g) h (w s) d")
        vv = rearrange(vv, "b g w s h d -> (b g) h (w s) d")
        mask = repeat(okg, "g f w -> (b g) 1 (f s) (w r)", b=B, s=S, r=S)
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask)  # ((b g), h, f s, d)
        outs.append(rearrange(o, "(b g) h (f s) d -> b (g f) s h d", b=B, s=S))
    return torch.cat(outs, dim=1)[:, :T]


def _causal_blocks(q, k, v) -> torch.Tensor:
    """Full causal: query blocks against every key frame up to the block's end (quadratic, budgeted)."""
    B, T, S, H, d = q.shape
    f = max(1, min(T, _SCORE_BUDGET // max(1, B * H * S * T * S)))
    outs = []
    for t0 in range(0, T, f):
        t1 = min(T, t0 + f)
        qq = rearrange(q[:, t0:t1], "b t s h d -> b h (t s) d")
        kk = rearrange(k[:, :t1], "b t s h d -> b h (t s) d")
        vv = rearrange(v[:, :t1], "b t s h d -> b h (t s) d")
        qf = torch.arange(t0, t1, device=q.device)
        kf = torch.arange(t1, device=q.device)
        m = repeat(kf[None, :] <= qf[:, None], "q k -> (q s) (k r)", s=S, r=S)
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=m)
        outs.append(rearrange(o, "b h (t s) d -> b t s h d", s=S))
    return torch.cat(outs, dim=1)


def frame_attention_flex(q, k, v, mode: str, chunk: int = PAPER_CHUNK, window: int = PAPER_WINDOW) -> torch.Tensor:
    """FlexAttention path (optional): the same frame mask as a block mask over the flattened sequence.
    Compiled on CUDA; eager (dense, slow, for parity only) elsewhere."""
    if not has_flex_attention():
        raise RuntimeError("frame_attention_flex: torch.nn.attention.flex_attention is not available")
    _check_qkv(q, k, v, "frame_attention_flex")
    _check_mode(mode, chunk, window)
    B, T, S, H, d = q.shape

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed_frames(q_idx // S, kv_idx // S, mode, chunk, window)

    L = T * S
    block_mask = _create_block_mask(mask_mod, None, None, L, L, device=q.device)
    qq, kk, vv = (rearrange(t, "b t s h d -> b h (t s) d") for t in (q, k, v))
    if q.is_cuda:
        global _compiled_flex
        if _compiled_flex is None:
            _compiled_flex = torch.compile(_flex_attention)
        out = _compiled_flex(qq, kk, vv, block_mask=block_mask)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = _flex_attention(qq, kk, vv, block_mask=block_mask)
    return rearrange(out, "b h (t s) d -> b t s h d", s=S)


def frame_attention(q, k, v, mode: str, chunk: int = PAPER_CHUNK, window: int = PAPER_WINDOW, backend: str = "sdpa"):
    """Frame-masked attention, q, k, v (B, T, S, H, d) -> (B, T, S, H, d).

    backend "sdpa": linear-cost blocked implementation ("causal" is quadratic by definition);
    "flex": FlexAttention; "dense": the reference."""
    _check_qkv(q, k, v, "frame_attention")
    _check_mode(mode, chunk, window)
    if backend == "dense":
        return frame_attention_dense(q, k, v, mode, chunk, window)
    if backend == "flex":
        return frame_attention_flex(q, k, v, mode, chunk, window)
    if backend != "sdpa":
        raise ValueError(f"frame_attention: backend must be 'sdpa', 'flex' or 'dense', got {backend!r}")
    T = q.shape[1]
    if mode in ("local", "local_bidir"):
        # blocks = chunks; chunk i needs chunk i-1 and itself
        return _banded(q, k, v, mode, chunk, window, f=chunk, lookback=chunk)
    if mode == "window":  # the block size that scores the fewest (query, key) frame pairs
        sizes = {T} | {math.ceil(window / j) for j in range(1, 5)}  # at most 4 blocks of look-back
        f = min(sizes, key=lambda f: _banded_pairs(T, f, window - 1))
        return _banded(q, k, v, mode, chunk, window, f=f, lookback=window - 1)
    return _causal_blocks(q, k, v)


def _banded_pairs(T: int, f: int, lookback: int) -> int:
    """(query, key) frame pairs ``_banded`` scores with blocks of f frames."""
    n = -(-T // f)
    m = min(-(-lookback // f), n - 1)
    return n * f * (m + 1) * f


# ---------------------------------------------------------------------------------------------- module


class FrameAttention(nn.Module):
    """Multi-head attention between the tokens of frames under a frame mask, with a streaming KV cache.

    forward(x (B, T, S, D)) -> y (B, T, S, D), optionally also the cache after the T frames (prefill).
    step(x_t (B, S, D), cache) -> (y_t (B, S, D), new cache): one new frame; ``cache`` is not modified.

    Cache: {"k", "v": (B, K, S, H, d) keys (already rotated) and values of the last K frames,
            "t": (B,) int64 number of frames seen}. K is fixed (local: 2c - 1, window: W - 1) so a step
    costs the same at any t; for "causal" K = t grows (the quadratic reference).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mode: str = "local",
        chunk: int = PAPER_CHUNK,
        window: int = PAPER_WINDOW,
        rope: bool = False,
        backend: str = "sdpa",
    ):
        super().__init__()
        _check_mode(mode, chunk, window)
        if mode not in STREAMING_MODES:
            raise ValueError(f"FrameAttention: mode must be one of {STREAMING_MODES} (streamable), got {mode!r}")
        if dim % heads:
            raise ValueError(f"FrameAttention: dim ({dim}) must be a multiple of heads ({heads})")
        if rope and (dim // heads) % 2:
            raise ValueError(f"FrameAttention: RoPE needs an even head dim, got dim/heads = {dim // heads}")
        if backend not in ("sdpa", "flex", "dense"):
            raise ValueError(f"FrameAttention: backend must be 'sdpa', 'flex' or 'dense', got {backend!r}")
        self.dim, self.heads, self.mode, self.chunk, self.window = dim, heads, mode, chunk, window
        self.rope, self.backend = rope, backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    @property
    def cache_frames(self) -> int | None:
        """Frames kept in the KV cache (None: all of them, for "causal")."""
        if self.mode == "local":
            return 2 * self.chunk - 1
        if self.mode == "window":
            return self.window - 1
        return None

    def init_cache(self, batch_size: int, tokens: int, device=None, dtype=None) -> dict[str, torch.Tensor]:
        """Empty cache (zeros in the fixed-size slots; they are masked out until filled)."""
        device = device if device is not None else self.qkv.weight.device
        dtype = dtype if dtype is not None else self.qkv.weight.dtype
        K = self.cache_frames or 0
        shape = (batch_size, K, tokens, self.heads, self.dim // self.heads)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "t": torch.zeros(batch_size, device=device, dtype=torch.long),
        }

    def _qkv(self, x):
        return rearrange(self.qkv(x), "... s (three h d) -> three ... s h d", three=3, h=self.heads)

    def forward(self, x: torch.Tensor, return_cache: bool = False):
        """Attention over T frames at once: x (B, T, S, D) -> y (B, T, S, D); with ``return_cache`` also the
        cache the T frames leave (equal to what T calls of :meth:`step` would leave)."""
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"FrameAttention.forward: x must be (B, T, S, {self.dim}), got {tuple(x.shape)}")
        B, T, S, _ = x.shape
        q, k, v = self._qkv(x)  # each (B, T, S, H, d)
        if self.rope:
            pos = torch.arange(T, device=x.device)
            q, k = rope_rotate(q, pos), rope_rotate(k, pos)
        o = frame_attention(q, k, v, self.mode, self.chunk, self.window, self.backend)
        y = self.proj(rearrange(o, "b t s h d -> b t s (h d)"))
        if not return_cache:
            return y
        K = self.cache_frames
        if K is None:  # copies, so the cache does not pin the queries of the fused qkv projection
            kc, vc = k.clone(), v.clone()
        else:  # the last K frames, zero-padded in front when T < K (exactly what T steps would leave);
            # cloned so the cache does not pin the whole sequence's keys in memory
            kc = _pad_frames(k, max(0, K - T), 0)[:, k.shape[1] + max(0, K - T) - K :].clone()
            vc = _pad_frames(v, max(0, K - T), 0)[:, v.shape[1] + max(0, K - T) - K :].clone()
        t = torch.full((B,), T, device=x.device, dtype=torch.long)
        return y, {"k": kc, "v": vc, "t": t}

    def step(self, x_t: torch.Tensor, cache: dict[str, torch.Tensor]):
        """One new frame per batch row: x_t (B, S, D) attends to itself and the cached frames its mode allows.

        Returns (y_t (B, S, D), new cache); ``cache`` is not modified (a step can be repeated from it)."""
        if x_t.ndim != 3 or x_t.shape[-1] != self.dim:
            raise ValueError(f"FrameAttention.step: x_t must be (B, S, {self.dim}), got {tuple(x_t.shape)}")
        B, S, _ = x_t.shape
        t = cache["t"]  # (B,)
        q, k, v = self._qkv(x_t)  # each (B, S, H, d)
        if self.rope:
            q, k = rope_rotate(q, t), rope_rotate(k, t)
        keys = torch.cat([cache["k"], k[:, None].to(cache["k"].dtype)], dim=1)  # (B, K + 1, S, H, d)
        vals = torch.cat([cache["v"], v[:, None].to(cache["v"].dtype)], dim=1)
        K = keys.shape[1] - 1
        kf = t[:, None] - K + torch.arange(K + 1, device=t.device)[None, :]  # (B, K + 1) frame of each slot
        ok = allowed_frames(t[:, None], kf, self.mode, self.chunk, self.window)  # (B, K + 1)
        m = repeat(ok, "b w -> b 1 1 (w r)", r=S)
        o = F.scaled_dot_product_attention(
            rearrange(q, "b s h d -> b h s d"),
            rearrange(keys, "b w s h d -> b h (w s) d").to(q.dtype),
            rearrange(vals, "b w s h d -> b h (w s) d").to(q.dtype),
            attn_mask=m,
        )  # (B, H, S, d)
        y = self.proj(rearrange(o, "b h s d -> b s (h d)"))
        if self.cache_frames is not None:  # slide: drop the oldest frame
            keys, vals = keys[:, 1:], vals[:, 1:]
        return y, {"k": keys, "v": vals, "t": t + 1}
