"""The worlds a result can be about, and the names of results per world.

A benchmark or evaluation that runs on several worlds names its results per world (:func:`result_name`:
``recall`` for Memory Maze, ``recall_crafter`` for Crafter), so a Crafter run never replaces a Memory Maze result;
:func:`env_world` and :func:`episodes_world` tell the world of a Gymnasium id or of an episode folder. Data layer:
plain strings and a manifest read, so every layer above (planners, agents, benchmarks) can use it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = ["DEFAULT_WORLD", "WORLDS", "env_world", "episodes_world", "result_name", "world_label"]

WORLDS = {"memory_maze": "Memory Maze", "crafter": "Crafter", "minerl": "MineRL", "teco": "TECO"}
"""The worlds a benchmark result can be about: key (the results' file-name suffix, ``--world``) -> name in tables."""
DEFAULT_WORLD = "memory_maze"
"""The world whose results carry no suffix (``recall.json``, ``dream_fidelity.json``): the first one we had."""
_ENV_WORLDS = {"MemoryMaze": "memory_maze", "Crafter": "crafter", "MineRL": "minerl"}
"""A word in a Gymnasium id -> the world of that env (``longdream/Crafter-v0``, ``MineRLNavigate-v0``, ...)."""
_SOURCE_WORLDS = {"minerl": "minerl", "navigate": "minerl", "teco": "teco"}
"""``python -m envs.convert --format`` (the ``source_format`` of a converted folder's manifest) -> the world."""


def env_world(env_id: str) -> str:
    """The world key of a Gymnasium id (``longdream/Crafter-v0`` -> ``crafter``); another env's own name as a
    file-name stem (``mypkg:Foo-v0`` -> ``foo_v0``)."""
    for word, key in _ENV_WORLDS.items():
        if word in env_id:
            return key
    return re.sub(r"[^a-z0-9]+", "_", env_id.rpartition(":")[2].rpartition("/")[2].lower()).strip("_") or "env"


def episodes_world(folder: str | os.PathLike) -> str:
    """The world key of an episode folder, from its ``manifest.json``: the ``env`` that ``python -m envs.collect``
    records, or the ``source_format`` of ``python -m envs.convert`` (minerl, navigate: MineRL; teco: TECO); a folder
    without a manifest (the official Memory Maze data, toy episodes) is Memory Maze. A manifest that is not a JSON
    object, or holds neither key, is a ValueError naming the file."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return DEFAULT_WORLD
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable manifest ({e}); repair it, or name the world with --world") from e
    if isinstance(manifest, dict) and manifest.get("env"):
        return env_world(str(manifest["env"]))
    if isinstance(manifest, dict) and manifest.get("source_format") in _SOURCE_WORLDS:
        return _SOURCE_WORLDS[manifest["source_format"]]
    raise ValueError(
        f"{path}: expected an episode manifest with 'env' (envs.collect) or 'source_format' "
        f"({', '.join(_SOURCE_WORLDS)}: envs.convert); name the world with --world"
    )


def world_label(world: str) -> str:
    """The name of world key ``world`` in tables (``crafter`` -> ``Crafter``; another env's key as it is)."""
    return WORLDS.get(world, world)


def result_name(base: str, world: str) -> str:
    """The results' file-name stem of benchmark ``base`` on ``world``: ``base`` itself for the default world
    (Memory Maze), ``base_WORLD`` for the others (``recall_crafter``)."""
    return base if world == DEFAULT_WORLD else f"{base}_{world}"
