"""Random shooting, CEM and MPPI on synthetic models with known optima; warm start; bad configs."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from toy_models import ToyDiscreteModel, ToyQuadraticModel, start_state

from planners import CEM, MPPI, PLANNERS, DreamModel, RandomShooting, planner_config, rollout_returns
from planners.config import PlannerConfig
from planners.mppi import mppi_weights

DISCOUNT = 0.9


def _best_return(h: int) -> float:
    return sum(DISCOUNT**t for t in range(h))


def test_toy_models_implement_the_interface():
    assert isinstance(ToyDiscreteModel([0], 2), DreamModel)
    assert isinstance(ToyQuadraticModel([0.0]), DreamModel)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_each_planner_finds_the_optimum_of_a_small_discrete_problem(name):
    """3 steps of 4 actions (64 sequences): every planner finds the one scoring at every step."""
    target = [2, 0, 3]
    model = ToyDiscreteModel(target, 4)
    cfg = planner_config("tiny", horizon=3, population=128, elites=8, iterations=3, discount=DISCOUNT)
    plan = PLANNERS[name](cfg, model.action_space).plan(start_state(), model)
    assert plan.actions.tolist() == target
    assert plan.expected_return == pytest.approx(_best_return(3))
    assert plan.samples == 3 * 128 * 3


@pytest.mark.parametrize("cls", [CEM, MPPI])
def test_cem_and_mppi_refit_towards_the_optimum_random_shooting_cannot_reach(cls):
    """8 steps of 6 actions (1.7M sequences, 48 x 8 samples): the refitting planners find the optimum, random
    shooting with the same budget does not."""
    target = [5, 1, 4, 0, 2, 3, 1, 5]
    model = ToyDiscreteModel(target, 6)
    cfg = planner_config(
        "tiny", horizon=8, population=48, elites=6, iterations=8, discount=DISCOUNT, temperature=0.2, smoothing=0.0
    )
    plan = cls(cfg, model.action_space).plan(start_state(), model)
    assert plan.actions.tolist() == target
    assert plan.returns == sorted(plan.returns)  # the best return never decreases over rounds
    rs = RandomShooting(cfg, model.action_space).plan(start_state(), model)
    assert rs.expected_return < plan.expected_return


def test_all_candidates_of_a_round_go_through_the_model_as_one_batch():
    model = ToyDiscreteModel([1, 1, 1], 3)
    cfg = planner_config("tiny", horizon=3, population=16, elites=4, iterations=2)
    CEM(cfg, model.action_space).plan(start_state(), model)
    assert model.calls == [16] * 6  # 2 rounds x 3 steps, each step one batch of the whole population


@pytest.mark.parametrize("cls", [CEM, MPPI])
def test_continuous_planners_find_the_minimiser_of_a_quadratic_cost(cls):
    optimum = np.array([0.3, -0.5])
    model = ToyQuadraticModel(optimum)
    cfg = planner_config(
        "tiny", horizon=4, population=128, elites=12, iterations=10, min_std=0.005, temperature=0.05, smoothing=0.1
    )
    plan = cls(cfg, model.action_space).plan(start_state(), model)
    assert plan.actions.shape == (4, 2) and plan.actions.dtype == np.float32
    np.testing.assert_allclose(plan.actions, np.tile(optimum, (4, 1)), atol=0.05)


def test_continuous_samples_stay_inside_the_box():
    model = ToyQuadraticModel([0.99, -0.99])  # optimum at the edge: many samples fall outside before clipping
    planner = CEM(planner_config("tiny", horizon=2, population=64, elites=4), model.action_space)
    cand = planner.sample(planner.uniform(), 1000)
    assert cand.min() >= -1 and cand.max() <= 1 and cand.shape == (1000, 2, 2)


def test_warm_start_shifts_the_plan_by_one_step():
    target = [3, 1, 2, 0]
    model = ToyDiscreteModel(target, 4)
    cfg = planner_config("tiny", horizon=4, population=64, elites=4, iterations=3, warm_start=0.5, replan=1)
    planner = CEM(cfg, model.action_space)
    first = planner.plan(start_state(), model)
    probs = planner._dist.probs
    assert planner.warm_plan().tolist() == first.actions[1:].tolist() + [first.actions[-1]]
    start = planner.initial_distribution()
    np.testing.assert_allclose(start.probs[:-1], 0.5 * probs[1:] + 0.5 / 4)
    np.testing.assert_allclose(start.probs[-1], np.full(4, 0.25))
    # replan=2 shifts by two steps
    cfg2 = planner_config("tiny", horizon=4, population=64, elites=4, iterations=3, replan=2)
    p2 = CEM(cfg2, model.action_space)
    a = p2.plan(start_state(), model).actions
    assert p2.warm_plan().tolist() == a[2:].tolist() + [a[-1], a[-1]]
    # the warm plan is candidate 0 of the next decision's first round
    seen = []
    orig = model.plan_step

    def spy(state, actions, sampling_steps=None):
        seen.append(actions.clone())
        return orig(state, actions, sampling_steps)

    model.plan_step = spy
    p2.plan(start_state(), model)
    assert [int(s[0]) for s in seen[:4]] == a[2:].tolist() + [a[-1], a[-1]]
    # reset forgets it
    p2.reset()
    assert p2.warm_plan() is None


def test_no_warm_start_when_its_weight_is_zero():
    model = ToyDiscreteModel([0, 1], 2)
    planner = MPPI(planner_config("tiny", horizon=2, warm_start=0.0), model.action_space)
    planner.plan(start_state(), model)
    assert planner.warm_plan() is None
    np.testing.assert_allclose(planner.initial_distribution().probs, 0.5)


def test_terminal_value_is_added_discounted():
    """With no reward but a terminal value favouring action 2 last, the plan ends with 2 and the return is
    discount^H * value."""
    model = ToyDiscreteModel([9, 9], 3)  # target never matched: reward 0 everywhere

    def value(feats):  # features are one-hot actions of the last step
        return feats[:, 2] * 5.0

    cfg = planner_config("tiny", horizon=2, population=32, iterations=1, discount=0.5)
    plan = RandomShooting(cfg, model.action_space, terminal_value=value).plan(start_state(), model)
    assert plan.actions[-1] == 2
    assert plan.expected_return == pytest.approx(0.25 * 5.0)


def test_rollout_returns_are_discounted_sums():
    model = ToyDiscreteModel([1, 1, 1], 2)
    cand = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1]])
    got = rollout_returns(model, model.fork(start_state(), 3), cand, discount=0.5)
    np.testing.assert_allclose(got, [1.75, 0.0, 1.25])


def test_mppi_weights_are_a_stable_softmax():
    w = mppi_weights(np.array([1000.0, 999.0, 0.0]), temperature=1.0)
    np.testing.assert_allclose(w, np.array([1, np.exp(-1), 0]) / (1 + np.exp(-1)), atol=1e-12)
    assert mppi_weights(np.array([1.0, 0.0]), temperature=100.0)[1] > 0.49  # hot: nearly uniform


def test_refit_keeps_every_action_possible():
    model = ToyDiscreteModel([0, 0], 5)
    planner = CEM(planner_config("tiny", horizon=2, min_prob=0.03, smoothing=0.0), model.action_space)
    dist = planner.refit(planner.uniform(), np.zeros((8, 2), np.int64), np.arange(8.0))
    assert dist.probs.min() == pytest.approx(0.03)
    np.testing.assert_allclose(dist.probs.sum(-1), 1.0)


def test_planner_refuses_a_model_with_another_action_space():
    planner = CEM(planner_config("tiny"), spaces.Discrete(6))
    with pytest.raises(ValueError, match="action space mismatch.*Discrete\\(6\\).*Discrete\\(4\\)"):
        planner.plan(start_state(), ToyDiscreteModel([0], 4))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("horizon", 0, "horizon=0"),
        ("population", 0, "population=0"),
        ("elites", 65, "elites=65 > population=64"),
        ("iterations", 0, "iterations=0"),
        ("temperature", 0.0, "temperature=0.0"),
        ("temperature", -1.0, "temperature=-1.0"),
        ("discount", 0.0, "discount=0.0"),
        ("discount", 1.5, "discount=1.5"),
        ("replan", 9, "replan=9 > horizon=8"),
        ("sampling_steps", 0, "sampling_steps=0"),
        ("smoothing", 1.0, "smoothing=1.0"),
        ("warm_start", -0.1, "warm_start=-0.1"),
        ("min_std", 0.0, "min_std=0.0"),
        ("max_std", 0.01, "max_std=0.01"),
        ("horizon", 2.5, "horizon=2.5"),
        ("seed", -1, "seed=-1"),
    ],
)
def test_bad_configs_name_the_field_and_value(field, value, message):
    base = dict(horizon=8, population=64, elites=8)
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        PlannerConfig(**{**base, field: value})


def test_bad_preset_and_unknown_fields():
    with pytest.raises(ValueError, match="preset='huge'"):
        planner_config("huge")
    with pytest.raises(ValueError, match="horizn"):
        planner_config("cpu", horizn=3)
    with pytest.raises(ValueError, match="min_prob=0.5: with 6 actions"):
        CEM(planner_config("tiny", min_prob=0.5), spaces.Discrete(6))


def test_presets_sizes():
    gpu = planner_config("gpu")
    assert (gpu.population, gpu.iterations) == (512, 6)
    assert planner_config("cpu").samples_per_decision < gpu.samples_per_decision


def test_unsupported_action_space():
    with pytest.raises(ValueError, match="action_space=MultiDiscrete"):
        CEM(planner_config("tiny"), spaces.MultiDiscrete([2, 2]))
    with pytest.raises(ValueError, match="bounded Box"):
        CEM(planner_config("tiny"), spaces.Box(-np.inf, np.inf, (2,), np.float32))


def test_toy_model_state_is_not_modified_by_planning():
    model = ToyDiscreteModel([1, 0], 2)
    state = start_state()
    CEM(planner_config("tiny", horizon=2), model.action_space).plan(state, model)
    assert torch.equal(state, start_state())


def test_continuous_warm_start_shifts_the_means_and_resets_the_std():
    model = ToyQuadraticModel([0.5, -0.5])
    cfg = planner_config("tiny", horizon=3, population=32, elites=4, iterations=2, warm_start=1.0, max_std=0.4)
    planner = MPPI(cfg, model.action_space)
    planner.plan(start_state(), model)
    prev = planner._dist
    start = planner.initial_distribution()
    np.testing.assert_allclose(start.mean[:-1], prev.mean[1:])
    np.testing.assert_allclose(start.mean[-1], [0.0, 0.0])  # the new last step starts at the box centre
    np.testing.assert_allclose(start.std, 0.4 * 2.0)  # max_std of the range [-1, 1]


def test_discrete_refits_known_answers():
    """CEM: the elites' action frequencies; MPPI: the elites weighted by softmax(return / T); both smoothed."""
    cand = np.array([[0, 1], [0, 2], [1, 2], [2, 2]])  # (4, H=2), 3 actions
    returns = np.array([3.0, 2.0, 1.0, 0.0])
    kw = dict(horizon=2, population=4, elites=2, min_prob=0.0, smoothing=0.5, temperature=1.0)
    cem = CEM(planner_config("tiny", **kw), spaces.Discrete(3))
    got = cem.refit(cem.uniform(), cand, returns).probs
    freq = np.array([[1.0, 0, 0], [0, 0.5, 0.5]])  # elites: candidates 0 and 1
    np.testing.assert_allclose(got, 0.5 / 3 + 0.5 * freq)
    mppi = MPPI(planner_config("tiny", **kw), spaces.Discrete(3))
    got = mppi.refit(mppi.uniform(), cand, returns).probs
    w0 = 1 / (1 + np.exp(-1.0))  # softmax([3, 2]) of the two elites
    np.testing.assert_allclose(got, 0.5 / 3 + 0.5 * np.array([[1.0, 0, 0], [0, w0, 1 - w0]]))


def test_gaussian_refits_known_answers_and_std_bounds():
    """Box: CEM's elite mean and std, MPPI's softmax-weighted ones; stds clipped to [min_std, max_std] x range."""
    space = spaces.Box(-2.0, 2.0, (1,), np.float32)  # range 4
    kw = dict(horizon=1, population=4, elites=2, smoothing=0.0, temperature=0.5, min_std=0.01, max_std=0.5)
    cand = np.array([[[1.0]], [[-1.0]], [[0.0]], [[2.0]]], np.float32)  # (4, 1, 1)
    returns = np.array([1.0, 0.5, 0.0, -1.0])
    cem = CEM(planner_config("tiny", **kw), space)
    d = cem.refit(cem.uniform(), cand, returns)
    np.testing.assert_allclose(d.mean, [[0.0]], atol=1e-6)
    np.testing.assert_allclose(d.std, [[1.0]], rtol=1e-6)  # population std of {1, -1}
    mppi = MPPI(planner_config("tiny", **kw), space)
    d = mppi.refit(mppi.uniform(), cand, returns)
    w = np.exp(np.array([1.0, 0.5]) / 0.5)
    w /= w.sum()
    mean = w[0] * 1.0 - w[1] * 1.0
    np.testing.assert_allclose(d.mean, [[mean]], rtol=1e-5)
    np.testing.assert_allclose(d.std, [[np.sqrt(w[0] * (1 - mean) ** 2 + w[1] * (1 + mean) ** 2)]], rtol=1e-5)
    # identical elites: std floored at min_std x range; far-apart elites under a small max_std: capped
    same = np.array([[[0.5]], [[0.5]], [[0.0]], [[0.0]]], np.float32)
    np.testing.assert_allclose(cem.refit(cem.uniform(), same, returns).std, [[0.01 * 4]], rtol=1e-6)
    narrow = CEM(planner_config("tiny", **{**kw, "max_std": 0.1}), space)
    np.testing.assert_allclose(narrow.refit(narrow.uniform(), cand, returns).std, [[0.1 * 4]], rtol=1e-6)
    # smoothing blends the previous distribution (mean and std) with the refit
    smooth = CEM(planner_config("tiny", **{**kw, "smoothing": 0.25}), space)
    d = smooth.refit(smooth.uniform(), cand, returns)
    np.testing.assert_allclose(d.mean, [[0.0]], atol=1e-6)
    np.testing.assert_allclose(d.std, [[0.25 * 0.5 * 4 + 0.75 * 1.0]], rtol=1e-6)
