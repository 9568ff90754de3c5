"""The ``mixed`` collection policy: explore interrupted by random held-action segments, on known answers."""

import numpy as np
import pytest

from envs.collect import CollectConfig, collect
from envs.episodes import load_episode
from envs.policies import PHASES, SEGMENT_STEPS, MixedPolicy, Navigator, cell_of, make_policy

ENV = "longdream/MemoryMaze-9x9-ExtraObs-v0"


def _run(policy: MixedPolicy, steps: int, seed: int):
    """Actions and phases of ``policy`` with explore replaced by a constant action 7 (no env needed)."""
    policy.explore.reset = lambda info, rng: setattr(policy.explore, "nav", Navigator())
    policy.explore.act = lambda info: 7  # an action the random segments never draw
    policy.reset({}, np.random.default_rng(seed))
    actions, phases = [], []
    for _ in range(steps):
        actions.append(policy.act({}))
        phases.append(policy.phase)
    return np.array(actions), np.array(phases)


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(edges[1::2] - edges[0::2])


def test_segments_take_the_requested_fraction_and_lengths():
    actions, phases = _run(MixedPolicy(), 40_000, seed=0)
    assert (actions[phases == 0] == 7).all() and (actions[phases == 1] < 6).all()
    frac = phases.mean()
    assert abs(frac - 0.5) < 0.04, frac
    lengths = _runs(phases == 1)
    assert min(lengths) >= SEGMENT_STEPS[0]
    # two segments can be back to back (a new one may start right after one ends): a run is a sum of segments
    assert np.median(lengths) <= SEGMENT_STEPS[1]
    counts = np.bincount(actions[phases == 1], minlength=6)
    assert counts.min() > 0.8 * counts.mean()  # uniform over the six actions


@pytest.mark.parametrize("fraction", [0.0, 0.2, 1.0])
def test_other_fractions(fraction):
    _, phases = _run(MixedPolicy(random_fraction=fraction), 20_000, seed=1)
    assert abs(phases.mean() - fraction) < 0.04


def test_actions_are_held_for_the_repeat_steps():
    """With repeats fixed at 3 steps, a segment's actions come in blocks of 3 from its start."""
    policy = MixedPolicy(segment_steps=(9, 9), repeat_steps=(3, 3), random_fraction=0.5)
    actions, phases = _run(policy, 5_000, seed=2)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], phases])) == 1)
    for s in starts:
        seg = actions[s : s + 9]
        if len(seg) == 9 and (phases[s : s + 9] == 1).all():
            assert (seg.reshape(3, 3) == seg.reshape(3, 3)[:, :1]).all()


def test_same_generator_same_actions():
    a1, p1 = _run(MixedPolicy(), 2_000, seed=3)
    a2, p2 = _run(MixedPolicy(), 2_000, seed=3)
    a3, _ = _run(MixedPolicy(), 2_000, seed=4)
    assert (a1 == a2).all() and (p1 == p2).all() and not (a1 == a3).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"random_fraction": 1.5}, "random_fraction=1.5"),
        ({"segment_steps": (5, 2)}, "segment_steps=\\(5, 2\\)"),
        ({"repeat_steps": (0, 3)}, "repeat_steps=\\(0, 3\\)"),
        ({"noise": -0.1}, "noise=-0.1"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixedPolicy(**kwargs)


def test_mixed_is_a_named_policy_with_phases():
    assert isinstance(make_policy("mixed"), MixedPolicy)
    assert "mixed" in PHASES


def test_real_mixed_episode_records_phases_and_keeps_exploring(tmp_path):
    """In the real maze: phases recorded, about half the steps random, and explore recovers after segments."""
    out = tmp_path / "mix"
    collect(CollectConfig(env=ENV, episodes=1, steps=300, out=str(out), seed=5, policy="mixed"), progress=False)
    data = load_episode(out / "ep_00000.npz")
    phase, action = data["phase"], data["action"].argmax(-1)  # actions are stored one-hot
    assert phase.shape == action.shape == (301,)
    assert 0.25 < phase.mean() < 0.75
    assert len(set(action[phase == 1].tolist())) >= 5
    cells = {cell_of(p, data["maze_layout"][0]) for p in data["agent_pos"][phase == 0]}
    assert len(cells) >= 6  # the navigator keeps walking to new cells between segments
