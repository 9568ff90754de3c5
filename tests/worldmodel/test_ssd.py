"""worldmodel.ssd: the chunked scan and the recurrent step against the sequential reference, dispatch, errors."""

import math

import pytest
import torch

from worldmodel.ssd import has_mamba_kernel, ssd, ssd_chunked, ssd_ref, ssd_step

TOL = 1e-4


def _inputs(b=2, l=37, h=4, p=8, g=2, n=5, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen)
    dt = torch.rand(b, l, h, generator=gen) * 0.5 + 0.01
    A = -(torch.rand(h, generator=gen) * 2 + 0.1)
    B = torch.randn(b, l, g, n, generator=gen)
    C = torch.randn(b, l, g, n, generator=gen)
    s0 = torch.randn(b, h, p, n, generator=gen)
    return [t.to(dtype) for t in (x, dt, A, B, C)] + [s0]


def test_ref_known_answer_scalar_decay():
    """With one head/channel/state, B = C = 1 and exp(dt A) = 1/2, y_t = sum_s 2^-(t-s) dt x_s."""
    l = 6
    x = torch.arange(1.0, l + 1).view(1, l, 1, 1)
    dt = torch.ones(1, l, 1)
    A = torch.tensor([-math.log(2.0)])
    B = torch.ones(1, l, 1, 1)
    y, s = ssd_ref(x, dt, A, B, B.clone())
    want = [sum(0.5 ** (t - s_) * (s_ + 1) for s_ in range(t + 1)) for t in range(l)]
    assert torch.allclose(y.flatten(), torch.tensor(want), atol=1e-6)
    assert torch.allclose(s.flatten(), torch.tensor(want[-1:]), atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("length", [1, 7, 33, 100])
@pytest.mark.parametrize("with_init", [False, True])
def test_chunked_matches_sequential(chunk, length, with_init):
    """ssd_chunked == ssd_ref (outputs and final state) for several chunk sizes and ragged lengths."""
    x, dt, A, B, C, s0 = _inputs(l=length)
    init = s0 if with_init else None
    y_ref, s_ref = ssd_ref(x, dt, A, B, C, init)
    y, s = ssd_chunked(x, dt, A, B, C, chunk, init)
    err_y, err_s = (y - y_ref).abs().max().item(), (s - s_ref).abs().max().item()
    print(f"chunk={chunk} L={length} init={with_init}: max|dy|={err_y:.2e} max|dstate|={err_s:.2e}")
    assert y.shape == x.shape and s.shape == s0.shape
    assert err_y <= TOL and err_s <= TOL


@pytest.mark.parametrize("fn", ["chunked", "ref"])
def test_split_in_two_equals_one_pass(fn):
    """Scanning [0, k) then [k, L) from the carried state == one pass over [0, L)."""
    x, dt, A, B, C, s0 = _inputs(l=50)
    scan = (lambda *a: ssd_chunked(*a[:5], 16, a[5])) if fn == "chunked" else (lambda *a: ssd_ref(*a))
    y_all, s_all = scan(x, dt, A, B, C, s0)
    k = 23
    y1, s1 = scan(x[:, :k], dt[:, :k], A, B[:, :k], C[:, :k], s0)
    y2, s2 = scan(x[:, k:], dt[:, k:], A, B[:, k:], C[:, k:], s1)
    err = max((torch.cat([y1, y2], 1) - y_all).abs().max().item(), (s2 - s_all).abs().max().item())
    print(f"{fn}: split vs one pass max abs err {err:.2e}")
    assert err <= TOL


def test_step_is_pure_and_matches_ref():
    """ssd_step leaves its input state untouched and, carried through the sequence, its outputs equal the
    chunked scan's at every position and its final state the scan's final state (ssd_ref is itself a loop of
    ssd_step, so the independent chunked form is the reference here; it equals ssd_ref, tested above)."""
    x, dt, A, B, C, s0 = _inputs(l=9)
    y_all, s_all = ssd_chunked(x, dt, A, B, C, 4, s0)
    state = s0.clone()
    errs = []
    for t in range(x.shape[1]):
        before = state.clone()
        y_t, new = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)
        assert torch.equal(state, before), f"ssd_step modified its input state at position {t}"
        assert not torch.equal(new, state)
        errs.append((y_t - y_all[:, t]).abs().max().item())
        state = new
    print(f"step vs chunked per position max abs err {[f'{e:.1e}' for e in errs]}")
    assert len(errs) == 9 and max(errs) <= TOL
    assert (state - s_all).abs().max() <= TOL


def test_gradients_match_reference():
    """Backward through ssd_chunked gives the gradients of the sequential recurrence."""
    x, dt, A, B, C, s0 = _inputs(l=21, b=1)
    leaves = [t.clone().requires_grad_() for t in (x, dt, A, B, C, s0)]
    y, s = ssd_ref(*leaves)
    ((y * y.detach().sin()).sum() + s.sum()).backward()
    g_ref = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    y, s = ssd_chunked(*leaves[:5], 8, leaves[5])
    ((y * y.detach().sin()).sum() + s.sum()).backward()
    err = max((t.grad - g).abs().max().item() for t, g in zip(leaves, g_ref))
    print(f"grad max abs err {err:.2e}")
    assert err <= 1e-3


def test_low_precision_inputs_scan_in_fp32():
    """bf16 inputs give a bf16 y close to the fp32 result and a float32 state."""
    x, dt, A, B, C, s0 = _inputs(l=40)
    y32, _ = ssd_chunked(x, dt, A, B, C, 16)
    y16, s16 = ssd_chunked(x.bfloat16(), dt.bfloat16(), A, B.bfloat16(), C.bfloat16(), 16)
    assert y16.dtype == torch.bfloat16 and s16.dtype == torch.float32
    rel = ((y16.float() - y32).norm() / y32.norm()).item()
    print(f"bf16 relative error {rel:.2e}")
    assert rel < 3e-2


def test_dispatch_uses_torch_on_cpu_and_rejects_bad_backend():
    """ssd(backend='auto') on CPU equals ssd_chunked; unknown backends and misuse raise clear errors."""
    x, dt, A, B, C, s0 = _inputs(l=12)
    y, s = ssd(x, dt, A, B, C, 8, s0)
    y2, s2 = ssd_chunked(x, dt, A, B, C, 8, s0)
    assert torch.equal(y, y2) and torch.equal(s, s2)
    with pytest.raises(ValueError, match="backend"):
        ssd(x, dt, A, B, C, 8, backend="cuda")
    with pytest.raises(RuntimeError, match="mamba"):
        ssd(x, dt, A, B, C, 8, backend="mamba")


def test_bad_shapes_raise_clear_errors():
    """Mismatched shapes name the argument and the expected shape."""
    x, dt, A, B, C, s0 = _inputs(l=5)
    with pytest.raises(ValueError, match="dt must be"):
        ssd_chunked(x, dt[:, :4], A, B, C, 4)
    with pytest.raises(ValueError, match="A must be"):
        ssd_chunked(x, dt, A[:2], B, C, 4)
    with pytest.raises(ValueError, match="multiple of groups"):
        ssd_ref(x[:, :, :3], dt[:, :, :3], A[:3], B, C)
    with pytest.raises(ValueError, match="initial_states"):
        ssd_chunked(x, dt, A, B, C, 4, s0[:, :1])
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(x, dt, A, B, C, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not has_mamba_kernel(), reason="needs CUDA + mamba-ssm")
def test_mamba_kernel_matches_torch():
    """mamba-ssm's Triton mamba_chunk_scan_combined == ssd_chunked on CUDA (fp32)."""
    x, dt, A, B, C, s0 = (t.cuda() for t in _inputs(l=300, p=16, n=16))
    y_k, s_k = ssd(x, dt, A, B, C, 64, s0, backend="mamba")
    y_t, s_t = ssd_chunked(x, dt, A, B, C, 64, s0)
    err = max((y_k - y_t).abs().max().item(), (s_k - s_t).abs().max().item())
    print(f"mamba kernel vs torch max abs err {err:.2e}")
    assert err <= 1e-3
