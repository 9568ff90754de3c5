"""Tests for worldmodel.backbone: parities (chunked == sequential, streaming == parallel), variants, configs."""

import dataclasses
import json

import pytest
import torch

from worldmodel.backbone import (
    NOISE_LEVEL_SCALE,
    VARIANTS,
    Backbone,
    BackboneConfig,
    BlockwiseSSM,
    backbone_config,
    count_config_parameters,
    count_parameters,
)
from worldmodel.backbone import _timestep_embedding as timestep_embedding
from worldmodel.mamba2 import Mamba2Config
from worldmodel.state import map_state, state_nbytes

TOL = 1e-4
TINY = dict(latent_channels=4, latent_size=(4, 4), patch=1)


def _model(variant="hybrid", seed=0, **overrides):
    """A tiny backbone with every parameter randomised (the zero-inits would make parity trivially true)."""
    kw = dict(attn_chunk=2, window_frames=3)
    kw.update(overrides)
    cfg = backbone_config("tiny", variant, **TINY, **kw)
    torch.manual_seed(seed)
    m = Backbone(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


def _inputs(m, B=2, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = m.cfg
    x = torch.randn(B, T, cfg.latent_channels, *cfg.latent_size, generator=g)
    if cfg.num_actions is None:
        a = torch.randn(B, T, cfg.action_dim, generator=g)
    else:
        a = torch.randint(0, cfg.num_actions, (B, T), generator=g)
    return x, a, torch.rand(B, T, generator=g)


def _leaves(state):
    out = []
    map_state(out.append, state)
    return out


def _state_diff(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert [t.shape for t in la] == [t.shape for t in lb]
    return max((u.float() - v.float()).abs().max().item() for u, v in zip(la, lb) if u.numel())


def _stream(m, x, a, n, state=None):
    state = m.init_state(x.shape[0]) if state is None else state
    outs, feats = [], []
    for t in range(x.shape[1]):
        o, f, state = m.step(x[:, t], a[:, t], n[:, t], state)
        outs.append(o)
        feats.append(f)
    return torch.stack(outs, 1), torch.stack(feats, 1), state


def test_shapes_and_zero_initialised_prediction():
    """forward returns (B, T, C, h, w) and (B, T, dim); a fresh model predicts exactly 0 (zero-init head)."""
    m = Backbone(backbone_config("tiny", **TINY))
    x, a, n = _inputs(m)
    out, feats = m(x, a, n)
    assert out.shape == x.shape and feats.shape == (2, 7, m.cfg.dim)
    assert torch.count_nonzero(out) == 0 and feats.abs().sum() > 0


@pytest.mark.parametrize("variant", [*VARIANTS, "hybrid+prev_frame"])
def test_streaming_equals_parallel_forward(variant):
    """T successive step() calls == forward on the same inputs; prefill's state == the stepped state."""
    m = _model(variant.split("+")[0], **({"prev_frame": True} if "prev_frame" in variant else {}))
    x, a, n = _inputs(m)
    out, feats, st_par = m.prefill(x, a, n)
    out_s, feats_s, st_seq = _stream(m, x, a, n)
    err = max((out_s - out).abs().max().item(), (feats_s - feats).abs().max().item())
    err_state = _state_diff(st_seq, st_par)
    print(f"{variant}: stream vs parallel max abs err {err:.2e}, state err {err_state:.2e}")
    assert out.abs().max() > 1e-2  # a real (non-zero) prediction is being compared
    assert err <= TOL and err_state <= TOL
    out_f, _ = m(x, a, n)
    assert torch.equal(out_f, out)


@pytest.mark.parametrize("prev_frame", [False, True])
def test_steps_continue_from_prefill(prev_frame):
    """prefill of the first k frames, then steps, == forward over all frames."""
    m = _model(prev_frame=prev_frame)
    x, a, n = _inputs(m, T=9)
    out, _ = m(x, a, n)
    _, _, state = m.prefill(x[:, :4], a[:, :4], n[:, :4])
    out_s, _, _ = _stream(m, x[:, 4:], a[:, 4:], n[:, 4:], state)
    err = (out_s - out[:, 4:]).abs().max().item()
    print(f"prefill + steps vs forward max abs err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("prev_frame", [False, True])
def test_step_is_pure(prev_frame):
    """step() does not modify its state: repeated calls from one state (denoising steps) agree exactly."""
    m = _model(prev_frame=prev_frame)
    x, a, n = _inputs(m, T=5)
    _, _, state = m.prefill(x[:, :4], a[:, :4], n[:, :4])
    snapshot = map_state(lambda t: t.detach().clone(), state)
    o1, f1, s1 = m.step(x[:, 4], a[:, 4], n[:, 4], state)
    o2, f2, _ = m.step(x[:, 4] + 1.0, a[:, 4], n[:, 4] * 0, state)
    o3, f3, _ = m.step(x[:, 4], a[:, 4], n[:, 4], state)
    assert _state_diff(state, snapshot) == 0.0
    assert torch.equal(o1, o3) and torch.equal(f1, f3) and not torch.equal(o1, o2)
    assert torch.equal(s1["t"], state["t"] + 1)


@pytest.mark.parametrize("variant", ["hybrid", "mamba2", "causal_window", "causal_full"])
def test_state_size_is_constant_except_full_attention(variant):
    """The state has the same bytes after every frame, except the full-attention KV cache, which grows."""
    m = _model(variant)
    x, a, n = _inputs(m, B=1, T=8)
    state = m.init_state(1)
    sizes = []
    for t in range(8):
        _, _, state = m.step(x[:, t], a[:, t], n[:, t], state)
        sizes.append(state_nbytes(state))
    if variant == "causal_full":
        assert all(b > a_ for a_, b in zip(sizes, sizes[1:]))
    else:
        assert len(set(sizes)) == 1 and sizes[0] == state_nbytes(m.init_state(1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_frames_only_see_the_past(variant):
    """Changing frame 3 leaves the predictions of frames 0..2 unchanged and changes frame 3."""
    m = _model(variant)
    x, a, n = _inputs(m)
    out, _ = m(x, a, n)
    x2 = x.clone()
    x2[:, 3] += 1.0
    out2, _ = m(x2, a, n)
    assert (out2[:, :3] - out[:, :3]).abs().max() < 1e-6
    assert (out2[:, 3] - out[:, 3]).abs().max() > 1e-3


@pytest.mark.parametrize("attn,reach", [("local", 4), ("window", 3), ("causal", 8)])
def test_attention_reach_in_frames(attn, reach):
    """With one attention-only layer, frame 0 reaches exactly `reach` frames (local c=2: 2c; window: 3)."""
    # prev_frame off: its one-frame shortcut would add a frame of reach beside attention
    m = _model("causal_full", attn=attn, depth=1, dim=16, attn_chunk=2, window_frames=3, prev_frame=False)
    x, a, n = _inputs(m, T=8)
    out, _ = m(x, a, n)
    x2 = x.clone()
    x2[:, 0] += 1.0
    out2, _ = m(x2, a, n)
    changed = [(out2[:, t] - out[:, t]).abs().max().item() > 1e-6 for t in range(8)]
    assert changed == [t < reach for t in range(8)]


def test_blockwise_scan_keeps_blocks_separate():
    """In a (2, 2)-block scan over a 4x4 grid, a change inside one block never reaches another block; with one
    whole-frame scan it reaches every position of later frames."""
    torch.manual_seed(0)
    mcfg = Mamba2Config(dim=8, d_state=4, headdim=8, chunk_size=8)
    x = torch.randn(1, 5, 16, 8)
    x2 = x.clone()
    x2[:, 0, 0] += 1.0  # token (0, 0) of frame 0: in block (0, 0)
    block_of = torch.tensor([(r // 2) * 2 + c // 2 for r in range(4) for c in range(4)])
    ssm = BlockwiseSSM(mcfg, (4, 4), (2, 2))
    d = ((ssm(x2)[0] - ssm(x)[0]).abs().amax(-1) > 1e-6)[0]  # (T, S) which outputs changed
    assert not d[:, block_of != 0].any() and d[1:, block_of == 0].all()
    whole = BlockwiseSSM(mcfg, (4, 4), (4, 4))
    whole.load_state_dict(ssm.state_dict())
    d = ((whole(x2)[0] - whole(x)[0]).abs().amax(-1) > 1e-6)[0]
    assert d[1:].all()


@pytest.mark.parametrize(
    "preset,latent", [("tiny", TINY), ("cpu", dict(latent_channels=8, latent_size=(8, 8), patch=2))]
)
def test_variants_match_the_hybrid_parameter_count(preset, latent):
    """Every baseline preset is within 10% of the hybrid's parameters, and is the architecture it names."""
    hybrid = count_config_parameters(backbone_config(preset, **latent))
    for variant in VARIANTS:
        cfg = backbone_config(preset, variant, **latent)
        n = count_config_parameters(cfg)
        print(f"{preset} {variant}: {n} parameters ({n / hybrid - 1:+.1%}), depth {cfg.depth}, dim {cfg.dim}")
        assert abs(n / hybrid - 1) <= 0.10
    grid = backbone_config(preset, **latent).grid
    assert backbone_config(preset, "hybrid_block1", **latent).layer_block_sizes()[0] == (1, 1)
    m2 = backbone_config(preset, "mamba2", **latent)
    assert m2.attn == "none" and m2.ssm and set(m2.layer_block_sizes()) == {grid}
    assert backbone_config(preset, "mamba2_local_attn", **latent).attn == "local"
    full = backbone_config(preset, "causal_full", **latent)
    assert not full.ssm and full.attn == "causal" and full.rope
    assert backbone_config(preset, "causal_window", **latent).attn == "window"


def test_cpu_preset_block_sizes_and_model_size():
    """cpu preset: 8x8 latent with 2x2 patches -> 4x4 tokens, blocks (2,2)/(4,4) alternating, 2-4M params;
    the real module's count equals the meta-device count."""
    cfg = backbone_config("cpu", latent_channels=8, latent_size=(8, 8), patch=2)
    assert cfg.grid == (4, 4) and cfg.layer_block_sizes()[:2] == ((2, 2), (4, 4))
    n = count_config_parameters(cfg)
    assert 2_000_000 <= n <= 4_000_000
    assert count_parameters(Backbone(cfg)) == n


def test_paper_preset_is_about_200m_parameters():
    """The paper preset (16x16 latent, patch 2) has ~200M parameters, counted without allocating them."""
    latent = dict(latent_channels=16, latent_size=(16, 16), patch=2)
    n = count_config_parameters(backbone_config("paper", **latent))
    print(f"paper hybrid: {n / 1e6:.1f}M parameters")
    assert 170e6 <= n <= 230e6
    for variant in ("mamba2", "causal_full"):
        assert abs(count_config_parameters(backbone_config("paper", variant, **latent)) / n - 1) <= 0.10


def test_continuous_actions():
    """num_actions=None uses an action MLP on (B, T, A) floats; streaming parity holds and actions matter."""
    m = _model("hybrid", num_actions=None, action_dim=3)
    x, a, n = _inputs(m)
    out, _ = m(x, a, n)
    out_s, _, _ = _stream(m, x, a, n)
    assert (out_s - out).abs().max() <= TOL
    out2, _ = m(x, a + 1.0, n)
    assert (out2 - out).abs().max() > 1e-3
    with pytest.raises(ValueError, match="continuous actions must be float"):
        m(x, a[..., :2], n)


def test_backward_reaches_every_layer():
    """A loss on the output gives finite gradients to every parameter, non-zero in every layer's SSM,
    attention and MLP."""
    m = _model()
    x, a, n = _inputs(m)
    out, feats = m(x, a, n)
    ((out - x) ** 2).mean().add(feats.pow(2).mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for i in range(m.cfg.depth):
        for part in ("ssm.mamba.in_proj.weight", "ssm.mamba.A_log", "attn.qkv.weight", "mlp.0.weight"):
            g = dict(m.named_parameters())[f"layers.{i}.{part}"].grad
            assert g.abs().sum() > 0, f"layers.{i}.{part}"


def test_bf16_autocast_runs():
    """Under CPU bf16 autocast the forward runs and stays close to fp32 (no dtype assumptions break)."""
    m = _model()
    x, a, n = _inputs(m)
    ref, _ = m(x, a, n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, feats = m(x, a, n)
        o1, _, _ = m.step(x[:, 0], a[:, 0], n[:, 0], m.init_state(2))
    assert torch.isfinite(out.float()).all() and torch.isfinite(o1.float()).all()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    print(f"bf16 autocast relative error {rel:.2e}")
    assert rel < 0.1


def test_map_state_moves_and_repeats_batches():
    """Every state tensor has the batch first: repeating a state with map_state repeats its streams."""
    m = _model()
    x, a, n = _inputs(m, B=1, T=4)
    _, _, st = m.prefill(x, a, n)
    st3 = map_state(lambda t: t.repeat_interleave(3, 0), st)
    o1, _, _ = m.step(x[:, 0], a[:, 0], n[:, 0], st)
    o3, _, _ = m.step(x[:, 0].expand(3, -1, -1, -1), a[:, 0].expand(3), n[:, 0].expand(3), st3)
    assert (o3 - o1).abs().max() <= TOL


def test_config_json_round_trip_and_validation():
    """A config survives asdict -> JSON -> BackboneConfig(**d); bad values raise naming the field."""
    cfg = backbone_config("tiny", **TINY)
    again = BackboneConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg
    with pytest.raises(ValueError, match="block_sizes"):
        dataclasses.replace(cfg, block_sizes=((3, 3),))
    with pytest.raises(ValueError, match="block_sizes"):
        dataclasses.replace(cfg, block_sizes=(2, 2))
    with pytest.raises(ValueError, match="latent_size"):
        dataclasses.replace(cfg, patch=3)
    with pytest.raises(ValueError, match="attn"):
        dataclasses.replace(cfg, attn="bidirectional")
    with pytest.raises(ValueError, match="action_dim"):
        dataclasses.replace(cfg, num_actions=None)
    with pytest.raises(ValueError, match="preset"):
        backbone_config("huge", **TINY)
    with pytest.raises(ValueError, match="variant"):
        backbone_config("tiny", "rnn", **TINY)
    with pytest.raises(ValueError, match="unknown BackboneConfig fields"):
        backbone_config("tiny", **TINY, width=3)


def test_bad_inputs_raise_clear_errors():
    """Wrong shapes, dtypes and out-of-range actions name the argument and what was expected."""
    m = Backbone(backbone_config("tiny", **TINY))
    x, a, n = _inputs(m)
    with pytest.raises(ValueError, match=r"expected \(B, T, C, h, w\) = \(B, T, 4, 4, 4\)"):
        m(x[:, :, :3], a, n)
    with pytest.raises(ValueError, match="noise levels"):
        m(x, a, n[:, :3])
    with pytest.raises(ValueError, match=r"actions must be in \[0, 6\)"):
        m(x, a + 6, n)
    with pytest.raises(ValueError, match="discrete actions must be integer"):
        m(x, a.float(), n)
    with pytest.raises(ValueError, match=r"x has shape"):
        m.step(x, a[:, 0], n[:, 0], m.init_state(2))
    with pytest.raises(ValueError, match="the state holds 3 streams"):
        m.step(x[:, 0], a[:, 0], n[:, 0], m.init_state(3))


def test_noise_level_scale_separates_nearby_noise_levels():
    """Scaled by NOISE_LEVEL_SCALE, noise levels 0.10 and 0.11 embed apart; unscaled they would nearly coincide."""
    t = torch.tensor([0.10, 0.11])
    unscaled = timestep_embedding(t, 256)
    scaled = timestep_embedding(NOISE_LEVEL_SCALE * t, 256)
    similarity = torch.nn.functional.cosine_similarity
    print(
        "cosine similarity unscaled", float(similarity(*unscaled, dim=0)), "scaled", float(similarity(*scaled, dim=0))
    )
    assert similarity(*unscaled, dim=0) > 0.9999
    assert similarity(*scaled, dim=0) < 0.8


def test_prev_frame_input_reaches_the_next_frame_only_through_its_shortcut():
    """With ``prev_frame`` and no temporal mixing at all (zeroed scan and attention gates), frame t still depends
    on frame t-1 (the shortcut) and on nothing earlier; without it, frames are independent."""
    for prev_frame in (False, True):
        m = _model(prev_frame=prev_frame)
        with torch.no_grad():
            for layer in m.layers:  # keep only the MLP sub-block of each layer (per-token, per-frame)
                w = layer.ada.weight.view(len(layer.subs), 3, -1, layer.ada.weight.shape[-1])
                b = layer.ada.bias.view(len(layer.subs), 3, -1)
                w[:-1, 2].zero_()
                b[:-1, 2].zero_()
        x, a, n = _inputs(m, B=1, T=5)
        out, _ = m(x, a, n)
        x2 = x.clone()
        x2[:, 2] += 1.0
        out2, _ = m(x2, a, n)
        changed = [(out2[:, t] - out[:, t]).abs().max().item() > 1e-6 for t in range(5)]
        assert changed == [False, False, True, prev_frame, False], (prev_frame, changed)
