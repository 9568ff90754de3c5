"""The world model's planning side on the shared tiny model: forks, plan_step, observe, batched == single."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_MIN_CONTEXT
from gymnasium import spaces

from envs.episodes import load_episode
from planners import CEM, WorldModelDream, planner_config, rollout_returns
from worldmodel.model import DreamState
from worldmodel.state import map_state


def _episode(real_episodes):
    ep = load_episode(sorted(real_episodes.glob("*.npz"))[0])
    return ep["image"], ep["action"].argmax(-1).astype(np.int64)


def _snapshot(state: DreamState):
    return map_state(lambda t: t.clone(), state.backbone_state), state.generator.get_state().clone()


def _assert_same(state: DreamState, snap):
    tensors, gen = snap
    flat_a, flat_b = [], []
    map_state(lambda t: flat_a.append(t) or t, state.backbone_state)
    map_state(lambda t: flat_b.append(t) or t, tensors)
    assert len(flat_a) == len(flat_b) > 0
    for a, b in zip(flat_a, flat_b):
        assert torch.equal(a, b)
    assert torch.equal(state.generator.get_state(), gen)


@pytest.fixture(scope="module")
def dream(tiny_model):
    return WorldModelDream(tiny_model)


@pytest.fixture(scope="module")
def history(real_episodes):
    return _episode(real_episodes)


def test_forking_and_stepping_the_copies_leaves_the_original_untouched(dream, history):
    frames, actions = history
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT])
    snap = _snapshot(state)
    many = dream.fork(state, 5)
    assert many.backbone_state["t"].tolist() == [TINY_MIN_CONTEXT] * 5
    r, feats, after = dream.plan_step(many, torch.arange(5) % 6, sampling_steps=1)
    dream.model.step(many, torch.zeros(5, dtype=torch.long))
    dream.observe(state, frames[TINY_MIN_CONTEXT], actions[TINY_MIN_CONTEXT])
    _assert_same(state, snap)
    assert after.backbone_state["t"].tolist() == [TINY_MIN_CONTEXT + 1] * 5
    assert r.shape == (5,) and feats.shape == (5, dream.model.config.backbone.dim)
    assert ((r >= 0) & (r <= 1)).all()


def test_a_batched_rollout_of_n_candidates_equals_n_single_rollouts(dream, history):
    frames, actions = history
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT], seed=3)
    cand = np.random.default_rng(0).integers(0, 6, size=(6, 4))
    batched = rollout_returns(dream, dream.fork(state, 6), cand, discount=0.9, sampling_steps=2)
    singles = [rollout_returns(dream, dream.fork(state, 1), c[None], discount=0.9, sampling_steps=2)[0] for c in cand]
    np.testing.assert_allclose(batched, singles, rtol=1e-4, atol=1e-6)
    assert len(set(np.round(batched, 6))) > 1  # the candidates differ: the test compares something


def test_expected_reward_matches_the_event_threshold(tiny_model):
    feats = torch.randn(64, tiny_model.config.backbone.dim) * 3
    p = tiny_model.expected_reward(feats)
    np.testing.assert_array_equal((p > 0.5).numpy(), tiny_model.reward_events(feats).numpy())


def test_expected_reward_is_the_event_probability_the_weighted_bce_was_fitted_to(tiny_model):
    """A reward head fitted by the training loss (BCE, positives weighing reward_pos_weight) to events of rate
    0.2 predicts an expected reward of 0.2 (not the logit's plain sigmoid, which the weighting inflates)."""
    w = tiny_model.config.reward_pos_weight
    assert w != 1.0  # otherwise the test could not tell the two apart
    target = torch.tensor([1.0] * 2 + [0.0] * 8)  # event rate 0.2
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([bias], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(bias.expand(10), target, pos_weight=torch.tensor(w))
        loss.backward()
        return loss

    opt.step(closure)
    model = copy.deepcopy(tiny_model)
    last = model.reward_head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias.detach())
    p = model.expected_reward(torch.randn(3, model.config.backbone.dim))
    torch.testing.assert_close(p, torch.full((3,), 0.2), atol=1e-4, rtol=0)


def test_plan_step_never_decodes_and_uses_its_own_denoising_steps(dream, history, monkeypatch):
    """plan_step calls the backbone sampling_steps times (+1 commit pass; x2 under guidance) and no decoder."""
    frames, actions = history
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT])
    model = dream.model

    def no_decoding(*args, **kwargs):
        raise AssertionError("plan_step decoded pixels")

    monkeypatch.setattr(model, "decode_latents", no_decoding)
    calls = []
    real_step = model.backbone.step
    monkeypatch.setattr(model.backbone, "step", lambda *a, **k: calls.append(1) or real_step(*a, **k))
    per_denoise = 1 if model.config.diffusion.guidance == 1.0 else 2
    for steps in (1, 3):
        calls.clear()
        dream.plan_step(dream.fork(state, 4), torch.arange(4), sampling_steps=steps)
        assert len(calls) == steps * per_denoise + 1


def test_plan_step_follows_step_without_decoding(dream, history):
    """With the same denoising steps and one dream, plan_step's new state is step's (same noise draws)."""
    frames, actions = history
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT], seed=1)
    a = torch.tensor([1])
    _, rew_event, s1 = dream.model.step(state, a)
    p, _, s2 = dream.plan_step(state, a, sampling_steps=None)
    torch.testing.assert_close(s1.backbone_state, s2.backbone_state, rtol=1e-4, atol=1e-5)
    assert bool(rew_event[0]) == bool(p[0] > 0.5)


def test_observe_equals_start_on_the_same_frames(dream, history):
    frames, actions = history
    n = TINY_MIN_CONTEXT + 3
    full = dream.start(frames[:n], actions[:n], seed=7)
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT], seed=7)
    for i in range(TINY_MIN_CONTEXT, n):
        state = dream.observe(state, frames[i], actions[i])
    assert dream.frames_seen(state) == dream.frames_seen(full) == n
    torch.testing.assert_close(state.backbone_state, full.backbone_state, rtol=1e-4, atol=1e-4)
    r1, _, _ = dream.plan_step(state, torch.tensor([2]))
    r2, _, _ = dream.plan_step(full, torch.tensor([2]))
    torch.testing.assert_close(r1, r2, rtol=1e-3, atol=1e-5)


def test_observe_checks_its_inputs(dream, history):
    frames, actions = history
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT])
    with pytest.raises(ValueError, match="frames must be \\(B, 64, 64, 3\\) uint8"):
        dream.model.observe(state, torch.zeros(1, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="actions must be integers in \\[0, 6\\)"):
        dream.observe(state, frames[0], 7)
    with pytest.raises(ValueError, match="sampling_steps=0"):
        dream.plan_step(state, torch.tensor([0]), sampling_steps=0)


def test_planning_in_the_tiny_world_model(dream, history):
    frames, actions = history
    state = dream.start(frames[:TINY_MIN_CONTEXT], actions[:TINY_MIN_CONTEXT])
    plan = CEM(planner_config("tiny"), dream.action_space).plan(state, dream)
    assert plan.actions.shape == (3,) and plan.actions.dtype == np.int64
    assert 0 <= plan.expected_return <= 3
    assert plan.samples == 2 * 8 * 3


def test_world_model_refuses_other_spaces(tiny_model):
    with pytest.raises(ValueError, match="action_space=Discrete\\(17\\).*trained for action space Discrete\\(6\\)"):
        WorldModelDream(tiny_model, action_space=spaces.Discrete(17))
    with pytest.raises(ValueError, match="observation_space=Box"):
        WorldModelDream(tiny_model, observation_space=spaces.Box(0, 255, (32, 32, 3), np.uint8))
