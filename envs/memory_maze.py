"""Memory Maze (memory-maze 1.0.3) as a Gymnasium environment.

The ``memory-maze`` package only registers old-``gym`` ids; this module wraps its ``dm_env`` tasks
(``memory_maze.tasks.memory_maze_{9x9,11x11,13x13,15x15}``) in a ``gymnasium.Env``. ``import envs`` registers
``longdream/MemoryMaze-{9x9,11x11,13x13,15x15}[-ExtraObs|-Vis|-Top|-ExtraObs-Vis|-ExtraObs-Top]-v0``.

- Observation: the 64x64x3 uint8 first-person frame (target colour drawn as the border), or for ``ExtraObs``
  a ``Dict`` with ``image`` plus ``agent_pos``, ``agent_dir``, ``maze_layout``, ``target_color``,
  ``target_pos``, ``target_vec``, ``targets_pos``, ``targets_vec`` (the official offline-dataset keys).
  Every variant also returns those state arrays in ``info`` (collection and probes use them).
- Action: ``Discrete(6)``: noop, forward, left (counter-clockwise), right, forward+left, forward+right.
- ``terminated`` is always False; ``truncated`` is True at the task's time limit
  (1000/2000/3000/4000 steps at 4 Hz for 9x9/11x11/13x13/15x15).
- ``reset(seed=s)`` puts the task in the state ``memory_maze.tasks.memory_maze_9x9(seed=s)`` builds it in
  (by reseeding its maze generator and random state in place, or building it the first time), so the same
  seed gives the same layout, targets and first frame, and the same episode as the official task built with
  that seed (tested). ``reset()`` without a seed continues the current task's random streams.
- ``Top`` renders the top-down camera at ``camera_resolution`` (64 by default, so all variants share the
  64x64 frame; the official ``-Top`` gym ids use 256).

Speed: ``fast=True`` (default) applies two exact speed-ups, both bit-identical to stock (see the tests):
the vectorised target activation check of :mod:`envs.activation`, and one reused MuJoCo camera/scene per
physics instead of allocating a fresh ``MjvScene`` for every frame. ``fast=False`` is stock behaviour.

Rendering: ``MUJOCO_GL`` defaults to ``egl`` (headless; works on CPU through Mesa). A value the user set is
respected. It must be set before ``dm_control`` is first imported, which importing this module does (``import
envs`` alone does not: it registers the ids with string entry points); an unusable value raises
:class:`RenderingError` there or on the first frame, naming the backends to try.

The ``memory-maze`` package imports the old ``gym``, which prints a deprecation banner; this module imports it
with that output silenced, so users of ``envs`` never see it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from gymnasium import spaces  # noqa: E402

__all__ = [
    "ACTION_NAMES",
    "SIZES",
    "STATE_KEYS",
    "MemoryMazeConfig",
    "MemoryMazeEnv",
    "RenderingError",
    "ReusedMJCFCamera",
    "apply_camera_reuse",
    "import_memory_maze_tasks",
]

# size -> (maze cells per side, number of targets, episode length in steps at 4 Hz)
SIZES: dict[str, tuple[int, int, int]] = {
    "9x9": (9, 3, 1000),
    "11x11": (11, 4, 2000),
    "13x13": (13, 5, 3000),
    "15x15": (15, 6, 4000),
}
MIN_CAMERA_RESOLUTION = 16  # pixels per side: the smallest frame MemoryMazeConfig accepts (the tasks render 64)
ACTION_NAMES = ("noop", "forward", "left", "right", "forward_left", "forward_right")
# State arrays of the official offline dataset besides image/action/reward.
STATE_KEYS = (
    "agent_pos",
    "agent_dir",
    "maze_layout",
    "target_color",
    "target_pos",
    "target_vec",
    "targets_pos",
    "targets_vec",
)
_GL_HINT = (
    "MUJOCO_GL={value!r}. Try MUJOCO_GL=egl (headless; GPU, or CPU through Mesa's EGL), MUJOCO_GL=osmesa "
    "(software rendering; needs libOSMesa) or MUJOCO_GL=glfw (needs a display). Set it before Python starts "
    "(or before dm_control is first imported)."
)


_GL_WORDS = re.compile(r"opengl|\begl\b|osmesa|glfw|mujoco_gl|glgeterror|mjr_\w+|gl context|pyopengl", re.I)


class RenderingError(RuntimeError):
    """MuJoCo rendering could not start; the message lists the MUJOCO_GL backends to try."""


def _looks_like_gl_error(e: BaseException) -> bool:
    return bool(_GL_WORDS.search(f"{type(e).__name__} {e}"))


@contextlib.contextmanager
def _quiet():
    """Silence warnings and stderr output (the old ``gym`` prints its deprecation banner on import)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


try:
    # dm_control picks its OpenGL backend from MUJOCO_GL when first imported: an unknown value fails here.
    from dm_control.composer.observation.observable.mjcf import MJCFCamera
    from dm_control.mujoco.engine import Camera

    from envs.activation import apply_fast_activation

    with _quiet():  # memory_maze/__init__ imports the old gym
        from memory_maze import tasks as _tasks
        from memory_maze.maze import TextMazeVaryingWalls
except (RuntimeError, ImportError, AttributeError) as _error:
    if not _looks_like_gl_error(_error):
        raise
    raise RenderingError(
        f"could not load MuJoCo rendering ({type(_error).__name__}: {_error}) with "
        + _GL_HINT.format(value=os.environ.get("MUJOCO_GL"))
    ) from _error

# dm_control warns "Cannot set velocity on Entity with no free joint" on every reset.
absl_logging.set_verbosity(absl_logging.ERROR)


@dataclass(frozen=True)
class MemoryMazeConfig:
    """Which Memory Maze task to build. ``fast`` enables the exact speed-ups (activation check, camera)."""

    size: str = "9x9"  # 9x9 | 11x11 | 13x13 | 15x15
    extra_obs: bool = False  # Dict observation with the global state keys (official "ExtraObs")
    good_visibility: bool = False  # official "Vis": lower walls, targets raised above them
    top_camera: bool = False  # official "Top": top-down camera instead of first-person
    camera_resolution: int = 64
    fast: bool = True

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"MemoryMazeConfig.size={self.size!r}: expected one of {sorted(SIZES)}")
        if int(self.camera_resolution) < MIN_CAMERA_RESOLUTION:
            raise ValueError(
                f"MemoryMazeConfig.camera_resolution={self.camera_resolution!r}: expected >= {MIN_CAMERA_RESOLUTION}"
            )

    @property
    def max_episode_steps(self) -> int:
        """The task's time limit in 4 Hz steps."""
        return SIZES[self.size][2]

    @property
    def n_targets(self) -> int:
        """How many targets the maze holds."""
        return SIZES[self.size][1]


def import_memory_maze_tasks():
    """The ``memory_maze.tasks`` module (the official task factories), imported quietly with this module."""
    return _tasks


# --- exact speed-up 2: reuse one camera (and its MjvScene) per physics ------------------------------------
class ReusedMJCFCamera(MJCFCamera):
    """dm_control's ``MJCFCamera`` observable, rendering through one persistent Camera per physics.

    Stock ``MJCFCamera`` calls ``physics.render``: a new Camera + MjvScene for every frame. composer builds
    observation callables once per compiled physics, so holding one Camera in the closure renders the same
    pixels (``mjv_updateScene`` rewrites the scene from ``physics.data``) without the allocation. The buffer is
    copied because the Camera reuses it.
    """

    def _callable(self, physics):
        camera = Camera(physics, height=self._height, width=self._width, camera_id=self._mjcf_element.full_identifier)

        def get_observation():
            pixels = camera.render(
                depth=self._depth,
                segmentation=self._segmentation,
                scene_option=self._scene_option,
                render_flag_overrides=self._render_flag_overrides,
            )
            return np.atleast_3d(pixels).copy()

        return get_observation


def apply_camera_reuse(task) -> int:
    """Swap each stock ``MJCFCamera`` observable of a composer ``task`` for the reusing one; returns count."""
    changed = 0
    for observable in task.observables.values():
        if type(observable) is MJCFCamera:
            observable.__class__ = ReusedMJCFCamera
            changed += 1
    return changed


def _box(shape, low=-np.inf, high=np.inf, dtype=np.float64) -> spaces.Box:
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


class MemoryMazeEnv(gym.Env):
    """Gymnasium adapter over a ``memory_maze.tasks`` dm_env task (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, config: MemoryMazeConfig | None = None, render_mode: str | None = None, **overrides):
        config = config or MemoryMazeConfig()
        if overrides:
            unknown = set(overrides) - set(asdict(config))
            if unknown:
                raise TypeError(
                    f"MemoryMazeEnv got unknown options {sorted(unknown)}; "
                    f"expected fields of MemoryMazeConfig: {sorted(asdict(config))}"
                )
            config = replace(config, **overrides)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.config = config
        self.render_mode = render_mode
        self.max_episode_steps = config.max_episode_steps

        n, k, res = SIZES[config.size][0], config.n_targets, config.camera_resolution
        image_space = spaces.Box(0, 255, shape=(res, res, 3), dtype=np.uint8)
        self._state_spaces = {
            "agent_pos": _box((2,)),
            "agent_dir": _box((2,)),
            "maze_layout": spaces.Box(0, 1, shape=(n, n), dtype=np.uint8),
            "target_color": _box((3,)),
            "target_pos": _box((2,)),
            "target_vec": _box((2,)),
            "targets_pos": _box((k, 2)),
            "targets_vec": _box((k, 2)),
        }
        if config.extra_obs:
            self.observation_space = spaces.Dict({"image": image_space, **self._state_spaces})
        else:
            self.observation_space = image_space
        self.action_space = spaces.Discrete(len(ACTION_NAMES))

        self._dm = None  # the dm_env task, built on the first reset
        self._built_seed: int | None = None
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._needs_reset = True

    # --- building ---------------------------------------------------------------------------------------
    def _build(self, seed: int):
        factory = getattr(_tasks, f"memory_maze_{self.config.size}")
        if self._dm is not None:
            self._dm.close()
            self._dm = None
        dm = factory(
            seed=int(seed),
            global_observables=True,  # always: collection/probes read the state from `info`
            image_only_obs=False,
            good_visibility=self.config.good_visibility,
            top_camera=self.config.top_camera,
            camera_resolution=self.config.camera_resolution,
        )
        if self.config.fast:
            apply_fast_activation(dm.task)
            apply_camera_reuse(dm.task)
        self._dm = dm
        self._built_seed = int(seed)

    def _reseed(self, seed: int) -> bool:
        """Make the built task behave exactly as if built with ``seed``, without rebuilding it (~1 s saved).

        ``tasks._memory_maze(seed=s)`` draws one number from ``RandomState(s)`` to seed the labmaze
        generator (which generates one maze at construction) and hands the same ``RandomState`` to the
        composer Environment; nothing else consumes it before the first reset. So: a fresh
        ``RandomState(s)``, one draw, a fresh labmaze generator with that seed and the arena's parameters.
        Every episode's MJCF (walls, targets, textures) is regenerated on reset from those two streams.
        Returns False (the caller rebuilds) if the task does not have the expected structure.
        """
        if self._dm is None:
            return False
        try:
            composer_env = self._dm
            while "_random_state" not in vars(composer_env):
                composer_env = composer_env.env
            arena = self._dm.task._maze_arena
            old = arena._maze
            if type(old) is not TextMazeVaryingWalls:
                return False
            random_state = np.random.RandomState(int(seed))
            maze = TextMazeVaryingWalls(
                height=old._height,
                width=old._width,
                max_rooms=old._max_rooms,
                room_min_size=old._room_min_size,
                room_max_size=old._room_max_size,
                max_variations=old._max_variations,
                spawns_per_room=old._spawns_per_room,
                objects_per_room=old._objects_per_room,
                simplify=True,
                random_seed=random_state.randint(2147483648),  # 2**31: the very draw memory_maze.tasks makes
            )
        except AttributeError:
            return False
        arena._maze = maze
        composer_env._random_state = random_state
        # A target touched in the last episode stays "activated" until its next reset, and the new episode's first
        # draws (MemoryMazeTask._pick_new_target) skip activated targets: without this, reset(seed=s) after such an
        # episode would spawn the walker elsewhere than the task freshly built with seed s does (found by
        # gymnasium's check_env, whose first reset builds from a random seed).
        for target in getattr(self._dm.task, "_targets", ()):
            target.reset(self._dm.physics)
        self._built_seed = int(seed)
        return True

    @property
    def task(self):
        """The underlying dm_control composer task (after the first reset)."""
        if self._dm is None:
            raise RuntimeError("MemoryMazeEnv: call reset() before accessing the task")
        return self._dm.task

    @property
    def physics(self):
        """The dm_control physics of the task (after the first reset)."""
        if self._dm is None:
            raise RuntimeError("MemoryMazeEnv: call reset() before accessing the physics")
        return self._dm.physics

    # --- gymnasium API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``seed`` gives the episode of the official task built with that seed."""
        super().reset(seed=seed)
        if seed is not None:
            if not self._reseed(seed):
                self._build(seed)
        elif self._dm is None:
            self._build(int(self.np_random.integers(2**31 - 1)))  # any seed RandomState and labmaze accept
        try:
            ts = self._dm.reset()  # renders the first frame
        except Exception as e:
            if _looks_like_gl_error(e):
                raise RenderingError(
                    f"MuJoCo rendering failed on the first frame ({type(e).__name__}: {e}) with "
                    + _GL_HINT.format(value=os.environ.get("MUJOCO_GL"))
                ) from e
            raise
        self._steps = 0
        self._needs_reset = False
        obs, info = self._convert(ts.observation)
        return obs, info

    def step(self, action):
        """Apply one action (an integer in [0, 6)) for one 4 Hz control step."""
        if self._needs_reset:
            raise RuntimeError(
                "MemoryMazeEnv.step() called before reset() or after the episode was truncated; call reset() first"
            )
        a = _as_action(action)
        ts = self._dm.step(a)
        self._steps += 1
        truncated = bool(ts.last())
        if truncated:
            self._needs_reset = True
        obs, info = self._convert(ts.observation)
        return obs, float(ts.reward), False, truncated, info

    def render(self):
        """The current frame, uint8 (H, W, 3)."""
        if self._frame is None:
            raise RuntimeError("MemoryMazeEnv.render() called before reset()")
        return self._frame.copy()

    def close(self):
        """Free the dm_control task (a later reset builds it again)."""
        if self._dm is not None:
            self._dm.close()
            self._dm = None
        self._frame = None
        self._needs_reset = True

    # --- helpers ----------------------------------------------------------------------------------------
    def _convert(self, dm_obs: dict):
        image = np.ascontiguousarray(dm_obs["image"], dtype=np.uint8)  # (H,W,3)
        self._frame = image
        state = {key: np.array(dm_obs[key], dtype=self._state_spaces[key].dtype) for key in STATE_KEYS}
        info = {key: value.copy() for key, value in state.items()}
        info["step"] = self._steps
        if self.config.extra_obs:
            return {"image": image.copy(), **state}, info
        return image.copy(), info


def _as_action(action) -> int:
    arr = np.asarray(action)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action={action!r}: expected an integer in [0, {len(ACTION_NAMES)})")
    a = int(arr)
    if not 0 <= a < len(ACTION_NAMES):
        raise ValueError(f"action={a}: expected an integer in [0, {len(ACTION_NAMES)}) ({', '.join(ACTION_NAMES)})")
    return a
