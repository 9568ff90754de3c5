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
    loss_weight,
    sample_noise_levels,
    target,
    v_target,
    x0_eps_from_pred,
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
    with pytest.raises(ValueError, match="prediction='eps': expected one of v, x0"):
        DiffusionConfig(prediction="eps")
    with pytest.raises(ValueError, match="loss_weighting='snr'"):
        DiffusionConfig(loss_weighting="snr")
    with pytest.raises(ValueError, match="noise_levels='lognormal'"):
        DiffusionConfig(noise_levels="lognormal")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionConfig(min_snr_gamma=0)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_perfect_prediction_recovers_x0_and_eps_and_drives_ddim_to_x0(prediction):
    """In either parameterisation the exact target gives back x0 and eps, zero loss, and DDIM lands on x0."""
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(2, 5, 3, 4, 4, generator=g), torch.randn(2, 5, 3, 4, 4, generator=g)
    t = torch.rand(2, 5, generator=g).clamp(0.05, 1.0)
    t[0, 0] = 1.0  # pure noise, where the sampler starts
    x_t = add_noise(x0, t, eps)
    x0_hat, eps_hat = x0_eps_from_pred(x_t, t, target(x0, t, eps, prediction), prediction)
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-4)
    cfg = DiffusionConfig(prediction=prediction, loss_weighting="min_snr")
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert diffusion_loss(target(x0, t, eps, prediction), x0, t, eps, mask, cfg).item() == pytest.approx(0, abs=1e-10)
    x = eps[:, 0]
    ts = ddim_timesteps(3)
    for k in range(3):
        tk, tn = ts[k].expand(2), ts[k + 1].expand(2)
        xt = add_noise(x0[:, 0], tk, eps[:, 0])
        x, _ = ddim_update(x, target(x0[:, 0], tk, eps[:, 0], prediction), tk, tn, prediction=prediction)
        assert torch.allclose(x, add_noise(x0[:, 0], tn, eps[:, 0]), atol=1e-4), (k, xt.shape)
    assert torch.allclose(x, x0[:, 0], atol=1e-4)


def test_min_snr_weights_at_known_noise_levels():
    """SNR = cot^2(pi t / 2): t = 1/2 has SNR 1; min(SNR, 5)/(SNR+1) for v and min(SNR, 5) for x0."""
    t = torch.tensor([0.5, 1.0, 2 / math.pi * math.atan(1 / 3), 0.1])  # SNR 1, 0, 9, cot^2(0.05 pi)
    snr = torch.tensor([1.0, 0.0, 9.0, 1 / math.tan(0.05 * math.pi) ** 2])
    v = loss_weight(t, DiffusionConfig(loss_weighting="min_snr"))
    x0 = loss_weight(t, DiffusionConfig(loss_weighting="min_snr", prediction="x0"))
    assert torch.allclose(v, torch.tensor([0.5, 0.0, 5 / 10, 5 / (snr[3] + 1)]), atol=1e-5)
    assert torch.allclose(x0, torch.tensor([1.0, 0.0, 5.0, 5.0]), atol=1e-5)
    assert torch.equal(loss_weight(t, DiffusionConfig()), torch.ones(4))
    # the same weight in x0 units: the v error is the x0 error divided by sigma
    g = torch.Generator().manual_seed(6)
    x0_, eps = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    tt = torch.tensor([[0.3, 0.5, 0.7, 0.9]])
    x_t, off = add_noise(x0_, tt, eps), torch.randn(1, 4, 2, 3, 3, generator=g)
    pv = v_target(x0_, tt, eps) + off  # a wrong v and the x0 it implies
    px0, _ = x0_eps_from_v(x_t, tt, pv)
    mask = torch.ones(1, 4, dtype=torch.bool)
    lv = diffusion_loss(pv, x0_, tt, eps, mask, DiffusionConfig(loss_weighting="min_snr"))
    lx = diffusion_loss(px0, x0_, tt, eps, mask, DiffusionConfig(loss_weighting="min_snr", prediction="x0"))
    assert lv.item() == pytest.approx(lx.item(), rel=1e-4)


def test_edm_noise_levels_follow_the_log_normal_sigma():
    """noise_levels="edm": ln tan(pi t / 2) ~ N(-1.2, 1.2^2); the clean prefix is unchanged."""
    g = torch.Generator().manual_seed(7)
    t, mask = sample_noise_levels(4000, 16, DiffusionConfig(noise_levels="edm", clean_prefix_prob=0.0), generator=g)
    log_sigma = torch.log(torch.tan(t * math.pi / 2))
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)
    assert mask.all() and (t > 0).all() and (t < 1).all()
