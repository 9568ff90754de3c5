"""The ``mixed`` collection policy: explore interrupted by random held-action segments, on known answers."""

import gymnasium
import numpy as np
import pytest

from envs.collect import CollectConfig, collect
from envs.episodes import load_episode
from envs.policies import (
    PHASES,
    SEGMENT_STEPS,
    MixedPolicy,
    Navigator,
    OraclePolicy,
    RandomRepeatPolicy,
    cell_of,
    make_policy,
)

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


def _info(target, agent=(0.5, 0.5), heading=(1.0, 0.0)):
    """A Memory Maze info dict on an open 5x5 map."""
    return {
        "maze_layout": np.ones((5, 5), np.uint8),
        "agent_pos": np.array(agent),
        "agent_dir": np.array(heading),
        "target_pos": np.array(target),
    }


def test_oracle_heads_for_the_current_targets_cell_and_follows_a_new_target():
    oracle = OraclePolicy()
    oracle.reset(_info((3.5, 0.5)), np.random.default_rng(0))
    assert oracle.nav.goal == (3, 0)
    assert oracle.act(_info((3.5, 0.5))) == 1  # facing +x along the free row: forward
    assert oracle.act(_info((0.5, 3.5))) == 2  # the target moved up (+y): turn left (counter-clockwise)
    assert oracle.nav.goal == (0, 3)


def test_oracle_needs_the_target_position():
    info = _info((1.5, 1.5))
    del info["target_pos"]
    with pytest.raises(KeyError, match="target_pos"):
        OraclePolicy().reset(info, np.random.default_rng(0))


def test_oracle_collects_rewards_in_the_real_maze_where_random_does_not():
    """On an unseen maze (seed 2000) the oracle touches targets within 200 steps; uniform random actions
    (same seed and steps) collect fewer."""
    env = gymnasium.make(ENV)
    totals = {}
    for policy in (OraclePolicy(), make_policy("random")):
        obs, info = env.reset(seed=2000)
        policy.reset(info, np.random.default_rng(0))
        total = 0.0
        for _ in range(200):
            obs, reward, _, _, info = env.step(policy.act(info))
            total += reward
        totals[policy.name] = total
    env.close()
    assert totals["oracle"] >= 2
    assert totals["oracle"] > totals["random"]


def test_random_repeat_holds_each_draw_one_to_four_steps_and_favours_the_moves():
    """random_repeat: runs of one action last 1-4 steps (a run may hold two equal draws), about half the draws
    are moves, every action in [0, n) occurs, and the same rng gives the same actions; random draws from n."""
    moves = (1, 2, 3, 4)

    def actions(seed, steps=4000):
        policy = make_policy("random_repeat", n_actions=17, move_actions=moves)
        policy.reset({}, np.random.default_rng(seed))
        return np.array([policy.act({}) for _ in range(steps)])

    a = actions(0)
    np.testing.assert_array_equal(a, actions(0))
    assert set(a.tolist()) == set(range(17))
    starts = np.flatnonzero(np.diff(a)) + 1
    runs = np.diff(np.concatenate([[0], starts, [len(a)]]))
    assert runs.min() >= 1 and np.mean(runs <= 4) > 0.9  # longer runs only where one action was drawn twice
    draws = a[np.concatenate([[0], starts])]
    expected = 0.5 + 0.5 * len(moves) / 17  # a move, or a uniform draw that is a move
    assert abs(np.isin(draws, moves).mean() - expected) < 0.05
    uniform = make_policy("random", n_actions=17)
    uniform.reset({}, np.random.default_rng(0))
    assert max(uniform.act({}) for _ in range(500)) == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_actions": 0}, "n_actions=0"),
        ({"n_actions": 4, "move_actions": (5,)}, r"move_actions=\(5,\): \[5\] outside the actions \[0, 4\)"),
        ({"n_actions": 4, "repeat_steps": (3, 2)}, r"repeat_steps=\(3, 2\)"),
    ],
)
def test_bad_random_repeat_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomRepeatPolicy(**kwargs)
