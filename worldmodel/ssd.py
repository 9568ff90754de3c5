"""SSD (state-space duality), the scan inside Mamba2, in pure PyTorch, plus the optional mamba-ssm kernel.

The recurrence (per batch b, head h; state is a headdim x d_state matrix):

    state_t = exp(dt_t * A) * state_{t-1} + (dt_t * x_t) outer B_t
    y_t     = state_t @ C_t

Three implementations and a dispatcher, with mamba-ssm's argument convention (so its Triton kernel drops in):

* ``ssd_ref``      the plain sequential recurrence: the reference (O(L) Python steps).
* ``ssd_step``     one recurrent update (what streaming generation uses for single-token sequences).
* ``ssd_chunked``  the chunked matmul ("dual") form: quadratic attention-like products inside chunks of
                   ``chunk_size`` tokens (32-64 suit a CPU), a linear recurrence between chunks. Same result,
                   a few batched matmuls instead of L Python steps.
* ``ssd``          dispatcher: mamba-ssm's ``mamba_chunk_scan_combined`` when it imports and the tensors are
                   on CUDA, else ``ssd_chunked``.

All of them take an initial state and return the final state, so a sequence can be scanned in pieces.
The scan always runs in float32 with autocast disabled (the state is a long running product; bf16 would
drift), and ``y`` is returned in the dtype of ``x``.

Axis legend: b batch, l sequence length, h heads, p headdim, g groups (B/C shared by h/g heads), r = h/g
heads per group, n d_state, c number of chunks, k position inside a chunk (query), s position inside a chunk
(source/key).
Shapes: x (b, l, h, p); dt (b, l, h) already positive; A (h,) negative; B, C (b, l, g, n);
states (b, h, p, n).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange

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
    no_grad = not torch.is_grad_enabled() or not any(
        t is not None and t.requires_grad for t in (x, dt, A, B, C, initial_states)
    )
    with _no_autocast(x.device.type):
        x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
        k = int(min(chunk_size, max(l, 1)))
        pad = (-l) % k
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
            dt = F.pad(dt, (0, 0, 0, pad))
            B = F.pad(B, (0, 0, 0, 0, 0, pad))
            C = F.pad(C, (0, 0, 0, 0, 0, pad))
        # one layout for everything below, heads split as (groups g, heads per group r) so that the B/C
        # products shared by a group's heads are computed once; every contraction is a batched matmul
        g = B.shape[2]
        xdt = rearrange(x * dt[..., None], "b (c k) (g r) p -> b g r c k p", k=k, g=g).contiguous()
        Bg = rearrange(B, "b (c k) g n -> b g c k n", k=k).contiguous()[:, :, None]  # (b, g, 1, c, k, n)
        Cg = rearrange(C, "b (c k) g n -> b g c k n", k=k).contiguous()[:, :, None]
        dA = rearrange(dt * A, "b (c k) (g r) -> b g r c k", k=k, g=g)  # log-decay of every token
        cs = torch.cumsum(dA, dim=-1)  # (b, g, r, c, k)

        # 1. Inside each chunk (diagonal blocks): y_k = sum_{s<=k} (C_k . B_s) exp(cs_k - cs_s) dt_s x_s
        #    (the decay as a difference of cumsums, like the Triton kernel). Above the diagonal the decay is
        #    clamped to exp(0) and zeroed through the (small, per-group) C.B product: exp(-inf) is ~7x slower
        causal = torch.ones(k, k, device=x.device).tril()
        cb = torch.matmul(Cg, Bg.transpose(-1, -2)) * causal  # (b, g, 1, c, k, s)
        seg = cs[..., :, None] - cs[..., None, :]  # (b, g, r, c, k, s)
        if no_grad:  # in place: fresh large buffers cost page faults on CPU
            scores = seg.clamp_(max=0.0).exp_().mul_(cb)
        else:
            scores = cb * torch.clamp(seg, max=0.0).exp_()
        y = torch.matmul(scores, xdt)  # (b, g, r, c, k, p)

        # 2. State each chunk ends with, from zero: sum_s exp(cs_end - cs_s) (dt_s x_s) outer B_s
        decay_to_end = torch.exp(cs[..., -1:] - cs)  # (b, g, r, c, s)
        chunk_states = torch.matmul((xdt * decay_to_end[..., None]).transpose(-1, -2), Bg)  # (b,g,r,c,p,n)

        # 3. Between chunks: state entering chunk i+1 = exp(sum of chunk i's log-decays) * state entering
        #    chunk i + chunk i's own state (a loop over chunks: linear in their number)
        chunk_decay = torch.exp(cs[..., -1])[..., None, None]  # (b, g, r, c, 1, 1)
        state = (
            rearrange(initial_states.float(), "b (g r) p n -> b g r p n", g=g)
            if initial_states is not None
            else torch.zeros(b, g, h // g, p, n, device=x.device, dtype=torch.float32)
        )
        entering = []
        for decay_i, new_i in zip(chunk_decay.unbind(3), chunk_states.unbind(3)):  # unbind: cheap backward
            entering.append(state)
            state = state * decay_i + new_i
        prev_states = torch.stack(entering, dim=3)  # (b, g, r, c, p, n)
        final_states = rearrange(state, "b g r p n -> b (g r) p n")

        # 4. Contribution of the state entering the chunk: y_k += exp(cs_k) C_k . state_in
        y = y.add_(torch.matmul(Cg, prev_states.transpose(-1, -2)) * torch.exp(cs)[..., None])  # b,g,r,c,k,p
        y = rearrange(y, "b g r c k p -> b (c k) (g r) p")[:, :l]  # (b, l, h, p)
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
        dt.float(),  # the kernel turns dt into float32 cumsums anyway; keep its precision
        A.float(),
        B.to(x.dtype),
        C.to(x.dtype),
        int(chunk_size),
        initial_states=None if initial_states is None else initial_states.float(),
        return_final_states=True,
    )
    return y, final_states.float()
