"""Crafter (the ``crafter`` package, 1.8.3) as a Gymnasium environment: a Minecraft-like world that runs here.

Crafter (Hafner 2021) is an open-world 2-D survival game: a procedurally generated 64x64-cell world of grass,
sand, water, trees, stone, coal, iron, diamonds and lava, with cows, zombies and skeletons, a day/night cycle,
and 22 achievements (collect wood, place a table, make a pickaxe, ... eat a cow, defeat a zombie). It is pure
Python (numpy, imageio, pillow, opensimplex) and speaks the old ``gym`` API; this module wraps it in a
``gymnasium.Env``. ``import envs`` registers:

=============================  ==========================================================================
``longdream/Crafter-v0``       Crafter's own reward (as its ``CrafterReward-v1``): +1 the first time each
                               achievement is unlocked in an episode, +0.1 / -0.1 per health point gained / lost
``longdream/CrafterNoReward-v0``  reward always 0 (as ``CrafterNoReward-v1``; ``info["reward"]`` still holds
                               Crafter's)
=============================  ==========================================================================

- Observation: the 64x64x3 uint8 frame Crafter renders: a top-down 9x7-cell view centred on the player above
  two rows of inventory (health, food, drink, energy, then items).
- Action: ``Discrete(17)``, :data:`ACTION_NAMES` (noop, the four moves, do, sleep, four place_*, six make_*).
- ``terminated`` is True when the player dies (health 0); ``truncated`` at ``length`` steps (10000, Crafter's
  default; also the registered time limit). ``step`` after either raises until ``reset``.
- ``info``: Crafter's own keys (``inventory`` and ``achievements``: dicts of counts; ``player_pos``: the (x, y)
  cell, int; ``discount``: 0 once dead; ``semantic``: the world's (64, 64) material/object ids; ``reward``:
  Crafter's reward, also in the no-reward variant) plus ``step``; ``reset`` returns the same keys.
- Seeding: ``reset(seed=s)`` builds the world Crafter's ``Env(seed=s)`` builds on its first reset (same
  terrain, same creatures, same frames under the same actions: Crafter draws everything from one
  ``RandomState`` per world); ``reset()`` without a seed moves on to the next world of the current seed, as
  Crafter does. The first ``reset()`` without any seed draws one from the env's ``np_random``.
- Determinism, one fix: stock Crafter is not reproducible from its seed alone. Every 10 steps it despawns a
  creature drawn from a ``set`` of objects, whose order follows memory addresses, so two runs of one seed
  under the same actions drift apart (measured: seed 11, the world map differed from step 70, the frames from
  step 156, and the player died at step 162 in one run and 164 in the other). :class:`_OrderedChunksWorld` lists
  each chunk's objects in creation order instead; nothing else changes (the draws from the world's
  ``RandomState`` are the same calls), and the same seed and actions give the same episode (tested).

Collection (``python -m envs.collect --env longdream/Crafter-v0 --policy random_repeat``) stores, besides
``image``, ``action`` and ``reward``, the arrays of :meth:`CrafterEnv.episode_state` per frame: ``player_pos``
(T+1, 2) int32, ``inventory`` (T+1, 16) int32 in :data:`ITEM_NAMES` order and ``achievements`` (T+1, 22) int32
counts in :data:`ACHIEVEMENT_NAMES` order (``envs.episodes.load_episode(path, keys=[...])`` reads them).

Reward and the world model: the model's reward head learns reward *events* (reward > 0), so in a dream of a
``longdream/Crafter-v0`` model a regained health point counts as an event as an unlocked achievement does.

This module reaches private attributes of ``crafter.Env`` (``_seed`` and ``_episode``, what its world seed is
made of; ``_world`` for the fix above; ``_player`` for the reset info); the version is pinned (1.8.3), and a build
without them is refused with a message naming the version.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "ACHIEVEMENT_NAMES",
    "ACTION_NAMES",
    "EPISODE_KEYS",
    "ITEM_NAMES",
    "MOVE_ACTIONS",
    "CrafterConfig",
    "CrafterEnv",
]

_INSTALL_HINT = "Crafter is a dependency of longdream: pip install crafter==1.8.3"

try:
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # crafter/__init__ imports the old gym, which prints a banner
        import crafter
        from crafter import constants as _constants
        from crafter import engine as _engine
except ImportError as _error:  # pragma: no cover - crafter is a main dependency
    raise ImportError(f"envs.crafter needs the crafter package ({_error}); {_INSTALL_HINT}") from _error

ACTION_NAMES: tuple[str, ...] = tuple(_constants.actions)
"""The 17 actions, in Crafter's order: noop, move_left, move_right, move_up, move_down, do, sleep, place_stone,
place_table, place_furnace, place_plant, make_wood_pickaxe, make_stone_pickaxe, make_iron_pickaxe,
make_wood_sword, make_stone_sword, make_iron_sword."""
MOVE_ACTIONS: tuple[int, ...] = tuple(i for i, name in enumerate(ACTION_NAMES) if name.startswith("move_"))
"""The actions that walk (1-4): the ``random_repeat`` collection policy draws one of them half the time."""
ITEM_NAMES: tuple[str, ...] = tuple(_constants.items)
"""The 16 inventory entries (health, food, drink, energy, sapling, wood, ...): the columns of ``inventory``."""
ACHIEVEMENT_NAMES: tuple[str, ...] = tuple(_constants.achievements)
"""The 22 achievements (collect_coal ... wake_up): the columns of ``achievements``."""
EPISODE_KEYS = ("player_pos", "inventory", "achievements")
"""The per-frame arrays collection records (see :meth:`CrafterEnv.episode_state`)."""
MAX_STEPS = 10_000
"""Crafter's default episode length (its ``CrafterReward-v1`` time limit)."""
MIN_SIZE = 9
"""The smallest frame side in pixels: one pixel per cell of the 9-cell view."""
MIN_AREA = 9
"""The smallest world side in cells: the 9-cell view."""


@dataclass(frozen=True)
class CrafterConfig:
    """Which Crafter to build."""

    reward: bool = True
    """Crafter's reward (+1 per achievement first unlocked, +-0.1 per health point); False: always 0."""
    size: int = 64
    """Frame side in pixels (Crafter renders size x size x 3)."""
    length: int = MAX_STEPS
    """Steps before the episode is truncated."""
    area: int = 64
    """World side in cells (Crafter's 64; generating a world takes ~1 s at 64, ~0.1 s at 16)."""

    def __post_init__(self):
        for name, low in (("size", MIN_SIZE), ("length", 1), ("area", MIN_AREA)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"CrafterConfig.{name}={value!r}: expected an integer >= {low}")
        if not isinstance(self.reward, bool):
            raise ValueError(f"CrafterConfig.reward={self.reward!r}: expected True or False")


class _OrderedChunksWorld(_engine.World):
    """Crafter's world whose ``chunks`` list each chunk's objects in creation order (their index in the world),
    not in a ``set``'s address order: Crafter's creature balancing draws from that list, so its draws become
    reproducible (see the module docstring)."""

    @property
    def chunks(self):
        """{chunk key: that chunk's objects, oldest first} (stock Crafter: a copy of its dict of sets)."""
        return {key: sorted(objs, key=self._index_of) for key, objs in self._chunks.items()}

    def _index_of(self, obj) -> int:
        return int(self._obj_map[tuple(obj.pos)])


class CrafterEnv(gym.Env):
    """Gymnasium adapter over ``crafter.Env`` (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    move_actions = MOVE_ACTIONS
    """Read by collection: the actions that walk (``random_repeat`` favours them)."""
    info_keys = ("inventory", "achievements", "discount", "semantic", "player_pos", "reward", "step")
    """Read by collection: the keys every ``info`` holds (a policy reading others is refused before collecting)."""

    def __init__(self, config: CrafterConfig | None = None, render_mode: str | None = None, **overrides):
        config = config or CrafterConfig()
        if overrides:
            unknown = set(overrides) - set(asdict(config))
            if unknown:
                raise TypeError(
                    f"CrafterEnv got unknown options {sorted(unknown)}; expected fields of CrafterConfig: "
                    f"{sorted(asdict(config))}"
                )
            config = replace(config, **overrides)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.config = config
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, shape=(config.size, config.size, 3), dtype=np.uint8)
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        self._env = crafter.Env(
            area=(config.area, config.area),
            size=(config.size, config.size),
            reward=config.reward,
            length=config.length,
            seed=0,
        )
        for attr in ("_seed", "_episode", "_world", "_player"):
            if not hasattr(self._env, attr):  # pragma: no cover - only another crafter version
                raise RuntimeError(
                    f"crafter {getattr(crafter, '__version__', '?')}: crafter.Env has no {attr} (seeding needs "
                    f"it); {_INSTALL_HINT}"
                )
        if type(self._env._world) is not _engine.World:  # pragma: no cover - only another crafter version
            raise RuntimeError(f"crafter.Env's world is a {type(self._env._world).__name__}; {_INSTALL_HINT}")
        self._env._world.__class__ = _OrderedChunksWorld  # the views keep their reference to the same world
        self._seeded = False
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._needs_reset = True

    # --- gymnasium API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``seed`` gives the world ``crafter.Env(seed=seed)`` starts in."""
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            # Crafter seeds episode k's world with hash((seed, k)); k counts from 1 at each (re)seeding.
            self._env._seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
            self._env._episode = 0
            self._seeded = True
        obs = self._env.reset()
        self._steps = 0
        self._needs_reset = False
        self._frame = np.asarray(obs, dtype=np.uint8)
        player = self._env._player
        info = {
            "inventory": dict(player.inventory),
            "achievements": dict(player.achievements),
            "discount": 1.0,
            "semantic": self._env._sem_view(),
            "player_pos": np.array(player.pos),
            "reward": 0.0,
            "step": 0,
        }
        return self._frame.copy(), info

    def step(self, action):
        """One step of Crafter with an integer action in [0, 17)."""
        if self._needs_reset:
            raise RuntimeError("CrafterEnv.step() called before reset() or after the episode ended; call reset() first")
        obs, reward, done, info = self._env.step(_as_action(action))
        self._steps += 1
        terminated = bool(info["discount"] == 0.0)  # the player died
        truncated = bool(done) and not terminated  # Crafter's length reached
        self._needs_reset = terminated or truncated
        self._frame = np.asarray(obs, dtype=np.uint8)
        info = dict(info, player_pos=np.array(info["player_pos"]), reward=float(info["reward"]), step=self._steps)
        return self._frame.copy(), float(reward), terminated, truncated, info

    def render(self):
        """The current frame, uint8 (size, size, 3)."""
        if self._frame is None:
            raise RuntimeError("CrafterEnv.render() called before reset()")
        return self._frame.copy()

    # --- collection -------------------------------------------------------------------------------------
    @staticmethod
    def episode_state(info: dict) -> dict[str, np.ndarray]:
        """The per-frame arrays collection records from a step's (or reset's) ``info``: ``player_pos`` (2,) int32,
        ``inventory`` (16,) int32 in ITEM_NAMES order, ``achievements`` (22,) int32 counts in ACHIEVEMENT_NAMES
        order."""
        return {
            "player_pos": np.asarray(info["player_pos"], dtype=np.int32),
            "inventory": np.array([info["inventory"][k] for k in ITEM_NAMES], dtype=np.int32),
            "achievements": np.array([info["achievements"][k] for k in ACHIEVEMENT_NAMES], dtype=np.int32),
        }


def _as_action(action) -> int:
    arr = np.asarray(action)
    n = len(ACTION_NAMES)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action={action!r}: expected an integer in [0, {n})")
    a = int(arr)
    if not 0 <= a < n:
        raise ValueError(f"action={a}: expected an integer in [0, {n}) ({', '.join(ACTION_NAMES)})")
    return a
