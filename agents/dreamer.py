"""A Dreamer-style actor-critic that learns in imagination, judged in the real env (``python -m agents.dreamer``).

    python -m agents.dreamer --checkpoint runs/demo/checkpoint.pt --episodes data/episodes/mm9      # in the dream
    python -m agents.dreamer --checkpoint runs/demo/checkpoint.pt --world real \\
        --run-dir runs/agent-dreamer-real                     # the same algorithm on as many REAL env steps
    python -m agents.dreamer ... --resume                     # continue an interrupted run

Reads top to bottom like a CleanRL script: the documented config, then the loop. The library parts come from
``agents.returns`` (λ-returns, symlog two-hot, the percentile return normaliser), ``agents.actor_critic`` (the
MLPs), ``agents.rollouts`` (imagined and real experience, the real-env acting policy), ``agents.real`` (fixed-seed
evaluation) and the world model itself (``WorldModel.start_with_features`` / ``plan_step`` / ``observe``).

The recipe is DreamerV3's (Hafner et al., 2023, "Mastering Diverse Domains through World Models"), each choice
named where it is made. One deliberate difference: the world model here is a diffusion model sampled without
gradients, so the actor learns by REINFORCE for every action kind (DreamerV3 backpropagates through the
dynamics for continuous actions; a DDIM sampler per imagined frame makes that impractical on a CPU).

Writes into ``--run-dir``: ``config.json``, ``agent.pt`` (actor, critic, slow critic, optimisers, normaliser, step;
atomic, every ``--checkpoint-every`` updates), ``tb/`` (TensorBoard: imagined and real returns, losses, entropy,
imagined episodes as image strips) and ``eval.json`` (the final real-env evaluation on fixed seeds).
The trained critic is a planner's terminal value: ``load_agent(path).critic.as_terminal_value()``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402, F401  (registers the Memory Maze ids)
import worldmodel  # noqa: E402
from agents.actor_critic import Actor, Critic  # noqa: E402
from agents.real import evaluate_policy, real_steps_used  # noqa: E402
from agents.returns import PercentileNormalizer, discount_from_horizon, lambda_returns  # noqa: E402
from agents.rollouts import FeaturePolicy, ImaginedRollouts, RealRollouts  # noqa: E402
from envs.contexts import ContextSampler  # noqa: E402
from envs.fileio import RunLock, RunLockedError, atomic_torch_save, atomic_write_json, torch_load  # noqa: E402
from planners.dream_model import WorldModelDream  # noqa: E402
from worldmodel.utils import git_commit, image_strip, resolve_device  # noqa: E402

__all__ = [
    "REAL_ENVS",
    "DreamerConfig",
    "LoadedAgent",
    "load_agent",
    "main",
    "space_from_dict",
    "space_to_dict",
    "train",
]

REAL_ENVS = 4
"""Real envs of --world real at most: one Memory Maze env (the stock dm_control task) holds ~1 GB of memory."""

RESUME_MAY_CHANGE = (
    *("steps", "resume", "progress", "threads", "device", "run_dir", "checkpoint_every", "strip_every"),
    *("eval_every", "eval_episodes", "eval_max_steps", "final_eval_episodes", "final_eval_max_steps"),
    *("eval_seed", "deterministic_eval"),
)
"""Settings a resumed run may change (how long, how it is watched); every other one must match config.json."""


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class DreamerConfig:
    """A Dreamer-style actor-critic run. Defaults are sized for 2 CPU cores and the cpu-preset world model."""

    checkpoint: Path
    """The world model: RUN_DIR/checkpoint.pt written by python -m worldmodel.train."""
    episodes: Path | None = None
    """Folder of real episodes the dreams are warmed on (required with --world dream; e.g. the model's data)."""
    world: Literal["dream", "real"] = "dream"
    """Where experience comes from: imagined rollouts, or the same number of real env steps (the baseline)."""
    env: str | None = None
    """Gymnasium id of the real env (None: the one the checkpoint was trained for)."""
    run_dir: Path = Path("runs/agent-dreamer")
    """Output folder (config.json, agent.pt, tb/, eval.json)."""
    steps: int = 24_000
    """Env steps to learn from: imagined (dream) or real; updates = steps / (batch x horizon)."""
    batch: int = 32
    """Dreams per update (--world real: min(batch, REAL_ENVS) real envs; a Memory Maze env holds ~1 GB)."""
    horizon: int = 15
    """Imagination horizon H (DreamerV3: 15)."""
    context_frames: int = 16
    """Real frames each dream is warmed on."""
    sampling_steps: int | None = 1
    """DDIM steps per imagined frame while learning (None: the model's rendering setting)."""
    discount_horizon: float = 333.0
    """Effective horizon 1 / (1 - discount) (DreamerV3: 333 steps, discount 0.997)."""
    lam: float = 0.95
    """λ of the λ-returns (DreamerV3: 0.95)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (DreamerV3: 3e-5 over millions of updates; a few hundred here)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic."""
    entropy: float = 3e-4
    """Entropy bonus η (DreamerV3: 3e-4, with returns normalised to about [0, 1])."""
    critic_loss: Literal["twohot", "mse"] = "twohot"
    """twohot: DreamerV3's symlog two-hot critic; mse: a plain regression of the λ-returns."""
    slow_critic_decay: float = 0.98
    """EMA decay of the slow critic that bootstraps the λ-returns (DreamerV3: 0.98)."""
    hidden: int = 256
    """Hidden units of the actor and critic MLPs."""
    layers: int = 2
    """Hidden layers of the actor and critic MLPs."""
    grad_clip: float = 100.0
    """Gradient norm clip of the actor and the critic (DreamerV3: 100)."""
    max_episode_steps: int = 500
    """--world real: real steps before an env is reset."""
    eval_every: int = 25
    """Updates between real-env evaluations (0: only the final one)."""
    eval_episodes: int = 2
    """Real episodes of each periodic evaluation."""
    eval_max_steps: int = 150
    """Real steps per periodic-evaluation episode."""
    final_eval_episodes: int = 8
    """Real episodes of the final evaluation (env seeds eval_seed ..)."""
    final_eval_max_steps: int = 300
    """Real steps per final-evaluation episode (Memory Maze 9x9 episodes are 1000 steps)."""
    eval_seed: int = 3000
    """First env seed of every evaluation; pick seeds the world model never trained on."""
    deterministic_eval: bool = False
    """Act with the actor's mode in evaluations instead of sampling."""
    strip_every: int = 25
    """Updates between imagined episodes logged as image strips (--world dream; 0: never)."""
    checkpoint_every: int = 10
    """Updates between agent.pt checkpoints."""
    seed: int = 0
    """Seeds the networks, the context draws, the dreams' noise and the real envs."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    threads: int | None = None
    """torch CPU threads (None: torch's choice)."""
    resume: bool = False
    """Continue the run in --run-dir from its agent.pt."""
    progress: bool = True
    """Progress bar."""

    def __post_init__(self) -> None:
        for name, minimum in (
            ("steps", 1),
            ("batch", 1),
            ("horizon", 1),
            ("context_frames", 1),
            ("hidden", 1),
            ("layers", 0),
            ("max_episode_steps", 1),
            ("eval_every", 0),
            ("eval_episodes", 1),
            ("eval_max_steps", 1),
            ("final_eval_episodes", 1),
            ("final_eval_max_steps", 1),
            ("eval_seed", 0),
            ("strip_every", 0),
            ("checkpoint_every", 1),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"--{name.replace('_', '-')} {v!r}: expected an integer >= {minimum}")
        if self.sampling_steps is not None and self.sampling_steps < 1:
            raise ValueError(f"--sampling-steps {self.sampling_steps!r}: expected >= 1 (or None)")
        for name in ("actor_lr", "critic_lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: expected a positive number")
        if not 0 <= self.entropy:
            raise ValueError(f"--entropy {self.entropy!r}: expected a number >= 0")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"--lam {self.lam!r}: expected a value in [0, 1]")
        if not 0 <= self.slow_critic_decay < 1:
            raise ValueError(f"--slow-critic-decay {self.slow_critic_decay!r}: expected a value in [0, 1)")
        discount_from_horizon(self.discount_horizon)  # raises for < 1
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"--threads {self.threads!r}: expected >= 1")
        resolve_device(self.device)

    @property
    def envs_per_update(self) -> int:
        """Parallel episodes per update: the batch of dreams, or min(batch, REAL_ENVS) real envs."""
        return self.batch if self.world == "dream" else min(self.batch, REAL_ENVS)

    @property
    def updates(self) -> int:
        """Updates to reach ``steps`` env steps."""
        return math.ceil(self.steps / (self.envs_per_update * self.horizon))

    def check_paths(self) -> None:
        """ValueError naming the option unless the checkpoint (and, in the dream, the episodes folder) exist."""
        if not Path(self.checkpoint).is_file():
            raise ValueError(f"--checkpoint {self.checkpoint}: no such file (expected RUN_DIR/checkpoint.pt)")
        if self.world == "dream":
            if self.episodes is None:
                raise ValueError("--episodes DIR is required with --world dream: real episodes to warm dreams on")
            if not Path(self.episodes).is_dir():
                raise ValueError(f"--episodes {self.episodes}: no such folder")


# ------------------------------------------------------------------------------------------- the agent
@dataclass
class LoadedAgent:
    """A trained agent (``load_agent``): its networks, the config it was trained with and its step."""

    actor: Actor
    critic: Critic
    config: DreamerConfig
    update: int


def _networks(cfg: DreamerConfig, feat_dim: int, action_space) -> tuple[Actor, Critic, Critic]:
    actor = Actor(feat_dim, action_space, cfg.hidden, cfg.layers)
    critic = Critic(feat_dim, cfg.hidden, cfg.layers, cfg.critic_loss)
    slow = Critic(feat_dim, cfg.hidden, cfg.layers, cfg.critic_loss)
    slow.load_state_dict(critic.state_dict())
    slow.requires_grad_(False)
    return actor, critic, slow


def space_to_dict(space) -> dict:
    """A Discrete or Box action space as plain data (checkpoints hold no pickled objects)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n)}
    if isinstance(space, gymnasium.spaces.Box):
        return {"kind": "box", "low": space.low.tolist(), "high": space.high.tolist()}
    raise ValueError(f"action space {space}: agents support Discrete and Box")


def space_from_dict(d: dict):
    """The inverse of :func:`space_to_dict`."""
    if d.get("kind") == "discrete":
        return gymnasium.spaces.Discrete(int(d["n"]))
    if d.get("kind") == "box":
        return gymnasium.spaces.Box(
            np.asarray(d["low"], np.float32), np.asarray(d["high"], np.float32), dtype=np.float32
        )
    raise ValueError(f"action space entry {d!r}: expected kind 'discrete' or 'box'")


def _config_dict(cfg: DreamerConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _config_from_dict(d: dict) -> DreamerConfig:
    d = dict(d)
    for k in ("checkpoint", "episodes", "run_dir"):
        if d.get(k) is not None:
            d[k] = Path(d[k])
    return DreamerConfig(**{k: v for k, v in d.items() if k in DreamerConfig.__dataclass_fields__})


def load_agent(path: str | os.PathLike, device: str = "cpu") -> LoadedAgent:
    """The actor and critic of an ``agent.pt`` (weights only), e.g. the critic as a planner's terminal value."""
    ckpt = torch_load(path, map_location=resolve_device(device))
    for key in ("actor", "critic", "config", "feat_dim", "action_space", "update"):
        if key not in ckpt:
            raise ValueError(f"{path}: not an agents.dreamer checkpoint (no '{key}' entry)")
    cfg = _config_from_dict(ckpt["config"])
    actor, critic, _ = _networks(cfg, int(ckpt["feat_dim"]), space_from_dict(ckpt["action_space"]))
    actor.load_state_dict(ckpt["actor"])
    critic.load_state_dict(ckpt["critic"])
    dev = resolve_device(device)
    return LoadedAgent(actor.to(dev).eval(), critic.to(dev).eval(), cfg, int(ckpt["update"]))


# ------------------------------------------------------------------------------------------- the loop
def train(cfg: DreamerConfig) -> dict:
    """Run (or resume) the actor-critic of ``cfg``; returns the final evaluation written to eval.json."""
    cfg.check_paths()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with RunLock(run, what="agents.dreamer"):
        return _train(cfg, run)


def _train(cfg: DreamerConfig, run: Path) -> dict:
    device = resolve_device(cfg.device)
    # 1. the world model, checked against the real env it stands in for
    wm = worldmodel.load(cfg.checkpoint, device=device).eval()
    env_id = cfg.env or wm.config.env_id
    probe = gymnasium.make(env_id)
    WorldModelDream(wm, action_space=probe.action_space, observation_space=probe.observation_space)  # names both
    action_space = probe.action_space
    probe.close()
    feat_dim = int(wm.config.backbone.dim)

    # 2. the run folder: a new run writes config.json; a resume must match it
    ckpt_path, cfg_path = run / "agent.pt", run / "config.json"
    if cfg_path.exists() and not cfg.resume:
        raise ValueError(f"{run} already holds a run: pass --resume to continue it, or another --run-dir")
    if cfg.resume:
        if not ckpt_path.exists():
            raise ValueError(f"--resume: {ckpt_path} does not exist")
        old = json.loads(cfg_path.read_text())
        new = _config_dict(cfg)
        diff = sorted(k for k in new if k not in RESUME_MAY_CHANGE and old.get(k) != new[k])
        if diff:
            raise ValueError(f"--resume: {cfg_path} differs in {', '.join(diff)}; pass the same settings")
    else:
        atomic_write_json(cfg_path, _config_dict(cfg))

    # 3. networks, optimisers, the return normaliser
    torch.manual_seed(cfg.seed)
    actor, critic, slow = (m.to(device) for m in _networks(cfg, feat_dim, action_space))
    actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr, eps=1e-5)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, eps=1e-5)
    norm = PercentileNormalizer()  # DreamerV3: S = max(1, P95 - P5) of the λ-returns, EMA decay 0.99
    discount = discount_from_horizon(cfg.discount_horizon)  # DreamerV3: γ = 1 - 1/333
    gen = torch.Generator().manual_seed(cfg.seed)
    update, env_steps, learn_seconds = 0, 0, 0.0
    if cfg.resume:
        ck = torch_load(ckpt_path, map_location=device)
        actor.load_state_dict(ck["actor"])
        critic.load_state_dict(ck["critic"])
        slow.load_state_dict(ck["slow_critic"])
        actor_opt.load_state_dict(ck["actor_opt"])
        critic_opt.load_state_dict(ck["critic_opt"])
        norm.load_state_dict(ck["normalizer"])
        gen.set_state(ck["generator"])
        update, env_steps, learn_seconds = int(ck["update"]), int(ck["env_steps"]), float(ck["learn_seconds"])

    # 4. where experience comes from (a resumed run draws new contexts / restarts its real envs: documented)
    if cfg.world == "dream":
        contexts = ContextSampler(
            cfg.episodes, tuple(wm.config.obs_shape), int(wm.config.num_actions), str(cfg.checkpoint)
        )
        source = ImaginedRollouts(wm, contexts, cfg.batch, cfg.context_frames, cfg.sampling_steps, cfg.seed + update)
    else:
        source = RealRollouts(wm, env_id, cfg.envs_per_update, cfg.max_episode_steps, seed=cfg.seed * 100_000 + update)

    def save() -> None:
        atomic_torch_save(
            {
                "actor": actor.state_dict(),
                "critic": critic.state_dict(),
                "slow_critic": slow.state_dict(),
                "actor_opt": actor_opt.state_dict(),
                "critic_opt": critic_opt.state_dict(),
                "normalizer": norm.state_dict(),
                "generator": gen.get_state(),
                "update": update,
                "env_steps": env_steps,
                "learn_seconds": learn_seconds,
                "feat_dim": feat_dim,
                "action_space": space_to_dict(action_space),
                "env_id": env_id,
                "config": _config_dict(cfg),
            },
            ckpt_path,
        )

    def evaluate(episodes: int, max_steps: int, desc: str) -> dict:
        actor.eval()
        policy = FeaturePolicy(wm, actor, deterministic=cfg.deterministic_eval, seed=cfg.seed)
        seeds = range(cfg.eval_seed, cfg.eval_seed + episodes)
        res = evaluate_policy(policy, env_id, seeds, max_steps, progress=cfg.progress, desc=desc)
        actor.train()
        return res

    writer = SummaryWriter(str(run / "tb"))
    bar = tqdm(
        total=cfg.updates, initial=update, desc=f"dreamer ({cfg.world})", unit="update", disable=not cfg.progress
    )
    try:
        while update < cfg.updates:
            t0 = time.perf_counter()
            # 5. experience: H steps of B dreams (or real envs) under the actor's sampled actions
            traj = source.rollout(actor, cfg.horizon, gen)
            feats = traj.feats.to(device)  # (H+1, B, D), no gradient into the world model
            rewards, continues = traj.rewards.to(device), traj.continues.to(device)  # (H, B)
            # 6. λ-returns bootstrapped from the slow critic (DreamerV3 eq. 7; the slow critic as in DreamerV2/V3)
            with torch.no_grad():
                values = slow.value(feats)  # (H+1, B)
                returns = lambda_returns(rewards, values, continues, discount, cfg.lam)  # (H, B)
            # 7. critic: symlog two-hot cross-entropy to the λ-returns (DreamerV3 sec. "Critic learning")
            critic_loss = critic.loss(feats[:-1], returns).mean()
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_grad = torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.grad_clip)
            critic_opt.step()
            # 8. actor: REINFORCE with the critic as baseline, advantages / max(1, P95 - P5) (DreamerV3 eq. 11),
            #    plus an entropy bonus η H[π] (DreamerV3: η = 3e-4)
            scale = norm.update(returns)
            with torch.no_grad():
                adv = (returns - critic.value(feats[:-1])) / scale  # (H, B)
            dist = actor.dist(feats[:-1])
            logp = actor.log_prob(dist, traj.actions.to(device))  # (H, B)
            entropy = actor.entropy(dist)  # (H, B)
            actor_loss = -(logp * adv).mean() - cfg.entropy * entropy.mean()
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            actor_grad = torch.nn.utils.clip_grad_norm_(actor.parameters(), cfg.grad_clip)
            actor_opt.step()
            # 9. the slow critic follows the critic (EMA, DreamerV3: decay 0.98 every update)
            with torch.no_grad():
                for p_slow, p in zip(slow.parameters(), critic.parameters()):
                    p_slow.lerp_(p, 1 - cfg.slow_critic_decay)
            update += 1
            env_steps += traj.steps
            learn_seconds += time.perf_counter() - t0
            # 10. logs
            key = cfg.world
            writer.add_scalar(f"{key}/return_per_rollout", rewards.sum(0).mean().item(), env_steps)
            writer.add_scalar(f"{key}/reward_mean", rewards.mean().item(), env_steps)
            writer.add_scalar(f"{key}/lambda_return", returns.mean().item(), env_steps)
            writer.add_scalar("loss/actor", actor_loss.item(), env_steps)
            writer.add_scalar("loss/critic", critic_loss.item(), env_steps)
            writer.add_scalar("actor/entropy", entropy.mean().item(), env_steps)
            writer.add_scalar("actor/return_scale", scale, env_steps)
            writer.add_scalar("grad/actor", float(actor_grad), env_steps)
            writer.add_scalar("grad/critic", float(critic_grad), env_steps)
            writer.add_scalar("speed/env_steps_per_s", env_steps / max(learn_seconds, 1e-9), env_steps)
            if cfg.world == "real" and source.returns:
                writer.add_scalar("real/train_episode_return", source.returns[-1], env_steps)
            bar.set_postfix(r=f"{rewards.mean().item():.4f}", H=f"{entropy.mean().item():.2f}")
            bar.update(1)
            if cfg.world == "dream" and cfg.strip_every and update % cfg.strip_every == 0:
                frames, acts = source.imagine_frames(actor, cfg.horizon, gen)
                writer.add_image(
                    "dream/imagined_episode", image_strip(frames, error=False), env_steps, dataformats="HWC"
                )
                writer.add_text("dream/imagined_actions", str(acts), env_steps)
            if cfg.eval_every and update % cfg.eval_every == 0 and update < cfg.updates:
                res = evaluate(cfg.eval_episodes, cfg.eval_max_steps, "periodic real-env evaluation")
                writer.add_scalar("real/eval_return", res["return"]["mean"], env_steps)
                writer.add_scalar("real/eval_reward_rate_per_100", res["reward_rate_per_100"]["mean"], env_steps)
            if update % cfg.checkpoint_every == 0 or update == cfg.updates:
                save()
        bar.close()
        # 11. the final evaluation in the real env, on fixed seeds
        res = evaluate(cfg.final_eval_episodes, cfg.final_eval_max_steps, "final real-env evaluation")
        writer.add_scalar("real/final_return", res["return"]["mean"], env_steps)
    finally:
        writer.close()
        if isinstance(source, RealRollouts):
            source.close()
    out = {
        "agent": "dreamer",
        "world": cfg.world,
        "env": env_id,
        "checkpoint": str(cfg.checkpoint),
        "updates": update,
        "env_steps": env_steps,
        "imagined_steps": env_steps if cfg.world == "dream" else 0,
        "real_steps_used": real_steps_used(cfg.world, cfg.episodes, env_steps),
        "learn_seconds": learn_seconds,
        "steps_per_s": env_steps / max(learn_seconds, 1e-9),
        "eval": res,
        "config": _config_dict(cfg),
        "git_commit": git_commit()[0],
    }
    atomic_write_json(run / "eval.json", out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.dreamer``; exit status 2 with a one-line message for a refused argument."""
    try:
        cfg = tyro.cli(DreamerConfig, args=argv, prog="python -m agents.dreamer", description=__doc__)
        res = train(cfg)
    except (ValueError, OSError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ev = res["eval"]
    print(
        f"real env ({len(ev['seeds'])} episodes x {ev['max_steps']} steps): return {ev['return']['mean']:.2f} "
        f"± {ev['return']['ci95']:.2f}, reward rate {ev['reward_rate_per_100']['mean']:.2f} / 100 steps; "
        f"wrote {Path(cfg.run_dir) / 'eval.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
