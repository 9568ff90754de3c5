"""Planners judged in the real env: each planner vs a random policy (vs a scripted oracle in Memory Maze), on
unseen worlds (mazes, Crafter maps).

    python -m planners.evaluate --checkpoint runs/demo/checkpoint.pt                  # cpu preset, 3 x 200 steps
    python -m planners.evaluate --checkpoint RUN/checkpoint.pt --episodes 5 --max-steps 300 \\
        --heldout-episodes data/episodes/mm9-heldout --planner.horizon 8

What it does, for every method on the same env seeds (``--seed``, ``--seed`` + 1, ...; pick seeds the model never
trained on: the demo data uses 0-39 and 100-139):
  1. runs ``--episodes`` real episodes of at most ``--max-steps`` steps (Memory Maze 9x9's own limit is 1000
     steps; planning every step costs a second, so the evaluation caps it): the planners through
     :class:`planners.controller.MPCController`, ``random`` (uniform actions) and ``oracle``
     (:class:`envs.policies.OraclePolicy`, which knows the map and the targets; Memory Maze only: for an env whose
     ``info`` lacks what it reads, e.g. Crafter, it is left out and the results say so);
  2. reports per method the return, the reward rate per 100 steps (mean and 95% t-interval over episodes), the
     paired difference to ``random`` on the same seeds (a planner "beats random" when that interval excludes 0),
     mean seconds per decision and imagined sample-steps per second;
  3. diagnoses why planning can or cannot work (``reward_horizon``): on the oracle's episodes (which reach
     targets), the dream is kept in step with reality and, every few steps, the next ``horizon`` real actions
     and random action sequences are imagined from that state: does the imagined return see the real rewards
     coming (recall), and does it depend on the actions (real vs random)?
  4. measures throughput: the planner's imagined samples/s next to the model's plain streaming step (decoded
     frames, the dream env's cost, as ``benchmarks.dream_speed``) and its planning step at the same batch;
  5. with ``--heldout-episodes``: the checkpoint's action sensitivity (``worldmodel.evaluate.action_sensitivity``,
     as ``benchmarks.action_following``) beside the results (it knows Memory Maze's six actions only);
  6. TensorBoard (``WORK/tb``): for the first ``--record`` decisions of each planner's first episode, the best
     imagined future (decoded) above what really happened, and their difference.

Resumable: every finished episode is a JSON file in ``--work-dir`` (default ``RUN_DIR/planners/``); a rerun of the
same command skips them (a rerun with other settings into the same folder is refused). Writes ``NAME.json``,
``NAME.png`` (bars with 95% intervals) and ``NAME.md`` (the table) atomically to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402, F401  (registers the Memory Maze ids)
import worldmodel  # noqa: E402
from envs.episodes import EpisodeStore  # noqa: E402
from envs.fileio import RunLock, RunLockedError, atomic_write_json, atomic_write_text  # noqa: E402
from envs.policies import OraclePolicy, RandomPolicy  # noqa: E402
from envs.worlds import env_world, result_name  # noqa: E402
from planners import PLANNERS  # noqa: E402
from planners.base import Planner, rollout_returns  # noqa: E402
from planners.config import PLANNER_PRESETS, PlannerConfig, planner_config  # noqa: E402
from planners.controller import EpisodeResult, MPCController, frame_of  # noqa: E402
from planners.dream_model import WorldModelDream  # noqa: E402
from worldmodel.evaluate import MEMORY_MAZE_ACTIONS, action_sensitivity  # noqa: E402
from worldmodel.train import LatentEpisodes  # noqa: E402
from worldmodel.utils import git_commit, resolve_device, save_figure  # noqa: E402

__all__ = ["EvaluateJob", "episode_record", "evaluate", "main", "mean_ci", "parse_args", "sensitivity_sentence"]

PLANNER_CLASSES: dict[str, type[Planner]] = PLANNERS
"""The planners by name (``planners.PLANNERS``)."""
BASELINES = ("random", "oracle")
Method = Literal["random_shooting", "cem", "mppi", "random", "oracle"]
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
"""Where the published results go (benchmarks/results/, read by benchmarks.summary)."""
PREDICTED_EVENT = 0.5
"""The imagined return (sum of reward probabilities) over a horizon that counts as "a reward is coming"."""


@dataclass(frozen=True)
class EvaluateJob:
    """One evaluation: which checkpoint, which methods, how many real episodes, where results go."""

    checkpoint: Path
    """The world model: RUN_DIR/checkpoint.pt written by python -m worldmodel.train."""
    preset: Literal["tiny", "cpu", "gpu"] = "cpu"
    """Planner preset (read first: every --planner.* option not given takes the preset's value)."""
    planner: PlannerConfig = field(default_factory=lambda: planner_config("cpu"))
    """Search settings shared by every planner."""
    methods: tuple[Method, ...] = ("random_shooting", "cem", "mppi", "random", "oracle")
    """What to run: planners (random_shooting, cem, mppi) and baselines (random, oracle: Memory Maze only, left
    out for other envs)."""
    env: str | None = None
    """Gymnasium id of the real env (None: the one the checkpoint was trained for)."""
    episodes: int = 3
    """Real episodes per method (env seeds SEED .. SEED + N - 1)."""
    max_steps: int = 200
    """Real steps per episode at most (Memory Maze 9x9 ends at 1000; planning every step costs ~1 s)."""
    seed: int = 2000
    """First env seed; use seeds the model never trained on (the demo data: 0-39 and 100-139)."""
    heldout_episodes: Path | None = None
    """Folder of held-out episodes for the checkpoint's action sensitivity (None: not measured)."""
    sensitivity_windows: int = 8
    """Windows per kind for the action sensitivity (with --heldout-episodes)."""
    record: int = 3
    """Decisions of each planner's first episode shown in TensorBoard (imagined future vs reality)."""
    diagnose_stride: int = 2
    """Reward-horizon diagnosis on the oracle's episodes: imagine from every STRIDE-th step."""
    throughput_rounds: int = 3
    """Timed rounds of each throughput variant."""
    work_dir: Path | None = None
    """Per-episode results and TensorBoard (None: RUN_DIR/planners next to the checkpoint)."""
    out: Path = RESULTS_DIR
    """Folder of NAME.json, NAME.png and NAME.md."""
    name: str | None = None
    """Base name of the written results (None: ``planners`` on Memory Maze, ``planners_WORLD`` on another world,
    e.g. ``planners_crafter``: envs.worlds.result_name)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    threads: int | None = None
    """torch CPU threads (None: torch's choice). On a busy machine 1 thread avoids oversubscription stalls."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        for name, minimum in (
            ("episodes", 1),
            ("max_steps", 1),
            ("seed", 0),
            ("record", 0),
            ("diagnose_stride", 1),
            ("throughput_rounds", 1),
            ("sensitivity_windows", 1),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: expected an integer >= {minimum}")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"--threads {self.threads!r}: expected a number of threads >= 1")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"--methods {self.methods!r}: expected distinct methods, at least one")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ValueError(f"--name {self.name!r}: expected a plain file name stem")
        resolve_device(self.device)

    def check_paths(self) -> None:
        """ValueError naming the option unless the checkpoint file and the held-out folder (if any) exist."""
        if not Path(self.checkpoint).is_file():
            raise ValueError(f"--checkpoint {self.checkpoint}: no such file (expected RUN_DIR/checkpoint.pt)")
        if self.heldout_episodes is not None and not Path(self.heldout_episodes).is_dir():
            raise ValueError(f"--heldout-episodes {self.heldout_episodes}: no such folder")

    @property
    def run_folder(self) -> Path:
        """Where per-episode results and TensorBoard go."""
        return Path(self.work_dir) if self.work_dir is not None else Path(self.checkpoint).parent / "planners"

    def settings(self) -> dict:
        """What a resumed run must share with the episodes already in its folder."""
        return {
            "checkpoint": str(Path(self.checkpoint).resolve()),
            "planner": dataclasses.asdict(self.planner),
            "env": self.env,
            "max_steps": self.max_steps,
        }


# ---------------------------------------------------------------------------------------------- statistics


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean and the half-width of its ``confidence`` t-interval over the values (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "ci95": float("nan")}
    half = 0.0
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return {"n": n, "mean": float(x.mean()), "ci95": half}


# ------------------------------------------------------------------------------------------------ episodes


def _machine(device: torch.device) -> dict:
    """Where the numbers come from (as benchmarks.common.machine_info, which this layer may not import)."""
    commit, _ = git_commit()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "git_commit": commit or None,
        "load_average": list(os.getloadavg()),
    }


def run_policy_episode(env: gymnasium.Env, policy, seed: int, max_steps: int) -> tuple[list[float], list, list]:
    """A scripted policy for ``max_steps`` real steps from ``reset(seed)``: (rewards, actions, frames incl. the
    reset frame); the policy's generator is seeded from ``seed``."""
    obs, info = env.reset(seed=int(seed))
    policy.reset(info, np.random.default_rng(seed))
    rewards, actions, frames = [], [], [frame_of(obs)]
    for _ in range(max_steps):
        a = policy.act(info)
        obs, r, term, trunc, info = env.step(a)
        rewards.append(float(r))
        actions.append(int(a))
        frames.append(frame_of(obs))
        if term or trunc:
            break
    return rewards, actions, frames


def episode_record(seed: int, rewards: list[float], actions: list | None = None) -> dict:
    """One real episode's numbers: steps, return, reward rate per 100 steps, the steps that were rewarded (and
    the actions taken, when given)."""
    steps = len(rewards)
    total = float(np.sum(rewards))
    rec = {
        "seed": int(seed),
        "steps": steps,
        "return": total,
        "reward_rate_per_100": 100.0 * total / max(steps, 1),
        "reward_steps": [i for i, r in enumerate(rewards) if r > 0],
    }
    if actions is not None:
        rec["actions"] = [a.tolist() if isinstance(a, np.ndarray) else a for a in actions]
    return rec


def _episode_record(method: str, seed: int, rewards: list[float], result: EpisodeResult | None = None) -> dict:
    rec = {"method": method, **episode_record(seed, rewards)}
    steps = rec["steps"]
    if result is not None:
        secs = result.decision_seconds
        rec.update(
            decisions=len(result.decisions),
            decision_seconds_mean=float(np.mean(secs)) if secs else float("nan"),
            decision_seconds_total=float(np.sum(secs)),
            imagined_samples=result.imagined_samples,
            imagined_samples_per_s=result.imagined_samples / max(float(np.sum(secs)), 1e-9),
            plan_expected_return_mean=float(np.mean([d.plan.expected_return for d in result.decisions]))
            if result.decisions
            else float("nan"),
            frames_seen=result.frames_seen,
            in_step_with_env=result.frames_seen == steps + 1,
        )
    return rec


def _strip(real: np.ndarray, imagined: np.ndarray) -> np.ndarray:
    """uint8 (3 x H, T x W, 3): real frames above imagined ones above their absolute difference."""
    t = min(len(real), len(imagined))
    real, imagined = real[:t], imagined[:t]
    err = np.abs(real.astype(np.int16) - imagined.astype(np.int16)).astype(np.uint8)
    rows = [np.concatenate(list(x), axis=1) for x in (real, imagined, err)]
    return np.concatenate(rows, axis=0)


def _log_decisions(writer, method: str, model: WorldModelDream, result: EpisodeResult) -> None:
    """TensorBoard: the best imagined future of each recorded decision above what really happened."""
    for k, d in enumerate(x for x in result.decisions if x.state is not None):
        imagined = model.imagine(d.state, d.plan.actions)  # (H, H_img, W, 3)
        real = result.frames[d.step + 1 : d.step + 1 + len(imagined)]
        if len(real) == 0:
            continue
        writer.add_image(f"{method}/decision_{k}_real_dream_error", _strip(real, imagined), d.step, dataformats="HWC")
        writer.add_text(
            f"{method}/decision_{k}",
            f"step {d.step}: planned {d.plan.actions.tolist()} (expected return {d.plan.expected_return:.3f}), "
            f"executed {result.actions[d.step : d.step + len(real)]}",
            d.step,
        )


# -------------------------------------------------------------------------------------------- diagnostics


def reward_horizon_diagnosis(
    model: WorldModelDream,
    episodes: list[tuple[list[float], list[int], list[np.ndarray]]],
    cfg: PlannerConfig,
    stride: int,
    random_sequences: int = 7,
    seed: int = 0,
) -> dict:
    """Can the dream see rewards coming? On real episodes (rewards, actions, frames), every ``stride`` steps:
    imagine the next ``horizon`` real actions and ``random_sequences`` random sequences from the state kept in
    step with reality, next to the real discounted reward in that window.

    Returns recall (windows with a real reward whose imagined return >= PREDICTED_EVENT), the false-alarm rate
    (windows without one above it), mean imagined returns with and without a real reward ahead, and how much the
    imagined return depends on the actions (real actions minus the random sequences' mean, in windows with a
    real reward ahead: > 0 is what a planner needs)."""
    rng = np.random.default_rng(seed)
    h, n_act = cfg.horizon, int(model.action_space.n)
    rows = []  # (real discounted reward, real reward count, imagined(real actions), imagined(random) mean)
    for rewards, actions, frames in episodes:
        all_actions = np.array([0] + list(actions), dtype=np.int64)
        k = model.min_context_frames
        if len(frames) < k + h:
            continue
        state = model.start(np.stack(frames[:k]), all_actions[:k])
        for t in range(k, len(frames) - h + 1):
            # state holds frames 0..t-1; the next real actions are all_actions[t : t + h]
            if (t - k) % stride == 0:
                cand = np.concatenate(
                    [all_actions[None, t : t + h], rng.integers(0, n_act, size=(random_sequences, h))]
                )
                ret = rollout_returns(model, model.fork(state, len(cand)), cand, cfg.discount, cfg.sampling_steps)
                real = np.asarray(rewards[t - 1 : t - 1 + h])  # reward of step s led into frame s + 1
                disc = float(np.sum(real * cfg.discount ** np.arange(len(real))))
                rows.append((disc, float(real.sum()), float(ret[0]), float(ret[1:].mean())))
            state = model.observe(state, frames[t], all_actions[t])
    if not rows:
        return {"windows": 0}
    a = np.array(rows)
    ahead = a[:, 1] > 0
    res = {
        "windows": len(a),
        "windows_with_reward": int(ahead.sum()),
        "horizon": h,
        "sampling_steps": cfg.sampling_steps,
        "event_threshold": PREDICTED_EVENT,
        "recall": float((a[ahead, 2] >= PREDICTED_EVENT).mean()) if ahead.any() else float("nan"),
        "false_alarm_rate": float((a[~ahead, 2] >= PREDICTED_EVENT).mean()) if (~ahead).any() else float("nan"),
        "imagined_return_reward_ahead": float(a[ahead, 2].mean()) if ahead.any() else float("nan"),
        "imagined_return_no_reward_ahead": float(a[~ahead, 2].mean()) if (~ahead).any() else float("nan"),
        "real_minus_random_actions_reward_ahead": float((a[ahead, 2] - a[ahead, 3]).mean())
        if ahead.any()
        else float("nan"),
        "real_minus_random_actions_no_reward_ahead": float((a[~ahead, 2] - a[~ahead, 3]).mean())
        if (~ahead).any()
        else float("nan"),
        "correlation_imagined_vs_real": float(np.corrcoef(a[:, 0], a[:, 2])[0, 1])
        if a[:, 0].std() > 0 and a[:, 2].std() > 0
        else float("nan"),
    }
    return res


def throughput(model: WorldModelDream, planner: Planner, state: Any, rounds: int) -> dict:
    """Imagined sample-steps/s of a full decision next to the model's own steps at the planner's batch:
    ``plan_step`` at the planning settings (the model's cost of planning) and ``WorldModel.step`` at the
    rendering settings with decoding (what benchmarks.dream_speed times through the dream env), interleaved."""
    cfg = planner.config
    n = cfg.population
    many = model.fork(state, n)
    acts = torch.from_numpy(np.random.default_rng(0).integers(0, int(model.action_space.n), size=n))
    variants = {
        "planner": lambda: planner.plan(state, model),
        "plan_step": lambda: model.plan_step(many, acts, cfg.sampling_steps),
        "dream_step": lambda: model.model.step(many, acts),
    }
    per_call = {"planner": cfg.samples_per_decision, "plan_step": n, "dream_step": n}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for key in list(variants)[:: (-1 if r % 2 else 1)]:
            t0 = time.perf_counter()
            for _ in range(1 if key == "planner" else cfg.horizon):
                variants[key]()
            times[key].append(time.perf_counter() - t0)
    rate = {k: float(per_call[k] * (1 if k == "planner" else cfg.horizon) / np.median(v)) for k, v in times.items()}
    return {
        "batch": n,
        "samples_per_s": rate,
        "planner_vs_dream_step": rate["planner"] / rate["dream_step"],
        "planner_vs_plan_step": rate["planner"] / rate["plan_step"],
        "goal_within_20pct_of_dream_speed": rate["planner"] >= 0.8 * rate["dream_step"],
        "note": "dream_step = WorldModel.step (rendering sampling steps + decoding), the per-frame cost "
        "benchmarks.dream_speed measures through DreamVectorEnv at this batch; plan_step = the planning step "
        "alone (planning sampling steps, no decoding); planner = whole decisions (sampling, rollouts, refits)",
    }


def sensitivity(model_wm, folder: Path, windows: int, context: int = 16, horizon: int = 8, max_episodes: int = 6):
    """The checkpoint's action sensitivity on held-out episodes (as benchmarks.action_following.measure)."""
    paths = EpisodeStore(folder).paths[:max_episodes]
    data = LatentEpisodes(model_wm, paths, min_frames=context + horizon, desc="encoding held-out", keep_frames=True)
    res = action_sensitivity(model_wm, data, context=context, horizon=horizon, windows=windows)
    res["episodes_folder"], res["episodes"] = str(folder), len(data.actions)
    return res


# ------------------------------------------------------------------------------------------------- the job


def _check_work_dir(job: EvaluateJob) -> Path:
    folder = job.run_folder
    (folder / "episodes").mkdir(parents=True, exist_ok=True)
    settings_path = folder / "settings.json"
    settings = json.loads(json.dumps(job.settings()))
    if settings_path.exists():
        old = json.loads(settings_path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{settings_path}: the episodes in {folder} were run with other settings ({', '.join(diff)} "
                f"differ); pass another --work-dir or remove that folder"
            )
    else:
        atomic_write_json(settings_path, settings)
    return folder


def _episode_path(folder: Path, method: str, seed: int) -> Path:
    return folder / "episodes" / f"{method}_{seed}.json"


def evaluate(job: EvaluateJob) -> dict:
    """Run (or resume) the evaluation of ``job``; returns the results written to ``job.out``."""
    job.check_paths()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    with RunLock(job.run_folder, what="planners.evaluate"):
        folder = _check_work_dir(job)
        res = _evaluate(job, folder)
    write(job, res)
    return res


def oracle_missing(env: gymnasium.Env, seed: int) -> str | None:
    """Why the scripted oracle cannot act in ``env`` (the ``info`` keys it reads that the env's reset does not
    report, e.g. Crafter's), or None when it can."""
    _, info = env.reset(seed=int(seed))
    missing = [k for k in OraclePolicy.needs if k not in info]
    if not missing:
        return None
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    return f"the oracle reads info keys {', '.join(missing)} (Memory Maze's map and target), which {name} lacks"


def _evaluate(job: EvaluateJob, folder: Path) -> dict:
    device = resolve_device(job.device)
    wm = worldmodel.load(job.checkpoint, device=device)
    env_id = job.env or wm.config.env_id
    env = gymnasium.make(env_id)
    model = WorldModelDream(wm, action_space=env.action_space)
    n_actions = int(env.action_space.n)
    if job.heldout_episodes is not None and n_actions != len(MEMORY_MAZE_ACTIONS.mirror):
        env.close()
        raise ValueError(
            f"--heldout-episodes: the action sensitivity knows Memory Maze's {len(MEMORY_MAZE_ACTIONS.mirror)} "
            f"actions (turns, forward, their mirror images); {env_id} has {n_actions}: leave the option out"
        )
    cfg = job.planner
    seeds = [job.seed + i for i in range(job.episodes)]
    records: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    if "oracle" in job.methods:
        why = oracle_missing(env, seeds[0])
        if why is not None:
            skipped["oracle"] = why
            print(f"note: oracle left out: {why}")
    oracle_episodes = []
    writer = None
    try:
        for method in (m for m in job.methods if m not in skipped):
            records[method] = []
            for seed in seeds:
                path = _episode_path(folder, method, seed)
                need_frames = method == "oracle"
                if path.exists() and not need_frames:
                    records[method].append(json.loads(path.read_text()))
                    continue
                bar = tqdm(total=job.max_steps, desc=f"{method} seed {seed}", unit="step", disable=not job.progress)
                if method in BASELINES:
                    policy = OraclePolicy() if method == "oracle" else RandomPolicy(n_actions)
                    rewards, actions, frames = run_policy_episode(env, policy, seed, job.max_steps)
                    bar.update(len(rewards))
                    rec = _episode_record(method, seed, rewards)
                    if method == "oracle":
                        oracle_episodes.append((rewards, actions, frames))
                else:
                    planner = PLANNER_CLASSES[method](cfg, model.action_space)
                    first = seed == seeds[0]
                    controller = MPCController(model, planner, record=job.record if first else 0)
                    result = controller.run_episode(
                        env, seed, job.max_steps, keep_frames=first, on_step=lambda s, r, b=bar: b.update(1)
                    )
                    rec = _episode_record(method, seed, result.rewards, result)
                    if first and job.record:
                        if writer is None:
                            from torch.utils.tensorboard import SummaryWriter  # heavy: only when logging

                            writer = SummaryWriter(str(folder / "tb"))
                        _log_decisions(writer, method, model, result)
                bar.close()
                if writer is not None:
                    writer.add_scalar(f"{method}/return", rec["return"], seed)
                atomic_write_json(path, rec)
                records[method].append(rec)
        # diagnosis and throughput
        diagnosis = (
            reward_horizon_diagnosis(model, oracle_episodes, cfg, job.diagnose_stride) if oracle_episodes else None
        )
        obs, _ = env.reset(seed=job.seed)
        state = model.start(frame_of(obs)[None].repeat(model.min_context_frames, 0), np.zeros(model.min_context_frames))
        tp_planner = PLANNER_CLASSES[next((m for m in job.methods if m in PLANNER_CLASSES), "cem")](
            cfg, model.action_space
        )
        speed = throughput(model, tp_planner, state, job.throughput_rounds)
        sens = sensitivity(wm, job.heldout_episodes, job.sensitivity_windows) if job.heldout_episodes else None
    finally:
        env.close()
        if writer is not None:
            writer.close()
    return summarise(job, records, diagnosis, speed, sens, env_id, device, skipped)


def summarise(job, records, diagnosis, speed, sens, env_id, device, skipped=None) -> dict:
    """The results dict: per method the episodes and their statistics, paired differences to random, goals;
    ``skipped``: methods left out, with the reason (the oracle outside Memory Maze)."""
    methods = {}
    rand = {r["seed"]: r["reward_rate_per_100"] for r in records.get("random", [])}
    for method, recs in records.items():
        m = {
            "episodes": recs,
            "return": mean_ci([r["return"] for r in recs]),
            "reward_rate_per_100": mean_ci([r["reward_rate_per_100"] for r in recs]),
        }
        if method in PLANNER_CLASSES:
            m["decision_seconds"] = float(np.mean([r["decision_seconds_mean"] for r in recs]))
            m["imagined_samples_per_s"] = float(
                np.sum([r["imagined_samples"] for r in recs])
                / max(np.sum([r["decision_seconds_total"] for r in recs]), 1e-9)
            )
            m["in_step_with_env"] = all(r["in_step_with_env"] for r in recs)
        if rand and method != "random":
            diffs = [r["reward_rate_per_100"] - rand[r["seed"]] for r in recs if r["seed"] in rand]
            d = mean_ci(diffs)
            m["minus_random_rate_per_100"] = d
            m["beats_random"] = bool(d["n"] > 1 and d["mean"] - d["ci95"] > 0)
        methods[method] = m
    planners_run = [m for m in records if m in PLANNER_CLASSES]
    return {
        "benchmark": "planners",
        "what": "MPC planners in the real env vs a random policy and a scripted oracle (unseen mazes)"
        if "oracle" in records
        else "MPC planners in the real env vs a random policy (unseen worlds)",
        "checkpoint": str(job.checkpoint),
        "env": env_id,
        "seeds": [job.seed + i for i in range(job.episodes)],
        "max_steps": job.max_steps,
        "preset": job.preset,
        "planner": dataclasses.asdict(job.planner),
        "samples_per_decision": job.planner.samples_per_decision,
        "methods": methods,
        "skipped": dict(skipped or {}),
        "reward_horizon": diagnosis,
        "throughput": speed,
        "action_sensitivity": sens,
        "goals": {
            "a_planner_beats_random_95ci": any(methods[m].get("beats_random", False) for m in planners_run),
            "throughput_within_20pct_of_dream_step": speed["goal_within_20pct_of_dream_speed"],
        },
        "machine": _machine(device),
    }


def markdown(res: dict) -> str:
    """The results table in markdown (mean +- 95% t-interval half-width over episodes)."""
    lines = [
        f"Checkpoint `{res['checkpoint']}`, env `{res['env']}`, seeds {res['seeds'][0]}-{res['seeds'][-1]}, "
        f"at most {res['max_steps']} real steps per episode; planner preset `{res['preset']}` "
        f"(horizon {res['planner']['horizon']}, population {res['planner']['population']}, "
        f"iterations {res['planner']['iterations']}, replan every {res['planner']['replan']} steps, "
        f"{res['planner']['sampling_steps'] or 'default'} denoising steps per imagined frame, "
        f"{res['samples_per_decision']} imagined frames per decision).",
        "",
        "| method | episodes | return | reward rate / 100 steps | minus random (paired) | s / decision "
        "| imagined samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in res["methods"].items():
        ret, rate = m["return"], m["reward_rate_per_100"]
        diff = m.get("minus_random_rate_per_100")
        dtxt = f"{diff['mean']:+.2f} ± {diff['ci95']:.2f}" if diff else "–"
        if m.get("beats_random"):
            dtxt += " (beats random)"
        secs = f"{m['decision_seconds']:.2f}" if "decision_seconds" in m else "–"
        sps = f"{m['imagined_samples_per_s']:.0f}" if "imagined_samples_per_s" in m else "–"
        lines.append(
            f"| {name} | {ret['n']} | {ret['mean']:.2f} ± {ret['ci95']:.2f} | {rate['mean']:.2f} ± {rate['ci95']:.2f} "
            f"| {dtxt} | {secs} | {sps} |"
        )
    for name, why in res.get("skipped", {}).items():
        lines.append(f"| {name} | left out: {why} | | | | | |")
    tp = res["throughput"]
    lines += [
        "",
        f"Throughput at batch {tp['batch']}: planner {tp['samples_per_s']['planner']:.0f} imagined samples/s, "
        f"planning step alone {tp['samples_per_s']['plan_step']:.0f}/s, dream step (rendering, decoded) "
        f"{tp['samples_per_s']['dream_step']:.0f} frames/s: planner / dream step = {tp['planner_vs_dream_step']:.2f}.",
    ]
    goals = res.get("goals", {})
    beats = [n for n, m in res["methods"].items() if n in PLANNER_CLASSES and m.get("beats_random")]
    lines += [
        "",
        "Goal, a planner's reward rate above random's (paired 95% interval excluding 0): "
        + (f"met by {', '.join(beats)}." if beats else "not met by any planner.")
        + f" Goal, planner throughput within 20% of the dream step's: "
        f"{'met' if goals.get('throughput_within_20pct_of_dream_step') else 'not met'}.",
    ]
    d = res.get("reward_horizon")
    if d and d.get("windows"):
        lines += [
            "",
            f"Reward horizon (oracle episodes, {d['windows']} windows of {d['horizon']} steps, "
            f"{d['windows_with_reward']} with a real reward): recall {d['recall']:.2f}, false alarms "
            f"{d['false_alarm_rate']:.2f}, imagined return {d['imagined_return_reward_ahead']:.3f} with a reward "
            f"ahead vs {d['imagined_return_no_reward_ahead']:.3f} without; real minus random actions "
            f"{d['real_minus_random_actions_reward_ahead']:+.3f} (reward ahead).",
        ]
    s = res.get("action_sensitivity")
    if s:
        lines += ["", "Action sensitivity " + sensitivity_sentence(s)]
    return "\n".join(lines) + "\n"


def sensitivity_sentence(s: dict) -> str:
    """``worldmodel.evaluate.action_sensitivity`` results (as :func:`sensitivity` returns them) in one sentence."""
    t, c = s.get("turning", {}), s.get("constant", {})
    return (
        f"({s['episodes']} held-out episodes): turning windows real minus swapped "
        f"{t.get('psnr_real_minus_swapped', float('nan')):+.2f} dB; constant left vs right PSNR "
        f"{c.get('psnr_left_vs_right', float('nan')):.2f} dB vs two noise seeds "
        f"{c.get('psnr_seed_vs_seed', float('nan')):.2f} dB (follows actions: {c.get('follows_actions')})."
    )


def plot(res: dict) -> Figure:
    """Bars of the reward rate per 100 steps (95% intervals) per method, and decision time per planner."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    names = list(res["methods"])
    rates = [res["methods"][n]["reward_rate_per_100"] for n in names]
    colors = ["C0" if n in PLANNER_CLASSES else ("C7" if n == "random" else "C2") for n in names]
    ax1.bar(range(len(names)), [r["mean"] for r in rates], yerr=[r["ci95"] for r in rates], color=colors, capsize=4)
    ax1.set_xticks(range(len(names)), names, rotation=20)
    ax1.set_ylabel("real reward per 100 steps (95% CI)")
    ax1.set_title(f"{len(res['seeds'])} unseen worlds x {res['max_steps']} steps", fontsize=9)
    planners = [n for n in names if n in PLANNER_CLASSES]
    if planners:
        ax2.bar(range(len(planners)), [res["methods"][n]["decision_seconds"] for n in planners], color="C0")
        ax2.set_xticks(range(len(planners)), planners, rotation=20)
        ax2.set_ylabel("seconds per decision")
        ax2.set_title(f"{res['samples_per_decision']} imagined frames per decision", fontsize=9)
    fig.suptitle(f"planners on {Path(res['checkpoint']).parent.name} ({res['env']})", fontsize=10)
    fig.tight_layout()
    return fig


def write(job: EvaluateJob, res: dict) -> None:
    """NAME.json, NAME.png and NAME.md into ``job.out``, each atomically (NAME: ``--name``, else named per world)."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    name = job.name or result_name("planners", env_world(res["env"]))
    atomic_write_json(out / f"{name}.json", res)
    save_figure(plot(res), out / f"{name}.png", dpi=110)
    atomic_write_text(out / f"{name}.md", markdown(res))
    print(f"wrote {out / name}.json, .png and .md")


def parse_args(argv: list[str] | None = None) -> EvaluateJob:
    """The EvaluateJob of a command line (tyro; ``--preset`` is read first and sets the planner defaults)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    preset = "cpu"
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv) and argv[i + 1] in PLANNER_PRESETS:
            preset = argv[i + 1]
        elif arg.startswith("--preset=") and arg.split("=", 1)[1] in PLANNER_PRESETS:
            preset = arg.split("=", 1)[1]
    default = EvaluateJob(checkpoint=tyro.MISSING, preset=preset, planner=planner_config(preset))
    return tyro.cli(EvaluateJob, args=argv, default=default, prog="python -m planners.evaluate", description=__doc__)


def main(argv: list[str] | None = None) -> int:
    """``python -m planners.evaluate``; exit status 2 with a one-line message for a refused argument."""
    try:
        job = parse_args(argv)
        evaluate(job)
    except (ValueError, OSError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
