"""MineRL (0.4.x) as a Gymnasium environment with TECO's compact action set, and the MineRL action mapping rules.

MineRL is an optional extra (``pip install longdream[minerl]``, i.e. ``minerl==0.4.4``): it builds Minecraft
when installed, which needs Java 8 (JDK 1.8) and network access (gradle downloads). Without it,
:class:`MineRLEnv` raises :class:`MineRLNotInstalledError` saying so; the dataset converters
(``python -m envs.convert``) need neither.

MineRL's own interface (old gym API): ``reset() -> obs``, ``step(action) -> obs, reward, done, info``; ``obs`` is a
dict whose ``pov`` is the (H, W, 3) uint8 first-person frame (64x64 in the official envs); ``action`` is a dict
with 0/1 keys (``forward``, ``back``, ``left``, ``right``, ``jump``, ``sneak``, ``sprint``, ``attack``, ...),
``camera`` = [pitch, yaw] in degrees (a positive yaw turns right) and enum keys such as ``place``;
``action_space.noop()`` gives the all-off dict. :class:`MineRLEnv` wraps such an env (the real one, or any object
speaking that interface passed as ``make_env``) as a ``gymnasium.Env``:

- Observation: the ``pov`` frame resized to ``size`` x ``size`` (default 64), uint8 (:func:`envs.video.
  resize_frames`). The other observation entries (compass, inventory, ...) are returned in ``info["minerl_obs"]``.
- Action, ``action_mode="discrete"``: ``Discrete(4)``, TECO's compact set :data:`ACTION_NAMES`. Each action starts
  from ``noop()`` and sets (:func:`minerl_action`)::

      0 forward -> forward=1
      1 left    -> camera=[0, -turn_degrees]   (turn left by turn_degrees, default 20 as TECO's collector)
      2 right   -> camera=[0, +turn_degrees]
      3 jump    -> jump=1

- Action, ``action_mode="box"``: ``Box(4,)`` float32 laid out as :data:`BOX_FIELDS` = [forward, jump, camera
  pitch, camera yaw]; forward/jump are pressed when > 0.5, the camera is [pitch, yaw] degrees within
  +-``camera_limit``. The episode converters store each step's raw controls in this same layout as
  ``action_box`` (:func:`box_actions`), so a Box-action model can train on converted MineRL data.
- ``terminated`` is MineRL's ``done``, except that a ``done`` its time limit caused (``info["TimeLimit.truncated"]``)
  is reported as ``truncated``. ``reset(seed=s)`` calls the env's ``seed(s)`` first (MineRL: the world seed).

The reverse mapping, MineRL controls -> compact action (:func:`compact_actions`), is what the dataset converters
use. Per step, the first rule that matches wins:

1. camera yaw <= -``turn_threshold`` degrees -> left; yaw >= +``turn_threshold`` -> right (default 5 degrees);
2. jump pressed -> jump;
3. forward pressed -> forward;
4. otherwise (no-op, back, strafing, attacking, looking up/down, ...) -> ``default`` (forward unless chosen).

Turning first: a turn changes the whole view, a jump bobs it, walking shifts it least. With ``turn_degrees >=
turn_threshold`` the two mappings round-trip: ``compact_actions(minerl_action(a)) == a`` for every compact ``a``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.video import resize_frames

try:  # the optional extra: importing minerl registers its (old gym) env ids
    import minerl
except ImportError:
    minerl = None
old_gym = None
if minerl is not None:  # MineRL 0.4 speaks the old gym, which it installs (imported only then: no banner)
    import gym as old_gym

__all__ = [
    "ACTION_NAMES",
    "BOX_FIELDS",
    "MINERL_INSTALL_HINT",
    "MineRLConfig",
    "MineRLEnv",
    "MineRLNotInstalledError",
    "box_actions",
    "compact_actions",
    "make_minerl_env",
    "minerl_action",
]

ACTION_NAMES = ("forward", "left", "right", "jump")  # TECO's compact action set, Discrete(4)
FORWARD, LEFT, RIGHT, JUMP = range(len(ACTION_NAMES))
BOX_FIELDS = ("forward", "jump", "camera_pitch", "camera_yaw")  # the Box action / the stored action_box layout
MINERL_INSTALL_HINT = (
    "MineRL 0.4.x builds Minecraft when it is installed: it needs Java 8 (JDK 1.8, e.g. apt-get install "
    "openjdk-8-jdk, with JAVA_HOME pointing at it) and network access at install time (gradle downloads), then "
    "`pip install longdream[minerl]` (minerl==0.4.4). MineRL's recorded data needs none of this: convert it with "
    "`python -m envs.convert --format minerl SRC OUT`."
)


class MineRLNotInstalledError(ImportError):
    """The ``minerl`` package is missing; the message says what installing it takes."""


@dataclass(frozen=True)
class MineRLConfig:
    """Which MineRL env to wrap, and how its frames and actions are presented."""

    env_id: str = "MineRLNavigate-v0"
    """MineRL's (old gym) id, e.g. MineRLNavigate-v0, MineRLNavigateDense-v0, MineRLTreechop-v0."""
    action_mode: Literal["discrete", "box"] = "discrete"
    """discrete: Discrete(4) forward/left/right/jump; box: Box(4,) [forward, jump, camera pitch, camera yaw]."""
    size: int = 64
    """Frames are resized to size x size."""
    turn_degrees: float = 20.0
    """Yaw of one discrete left/right step, degrees (TECO's Minecraft collector turns 20)."""
    camera_limit: float = 180.0
    """Box mode: the camera's pitch/yaw per step is clipped to +-camera_limit degrees (MineRL's own limit)."""

    def __post_init__(self):
        if self.action_mode not in ("discrete", "box"):
            raise ValueError(f"MineRLConfig.action_mode={self.action_mode!r}: expected 'discrete' or 'box'")
        if int(self.size) < 1:
            raise ValueError(f"MineRLConfig.size={self.size!r}: expected >= 1")
        if not 0 < float(self.turn_degrees) <= 180:
            raise ValueError(f"MineRLConfig.turn_degrees={self.turn_degrees!r}: expected in (0, 180]")
        if not 0 < float(self.camera_limit) <= 180:
            raise ValueError(f"MineRLConfig.camera_limit={self.camera_limit!r}: expected in (0, 180]")


def make_minerl_env(env_id: str):
    """The real MineRL env ``env_id`` (``gym.make`` of the old gym, after ``import minerl``)."""
    if minerl is None:
        raise MineRLNotInstalledError(
            f"MineRLEnv({env_id!r}) needs the minerl package, which is not installed. " + MINERL_INSTALL_HINT
        )
    return old_gym.make(env_id)


# --- action mapping ---------------------------------------------------------------------------------------
def _copy(action: Mapping[str, Any]) -> dict[str, Any]:
    """A MineRL action dict with its arrays copied (enum values such as place='none' stay plain strings)."""
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in action.items()}


def minerl_action(action: int, noop: Mapping[str, Any], turn_degrees: float = 20.0) -> dict[str, Any]:
    """The MineRL action dict of compact action ``action`` (0 forward, 1 left, 2 right, 3 jump), from ``noop``."""
    a = _as_discrete(action)
    out = _copy(noop)
    if a == FORWARD:
        out["forward"] = 1
    elif a == JUMP:
        out["jump"] = 1
    else:
        out["camera"] = np.array([0.0, -turn_degrees if a == LEFT else turn_degrees], np.float32)
    return out


def _as_discrete(action) -> int:
    arr = np.asarray(action)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer) or not 0 <= int(arr) < len(ACTION_NAMES):
        raise ValueError(
            f"action={action!r}: expected an integer in [0, {len(ACTION_NAMES)}) ({', '.join(ACTION_NAMES)})"
        )
    return int(arr)


def compact_actions(
    forward: np.ndarray,
    jump: np.ndarray,
    yaw: np.ndarray,
    turn_threshold: float = 5.0,
    default: str = "forward",
) -> np.ndarray:
    """Compact action per step (int64, (N,)) from MineRL controls: ``forward``/``jump`` 0/1 and camera ``yaw`` in
    degrees, each (N,). The rule (first match wins): yaw <= -threshold left, yaw >= threshold right, jump, forward,
    else ``default`` (one of :data:`ACTION_NAMES`)."""
    if not turn_threshold > 0:
        raise ValueError(f"turn_threshold={turn_threshold!r}: expected > 0 degrees")
    if default not in ACTION_NAMES:
        raise ValueError(f"default={default!r}: expected one of {', '.join(ACTION_NAMES)}")
    forward, jump, yaw = (np.asarray(x) for x in (forward, jump, yaw))
    out = np.full(yaw.shape, ACTION_NAMES.index(default), np.int64)
    # assigned from the weakest rule to the strongest, so the strongest match is what remains
    out[forward > 0] = FORWARD
    out[jump > 0] = JUMP
    out[yaw >= turn_threshold] = RIGHT
    out[yaw <= -turn_threshold] = LEFT
    return out


def box_actions(forward: np.ndarray, jump: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Raw controls in the :data:`BOX_FIELDS` layout, (N, 4) float32: [forward, jump, pitch, yaw]."""
    camera = np.asarray(camera, np.float32).reshape(-1, 2)
    return np.column_stack([np.asarray(forward, np.float32), np.asarray(jump, np.float32), camera])


# --- the env ----------------------------------------------------------------------------------------------
class MineRLEnv(gym.Env):
    """Gymnasium adapter over a MineRL env (see the module docstring).

    ``make_env(env_id)`` builds the wrapped env (default :func:`make_minerl_env`: the real MineRL); tests pass a fake
    that speaks MineRL's interface. ``overrides`` are fields of :class:`MineRLConfig`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        config: MineRLConfig | None = None,
        render_mode: str | None = None,
        make_env: Callable[[str], Any] | None = None,
        **overrides,
    ):
        config = config or MineRLConfig()
        unknown = set(overrides) - set(asdict(config))
        if unknown:
            raise TypeError(
                f"MineRLEnv got unknown options {sorted(unknown)}; expected fields of MineRLConfig: "
                f"{sorted(asdict(config))}"
            )
        config = replace(config, **overrides)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.config = config
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, shape=(config.size, config.size, 3), dtype=np.uint8)
        if config.action_mode == "discrete":
            self.action_space = spaces.Discrete(len(ACTION_NAMES))
        else:
            lim = float(config.camera_limit)
            self.action_space = spaces.Box(
                low=np.array([0, 0, -lim, -lim], np.float32), high=np.array([1, 1, lim, lim], np.float32)
            )
        self._env = (make_env or make_minerl_env)(config.env_id)
        self._frame: np.ndarray | None = None
        self._needs_reset = True

    @property
    def minerl_env(self):
        """The wrapped MineRL env."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``seed`` is passed to the MineRL env's ``seed()`` first (its world seed)."""
        super().reset(seed=seed)
        if seed is not None and hasattr(self._env, "seed"):
            self._env.seed(int(seed))
        obs = self._env.reset()
        self._needs_reset = False
        return self._convert(obs)

    def step(self, action):
        """Apply one action (compact integer, or the Box vector) as one MineRL step."""
        if self._needs_reset:
            raise RuntimeError("MineRLEnv.step() called before reset() or after the episode ended; call reset() first")
        obs, reward, done, info = self._env.step(self.minerl_action(action))
        truncated = bool(done and info.get("TimeLimit.truncated", False))
        terminated = bool(done) and not truncated
        self._needs_reset = bool(done)
        frame, out_info = self._convert(obs)
        out_info["minerl_info"] = dict(info)
        return frame, float(reward), terminated, truncated, out_info

    def minerl_action(self, action) -> dict[str, Any]:
        """The MineRL action dict this env sends for ``action`` (discrete or Box, per ``config.action_mode``)."""
        noop = _copy(self._env.action_space.noop())
        if self.config.action_mode == "discrete":
            return minerl_action(action, noop, self.config.turn_degrees)
        vec = np.asarray(action, dtype=np.float32)
        if vec.shape != (len(BOX_FIELDS),) or not np.all(np.isfinite(vec)):
            raise ValueError(f"action={action!r}: expected 4 finite numbers {list(BOX_FIELDS)}")
        lim = float(self.config.camera_limit)
        noop["forward"] = int(vec[0] > 0.5)
        noop["jump"] = int(vec[1] > 0.5)
        noop["camera"] = np.clip(vec[2:], -lim, lim).astype(np.float32)
        return noop

    def render(self):
        """The current (resized) frame, uint8 (size, size, 3)."""
        if self._frame is None:
            raise RuntimeError("MineRLEnv.render() called before reset()")
        return self._frame.copy()

    def close(self):
        """Close the MineRL env (this env cannot be used afterwards)."""
        if self._env is not None:
            self._env.close()
        self._frame = None
        self._needs_reset = True

    def _convert(self, obs: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        if "pov" not in obs:
            raise ValueError(f"MineRL observation without 'pov' (keys {sorted(obs)}); expected MineRL's dict obs")
        pov = np.asarray(obs["pov"])
        if pov.dtype != np.uint8 or pov.ndim != 3 or pov.shape[-1] != 3:
            raise ValueError(f"MineRL 'pov' is {pov.dtype} {pov.shape}; expected uint8 (H, W, 3)")
        self._frame = resize_frames(pov, self.config.size)
        return self._frame.copy(), {"minerl_obs": {k: v for k, v in obs.items() if k != "pov"}}
