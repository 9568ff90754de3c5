"""Video files and frame resizing for the data layer: read and write MP4 with PyAV, resize frames with Pillow.

- :func:`read_video`: every frame of a video file's first video stream as ``(T, H, W, 3)`` uint8 RGB, decoded by
  PyAV (FFmpeg's libraries, shipped inside the ``av`` wheel). A missing, unreadable or frameless file raises
  :class:`VideoError` naming it.
- :func:`write_video`: frames to an MP4 file atomically (``envs.fileio.atomic_write``). The default codec,
  ``libx264rgb`` at ``qp=0``, is lossless (RGB in, the same RGB out), so a written file reads back exactly; pass
  ``codec="libx264"`` (yuv420p, what MineRL's recordings use) or ``codec="mpeg4"`` (what OpenCV's ``mp4v``
  writes, as TECO's Minecraft collector does) for the lossy formats found in the wild.
- :func:`resize_frames`: ``(T, H, W, 3)`` -> ``(T, size, size, 3)`` with Pillow's bilinear filter (antialiased
  when shrinking). The MineRL adapter and the dataset converters resize with this one function, so frames from the
  live env and from a dataset go through the same filter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image  # Pillow comes with matplotlib, a project dependency

from envs.episodes import EpisodeError
from envs.fileio import atomic_write

__all__ = ["VideoError", "read_video", "resize_frames", "write_video"]

LOSSLESS_OPTIONS = {"qp": "0", "preset": "ultrafast"}  # libx264(rgb): qp 0 is mathematically lossless


class VideoError(EpisodeError):
    """A video file that cannot be read. ``str(e)`` is ``"<path>: <what is wrong>"`` (as for episode files)."""


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of ``path``'s first video stream, ``(T, H, W, 3)`` uint8 RGB (decoded with PyAV)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "video file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(path, "holds no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    except av.FFmpegError as e:
        raise VideoError(path, f"unreadable video (corrupt, truncated or not a video?): {e}") from e
    if not frames:
        raise VideoError(path, "the video holds no frames")
    return np.stack(frames)  # (T, H, W, 3) uint8


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: int = 20,
    codec: str = "libx264rgb",
    options: dict[str, str] | None = None,
) -> Path:
    """Write ``(T, H, W, 3)`` uint8 RGB frames to an MP4 file atomically; returns the path.

    ``codec="libx264rgb"`` with the default options is lossless. Other codecs (``libx264``, ``mpeg4``) store
    yuv420p, which needs even frame sizes, and are lossy; ``options`` go to the encoder (e.g. ``{"crf": "18"}``).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"write_video expects (T, H, W, 3) uint8 frames with T >= 1, got {frames.dtype} {frames.shape}"
        )
    path = Path(path)
    rgb = codec == "libx264rgb"
    if options is None:
        options = dict(LOSSLESS_OPTIONS) if codec.startswith("libx264") else {}
    with atomic_write(path) as f, av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=int(fps), options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24" if rgb else "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return path


def resize_frames(frames: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """``(T, H, W, 3)`` (or one ``(H, W, 3)`` frame) uint8 resized to ``size`` (an int: square; or (H, W)).

    Frames already of that size are returned unchanged (no copy).
    """
    frames = np.asarray(frames)
    height, width = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"resize_frames: size {size!r} must be positive")
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"resize_frames expects uint8 (T, H, W, 3) or (H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[-3:-1] == (height, width):
        return frames
    if frames.ndim == 3:
        return resize_frames(frames[None], (height, width))[0]
    out = np.empty((len(frames), height, width, 3), np.uint8)  # (T, size, size, 3)
    for t, frame in enumerate(frames):
        out[t] = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
    return out
