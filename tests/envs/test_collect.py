"""Collection: file contents, replay, the revisit policy, resuming a killed run, refusing mixed settings."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from envs.collect import CollectConfig, collect, main, make_env
from envs.episodes import OFFICIAL_KEYS, EpisodeStore, load_episode
from envs.policies import cell_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = "longdream/MemoryMaze-9x9-ExtraObs-v0"


def _cells(data, frames):
    return [cell_of(data["agent_pos"][t], data["maze_layout"][t]) for t in frames]


def test_collect_two_episodes_reload_and_replay(tmp_path, capsys):
    """Two short episodes hold the official keys/shapes/dtypes; replaying the actions gives the same run."""
    out = tmp_path / "mm9"
    cfg = CollectConfig(env=ENV, episodes=2, steps=30, out=str(out), workers=1, seed=3)
    summary = collect(cfg, progress=False)
    assert summary["collected"] == 2 and summary["steps"] == 60
    store = EpisodeStore(out)
    assert [p.name for p in store.paths] == ["ep_00000.npz", "ep_00001.npz"] and store.lengths == [31, 31]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("env", "seed", "policy", "steps")} == {
        "env": ENV, "seed": 3, "policy": "explore", "steps": 30}
    assert manifest["versions"]["memory-maze"] == "1.0.3"

    shapes = {"image": ((31, 64, 64, 3), np.uint8), "action": ((31, 6), np.float32),
              "reward": ((31,), np.float32), "maze_layout": ((31, 9, 9), np.uint8),
              "agent_pos": ((31, 2), np.float64),
              "agent_dir": ((31, 2), np.float64), "targets_pos": ((31, 3, 2), np.float64),
              "targets_vec": ((31, 3, 2), np.float64), "target_pos": ((31, 2), np.float64),
              "target_vec": ((31, 2), np.float64), "target_color": ((31, 3), np.float64)}
    episodes = [load_episode(p) for p in store.paths]
    for data in episodes:
        assert set(data) == set(OFFICIAL_KEYS)
        assert {k: (v.shape, v.dtype) for k, v in data.items()} == shapes
        assert not data["action"][0].any() and data["reward"][0] == 0  # nothing led into the first frame
        assert np.all(data["action"][1:].sum(1) == 1)
        assert np.all(data["maze_layout"] == data["maze_layout"][0])
    assert not np.array_equal(episodes[0]["maze_layout"][0], episodes[1]["maze_layout"][0])  # seeds 3 and 4

    # replay episode 1 (env seed 3 + 1) with its recorded actions: same positions and frames
    data = episodes[1]
    env = make_env(ENV)
    obs, info = env.reset(seed=4)
    np.testing.assert_array_equal(obs["image"], data["image"][0])
    for t in range(1, 31):
        obs, reward, _, _, info = env.step(int(data["action"][t].argmax()))
        np.testing.assert_array_equal(obs["agent_pos"], data["agent_pos"][t])
        np.testing.assert_array_equal(obs["image"], data["image"][t])
        assert reward == data["reward"][t]
    env.close()
    capsys.readouterr()

    # the same folder refuses different settings, and bad options are named
    assert main(["--env", ENV, "--episodes", "2", "--steps", "30", "--out", str(out), "--seed", "4"]) == 2
    assert "holds a different collection (seed: folder has 3, command has 4)" in capsys.readouterr().err
    assert main(["--env", ENV, "--steps", "5000", "--out", str(tmp_path / "x")]) == 2
    assert "--steps 5000: expected 1..1000" in capsys.readouterr().err
    assert main(["--env", "longdream/MemoryMaze-8x8-v0", "--out", str(tmp_path / "y")]) == 2
    assert "longdream/MemoryMaze-9x9-v0" in capsys.readouterr().err


def test_revisit_episode_retraces_outward_cells(tmp_path):
    """A revisit episode's return half passes back through the outward cells and ends where it started."""
    out = tmp_path / "rv"
    collect(CollectConfig(env=ENV, episodes=1, steps=90, out=str(out), seed=11, policy="revisit",
                          revisit_steps=30), progress=False)
    data = load_episode(out / "ep_00000.npz")
    phase = data["phase"]
    back = np.flatnonzero(phase == 1)
    assert back[0] == 31  # frames 0..30 are outward, the action into frame 31 starts the return
    end = back[0] + int(np.argmax(phase[back[0]:] == 0)) if (phase[back[0]:] == 0).any() else len(phase)
    assert end < len(phase), "the return did not reach the start cell within the episode"
    outward, returning = _cells(data, range(0, back[0])), _cells(data, range(back[0], end))
    assert set(returning) <= set(outward)
    assert returning[-1] == outward[0]
    assert len(set(outward)) >= 3  # it went somewhere

    def distinct(seq):
        return [c for i, c in enumerate(seq) if i == 0 or c != seq[i - 1]]

    assert distinct(returning)[-3:] == distinct(outward)[:3][::-1]  # the last cells retrace the first ones


def test_killed_collection_resumes_without_duplicates(tmp_path):
    """A killed collection leaves no partial file under a final name; re-running does only what is missing."""
    out = tmp_path / "kill"
    cmd = [sys.executable, "-m", "envs.collect", "--env", ENV, "--episodes", "3", "--steps", "20", "--out",
           str(out), "--workers", "1", "--seed", "0", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (out / "ep_00000.npz").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(out.glob("ep_*.npz"))
    assert finished, "the collection produced no episode before the deadline"
    for p in finished:  # every final-named file is complete
        load_episode(p)
    before = {p.name: p.stat().st_mtime_ns for p in finished}
    if len(finished) < 3:  # simulate a temp file the kill left behind (of a dead pid)
        (out / f".ep_{len(finished):05d}.npz.999999999.tmp").write_bytes(b"partial")

    summary = collect(CollectConfig(env=ENV, episodes=3, steps=20, out=str(out), workers=1, seed=0),
                      progress=False)
    assert summary["skipped"] == len(before) and summary["collected"] == 3 - len(before)
    assert sorted(p.name for p in out.iterdir()) == ["ep_00000.npz", "ep_00001.npz", "ep_00002.npz",
                                                     "manifest.json"]
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before  # finished episodes were not redone
    assert EpisodeStore(out).lengths == [21, 21, 21]


@pytest.mark.slow
def test_workers_do_not_change_the_data(tmp_path):
    """Episode i is the same whether collected by 1 or 2 worker processes."""
    a, b = tmp_path / "a", tmp_path / "b"
    collect(CollectConfig(env=ENV, episodes=2, steps=25, out=str(a), workers=1, seed=5), progress=False)
    collect(CollectConfig(env=ENV, episodes=2, steps=25, out=str(b), workers=2, seed=5), progress=False)
    for name in ("ep_00000.npz", "ep_00001.npz"):
        da, db = load_episode(a / name), load_episode(b / name)
        for k in da:
            np.testing.assert_array_equal(da[k], db[k])
