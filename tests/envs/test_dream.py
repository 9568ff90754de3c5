"""The dream env: DreamEnv, DreamVectorEnv and the SB3 adapter on a tiny model trained on real Memory Maze."""

import dataclasses
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

import envs  # noqa: F401  (registers the longdream/MemoryMaze ids)
from envs.dream import (
    DreamEnv,
    DreamSB3VecEnv,
    DreamVectorEnv,
    ResetNeeded,
    register_dream,
    state_put,
    state_take,
)
from envs.episodes import load_episode

MIN_CONTEXT = 4  # the test model needs 4 real frames before it can imagine
CONTEXT = 6


@pytest.fixture(scope="session")
def real_episodes(tmp_path_factory):
    """Three short real Memory Maze 9x9 episodes (40 actions each) collected with envs.collect."""
    out = tmp_path_factory.mktemp("dream") / "episodes"
    subprocess.run(
        [sys.executable, "-m", "envs.collect", "--env", "longdream/MemoryMaze-9x9-ExtraObs-v0",
         "--episodes", "3", "--steps", "40", "--out", str(out), "--seed", "0", "--quiet"],
        check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def checkpoint(real_episodes, tmp_path_factory):
    """A tiny world model trained in seconds on the real episodes (needs 4 context frames)."""
    from worldmodel.model import world_model_config
    from worldmodel.train import TRAIN_PRESETS, train

    run = tmp_path_factory.mktemp("dream") / "run"
    cfg = world_model_config("tiny", min_context_frames=MIN_CONTEXT)
    train(TRAIN_PRESETS["tiny"], real_episodes, run, device="cpu", model_cfg=cfg, progress=False)
    return run / "checkpoint.pt"


@pytest.fixture(scope="session")
def model(checkpoint):
    from worldmodel.model import load

    return load(checkpoint, device="cpu")


@pytest.fixture
def env(model, real_episodes):
    return DreamEnv(model, real_episodes, context_frames=CONTEXT, max_episode_steps=8, device="cpu")


def _window(folder, name, start, length):
    ep = load_episode(folder / name)
    return ep["image"][start: start + length], ep["action"][start: start + length].argmax(-1)


# ---------------------------------------------------------------------- DreamEnv


def test_make_gives_the_real_envs_spaces_and_resets_on_a_real_context(checkpoint, real_episodes):
    """gymnasium.make: the real env's spaces; reset returns the last frame of the real window it names."""
    register_dream()
    env = gymnasium.make("longdream/Dream-v0", checkpoint=checkpoint, episodes=real_episodes, device="cpu",
                         context_frames=CONTEXT)
    real = gymnasium.make("longdream/MemoryMaze-9x9-v0")
    assert env.observation_space == real.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == real.action_space == spaces.Discrete(6)
    obs, info = env.reset(seed=0)
    src = info["context_source"]
    ep = load_episode(src["episode"])
    assert info["step"] == 0
    np.testing.assert_array_equal(obs, ep["image"][src["start"] + CONTEXT - 1])
    obs, reward, terminated, truncated, info = env.step(1)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert isinstance(reward, float) and terminated is False and truncated is False and info["step"] == 1


def test_reset_options_pick_episode_start_and_length(env, real_episodes):
    """Options episode/start/context_frames choose the window; the observation is its last frame."""
    obs, info = env.reset(seed=1, options={"episode": 1, "start": 5, "context_frames": 7})
    frames, _ = _window(real_episodes, "ep_00001.npz", 5, 7)
    np.testing.assert_array_equal(obs, frames[-1])
    assert info["context_source"] == {"episode": str(real_episodes / "ep_00001.npz"), "start": 5}
    obs, info = env.reset(options={"episode": "ep_00002.npz", "start": 0})
    np.testing.assert_array_equal(obs, _window(real_episodes, "ep_00002.npz", 0, CONTEXT)[0][-1])


def test_step_equals_the_models_rollout_from_the_same_context_and_seed(env, model, real_episodes):
    """Frames and rewards equal WorldModel.rollout's for the same context, actions and noise seed."""
    env.reset(seed=3, options={"episode": 0, "start": 10})
    seed = env.dream.generator.initial_seed()
    actions = [1, 1, 2, 3, 4, 5, 0]
    got = [env.step(a) for a in actions]
    frames, acts = _window(real_episodes, "ep_00000.npz", 10, CONTEXT)
    ref = model.rollout(torch.from_numpy(frames)[None], torch.from_numpy(acts)[None].long(),
                        torch.tensor([actions]), generator=torch.Generator().manual_seed(seed))
    for i, (obs, reward, *_rest) in enumerate(got):
        np.testing.assert_array_equal(obs, ref["frames"][0, i].numpy())
        assert reward == float(ref["rewards"][0, i])


def test_same_seed_same_frames_and_render(env):
    """Same seed and actions -> same context and frames, another seed -> others; render() = latest frame."""
    def run(seed):
        obs, info = env.reset(seed=seed)
        frames = [obs]
        for a in [1, 2, 1, 3, 5]:
            frames.append(env.step(a)[0])
            np.testing.assert_array_equal(env.render(), frames[-1])
        return np.stack(frames), info["context_source"]

    a, src_a = run(7)
    b, src_b = run(7)
    c, src_c = run(8)
    assert src_a == src_b
    np.testing.assert_array_equal(a, b)
    assert src_a != src_c or not np.array_equal(a, c)
    # on one fixed context, another seed still gives other dream noise, hence other frames
    opts = {"episode": 0, "start": 0}
    env.reset(seed=1, options=opts)
    f1 = env.step(1)[0]
    env.reset(seed=2, options=opts)
    f2 = env.step(1)[0]
    env.reset(seed=1, options=opts)
    assert np.array_equal(env.step(1)[0], f1) and not np.array_equal(f1, f2)


def test_user_context_and_truncation(env, real_episodes):
    """A user context is used as is; truncated at max_episode_steps, never terminated, then reset needed."""
    frames, acts = _window(real_episodes, "ep_00001.npz", 3, 5)
    obs, info = env.reset(seed=0, options={"frames": frames, "actions": acts})
    np.testing.assert_array_equal(obs, frames[-1])
    assert info["context_source"] == "user"
    flags = [env.step(0)[2:4] for _ in range(8)]
    assert flags == [(False, False)] * 7 + [(False, True)]
    with pytest.raises(ResetNeeded, match="max_episode_steps=8"):
        env.step(0)


def test_gymnasium_and_sb3_env_checkers_pass(model, real_episodes):
    """Gymnasium's and stable-baselines3's env checkers accept DreamEnv."""
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    register_dream()
    made = gymnasium.make("longdream/Dream-v0", checkpoint=model, episodes=real_episodes,
                          context_frames=CONTEXT, max_episode_steps=20)
    gym_check(made.unwrapped, skip_render_check=False)  # the spec lets it also build each render mode
    sb3_check(DreamEnv(model, real_episodes, context_frames=CONTEXT, max_episode_steps=20), warn=True)


def test_bf16_precision_stays_close_to_fp32(model, real_episodes):
    """precision='bf16' imagines the fp32 frames to within a few intensity levels; other precisions are refused."""
    runs = {}
    for prec in ("fp32", "bf16"):
        env = DreamEnv(model, real_episodes, context_frames=CONTEXT, precision=prec)
        env.reset(seed=5)
        runs[prec] = np.stack([env.step(a)[0] for a in [1, 2, 3, 1]]).astype(np.int16)
    diff = np.abs(runs["fp32"] - runs["bf16"])
    print(f"bf16 vs fp32: max {diff.max()} mean {diff.mean():.3f} intensity levels")
    assert 0 < diff.max() <= 8 and diff.mean() < 1.0  # > 0: bf16 really ran
    with pytest.raises(ValueError, match="precision='fp16'"):
        DreamEnv(model, real_episodes, precision="fp16")


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [6, -1, 1.5, np.array([1, 2]), "left"])
def test_invalid_action_raises_what_the_real_env_raises(env, bad):
    """An action outside Discrete(6) raises the exception type the real Memory Maze adapter raises."""
    from envs.memory_maze import _as_action

    with pytest.raises(Exception) as real:
        _as_action(bad)
    env.reset(seed=0)
    with pytest.raises(type(real.value), match="expected an integer in"):
        env.step(bad)


def test_step_before_reset_is_an_error(model, real_episodes):
    """step() before reset() raises (a RuntimeError like the real env's; ResetNeeded through make)."""
    env = DreamEnv(model, real_episodes, context_frames=CONTEXT)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    register_dream()
    made = gymnasium.make("longdream/Dream-v0", checkpoint=model, episodes=real_episodes,
                          context_frames=CONTEXT)
    with pytest.raises(gymnasium.error.ResetNeeded):
        made.step(0)


def test_checkpoint_for_other_spaces_names_both(model, real_episodes, tmp_path):
    """A checkpoint for other spaces than the data or the expected env is refused, naming both sides."""
    from worldmodel.model import WorldModel
    from worldmodel.utils import atomic_torch_save, config_to_dict

    cfg = model.config
    backbone = dataclasses.replace(cfg.backbone, num_actions=15)
    other = dataclasses.replace(cfg, backbone=backbone, num_actions=15)
    path = tmp_path / "other.pt"
    weights = WorldModel(other).state_dict()
    atomic_torch_save({"config": {"model": config_to_dict(other)}, "model": weights}, path)
    with pytest.raises(ValueError, match=r"Discrete\(15\).*Discrete\(6\)") as e:
        DreamEnv(path, real_episodes, context_frames=CONTEXT)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match=r"Box\(0, 255, \(64, 64, 3\).*Box\(0, 255, \(32, 32, 3\)"):
        DreamEnv(model, real_episodes, observation_space=spaces.Box(0, 255, (32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"Discrete\(6\).*Discrete\(4\)"):
        DreamVectorEnv(model, real_episodes, num_envs=2, action_space=spaces.Discrete(4))


def test_too_short_context_says_how_many_frames_are_needed(env, model, real_episodes):
    """A context shorter than the model's minimum is refused with the number of frames it needs."""
    frames, acts = _window(real_episodes, "ep_00000.npz", 0, MIN_CONTEXT - 1)
    with pytest.raises(ValueError, match=f"has {MIN_CONTEXT - 1} frame.*needs at least {MIN_CONTEXT}"):
        env.reset(options={"frames": frames, "actions": acts})
    with pytest.raises(ValueError, match=f"needs at least {MIN_CONTEXT}"):
        env.reset(options={"context_frames": 2})
    with pytest.raises(ValueError, match=f"needs at least {MIN_CONTEXT}"):
        DreamVectorEnv(model, real_episodes, num_envs=2, context_frames=1)
    with pytest.raises(ValueError, match="41 frames, fewer than the 50"):
        env.reset(options={"episode": 0, "context_frames": 50})


def test_missing_or_empty_episode_folder_is_named(model, tmp_path):
    """A missing or empty episode folder gives an error naming it."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DreamEnv(model, tmp_path / "nowhere")
    (tmp_path / "hollow").mkdir()
    with pytest.raises(FileNotFoundError, match="hollow"):
        DreamVectorEnv(model, tmp_path / "hollow", num_envs=2)


# ---------------------------------------------------------------------- batched states


def test_state_put_replaces_only_the_chosen_slots(model, real_episodes):
    """state_put writes one slot exactly; the other slots' states and next frames are untouched."""
    ctx = [_window(real_episodes, f"ep_0000{i}.npz", 2 * i, CONTEXT) for i in range(3)]
    frames = torch.from_numpy(np.stack([c[0] for c in ctx]))
    acts = torch.from_numpy(np.stack([c[1] for c in ctx])).long()
    batch = model.start(frames, acts, generator=torch.Generator().manual_seed(0))
    new = model.start(frames[2:, :4], acts[2:, :4], generator=torch.Generator().manual_seed(1))
    idx = torch.tensor([1])
    merged = state_put(batch.backbone_state, idx, new.backbone_state, batch=3)
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))  # noqa: E731
    assert same(state_take(merged, idx, 3), new.backbone_state)
    keep = torch.tensor([0, 2])
    assert same(state_take(merged, keep, 3), state_take(batch.backbone_state, keep, 3))
    assert not same(merged, batch.backbone_state)
    a = torch.tensor([1, 2, 3])
    f_old, r_old, s_old = model.step(type(batch)(batch.backbone_state, torch.Generator().manual_seed(9)), a)
    f_new, r_new, s_new = model.step(type(batch)(merged, torch.Generator().manual_seed(9)), a)
    assert torch.equal(f_old[keep], f_new[keep]) and torch.equal(r_old[keep], r_new[keep])
    assert same(state_take(s_old.backbone_state, keep, 3), state_take(s_new.backbone_state, keep, 3))
    assert not same(state_take(s_old.backbone_state, idx, 3), state_take(s_new.backbone_state, idx, 3))


def _leaves(state):
    if torch.is_tensor(state):
        return [state]
    if isinstance(state, dict):
        return [x for k in sorted(state) for x in _leaves(state[k])]
    if isinstance(state, (list, tuple)):
        return [x for v in state for x in _leaves(v)]
    return []


# ---------------------------------------------------------------------- DreamVectorEnv


def test_vector_env_with_one_slot_equals_the_single_env(model, real_episodes):
    """With num_envs=1 and one seed the vector env picks DreamEnv's context and imagines its frames."""
    single = DreamEnv(model, real_episodes, context_frames=CONTEXT, max_episode_steps=50)
    vec = DreamVectorEnv(model, real_episodes, num_envs=1, context_frames=CONTEXT, max_episode_steps=50)
    o1, i1 = single.reset(seed=11)
    o2, i2 = vec.reset(seed=11)
    assert i1["context_source"] == i2["context_source"][0]
    np.testing.assert_array_equal(o1, o2[0])
    for a in [1, 3, 3, 2, 0]:
        s = single.step(a)
        v = vec.step(np.array([a]))
        np.testing.assert_array_equal(s[0], v[0][0])
        assert s[1] == v[1][0]


def test_vector_env_autoresets_in_the_same_step(model, real_episodes):
    """SAME_STEP autoreset: final_obs is the imagined frame, obs the last frame of a new real context."""
    vec = DreamVectorEnv(model, real_episodes, num_envs=3, context_frames=CONTEXT, max_episode_steps=3)
    assert vec.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    obs, info = vec.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and vec.observation_space.contains(obs)
    acts = np.array([1, 2, 3])
    for _ in range(2):
        obs, rew, term, trunc, info = vec.step(acts)
        assert not trunc.any() and "final_obs" not in info
    before = vec.dream
    gen = torch.Generator()
    gen.set_state(before.generator.get_state())
    expect, _, _ = model.step(type(before)(before.backbone_state, gen), torch.from_numpy(acts))
    obs, rew, term, trunc, info = vec.step(acts)
    assert trunc.all() and not term.any() and info["_final_obs"].all()
    for j in range(3):
        np.testing.assert_array_equal(info["final_obs"][j], expect[j].numpy())
        assert info["final_info"]["step"][j] == 3
        src = info["context_source"][j]
        real = load_episode(src["episode"])["image"]
        np.testing.assert_array_equal(obs[j], real[src["start"] + CONTEXT - 1])
    assert (info["step"] == 0).all()
    obs, rew, term, trunc, info = vec.step(acts)
    assert (info["step"] == 1).all() and not trunc.any()


def test_vector_partial_reset_and_bad_input(model, real_episodes):
    """reset_mask resets only the chosen slots; bad actions and step before reset are refused."""
    vec = DreamVectorEnv(model, real_episodes, num_envs=3, context_frames=CONTEXT, max_episode_steps=10)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros(3, np.int64))
    vec.reset(seed=0)
    for _ in range(2):
        vec.step(np.array([1, 1, 1]))
    frames, acts = _window(real_episodes, "ep_00002.npz", 20, CONTEXT)
    obs, info = vec.reset(options={"reset_mask": np.array([False, True, False]), "frames": frames[None],
                                   "actions": acts[None]})
    assert list(info["step"]) == [2, 0, 2] and info["context_source"][1] == "user"
    np.testing.assert_array_equal(obs[1], frames[-1])
    with pytest.raises(ValueError, match=r"actions\[2\]=6"):
        vec.step(np.array([0, 1, 6]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        vec.step(np.array([0, 1]))


def test_make_vec_uses_the_vector_entry_point(model, real_episodes):
    """gymnasium.make_vec(vectorization_mode='vector_entry_point') builds a DreamVectorEnv."""
    register_dream()
    vec = gymnasium.make_vec("longdream/Dream-v0", num_envs=2, vectorization_mode="vector_entry_point",
                             checkpoint=model, episodes=real_episodes, context_frames=CONTEXT)
    assert isinstance(vec.unwrapped, DreamVectorEnv) and vec.num_envs == 2
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, 64, 64, 3)


def test_sb3_ppo_cnn_trains_on_the_vector_env(model, real_episodes):
    """SB3 PPO CnnPolicy trains on DreamVectorEnv via the adapter: timesteps, episode ends, updates."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(DreamSB3VecEnv(DreamVectorEnv(model, real_episodes, num_envs=2, context_frames=CONTEXT,
                                                    max_episode_steps=16)))
    agent = PPO("CnnPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}})
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=128)
    assert agent.num_timesteps == 128
    lengths = [ep["l"] for ep in agent.ep_info_buffer]
    assert len(lengths) == 128 // 16 and set(lengths) == {16}
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))


def test_import_envs_registers_the_dream_id_lazily():
    """`import envs` alone registers longdream/Dream-v0 (string entry points) pointing at DreamEnv/DreamVectorEnv."""
    import gymnasium

    from envs.dream import DreamEnv, DreamVectorEnv

    spec = gymnasium.spec("longdream/Dream-v0")
    assert spec.entry_point == "envs.dream:DreamEnv" and spec.vector_entry_point == "envs.dream:DreamVectorEnv"
    assert gymnasium.envs.registration.load_env_creator(spec.entry_point) is DreamEnv
    assert gymnasium.envs.registration.load_env_creator(spec.vector_entry_point) is DreamVectorEnv
