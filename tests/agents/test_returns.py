"""DreamerV3's return helpers on known answers; the actor and critic heads; the critic as a planner's terminal value."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.actor_critic import Actor, Critic
from agents.dreamer import space_from_dict, space_to_dict
from agents.returns import PercentileNormalizer, TwoHot, discount_from_horizon, lambda_returns, symexp, symlog
from planners import CEM, planner_config


def test_lambda_returns_match_a_hand_computed_case():
    r = torch.tensor([[1.0], [0.0], [2.0]])  # (H=3, B=1)
    v = torch.tensor([[0.5], [1.0], [2.0], [3.0]])  # (H+1, B)
    g, lam = 0.9, 0.5
    # R2 = 2 + .9 * 3 = 4.7; R1 = 0 + .9 (.5 * 2 + .5 * 4.7) = 3.015; R0 = 1 + .9 (.5 * 1 + .5 * 3.015) = 2.80675
    out = lambda_returns(r, v, None, g, lam)
    assert torch.allclose(out[:, 0], torch.tensor([2.80675, 3.015, 4.7]))
    # λ = 1: the discounted sum of rewards bootstrapped with the last value; λ = 0: one-step TD targets
    mc = lambda_returns(r, v, None, g, 1.0)[0, 0]
    assert mc.item() == pytest.approx(1 + 0.81 * 2 + 0.729 * 3)
    td = lambda_returns(r, v, None, g, 0.0)[:, 0]
    assert torch.allclose(td, torch.tensor([1 + 0.9 * 1.0, 0 + 0.9 * 2.0, 2 + 0.9 * 3.0]))
    # an episode ending at frame 2 cuts the bootstrap: R1 = r1
    c = torch.tensor([[1.0], [0.0], [1.0]])
    cut = lambda_returns(r, v, c, g, lam)[:, 0]
    assert cut[1].item() == pytest.approx(0.0) and cut[0].item() == pytest.approx(1 + 0.9 * (0.5 * 1.0 + 0.5 * 0.0))


def test_lambda_returns_refuse_mismatched_values():
    with pytest.raises(ValueError, match=r"values must be \(H \+ 1"):
        lambda_returns(torch.zeros(3, 2), torch.zeros(3, 2), None, 0.9)


def test_discount_from_horizon():
    assert discount_from_horizon(333) == pytest.approx(0.996996997)
    with pytest.raises(ValueError, match="horizon=0.5"):
        discount_from_horizon(0.5)


def test_percentile_normaliser_on_a_known_distribution():
    norm = PercentileNormalizer(decay=0.5)
    assert norm.scale == 1.0  # before any data
    x = torch.arange(101, dtype=torch.float32)  # P5 = 5, P95 = 95
    assert norm.update(x) == pytest.approx(90.0)
    assert norm.update(2 * x) == pytest.approx(0.5 * 90 + 0.5 * 180)  # EMA of both percentiles
    small = PercentileNormalizer()
    assert small.update(torch.linspace(0, 0.1, 50)) == 1.0  # small returns are not scaled up
    restored = PercentileNormalizer(decay=0.5)
    restored.load_state_dict(norm.state_dict())
    assert restored.scale == norm.scale


def test_symlog_and_two_hot_round_trips():
    y = torch.tensor([-1e4, -37.5, -1.0, -0.2, 0.0, 0.3, 1.0, 12.0, 5e3], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-12)
    th = TwoHot()
    w = th.encode(y)
    assert torch.allclose(w.sum(-1), torch.ones_like(y))
    assert ((w > 0).sum(-1) <= 2).all()
    assert torch.allclose((w * th.bins.double()).sum(-1), symlog(y))  # the weighted mean is symlog(y) exactly
    assert torch.allclose(th.decode(torch.log(w)), y, rtol=1e-9)  # logits = log weights decode back
    # beyond the range, the value is clamped to the end bin
    assert torch.allclose(th.encode(torch.tensor([1e12]))[0, -1], torch.tensor(1.0))


def test_actor_heads_discrete_and_box():
    torch.manual_seed(0)
    feats = torch.randn(5, 8)
    disc = Actor(8, spaces.Discrete(4), hidden=16)
    a, raw = disc.sample(feats, torch.Generator().manual_seed(1))
    assert a.dtype == torch.int64 and a.shape == (5,) and torch.equal(a, raw)
    d = disc.dist(feats)
    assert torch.equal(disc.sample(feats, deterministic=True)[0], d.probs.argmax(-1))
    assert disc.log_prob(d, a).shape == (5,) and disc.entropy(d).shape == (5,)
    box = Actor(8, spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 4.0]), dtype=np.float32), hidden=16)
    a, raw = box.sample(feats, torch.Generator().manual_seed(1))
    assert a.shape == (5, 2) and (a[:, 0].abs() <= 1).all() and ((a[:, 1] >= 0) & (a[:, 1] <= 4)).all()
    d = box.dist(feats)
    assert (d.mean[:, 1] > 0).all() and (d.mean[:, 1] < 4).all()  # the mean lies inside the bounds
    assert box.log_prob(d, raw).shape == (5,)
    same, _ = box.sample(feats, torch.Generator().manual_seed(1))
    assert torch.equal(a, same)  # the generator decides the draw


class _CountingModel:
    """Reward 1 per step for action 1; features: one-hot of the action (the planners' toy model, inline)."""

    action_space = spaces.Discrete(2)

    def fork(self, state, n):
        return state.repeat_interleave(n, 0)

    def plan_step(self, state, actions, sampling_steps=None):
        return (actions == 1).double(), torch.nn.functional.one_hot(actions.long(), 2).float(), state + 1


def test_critic_serves_as_a_planners_terminal_value():
    critic = Critic(2, hidden=8, loss="mse")
    with torch.no_grad():
        critic.net[-1].bias.fill_(5.0)  # zero-initialised last layer: the value is exactly the bias
    value = critic.as_terminal_value()
    assert torch.allclose(value(torch.randn(3, 2)), torch.full((3,), 5.0))
    cfg = planner_config("tiny", horizon=3, population=16, discount=0.9)
    plan = CEM(cfg, _CountingModel.action_space, terminal_value=value).plan(
        torch.zeros(1, dtype=torch.long), _CountingModel()
    )
    assert plan.actions.tolist() == [1, 1, 1]
    assert plan.expected_return == pytest.approx(1 + 0.9 + 0.81 + 0.729 * 5.0)
    twohot = Critic(2, hidden=8)
    assert torch.allclose(
        twohot.as_terminal_value()(torch.randn(4, 2)), torch.zeros(4), atol=1e-5
    )  # zero-init: value 0
    with pytest.raises(ValueError, match="critic loss='huber'"):
        Critic(2, loss="huber")


def test_action_spaces_round_trip_as_plain_data():
    box = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 4.0], np.float32), dtype=np.float32)
    for space in (spaces.Discrete(6), box):
        d = space_to_dict(space)
        assert space_from_dict(d) == space
        assert all(isinstance(v, (str, int, float, list)) for v in d.values())
    with pytest.raises(ValueError, match="kind 'discrete' or 'box'"):
        space_from_dict({"kind": "dict"})
