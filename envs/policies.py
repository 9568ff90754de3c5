"""Scripted data-collection policies: Memory Maze's (which read its map) and random ones for any discrete env.

The Memory Maze policies (``explore``, ``revisit``, ``mixed``, ``oracle``) read the global state that
:class:`envs.memory_maze.MemoryMazeEnv` returns in ``info``
(``maze_layout`` indexed ``[y][x]`` with 1 = free, row 0 at the bottom; ``agent_pos`` = (x, y) in cell units,
cell centres at .5; ``agent_dir`` = unit heading (dx, dy)). Actions: 0 noop, 1 forward, 2 left (turns
counter-clockwise, ~18 degrees a step), 3 right, 4 forward+left, 5 forward+right.

- ``explore`` (:class:`ExplorePolicy`): the offline-dataset recipe. Pick a random free cell, walk to it along
  a BFS shortest path over the cell grid, pick another; with probability ``noise`` take a random action.
  Random goals make the agent cross its own path, so episodes revisit places.
- ``random`` (:class:`RandomPolicy`): uniform random actions (any ``Discrete(n)`` env).
- ``random_repeat`` (:class:`RandomRepeatPolicy`): random actions held for a few steps each (any ``Discrete(n)``
  env; the Crafter collection policy): each decision draws, with probability 1/2, one of the env's walking
  actions (``move_actions``, e.g. Crafter's four moves) and otherwise any action uniformly, and holds it for
  uniform [1, 4] steps. Uniform actions alone walk little in Crafter (4 of its 17 actions move; a sleeping
  player stays put for many steps): measured on Crafter seeds 0-11 (episodes of up to 500 steps), this policy
  visits 47 distinct cells per episode on average, uniform random actions 19 (held 1-4 steps: 23). Either way
  the player dies after 150-250 steps (this one: 183 on average, 152-256), mostly to zombies.
- ``revisit`` (:class:`RevisitPolicy`): explore for ``out_steps`` steps (phase 0), then retrace the sequence
  of cells it visited, in reverse, back to the cell it started from (phase 1, no noise); then a new cycle.
  The return half passes back through the places of the outward half: the retrieval benchmark's setting.
- ``oracle`` (:class:`OraclePolicy`): the scripted upper reference of the planners' evaluation (not a
  collection policy): walks to the cell of the current target (``target_pos``) along BFS paths, a new goal as
  soon as the target changes. It knows the map and the targets, which no agent sees.
- ``mixed`` (:class:`MixedPolicy`): ``explore`` (phase 0) interrupted by segments of uniform random actions,
  each held for a few steps (phase 1). Explore's actions are predictable from the frames (it follows
  corridors); in the random segments turns happen where the frames do not predict them, so a world model
  has to read its actions. After a segment the navigator re-plans from wherever the agent ended up.

Every policy has ``reset(info, rng)``, ``act(info) -> int``, ``phase`` (int; always 0 except for
``revisit`` and ``mixed``, see :data:`PHASES`), ``needs`` (the ``info`` keys it reads: collection refuses an
env that does not report them, naming the policies that fit) and ``n_actions`` (the size of the action space it
draws from). Policies are deterministic given the ``numpy.random.Generator`` passed to ``reset``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = [
    "POLICIES",
    "PHASES",
    "ExplorePolicy",
    "MixedPolicy",
    "Navigator",
    "OraclePolicy",
    "RandomPolicy",
    "RandomRepeatPolicy",
    "RevisitPolicy",
    "bfs_path",
    "cell_of",
    "make_policy",
]

NOOP, FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = range(6)
N_ACTIONS = 6

Cell = tuple[int, int]  # (x, y)

# ``mixed``: the random segments. A full spin is ~20 turn steps (~18 degrees each).
RANDOM_SEGMENT_PROB = 0.5  # expected fraction of steps spent in random segments: half the data action-driven
SEGMENT_STEPS = (8, 24)  # a segment's length, uniform in [8, 24] (mean 16): several held actions, up to ~1 spin
REPEAT_STEPS = (1, 4)  # each random action is held for uniform [1, 4] steps (action repeat: 18-72 degree turns)
MAZE_KEYS = ("agent_pos", "agent_dir", "maze_layout")  # what the Memory Maze policies read from info
MOVE_PROB = 0.5  # ``random_repeat``: probability that a decision draws one of the env's walking actions


def cell_of(pos, layout: np.ndarray) -> Cell:
    """The (x, y) cell containing ``pos`` (clipped into the maze)."""
    h, w = layout.shape
    return (int(np.clip(np.floor(pos[0]), 0, w - 1)), int(np.clip(np.floor(pos[1]), 0, h - 1)))


def bfs_path(layout: np.ndarray, start: Cell, goal: Cell) -> list[Cell] | None:
    """Shortest 4-connected path of free cells from ``start`` to ``goal`` (both included); None if none."""
    h, w = layout.shape
    if start == goal:
        return [start]
    parent: dict[Cell, Cell | None] = {start: None}
    queue = deque([start])
    while queue:
        x, y = queue.popleft()
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nxt = (x + dx, y + dy)
            if nxt in parent or not (0 <= nxt[0] < w and 0 <= nxt[1] < h) or not layout[nxt[1], nxt[0]]:
                continue
            parent[nxt] = (x, y)
            if nxt == goal:
                path = [nxt]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1]
            queue.append(nxt)
    return None


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class NavigatorConfig:
    """Steering thresholds (radians / cells) for walking between cell centres."""

    turn_in_place: float = np.radians(40)  # heading error above which the agent only turns
    turn_while_moving: float = np.radians(12)  # above this it moves forward while turning
    reach: float = 0.3  # distance to a cell centre that counts as arrived
    off_axis: float = 0.3  # lateral offset from the corridor axis that sends the agent to its cell centre
    stuck_steps: int = 8  # steps without progress before a short random escape
    escape_steps: int = 3  # random actions in one escape (about one turn's worth: a full spin is ~19 steps)
    still: float = 0.01  # a step that moves the agent less than this (cells) counts as no progress
    at_target: float = 0.05  # closer than this (cells) to the point steered at: noop


class Navigator:
    """Walks the agent to a goal cell along BFS paths; replans from the current cell every step."""

    def __init__(self, config: NavigatorConfig = NavigatorConfig()):
        self.config = config
        self.goal: Cell | None = None
        self._last_pos = None
        self._still = 0
        self._escape = 0

    def reset_motion(self):
        """Forget the motion history (stuck detection, an escape in progress), e.g. after others steered."""
        self._last_pos = None
        self._still = 0
        self._escape = 0

    def set_goal(self, goal: Cell):
        """Walk to ``goal`` (x, y) from now on."""
        self.goal = goal

    def arrived(self, info) -> bool:
        """True when the agent stands near the goal cell's centre (or there is no goal)."""
        if self.goal is None:
            return True
        pos = np.asarray(info["agent_pos"], dtype=np.float64)
        centre = np.array(self.goal, dtype=np.float64) + 0.5
        in_cell = cell_of(pos, info["maze_layout"]) == self.goal
        return in_cell and np.linalg.norm(pos - centre) < self.config.reach

    def act(self, info, rng: np.random.Generator) -> int:
        """The next action towards the goal: steer at the next cell centre of the BFS path."""
        cfg = self.config
        layout = np.asarray(info["maze_layout"])
        pos = np.asarray(info["agent_pos"], dtype=np.float64)
        heading = np.asarray(info["agent_dir"], dtype=np.float64)

        # stuck detection: no movement for a while -> a few random actions
        if self._last_pos is not None and np.linalg.norm(pos - self._last_pos) < cfg.still:
            self._still += 1
        else:
            self._still = 0
        self._last_pos = pos
        if self._escape > 0:
            self._escape -= 1
            return int(rng.integers(N_ACTIONS))
        if self._still >= cfg.stuck_steps:
            self._still = 0
            self._escape = cfg.escape_steps - 1
            return int(rng.integers(N_ACTIONS))

        here = cell_of(pos, layout)
        goal = self.goal if self.goal is not None else here
        path = bfs_path(layout, here, goal) or [here]
        centre = np.array(here, dtype=np.float64) + 0.5
        if len(path) == 1:
            target = centre
        else:
            nxt = np.array(path[1], dtype=np.float64) + 0.5
            axis = nxt - centre  # unit vector along the corridor between the two cells
            offset = pos - centre
            lateral = abs(offset[0] * axis[1] - offset[1] * axis[0])
            target = centre if lateral > cfg.off_axis else nxt
        delta = target - pos
        if np.linalg.norm(delta) < cfg.at_target:
            return NOOP
        error = _wrap(np.arctan2(delta[1], delta[0]) - np.arctan2(heading[1], heading[0]))
        if abs(error) > cfg.turn_in_place:
            return LEFT if error > 0 else RIGHT
        if abs(error) > cfg.turn_while_moving:
            return FORWARD_LEFT if error > 0 else FORWARD_RIGHT
        return FORWARD


def _free_cells(layout: np.ndarray) -> list[Cell]:
    ys, xs = np.nonzero(np.asarray(layout))
    return [(int(x), int(y)) for x, y in zip(xs, ys)]


def _check_n_actions(n_actions) -> int:
    if isinstance(n_actions, bool) or not isinstance(n_actions, (int, np.integer)) or n_actions < 1:
        raise ValueError(f"n_actions={n_actions!r}: expected the size of a Discrete action space (>= 1)")
    return int(n_actions)


class RandomPolicy:
    """Uniform random actions in [0, ``n_actions``) (default: Memory Maze's 6)."""

    name = "random"
    phase = 0
    needs: tuple[str, ...] = ()

    def __init__(self, n_actions: int = N_ACTIONS):
        self.n_actions = _check_n_actions(n_actions)

    def reset(self, info, rng: np.random.Generator):
        """Start an episode drawing actions from ``rng``."""
        self.rng = rng

    def act(self, info) -> int:
        """A uniform random action."""
        return int(self.rng.integers(self.n_actions))


class RandomRepeatPolicy:
    """Random actions with action repeat, favouring the walking actions (see the module docstring).

    Each decision draws one of ``move_actions`` with probability ``move_prob`` (when there are any), otherwise a
    uniform action in [0, ``n_actions``), and holds it for uniform ``repeat_steps`` steps."""

    name = "random_repeat"
    phase = 0
    needs: tuple[str, ...] = ()

    def __init__(
        self,
        n_actions: int,
        move_actions: tuple[int, ...] = (),
        move_prob: float = MOVE_PROB,
        repeat_steps: tuple[int, int] = REPEAT_STEPS,
    ):
        self.n_actions = _check_n_actions(n_actions)
        self.move_actions = tuple(int(a) for a in move_actions)
        bad = [a for a in self.move_actions if not 0 <= a < self.n_actions]
        if bad:
            raise ValueError(f"move_actions={move_actions!r}: {bad} outside the actions [0, {self.n_actions})")
        if not 0.0 <= move_prob <= 1.0:
            raise ValueError(f"move_prob={move_prob!r}: expected a probability in [0, 1]")
        low, high = repeat_steps
        if not 1 <= low <= high:
            raise ValueError(f"repeat_steps={repeat_steps!r}: expected (low, high) with 1 <= low <= high")
        self.move_prob = float(move_prob)
        self.repeat_steps = (int(low), int(high))

    def reset(self, info, rng: np.random.Generator):
        """Start an episode drawing actions and hold times from ``rng``."""
        self.rng = rng
        self._hold = 0
        self._action = 0

    def act(self, info) -> int:
        """The held action, or a new draw once it has been held its number of steps."""
        if self._hold == 0:
            if self.move_actions and self.rng.random() < self.move_prob:
                self._action = self.move_actions[int(self.rng.integers(len(self.move_actions)))]
            else:
                self._action = int(self.rng.integers(self.n_actions))
            self._hold = int(self.rng.integers(self.repeat_steps[0], self.repeat_steps[1] + 1))
        self._hold -= 1
        return self._action


class ExplorePolicy:
    """BFS walks to random free cells under action noise (the offline-dataset recipe)."""

    name = "explore"
    phase = 0
    needs = MAZE_KEYS
    n_actions = N_ACTIONS

    def __init__(self, noise: float = 0.1):
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise={noise!r}: expected a probability in [0, 1]")
        self.noise = noise

    def reset(self, info, rng: np.random.Generator):
        """Start an episode from the state in ``info``, drawing goals and noise from ``rng``."""
        self.rng = rng
        self.nav = Navigator()
        self._new_goal(info)

    def _new_goal(self, info):
        layout = np.asarray(info["maze_layout"])
        here = cell_of(info["agent_pos"], layout)
        reachable = [c for c in _free_cells(layout) if c != here and bfs_path(layout, here, c) is not None]
        if not reachable:
            reachable = [here]
        self.nav.set_goal(reachable[int(self.rng.integers(len(reachable)))])

    def act(self, info) -> int:
        """Walk towards the current goal (a new one once arrived), or a random action with probability noise."""
        if self.nav.arrived(info):
            self._new_goal(info)
        action = self.nav.act(info, self.rng)
        if self.rng.random() < self.noise:
            return int(self.rng.integers(N_ACTIONS))
        return action


class RevisitPolicy:
    """Explore ``out_steps`` steps (phase 0), then retrace the visited cells back to the start (phase 1)."""

    name = "revisit"
    needs = MAZE_KEYS
    n_actions = N_ACTIONS

    def __init__(self, out_steps: int = 250, noise: float = 0.1):
        if out_steps < 1:
            raise ValueError(f"out_steps={out_steps!r}: expected >= 1")
        self.out_steps = int(out_steps)
        self.explore = ExplorePolicy(noise=noise)

    def reset(self, info, rng: np.random.Generator):
        """Start an episode (and its first outward phase) from the state in ``info``."""
        self.rng = rng
        self.explore.reset(info, rng)
        self._start_cycle(info)

    def _start_cycle(self, info):
        self.phase = 0
        self._t = 0
        self._trail: list[Cell] = [cell_of(info["agent_pos"], info["maze_layout"])]
        self._back: list[Cell] = []
        self._nav = Navigator()

    def _record(self, info):
        here = cell_of(info["agent_pos"], info["maze_layout"])
        if here != self._trail[-1]:
            self._trail.append(here)

    def act(self, info) -> int:
        """Explore while outward; then follow the recorded cells back (``phase`` tells which)."""
        if self.phase == 0:
            self._record(info)
            if self._t >= self.out_steps:
                # retrace: the outward cells in reverse, ending at the cell the cycle started in
                self.phase = 1
                self._back = self._trail[::-1][1:] or [self._trail[0]]
                self._nav.set_goal(self._back[0])
            else:
                self._t += 1
                return self.explore.act(info)
        # phase 1: follow the trail back; pop waypoints as they are reached
        while self._back and self._nav.arrived(info):
            self._back.pop(0)
            if self._back:
                self._nav.set_goal(self._back[0])
        if not self._back:
            self.explore.reset(info, self.rng)
            self._start_cycle(info)
            return self.act(info)
        return self._nav.act(info, self.rng)


class MixedPolicy:
    """``explore`` (phase 0) interrupted by segments of uniform random actions held a few steps each (phase 1).

    At every explore step a segment starts with probability ``start_prob``, chosen so that the expected fraction
    of steps inside segments is ``random_fraction`` (explore runs are geometric, so segment starts are not
    predictable from the frames or the step count). A segment lasts uniform ``segment_steps`` steps; within
    it, an action drawn uniformly from all six is held for uniform ``repeat_steps`` steps, then another is drawn.
    The explore goal is kept across a segment: the navigator plans its BFS path from the current cell at every
    step, and its stuck detection is reset when the segment ends, so it recovers from wherever the agent is.
    """

    name = "mixed"
    needs = MAZE_KEYS
    n_actions = N_ACTIONS

    def __init__(
        self,
        noise: float = 0.1,
        random_fraction: float = RANDOM_SEGMENT_PROB,
        segment_steps: tuple[int, int] = SEGMENT_STEPS,
        repeat_steps: tuple[int, int] = REPEAT_STEPS,
    ):
        if not 0.0 <= random_fraction <= 1.0:
            raise ValueError(f"random_fraction={random_fraction!r}: expected a fraction in [0, 1]")
        for label, (low, high) in (("segment_steps", segment_steps), ("repeat_steps", repeat_steps)):
            if not 1 <= low <= high:
                raise ValueError(f"{label}={(low, high)!r}: expected (low, high) with 1 <= low <= high")
        self.explore = ExplorePolicy(noise=noise)
        self.random_fraction = float(random_fraction)
        self.segment_steps = (int(segment_steps[0]), int(segment_steps[1]))
        self.repeat_steps = (int(repeat_steps[0]), int(repeat_steps[1]))
        self.phase = 0

    @property
    def start_prob(self) -> float:
        """Per explore step probability of starting a segment.

        An explore run lasts (1 - q) / q steps on average and a segment ``mean_len``; setting
        ``mean_len / ((1 - q) / q + mean_len) = f`` gives ``q = f / (f + mean_len * (1 - f))``.
        """
        f = self.random_fraction
        mean_len = sum(self.segment_steps) / 2
        return f / (f + mean_len * (1 - f)) if f > 0 else 0.0

    def reset(self, info, rng: np.random.Generator):
        """Start an episode (exploring) from the state in ``info``, drawing everything from ``rng``."""
        self.rng = rng
        self.explore.reset(info, rng)
        self.phase = 0
        self._left = 0  # steps left in the current random segment
        self._hold = 0  # steps left holding the current random action
        self._action = NOOP

    def act(self, info) -> int:
        """A random segment's held action (phase 1), or explore's action (phase 0)."""
        if self._left == 0 and self.rng.random() < self.start_prob:
            self._left = int(self.rng.integers(self.segment_steps[0], self.segment_steps[1] + 1))
            self._hold = 0
        if self._left > 0:
            self.phase = 1
            if self._hold == 0:
                self._action = int(self.rng.integers(N_ACTIONS))
                self._hold = int(self.rng.integers(self.repeat_steps[0], self.repeat_steps[1] + 1))
            self._hold -= 1
            self._left -= 1
            if self._left == 0:
                self.explore.nav.reset_motion()  # its last position is from before the segment
            return self._action
        self.phase = 0
        return self.explore.act(info)


class OraclePolicy:
    """Drives to the current target with the map: the goal is the cell of ``info["target_pos"]`` (re-read every
    step, so a new target is followed as soon as the last one is touched), reached along BFS paths by a
    :class:`Navigator` (its stuck escapes draw from the ``rng`` given to ``reset``). The target sphere sits at
    its cell's centre, where the navigator steers last, so arriving is touching it."""

    name = "oracle"
    phase = 0
    needs = (*MAZE_KEYS, "target_pos")
    n_actions = N_ACTIONS

    def __init__(self, navigator: NavigatorConfig = NavigatorConfig()):
        self.navigator = navigator

    def reset(self, info, rng: np.random.Generator):
        """Start an episode from the state in ``info`` (needs ``target_pos``, ``agent_pos``, ``agent_dir``,
        ``maze_layout``); escapes draw from ``rng``."""
        self.rng = rng
        self.nav = Navigator(self.navigator)
        self.nav.set_goal(self.goal_of(info))

    @staticmethod
    def goal_of(info) -> Cell:
        """The (x, y) cell of the current target; KeyError naming the key when ``info`` lacks it."""
        for key in ("target_pos", "maze_layout"):
            if key not in info:
                raise KeyError(
                    f"OraclePolicy needs info[{key!r}] (a Memory Maze env reports it), got keys {sorted(info)}"
                )
        return cell_of(info["target_pos"], np.asarray(info["maze_layout"]))

    def act(self, info) -> int:
        """The next action towards the current target's cell."""
        goal = self.goal_of(info)
        if goal != self.nav.goal:
            self.nav.set_goal(goal)
        return self.nav.act(info, self.rng)


POLICIES = ("explore", "random", "revisit", "mixed", "random_repeat")
# the policies whose ``phase`` collection records (episode key ``phase``), and what its values mean
PHASES = {"revisit": "0 outward / 1 retracing", "mixed": "0 exploring / 1 random segment"}
DEFAULT_EPISODE_STEPS = 500  # the episode length revisit's default outward half is taken from when none is given


def make_policy(
    name: str,
    *,
    steps: int | None = None,
    noise: float = 0.1,
    revisit_steps: int | None = None,
    n_actions: int = N_ACTIONS,
    move_actions: tuple[int, ...] = (),
):
    """Build a policy by name. ``revisit`` walks out for ``revisit_steps`` (default: half of ``steps``).

    ``noise`` is explore's action noise (``explore``, ``revisit``, and ``mixed`` outside its random segments).
    ``n_actions`` and ``move_actions`` describe the env's action space for the random policies (``random``,
    ``random_repeat``); the others act in Memory Maze's six actions.
    """
    if name == "explore":
        return ExplorePolicy(noise=noise)
    if name == "random":
        return RandomPolicy(n_actions)
    if name == "random_repeat":
        return RandomRepeatPolicy(n_actions, move_actions=move_actions)
    if name == "revisit":
        out = revisit_steps if revisit_steps is not None else max(1, (steps or DEFAULT_EPISODE_STEPS) // 2)
        return RevisitPolicy(out_steps=out, noise=noise)
    if name == "mixed":
        return MixedPolicy(noise=noise)
    raise ValueError(f"unknown policy {name!r}: expected one of {', '.join(POLICIES)}")
