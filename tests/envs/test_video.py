"""Video files through PyAV (lossless round trip, a lossy codec, bad files) and frame resizing."""

import numpy as np
import pytest
from minecraft_files import colour_frames, nearest_frames

from envs.video import VideoError, read_video, resize_frames, write_video


def test_lossless_round_trip_is_exact(tmp_path):
    """The default codec (libx264rgb, qp 0) gives back the very frames written, noise included."""
    frames = np.random.default_rng(0).integers(0, 256, (6, 16, 24, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v.mp4", frames)
    got = read_video(path)
    assert got.dtype == np.uint8 and got.shape == frames.shape and np.array_equal(got, frames)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp file left


def test_lossy_mpeg4_keeps_every_frame_in_order(tmp_path):
    """mpeg4 (OpenCV's mp4v): every frame decodes nearest to its own colour, within 8 levels (yuv420p rounding)."""
    frames = colour_frames(12, (32, 32))
    got = read_video(write_video(tmp_path / "v.mp4", frames, codec="mpeg4", options={"qscale": "1"}))
    assert got.shape == frames.shape
    order, worst = nearest_frames(got, 12)
    assert order == list(range(12)) and worst <= 8


def test_bad_video_files_name_the_file(tmp_path):
    """Missing, garbage and truncated files raise VideoError naming the file."""
    with pytest.raises(VideoError, match="missing.mp4: video file not found"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 20)
    with pytest.raises(VideoError, match="bad.mp4: unreadable video"):
        read_video(bad)
    good = write_video(tmp_path / "good.mp4", colour_frames(4))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(VideoError, match="cut.mp4: "):
        read_video(cut)


def test_resize_keeps_colours_and_layout():
    """Solid frames keep their exact colour; a quadrant pattern keeps its quadrants; same size is a no-op."""
    frames = colour_frames(3, (96, 128))
    small = resize_frames(frames, 64)
    assert small.shape == (3, 64, 64, 3) and np.array_equal(small, colour_frames(3, (64, 64)))
    quad = np.zeros((128, 128, 3), np.uint8)
    quad[:64, 64:] = (255, 0, 0)
    quad[64:, :64] = (0, 0, 255)
    out = resize_frames(quad, (32, 16))  # one frame, (H, W) = (32, 16)
    assert out.shape == (32, 16, 3)
    assert out[2, 13].tolist() == [255, 0, 0] and out[29, 2].tolist() == [0, 0, 255] and out[2, 2].tolist() == [0, 0, 0]
    assert resize_frames(small, 64) is small
    with pytest.raises(ValueError, match="expects uint8"):
        resize_frames(small.astype(np.float32), 32)
