"""The streaming state as a library object: take / put / repeat dreams, on a tiny randomised backbone."""

import pytest
import torch

from worldmodel.backbone import Backbone, backbone_config
from worldmodel.state import map_state, state_batch_size, state_nbytes, state_put, state_repeat, state_take


def _backbone(variant="hybrid"):
    """A tiny backbone with every parameter randomised (zero-inits would make equalities trivially true)."""
    cfg = backbone_config(
        "tiny", variant, latent_channels=4, latent_size=(4, 4), patch=1, attn_chunk=2, window_frames=3
    )
    torch.manual_seed(0)
    m = Backbone(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return m


def _warm(m, b, t, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 4, 4, 4, generator=g)
    a = torch.randint(0, 6, (b, t), generator=g)
    _, _, state = m.prefill(x, a, torch.rand(b, t, generator=g))
    return state


def _leaves(state):
    out = []
    map_state(out.append, state)
    return out


def _same(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb))


def _step(m, state, b, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, 4, 4, generator=g)
    return m.step(x, torch.arange(b) % 6, torch.full((b,), 0.1), state)


def test_put_replaces_only_the_chosen_dreams_and_take_reads_them_back():
    """state_put writes slot 1 exactly; slots 0 and 2 keep their states and their next outputs."""
    m = _backbone()
    batch, new = _warm(m, 3, 5, seed=1), _warm(m, 1, 3, seed=2)
    idx, keep = torch.tensor([1]), torch.tensor([0, 2])
    snapshot = map_state(lambda t: t.clone(), batch)
    merged = state_put(batch, idx, new, batch=3)
    assert _same(batch, snapshot)  # the input is not modified
    assert _same(state_take(merged, idx, 3), new)
    assert _same(state_take(merged, keep, 3), state_take(batch, keep, 3))
    assert not _same(merged, batch)
    out_old, _, _ = _step(m, batch, 3)
    out_new, _, _ = _step(m, merged, 3)
    assert torch.equal(out_old[keep], out_new[keep]) and not torch.equal(out_old[idx], out_new[idx])


def test_repeat_forks_each_dream_and_the_copies_step_like_the_original():
    """state_repeat(state, n): dream b's copies sit at b*n..b*n+n-1; stepping a copy equals stepping the
    original with the same input, and stepping the copies leaves the original untouched."""
    m = _backbone()
    state = _warm(m, 2, 4, seed=3)
    snapshot = map_state(lambda t: t.clone(), state)
    many = state_repeat(state, 3)
    assert state_batch_size(many) == 6 and state_nbytes(many) == 3 * state_nbytes(state)
    for b in range(2):
        for k in range(3):
            assert _same(state_take(many, torch.tensor([b * 3 + k]), 6), state_take(state, torch.tensor([b]), 2))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 4, 4, 4, generator=g)
    one, _, _ = m.step(x, torch.tensor([2]), torch.tensor([0.1]), state_take(state, torch.tensor([1]), 2))
    all6, _, _ = m.step(x.expand(6, -1, -1, -1), torch.full((6,), 2), torch.full((6,), 0.1), many)
    for k in range(3, 6):
        torch.testing.assert_close(all6[k : k + 1], one, rtol=0, atol=1e-5)
    assert _same(state, snapshot)


def test_batched_step_of_n_forks_equals_n_single_steps():
    """A batch of N forked dreams stepped with N different inputs equals N separate single-dream steps."""
    m = _backbone()
    state = _warm(m, 1, 4, seed=4)
    many = state_repeat(state, 4)
    g = torch.Generator().manual_seed(8)
    x, a = torch.randn(4, 4, 4, 4, generator=g), torch.tensor([0, 1, 2, 3])
    batched, _, _ = m.step(x, a, torch.full((4,), 0.2), many)
    for i in range(4):
        single, _, _ = m.step(x[i : i + 1], a[i : i + 1], torch.full((1,), 0.2), state)
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-5)


def test_bad_indices_and_mismatched_states_are_refused():
    """Out-of-range or non-integer indices, wrong batch sizes and growing caches give errors that say why."""
    m = _backbone()
    state = _warm(m, 3, 4, seed=1)
    with pytest.raises(ValueError, match=r"index \[3\] out of range for a batch of 3"):
        state_take(state, torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="1-d integer tensor"):
        state_take(state, torch.tensor([0.5]), 3)
    with pytest.raises(ValueError, match="no batch axis of 4"):
        state_take(state, torch.tensor([0]), 4)
    with pytest.raises(ValueError, match="n=0"):
        state_repeat(state, 0)
    full = _backbone("causal_full")
    long, short = _warm(full, 2, 5, seed=1), _warm(full, 1, 3, seed=2)
    with pytest.raises(ValueError, match="causal_full baseline, cannot be refilled"):
        state_put(long, torch.tensor([0]), short, batch=2)
