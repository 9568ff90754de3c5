"""Where an actor-critic's experience comes from: imagined rollouts in the world model, or real env steps.

    source = ImaginedRollouts(model, contexts, batch=32, context_frames=16, sampling_steps=1)
    traj = source.rollout(actor, horizon=15, generator=g)   # Trajectory: feats (H+1, B, D), rewards (H, B), ...
    source = RealRollouts(model, "longdream/MemoryMaze-9x9-v0", batch=16, max_episode_steps=500, seed=0)
    traj = source.rollout(actor, horizon=15, generator=g)   # the same, from B real envs that keep running

Both see the world through the world model's per-frame features (the backbone's output for a frame committed at
the stabilisation noise level), so the same actor and critic learn from either: imagination gives expected
rewards (the reward head's probability, ``WorldModel.plan_step``), reality gives the env's rewards and features
of the real frames (``WorldModel.observe_with_features``). No pixels are decoded while learning.

A real episode starts with the model warmed on the reset frame held for ``min_context_frames`` frames under
the noop action (what standing still for that long would show); :class:`FeaturePolicy`, the real-env acting
policy of an actor, starts its episodes the same way.

Axis legend: H horizon, B batch (dreams or real envs), D feature dim, Tc context frames, H x W x 3 frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402, F401  (registers the Memory Maze ids)
from agents.actor_critic import Actor  # noqa: E402
from envs.contexts import ContextSampler  # noqa: E402
from planners.controller import frame_of  # noqa: E402
from worldmodel.model import DreamState, WorldModel  # noqa: E402
from worldmodel.state import state_put  # noqa: E402

__all__ = ["FeaturePolicy", "ImaginedRollouts", "RealRollouts", "Trajectory", "warm_on_frame"]


@dataclass
class Trajectory:
    """H steps of B parallel episodes, as an actor-critic learns from them."""

    feats: torch.Tensor
    """Per-frame features (H + 1, B, D) of frames 0..H (no gradient)."""
    actions: torch.Tensor
    """Raw actions (H, B) int64 or (H, B, A) float (what ``Actor.log_prob`` scores)."""
    rewards: torch.Tensor
    """(H, B): the reward of the step from frame t to frame t + 1 (expected, in a dream)."""
    continues: torch.Tensor
    """(H, B) float in {0, 1}: 0 where frame t + 1 starts a new episode (real envs only)."""

    @property
    def steps(self) -> int:
        """Env steps in the trajectory (H x B)."""
        return int(self.rewards.numel())


def warm_on_frame(model: WorldModel, frames: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, DreamState]:
    """The model warmed on each first frame (B, H, W, 3) held ``min_context_frames`` frames under the noop
    action: (features of that frame (B, D), the B-dream state)."""
    k = int(model.config.min_context_frames)
    f = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8))[:, None].expand(-1, k, -1, -1, -1)
    a = torch.zeros(f.shape[:2], dtype=torch.int64)  # (B, k) noop
    return model.start_with_features(f.contiguous(), a, generator=generator)


class ImaginedRollouts:
    """Batches of dreams warmed on real contexts, rolled out with the actor's actions (no decoding).

    Args:
        model: the world model (eval mode; its weights are not trained here).
        contexts: real windows to warm on (``envs.contexts.ContextSampler`` of an episode folder).
        batch: dreams per rollout. context_frames: real frames per context (>= the model's minimum).
        sampling_steps: DDIM steps per imagined frame (None: the model's rendering setting; 1 is the planners'
            cpu choice).
        seed: seeds the context draws and the dreams' noise.
    """

    def __init__(
        self,
        model: WorldModel,
        contexts: ContextSampler,
        batch: int,
        context_frames: int,
        sampling_steps: int | None = 1,
        seed: int = 0,
    ):
        need = int(model.config.min_context_frames)
        if context_frames < need:
            raise ValueError(f"context_frames={context_frames}: the world model needs at least {need}")
        self.model, self.contexts = model, contexts
        self.batch, self.context_frames, self.sampling_steps = int(batch), int(context_frames), sampling_steps
        self.rng = np.random.default_rng(seed)
        self.noise = torch.Generator().manual_seed(int(seed))

    def start(self, k: int | None = None) -> tuple[torch.Tensor, DreamState]:
        """K (default: batch) dreams warmed on random real contexts: (features (K, D), state)."""
        frames, actions = [], []
        for _ in range(self.batch if k is None else k):
            i, s = self.contexts.sample(self.rng, self.context_frames)
            f, a = self.contexts.window(i, s, self.context_frames)
            frames.append(f)
            actions.append(a)
        f = torch.from_numpy(np.stack(frames))  # (K, Tc, H, W, 3)
        a = torch.from_numpy(np.stack(actions))  # (K, Tc)
        gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=self.noise)))
        return self.model.start_with_features(f, a, generator=gen)

    @torch.no_grad()
    def rollout(self, actor: Actor, horizon: int, generator: torch.Generator) -> Trajectory:
        """``horizon`` imagined steps of ``batch`` fresh dreams under the actor's sampled actions."""
        feats, state = self.start()
        fs, acts, rews = [feats], [], []
        for _ in range(horizon):
            a, raw = actor.sample(feats, generator)
            # each dream its own noise (shared_noise=False): learning wants diverse futures, not common numbers
            r, feats, state = self.model.plan_step(state, a, self.sampling_steps, shared_noise=False)
            fs.append(feats)
            acts.append(raw)
            rews.append(r)
        rewards = torch.stack(rews).float()
        return Trajectory(torch.stack(fs).float(), torch.stack(acts), rewards, torch.ones_like(rewards))

    @torch.no_grad()
    def imagine_frames(self, actor: Actor, horizon: int, generator: torch.Generator) -> tuple[np.ndarray, list]:
        """One decoded dream for logging, at the rendering settings: (frames uint8 (horizon, H, W, 3), actions).

        For one dream ``WorldModel.step`` and ``plan_step(..., sampling_steps=None)`` from the same state draw the
        same noise, so the decoded frame is exactly the one whose features the actor acts on next."""
        feats, state = self.start(1)
        frames, actions = [], []
        for _ in range(horizon):
            a, _ = actor.sample(feats, generator)
            f, _, _ = self.model.step(state, a)
            _, feats, state = self.model.plan_step(state, a, None)
            frames.append(f[0].cpu().numpy())
            actions.append(int(a[0]) if a.dim() == 1 else a[0].tolist())
        return np.stack(frames), actions


class RealRollouts:
    """B real envs that keep running across rollouts, seen through the world model's features.

    Args:
        model: the world model whose features the actor sees (kept in step with each env by ``observe``).
        env_id: the real env (its action space and frames must be the model's).
        batch: envs. max_episode_steps: real steps before an episode is cut and the env reset.
        seed: env i's episodes use seeds seed + i, seed + i + batch, ...
    """

    def __init__(self, model: WorldModel, env_id: str, batch: int, max_episode_steps: int, seed: int = 0):
        self.model, self.batch, self.seed = model, int(batch), int(seed)
        self.envs = [gymnasium.make(env_id, max_episode_steps=int(max_episode_steps)) for _ in range(self.batch)]
        self.episodes = 0
        self.noise = torch.Generator().manual_seed(int(seed))
        self.returns: list[float] = []  # finished episodes' returns
        self._ret = np.zeros(self.batch)
        frames = np.stack([self._reset(j) for j in range(self.batch)])
        self.feats, self.state = warm_on_frame(model, frames, self.noise)

    def _reset(self, j: int) -> np.ndarray:
        seed = self.seed + j + self.batch * self.episodes
        self.episodes += 1 if j == self.batch - 1 else 0
        obs, _ = self.envs[j].reset(seed=int(seed))
        return frame_of(obs)

    @torch.no_grad()
    def rollout(self, actor: Actor, horizon: int, generator: torch.Generator) -> Trajectory:
        """``horizon`` real steps of every env under the actor's sampled actions."""
        fs, acts, rews, conts = [self.feats], [], [], []
        for _ in range(horizon):
            a, raw = actor.sample(self.feats, generator)
            a_np = a.cpu().numpy()
            frames, rewards, cont = [], np.zeros(self.batch), np.ones(self.batch)
            ended = []
            for j, env in enumerate(self.envs):
                obs, r, term, trunc, _ = env.step(a_np[j].item() if a_np.ndim == 1 else a_np[j])
                rewards[j] = float(r)
                frames.append(frame_of(obs))
                if term or trunc:
                    ended.append(j)
            self._ret += rewards
            feats, state = self.model.observe_with_features(
                self.state, torch.from_numpy(np.stack(frames)), a.to(torch.int64).cpu()
            )
            if ended:  # a new episode in those envs: warm their slots on the reset frame
                idx = torch.tensor(ended, dtype=torch.int64)
                new_frames = np.stack([self._reset(j) for j in ended])
                f_new, s_new = warm_on_frame(self.model, new_frames, self.noise)
                state = DreamState(
                    state_put(state.backbone_state, idx, s_new.backbone_state, self.batch), state.generator
                )
                feats = feats.clone()
                feats[idx] = f_new
                for j in ended:
                    cont[j] = 0.0
                    self.returns.append(float(self._ret[j]))
                    self._ret[j] = 0.0
            self.feats, self.state = feats, state
            fs.append(feats)
            acts.append(raw)
            rews.append(torch.from_numpy(rewards).float())
            conts.append(torch.from_numpy(cont).float())
        return Trajectory(torch.stack(fs).float(), torch.stack(acts), torch.stack(rews), torch.stack(conts))

    def close(self) -> None:
        """Close the envs."""
        for env in self.envs:
            env.close()


class FeaturePolicy:
    """An actor acting in a real env (``agents.real.FramePolicy``): the world model is kept in step with the
    real frames and the actor samples from their features.

    Args:
        model: the world model. actor: the trained actor. deterministic: act with the mode instead of sampling.
        seed: added to every episode's seed for the actor's and the model's draws.
    """

    def __init__(self, model: WorldModel, actor: Actor, deterministic: bool = False, seed: int = 0):
        self.model, self.actor, self.deterministic, self.seed = model, actor, deterministic, int(seed)
        self.state: DreamState | None = None

    def reset(self, seed: int) -> None:
        """A new episode: forget the model state; reseed the draws."""
        self.state = None
        self.gen = torch.Generator().manual_seed(self.seed + int(seed))
        self.prev = 0

    @torch.no_grad()
    def act(self, frame: np.ndarray):
        """The action for the newest real frame (H, W, 3)."""
        if self.state is None:
            feats, self.state = warm_on_frame(self.model, frame[None], self.gen)
        else:
            f = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.uint8))[None]
            feats, self.state = self.model.observe_with_features(self.state, f, torch.tensor([self.prev]))
        a, _ = self.actor.sample(feats, self.gen, deterministic=self.deterministic)
        self.prev = int(a[0]) if a.dim() == 1 else a[0].cpu().numpy()
        return self.prev
