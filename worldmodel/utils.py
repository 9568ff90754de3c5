"""Small shared helpers for the world-model jobs: devices, seeding, RNG capture, the learning-rate schedule,
atomic checkpoints, config checks (from worldmodel/config.py) and image strips (real | reconstruction-or-dream
| error).

Axis legend: B batch, T time, C channels, H x W height x width. Images handed to the strip helpers are float
(B, 3, H, W) in [0, 1] or uint8 (B, H, W, 3).
"""

from __future__ import annotations

import io
import math
import os
import random
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from envs.fileio import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, torch_load

from .config import check_config, config_diff, config_to_dict

__all__ = [
    "resolve_device",
    "seed_everything",
    "get_rng_state",
    "set_rng_state",
    "LR_FLOOR",
    "warmup_cosine_lr",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "torch_load",
    "config_to_dict",
    "config_diff",
    "check_config",
    "to_uint8_hwc",
    "image_strip",
    "save_png",
    "save_figure",
    "git_commit",
]


# ---------------------------------------------------------------------------------------------- provenance

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout this code runs from."""
GIT_TIMEOUT_S = 5
"""Seconds ``git`` may take before :func:`git_commit` gives up."""


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the checkout; (None, None) outside git. Every
    result file records it, so a number can be traced to the code that made it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), (bool(dirty.stdout.strip()) if dirty.returncode == 0 else None)


# ---------------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda if available, else mps if available, else cpu; anything else goes to torch.device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device={device!r} is not a valid torch device (use 'auto', 'cpu', 'cuda', ...)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here (use device='auto')")
    return dev


# ------------------------------------------------------------------------------------------ randomness


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Snapshot of Python/NumPy/torch(/CUDA) global RNG states, storable with torch.save and loadable with
    torch.load(weights_only=True) (only tensors, ints, strings, lists and dicts)."""
    py = random.getstate()  # (version, tuple of 625 ints, gauss_next)
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py[0], "internal": list(py[1]), "gauss_next": py[2]},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a snapshot made by get_rng_state()."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ schedules

# The learning rate decays to this fraction of its peak, not to zero: the last steps still move the weights
# (and the EMA that is evaluated follows them), while the step size is small enough to settle.
LR_FLOOR = 0.1


def warmup_cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = LR_FLOOR) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total``: a linear warm-up over the first
    ``warmup`` steps to ``peak``, then a half cosine from ``peak`` down to ``floor * peak`` at ``total``.

    The one schedule of the project (world model and autoencoder alike)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------------ atomic I/O
# atomic_write_bytes/text/json, atomic_torch_save and torch_load live in envs/fileio.py (the data layer, so
# collection and training write files one way); imported above and kept in __all__ for existing imports.


# ------------------------------------------------------------------------------------------ configs
# config_to_dict, config_diff and check_config live in worldmodel/config.py (imported above, kept here for
# existing imports).


# ------------------------------------------------------------------------------------------ image strips


def to_uint8_hwc(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float (B, 3, H, W) in [0, 1] or uint8 (B, H, W, 3) -> uint8 numpy (B, H, W, 3)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got {tuple(x.shape)}")
        return x.numpy()
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"float images must be (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
    x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return rearrange(x, "b c h w -> b h w c").numpy()


def image_strip(*rows: torch.Tensor | np.ndarray, error: bool = True, gap: int = 2) -> np.ndarray:
    """Lay out image batches as a grid: one row per argument (e.g. real, recon/dream), plus an |real - last|
    error row when `error` is True. Each row holds the B images left to right. Returns uint8 (H', W', 3).

    The error row is the absolute difference of the first and the last row, averaged over colour and scaled
    by 4 (so a 0.25 error is white) - small errors stay visible.
    """
    if not rows:
        raise ValueError("image_strip needs at least one batch of images")
    imgs = [to_uint8_hwc(r) for r in rows]
    shape = imgs[0].shape
    for i, im in enumerate(imgs):
        if im.shape != shape:
            raise ValueError(f"image_strip: row {i} has shape {im.shape}, row 0 has {shape}")
    if error and len(imgs) >= 2:
        diff = np.abs(imgs[0].astype(np.float32) - imgs[-1].astype(np.float32)).mean(-1, keepdims=True)
        err = np.clip(diff * 4, 0, 255).astype(np.uint8).repeat(3, axis=-1)  # (B, H, W, 3)
        imgs.append(err)
    b, h, w, _ = shape
    grid = np.full((len(imgs) * (h + gap) - gap, b * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, im in enumerate(imgs):
        for c in range(b):
            grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = im[c]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray, scale: int = 1) -> Path:
    """Save uint8 (H, W, 3) as PNG atomically, optionally upscaled by an integer factor (nearest)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"save_png expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    from PIL import Image  # Pillow comes with matplotlib, a project dependency

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (render to memory, then temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
