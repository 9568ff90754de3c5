"""The dream env: DreamEnv, DreamVectorEnv and the SB3 adapter on the shared tiny model trained on real Memory Maze."""

import copy
import dataclasses
import shutil
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from conftest import TINY_MIN_CONTEXT
from gymnasium import spaces

import envs  # noqa: F401  (registers the longdream/MemoryMaze and Dream ids)
from envs.dream import DreamEnv
from envs.dream_core import ClosedEnvError, ResetNeeded
from envs.dream_vector import DreamVectorEnv
from envs.episodes import EpisodeError, load_episode
from envs.memory_maze import _as_action
from envs.sb3 import DreamSB3VecEnv
from worldmodel.model import NonFiniteWeightsError, WorldModel
from worldmodel.utils import atomic_torch_save, config_to_dict

MIN_CONTEXT = TINY_MIN_CONTEXT  # the test model needs 4 real frames before it can imagine
CONTEXT = 6


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


@pytest.fixture
def env(model, real_episodes):
    return DreamEnv(model, real_episodes, context_frames=CONTEXT, max_episode_steps=8, device="cpu")


def _window(folder, name, start, length):
    ep = load_episode(folder / name)
    return ep["image"][start : start + length], ep["action"][start : start + length].argmax(-1)


# ---------------------------------------------------------------------- DreamEnv


def test_make_gives_the_real_envs_spaces_and_resets_on_a_real_context(checkpoint, real_episodes):
    """gymnasium.make: the real env's spaces; reset returns the last frame of the real window it names."""
    env = gymnasium.make(
        "longdream/Dream-v0", checkpoint=checkpoint, episodes=real_episodes, device="cpu", context_frames=CONTEXT
    )
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
    ref = model.rollout(
        torch.from_numpy(frames)[None],
        torch.from_numpy(acts)[None].long(),
        torch.tensor([actions]),
        generator=torch.Generator().manual_seed(seed),
    )
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
    assert src_a != src_c and not np.array_equal(a, c)  # seed 8 draws another window (checked once: fixed)
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

    made = gymnasium.make(
        "longdream/Dream-v0", checkpoint=model, episodes=real_episodes, context_frames=CONTEXT, max_episode_steps=20
    )
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
    made = gymnasium.make("longdream/Dream-v0", checkpoint=model, episodes=real_episodes, context_frames=CONTEXT)
    with pytest.raises(gymnasium.error.ResetNeeded):
        made.step(0)


def test_checkpoint_for_other_spaces_names_both(model, real_episodes, tmp_path):
    """A checkpoint for other spaces than the data or the expected env is refused, naming both sides."""
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


def test_a_model_instance_with_non_finite_weights_is_refused(model, real_episodes):
    """A WorldModel handed to the env directly gets the same finite-weights check as a checkpoint file."""
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.reward_head[0].bias[0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"<WorldModel instance>: weight tensor 'reward_head\.0\.bias'"):
        DreamEnv(bad, real_episodes, context_frames=CONTEXT)


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
    obs, info = vec.reset(
        options={"reset_mask": np.array([False, True, False]), "frames": frames[None], "actions": acts[None]}
    )
    assert list(info["step"]) == [2, 0, 2] and info["context_source"][1] == "user"
    np.testing.assert_array_equal(obs[1], frames[-1])
    with pytest.raises(ValueError, match=r"actions\[2\]=6"):
        vec.step(np.array([0, 1, 6]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        vec.step(np.array([0, 1]))


def test_make_vec_uses_the_vector_entry_point(model, real_episodes):
    """gymnasium.make_vec(vectorization_mode='vector_entry_point') builds a DreamVectorEnv."""
    vec = gymnasium.make_vec(
        "longdream/Dream-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        checkpoint=model,
        episodes=real_episodes,
        context_frames=CONTEXT,
    )
    assert isinstance(vec.unwrapped, DreamVectorEnv) and vec.num_envs == 2
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, 64, 64, 3)


def test_sb3_ppo_cnn_trains_on_the_vector_env(model, real_episodes):
    """SB3 PPO CnnPolicy trains on DreamVectorEnv via the adapter: timesteps, episode ends, updates."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(
        DreamSB3VecEnv(DreamVectorEnv(model, real_episodes, num_envs=2, context_frames=CONTEXT, max_episode_steps=16))
    )
    agent = PPO(
        "CnnPolicy",
        venv,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}},
    )
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=128)
    assert agent.num_timesteps == 128
    lengths = [ep["l"] for ep in agent.ep_info_buffer]
    assert len(lengths) == 128 // 16 and set(lengths) == {16}
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))


def test_import_envs_registers_the_dream_id_without_importing_torch():
    """`import envs` alone registers longdream/Dream-v0 with string entry points, in a fresh interpreter that
    then has no torch (nor the world model) imported; the entry points load DreamEnv and DreamVectorEnv."""
    code = (
        "import sys, gymnasium, envs; spec = gymnasium.spec('longdream/Dream-v0'); "
        "print(spec.entry_point, spec.vector_entry_point, 'torch' in sys.modules, 'worldmodel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["envs.dream:DreamEnv", "envs.dream_vector:DreamVectorEnv", "False", "False"]
    spec = gymnasium.spec("longdream/Dream-v0")
    assert gymnasium.envs.registration.load_env_creator(spec.entry_point) is DreamEnv
    assert gymnasium.envs.registration.load_env_creator(spec.vector_entry_point) is DreamVectorEnv


# ---------------------------------------------------------------------- defects found by trying to break it


def _copy_folder(src, dst):
    dst.mkdir()
    for p in sorted(src.glob("*.npz")):
        shutil.copy(p, dst / p.name)
    return dst


def test_bad_episode_is_reported_at_the_draw_not_at_random(model, real_episodes, tmp_path):
    """An episode with NaN rewards (header fine) fails the draw that picks it with an EpisodeError naming the
    file, before any state changes; with skip_bad it is reported once, dropped, and never drawn again."""
    folder = _copy_folder(real_episodes, tmp_path / "eps")
    ep = load_episode(folder / "ep_00001.npz")
    ep["reward"][5] = np.nan
    np.savez_compressed(folder / "ep_00001.npz", **ep)  # raw write: save_episode would refuse it
    env = DreamEnv(model, folder, context_frames=CONTEXT)
    with pytest.raises(EpisodeError, match=r"ep_00001\.npz: 'reward' has non-finite values"):
        env.reset(options={"episode": 1})
    with pytest.raises(ResetNeeded):
        env.step(0)  # the failed reset left no half-started episode
    with pytest.warns(UserWarning, match=r"skipped 1 bad episode file\(s\): ep_00001\.npz"):
        lenient = DreamVectorEnv(model, folder, num_envs=4, context_frames=CONTEXT, max_episode_steps=2, skip_bad=True)
        lenient.reset(seed=0)
        for _ in range(6):  # autoresets draw many contexts: none from the bad file, no error
            _, _, _, _, info = lenient.step(np.zeros(4, np.int64))
            assert all("ep_00001" not in s["episode"] for s in info["context_source"])
    assert [p.name for p, _ in lenient.core.contexts.store.bad] == ["ep_00001.npz"]
    strict = DreamVectorEnv(model, folder, num_envs=8, context_frames=CONTEXT, max_episode_steps=1)
    with pytest.raises(EpisodeError, match=r"ep_00001\.npz"):
        strict.reset(seed=0)
        for _ in range(20):
            strict.step(np.zeros(8, np.int64))


def test_step_after_a_failed_first_reset_through_make_asks_for_reset(checkpoint, real_episodes):
    """Through gymnasium.make, a first reset() that fails leaves step() saying "call reset()", not a TypeError
    from Gymnasium's passive checker."""
    env = gymnasium.make(
        "longdream/Dream-v0", checkpoint=checkpoint, episodes=real_episodes, device="cpu", context_frames=CONTEXT
    )
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"bogus": 1})
    with pytest.raises(gymnasium.error.ResetNeeded, match="reset"):
        env.step(0)
    env.reset(seed=0)
    assert env.step(1)[0].shape == (64, 64, 3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"episode": True}, r"options\['episode'\]=True: expected an episode index"),
        ({"episode": 0, "start": 2.7}, r"options\['start'\]=2.7: expected an integer"),
        ({"episode": 0, "start": "3"}, r"options\['start'\]='3': expected an integer"),
        ({"context_frames": 6.5}, r"options\['context_frames'\]=6.5: expected an integer"),
    ],
)
def test_reset_options_are_not_coerced(env, options, message):
    """Booleans, fractions and strings are refused where an index, start or length is expected."""
    with pytest.raises(ValueError, match=message):
        env.reset(options=options)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"context_frames": 6.0}, r"context_frames=6.0: expected an integer"),
        ({"max_episode_steps": 2.5}, r"max_episode_steps=2.5: expected an integer"),
        ({"max_episode_steps": 0}, r"max_episode_steps=0: expected an integer >= 1"),
        ({"num_envs": 1.5}, r"num_envs=1.5: expected an integer"),
        ({"num_envs": True}, r"num_envs=True: expected an integer"),
    ],
)
def test_constructor_arguments_are_not_coerced(model, real_episodes, kwargs, message):
    """Fractional or boolean lengths and counts are refused, naming the argument."""
    cls = DreamVectorEnv if "num_envs" in kwargs else DreamEnv
    with pytest.raises(ValueError, match=message):
        cls(model, real_episodes, **kwargs)


def test_render_before_reset_and_use_after_close_are_errors(model, real_episodes):
    """The vector env's render() before reset raises instead of returning black frames; both envs refuse
    step/reset/render after close()."""
    vec = DreamVectorEnv(model, real_episodes, num_envs=2, context_frames=CONTEXT)
    with pytest.raises(ResetNeeded, match="reset"):
        vec.render()
    vec.reset(seed=0)
    assert len(vec.render()) == 2
    vec.close()
    for call in (lambda: vec.step(np.zeros(2, np.int64)), lambda: vec.reset(), vec.render):
        with pytest.raises(ClosedEnvError, match="after close"):
            call()
    env = DreamEnv(model, real_episodes, context_frames=CONTEXT)
    env.reset(seed=0)
    env.close()
    for call in (lambda: env.step(0), lambda: env.reset(), env.render):
        with pytest.raises(ClosedEnvError, match="after close"):
            call()
