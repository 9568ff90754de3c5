"""Small shared helpers for the world-model jobs: devices, seeding, RNG capture, atomic checkpoints, config
checks and image strips (real | reconstruction-or-dream | error).

Axis legend: B batch, T time, C channels, H x W height x width. Images handed to the strip helpers are float
(B, 3, H, W) in [0, 1] or uint8 (B, H, W, 3).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

__all__ = [
    "resolve_device",
    "seed_everything",
    "get_rng_state",
    "set_rng_state",
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
]


# ---------------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu; anything else goes to torch.device."""
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
        raise ValueError(f"device={device!r} is not a valid torch device "
                         "(use 'auto', 'cpu', 'cuda', ...)") from e
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


# ------------------------------------------------------------------------------------------ atomic I/O


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` atomically: a temp file in the same folder, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic JSON write (indented, keys in insertion order, non-finite floats as null-safe strings)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, torch.Tensor)) and np.asarray(obj).size == 1:
        obj = np.asarray(obj).item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)  # JSON has no inf/nan
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to `path` atomically (serialise to memory, then temp file + os.replace): a crash mid-write
    leaves the previous checkpoint intact."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True (no arbitrary pickle), with a clear error for a missing/bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"could not load checkpoint {path} with weights_only=True: {e}") from e


# ------------------------------------------------------------------------------------------ configs


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A frozen dataclass config as a plain dict (tuples become lists) for checkpoints and JSON."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a dataclass config instance, got {type(cfg).__name__}")
    return _jsonable(dataclasses.asdict(cfg))


def config_diff(expected: Any, found: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a config (dataclass or dict) and a stored dict: one line per field,
    e.g. "latent_channels: expected 8, checkpoint has 16"; empty when they match."""
    exp = config_to_dict(expected) if not isinstance(expected, Mapping) else _jsonable(dict(expected))
    got = _jsonable(dict(found))
    lines = []
    for key in sorted(set(exp) | set(got)):
        if key not in got:
            lines.append(f"{key}: expected {exp[key]!r}, checkpoint lacks this field")
        elif key not in exp:
            lines.append(f"{key}: unknown field in checkpoint (value {got[key]!r})")
        elif exp[key] != got[key]:
            lines.append(f"{key}: expected {exp[key]!r}, checkpoint has {got[key]!r}")
    return lines


def check_config(expected: Any, found: Mapping[str, Any], what: str = "checkpoint") -> None:
    """Raise ValueError naming every differing field when `found` (from a checkpoint) != `expected`."""
    diff = config_diff(expected, found)
    if diff:
        raise ValueError(f"{what} config does not match ({len(diff)} field(s) differ):\n  "
                         + "\n  ".join(diff))


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
            grid[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = im[c]
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
