"""Diffusion Forcing on latent video: noise schedule, training loss, and a few-step streaming sampler.

Axis legend: B batch, T frames, C latent channels, h x w latent grid.

Parameterisation (default): **v-prediction** with the cosine schedule in continuous time t in [0, 1]:

    alpha(t) = cos(pi t / 2),  sigma(t) = sin(pi t / 2)       (variance preserving, alpha^2 + sigma^2 = 1)
    x_t      = alpha x_0 + sigma eps
    v        = alpha eps - sigma x_0                          (the network's target)
    x_0      = alpha x_t - sigma v,   eps = sigma x_t + alpha v

t = 0 is a clean frame, t = 1 pure noise. v-prediction stays well conditioned at both ends, which
matters here because Diffusion Forcing feeds frames at every noise level side by side. The other options
(``DiffusionConfig``), measured by ``benchmarks.train_levers``:

- ``prediction="x0"``: the network predicts the clean latent; eps = (x_t - alpha x0) / sigma. Epsilon
  prediction is not offered: at t = 1 (alpha = 0, which the sampler starts from) x0 = (x_t - sigma eps) / alpha
  is undefined (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").
- ``loss_weighting="min_snr"``: Min-SNR-gamma (Hang et al. 2023), per-frame weight min(SNR, gamma) / (SNR + 1)
  on the v error and min(SNR, gamma) on the x0 error, SNR = alpha^2 / sigma^2 (the same weight in x0 units).
- ``noise_levels="edm"``: EDM's training distribution of noise levels (Karras et al. 2022, used by DIAMOND),
  ln sigma ~ N(-1.2, 1.2^2) for the variance-exploding sigma = sigma/alpha = tan(pi t / 2), i.e.
  t = (2 / pi) atan(sigma). With sigma_data = 1, EDM's preconditioned denoiser (c_skip, c_out, c_in) trained
  with EDM's loss weight is exactly v-prediction with a unit-weight v loss on the VP latents, so v + "edm" is
  EDM's recipe up to sigma_data; "uniform" is Diffusion Forcing's U(0, 1) per frame.

Diffusion Forcing (Chen et al. 2024) gives every frame its own noise level. The long-context trick of
Po et al. 2025: with probability 0.5 a clean prefix (t = 0) of random length longer than half the
window is kept, and the loss is computed only on the noised frames after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

Prediction = Literal["v", "x0"]
LossWeighting = Literal["none", "min_snr"]
NoiseLevels = Literal["uniform", "edm"]
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2  # EDM's ln(sigma) ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1)
SIGMA_MIN = 1e-4  # sigma(t) floor when eps is recovered from an x0 prediction (t = 0 only occurs in the loss mask)


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion Forcing training and the per-frame sampler. The presets' sampler settings are in
    worldmodel/presets.py (DIFFUSION); sampling_steps, context_noise, eta and guidance may change after training."""

    prediction: Prediction = "v"
    """What the network predicts: "v" (alpha eps - sigma x0) or "x0" (the clean latent); see the module docstring."""
    loss_weighting: LossWeighting = "none"
    """Per-frame loss weight over noise levels: "none" (unit weight on the predicted quantity) or "min_snr"."""
    min_snr_gamma: float = 5.0
    """gamma of Min-SNR-gamma weighting (Hang et al. 2023 use 5)."""
    noise_levels: NoiseLevels = "uniform"
    """Training noise levels per frame: "uniform" t ~ U(0, 1) (Diffusion Forcing) or "edm" (log-normal sigma)."""
    clean_prefix_prob: float = 0.5
    """Probability of the long-context trick: a clean prefix longer than half the window (paper: 0.5)."""
    sampling_steps: int = 4
    """DDIM steps per generated frame."""
    context_noise: float = 0.1
    """The "stabilisation" noise level at which context and committed frames are fed to the model."""
    eta: float = 0.0
    """DDIM stochasticity (0: deterministic given the initial noise)."""
    guidance: float = 1.0
    """Classifier-free guidance on the action when imagining: v = v(null) + guidance * (v(action) - v(null)).
    1 (the default) is plain conditional sampling; > 1 needs a model trained with a null action and action
    dropout, and costs a second backbone call per denoising step."""

    def __post_init__(self):
        choices = (("prediction", Prediction), ("loss_weighting", LossWeighting), ("noise_levels", NoiseLevels))
        for name, kind in choices:
            if getattr(self, name) not in get_args(kind):
                raise ValueError(
                    f"DiffusionConfig.{name}={getattr(self, name)!r}: expected one of {', '.join(get_args(kind))}"
                )
        if not self.min_snr_gamma > 0:
            raise ValueError(f"DiffusionConfig.min_snr_gamma={self.min_snr_gamma} must be > 0")
        if not 0.0 <= self.clean_prefix_prob <= 1.0:
            raise ValueError(f"DiffusionConfig.clean_prefix_prob={self.clean_prefix_prob} must be in [0, 1]")
        if self.sampling_steps < 1:
            raise ValueError(f"DiffusionConfig.sampling_steps={self.sampling_steps} must be >= 1")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"DiffusionConfig.context_noise={self.context_noise} must be in [0, 1)")
        if not self.guidance >= 0.0:
            raise ValueError(f"DiffusionConfig.guidance={self.guidance} must be >= 0")


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine schedule: alpha(t) = cos(pi t / 2), sigma(t) = sin(pi t / 2)."""
    return torch.cos(t * (math.pi / 2)), torch.sin(t * (math.pi / 2))


def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, T) or (B,) -> broadcastable against x (B, T, C, h, w) or (B, C, h, w)."""
    return t.reshape(*t.shape, *([1] * (x.dim() - t.dim())))


def add_noise(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = alpha(t) x0 + sigma(t) eps; t (B, T) or (B,) per frame."""
    a, s = alpha_sigma(_expand(t, x0))
    return a * x0 + s * eps


def v_target(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The network's target v = alpha(t) eps - sigma(t) x0."""
    a, s = alpha_sigma(_expand(t, x0))
    return a * eps - s * x0


def x0_eps_from_v(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a noisy x_t and a predicted v: x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v."""
    a, s = alpha_sigma(_expand(t, x_t))
    return a * x_t - s * v, s * x_t + a * v


def target(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, prediction: Prediction = "v") -> torch.Tensor:
    """What the network is trained to output: v (see v_target) or x0 itself."""
    return v_target(x0, t, eps) if prediction == "v" else x0


def x0_eps_from_pred(
    x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor, prediction: Prediction = "v"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a noisy x_t and the network's output in the ``prediction`` parameterisation."""
    if prediction == "v":
        return x0_eps_from_v(x_t, t, pred)
    a, s = alpha_sigma(_expand(t, x_t))
    return pred, (x_t - a * pred) / s.clamp_min(SIGMA_MIN)


def snr(t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha^2 / sigma^2 = cot^2(pi t / 2) (infinite at t = 0, 0 at t = 1)."""
    a, s = alpha_sigma(t)
    return a**2 / s**2


def loss_weight(t: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """Per-frame weight (same shape as t) of the squared error on the predicted quantity.

    "none": 1. "min_snr": min(SNR, gamma) / (SNR + 1) for v, min(SNR, gamma) for x0. Both equal
    min(SNR, gamma) times the x0 error: the v error is the x0 error / sigma, and 1 / sigma^2 = SNR + 1."""
    if cfg.loss_weighting == "none":
        return torch.ones_like(t)
    r = snr(t)
    w = r.clamp_max(cfg.min_snr_gamma)
    return w / (r + 1) if cfg.prediction == "v" else w


def sample_noise_levels(
    batch: int,
    frames: int,
    cfg: DiffusionConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame noise levels and the loss mask for one Diffusion Forcing batch.

    Returns t (B, T) in [0, 1] and mask (B, T) bool (True = the frame counts in the loss).

    1. every frame draws its own t ~ U(0, 1) (Diffusion Forcing), or from EDM's log-normal sigma
       (``noise_levels="edm"``: t = 2/pi atan(sigma), ln sigma ~ N(-1.2, 1.2^2));
    2. with probability `clean_prefix_prob` a sequence keeps a clean prefix of length L, drawn uniformly
       from the lengths longer than half the window (T/2 < L <= T - 1), at t = 0;
    3. the loss covers only the frames after that prefix (all frames when there is no prefix).
    """
    if frames < 2:
        raise ValueError(f"Diffusion Forcing needs windows of at least 2 frames, got {frames}")
    # 1. independent noise level per frame
    if cfg.noise_levels == "edm":
        sigma = torch.exp(EDM_P_MEAN + EDM_P_STD * torch.randn(batch, frames, generator=generator))
        t = (torch.atan(sigma) * (2 / math.pi)).to(device)
    else:
        t = torch.rand(batch, frames, generator=generator).to(device)
    # 2. clean prefix of random length > T/2 for a random half of the sequences
    use_prefix = torch.rand(batch, generator=generator) < cfg.clean_prefix_prob
    lo = frames // 2 + 1  # smallest length strictly longer than half the window
    hi = frames - 1  # keep at least one noised frame
    lo = min(lo, hi)
    lengths = torch.randint(lo, hi + 1, (batch,), generator=generator)
    lengths = torch.where(use_prefix, lengths, torch.zeros_like(lengths)).to(device)
    idx = torch.arange(frames, device=device)[None, :]  # (1, T)
    prefix = idx < lengths[:, None]  # (B, T)
    t = torch.where(prefix, torch.zeros_like(t), t)
    # 3. loss only on the noised frames
    mask = ~prefix
    return t, mask


def diffusion_loss(
    pred: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    mask: torch.Tensor,
    cfg: DiffusionConfig | None = None,
    total: float | None = None,
) -> torch.Tensor:
    """Weighted mean squared error of the prediction over the masked frames (``cfg`` default: v, unit weight).

    pred, x0, eps (B, T, C, h, w); t, mask (B, T). The mean is over the masked frames (weights not normalised);
    ``total``: divide by that many frames instead (the masked frames of a whole batch this is one part of)."""
    cfg = cfg or DiffusionConfig()
    err = (pred - target(x0, t, eps, cfg.prediction)).pow(2).flatten(2).mean(-1)  # (B, T)
    err = err * loss_weight(t, cfg)
    m = mask.to(err.dtype)
    return (err * m).sum() / (max(total, 1.0) if total is not None else m.sum().clamp_min(1.0))


def ddim_timesteps(steps: int, device=None) -> torch.Tensor:
    """Noise levels visited by the sampler, from pure noise to clean: (steps + 1,) = 1, ..., 0."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def ddim_update(
    x_t: torch.Tensor,
    pred: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    prediction: Prediction = "v",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from level t to t_next (scalars or (B,)); returns (x_next, x0_hat).

    ``pred`` is the network's output in the ``prediction`` parameterisation."""
    x0, eps = x0_eps_from_pred(x_t, t, pred, prediction)
    a_n, s_n = alpha_sigma(_expand(t_next, x_t))
    if eta > 0:
        a, s = alpha_sigma(_expand(t, x_t))
        # DDIM sigma for the stochastic variant (Song et al. 2021, eq. 16) in alpha/sigma form
        ratio = (s_n**2 / s.clamp_min(1e-8) ** 2) * (1 - (a**2) / a_n.clamp_min(1e-8) ** 2).clamp_min(0)
        c = eta * torch.sqrt(ratio)
        noise = torch.randn(x_t.shape, generator=generator, device="cpu").to(x_t)
        x_next = a_n * x0 + torch.sqrt((s_n**2 - c**2).clamp_min(0)) * eps + c * noise
    else:
        x_next = a_n * x0 + s_n * eps
    return x_next, x0
