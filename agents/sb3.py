"""stable-baselines3 agents trained inside the dream, judged in the real env (``python -m agents.sb3``).

    python -m agents.sb3 --checkpoint runs/demo/checkpoint.pt --episodes data/episodes/mm9 \\
        --run-dir runs/agent-sb3                                   # PPO (CnnPolicy) in the dream
    python -m agents.sb3 --checkpoint runs/demo/checkpoint.pt --world real \\
        --run-dir runs/agent-sb3-real                              # the same algorithm on as many REAL env steps
    python -m agents.sb3 --algo RecurrentPPO --frame-stack 2 --algo-kwargs '{"n_steps": 64}' ...   # any algorithm
    python -m agents.sb3 ... --resume                              # continue from the newest checkpoint zip
    python -m agents.sb3 --play runs/agent-sb3/model.zip           # reload and act in the real env, no training

Reads top to bottom like a CleanRL script: the documented config, the pieces (envs, model, callbacks, the frame
policy), then ``train`` and ``play``. The dream is ``envs.dream_vector.DreamVectorEnv`` behind SB3's VecEnv API
(``envs.sb3.DreamSB3VecEnv``); the world model's checkpoint is checked against the real env's spaces there, so a
model for another action space is refused naming both. Every periodic evaluation (SB3's ``EvalCallback``) and the
final one (``agents.real.evaluate_policy`` on fixed seeds, the numbers every agent of the package reports) run in
the REAL env.

Writes into ``--run-dir``: ``config.json`` (the run's config, defaults resolved: env id, policy, algorithm name),
``checkpoints/model_<steps>_steps.zip`` (SB3's CheckpointCallback names, written atomically), ``tb/`` (TensorBoard
via SB3's logger: rollout and loss curves, ``eval/*`` of the periodic real-env evaluations, the final real-env
numbers and, in the dream, an imagined episode of the trained policy as an image strip), ``model.zip`` and
``eval.json`` (the final real-env evaluation on fixed seeds, speed, real steps used, git commit).

Loading is pickle-free: SB3's own ``load`` unpickles objects stored in the zip; here the model is rebuilt from the
JSON config (algorithm, policy, kwargs, spaces) and only its tensors are read (``set_parameters``, which loads them
with ``torch.load(weights_only=True)``), so a downloaded ``model.zip`` cannot run code.

Axis legend: N envs (dreams or real), k stacked frames, H x W x 3 frames (uint8).
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import stable_baselines3  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402
from gymnasium import spaces  # noqa: E402
from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback  # noqa: E402
from stable_baselines3.common.logger import Image  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first  # noqa: E402
from stable_baselines3.common.vec_env import (  # noqa: E402
    DummyVecEnv,
    VecEnv,
    VecFrameStack,
    VecMonitor,
    VecTransposeImage,
)
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402, F401  (registers the Memory Maze ids)
from agents.real import evaluate_policy, real_steps_used  # noqa: E402
from envs.dream_vector import DreamVectorEnv  # noqa: E402
from envs.fileio import (  # noqa: E402
    RunLock,
    RunLockedError,
    atomic_write,
    atomic_write_json,
    clean_stale_temps,
    torch_load,
)
from envs.sb3 import DreamSB3VecEnv  # noqa: E402
from worldmodel.model import WorldModelConfig, _world_model_entries  # noqa: E402
from worldmodel.utils import git_commit, image_strip, resolve_device  # noqa: E402

try:  # optional: RecurrentPPO, QRDQN, TRPO, ... (a dependency of the project, but SB3 works without it)
    import sb3_contrib  # noqa: E402
except ImportError:  # pragma: no cover - exercised only where sb3_contrib is missing
    sb3_contrib = None

__all__ = [
    "ALGOS",
    "ALGO_DEFAULTS",
    "SB3Config",
    "SB3Policy",
    "SpacesOnlyEnv",
    "load_model",
    "main",
    "make_model",
    "play",
    "train",
]


# ------------------------------------------------------------------------------------------------ algorithms
def _algorithms(module) -> dict[str, type[BaseAlgorithm]]:
    found = {}
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name, None)
        if isinstance(obj, type) and issubclass(obj, BaseAlgorithm):
            found[name] = obj
    return found


ALGOS: dict[str, type[BaseAlgorithm]] = {
    **_algorithms(stable_baselines3),
    **(_algorithms(sb3_contrib) if sb3_contrib is not None else {}),
}
"""Every algorithm of stable_baselines3 and sb3_contrib by class name (those for continuous actions, e.g. SAC, are
refused for Memory Maze's Discrete actions with the algorithm's own reason)."""

_PPO_CPU = {
    "n_steps": 128,
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 2.5e-4,
    "clip_range": 0.1,
    "ent_coef": 0.01,
}
_DQN_CPU = {
    "buffer_size": 20_000,  # 64x64x3 frames: ~0.5 GB with next observations; SB3's 1M would need ~25 GB
    "learning_starts": 1_000,
    "train_freq": 4,
    "target_update_interval": 1_000,
    "exploration_fraction": 0.1,
    "exploration_final_eps": 0.05,
}
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "PPO": _PPO_CPU,  # rl-baselines3-zoo's Atari settings (n_steps 128, 4 epochs, clip 0.1, entropy 0.01)
    "RecurrentPPO": _PPO_CPU,
    "A2C": {"ent_coef": 0.01},  # rl-baselines3-zoo's Atari entropy bonus; SB3's n_steps=5
    "DQN": _DQN_CPU,
    "QRDQN": _DQN_CPU,
}
"""Constructor keyword arguments applied under ``--algo-kwargs`` (which override them), sized for 2 CPU cores;
algorithms not listed get SB3's defaults."""

_OWN_KWARGS = ("policy", "env", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model")


def algo_class(name: str) -> type[BaseAlgorithm]:
    """The SB3 algorithm class named ``name`` (case-insensitive); a ValueError naming it and the known ones."""
    by_lower = {k.lower(): v for k, v in ALGOS.items()}
    cls = by_lower.get(str(name).lower())
    if cls is None:
        raise ValueError(f"--algo {name!r}: unknown algorithm; known: {', '.join(sorted(ALGOS))}")
    return cls


def default_policy(algo: str) -> str:
    """CnnLstmPolicy for RecurrentPPO, CnnPolicy otherwise (frames in, SB3's NatureCNN)."""
    return "CnnLstmPolicy" if algo_class(algo).__name__ == "RecurrentPPO" else "CnnPolicy"


def parse_algo_kwargs(text: str) -> dict[str, Any]:
    """The JSON object of ``--algo-kwargs``; a ValueError naming the text unless a JSON object without the keys
    this script sets itself."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--algo-kwargs {text!r}: not valid JSON ({e})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--algo-kwargs {text!r}: expected a JSON object such as '{{\"n_steps\": 64}}'")
    own = sorted(set(kwargs) & set(_OWN_KWARGS))
    if own:
        raise ValueError(f"--algo-kwargs {text!r}: {own} are set by this script (use --policy, --seed, --device)")
    return kwargs


# ------------------------------------------------------------------------------------------------ config
# main() parses with the checks deferred, then runs them itself: a refused value is then a one-line `error: ...`
# (exit status 2) instead of tyro's boxed parse error. Constructing SB3Config directly checks at once.
_DEFER_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("sb3_defer_checks", default=False)


@dataclass(frozen=True)
class SB3Config:
    """An SB3 agent trained in the dream (or on real steps), judged in the real env. Defaults are sized for 2 CPU
    cores and the cpu-preset world model (tens of minutes)."""

    checkpoint: Path | None = None
    """The world model: RUN_DIR/checkpoint.pt of python -m worldmodel.train (needed with --world dream; with
    --world real it only names the env when --env is not given)."""
    episodes: Path | None = None
    """Folder of real episodes the dreams are warmed on (needed with --world dream; e.g. the model's training data)."""
    world: Literal["dream", "real"] = "dream"
    """Where the agent learns: inside the dream, or on the same number of REAL env steps (the sample-efficiency
    baseline)."""
    env: str | None = None
    """Gymnasium id of the real env (None: the one the checkpoint was trained for)."""
    algo: str = "PPO"
    """Any stable_baselines3 / sb3_contrib algorithm by name: PPO, A2C, DQN, RecurrentPPO, QRDQN, TRPO, ..."""
    policy: str | None = None
    """SB3 policy name (None: CnnPolicy, or CnnLstmPolicy for RecurrentPPO)."""
    algo_kwargs: str = "{}"
    """Constructor arguments of the algorithm as a JSON object, over ALGO_DEFAULTS (off-policy algorithms: size
    buffer_size to the memory, a frame is 12 KB and stored twice), e.g. '{"n_steps": 64, "ent_coef": 0.0}'."""
    frame_stack: int = 1
    """Frames stacked along the channels (SB3's VecFrameStack) when > 1; the evaluation envs stack the same way."""
    total_steps: int = 24_000
    """Env steps to learn from: imagined (dream) or real; rounded up to whole rollouts by SB3."""
    num_envs: int = 4
    """Parallel envs: dreams batched through the world model, or real envs stepped in turn in this process (one
    Memory Maze env holds ~1 GB of memory; the same number in both worlds keeps the comparison equal)."""
    max_episode_steps: int = 300
    """Steps per training episode: imagined frames per dream (long dreams drift), or real steps before a real env
    is reset (--world real)."""
    context_frames: int | None = None
    """Real frames each dream is warmed on (None: the dream env's default, max(model minimum, 16))."""
    eval_every: int = 10_000
    """Env steps between periodic real-env evaluations (SB3's EvalCallback; 0: only the final one)."""
    eval_episodes: int = 2
    """Real episodes of each periodic evaluation."""
    eval_max_steps: int = 300
    """Real steps per periodic-evaluation episode (a TimeLimit; Memory Maze 9x9 episodes are 1000 steps)."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoint zips in RUN_DIR/checkpoints (SB3's CheckpointCallback; 0: none)."""
    final_eval_seeds: tuple[int, ...] = tuple(range(3000, 3008))
    """Env seeds of the final real-env evaluation (and of --play); the same as agents.dreamer's by default."""
    final_eval_max_steps: int = 300
    """Real steps per final-evaluation episode."""
    deterministic_eval: bool = False
    """Act with the policy's most likely action in evaluations instead of sampling (SB3's deterministic=True)."""
    strip_frames: int = 16
    """Imagined frames of the trained policy logged to TensorBoard as one image strip (--world dream; 0: none)."""
    seed: int = 0
    """Seeds the networks, the dreams (contexts and noise) or the real training envs."""
    run_dir: Path = Path("runs/agent-sb3")
    """Output folder (config.json, checkpoints/, tb/, model.zip, eval.json)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps (the agent's networks and the world model)."""
    threads: int | None = None
    """torch CPU threads (None: torch's choice)."""
    resume: bool = False
    """Continue the run in --run-dir from its newest checkpoint zip up to --total-steps (which may be raised)."""
    play: Path | None = None
    """No training: load this zip (e.g. RUN_DIR/model.zip) and run it in the real env on --final-eval-seeds,
    printing a table. Algorithm, policy, kwargs, frame stack and env come from the config.json beside the zip
    when there is one (else from the flags)."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        if not _DEFER_CHECKS.get():
            self.check()

    def check(self) -> None:
        """ValueError naming the option for a value out of range, an unknown algorithm or policy, bad JSON."""
        for name, minimum in (
            ("total_steps", 1),
            ("num_envs", 1),
            ("frame_stack", 1),
            ("max_episode_steps", 1),
            ("eval_every", 0),
            ("eval_episodes", 1),
            ("eval_max_steps", 1),
            ("checkpoint_every", 0),
            ("final_eval_max_steps", 1),
            ("strip_frames", 0),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: expected an integer >= {minimum}")
        for name in ("context_frames", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: expected an integer >= 1 (or None)")
        if self.world not in ("dream", "real"):
            raise ValueError(f"--world {self.world!r}: expected 'dream' or 'real'")
        seeds = tuple(self.final_eval_seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"--final-eval-seeds {seeds!r}: expected one or more integers >= 0")
        cls = algo_class(self.algo)
        if self.policy is not None and self.policy not in cls.policy_aliases:
            raise ValueError(f"--policy {self.policy!r}: {cls.__name__} knows {', '.join(sorted(cls.policy_aliases))}")
        parse_algo_kwargs(self.algo_kwargs)
        resolve_device(self.device)

    def check_paths(self) -> None:
        """ValueError naming the option unless the files this run needs exist."""
        if self.world == "dream":
            if self.checkpoint is None:
                raise ValueError("--checkpoint PATH is required with --world dream (RUN_DIR/checkpoint.pt)")
            if self.episodes is None:
                raise ValueError("--episodes DIR is required with --world dream: real episodes to warm dreams on")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ValueError(f"--checkpoint {self.checkpoint}: no such file (expected RUN_DIR/checkpoint.pt)")
        if self.episodes is not None and not Path(self.episodes).is_dir():
            raise ValueError(f"--episodes {self.episodes}: no such folder")
        if self.env is None and self.checkpoint is None:
            raise ValueError("--world real needs --env ID or a --checkpoint whose env it names")


def _config_dict(cfg: SB3Config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


_OPERATIONAL = ("resume", "progress", "threads", "device", "play", "run_dir")  # may differ between starts


def checkpoint_env_id(path: str | os.PathLike) -> str:
    """The real env id stored in a world-model checkpoint's config (without building the model)."""
    model_cfg, _ = _world_model_entries(torch_load(path), path)
    return str(model_cfg.get("env_id", WorldModelConfig.__dataclass_fields__["env_id"].default))


def resolve(cfg: SB3Config) -> SB3Config:
    """``cfg`` with its defaults made explicit: the env id (from the checkpoint), the policy, the algorithm's
    canonical name. This is what config.json holds."""
    env_id = cfg.env if cfg.env is not None else checkpoint_env_id(cfg.checkpoint)
    algo = algo_class(cfg.algo).__name__
    return dataclasses.replace(cfg, env=env_id, algo=algo, policy=cfg.policy or default_policy(algo))


# ------------------------------------------------------------------------------------------------ envs
def image_only(env: gymnasium.Env) -> gymnasium.Env:
    """The env with Dict observations (the -ExtraObs ids) reduced to their "image" frames; others unchanged."""
    space = env.observation_space
    if isinstance(space, spaces.Dict):
        if "image" not in space.spaces:
            raise ValueError(f"a Dict observation space needs an 'image' entry, got {sorted(space.spaces)}")
        return gymnasium.wrappers.TransformObservation(env, lambda obs: obs["image"], space["image"])
    return env


def make_real_env(env_id: str, max_episode_steps: int) -> gymnasium.Env:
    """``Monitor(frames of gymnasium.make(env_id))`` with a TimeLimit of ``max_episode_steps``."""
    try:
        env = gymnasium.make(env_id, max_episode_steps=max_episode_steps)
    except gymnasium.error.Error as e:
        raise ValueError(f"--env {env_id!r}: {e}") from e
    return Monitor(image_only(env))


def real_spaces(env_id: str) -> tuple[spaces.Space, spaces.Space]:
    """(observation space of the frames, action space) of the real env ``env_id``."""
    env = make_real_env(env_id, 1)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def stacked(venv: VecEnv, frame_stack: int) -> VecEnv:
    """SB3's VecFrameStack (channels last) when ``frame_stack`` > 1."""
    return VecFrameStack(venv, frame_stack, channels_order="last") if frame_stack > 1 else venv


def transposed(venv: VecEnv) -> VecEnv:
    """Channels first, as SB3 wraps the training env of an image policy (so both envs have the same type)."""
    space = venv.observation_space
    if is_image_space(space) and not is_image_space_channels_first(space):
        return VecTransposeImage(venv)
    return venv


def make_dream_venv(cfg: SB3Config, observation_space, action_space, device) -> VecEnv:
    """N dreams (DreamVectorEnv) as an SB3 VecEnv with episode statistics; the checkpoint is refused (naming
    both) unless it was trained for the real env's spaces."""
    dream = DreamVectorEnv(
        checkpoint=cfg.checkpoint,
        episodes=cfg.episodes,
        num_envs=cfg.num_envs,
        context_frames=cfg.context_frames,
        max_episode_steps=cfg.max_episode_steps,
        device=str(device),
        observation_space=observation_space,
        action_space=action_space,
    )
    return stacked(VecMonitor(DreamSB3VecEnv(dream)), cfg.frame_stack)


def make_real_venv(env_id: str, num_envs: int, max_episode_steps: int, frame_stack: int) -> VecEnv:
    """``num_envs`` real envs stepped in turn in this process (DummyVecEnv), each in a Monitor."""
    return stacked(DummyVecEnv([partial(make_real_env, env_id, max_episode_steps)] * num_envs), frame_stack)


class SpacesOnlyEnv(gymnasium.Env):
    """An env that only carries spaces: what a model is rebuilt on to load its weights (it is never stepped)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        """Refused: this env only carries spaces."""
        raise RuntimeError("a spaces-only env cannot be reset: give the model a real env to act in")

    def step(self, action):
        """Refused: this env only carries spaces."""
        raise RuntimeError("a spaces-only env cannot be stepped: give the model a real env to act in")


# ------------------------------------------------------------------------------------------------ models
def make_model(
    algo: str,
    policy: str,
    venv: VecEnv,
    algo_kwargs: dict[str, Any],
    seed: int | None = 0,
    device: str | torch.device = "auto",
    tensorboard_log: str | None = None,
) -> BaseAlgorithm:
    """``Algo(policy, venv, **ALGO_DEFAULTS[algo] | algo_kwargs)`` (``seed`` None: leave the global generators
    alone); arguments the algorithm refuses (an unknown
    keyword, an action space it does not support) raise a ValueError naming them."""
    cls = algo_class(algo)
    kwargs = {**ALGO_DEFAULTS.get(cls.__name__, {}), **algo_kwargs}
    try:
        return cls(policy, venv, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=0, **kwargs)
    except TypeError as e:
        raise ValueError(f"--algo-kwargs {json.dumps(algo_kwargs)}: {cls.__name__} refuses them ({e})") from e
    except AssertionError as e:  # SB3 asserts the action / observation space kind
        raise ValueError(f"--algo {cls.__name__}: {e}") from e


def zip_timesteps(path: str | os.PathLike) -> int:
    """``num_timesteps`` of an SB3 zip, read from its JSON data (nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as z:
            return int(json.loads(z.read("data"))["num_timesteps"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a stable-baselines3 model zip ({e})") from e


_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls")  # plain JSON numbers in an SB3 zip


def load_weights(model: BaseAlgorithm, path: str | os.PathLike) -> BaseAlgorithm:
    """Load an SB3 zip's tensors (networks and optimisers, ``torch.load(weights_only=True)``) and step counters
    into ``model``, which must have been built with the same algorithm, policy and spaces. Nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model zip not found: {path}")
    try:
        model.set_parameters(str(path), exact_match=True, device=model.device)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ValueError(
            f"{path}: its weights do not fit a {type(model).__name__} {model.policy_class.__name__} "
            f"for these spaces ({e})"
        ) from e
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    for key in _COUNTERS:
        if isinstance(data.get(key), int):
            setattr(model, key, data[key])
    return model


def load_model(
    path: str | os.PathLike,
    algo: str,
    policy: str | None,
    algo_kwargs: dict[str, Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    frame_stack: int = 1,
    device: str | torch.device = "auto",
) -> BaseAlgorithm:
    """A trained model from an SB3 zip, for acting: rebuilt from its (JSON) description on a spaces-only env of
    the real env's frame and action spaces, then its weights loaded (:func:`load_weights`)."""
    cls = algo_class(algo)
    venv = stacked(DummyVecEnv([partial(SpacesOnlyEnv, observation_space, action_space)]), frame_stack)
    kwargs = dict(algo_kwargs)
    if "buffer_size" in inspect.signature(cls.__init__).parameters:
        kwargs["buffer_size"] = 1  # acting needs no replay buffer
    model = make_model(cls.__name__, policy or default_policy(cls.__name__), venv, kwargs, seed=None, device=device)
    return load_weights(model, path)


def save_model(model: BaseAlgorithm, path: str | os.PathLike) -> Path:
    """``model.save`` into a temp file renamed over ``path`` (a reader never sees a partial zip)."""
    path = Path(path)
    with atomic_write(path) as f:
        model.save(f)
    return path


class SB3Policy:
    """A trained SB3 model as an ``agents.real.FramePolicy``: stacks the newest frames as VecFrameStack does
    (zeros before the episode's first frame) and carries a recurrent policy's LSTM state across steps.
    ``reset(seed)`` also seeds torch's global generator, so sampled actions repeat for a seed."""

    def __init__(self, model: BaseAlgorithm, frame_stack: int = 1, deterministic: bool = False):
        self.model, self.frame_stack, self.deterministic = model, int(frame_stack), bool(deterministic)
        self._new_episode()

    def _new_episode(self) -> None:
        self._stack: np.ndarray | None = None  # (H, W, 3k), made at the first frame
        self._state = None  # a recurrent policy's LSTM state
        self._start = True

    def reset(self, seed: int) -> None:
        """A new episode: empty frame stack, fresh LSTM state, torch's generator seeded with ``seed``."""
        self._new_episode()
        torch.manual_seed(int(seed))

    def act(self, frame: np.ndarray) -> int:
        """The action for the newest frame uint8 (H, W, 3)."""
        frame = np.asarray(frame)
        c = frame.shape[-1]
        if self._stack is None:
            self._stack = np.zeros((*frame.shape[:-1], c * self.frame_stack), frame.dtype)
        self._stack = np.roll(self._stack, -c, axis=-1)
        self._stack[..., -c:] = frame
        action, self._state = self.model.predict(
            self._stack[None],
            state=self._state,
            episode_start=np.array([self._start]),
            deterministic=self.deterministic,
        )
        self._start = False
        return int(np.asarray(action).reshape(-1)[0])


# ------------------------------------------------------------------------------------------------ callbacks
class AtomicCheckpointCallback(CheckpointCallback):
    """SB3's CheckpointCallback (same ``model_<steps>_steps.zip`` names), each zip written atomically."""

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            save_model(self.model, self._checkpoint_path(extension="zip"))
        return True


class RealEvalCallback(EvalCallback):
    """SB3's EvalCallback over the real env that also keeps each evaluation's episode returns and lengths (read
    from the eval env's Monitor) and the seconds spent evaluating (left out of the training speed)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.history: list[dict] = []
        self._seen = 0

    def _on_step(self) -> bool:
        t0 = time.perf_counter()
        ok = super()._on_step()
        self.seconds += time.perf_counter() - t0
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return ok
        returns = self.eval_env.env_method("get_episode_rewards")[0]
        lengths = self.eval_env.env_method("get_episode_lengths")[0]
        if len(lengths) > self._seen:
            self.history.append(
                {
                    "timesteps": int(self.num_timesteps),
                    "returns": [float(r) for r in returns[self._seen :]],
                    "lengths": [int(n) for n in lengths[self._seen :]],
                }
            )
            self._seen = len(lengths)
        return ok


class ProgressCallback(BaseCallback):
    """A tqdm bar over env steps (SB3's own progress bar needs the optional ``rich``)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        super().__init__()
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(
            total=self.total, initial=self.num_timesteps, desc=self.desc, unit="step", disable=not self.enabled
        )

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def imagined_strip(model: BaseAlgorithm, venv: VecEnv, frames: int, deterministic: bool) -> dict:
    """The trained policy acting for ``frames`` steps in the first dream of ``venv`` (reset first): its frames as
    one image strip (uint8 (H', W', 3)), and the actions and imagined rewards."""
    obs = venv.reset()  # (N, H, W, 3k)
    shown, actions, rewards = [obs[0, ..., -3:]], [], []
    state, start = None, np.ones(venv.num_envs, dtype=bool)
    for _ in range(frames):
        act, state = model.predict(obs, state=state, episode_start=start, deterministic=deterministic)
        obs, rew, done, _ = venv.step(act)
        start = done
        shown.append(obs[0, ..., -3:])
        actions.append(int(act[0]))
        rewards.append(float(rew[0]))
    return {"strip": image_strip(np.stack(shown), error=False), "actions": actions, "rewards": rewards}


# ------------------------------------------------------------------------------------------------ train
def train(cfg: SB3Config) -> dict:
    """Train (or resume) the agent of ``cfg``; returns what is written to RUN_DIR/eval.json."""
    cfg.check_paths()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    cfg = resolve(cfg)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with RunLock(run, what="agents.sb3"):
        return _train(cfg, run)


def _check_run_dir(cfg: SB3Config, run: Path) -> Path | None:
    """Refuse a run folder holding another config (naming the differing fields), or, without --resume, one holding
    checkpoints of this run. Returns the newest checkpoint zip to resume from (None: start at step 0; a folder
    with this config but no zip yet, from a start that failed early, starts again)."""
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        if cfg.resume:
            raise ValueError(f"--resume: {run} holds no run (no config.json)")
        return None
    old, new = json.loads(cfg_path.read_text()), _config_dict(cfg)
    skip = set(_OPERATIONAL) | ({"total_steps"} if cfg.resume else set())
    diff = [k for k in new if k not in skip and old.get(k) != new[k]]
    if diff:
        detail = "; ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in diff)
        raise ValueError(f"{run} holds a run with another config ({cfg_path}): {detail}. Use another --run-dir")
    zips = sorted((run / "checkpoints").glob("model_*_steps.zip"))
    if (run / "model.zip").is_file():
        zips.append(run / "model.zip")
    if not zips:
        return None
    if not cfg.resume:
        raise ValueError(f"{run} already holds this run: pass --resume to continue it, or another --run-dir")
    return max(zips, key=zip_timesteps)


def _train(cfg: SB3Config, run: Path) -> dict:
    device = resolve_device(cfg.device)
    clean_stale_temps(run)
    if (run / "checkpoints").is_dir():
        clean_stale_temps(run / "checkpoints")
    # 1. the real env's spaces; the run folder (a resume must keep the config)
    obs_space, act_space = real_spaces(cfg.env)
    resume_from = _check_run_dir(cfg, run)

    # 2. where experience comes from: N dreams of the world model, or N real envs
    if cfg.world == "dream":
        venv = make_dream_venv(cfg, obs_space, act_space, device)
    else:
        venv = make_real_venv(cfg.env, cfg.num_envs, cfg.max_episode_steps, cfg.frame_stack)
    eval_env = None
    try:
        # 3. the agent: a fresh model, or the newest checkpoint's weights and step counters
        kwargs = parse_algo_kwargs(cfg.algo_kwargs)
        model = make_model(cfg.algo, cfg.policy, venv, kwargs, cfg.seed, device, str(run / "tb"))
        if resume_from is not None:
            load_weights(model, resume_from)
        start_steps = model.num_timesteps
        atomic_write_json(run / "config.json", _config_dict(cfg))  # once the run could start (the latest total_steps)

        # 4. callbacks: checkpoints, periodic evaluations in the REAL env (stacked like the training env)
        callbacks: list[BaseCallback] = [ProgressCallback(cfg.total_steps, f"{cfg.algo} ({cfg.world})", cfg.progress)]
        if cfg.checkpoint_every:
            every = max(cfg.checkpoint_every // cfg.num_envs, 1)
            callbacks.append(AtomicCheckpointCallback(every, str(run / "checkpoints"), name_prefix="model"))
        evaluator = None
        if cfg.eval_every:
            eval_env = transposed(make_real_venv(cfg.env, 1, cfg.eval_max_steps, cfg.frame_stack))
            eval_env.seed(cfg.final_eval_seeds[0])
            evaluator = RealEvalCallback(
                eval_env,
                n_eval_episodes=cfg.eval_episodes,
                eval_freq=max(cfg.eval_every // cfg.num_envs, 1),
                deterministic=cfg.deterministic_eval,
                verbose=0,
            )
            callbacks.append(evaluator)

        # 5. learn up to total_steps (a resumed run continues its step count and TensorBoard curves)
        t0 = time.perf_counter()
        model.learn(
            total_timesteps=max(cfg.total_steps - start_steps, 0),
            callback=callbacks,
            tb_log_name="sb3",
            reset_num_timesteps=resume_from is None,
        )
        wall = time.perf_counter() - t0
        eval_seconds = evaluator.seconds if evaluator is not None else 0.0
        steps = model.num_timesteps - start_steps
        save_model(model, run / "model.zip")

        # 6. an imagined episode of the trained policy, as an image strip in TensorBoard
        strip = None
        if cfg.world == "dream" and cfg.strip_frames:
            strip = imagined_strip(model, venv, cfg.strip_frames, cfg.deterministic_eval)
            model.logger.record(
                "dream/imagined_episode", Image(strip.pop("strip"), "HWC"), exclude=("stdout", "log", "json", "csv")
            )

        # 7. the final evaluation in the real env, on fixed seeds
        policy = SB3Policy(model, cfg.frame_stack, cfg.deterministic_eval)
        res = evaluate_policy(
            policy, cfg.env, cfg.final_eval_seeds, cfg.final_eval_max_steps, cfg.progress, "final real-env evaluation"
        )
        model.logger.record("real/final_return", res["return"]["mean"])
        model.logger.record("real/final_reward_rate_per_100", res["reward_rate_per_100"]["mean"])
        model.logger.dump(model.num_timesteps)
    finally:
        venv.close()
        if eval_env is not None:
            eval_env.close()

    train_seconds = max(wall - eval_seconds, 1e-9)
    out = {
        "agent": "sb3",
        "algo": cfg.algo,
        "policy": cfg.policy,
        "algo_kwargs": {**ALGO_DEFAULTS.get(cfg.algo, {}), **kwargs},
        "world": cfg.world,
        "env": cfg.env,
        "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint),
        "total_steps": int(model.num_timesteps),
        "env_steps": int(model.num_timesteps),
        "imagined_steps": int(model.num_timesteps) if cfg.world == "dream" else 0,
        "learn_seconds": train_seconds,
        "steps_this_start": int(steps),
        "resumed_from": None if resume_from is None else str(resume_from),
        "train_wall_seconds": wall,
        "periodic_eval_seconds": eval_seconds,
        "steps_per_s": steps / train_seconds,
        f"{'imagined' if cfg.world == 'dream' else 'real'}_steps_per_s": steps / train_seconds,
        "speed_note": "steps of this start over its training seconds (wall seconds of learn() minus the periodic "
        "real-env evaluations)",
        "real_steps_used": real_steps_used(cfg.world, cfg.episodes, int(model.num_timesteps)),
        "periodic_eval": evaluator.history if evaluator is not None else [],
        "imagined_strip": strip,
        "eval": res,
        "config": _config_dict(cfg),
        "git_commit": git_commit()[0],
    }
    atomic_write_json(run / "eval.json", out)
    return out


# ------------------------------------------------------------------------------------------------ play
def play(cfg: SB3Config) -> dict:
    """Load ``cfg.play`` (an SB3 zip) and run it in the real env on ``cfg.final_eval_seeds``; no training."""
    path = Path(cfg.play)
    if not path.is_file():
        raise ValueError(f"--play {path}: no such file (expected RUN_DIR/model.zip)")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    saved = path.parent / "config.json"
    desc = json.loads(saved.read_text()) if saved.is_file() else {}
    algo, policy = desc.get("algo", cfg.algo), desc.get("policy", cfg.policy)
    frame_stack = int(desc.get("frame_stack", cfg.frame_stack))
    kwargs = parse_algo_kwargs(desc.get("algo_kwargs", cfg.algo_kwargs))
    env_id = desc.get("env") or cfg.env
    if env_id is None:
        if cfg.checkpoint is None:
            raise ValueError(f"--play {path}: no config.json beside it names the env: pass --env ID")
        env_id = checkpoint_env_id(cfg.checkpoint)
    obs_space, act_space = real_spaces(env_id)
    model = load_model(path, algo, policy, kwargs, obs_space, act_space, frame_stack, resolve_device(cfg.device))
    policy_ = SB3Policy(model, frame_stack, cfg.deterministic_eval)
    res = evaluate_policy(policy_, env_id, cfg.final_eval_seeds, cfg.final_eval_max_steps, cfg.progress, "play")
    res.update(model=str(path), algo=algo_class(algo).__name__, env=env_id, timesteps=int(model.num_timesteps))
    return res


def format_table(res: dict) -> str:
    """The per-episode table of an evaluation, then mean ± 95% interval."""
    lines = [f"{'seed':>6} {'steps':>6} {'return':>8} {'reward/100':>11}"]
    for ep in res["episodes"]:
        lines.append(f"{ep['seed']:>6} {ep['steps']:>6} {ep['return']:>8.2f} {ep['reward_rate_per_100']:>11.2f}")
    r, rr = res["return"], res["reward_rate_per_100"]
    lines.append(
        f"mean return {r['mean']:.2f} ± {r['ci95']:.2f}, reward rate {rr['mean']:.2f} ± {rr['ci95']:.2f} / 100 steps "
        f"(95% intervals over {r['n']} episodes)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.sb3``; exit status 2 with a one-line ``error: ...`` for a refused argument."""
    try:
        deferred = _DEFER_CHECKS.set(True)
        try:
            cfg = tyro.cli(SB3Config, args=argv, prog="python -m agents.sb3", description=__doc__)
        finally:
            _DEFER_CHECKS.reset(deferred)
        cfg.check()
        if cfg.play is not None:
            res = play(cfg)
            print(f"{res['algo']} {res['model']} ({res['timesteps']} training steps) in {res['env']}:")
            print(format_table(res))
            return 0
        res = train(cfg)
    except (ValueError, OSError, RunLockedError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    ev = res["eval"]
    print(
        f"{res['algo']} ({res['world']}, {res['total_steps']} steps, {res['steps_per_s']:.1f} steps/s) in the real "
        f"env ({len(ev['seeds'])} episodes x {ev['max_steps']} steps): return {ev['return']['mean']:.2f} "
        f"± {ev['return']['ci95']:.2f}, reward rate {ev['reward_rate_per_100']['mean']:.2f} / 100 steps; "
        f"wrote {Path(cfg.run_dir) / 'eval.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
