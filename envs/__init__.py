"""The envs package: real environments (Memory Maze, Crafter), episode collection and storage, and the dream env.

Importing this package registers the Gymnasium ids (string entry points: nothing heavy is imported)::

    longdream/MemoryMaze-{9x9,11x11,13x13,15x15}[-ExtraObs|-Vis|-Top|-ExtraObs-Vis|-ExtraObs-Top]-v0
    longdream/Crafter-v0, longdream/CrafterNoReward-v0      (envs/crafter.py)

e.g. ``gymnasium.make("longdream/MemoryMaze-9x9-ExtraObs-v0")`` after ``import envs``, and the dream env::

    gymnasium.make("longdream/Dream-v0", checkpoint="runs/demo/checkpoint.pt", episodes="data/episodes/mm9")
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as _gym  # noqa: E402

# size -> episode length in 4 Hz steps (kept equal to envs.memory_maze.SIZES without importing it)
_MEMORY_MAZE_STEPS = {"9x9": 1000, "11x11": 2000, "13x13": 3000, "15x15": 4000}
_MEMORY_MAZE_VARIANTS = {
    "": {},
    "-ExtraObs": {"extra_obs": True},
    "-Vis": {"good_visibility": True},
    "-Top": {"top_camera": True},
    "-ExtraObs-Vis": {"extra_obs": True, "good_visibility": True},
    "-ExtraObs-Top": {"extra_obs": True, "top_camera": True},
}
MEMORY_MAZE_IDS: list[str] = []


def _register_memory_maze() -> None:
    for size, steps in _MEMORY_MAZE_STEPS.items():
        for suffix, kwargs in _MEMORY_MAZE_VARIANTS.items():
            env_id = f"longdream/MemoryMaze-{size}{suffix}-v0"
            MEMORY_MAZE_IDS.append(env_id)
            if env_id in _gym.registry:
                continue
            _gym.register(
                id=env_id,
                entry_point="envs.memory_maze:MemoryMazeEnv",
                kwargs={"size": size, **kwargs},
                max_episode_steps=steps,
            )


_register_memory_maze()

# Crafter (envs/crafter.py): its own reward, or none; 10000 steps is Crafter's default episode length
_CRAFTER_STEPS = 10_000
CRAFTER_IDS: list[str] = []


def _register_crafter() -> None:
    for name, reward in (("Crafter", True), ("CrafterNoReward", False)):
        env_id = f"longdream/{name}-v0"
        CRAFTER_IDS.append(env_id)
        if env_id in _gym.registry:
            continue
        _gym.register(
            id=env_id,
            entry_point="envs.crafter:CrafterEnv",
            kwargs={"reward": reward, "length": _CRAFTER_STEPS},
            max_episode_steps=_CRAFTER_STEPS,
        )


_register_crafter()

REAL_ENV_IDS: list[str] = [*MEMORY_MAZE_IDS, *CRAFTER_IDS]
"""Every real env id registered here (collection takes these, or any ``module:id``)."""


def frame_env_id(env_id: str) -> str:
    """The id of the same world whose observations are the frames alone: a Memory Maze ``-ExtraObs`` id (what
    collection records the state from) maps to its frame-only twin (``longdream/MemoryMaze-9x9-ExtraObs-v0`` ->
    ``longdream/MemoryMaze-9x9-v0``), every other id to itself. A world model stands in for that env."""
    if env_id in MEMORY_MAZE_IDS and "-ExtraObs" in env_id:
        return env_id.replace("-ExtraObs", "", 1)
    return env_id


if "longdream/Dream-v0" not in _gym.registry:
    # The one registration of the dream env: string entry points, so nothing heavy (torch) is imported here.
    # No passive env checker: Gymnasium's (1.x) marks its first reset/step as checked before the call, so after
    # a first reset that raised (e.g. a bad option) every later step() died in the checker with a TypeError
    # instead of the env's own messages. The env passes Gymnasium's and SB3's full check_env in the tests.
    _gym.register(
        id="longdream/Dream-v0",
        entry_point="envs.dream:DreamEnv",
        vector_entry_point="envs.dream_vector:DreamVectorEnv",
        disable_env_checker=True,
    )
