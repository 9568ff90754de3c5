"""SSD (state-space duality), the scan inside Mamba2, in pure PyTorch, plus the optional mamba-ssm kernel.

The recurrence (per batch b, head h; state is a headdim x d_state matrix):

    state_t = exp(dt_t * A) * state_{t-1} + (dt_t * x_t) outer B_t
    y_t     = state_t @ C_t

Three implementations with one argument convention, mamba-ssm's (so its Triton kernel drops in):

* ``ssd_ref``      the plain sequential recurrence: the reference (O(L) Python steps).
* ``ssd_step``     one recurrent update (what streaming generation uses for single-token sequences).
* ``ssd_chunked``  the chunked matmul ("dual") form: quadratic attention-like products inside chunks of
                   ``chunk_size`` tokens, a linear recurrence between chunks. Same result, a few batched
                   matmuls instead of L Python steps.
* ``ssd``          dispatcher: mamba-ssm's ``mamba_chunk_scan_combined`` when it imports and the tensors are
                   on CUDA, else ``ssd_chunked``.

All of them take an initial state and return the final state, so a sequence can be scanned in pieces.
The scan always runs in float32 with autocast disabled (the state is a long running product; bf16 would
drift), and ``y`` is returned in the dtype of ``x``.

Axis legend: b batch, l sequence length, h heads, p headdim, g groups (B/C shared by h/g heads), n d_state,
c number of chunks, k position inside a chunk (query), s position inside a chunk (source/key).
Shapes: x (b, l, h, p); dt (b, l, h) already positive; A (h,) negative; B, C (b, l, g, n);
states (b, h, p, n).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

__all__ = ["ssd", "ssd_chunked", "ssd_ref", "ssd_step", "has_mamba_kernel"]

try:  # optional CUDA fast path; never required
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _mamba_chunk_scan_combined
except Exception:  # ImportError, or a broken CUDA/triton install raising something else at import
    _mamba_chunk_scan_combined = None


def has_mamba_kernel() -> bool:
    """True when mamba-ssm's Triton ``mamba_chunk_scan_combined`` imported."""
    return _mamba_chunk_scan_combined is not None


# ------------------------------------------------------------------------------------------------ checks


def _check(x, dt, A, B, C, initial_states, where: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{where}: x must be (batch, length, heads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"{where}: dt must be (batch, length, heads) = {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"{where}: A must be (heads,) = ({h},), got {tuple(A.shape)}")
    if B.ndim != 4 or B.shape[:2] != (b, l) or B.shape != C.shape:
        raise ValueError(
            f"{where}: B and C must both be (batch, length, groups, d_state) with batch, length = {(b, l)}, "
            f"got B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    g, n = B.shape[2], B.shape[3]
    if h % g != 0:
        raise ValueError(f"{where}: heads ({h}) must be a multiple of groups ({g})")
    if initial_states is not None and initial_states.shape != (b, h, p, n):
        raise ValueError(
            f"{where}: initial_states must be (batch, heads, headdim, d_state) = {(b, h, p, n)}, "
            f"got {tuple(initial_states.shape)}"
        )


def _no_autocast(device_type: str):
    """Context that disables autocast on ``device_type`` (the scan runs in float32)."""
    if device_type in ("cuda", "cpu", "mps", "xpu"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    """(..., g, n) -> (..., h, n): each group's B/C shared by its h/g consecutive heads."""
    g = t.shape[-2]
    return t if g == h else torch.repeat_interleave(t, h // g, dim=-2)


# --------------------------------------------------------------------------------------------- reference


def ssd_step(x, dt, A, B, C, state):
    """One recurrent update. x (b, h, p), dt (b, h), A (h,), B, C (b, g, n), state (b, h, p, n) float32.

    Returns (y (b, h, p) in x.dtype, new_state (b, h, p, n) float32). Does not modify ``state``.
    """
    out_dtype = x.dtype
    with _no_autocast(x.device.type):
        x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
        h = x.shape[1]
        Bh, Ch = _heads(B, h), _heads(C, h)  # (b, h, n)
        decay = torch.exp(dt * A)  # (b, h)
        write = torch.einsum("bhp,bhn->bhpn", x * dt[..., None], Bh)  # (b, h, p, n)
        new_state = state.float() * decay[..., None, None] + write
        y = torch.einsum("bhpn,bhn->bhp", new_state, Ch)
    return y.to(out_dtype), new_state


def ssd_ref(x, dt, A, B, C, initial_states=None):
    """Sequential reference: the plain recurrence, one token at a time. Returns (y, final_states)."""
    _check(x, dt, A, B, C, initial_states, "ssd_ref")
    b, l, h, p = x.shape
    n = B.shape[-1]
    state = (
        initial_states.float()
        if initial_states is not None
        else torch.zeros(b, h, p, n, device=x.device, dtype=torch.float32)
    )
    ys = []
    for t in range(l):
        y, state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    return y, state


# ----------------------------------------------------------------------------------------------- chunked


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """a (..., T) -> (..., T, T): out[..., i, j] = a[j+1] + ... + a[i] for i >= j, -inf above the diagonal.

    Built by a masked cumsum (not a difference of cumsums), so it stays exact-ish for long chunks.
    """
    T = a.shape[-1]
    a = repeat(a, "... i -> ... i j", j=T)  # a[..., i, j] = a[i]
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)  # i > j
    a = a.masked_fill(~strict, 0.0)
    s = torch.cumsum(a, dim=-2)  # s[i, j] = sum_{j < k <= i} a[k]
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=0)
    return s.masked_fill(~lower, float("-inf"))


def ssd_chunked(x, dt, A, B, C, chunk_size, initial_states=None):
    """Chunked SSD (Mamba2's dual form) in pure PyTorch. Same contract as ``ssd_ref``; any length works
    (the tail is padded with dt = 0, which neither decays nor writes the state, so the final state is exact).
    Returns (y (b, l, h, p) in x.dtype, final_states (b, h, p, n) float32)."""
    _check(x, dt, A, B, C, initial_states, "ssd_chunked")
    if int(chunk_size) < 1:
        raise ValueError(f"ssd_chunked: chunk_size must be >= 1, got {chunk_size}")
    b, l, h, p = x.shape
    n = B.shape[-1]
    out_dtype = x.dtype
    with _no_autocast(x.device.type):
        x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
        k = int(min(chunk_size, max(l, 1)))
        pad = (-l) % k
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
            dt = F.pad(dt, (0, 0, 0, pad))
            B = F.pad(B, (0, 0, 0, 0, 0, pad))
            C = F.pad(C, (0, 0, 0, 0, 0, pad))
        Bh, Ch = _heads(B, h), _heads(C, h)  # (b, L, h, n)
        x = rearrange(x, "b (c k) h p -> b c k h p", k=k)
        Bh = rearrange(Bh, "b (c k) h n -> b c k h n", k=k)
        Ch = rearrange(Ch, "b (c k) h n -> b c k h n", k=k)
        dt = rearrange(dt, "b (c k) h -> b h c k", k=k)
        dA = dt * A[None, :, None, None]  # (b, h, c, k) log-decay per token
        dA_cs = torch.cumsum(dA, dim=-1)  # (b, h, c, k)
        xdt = x * rearrange(dt, "b h c k -> b c k h")[..., None]  # (b, c, k, h, p) input scaled by dt

        # 1. Inside each chunk (diagonal blocks): y_k = sum_{s<=k} (C_k . B_s) exp(dA_{s+1..k}) dt_s x_s
        decay_in = torch.exp(_segsum(dA))  # (b, h, c, k, s)
        scores = torch.einsum("bckhn,bcshn->bhcks", Ch, Bh) * decay_in  # (b, h, c, k, s)
        y_diag = torch.einsum("bhcks,bcshp->bckhp", scores, xdt)  # (b, c, k, h, p)

        # 2. State each chunk ends with, from zero: sum_s exp(dA_{s+1..end}) (dt_s x_s) outer B_s
        decay_to_end = torch.exp(dA_cs[..., -1:] - dA_cs)  # (b, h, c, s)
        chunk_states = torch.einsum("bcshn,bhcs,bcshp->bchpn", Bh, decay_to_end, xdt)  # (b, c, h, p, n)

        # 3. Between chunks: the linear recurrence over chunk boundaries, seeded with the initial state
        init = (
            initial_states.float()
            if initial_states is not None
            else torch.zeros(b, h, p, n, device=x.device, dtype=torch.float32)
        )
        chunk_states = torch.cat([init[:, None], chunk_states], dim=1)  # (b, c+1, h, p, n)
        chunk_decay = torch.exp(_segsum(F.pad(dA_cs[..., -1], (1, 0))))  # (b, h, c+1, c+1)
        states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, chunk_states)  # (b, c+1, h, p, n)
        prev_states, final_states = states[:, :-1], states[:, -1]  # state entering each chunk; the last

        # 4. Contribution of the state entering the chunk: y_k += exp(dA_{1..k}) C_k . state_in
        decay_from_start = torch.exp(dA_cs)  # (b, h, c, k)
        y_off = torch.einsum("bckhn,bchpn,bhck->bckhp", Ch, prev_states, decay_from_start)

        y = rearrange(y_diag + y_off, "b c k h p -> b (c k) h p")[:, :l]  # (b, l, h, p)
    return y.to(out_dtype), final_states


# ---------------------------------------------------------------------------------------------- dispatch


def ssd(x, dt, A, B, C, chunk_size, initial_states=None, backend: str = "auto"):
    """Chunked SSD through the fastest available path. backend: "auto" (mamba-ssm kernel when it imported
    and x is on CUDA, else pure PyTorch), "torch" (always ``ssd_chunked``), "mamba" (require the kernel).
    Returns (y, final_states) like ``ssd_chunked``."""
    if backend not in ("auto", "torch", "mamba"):
        raise ValueError(f"ssd: backend must be 'auto', 'torch' or 'mamba', got {backend!r}")
    use_kernel = backend == "mamba" or (backend == "auto" and x.is_cuda and has_mamba_kernel())
    if not use_kernel:
        return ssd_chunked(x, dt, A, B, C, chunk_size, initial_states)
    if not has_mamba_kernel():
        raise RuntimeError("ssd: backend='mamba' requested but mamba_ssm's Triton kernel did not import")
    if not x.is_cuda:
        raise RuntimeError("ssd: backend='mamba' needs CUDA tensors")
    _check(x, dt, A, B, C, initial_states, "ssd")
    y, final_states = _mamba_chunk_scan_combined(
        x,
        dt.to(x.dtype),
        A.float(),
        B.to(x.dtype),
        C.to(x.dtype),
        int(chunk_size),
        initial_states=None if initial_states is None else initial_states.float(),
        return_final_states=True,
    )
    return y, final_states.float()
