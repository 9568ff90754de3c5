"""Tests for worldmodel.diffusion: schedule algebra, the clean-prefix mask, and the DDIM update."""

import math

import pytest
import torch

from worldmodel.diffusion import (
    DiffusionConfig,
    add_noise,
    alpha_sigma,
    ddim_timesteps,
    ddim_update,
    diffusion_loss,
    sample_noise_levels,
    v_target,
    x0_eps_from_v,
)


def test_schedule_is_variance_preserving_with_clean_and_noise_ends():
    """alpha^2 + sigma^2 = 1; t=0 is clean, t=1 is pure noise."""
    t = torch.linspace(0, 1, 11)
    a, s = alpha_sigma(t)
    assert torch.allclose(a**2 + s**2, torch.ones_like(t), atol=1e-6)
    assert a[0] == 1 and s[0] == 0 and abs(float(a[-1])) < 1e-6 and math.isclose(float(s[-1]), 1.0)


def test_v_parameterisation_round_trip():
    """x0 and eps are recovered exactly from (x_t, v) at every noise level."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 5, 3, 4, 4, generator=g), torch.randn(2, 5, 3, 4, 4, generator=g)
    t = torch.rand(2, 5, generator=g)
    x_t = add_noise(x0, t, eps)
    x0_hat, eps_hat = x0_eps_from_v(x_t, t, v_target(x0, t, eps))
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)


def test_clean_prefix_longer_than_half_and_loss_only_on_noised_frames():
    """With the trick on, a prefix of length > T/2 (and < T) is clean (t=0) and excluded from the loss."""
    cfg = DiffusionConfig(clean_prefix_prob=1.0)
    g = torch.Generator().manual_seed(1)
    T = 20
    t, mask = sample_noise_levels(512, T, cfg, generator=g)
    prefix_len = (~mask).sum(1)
    assert bool((prefix_len > T / 2).all()) and bool((prefix_len <= T - 1).all())
    # the prefix is a prefix: masked-out frames come first, then only noised frames
    for row_t, row_m, n in zip(t, mask, prefix_len):
        assert not row_m[:n].any() and row_m[n:].all()
        assert (row_t[:n] == 0).all() and (row_t[n:] > 0).all()
    # every admissible length shows up
    assert set(prefix_len.tolist()) == set(range(T // 2 + 1, T))


def test_clean_prefix_used_with_probability_half():
    """The paper's setting uses the trick on about half the sequences; otherwise every frame is noised."""
    g = torch.Generator().manual_seed(2)
    t, mask = sample_noise_levels(4000, 16, DiffusionConfig(), generator=g)
    frac = (~mask).any(1).float().mean().item()
    assert 0.45 < frac < 0.55
    assert bool(mask[mask.all(1)].all()) and bool((t[mask.all(1)] > 0).all())


def test_loss_ignores_masked_frames():
    """Changing a masked-out frame's prediction does not change the loss."""
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    t = torch.tensor([[0.0, 0.0, 0.5, 0.7]])
    mask = torch.tensor([[False, False, True, True]])
    pred = torch.randn(1, 4, 2, 3, 3, generator=g)
    base = diffusion_loss(pred, x0, t, eps, mask)
    pred2 = pred.clone()
    pred2[:, :2] += 100
    assert torch.equal(base, diffusion_loss(pred2, x0, t, eps, mask))
    assert diffusion_loss(v_target(x0, t, eps), x0, t, eps, mask).item() == pytest.approx(0.0, abs=1e-10)


def test_ddim_with_the_true_v_lands_on_x0():
    """Deterministic DDIM driven by the exact v reaches x0 from pure noise in any number of steps."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(3, 2, 4, 4, generator=g)
    for steps in (1, 3, 8):
        ts = ddim_timesteps(steps)
        x = torch.randn(3, 2, 4, 4, generator=g)
        eps = x.clone()  # at t=1, x_t = eps
        for k in range(steps):
            t, tn = ts[k].expand(3), ts[k + 1].expand(3)
            x, _ = ddim_update(x, v_target(x0, t, eps), t, tn)
        assert torch.allclose(x, x0, atol=1e-5)


def test_config_validation_names_the_field():
    """Bad diffusion settings are rejected with the field name."""
    with pytest.raises(ValueError, match="sampling_steps"):
        DiffusionConfig(sampling_steps=0)
    with pytest.raises(ValueError, match="prediction"):
        DiffusionConfig(prediction="eps")
