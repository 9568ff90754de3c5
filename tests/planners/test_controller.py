"""The MPC controller on the tiny trained model and the real Memory Maze env: it stays in step with reality."""

import gymnasium
import numpy as np
import pytest
import torch
from conftest import TINY_MIN_CONTEXT
from gymnasium import spaces

import envs  # noqa: F401  (registers the ids)
from planners import CEM, MPCController, RandomShooting, WorldModelDream, planner_config
from planners.controller import frame_of

ENV = "longdream/MemoryMaze-9x9-ExtraObs-v0"


@pytest.fixture(scope="module")
def env():
    e = gymnasium.make(ENV)
    yield e
    e.close()


def test_controller_keeps_the_model_state_in_step_with_the_real_frames(tiny_model, env):
    dream = WorldModelDream(tiny_model)
    controller = MPCController(dream, CEM(planner_config("tiny"), dream.action_space), record=2)
    steps = TINY_MIN_CONTEXT + 3
    res = controller.run_episode(env, seed=2000, max_steps=steps, keep_frames=True)
    assert res.steps == steps and len(res.rewards) == steps and len(res.actions) == steps
    assert res.frames_seen == steps + 1 == len(res.frames)  # the reset frame + one per real step
    # warm-up noops until the model has TINY_MIN_CONTEXT real frames, then one decision per step (replan 1)
    assert res.actions[: TINY_MIN_CONTEXT - 1] == [0] * (TINY_MIN_CONTEXT - 1)
    assert [d.step for d in res.decisions] == list(range(TINY_MIN_CONTEXT - 1, steps))
    assert [d.state is not None for d in res.decisions] == [True, True] + [False] * (len(res.decisions) - 2)
    # the executed actions are the first action of each plan
    assert res.actions[TINY_MIN_CONTEXT - 1 :] == [int(d.plan.actions[0]) for d in res.decisions]
    # the recorded state of a decision holds exactly the real frames seen before it
    assert dream.frames_seen(res.decisions[1].state) == res.decisions[1].step + 1
    # and equals start() on those real frames (the same seed)
    k = res.decisions[1].step + 1
    direct = dream.start(res.frames[:k], np.array([0] + res.actions[: k - 1]), seed=2000)
    torch.testing.assert_close(res.decisions[1].state.backbone_state, direct.backbone_state, rtol=1e-4, atol=1e-4)


def test_replan_interval_executes_several_planned_actions(tiny_model, env):
    dream = WorldModelDream(tiny_model)
    planner = RandomShooting(planner_config("tiny", replan=2), dream.action_space)
    res = MPCController(dream, planner).run_episode(env, seed=2001, max_steps=TINY_MIN_CONTEXT + 3)
    first = TINY_MIN_CONTEXT - 1
    assert [d.step for d in res.decisions] == [first, first + 2]
    assert res.actions[first : first + 2] == res.decisions[0].plan.actions[:2].tolist()
    assert res.frames_seen == res.steps + 1


def test_controller_refuses_an_env_with_other_spaces(tiny_model):
    dream = WorldModelDream(tiny_model)
    controller = MPCController(dream, CEM(planner_config("tiny"), dream.action_space))

    class Other(gymnasium.Env):
        action_space = spaces.Discrete(17)
        observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)

    with pytest.raises(ValueError, match="action space mismatch: the env has action_space=Discrete\\(17\\)"):
        controller.run_episode(Other(), seed=0, max_steps=3)
    Other.action_space = spaces.Discrete(6)
    Other.observation_space = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="observation space mismatch"):
        controller.run_episode(Other(), seed=0, max_steps=3)
    with pytest.raises(ValueError, match="max_steps=0"):
        controller.run_episode(Other(), seed=0, max_steps=0)


def test_controller_refuses_a_planner_for_another_action_space(tiny_model):
    dream = WorldModelDream(tiny_model)
    with pytest.raises(ValueError, match="action space mismatch: planner Discrete\\(4\\) vs model Discrete\\(6\\)"):
        MPCController(dream, CEM(planner_config("tiny"), spaces.Discrete(4)))


def test_frame_of_dict_observations():
    img = np.zeros((64, 64, 3), np.uint8)
    assert frame_of({"image": img}) is img
    with pytest.raises(ValueError, match="'image' entry"):
        frame_of({"rgb": img})
