"""python -m agents.dreamer on the tiny model: learns in the dream and on real steps, resumes, evaluates."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import worldmodel
from agents.dreamer import DreamerConfig, _networks, load_agent, main, train
from agents.real import evaluate_policy
from agents.rollouts import FeaturePolicy
from planners import CEM, WorldModelDream, planner_config

TINY_CONTEXT = 4  # tests/conftest.py: TINY_MIN_CONTEXT


def _cfg(ckpt, eps, run, **kw):
    base = dict(
        checkpoint=Path(ckpt),
        episodes=Path(eps),
        run_dir=Path(run),
        steps=12,
        batch=2,
        horizon=2,
        context_frames=TINY_CONTEXT,
        hidden=16,
        eval_every=2,
        eval_episodes=1,
        eval_max_steps=3,
        final_eval_episodes=2,
        final_eval_max_steps=4,
        strip_every=1,
        checkpoint_every=1,
        deterministic_eval=True,
        device="cpu",
        progress=False,
    )
    return DreamerConfig(**{**base, **kw})


def _scalars(run: Path) -> dict:
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc.Tags()["images"]


def test_dreamer_learns_in_the_dream_and_reloads_to_the_same_actions(tiny_checkpoint, real_episodes, tmp_path):
    cfg = _cfg(tiny_checkpoint, real_episodes, tmp_path / "run")
    res = train(cfg)
    assert res["updates"] == 3 and res["env_steps"] == 12 and res["imagined_steps"] == 12
    assert res["real_steps_used"]["steps"] == 3 * 40  # the contexts folder: 3 episodes of 40 steps
    ev = res["eval"]
    assert ev["seeds"] == [3000, 3001] and [e["steps"] for e in ev["episodes"]] == [4, 4]
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["eval"] == json.loads(json.dumps(ev))
    scalars, images = _scalars(tmp_path / "run")
    for tag in ("loss/actor", "loss/critic", "actor/entropy", "dream/return_per_rollout", "real/eval_return"):
        assert tag in scalars and all(np.isfinite(scalars[tag])), tag
    assert "dream/imagined_episode" in images
    # the actor learnt: its weights moved from their initial values (same seed, same construction)
    agent = load_agent(tmp_path / "run" / "agent.pt")
    torch.manual_seed(cfg.seed)
    wm = worldmodel.load(tiny_checkpoint, device="cpu")
    init_actor, _, _ = _networks(cfg, int(wm.config.backbone.dim), agent.actor.action_space)
    moved = [not torch.equal(a, b) for a, b in zip(agent.actor.state_dict().values(), init_actor.state_dict().values())]
    assert any(moved)
    assert agent.update == 3
    # the reloaded actor acts exactly as the trained one did in the final evaluation (deterministic, same seeds)
    again = evaluate_policy(FeaturePolicy(wm, agent.actor, deterministic=True), res["env"], ev["seeds"], 4)
    assert [e["actions"] for e in again["episodes"]] == [e["actions"] for e in ev["episodes"]]
    # the critic is a planner's terminal value
    planner = CEM(planner_config("tiny"), agent.actor.action_space, terminal_value=agent.critic.as_terminal_value())
    model = WorldModelDream(wm)
    frames = np.stack([np.zeros((64, 64, 3), np.uint8)] * TINY_CONTEXT)
    plan = planner.plan(model.start(frames, np.zeros(TINY_CONTEXT, np.int64)), model)
    assert np.isfinite(plan.expected_return)


def test_dreamer_resumes_and_refuses_other_settings(tiny_checkpoint, real_episodes, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_checkpoint, real_episodes, run, steps=4, eval_every=0, strip_every=0, final_eval_episodes=1))
    assert load_agent(run / "agent.pt").update == 1
    with pytest.raises(ValueError, match="already holds a run"):
        train(_cfg(tiny_checkpoint, real_episodes, run, steps=8))
    with pytest.raises(ValueError, match="differs in horizon"):
        train(_cfg(tiny_checkpoint, real_episodes, run, steps=4, horizon=3, eval_every=0, resume=True))
    res = train(
        _cfg(
            tiny_checkpoint,
            real_episodes,
            run,
            steps=8,
            eval_every=0,
            strip_every=0,
            final_eval_episodes=1,
            resume=True,
        )
    )
    assert res["updates"] == 2 and res["env_steps"] == 8


def test_dreamer_on_real_steps(tiny_checkpoint, tmp_path):
    cfg = _cfg(
        tiny_checkpoint,
        tmp_path,
        tmp_path / "real",
        world="real",
        episodes=None,
        steps=8,
        max_episode_steps=3,
        eval_every=0,
        final_eval_episodes=1,
        strip_every=0,
    )
    res = train(cfg)
    assert res["world"] == "real" and res["imagined_steps"] == 0
    assert res["real_steps_used"]["steps"] == res["env_steps"] == 8
    scalars, _ = _scalars(tmp_path / "real")
    assert "real/train_episode_return" in scalars  # episodes of 3 steps ended and were reset inside the rollouts


def test_bad_input_names_the_value(tiny_checkpoint, real_episodes, tmp_path, capsys):
    with pytest.raises(ValueError, match="--horizon 0"):
        _cfg(tiny_checkpoint, real_episodes, tmp_path / "r", horizon=0)
    with pytest.raises(ValueError, match="--episodes DIR is required"):
        train(_cfg(tiny_checkpoint, real_episodes, tmp_path / "r", episodes=None))
    # a checkpoint whose action space differs from the env's: both named
    with pytest.raises(ValueError, match=r"action_space=Discrete\(2\).*Discrete\(6\)"):
        train(_cfg(tiny_checkpoint, real_episodes, tmp_path / "r2", env="CartPole-v1"))
    code = main(["--checkpoint", str(tmp_path / "nope.pt"), "--episodes", str(real_episodes)])
    assert code == 2 and "--checkpoint" in capsys.readouterr().err
