"""Small Minecraft trajectories in the exact on-disk formats: MineRL v0.4 folders, TECO npz/mp4, MineRL Navigate.

Every frame is one solid colour far from its neighbours' (:func:`colour_frames`), so a frame off by one position
is obvious even through a lossy codec and survives resizing unchanged.
"""

import json
from pathlib import Path

import numpy as np

from envs.video import write_video


def colour_frames(n: int, size=(64, 64), start: int = 0) -> np.ndarray:
    """Frames start..start+n-1, (n, H, W, 3) uint8, frame k a solid colour far from frame k+-1's."""
    k = np.arange(start, start + n)[:, None]
    colours = np.concatenate([(37 * k) % 256, (91 * k + 60) % 256, (151 * k + 120) % 256], 1).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, *size, 3)).copy()


def nearest_frames(image: np.ndarray, n: int) -> tuple[list[int], float]:
    """For each frame of ``image``, the index k < n whose colour it is nearest, and the largest such distance."""
    means = image.reshape(len(image), -1, 3).mean(1)  # (T, 3)
    ref = colour_frames(n, (1, 1))[:, 0, 0].astype(float)  # (n, 3)
    dist = np.abs(means[:, None, :] - ref[None]).max(-1)
    return dist.argmin(1).tolist(), float(dist.min(1).max())


def write_minerl_folder(
    folder: Path, forward, jump, camera, reward, lead: int = 3, size=(64, 64), codec: str = "libx264rgb"
) -> Path:
    """A MineRL v0.4 trajectory folder: recording.mp4 (``lead`` loading frames, then the N+1 states: frame k is
    colour k), rendered.npz (action$*, reward, observation$*; also a string enum and a pickled object array, as
    MineRL's files may hold) and metadata.json (MineRL's publish keys, true_video_frame_count = lead + N + 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(reward)
    write_video(folder / "recording.mp4", colour_frames(lead + n + 1, size), codec=codec)
    np.savez_compressed(
        folder / "rendered.npz",
        **{
            "action$forward": np.asarray(forward, np.int64),
            "action$jump": np.asarray(jump, np.int64),
            "action$back": np.zeros(n, np.int64),
            "action$camera": np.asarray(camera, np.float32).reshape(n, 2),
            "action$place": np.array(["none"] * n),
            "reward": np.asarray(reward, np.float64),
            "observation$compassAngle": np.linspace(-90, 90, n + 1).astype(np.float32),
            "observation$inventory$dirt": np.zeros(n + 1, np.int64),
            "observation$misc": np.array([{"pickled": True}] * (n + 1), dtype=object),
        },
    )
    meta = {
        "success": False,
        "duration_ms": n * 50,
        "duration_steps": n,
        "total_reward": float(np.sum(reward)),
        "stream_name": f"v3_{folder.name}",
        "true_video_frame_count": lead + n + 1,
    }
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def write_teco_npz(path: Path, actions, size=(128, 128)) -> Path:
    """A TECO Minecraft trajectory as the collector's npz: 'video' (T+1, H, W, 3) uint8 and 'actions' (T+1,) int32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, video=colour_frames(len(actions), size), actions=np.asarray(actions, np.int32))
    return path


def write_teco_mp4(path: Path, actions, beside: str = "npy", size=(64, 64)) -> Path:
    """A TECO trajectory as video + actions: the mp4 (mpeg4, as OpenCV's mp4v writes it) and ``<name>.npy``
    (the collector's np.save) or ``<name>.npz`` with key 'actions' (what TECO's loader reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, colour_frames(len(actions), size), codec="mpeg4", options={"qscale": "1"})
    actions = np.asarray(actions, np.int32)
    if beside == "npy":
        np.save(path.with_suffix(".npy"), actions)
    else:
        np.savez(path.with_suffix(".npz"), actions=actions)
    return path


def navigate_entry(forward, jump, camera_x, camera_y) -> dict:
    """One video's metadata.json entry: MineRL Navigate's 11 per-frame action lists."""
    n = len(forward)
    zeros = [0] * n
    return {
        "attack": zeros,
        "back": zeros,
        "camera_x": [float(v) for v in camera_x],
        "camera_y": [float(v) for v in camera_y],
        "forward": [int(v) for v in forward],
        "jump": [int(v) for v in jump],
        "left": zeros,
        "place": zeros,
        "right": zeros,
        "sneak": zeros,
        "sprint": zeros,
    }


def write_navigate_folder(folder: Path, entries: dict[str, dict], size=(64, 64)) -> Path:
    """A MineRL Navigate split folder: one lossless mp4 per entry (frame k colour k) and metadata.json of all."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():
        write_video(folder / name, colour_frames(len(entry["forward"]), size))
    (folder / "metadata.json").write_text(json.dumps(entries))
    return folder
