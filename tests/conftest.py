"""Shared test fixtures: synthetic episodes in the official format, real Memory Maze episodes, a tiny trained model."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# The test models are tiny: one intra-op thread is faster than two (and immune to a busy second core).
torch.set_num_threads(1)


def write_synthetic_episode(path: Path, steps: int, seed: int) -> dict:
    """A small episode in the official Memory Maze offline format with action-driven dynamics: a coloured square
    moves with the actions (1 right, 2 left, 3 down, 4 up, 0/5 stay) and reward 1 is planted on the frames where
    it sits in the top-left quadrant, which is also shown as a red border (like Memory Maze's target colour)."""
    rng = np.random.default_rng(seed)
    n = steps + 1
    image = np.zeros((n, 64, 64, 3), np.uint8)
    action = np.zeros((n, 6), np.float32)
    reward = np.zeros((n,), np.float32)
    pos = np.zeros((n, 2), np.float32)
    y, x = rng.integers(8, 48, size=2)
    moves = {1: (0, 4), 2: (0, -4), 3: (4, 0), 4: (-4, 0)}
    yy, xx = np.mgrid[0:64, 0:64]
    for t in range(n):
        if t > 0:
            a = int(rng.integers(0, 6))
            action[t, a] = 1
            dy, dx = moves.get(a, (0, 0))
            y, x = int(np.clip(y + dy, 4, 48)), int(np.clip(x + dx, 4, 48))
        frame = np.stack([xx * 2, yy * 2, np.full_like(xx, 60)], -1).astype(np.uint8)
        frame[y : y + 12, x : x + 12] = (250, 220, 30)
        if y < 20 and x < 20:
            reward[t] = 1.0 if t > 0 else 0.0
            frame[:3], frame[-3:], frame[:, :3], frame[:, -3:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
        image[t] = frame
        pos[t] = (x / 8.0, y / 8.0)
    ep = {
        "image": image,
        "action": action,
        "reward": reward,
        "maze_layout": np.ones((9, 9), np.uint8),
        "agent_pos": pos,
        "agent_dir": np.zeros((n, 2), np.float32),
        "targets_pos": np.zeros((n, 3, 2), np.float32),
        "targets_vec": np.zeros((n, 3, 2), np.float32),
        "target_pos": np.zeros((n, 2), np.float32),
        "target_vec": np.zeros((n, 2), np.float32),
        "target_color": np.zeros((n, 3), np.float32),
    }
    np.savez_compressed(path, **ep)
    return ep


@pytest.fixture
def synthetic_episodes(tmp_path):
    """Factory: synthetic_episodes(n, steps) -> folder with n official-format episode files."""

    def make(n: int = 4, steps: int = 40, folder: str = "episodes") -> Path:
        d = tmp_path / folder
        d.mkdir(exist_ok=True)
        for i in range(n):
            write_synthetic_episode(d / f"ep_{i:05d}.npz", steps, seed=i)
        return d

    return make


# The tiny model the dream env, planner and agent tests share: trained once per session (seconds) on three short
# real Memory Maze episodes, so every test that needs "a trained model" uses the same one instead of its own.
TINY_MIN_CONTEXT = 4  # the shared tiny model needs 4 real frames before it can imagine


@pytest.fixture(scope="session")
def real_episodes(tmp_path_factory):
    """Three short real Memory Maze 9x9 episodes (40 actions each) collected with envs.collect."""
    out = tmp_path_factory.mktemp("real") / "episodes"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "envs.collect",
            "--env",
            "longdream/MemoryMaze-9x9-ExtraObs-v0",
            "--episodes",
            "3",
            "--steps",
            "40",
            "--out",
            str(out),
            "--seed",
            "0",
            "--quiet",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(real_episodes, tmp_path_factory):
    """RUN_DIR/checkpoint.pt of the tiny preset trained on `real_episodes` (needs TINY_MIN_CONTEXT frames)."""
    from worldmodel.model import world_model_config
    from worldmodel.train import TRAIN_PRESETS, train

    run = tmp_path_factory.mktemp("tiny") / "run"
    cfg = world_model_config("tiny", min_context_frames=TINY_MIN_CONTEXT)
    train(TRAIN_PRESETS["tiny"], real_episodes, run, device="cpu", model_cfg=cfg, progress=False)
    return run / "checkpoint.pt"


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The shared tiny WorldModel (EMA weights, eval mode, CPU). Tests must not modify its weights."""
    from worldmodel.model import load

    return load(tiny_checkpoint, device="cpu")
