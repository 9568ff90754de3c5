"""agents.sb3: SB3 agents trained in the dream of the shared tiny model (or on real steps), judged in the real env."""

import json
import shutil
from functools import partial

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs  # noqa: F401  (registers the longdream/MemoryMaze ids)
from agents import sb3
from envs.episodes import EpisodeStore, load_episode

ENV = "longdream/MemoryMaze-9x9-v0"
FOUR_ACTIONS = "longdream-test/FourActions-v0"
EVAL_STEPS = 5
TINY = [  # seconds on one core: 16 imagined steps, one PPO update, a 5-step real evaluation
    "--algo-kwargs",
    '{"n_steps": 8, "batch_size": 8}',
    "--num-envs",
    "2",
    "--total-steps",
    "16",
    "--max-episode-steps",
    "6",
    "--context-frames",
    "4",
    "--eval-every",
    "16",
    "--eval-episodes",
    "1",
    "--eval-max-steps",
    str(EVAL_STEPS),
    "--checkpoint-every",
    "16",
    "--final-eval-seeds",
    "3000",
    "--final-eval-max-steps",
    str(EVAL_STEPS),
    "--strip-frames",
    "3",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--no-progress",
]


class FourActionEnv(gymnasium.Env):
    """Memory Maze's frames but only 4 actions: an env the tiny world model (6 actions) cannot stand in for."""

    observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        return np.zeros((64, 64, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((64, 64, 3), np.uint8), 0.0, False, False, {}


if FOUR_ACTIONS not in gymnasium.registry:
    gymnasium.register(FOUR_ACTIONS, entry_point=FourActionEnv)


def _dream_args(checkpoint, episodes, run_dir, *extra):
    return ["--checkpoint", str(checkpoint), "--episodes", str(episodes), "--run-dir", str(run_dir), *TINY, *extra]


@pytest.fixture(scope="module")
def dream_run(tiny_checkpoint, real_episodes, tmp_path_factory):
    """RUN_DIR of PPO trained for 16 imagined steps (2 dreams) on the tiny model, and the eval.json it wrote."""
    run = tmp_path_factory.mktemp("sb3") / "ppo"
    assert sb3.main(_dream_args(tiny_checkpoint, real_episodes, run)) == 0
    return run, json.loads((run / "eval.json").read_text())


def _frames(episodes, n=8):
    return load_episode(sorted(episodes.glob("*.npz"))[0])["image"][:n]  # (n, 64, 64, 3)


def _model_spaces():
    return spaces.Box(0, 255, (64, 64, 3), np.uint8), spaces.Discrete(6)


def test_ppo_in_the_dream_writes_model_and_eval_from_the_real_env(dream_run, real_episodes):
    """model.zip, config.json, a checkpoint zip, eval.json: evaluations ran in the real env for eval_max_steps."""
    run, res = dream_run
    for name in ("model.zip", "config.json", "eval.json", "checkpoints/model_16_steps.zip"):
        assert (run / name).is_file(), name
    assert res["algo"] == "PPO" and res["policy"] == "CnnPolicy" and res["world"] == "dream" and res["env"] == ENV
    assert res["total_steps"] == 16 and res["imagined_steps_per_s"] > 0 and "git_commit" in res
    assert [ep["steps"] for ep in res["eval"]["episodes"]] == [EVAL_STEPS] and res["eval"]["seeds"] == [3000]
    assert [e["lengths"] for e in res["periodic_eval"]] == [[EVAL_STEPS]]  # EvalCallback, real env, TimeLimit
    store = EpisodeStore(real_episodes)
    assert res["real_steps_used"]["steps"] == sum(store.lengths) - len(store)
    assert res["algo_kwargs"]["n_steps"] == 8 and res["algo_kwargs"]["n_epochs"] == 4  # user's over ALGO_DEFAULTS
    assert json.loads((run / "config.json").read_text())["env"] == ENV  # defaults resolved
    tb = EventAccumulator(str(next((run / "tb").iterdir())), size_guidance={"images": 0})
    tb.Reload()
    assert "dream/imagined_episode" in tb.Tags()["images"]
    assert {"eval/mean_reward", "real/final_return", "train/loss"} <= set(tb.Tags()["scalars"])
    assert len(res["imagined_strip"]["actions"]) == 3


def test_trained_policy_moved_and_reloads_to_the_same_actions(dream_run, real_episodes):
    """Weights moved a little from their seeded initial values; the pickle-free reload equals SB3's own load."""
    run, res = dream_run
    obs_space, act_space = _model_spaces()
    loaded = sb3.load_model(run / "model.zip", "PPO", "CnnPolicy", {"n_steps": 8, "batch_size": 8}, *_model_spaces())
    assert loaded.num_timesteps == 16
    spaces_env = DummyVecEnv([partial(sb3.SpacesOnlyEnv, obs_space, act_space)])
    initial = sb3.make_model("PPO", "CnnPolicy", spaces_env, {"n_steps": 8, "batch_size": 8}, seed=0, device="cpu")
    start, end = initial.policy.state_dict(), loaded.policy.state_dict()
    moved = max(float((end[k] - start[k]).abs().max()) for k in start)
    assert 0 < moved < 0.05  # one PPO update from the same seeded initialisation
    reference = PPO.load(run / "model.zip", device="cpu")  # SB3's own (pickling) load, fine for our own file
    for k, v in reference.policy.state_dict().items():
        torch.testing.assert_close(end[k], v, rtol=0, atol=0)
    frames = _frames(real_episodes)
    a, _ = loaded.predict(frames, deterministic=True)
    b, _ = reference.predict(frames, deterministic=True)
    np.testing.assert_array_equal(a, b)


def test_play_reloads_and_acts_in_the_real_env_like_the_final_evaluation(dream_run, capsys):
    """--play: no training; on the same seed it takes the final evaluation's actions (sampling is seeded)."""
    run, res = dream_run
    cfg = sb3.SB3Config(
        play=run / "model.zip", final_eval_seeds=(3000,), final_eval_max_steps=EVAL_STEPS, progress=False
    )
    out = sb3.play(cfg)
    assert [ep["actions"] for ep in out["episodes"]] == [ep["actions"] for ep in res["eval"]["episodes"]]
    assert out["timesteps"] == 16 and out["env"] == ENV
    mtime = (run / "model.zip").stat().st_mtime_ns
    args = ["--play", str(run / "model.zip"), "--final-eval-seeds", "3000", "--final-eval-max-steps", "2"]
    assert sb3.main([*args, "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "seed" in printed and "3000" in printed and "mean return" in printed
    assert (run / "model.zip").stat().st_mtime_ns == mtime


def test_resume_continues_from_the_newest_checkpoint_and_a_run_dir_keeps_its_config(
    dream_run, tiny_checkpoint, real_episodes, tmp_path, capsys
):
    """--resume reaches the new total_steps from model_16_steps.zip; another config or no --resume is refused."""
    run = tmp_path / "run"
    shutil.copytree(dream_run[0], run)
    assert sb3.main(_dream_args(tiny_checkpoint, real_episodes, run, "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "seed: 0 there, 1 now" in err and err.count("\n") == 1
    assert sb3.main(_dream_args(tiny_checkpoint, real_episodes, run)) == 2
    assert "--resume" in capsys.readouterr().err
    assert sb3.main(_dream_args(tiny_checkpoint, real_episodes, run, "--resume", "--total-steps", "32")) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["total_steps"] == 32 and res["steps_this_start"] == 16
    assert res["resumed_from"].endswith("model_16_steps.zip") or res["resumed_from"].endswith("model.zip")
    assert (run / "checkpoints" / "model_32_steps.zip").is_file()


def test_recurrent_ppo_with_stacked_frames_trains_and_acts(tiny_checkpoint, real_episodes, tmp_path):
    """RecurrentPPO (CnnLstmPolicy) on 2 stacked frames: trains, evaluates in stacked real envs, stacks like SB3."""
    run = tmp_path / "rppo"
    args = [*_dream_args(tiny_checkpoint, real_episodes, run), "--algo", "RecurrentPPO", "--frame-stack", "2"]
    args[args.index("--algo-kwargs") + 1] = '{"n_steps": 4, "batch_size": 8, "n_epochs": 1}'
    args[args.index("--total-steps") + 1] = args[args.index("--eval-every") + 1] = "8"
    assert sb3.main(args) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["policy"] == "CnnLstmPolicy" and res["total_steps"] == 8
    assert [e["lengths"] for e in res["periodic_eval"]] == [[EVAL_STEPS]]
    model = sb3.load_model(run / "model.zip", "RecurrentPPO", None, {"n_steps": 4}, *_model_spaces(), frame_stack=2)
    policy = sb3.SB3Policy(model, frame_stack=2, deterministic=True)
    f = _frames(real_episodes, 3)
    policy.reset(0)
    actions = [policy.act(f[0]), policy.act(f[1])]
    np.testing.assert_array_equal(policy._stack, np.concatenate([f[0], f[1]], -1))  # (64, 64, 6)
    assert policy._state is not None and all(0 <= a < 6 for a in actions)
    policy.reset(1)
    policy.act(f[2])
    np.testing.assert_array_equal(policy._stack, np.concatenate([np.zeros_like(f[2]), f[2]], -1))


def test_world_real_trains_on_real_steps(tmp_path):
    """--world real: the same algorithm on real env steps; real_steps_used is its own step count."""
    run = tmp_path / "real"
    args = ["--world", "real", "--env", ENV, "--run-dir", str(run), "--num-envs", "1", "--total-steps", "8"]
    args += ["--algo-kwargs", '{"n_steps": 8, "batch_size": 8, "n_epochs": 1}', "--max-episode-steps", "50"]
    args += [
        "--eval-every",
        "0",
        "--checkpoint-every",
        "0",
        "--final-eval-seeds",
        "3000",
        "--final-eval-max-steps",
        "3",
    ]
    assert sb3.main([*args, "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["world"] == "real" and res["real_steps_used"]["steps"] == 8 and res["real_steps_per_s"] > 0
    assert (run / "model.zip").is_file() and res["eval"]["episodes"][0]["steps"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--algo", "Nope"], "--algo 'Nope': unknown algorithm; known: A2C"),
        (["--total-steps", "0"], "--total-steps 0: expected an integer >= 1"),
        (["--policy", "MlpLstmPolicy"], "--policy 'MlpLstmPolicy': PPO knows CnnPolicy"),
        (["--algo-kwargs", "[1]"], "--algo-kwargs '[1]': expected a JSON object"),
        (["--algo-kwargs", '{"n_stepz": 8}'], "PPO refuses them"),
        (["--algo", "SAC"], "--algo SAC: The algorithm only supports"),
        (["--env", FOUR_ACTIONS], "action space Discrete(6), but the env it is asked to stand in for"),
        (["--env", "longdream/Nope-v0"], "--env 'longdream/Nope-v0'"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(tiny_checkpoint, real_episodes, tmp_path, capsys, extra, message):
    """Unknown algorithm / policy, bad kwargs, total_steps 0, a checkpoint for another action space: exit 2."""
    run = tmp_path / "bad"
    assert sb3.main([*_dream_args(tiny_checkpoint, real_episodes, run), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    if "--env" in extra and extra[1] == FOUR_ACTIONS:
        assert "Discrete(4)" in err
    assert not (run / "config.json").exists()  # a refused start leaves no run behind


def test_dream_needs_a_checkpoint_and_episodes(real_episodes, tiny_checkpoint, tmp_path, capsys):
    """--world dream without --checkpoint or --episodes is refused naming the option."""
    assert sb3.main(["--episodes", str(real_episodes), "--run-dir", str(tmp_path / "a"), "--device", "cpu"]) == 2
    assert "--checkpoint PATH is required" in capsys.readouterr().err
    assert sb3.main(["--checkpoint", str(tiny_checkpoint), "--run-dir", str(tmp_path / "b"), "--device", "cpu"]) == 2
    assert "--episodes DIR is required" in capsys.readouterr().err
