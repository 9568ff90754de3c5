"""worldmodel.attention: frame masks, blocked vs dense attention, linear cost, RoPE, streaming with a KV cache."""

import pytest
import torch

import worldmodel.attention as attention
from worldmodel.attention import (
    MODES,
    STREAMING_MODES,
    FrameAttention,
    frame_attention,
    frame_attention_dense,
    frame_attention_flex,
    frame_mask,
    has_flex_attention,
    rope_rotate,
)

TOL = 1e-5


def _qkv(T, B=2, S=3, H=2, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(3, B, T, S, H, d, generator=gen).unbind(0)


def test_frame_mask_known_answers():
    """The four masks spelled out for T = 6, chunk = 2, window = 3."""
    local = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    bidir = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    window = causal & ~torch.ones(6, 6, dtype=torch.bool).tril(-3)
    assert torch.equal(frame_mask(6, "local", chunk=2), local)
    assert torch.equal(frame_mask(6, "local_bidir", chunk=2), bidir)
    assert torch.equal(frame_mask(6, "causal"), causal)
    assert torch.equal(frame_mask(6, "window", window=3), window)
    # the paper's window: a frame of chunk i sees at most 2c frames
    assert frame_mask(40, "local_bidir", chunk=5).sum(1).max() == 10


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T", [1, 4, 7, 12])
@pytest.mark.parametrize("chunk,window", [(2, 3), (3, 5), (5, 20)])
def test_blocked_matches_dense_reference(mode, T, chunk, window):
    """The linear-cost blocked attention == one SDPA call with the explicit boolean (T S, T S) mask."""
    q, k, v = _qkv(T)
    out = frame_attention(q, k, v, mode, chunk, window)
    ref = frame_attention_dense(q, k, v, mode, chunk, window)
    err = (out - ref).abs().max().item()
    print(f"{mode} T={T} c={chunk} W={window}: max abs err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("mode", ["local", "window", "causal"])
def test_blocked_under_small_score_budget(mode, monkeypatch):
    """Splitting the work into many groups / query blocks (tiny memory budget) changes nothing."""
    q, k, v = _qkv(23, S=2)
    ref = frame_attention_dense(q, k, v, mode, 3, 6)
    calls = []
    real = attention.F.scaled_dot_product_attention

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    frame_attention(q, k, v, mode, 3, 6)
    default_calls = len(calls)
    monkeypatch.setattr(attention, "_SCORE_BUDGET", 1)
    calls.clear()
    out = frame_attention(q, k, v, mode, 3, 6)
    assert len(calls) > default_calls, "the small budget did not split the work"
    assert (out - ref).abs().max().item() <= TOL


def test_local_cost_is_linear_in_frames(monkeypatch):
    """Local attention scores only chunk i against chunks i-1, i: score elements grow linearly with T."""
    sizes = []
    real = attention.F.scaled_dot_product_attention

    def counting(q, k, v, attn_mask=None):
        sizes.append(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2])
        return real(q, k, v, attn_mask=attn_mask)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    totals = []
    for T in (20, 40, 80):
        sizes.clear()
        frame_attention(*_qkv(T, B=1, S=2), "local", 5)
        totals.append(sum(sizes))
    assert totals[0] > 0, "no attention scores were computed through SDPA"
    assert totals[1] == 2 * totals[0] and totals[2] == 2 * totals[1]


@pytest.mark.skipif(not has_flex_attention(), reason="torch without flex_attention")
def test_flex_matches_dense_reference():
    """The FlexAttention path (eager on CPU) == the dense reference for the chunk-causal mask."""
    q, k, v = _qkv(7, S=4, d=8)
    out = frame_attention_flex(q, k, v, "local", 3)
    ref = frame_attention_dense(q, k, v, "local", 3)
    err = (out - ref).abs().max().item()
    print(f"flex vs dense max abs err {err:.2e}")
    assert err <= TOL


def test_rope_scores_depend_only_on_frame_offset():
    """After RoPE, q.k between frames (t, s) equals that between (t + 1000, s + 1000)."""
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, 1, 8, generator=gen).unbind(0)

    def score(tq, tk):
        return (rope_rotate(q, torch.tensor([tq])) * rope_rotate(k, torch.tensor([tk]))).sum().item()

    assert abs(score(7, 3) - score(1007, 1003)) < 1e-3
    assert abs(score(7, 3) - score(7, 5)) > 1e-3


@pytest.mark.parametrize("mode", STREAMING_MODES)
@pytest.mark.parametrize("rope", [False, True])
def test_streaming_steps_equal_parallel_forward(mode, rope):
    """T steps with the KV cache == the parallel forward; the prefill cache == the stepped cache."""
    torch.manual_seed(0)
    m = FrameAttention(16, 2, mode, chunk=3, window=4, rope=rope)
    x = torch.randn(2, 11, 3, 16)
    y, cache_p = m(x, return_cache=True)
    cache = m.init_cache(2, 3)
    ys, sizes = [], []
    for t in range(11):
        y_t, cache = m.step(x[:, t], cache)
        ys.append(y_t)
        sizes.append(cache["k"].shape[1])
    err = (torch.stack(ys, 1) - y).abs().max().item()
    err_cache = max((cache[key].float() - cache_p[key].float()).abs().max().item() for key in cache)
    print(f"{mode} rope={rope}: stream vs parallel max abs err {err:.2e}, cache err {err_cache:.2e}")
    assert err <= TOL and err_cache <= TOL
    for key in ("k", "v"):  # the prefill cache owns exactly its memory (pins neither all frames nor q)
        assert cache_p[key].untyped_storage().nbytes() == cache_p[key].numel() * cache_p[key].element_size()
    if mode == "causal":
        assert sizes == list(range(1, 12))  # the quadratic reference grows
    else:
        assert len(set(sizes)) == 1 and sizes[0] == m.cache_frames  # constant per-frame cost


def test_step_is_pure():
    """step does not modify the cache it is given (it can be reused for several denoising steps)."""
    m = FrameAttention(8, 2, "local", chunk=2)
    _, cache = m(torch.randn(1, 5, 2, 8), return_cache=True)
    snap = {k: v.clone() for k, v in cache.items()}
    x = torch.randn(1, 2, 8)
    y1, _ = m.step(x, cache)
    y2, _ = m.step(x, cache)
    assert all(torch.equal(snap[k], cache[k]) for k in cache)
    assert torch.equal(y1, y2)


def test_per_batch_frame_counters():
    """A cache whose batch rows are at different frame counts attends as each row alone would."""
    torch.manual_seed(0)
    m = FrameAttention(8, 2, "local", chunk=2)
    xa, xb = torch.randn(1, 4, 2, 8), torch.randn(1, 3, 2, 8)
    _, ca = m(xa, return_cache=True)
    _, cb = m(xb, return_cache=True)
    both = {k: torch.cat([ca[k], cb[k]]) for k in ca}
    x = torch.randn(2, 2, 8)
    y, _ = m.step(x, both)
    ya, _ = m.step(x[:1], ca)
    yb, _ = m.step(x[1:], cb)
    assert (y - torch.cat([ya, yb])).abs().max() <= TOL


def test_errors_are_clear():
    """Bad modes, shapes and head sizes raise with what was expected."""
    q, k, v = _qkv(4)
    with pytest.raises(ValueError, match="mode must be one of"):
        frame_attention(q, k, v, "sliding")
    with pytest.raises(ValueError, match="chunk"):
        frame_attention(q, k, v, "local", chunk=0)
    with pytest.raises(ValueError, match="q, k, v must all be"):
        frame_attention(q, k[:, :2], v, "local")
    with pytest.raises(ValueError, match="streamable"):
        FrameAttention(8, 2, "local_bidir")
    with pytest.raises(ValueError, match="even head dim"):
        FrameAttention(6, 2, "causal", rope=True)
    with pytest.raises(ValueError, match=r"x must be \(B, T, S, 8\)"):
        FrameAttention(8, 2)(torch.randn(2, 3, 8))
