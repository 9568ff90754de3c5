"""Stage 1 of the world model: a small convolutional VAE between 64x64x3 frames and a latent grid.

The diffusion model (stage 2) works on the latents `encode` returns: the posterior mean, normalised per
channel to ~zero mean / unit variance with statistics measured on the training frames after training and kept
as buffers (so they travel with the weights). `decode` undoes the normalisation.

Axis legend:
    B batch, C channels (3 for images, `latent_channels` for latents),
    H x W image height x width (64 x 64), h x w latent grid (H / downsample x W / downsample).

Architecture (per resolution level i, widths `channels[i]`, `blocks[i]` residual blocks):
    encoder: conv3x3 stem -> [res blocks, strided conv 2x down] x levels -> res blocks -> conv3x3
             -> (mean, logvar)
    decoder: conv3x3 -> res blocks -> [nearest 2x up + conv3x3, res blocks] x levels -> conv3x3 -> image
Reconstruction loss: mean squared error in [0, 1] pixel space (what PSNR measures), plus `kl_weight` times the
KL divergence to N(0, I) averaged per latent element.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from . import presets
from .config import config_from_dict
from .metrics import psnr

__all__ = [
    "AutoencoderConfig",
    "autoencoder_config",
    "Autoencoder",
    "frames_to_float",
    "float_to_frames",
    "AUTOENCODER_PRESETS",
]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Sizes of the frame <-> latent autoencoder. `channels[i]` is the width at resolution image_size / 2**i,
    so len(channels) == log2(downsample) + 1; `blocks[i]` residual blocks run at that level (encoder and
    decoder alike). The presets are in worldmodel/presets.py (AUTOENCODER); the defaults are the cpu preset's."""

    image_size: int = 64
    """Frame height and width in pixels (square frames)."""
    image_channels: int = 3
    """Colour channels of a frame (3: RGB)."""
    downsample: int = 8
    """Frame size / latent grid size: a power of two (8: 64x64 frames -> an 8x8 latent grid)."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """Convolution width per resolution level, full resolution first (log2(downsample) + 1 entries)."""
    blocks: tuple[int, ...] = (0, 1, 1, 2)
    """Residual blocks per resolution level (one entry per level)."""
    latent_channels: int = 8
    """C of the latent grid (C x h x w) the diffusion model works on."""
    kl_weight: float = 1e-6
    """Weight of the KL divergence to N(0, I) next to the pixel MSE (small: a nearly deterministic encoder)."""
    norm_groups: int = 8
    """GroupNorm groups; every entry of `channels` must be divisible by it."""

    def __post_init__(self) -> None:
        levels = int(round(math.log2(self.downsample))) if self.downsample > 0 else -1
        if self.downsample < 1 or 2**levels != self.downsample:
            raise ValueError(f"AutoencoderConfig.downsample must be a power of two >= 1, got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"AutoencoderConfig.image_size={self.image_size} is not divisible by downsample={self.downsample}"
            )
        if len(self.channels) != levels + 1:
            raise ValueError(
                f"AutoencoderConfig.channels needs log2(downsample) + 1 = {levels + 1} entries "
                f"(one per resolution), got {len(self.channels)}: {self.channels}"
            )
        if len(self.blocks) != len(self.channels):
            raise ValueError(
                f"AutoencoderConfig.blocks needs one entry per level ({len(self.channels)}), "
                f"got {len(self.blocks)}: {self.blocks}"
            )
        for c in self.channels:
            if c % self.norm_groups:
                raise ValueError(
                    f"AutoencoderConfig.channels entry {c} is not divisible by norm_groups={self.norm_groups}"
                )
        if self.latent_channels < 1 or self.kl_weight < 0:
            raise ValueError(
                f"AutoencoderConfig: latent_channels must be >= 1 and kl_weight >= 0, got "
                f"{self.latent_channels} and {self.kl_weight}"
            )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latent grid."""
        s = self.image_size // self.downsample
        return (self.latent_channels, s, s)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | None = None) -> AutoencoderConfig:
        """Rebuild from a dict (e.g. a checkpoint's), lists back to tuples; unknown keys are an error."""
        return config_from_dict(cls, d, source)


# The presets' numbers live in worldmodel/presets.py; this name is kept for existing imports.
AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = presets.AUTOENCODER


def autoencoder_config(preset: str, **overrides: Any) -> AutoencoderConfig:
    """The named preset ("tiny" | "cpu" | "paper") with optional field overrides."""
    presets.check_preset(preset, "autoencoder preset")
    return AutoencoderConfig(**{**presets.AUTOENCODER[preset], **overrides})


# ---------------------------------------------------------------------------------------------- frames


def frames_to_float(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames_to_float expects uint8 (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return rearrange(frames, "b h w c -> b c h w").float().div_(255.0)


def float_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3) (clamped and rounded)."""
    if not x.is_floating_point() or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"float_to_frames expects float (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
    x = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    return rearrange(x, "b c h w -> b h w c").contiguous()


# ---------------------------------------------------------------------------------------------- layers


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus the identity."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(groups, ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(groups, ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # start as the identity
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        layers: list[nn.Module] = [nn.Conv2d(cfg.image_channels, ch[0], 3, padding=1)]
        for i in range(len(ch)):
            layers += [ResBlock(ch[i], g) for _ in range(cfg.blocks[i])]
            if i + 1 < len(ch):
                layers.append(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1))  # (B, ch, H/2, W/2)
        layers += [
            nn.GroupNorm(g, ch[-1]),
            nn.SiLU(),
            nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1),
        ]  # (B, 2C, h, w)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)  # 2 x (B, C, h, w)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)]
        for i in reversed(range(len(ch))):
            layers += [ResBlock(ch[i], g) for _ in range(cfg.blocks[i])]
            if i > 0:
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),  # (B, ch, 2h, 2w)
                    nn.Conv2d(ch[i], ch[i - 1], 3, padding=1),
                ]
        layers += [nn.GroupNorm(g, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], cfg.image_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# ---------------------------------------------------------------------------------------------- model


class Autoencoder(nn.Module):
    """Frames <-> normalised latent grid. See the module docstring for shapes and the architecture."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        c = config.latent_channels
        # per-channel latent statistics, set by set_latent_stats() after training (identity until then)
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.register_buffer("stats_ready", torch.tensor(False))
        self.to(memory_format=torch.channels_last)  # ~25% faster convolutions on CPU (oneDNN), fine on CUDA

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latents encode() returns."""
        return self.config.latent_shape

    @property
    def device(self) -> torch.device:
        """The device the weights are on."""
        return self.latent_mean.device

    # -- input handling -------------------------------------------------------------------------------
    def _to_input(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> float (B, 3, H, W) in [-1, 1], our device."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        s, c = self.config.image_size, self.config.image_channels
        if frames.dtype == torch.uint8:
            if tuple(frames.shape[1:]) != (s, s, c):
                raise ValueError(f"uint8 frames must be (B, {s}, {s}, {c}), got {tuple(frames.shape)}")
            x = frames_to_float(frames.to(self.device))
        elif frames.is_floating_point():
            if frames.dim() != 4 or tuple(frames.shape[1:]) != (c, s, s):
                raise ValueError(f"float frames must be (B, {c}, {s}, {s}) in [0, 1], got {tuple(frames.shape)}")
            x = frames.to(self.device, torch.float32)
        else:
            raise ValueError(f"frames must be uint8 (B, H, W, 3) or float (B, 3, H, W), got dtype {frames.dtype}")
        return (x * 2 - 1).contiguous(memory_format=torch.channels_last)  # oneDNN's fast conv layout

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.dim() != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents must be (B, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")

    # -- raw (unnormalised) latent space --------------------------------------------------------------
    def posterior(self, frames: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, logvar), each (B, C, h, w), in the raw (unnormalised) latent space."""
        return self.encoder(self._to_input(frames))

    def decode_raw(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Raw latents (B, C, h, w) -> unclamped images (B, 3, H, W), ~[0, 1]."""
        return self.decoder(z_raw) * 0.5 + 0.5

    # -- public, normalised latent space -------------------------------------------------------------
    def _stat_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.view(1, -1, 1, 1), self.latent_std.view(1, -1, 1, 1)  # (1, C, 1, 1)

    def encode(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Frames uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> normalised posterior mean
        (B, C, h, w)."""
        mean, _ = self.posterior(frames)
        mu, sd = self._stat_view()
        return (mean - mu) / sd

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, h, w) -> frames float (B, 3, H, W) in [0, 1] (clamped)."""
        self._check_latent(z)
        mu, sd = self._stat_view()
        return self.decode_raw(z.to(self.device) * sd + mu).clamp(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """decode(encode(frames)): float (B, 3, H, W) in [0, 1]."""
        return self.decode(self.encode(frames))

    @torch.no_grad()
    def set_latent_stats(self, frames: torch.Tensor | np.ndarray, batch_size: int = 256) -> None:
        """Measure per-channel mean/std of the posterior means over `frames` (uint8 (N, H, W, 3) or float
        (N, 3, H, W)) and store them, so encode() returns ~zero-mean, unit-variance latents."""
        n = len(frames)
        if n == 0:
            raise ValueError("set_latent_stats needs at least one frame")
        c = self.config.latent_channels
        s1 = torch.zeros(c, dtype=torch.float64, device=self.device)
        s2 = torch.zeros(c, dtype=torch.float64, device=self.device)
        count = 0
        for i in range(0, n, batch_size):
            mean, _ = self.posterior(frames[i : i + batch_size])
            m = rearrange(mean.double(), "b c h w -> c (b h w)")
            s1 += m.sum(1)
            s2 += (m * m).sum(1)
            count += m.shape[1]
        mu = s1 / count
        var = (s2 / count - mu * mu).clamp_min(0.0)
        self.latent_mean.copy_(mu.float())
        self.latent_std.copy_(var.sqrt().clamp_min(1e-6).float())
        self.stats_ready.fill_(True)

    # -- training ------------------------------------------------------------------------------------
    def loss(
        self, frames: torch.Tensor | np.ndarray, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """VAE loss on a batch of frames: MSE in [0, 1] pixels + kl_weight * KL per latent element.
        Samples the posterior in training mode (with ``noise`` (B, C, h, w) standard normal when given, else a
        fresh draw from torch's generator), uses its mean in eval mode.
        Returns (loss, logs) with logs "ae/loss", "ae/recon", "ae/kl", "ae/psnr" (floats)."""
        x = self._to_input(frames)  # (B, 3, H, W) in [-1, 1]
        target = x * 0.5 + 0.5
        # 1. posterior q(z|x) = N(mean, exp(logvar))
        mean, logvar = self.encoder(x)
        # 2. reparameterised sample (posterior mean in eval mode)
        if self.training:
            eps = noise.to(mean) if noise is not None else torch.randn_like(mean)
            z = mean + eps * (0.5 * logvar).exp()
        else:
            z = mean
        # 3. reconstruction and KL(q || N(0, I)), both averaged per element
        recon = self.decode_raw(z)
        rec = F.mse_loss(recon, target)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        loss = rec + self.config.kl_weight * kl
        with torch.no_grad():
            p = psnr(recon.detach().clamp(0, 1), target).mean()
        logs = {"ae/loss": loss.item(), "ae/recon": rec.item(), "ae/kl": kl.item(), "ae/psnr": p.item()}
        return loss, logs

    def num_parameters(self) -> int:
        """Number of parameters (weights and biases)."""
        return sum(p.numel() for p in self.parameters())
