"""Memory Maze as a Gymnasium env: registration, env checker, seeding, the step contract, fast == stock."""

import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from dm_control.locomotion.props.target_sphere import TargetSphere
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import envs
from envs.activation import FastTargetSphere
from envs.memory_maze import STATE_KEYS, MemoryMazeEnv, RenderingError, import_memory_maze_tasks
from envs.policies import Navigator, cell_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOTO_SEED, GOTO_STEPS = 5, 42  # walking to the target from seed 5's start touches it at step 37


def test_all_ids_registered_with_spaces_and_limits():
    """Every size x variant id is registered; make() gives the right spaces and time limit (no build)."""
    assert len(envs.MEMORY_MAZE_IDS) == 24
    limits = {"9x9": 1000, "11x11": 2000, "13x13": 3000, "15x15": 4000}
    for env_id in envs.MEMORY_MAZE_IDS:
        size = env_id.split("-")[1]
        env = gymnasium.make(env_id)
        assert env.spec.max_episode_steps == limits[size] == env.unwrapped.max_episode_steps
        assert env.action_space == spaces.Discrete(6)
        if "ExtraObs" in env_id:
            assert isinstance(env.observation_space, spaces.Dict)
            assert set(env.observation_space) == {"image", *STATE_KEYS}
            n = int(size.split("x")[0])
            assert env.observation_space["maze_layout"].shape == (n, n)
            assert env.observation_space["image"] == spaces.Box(0, 255, (64, 64, 3), np.uint8)
        else:
            assert env.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
        env.close()


def test_check_env_passes():
    """gymnasium's check_env passes on the standard 9x9 env."""
    env = gymnasium.make("longdream/MemoryMaze-9x9-v0")
    check_env(env.unwrapped)
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id",
    [
        "longdream/MemoryMaze-9x9-ExtraObs-v0",
        "longdream/MemoryMaze-9x9-Vis-v0",
        "longdream/MemoryMaze-9x9-Top-v0",
        "longdream/MemoryMaze-11x11-v0",
    ],
)
def test_check_env_passes_variants(env_id):
    """gymnasium's check_env passes on the ExtraObs (Dict), Vis, Top and 11x11 variants."""
    env = gymnasium.make(env_id)
    check_env(env.unwrapped)
    env.close()


def _seeded_run(env, seed, actions=(1, 1, 2, 1, 5)):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        out.append(env.step(a)[0])
    return {k: np.stack([o[k] for o in out]) for k in out[0]}


def test_same_seed_same_layout_and_first_frame():
    """reset(seed) reproduces layout, frames and targets, and equals the official task with that seed."""
    env = MemoryMazeEnv(extra_obs=True)
    run_a = _seeded_run(env, 7)  # first reset: builds the task
    run_c = _seeded_run(env, 8)  # later seeded resets reseed the built task in place
    run_b = _seeded_run(env, 7)
    for k in run_a:
        np.testing.assert_array_equal(run_a[k], run_b[k])
    assert not np.array_equal(run_a["maze_layout"][0], run_c["maze_layout"][0])
    obs_d, _ = env.reset()  # unseeded: the next maze of seed 7's stream, not a repeat
    assert not np.array_equal(run_a["maze_layout"][0], obs_d["maze_layout"])
    env.close()

    official = import_memory_maze_tasks().memory_maze_9x9(seed=8, global_observables=True)
    first = official.reset().observation
    frames = [first["image"]] + [official.step(a).observation["image"] for a in (1, 1, 2, 1, 5)]
    np.testing.assert_array_equal(np.stack(frames), run_c["image"])
    np.testing.assert_array_equal(first["maze_layout"], run_c["maze_layout"][0])
    np.testing.assert_array_equal(first["targets_pos"], run_c["targets_pos"][0])
    official.close()


def test_seeded_reset_does_not_depend_on_the_episode_before():
    """Known answer (a regression: gymnasium's check_env failed now and then): after the episode of the task built
    with seed 36, one of its targets is left "activated", which shifted the next episode's draws, so reset(seed=123)
    spawned the walker elsewhere than the task built with seed 123 does. Now both give the official first frame."""
    env = MemoryMazeEnv()
    env._build(36)  # as check_env's first, unseeded reset does with a random seed
    env.reset()
    assert any(t.activated for t in env.task._targets)  # the state that used to leak into the next episode
    after_36, _ = env.reset(seed=123)
    env.close()
    official = import_memory_maze_tasks().memory_maze_9x9(seed=123, global_observables=True)
    np.testing.assert_array_equal(after_36, official.reset().observation["image"])
    official.close()


def _innermost(dm_env):
    """The composer Environment under memory_maze's wrappers (which forward attribute reads)."""
    while "_time_limit" not in vars(dm_env):
        dm_env = dm_env.env
    return dm_env


def test_step_contract_and_truncation():
    """Obs/reward/flags/info follow the contract; truncation at the time limit; bad actions are named."""
    env = MemoryMazeEnv()
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs) and set(info) == {*STATE_KEYS, "step"}
    np.testing.assert_array_equal(env.render(), obs)
    for t in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(np.int64(t))
        assert env.observation_space.contains(obs) and isinstance(reward, float)
        assert terminated is False and truncated is False and info["step"] == t
    with pytest.raises(ValueError, match=r"action=6: expected an integer in \[0, 6\)"):
        env.step(6)
    with pytest.raises(ValueError, match=r"action=0.5"):
        env.step(0.5)
    # shorten the task's clock to 6 steps: the adapter must report truncation exactly then
    _innermost(env._dm)._time_limit = 6 * 0.25 - 1e-3
    for t in range(4, 7):
        obs, reward, terminated, truncated, info = env.step(0)
        assert terminated is False and truncated is (t == 6)
    with pytest.raises(RuntimeError, match="truncated; call reset"):
        env.step(0)
    env.close()


def _goto_target_episode(fast: bool, seed: int, steps: int):
    """Walk to the current target for ``steps`` steps; returns frames, rewards, positions, target classes."""
    env = MemoryMazeEnv(fast=fast)
    obs, info = env.reset(seed=seed)
    classes = {type(t) for t in env.task._targets}
    nav, rng = Navigator(), np.random.default_rng(0)
    frames, rewards, positions = [obs], [], [info["agent_pos"]]
    for _ in range(steps):
        nav.set_goal(cell_of(info["target_pos"], info["maze_layout"]))
        obs, reward, _, _, info = env.step(nav.act(info, rng))
        frames.append(obs)
        rewards.append(reward)
        positions.append(info["agent_pos"])
    env.close()
    return np.stack(frames), np.array(rewards), np.stack(positions), classes


def test_fast_episode_identical_to_stock():
    """An episode that touches targets has identical frames, rewards and positions with fast or stock code."""
    stock = _goto_target_episode(False, seed=GOTO_SEED, steps=GOTO_STEPS)
    fast = _goto_target_episode(True, seed=GOTO_SEED, steps=GOTO_STEPS)
    assert stock[3] == {TargetSphere}
    assert fast[3] == {FastTargetSphere}
    assert stock[1].sum() >= 1  # a target was touched, so activation actually fired
    np.testing.assert_array_equal(fast[0], stock[0])
    np.testing.assert_array_equal(fast[1], stock[1])
    np.testing.assert_array_equal(fast[2], stock[2])


def test_mujoco_gl_default_and_user_value():
    """Importing envs sets MUJOCO_GL=egl when unset and keeps a value the user set."""
    code = "import os, envs; print(os.environ['MUJOCO_GL'])"
    base = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    unset = subprocess.run([sys.executable, "-c", code], env=base, cwd=ROOT, capture_output=True, text=True)
    user = subprocess.run(
        [sys.executable, "-c", code], env={**base, "MUJOCO_GL": "osmesa"}, cwd=ROOT, capture_output=True, text=True
    )
    assert unset.stdout.strip() == "egl" and user.stdout.strip() == "osmesa"


def test_bad_rendering_backend_error_names_backends():
    """An unusable MUJOCO_GL fails with a RenderingError that says which backends to try."""
    code = "import envs, gymnasium; gymnasium.make('longdream/MemoryMaze-9x9-v0').reset(seed=0)"
    env = {**os.environ, "MUJOCO_GL": "no-such-backend"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"envs.memory_maze.{RenderingError.__name__}")
    for word in ("MUJOCO_GL='no-such-backend'", "MUJOCO_GL=egl", "MUJOCO_GL=osmesa", "MUJOCO_GL=glfw"):
        assert word in last


def test_import_prints_nothing():
    """Importing envs and the Memory Maze env, and building one, prints nothing (no old-gym deprecation banner)."""
    code = (
        "import envs, envs.memory_maze, gymnasium\nenv = gymnasium.make('longdream/MemoryMaze-9x9-v0')\n"
        "env.reset(seed=0)\nenv.close()\nimport gym  # already imported by memory_maze, quietly\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")
    loud = subprocess.run([sys.executable, "-c", "import gym"], cwd=ROOT, capture_output=True, text=True)
    assert "Gym has been unmaintained" in loud.stderr  # the banner this guards against still exists upstream


def test_import_envs_registers_lazily():
    """`import envs` registers the ids without importing Memory Maze, dm_control, MuJoCo or torch."""
    code = (
        "import sys, envs, gymnasium\nassert 'longdream/MemoryMaze-9x9-v0' in gymnasium.registry\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'envs.memory_maze', 'memory_maze', "
        "'dm_control', 'mujoco', 'torch', 'gym'}), 'envs.memory_maze' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] False"
