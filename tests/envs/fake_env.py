"""A fake Memory Maze for collection tests (the GenericTestEnv pattern: injectable reset and step, no MuJoCo)."""

import time

import gymnasium
import numpy as np
from gymnasium import spaces

FAKE_ID = "FakeMaze-v0"  # collect's --env takes "fake_env:FakeMaze-v0" (Gymnasium imports this module first)
SLOW_ID = "FakeMaze-slow-v0"  # the same with 20 ms per step, so a collection stays busy long enough to be killed
STEPS = 60  # the time limit of both ids
SIZE = 5  # maze cells per side
N_TARGETS = 3


def frame_of(t: int, action: int, seed: int) -> np.ndarray:
    """The fake's frame: red = step, green = the action that led into it (x 40), blue = the episode seed."""
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = t % 256, action * 40, seed % 256
    return frame


def state_info(env, t: int) -> dict:
    """Memory Maze's state keys (shapes and dtypes of the 5x5 case), the agent walking along x one cell a step."""
    return {
        "agent_pos": np.array([0.5 + t % SIZE, 0.5]),
        "agent_dir": np.array([1.0, 0.0]),
        "maze_layout": np.ones((SIZE, SIZE), np.uint8),
        "target_color": np.array([1.0, 0.0, 0.0]),
        "target_pos": np.array([2.5, 2.5]),
        "target_vec": np.zeros(2),
        "targets_pos": np.full((N_TARGETS, 2), 2.5),
        "targets_vec": np.zeros((N_TARGETS, 2)),
    }


def default_reset(env, seed=None, options=None):
    """Frame 0 of episode ``seed`` and the start state."""
    env.frame = frame_of(0, 0, env.seed)
    return env.frame.copy(), state_info(env, 0)


def default_step(env, action):
    """One step: the frame shows the action, reward 1 for forward (action 1), never terminates."""
    env.frame = frame_of(env.t, int(action), env.seed)
    return env.frame.copy(), float(action == 1), False, False, state_info(env, env.t)


class FakeMazeEnv(gymnasium.Env):
    """Memory Maze's spaces and info keys with scripted dynamics; ``reset_func``/``step_func`` replace the defaults."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        reset_func=default_reset,
        step_func=default_step,
        step_seconds: float = 0.0,
        fast: bool = True,
        render_mode=None,
    ):
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = spaces.Discrete(6)
        self.reset_func, self.step_func, self.step_seconds = reset_func, step_func, step_seconds
        self.render_mode = render_mode
        self.frame = None
        self.seed = self.t = 0

    def reset(self, *, seed=None, options=None):
        """Start an episode (``seed`` is shown in the frames)."""
        super().reset(seed=seed)
        self.seed, self.t = (seed or 0), 0
        return self.reset_func(self, seed=seed, options=options)

    def step(self, action):
        """Advance one step through ``step_func``."""
        time.sleep(self.step_seconds)
        self.t += 1
        return self.step_func(self, action)

    def render(self):
        """The current frame."""
        return self.frame.copy()


for _id, _seconds in ((FAKE_ID, 0.0), (SLOW_ID, 0.02)):
    if _id not in gymnasium.registry:
        gymnasium.register(
            _id,
            entry_point=FakeMazeEnv,
            kwargs={"step_seconds": _seconds},
            max_episode_steps=STEPS,
            disable_env_checker=True,
        )
