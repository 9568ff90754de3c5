"""Image metrics for reconstructions and dreams: PSNR, SSIM (always) and LPIPS (only with local weights).

Axis legend: B batch, C colour channels (3), H x W image height x width.
All metrics take float images (B, C, H, W) in [0, data_range] and return one value per image, shape (B,).

LPIPS needs pretrained networks that normally come from the internet. We never download: `lpips_available()`
is True only when the `lpips` package imports and both its linear-layer weights and the backbone's ImageNet
weights are already on disk. Callers write "LPIPS not computed: no local weights" into reports otherwise.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "gaussian_window", "lpips_available", "lpips", "LPIPS_MISSING_MESSAGE"]

LPIPS_MISSING_MESSAGE = "LPIPS not computed: no local weights"


def _check_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 4:
        raise ValueError(f"{name}: expected float images (B, C, H, W), got shape {tuple(a.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"{name}: expected float images in [0, data_range], got dtypes {a.dtype} and {b.dtype}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, shape (B,); identical images give +inf."""
    _check_pair(a, b, "psnr")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return (10.0 * torch.log10(data_range**2 / mse)).to(a.dtype)  # mse == 0 -> +inf


@functools.lru_cache(maxsize=8)
def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size), float64, summing to 1."""
    g = _gaussian_1d(size, sigma)
    return torch.outer(g, g)


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of (B, C, H, W), each channel on its own."""
    c = x.shape[1]
    k = g.numel()
    wy = g.view(1, 1, k, 1).expand(c, 1, k, 1).to(x)  # (C, 1, k, 1)
    wx = g.view(1, 1, 1, k).expand(c, 1, 1, k).to(x)  # (C, 1, 1, k)
    x = F.conv2d(x, wy, groups=c)  # (B, C, H-k+1, W)
    return F.conv2d(x, wx, groups=c)  # (B, C, H-k+1, W-k+1)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image, shape (B,) (Wang et al. 2004).

    Gaussian window (11x11, sigma 1.5), K1 = 0.01, K2 = 0.03, local statistics over 'valid' windows only (no
    padding), computed per colour channel and averaged over channels and positions. Computed in float64.
    """
    _check_pair(a, b, "ssim")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"ssim: images {tuple(a.shape[-2:])} are smaller than the {win_size}x{win_size} window")
    x, y = a.double(), b.double()
    g = _gaussian_1d(win_size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # 1. local means, variances and covariance under the Gaussian window
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    var_x = _filter(x * x, g) - mu_x**2
    var_y = _filter(y * y, g) - mu_y**2
    cov = _filter(x * y, g) - mu_x * mu_y
    # 2. the SSIM map: luminance x contrast-structure terms
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    # 3. mean over channels and window positions
    return (num / den).flatten(1).mean(dim=1).to(a.dtype)


# ----------------------------------------------------------------------------------------------- LPIPS


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


# torchvision ImageNet weights the `lpips` package's default "alex" backbone loads (file name prefix).
_BACKBONE_PREFIX = {"alex": "alexnet-", "vgg": "vgg16-", "squeeze": "squeezenet1_1-"}


def _lpips_weight_files(net: str = "alex") -> tuple[Path, Path] | None:
    """(linear-layer weights, backbone weights) if both exist on disk, else None. Never downloads."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    lin = Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"
    ckpt_dir = _torch_hub_checkpoints()
    if not lin.is_file() or not ckpt_dir.is_dir():
        return None
    backbones = sorted(p for p in ckpt_dir.iterdir() if p.name.startswith(_BACKBONE_PREFIX[net]))
    if not backbones:
        return None
    return lin, backbones[0]


@functools.lru_cache(maxsize=2)
def _lpips_model(net: str = "alex"):
    files = _lpips_weight_files(net)
    if files is None:
        raise RuntimeError(
            f"{LPIPS_MISSING_MESSAGE} (need the `lpips` package, its {net}.pth and the "
            f"torchvision {net} ImageNet weights under {_torch_hub_checkpoints()})"
        )
    # Both files exist (checked above), so torch.hub reads its cache and nothing is downloaded.
    import lpips as lpips_pkg  # optional dependency, guarded by _lpips_weight_files

    model = lpips_pkg.LPIPS(net=net, pretrained=True, verbose=False)
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def lpips_available() -> bool:
    """True when LPIPS can run from weights already on disk (the `lpips` package + backbone weights)."""
    if _lpips_weight_files() is None:
        return False
    try:
        _lpips_model()
    except Exception:  # noqa: BLE001 - any import/load failure (e.g. torchvision missing) means "not available"
        return False
    return True


@torch.no_grad()
def lpips(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS distance per image, shape (B,), images float (B, 3, H, W) in [0, 1]; raises without weights."""
    _check_pair(a, b, "lpips")
    if not lpips_available():
        raise RuntimeError(LPIPS_MISSING_MESSAGE)
    model = _lpips_model()
    dev = next(model.parameters()).device
    out = model(a.to(dev) * 2 - 1, b.to(dev) * 2 - 1)  # LPIPS expects [-1, 1]; (B, 1, 1, 1)
    return out.flatten().to(a.device, a.dtype)
