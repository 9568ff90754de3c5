"""Crafter: the Gymnasium adapter, collection into the episode store, and the loop (train -> dream) on its data."""

import dataclasses
import re
import shlex
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from benchmarks.recall import PROTOCOLS
from envs.collect import CollectConfig, check_config, collect, main
from envs.crafter import ACHIEVEMENT_NAMES, ACTION_NAMES, ITEM_NAMES, CrafterEnv
from envs.episodes import EpisodeStore, load_episode
from worldmodel.train import TRAIN_PRESETS, train

ENV = "longdream/Crafter-v0"
ROOT = Path(__file__).resolve().parents[2]
STATE = ("player_pos", "inventory", "achievements")


def _run(env, seed, actions):
    """Frames (reset frame first), world maps, rewards and the last info of ``actions`` from ``reset(seed)``,
    up to the end of the episode."""
    obs, info = env.reset(seed=seed)
    frames, maps, rewards = [obs], [info["semantic"]], []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(int(a))
        frames.append(obs)
        maps.append(info["semantic"])
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.stack(frames), np.stack(maps), rewards, info


# ---------------------------------------------------------------------------------------------- the adapter


def test_registered_ids_spaces_and_gymnasiums_env_checker():
    """Both ids are registered with Crafter's 10000-step limit; 64x64x3 uint8 frames, Discrete(17); Gymnasium's
    check_env passes (on a 16-cell world: it resets a dozen times, and a 64-cell world takes ~1 s to generate)."""
    assert envs.CRAFTER_IDS == ["longdream/Crafter-v0", "longdream/CrafterNoReward-v0"]
    assert set(envs.CRAFTER_IDS) <= set(envs.REAL_ENV_IDS)
    for env_id in envs.CRAFTER_IDS:
        assert gymnasium.spec(env_id).max_episode_steps == 10_000
    env = gymnasium.make(ENV)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(17) and len(ACTION_NAMES) == 17
    check_env(gymnasium.make(ENV, area=16).unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 10  # a real picture, not blank
    env.close()


def test_the_same_seed_gives_the_same_world_and_frames():
    """reset(seed) replays exactly under the same actions, in another env too: frames, world map, rewards, the
    step the player dies (stock Crafter's despawning drifted within 10-20 steps on these seeds, see envs.crafter);
    another seed or an unseeded reset is another world."""
    actions = np.random.default_rng(0).integers(0, 17, 150)
    for seed in (0, 3):  # 24-cell worlds generate in ~0.2 s
        first = _run(CrafterEnv(area=24), seed, actions)
        shift = [object() for _ in range(2000)]  # another memory layout for the second env's objects
        second = _run(CrafterEnv(area=24), seed, actions)
        for x, y in zip(first[:3], second[:3]):
            np.testing.assert_array_equal(x, y)
        assert first[3]["inventory"] == second[3]["inventory"] and len(shift) == 2000
    env = gymnasium.make(ENV)  # Crafter's own 64-cell world
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(gymnasium.make(ENV).reset(seed=7)[0], obs)
    assert not np.array_equal(env.reset(seed=8)[0], obs)
    small = CrafterEnv(area=24)
    seeded, _ = small.reset(seed=7)
    assert not np.array_equal(small.reset()[0], seeded)
    env.close()


def test_info_holds_achievements_inventory_and_the_player_position():
    """reset and step report Crafter's 22 achievements and 16 inventory entries; moving left moves the player."""
    env = gymnasium.make(ENV)
    _, info = env.reset(seed=3)
    assert set(info["achievements"]) == set(ACHIEVEMENT_NAMES) and len(ACHIEVEMENT_NAMES) == 22
    assert not any(info["achievements"].values())
    assert list(info["inventory"]) == list(ITEM_NAMES) and info["inventory"]["health"] == 9
    start = info["player_pos"].copy()
    assert start.dtype.kind == "i" and info["step"] == 0 and info["semantic"].shape == (64, 64)
    _, _, _, _, info = env.step(ACTION_NAMES.index("move_left"))
    assert info["step"] == 1 and set(info["achievements"]) == set(ACHIEVEMENT_NAMES)
    assert info["player_pos"][0] in (start[0] - 1, start[0]) and info["player_pos"][1] == start[1]  # or blocked
    state = CrafterEnv.episode_state(info)
    assert {k: (v.shape, v.dtype) for k, v in state.items()} == {
        "player_pos": ((2,), np.int32),
        "inventory": ((16,), np.int32),
        "achievements": ((22,), np.int32),
    }
    env.close()


def test_death_terminates_and_the_no_reward_variant_keeps_crafters_reward_in_info():
    """A dead player ends the episode (terminated, not truncated) and step() then refuses; CrafterNoReward-v0
    returns 0 while info['reward'] holds Crafter's (here -0.1 per health point lost)."""
    env = CrafterEnv(reward=False)
    env.reset(seed=1)
    env._env._player.health = 1
    env._env._player._recover = -100  # the next step costs a health point: the player dies
    _, reward, terminated, truncated, info = env.step(0)
    assert (reward, terminated, truncated, info["discount"]) == (0.0, True, False, 0.0)
    assert info["reward"] == pytest.approx(-0.9)  # Crafter's reward: 9 health points lost since the last step
    with pytest.raises(RuntimeError, match="after the episode ended; call reset"):
        env.step(0)
    env.reset(seed=1)
    env._env._player.health = 3
    env._env._player._recover = -100  # a health point lost, two left: the episode goes on
    _, _, terminated, _, info = env.step(0)
    assert not terminated and info["inventory"]["health"] == 2


@pytest.mark.parametrize("action, match", [(17, r"action=17: expected an integer in \[0, 17\) \(noop"), (1.5, "1.5")])
def test_bad_actions_and_options_are_named(action, match):
    env = CrafterEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    with pytest.raises(TypeError, match=r"unknown options \['fast'\]"):
        CrafterEnv(fast=True)
    with pytest.raises(ValueError, match="CrafterConfig.size=4: expected an integer >= 9"):
        CrafterEnv(size=4)


# ---------------------------------------------------------------------------------------------- collection


def test_collect_two_episodes_replays_and_resumes(tmp_path):
    """Two random_repeat episodes hold image/action/reward and the per-frame state; replaying the actions in a
    fresh env gives the same frames; a lost file is collected again, identical, the other one skipped."""
    out = tmp_path / "crafter"
    cfg = CollectConfig(env=ENV, episodes=2, steps=12, out=str(out), seed=5, policy="random_repeat")
    summary = collect(cfg, progress=False)
    assert (summary["collected"], summary["steps"]) == (2, 24)
    store = EpisodeStore(out)
    assert store.lengths == [13, 13] and store.manifest["env"] == ENV and store.manifest["policy"] == "random_repeat"
    assert store.manifest["versions"]["crafter"] == "1.8.3"
    data = load_episode(store.paths[1], keys=["image", "action", "reward", *STATE])
    assert {k: (v.shape, v.dtype) for k, v in data.items()} == {
        "image": ((13, 64, 64, 3), np.uint8),
        "action": ((13, 17), np.float32),
        "reward": ((13,), np.float32),
        "player_pos": ((13, 2), np.int32),
        "inventory": ((13, 16), np.int32),
        "achievements": ((13, 22), np.int32),
    }
    assert not data["action"][0].any() and np.all(data["action"][1:].sum(1) == 1)
    frames, _, rewards, _ = _run(gymnasium.make(ENV), 6, data["action"][1:].argmax(1))  # episode 1 = seed 5 + 1
    np.testing.assert_array_equal(frames, data["image"])
    np.testing.assert_array_equal(np.float32(rewards), data["reward"][1:])

    (out / "ep_00001.npz").unlink()
    again = collect(cfg, progress=False)
    assert (again["skipped"], again["collected"]) == (1, 1)
    redone = load_episode(out / "ep_00001.npz", keys=list(data))
    for k in data:
        np.testing.assert_array_equal(redone[k], data[k])


def test_makefile_collection_commands_are_accepted_and_maze_policies_refused(tmp_path, monkeypatch, capsys):
    """The data-crafter target's commands parse and pass every check; Memory Maze's explore policy is refused for
    Crafter before anything is written, naming the policies that fit."""
    recipe = re.search(r"^data-crafter:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    commands = [c for c in recipe.replace("\\\n", " ").split("\n") if "envs.collect" in c]
    assert len(commands) == 2
    seen = []
    monkeypatch.setattr(
        "envs.collect.collect",
        lambda cfg, progress: (
            seen.append(cfg) or {"out": cfg.out, "collected": 0, "skipped": 0, "steps": 0, "seconds": 0}
        ),
    )
    for i, command in enumerate(commands):
        argv = shlex.split(command.split("envs.collect", 1)[1])
        argv = [str(tmp_path / f"out{i}") if a.startswith("$(") else a for a in argv]
        assert main(argv) == 0
    assert [(c.env, c.policy, c.steps) for c in seen] == [(ENV, "random_repeat", 500)] * 2
    assert [check_config(c) for c in seen] == [500, 500]
    out = tmp_path / "refused"
    monkeypatch.undo()
    assert main(["--env", ENV, "--steps", "5", "--out", str(out), "--policy", "explore", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--policy explore: reads info keys agent_pos, agent_dir, maze_layout" in err
    assert "use one of random, random_repeat" in err and not out.exists()


# ---------------------------------------------------------------------------------------------- the loop


def test_tiny_world_model_on_crafter_episodes_gives_a_discrete_17_dream(tmp_path):
    """Train the tiny preset a few steps on tiny Crafter episodes: the checkpoint knows Crafter's 17 actions and
    env id, and the dream env built from it has Crafter's spaces and steps with action 16."""
    eps = tmp_path / "eps"
    collect(CollectConfig(env=ENV, episodes=3, steps=24, out=str(eps), policy="random_repeat"), progress=False)
    cfg = dataclasses.replace(TRAIN_PRESETS["tiny"], steps=2, ae_steps=2)
    model, _ = train(cfg, eps, tmp_path / "run", device="cpu", progress=False)
    assert (model.config.env_id, model.config.num_actions) == (ENV, 17)
    dream = gymnasium.make("longdream/Dream-v0", checkpoint=str(tmp_path / "run" / "checkpoint.pt"), episodes=eps)
    assert dream.action_space == gymnasium.spaces.Discrete(17)
    assert dream.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    obs, _ = dream.reset(seed=0)
    obs, reward, terminated, truncated, _ = dream.step(16)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and not terminated
    with pytest.raises(ValueError, match=r"action=17: expected an integer in \[0, 17\)"):
        dream.step(17)
    dream.close()


def test_the_crafter_recall_protocol_fits_the_crafter_training_window():
    """The reasoning windows (context + generated) fit the crafter preset's last training window."""
    p, t = PROTOCOLS["crafter"], TRAIN_PRESETS["crafter"]
    assert p.reasoning_context + p.reasoning_horizon <= t.max_window == 48
    assert p.reasoning_context == 2 * p.reasoning_horizon  # the paper's Minecraft 100 + 50
