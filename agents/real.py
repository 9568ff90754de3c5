"""Agents judged in the real env: one policy interface, fixed-seed evaluation, mean and 95% interval.

    policy = SomeAgentPolicy(...)                     # anything with reset(seed) and act(frame) -> action
    res = evaluate_policy(policy, "longdream/MemoryMaze-9x9-v0", seeds=range(3000, 3008), max_steps=300)
    res["reward_rate_per_100"]                         # {"n", "mean", "ci95"} over the episodes

Every agent of this package (the Dreamer-style actor-critic, SB3 models trained in the dream or on real steps)
is evaluated through :func:`evaluate_policy` on the same env seeds, so their numbers compare directly with each
other and with the planners' random and oracle baselines (``planners.evaluate``).

Axis legend: H x W x 3 frames (uint8).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402, F401  (registers the Memory Maze ids)
from envs.episodes import EpisodeStore  # noqa: E402
from planners.controller import frame_of  # noqa: E402
from planners.evaluate import episode_record, mean_ci  # noqa: E402

__all__ = ["FramePolicy", "evaluate_policy", "episode_record", "real_steps_used", "summarise_episodes"]


@runtime_checkable
class FramePolicy(Protocol):
    """A policy acting on real frames: ``reset(seed)`` at every episode start, then ``act(frame)`` with each new
    frame (the reset frame first) returns the action to take. It keeps whatever memory it needs (a world model's
    state, an LSTM state, a frame stack) and remembers its own previous action."""

    def reset(self, seed: int) -> None:
        """A new episode starts (``seed``: the env seed, for any randomness of the policy)."""
        ...

    def act(self, frame: np.ndarray) -> Any:
        """The action for the newest frame uint8 (H, W, 3)."""
        ...


def summarise_episodes(records: list[dict]) -> dict:
    """Mean and 95% t-interval (over episodes) of the return and of the reward rate per 100 steps."""
    return {
        "episodes": records,
        "return": mean_ci([r["return"] for r in records]),
        "reward_rate_per_100": mean_ci([r["reward_rate_per_100"] for r in records]),
    }


def evaluate_policy(
    policy: FramePolicy,
    env: str | gymnasium.Env,
    seeds: Iterable[int],
    max_steps: int,
    progress: bool = False,
    desc: str = "real-env evaluation",
    keep_actions: bool = True,
) -> dict:
    """Run ``policy`` for at most ``max_steps`` real steps from ``reset(seed)`` of each seed.

    ``env``: a Gymnasium id (made and closed here) or an env; ``keep_actions``: each episode's record lists its
    actions. Returns :func:`summarise_episodes` of the episodes
    (plus ``seeds`` and ``max_steps``)."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r}: expected an integer >= 1")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one env seed")
    own = isinstance(env, str)
    e = gymnasium.make(env) if own else env
    records = []
    try:
        bar = tqdm(total=len(seeds) * max_steps, desc=desc, unit="step", disable=not progress, leave=False)
        for seed in seeds:
            obs, _ = e.reset(seed=seed)
            policy.reset(seed)
            rewards: list[float] = []
            actions: list = []
            for _ in range(max_steps):
                action = policy.act(frame_of(obs))
                obs, r, term, trunc, _ = e.step(action)
                rewards.append(float(r))
                actions.append(action)
                bar.update(1)
                if term or trunc:
                    break
            records.append(episode_record(seed, rewards, actions if keep_actions else None))
        bar.close()
    finally:
        if own:
            e.close()
    res = summarise_episodes(records)
    res.update(seeds=seeds, max_steps=max_steps)
    return res


def real_steps_used(world: str, episodes, steps: int) -> dict:
    """The real env steps behind an agent: its own ``steps`` (``world="real"``), or those recorded in the
    ``episodes`` folder its dreams were warmed on (``world="dream"``; the agent itself took no real step)."""
    if world == "real":
        return {"steps": int(steps), "note": "real env steps the agent learnt from"}
    store = EpisodeStore(episodes)
    frames = int(np.sum(store.lengths))
    return {
        "steps": frames - len(store),
        "frames": frames,
        "note": f"real steps (actions; frames = steps + one reset frame per episode) in {episodes}, the folder "
        "the dreams were warmed on - the world model's training data when it is the folder the model was trained "
        "on; the agent itself took no real step",
    }
