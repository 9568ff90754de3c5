"""worldmodel.metrics: PSNR and SSIM against known answers and a loop reference; LPIPS only from local weights."""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch

from worldmodel import metrics
from worldmodel.metrics import gaussian_window, lpips, lpips_available, psnr, ssim


def _images(b=2, c=3, h=24, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=torch.float64)


def _ssim_reference(x, y, data_range=1.0, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Straightforward SSIM: loop over every valid window position of every channel (Wang et al. 2004)."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    win = torch.outer(g, g)
    win = win / win.sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    vals = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                px, py = x[ch, i : i + size, j : j + size], y[ch, i : i + size, j : j + size]
                mx, my = (win * px).sum(), (win * py).sum()
                vx = (win * (px - mx) ** 2).sum()
                vy = (win * (py - my) ** 2).sum()
                cxy = (win * (px - mx) * (py - my)).sum()
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return torch.stack(vals).mean()


def test_psnr_identical_is_inf_and_shape_is_per_image():
    """Identical images give +inf dB, one value per image."""
    a = _images(b=3).float()
    out = psnr(a, a.clone())
    assert out.shape == (3,)
    assert torch.isinf(out).all() and (out > 0).all()


def test_psnr_known_mse():
    """A uniform error of 0.1 (MSE 0.01) is 20 dB at data_range 1 and 20 dB at data_range 255 scaled alike."""
    a = torch.full((2, 3, 8, 8), 0.5)
    b = a + 0.1
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert torch.allclose(psnr(a * 255, b * 255, data_range=255.0), torch.tensor([20.0, 20.0]), atol=1e-4)
    # per image: the second image has 10x the MSE -> 10 dB lower
    c = b.clone()
    c[1] = a[1] + 0.1 * math.sqrt(10)
    p = psnr(a, c)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4) and p[1].item() == pytest.approx(10.0, abs=1e-4)


def test_ssim_identical_is_one():
    """SSIM of an image with itself is exactly 1."""
    a = _images()
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))


def test_ssim_matches_loop_reference():
    """The separable-filter SSIM equals a per-window loop implementation on a small image."""
    x = _images(b=2, c=3, h=16, w=14, seed=1)
    y = (x + 0.2 * _images(b=2, c=3, h=16, w=14, seed=2)).clamp(0, 1)
    got = ssim(x, y)
    for i in range(2):
        ref = _ssim_reference(x[i], y[i])
        assert abs(got[i].item() - ref.item()) < 1e-10, (got[i].item(), ref.item())


def test_ssim_constant_images_closed_form():
    """For two flat images SSIM reduces to the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)."""
    a = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    b = torch.full((1, 3, 16, 16), 0.7, dtype=torch.float64)
    c1 = 0.01**2
    expect = (2 * 0.3 * 0.7 + c1) / (0.3**2 + 0.7**2 + c1)
    assert ssim(a, b).item() == pytest.approx(expect, abs=1e-12)


def test_ssim_symmetric_and_decreases_with_noise():
    """SSIM(a, b) == SSIM(b, a), and more noise gives a strictly lower SSIM."""
    a = _images(b=1, h=32, w=32, seed=3)
    # a smooth image so noise clearly hurts structure
    a = torch.nn.functional.avg_pool2d(a, 5, stride=1, padding=2)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scores = [ssim(a, (a + s * noise).clamp(0, 1)).item() for s in (0.0, 0.02, 0.05, 0.1, 0.3)]
    assert all(hi > lo for hi, lo in zip(scores, scores[1:])), scores
    assert scores[0] == pytest.approx(1.0) and scores[-1] < 0.5
    b = (a + 0.1 * noise).clamp(0, 1)
    assert ssim(a, b).item() == pytest.approx(ssim(b, a).item(), abs=1e-12)


def test_gaussian_window_normalised():
    """The 11x11 window sums to 1, is symmetric, and peaks in the centre."""
    w = gaussian_window()
    assert w.shape == (11, 11) and w.sum().item() == pytest.approx(1.0)
    assert torch.equal(w, w.T) and w.argmax().item() == 5 * 11 + 5


def test_metrics_reject_mismatched_inputs():
    """Different shapes or integer images are refused with a message naming the shapes/dtypes."""
    a = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\(2, 3, 16, 16\) and \(2, 3, 16, 8\)"):
        psnr(a, a[..., :8])
    with pytest.raises(ValueError, match="uint8"):
        ssim((a * 255).to(torch.uint8), a)
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(a[..., :8, :8], a[..., :8, :8])


def test_lpips_unavailable_without_local_weights(monkeypatch, tmp_path):
    """With no weights on disk LPIPS reports unavailable and refuses to run (it never downloads)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    metrics.lpips_available.cache_clear()
    metrics._lpips_model.cache_clear()
    try:
        assert lpips_available() is False
        with pytest.raises(RuntimeError, match="no local weights"):
            lpips(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
        assert not (tmp_path / "empty_hub").exists()  # nothing was fetched
    finally:
        metrics.lpips_available.cache_clear()
        metrics._lpips_model.cache_clear()


def test_lpips_weight_files_need_both_files_on_disk(monkeypatch, tmp_path):
    """The weight lookup (package present, as faked here) finds LPIPS's linear layers beside the package and the
    backbone in the torch hub cache, and answers None as soon as either is missing."""
    pkg = tmp_path / "site" / "lpips"
    lin = pkg / "weights" / "v0.1" / "alex.pth"
    hub = tmp_path / "hub"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            SimpleNamespace(origin=str(pkg / "__init__.py")) if name == "lpips" else real_find_spec(name, *a)
        ),
    )
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert metrics._lpips_weight_files() is None  # neither file
    lin.parent.mkdir(parents=True)
    lin.write_bytes(b"")
    assert metrics._lpips_weight_files() is None  # linear layers only
    (hub / "checkpoints").mkdir(parents=True)
    backbone = hub / "checkpoints" / "alexnet-owt-7be5be79.pth"
    backbone.write_bytes(b"")
    (hub / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")  # another backbone: not alex's
    assert metrics._lpips_weight_files() == (lin, backbone)
    lin.unlink()
    assert metrics._lpips_weight_files() is None  # backbone only
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert metrics._lpips_weight_files() is None  # package not installed
