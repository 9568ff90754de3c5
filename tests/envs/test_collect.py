"""Collection: file contents, replay, the revisit policy, resuming, checks before writing, locks, workers dying."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_env import FAKE_ID, SLOW_ID, FakeMazeEnv, default_step, frame_of
from permissions import read_only_folder, run_unprivileged

from envs.collect import CollectConfig, collect, collect_episode, main, make_env
from envs.episodes import OFFICIAL_KEYS, EpisodeStore, load_episode
from envs.fileio import LOCK_FILE
from envs.policies import RandomPolicy, cell_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = "longdream/MemoryMaze-9x9-ExtraObs-v0"
FAKE = f"fake_env:{FAKE_ID}"  # Gymnasium's module:id form: a worker process imports tests/envs/fake_env.py too
HERE = os.path.dirname(os.path.abspath(__file__))
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)}


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
        "env": ENV,
        "seed": 3,
        "policy": "explore",
        "steps": 30,
    }
    assert manifest["versions"]["memory-maze"] == "1.0.3"

    shapes = {
        "image": ((31, 64, 64, 3), np.uint8),
        "action": ((31, 6), np.float32),
        "reward": ((31,), np.float32),
        "maze_layout": ((31, 9, 9), np.uint8),
        "agent_pos": ((31, 2), np.float64),
        "agent_dir": ((31, 2), np.float64),
        "targets_pos": ((31, 3, 2), np.float64),
        "targets_vec": ((31, 3, 2), np.float64),
        "target_pos": ((31, 2), np.float64),
        "target_vec": ((31, 2), np.float64),
        "target_color": ((31, 3), np.float64),
    }
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
    collect(
        CollectConfig(env=ENV, episodes=1, steps=90, out=str(out), seed=11, policy="revisit", revisit_steps=30),
        progress=False,
    )
    data = load_episode(out / "ep_00000.npz")
    phase = data["phase"]
    back = np.flatnonzero(phase == 1)
    assert back[0] == 31  # frames 0..30 are outward, the action into frame 31 starts the return
    end = back[0] + int(np.argmax(phase[back[0] :] == 0)) if (phase[back[0] :] == 0).any() else len(phase)
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
    cmd = [
        sys.executable,
        "-m",
        "envs.collect",
        "--env",
        ENV,
        "--episodes",
        "3",
        "--steps",
        "20",
        "--out",
        str(out),
        "--workers",
        "1",
        "--seed",
        "0",
        "--quiet",
    ]
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

    summary = collect(CollectConfig(env=ENV, episodes=3, steps=20, out=str(out), workers=1, seed=0), progress=False)
    assert summary["skipped"] == len(before) and summary["collected"] == 3 - len(before)
    assert sorted(p.name for p in out.iterdir()) == [
        LOCK_FILE,
        "ep_00000.npz",
        "ep_00001.npz",
        "ep_00002.npz",
        "manifest.json",
    ]
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


# ---------------------------------------------------------------------- with the fake env (no MuJoCo)


def test_collect_episode_aligns_actions_rewards_and_frames():
    """action[t] is the action that led into image[t], reward[t] the reward received on entering it; action[0] = 0."""
    env = FakeMazeEnv()
    data = collect_episode(env, RandomPolicy(), seed=7, steps=12)
    actions = data["action"].argmax(1)
    assert not data["action"][0].any() and data["reward"][0] == 0
    assert np.all(data["action"][1:].sum(1) == 1)
    for t in range(13):
        np.testing.assert_array_equal(data["image"][t], frame_of(t, actions[t] if t else 0, 7))
    np.testing.assert_array_equal(data["reward"][1:], (actions[1:] == 1).astype(np.float32))
    np.testing.assert_array_equal(data["agent_pos"][:, 0], 0.5 + np.arange(13) % 5)


def test_collect_episode_ends_at_termination_and_refuses_an_early_truncation_and_an_env_without_state():
    """A terminated episode (a Crafter player dies) ends there, its arrays shorter; a time limit before `steps` and
    an env whose info lacks Memory Maze's state keys fail with clear errors."""

    def ends_at_3(env, action, truncate=False):
        frame, reward, _, _, info = default_step(env, action)
        return frame, reward, env.t >= 3 and not truncate, env.t >= 3 and truncate, info

    data = collect_episode(FakeMazeEnv(step_func=ends_at_3), RandomPolicy(), seed=0, steps=10)
    assert {k: len(v) for k, v in data.items()} == {k: 4 for k in data}  # frames 0..3, all keys alike
    for t in range(4):
        np.testing.assert_array_equal(data["image"][t], frame_of(t, data["action"][t].argmax() if t else 0, 0))
    truncating = FakeMazeEnv(step_func=lambda env, a: ends_at_3(env, a, truncate=True))
    with pytest.raises(RuntimeError, match="episode truncated after 3 of 10 steps"):
        collect_episode(truncating, RandomPolicy(), seed=0, steps=10)

    def no_state(env, seed=None, options=None):
        env.frame = frame_of(0, 0, 0)
        return env.frame.copy(), {"agent_pos": np.zeros(2)}

    with pytest.raises(ValueError, match="info lacks agent_dir, maze_layout"):
        collect_episode(FakeMazeEnv(reset_func=no_state), RandomPolicy(), seed=0, steps=10)


def test_a_refused_command_writes_nothing_and_the_corrected_one_is_accepted(tmp_path, capsys):
    """Bad arguments fail with one line and exit 2 before the folder or its manifest is touched; the fix then runs."""
    out = tmp_path / "new"
    base = ["--env", FAKE, "--episodes", "2", "--steps", "5", "--policy", "explore", "--quiet"]
    for bad, message in (
        (["--noise", "-0.5"], "--noise -0.5: expected a probability in [0, 1]"),
        (["--seed", "-1"], "--seed -1: expected >= 0"),
        (["--seed", str(2**32 - 1)], "the episode seeds SEED..SEED+1 must stay <= 4294967295"),
        (["--episodes", "0"], "--episodes 0: expected >= 1"),
        (["--workers", "0"], "--workers 0: expected >= 1"),
        (["--steps", "61"], "--steps 61: expected 1..60"),
        (["--revisit-steps", "0"], "--revisit-steps 0: expected 1..5"),
        (["--env", "CartPole-v1"], "'CartPole-v1': expected a real env id"),
        (["--policy", "random", "--no-fast", "--env", "longdream/Crafter-v0"], "--no-fast: longdream/Crafter-v0 has"),
        (["--env", "longdream/Crafter-v0"], "--policy explore: reads info keys agent_pos, agent_dir, maze_layout"),
    ):
        assert main([*base, "--out", str(out), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err == f"error: {message}\n" or message in err and err.count("\n") == 1, (bad, err)
        assert not out.exists()
    assert main([*base, "--out", str(out)]) == 0
    manifest = (out / "manifest.json").read_text()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    # a refused command on an existing collection leaves its manifest alone
    assert main([*base, "--out", str(out), "--noise", "2"]) == 2
    assert (out / "manifest.json").read_text() == manifest and (out / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads(manifest)["noise"] == 0.1 and EpisodeStore(out).lengths == [6, 6]


def test_out_that_is_a_file_or_unwritable_is_a_one_line_error(tmp_path):
    """--out naming a file, or a folder the user cannot write, exits 2 with one line on stderr and no traceback."""
    afile = tmp_path / "episodes.npz"
    afile.write_bytes(b"data")
    cmd = [sys.executable, "-m", "envs.collect", "--env", FAKE, "--episodes", "1", "--steps", "5", "--quiet"]
    proc = subprocess.run([*cmd, "--out", str(afile)], cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (
        2,
        f"error: --out {afile}: is a file, not a folder; choose a folder for the episodes\n",
    )
    assert afile.read_bytes() == b"data"
    with read_only_folder() as ro:
        for out in (ro, ro / "sub"):  # an existing read-only folder, and a new folder inside one
            proc = run_unprivileged([*cmd, "--out", str(out)], env=SUBPROCESS_ENV)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr == f"error: --out {out}: cannot write there (Permission denied)\n"
        assert list(ro.iterdir()) == []


def test_a_second_collection_into_a_busy_folder_is_refused_naming_the_first(tmp_path, capsys):
    """While a collection holds the folder, another one exits 2 naming its pid; afterwards the folder is free."""
    out = tmp_path / "busy"
    hold = (
        "import sys, time\nfrom envs.fileio import RunLock\nRunLock(sys.argv[1], what='collection').acquire()\n"
        "print('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    args = ["--env", FAKE, "--episodes", "1", "--steps", "5", "--policy", "random", "--out", str(out), "--quiet"]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"collection pid {holder.pid}" in err and err.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0


def test_stale_temp_files_are_removed_and_other_files_kept(tmp_path):
    """A collection removes the temp files killed runs left in its folder, and nothing else."""
    out = tmp_path / "tmp"
    out.mkdir()
    (out / ".ep_00000.npz.3f9a2c81d0e4.tmp").write_bytes(b"partial")
    (out / "notes.tmp").write_text("mine")
    collect(CollectConfig(env=FAKE, episodes=1, steps=5, out=str(out), policy="random"), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "ep_00000.npz", "manifest.json", "notes.tmp"]


def test_help_shows_each_option_once_with_its_doc(monkeypatch, capsys):
    """--help (generated by tyro from the documented config) lists every option once, its doc and default once."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag, doc in (
        ("--env", "Gymnasium id"),
        ("--episodes", "Number of episodes"),
        ("--steps", "Actions per"),
        ("--out", "Output folder"),
        ("--workers", "Worker processes"),
        ("--seed", "Episode i uses"),
        ("--policy", "explore: BFS"),
        ("--noise", "Probability of a random action"),
        ("--revisit-steps", "outward steps"),
        ("--no-fast", "exact speed-ups"),
        ("--quiet", "No progress bar"),
    ):
        assert len(re.findall(rf"{flag}\b", text)) >= 1 and text.count(doc) == 1, (flag, doc)
    assert not re.search(r"\(default: [^)]*\)[^\n]*\(default:", text)


def test_flags_of_the_makefile_and_readme_parse(tmp_path, monkeypatch):
    """The documented flag spellings (--no-fast, --quiet, --revisit-steps, ...) reach the collection settings."""
    seen = {}
    monkeypatch.setattr(
        "envs.collect.collect",
        lambda cfg, progress: (
            seen.update(cfg=cfg, progress=progress)
            or {"out": cfg.out, "collected": 0, "skipped": 0, "steps": 0, "seconds": 0.0}
        ),
    )
    assert (
        main(
            [
                "--env",
                ENV,
                "--episodes",
                "3",
                "--steps",
                "40",
                "--out",
                str(tmp_path),
                "--workers",
                "2",
                "--seed",
                "9",
                "--policy",
                "revisit",
                "--noise",
                "0.2",
                "--revisit-steps",
                "10",
                "--no-fast",
                "--quiet",
            ]
        )
        == 0
    )
    assert seen == {
        "cfg": CollectConfig(
            env=ENV,
            episodes=3,
            steps=40,
            out=str(tmp_path),
            workers=2,
            seed=9,
            policy="revisit",
            noise=0.2,
            revisit_steps=10,
            fast=False,
        ),
        "progress": False,
    }


# ---------------------------------------------------------------------- workers die with the collection


def _children(pid: int) -> list[int]:
    """Pids of the multiprocessing workers (not the resource tracker) whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"multiprocessing.spawn" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes, as in some containers, counts as dead)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_workers_die_with_the_collection(tmp_path, how):
    """kill -9, SIGTERM or a terminal's Ctrl-C to a 2-worker collection: the workers are gone within seconds; the
    last two stop with one line (no traceback) and exit codes 143 / 130; finished episodes are whole."""
    out = tmp_path / "eps"
    cmd = [
        sys.executable,
        "-m",
        "envs.collect",
        "--env",
        f"fake_env:{SLOW_ID}",
        "--episodes",
        "500",
        "--steps",
        "50",
        "--out",
        str(out),
        "--workers",
        "2",
        "--policy",
        "random",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # SIGINT as a terminal has it: a shell without job control starts background jobs with SIGINT ignored,
        # and an ignored signal stays ignored across exec (Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and proc.poll() is None:
            workers = _children(proc.pid)
            if len(workers) == 2 and any(out.glob("ep_*.npz")):
                break
            time.sleep(0.1)
        assert len(workers) == 2 and proc.poll() is None, f"no 2 busy workers: {proc.communicate()}"
        if how == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        else:
            os.kill(proc.pid, getattr(signal, how))
        _, err = proc.communicate(timeout=60)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], f"workers outlived the collection after {how}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == {"SIGTERM": 143, "SIGINT": 130}[how]
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err and len(lines) == 1, err
        assert lines[0].startswith(("stopped (SIGTERM)", "interrupted (SIGINT)")) and "resume" in lines[0]
    for path in out.glob("ep_*.npz"):
        load_episode(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the worker process")
def test_watchdog_ends_a_worker_whose_parent_is_gone_without_prctl(tmp_path):
    """Where the kernel cannot kill a worker with its parent (no prctl), the watchdog thread ends it."""
    worker = (
        "import sys, time\nimport envs.collect as c\nc._set_parent_death_signal = lambda: None\n"
        "c._init_worker(int(sys.argv[1]))\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    parent = (
        "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', sys.argv[1], str(__import__('os')"
        ".getpid())], stdout=subprocess.PIPE, text=True)\nassert p.stdout.readline().strip() == 'ready'\n"
        "print(p.pid, flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", parent, worker], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip())
    deadline = time.time() + 5
    while time.time() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


# ---------------------------------------------------------------------- shards


def test_shards_partition_the_episodes_and_merge_into_the_unsharded_collection(tmp_path, capsys):
    """--num-shards 3: each shard collects its own episodes (seed S+i, file ep_{i}), disjoint and covering all;
    merged with --merge they equal the unsharded collection file for file, and so does its manifest's settings."""
    base = ["--env", FAKE, "--episodes", "7", "--steps", "5", "--policy", "random", "--seed", "11", "--quiet"]
    whole, merged = tmp_path / "whole", tmp_path / "merged"
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    assert main([*base, "--out", str(whole)]) == 0
    for i, folder in enumerate(shards):
        assert main([*base, "--out", str(folder), "--num-shards", "3", "--shard-index", str(i)]) == 0
    names = [sorted(p.name for p in folder.glob("*.npz")) for folder in shards]
    assert names == [
        ["ep_00000.npz", "ep_00003.npz", "ep_00006.npz"],
        ["ep_00001.npz", "ep_00004.npz"],
        ["ep_00002.npz", "ep_00005.npz"],
    ]
    shard_manifest = json.loads((shards[1] / "manifest.json").read_text())
    assert (shard_manifest["num_shards"], shard_manifest["shard_indices"], shard_manifest["episodes"]) == (3, [1], 7)
    capsys.readouterr()

    assert main(["--merge", str(shards[0]), str(shards[1]), "--out", str(merged)]) == 0
    assert "5 episode files copied, 0 already there; 2 of 7 missing: [2, 5]" in capsys.readouterr().out
    assert main(["--merge", *map(str, shards), "--out", str(merged)]) == 0
    assert "2 episode files copied, 5 already there; complete" in capsys.readouterr().out
    assert sorted(p.name for p in merged.glob("*.npz")) == sorted(p.name for p in whole.glob("*.npz"))
    for path in whole.glob("*.npz"):
        a, b = load_episode(path), load_episode(merged / path.name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), path.name
    a, b = (json.loads((f / "manifest.json").read_text()) for f in (whole, merged))
    assert {k: v for k, v in a.items() if k not in ("created", "versions")} == {
        k: v for k, v in b.items() if k not in ("created", "versions")
    }
    assert main([*base, "--out", str(merged)]) == 0  # the unsharded command sees a finished collection
    assert "collected 0, skipped 7 already done" in capsys.readouterr().out


def test_bad_shards_and_merges_are_named(tmp_path, capsys):
    """An out-of-range shard, a folder of another split, and shards of different collections are refused."""
    base = ["--env", FAKE, "--episodes", "4", "--steps", "5", "--policy", "random", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--num-shards", "2", "--shard-index", "2"]) == 2
    assert "--shard-index 2: expected 0..1" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "a"), "--num-shards", "0"]) == 2
    assert "--num-shards 0: expected >= 1" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "a"), "--num-shards", "2", "--shard-index", "0"]) == 0
    assert main([*base, "--out", str(tmp_path / "a"), "--num-shards", "3", "--shard-index", "1"]) == 2
    assert "holds shards of a 2-way split, not of --num-shards 3" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--num-shards", "2", "--shard-index", "1", "--seed", "5"]) == 0
    capsys.readouterr()
    assert main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 2
    assert "hold different collections (they differ in ['seed'])" in capsys.readouterr().err
    assert main(["--merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_an_unreadable_shard_manifest_is_named(tmp_path, capsys):
    """--merge: a shard whose manifest.json is not JSON, not a JSON object or not a collection's manifest is a
    one-line error naming the file."""
    base = ["--env", FAKE, "--episodes", "2", "--steps", "5", "--policy", "random", "--quiet"]
    shard = tmp_path / "shard0"
    assert main([*base, "--out", str(shard), "--num-shards", "2", "--shard-index", "0"]) == 0
    manifest = shard / "manifest.json"
    cases = (
        ("{broken", "unreadable manifest"),
        ("[1, 2]", "holds a JSON list; expected an object"),
        ('{"format": "an envs.convert folder"}', "lacks ['env', 'seed',"),
    )
    for text, problem in cases:
        manifest.write_text(text)
        capsys.readouterr()
        assert main(["--merge", str(shard), "--out", str(tmp_path / "merged")]) == 2
        assert f"{manifest}: {problem}" in capsys.readouterr().err
