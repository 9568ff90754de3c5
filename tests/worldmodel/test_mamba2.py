"""worldmodel.mamba2: the parallel forward against recurrent steps and pieces, purity, causality, config errors."""

import pytest
import torch

from worldmodel.mamba2 import Mamba2, Mamba2Config

TOL = 1e-4


def _block(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = Mamba2Config(**{**dict(dim=16, d_state=8, headdim=8, expand=2, d_conv=4, chunk_size=8), **kw})
    return Mamba2(cfg)


def _max_diff(a, b):
    if isinstance(a, dict):
        return max((a[k] - b[k]).abs().max().item() for k in a)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("length", [1, 3, 19])
def test_forward_equals_recurrent_steps(length):
    """The parallel forward == one recurrent step per token (outputs and conv + SSM state)."""
    m = _block(ngroups=2)
    u = torch.randn(2, length, 16)
    y, st = m(u)
    state = m.init_state(2)
    ys = []
    for t in range(length):
        y_t, state = m.step(u[:, t], state)
        ys.append(y_t)
    err = max(_max_diff(torch.stack(ys, 1), y), _max_diff(state, st))
    print(f"L={length}: forward vs steps max abs err {err:.2e}")
    assert err <= TOL


def test_forward_in_pieces_carries_conv_and_ssm_state():
    """Two forwards passing the state (pieces shorter than the conv) == one forward over the whole."""
    m = _block()
    u = torch.randn(3, 30, 16)
    y, st = m(u)
    pieces, state = [], None
    for a, b in [(0, 2), (2, 3), (3, 17), (17, 30)]:
        y_p, state = m(u[:, a:b], state)
        pieces.append(y_p)
    err = max(_max_diff(torch.cat(pieces, 1), y), _max_diff(state, st))
    print(f"pieces vs one pass max abs err {err:.2e}")
    assert err <= TOL


def test_step_does_not_modify_state_and_output_depends_on_history():
    """step is pure; one token after two different histories gives two outputs (the block has memory)."""
    m = _block()
    s0 = m.init_state(1)
    s0_snapshot = {k: v.clone() for k, v in s0.items()}
    _, s_a = m(torch.randn(1, 5, 16))
    _, s_b = m(torch.randn(1, 5, 16))
    snapshot = {k: v.clone() for k, v in s_a.items()}
    u = torch.randn(1, 16)
    y_a, _ = m.step(u, s_a)
    y_b, _ = m.step(u, s_b)
    y_0, s_1 = m.step(u, s0)
    assert all(torch.equal(snapshot[k], s_a[k]) for k in s_a)
    assert all(torch.equal(s0_snapshot[k], s0[k]) for k in s0)
    assert not torch.equal(s_1["ssm"], s0["ssm"])  # the new state is a different tensor with the token written
    assert (y_a - y_b).abs().max() > 1e-4


def test_causal():
    """Changing token t never changes outputs before t."""
    m = _block()
    u = torch.randn(1, 12, 16)
    y, _ = m(u)
    u2 = u.clone()
    u2[:, 7] += 1.0
    y2, _ = m(u2)
    assert (y[:, :7] - y2[:, :7]).abs().max() < 1e-6
    assert (y[:, 7:] - y2[:, 7:]).abs().max() > 1e-4


def test_config_errors_name_the_field():
    """Invalid hyper-parameters raise with the field name and what was expected."""
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Config(dim=10, headdim=8)
    with pytest.raises(ValueError, match="d_state"):
        Mamba2Config(dim=16, d_state=0)
    with pytest.raises(ValueError, match="backend"):
        Mamba2Config(dim=16, headdim=8, backend="cuda")
    with pytest.raises(ValueError, match=r"u must be \(batch, length, 16\)"):
        _block()(torch.randn(2, 16))
