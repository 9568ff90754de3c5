"""The world model: latent autoencoder + hybrid backbone trained with Diffusion Forcing + reward head.

Axis legend: B batch, T frames (Tc context, Tf future), H x W x 3 image, C x h x w latent grid, D feature dim.

Action alignment (as in the Memory Maze offline dataset): `actions[t]` is the action that led INTO frame t,
so frame t is generated conditioned on `actions[t]`; the first frame of an episode has action 0 (noop).

Streaming generation (constant memory and time per frame):
  1. the context frames are fed one by one at the stabilisation noise level `context_noise`, carrying the
     backbone's per-layer state (SSM + conv state per block, KV of the attention window);
  2. each new frame starts as pure noise and is denoised with `sampling_steps` DDIM steps, each a call of
     `Backbone.step` from the SAME state (step is pure);
  3. the finished frame is fed once more at `context_noise`; that call's state is kept and its per-frame
     features give the reward prediction.

Checkpoints: `load` rebuilds a trained model from RUN_DIR/checkpoint.pt (written by worldmodel.train) and refuses,
naming the file, anything else (an autoencoder.pt, a plain state_dict) and weights holding NaN or inf values;
`check_finite_weights` is that last check, for a WorldModel handed over in memory (the dream env runs it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm import tqdm

from . import presets
from .autoencoder import Autoencoder, AutoencoderConfig, autoencoder_config, float_to_frames
from .backbone import Backbone, BackboneConfig, backbone_config
from .config import config_from_dict
from .diffusion import (
    DiffusionConfig,
    add_noise,
    ddim_timesteps,
    ddim_update,
    diffusion_loss,
    sample_noise_levels,
)
from .state import state_repeat
from .utils import check_config, config_to_dict, resolve_device, torch_load


@dataclass(frozen=True)
class WorldModelConfig:
    """Everything that defines a world model, stored in every checkpoint (``config["model"]``). Build one with
    :func:`world_model_config` (a preset). The parts must agree: frames of ``obs_shape`` are what the
    autoencoder encodes, and its latent grid is what the backbone models (checked at construction)."""

    autoencoder: AutoencoderConfig
    """Stage 1: frames (H, W, 3) <-> latent grids (C, h, w)."""
    backbone: BackboneConfig
    """Stage 2's network over latent frames: block-wise Mamba2 + frame-local attention (or a baseline)."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Diffusion Forcing training and the DDIM sampler used to imagine frames."""
    env_id: str = "longdream/MemoryMaze-9x9-v0"
    """The real env the model stands in for (the dream env registers under it)."""
    obs_shape: tuple[int, int, int] = (64, 64, 3)
    """Frame shape (H, W, channels) of the real env; must match the autoencoder's frames."""
    num_actions: int = 6
    """Size of the real env's Discrete action space (Memory Maze: 6)."""
    reward_weight: float = 0.5
    """Weight of the reward head's loss next to the diffusion loss."""
    reward_pos_weight: float = 10.0
    """BCE weight of the rare positive (reward) frames; also sets the event threshold (see reward_events)."""
    reward_max_noise: float = 0.3
    """The reward head learns only from frames fed at noise levels <= this (the dream feeds its committed frames
    at the low ``diffusion.context_noise``)."""
    min_context_frames: int = 1
    """Real frames a rollout needs before it can imagine."""
    action_dropout: float = 0.0
    """Training: probability that a frame's action is replaced by the null action (``backbone.null_action``), so
    the model also learns to predict without it; what classifier-free guidance (``diffusion.guidance``) needs."""

    def __post_init__(self):
        if not 0.0 <= self.action_dropout < 1.0:
            raise ValueError(f"action_dropout={self.action_dropout}: expected a probability in [0, 1)")
        if self.action_dropout > 0 and not self.backbone.null_action:
            raise ValueError(
                f"action_dropout={self.action_dropout} needs backbone.null_action=True (the action dropped to)"
            )
        if self.diffusion.guidance != 1.0 and not self.backbone.null_action:
            raise ValueError(
                f"diffusion.guidance={self.diffusion.guidance} needs a model with backbone.null_action=True, "
                f"trained with action_dropout > 0 (or guidance=1)"
            )
        if self.backbone.num_actions is not None and self.backbone.num_actions != self.num_actions:
            raise ValueError(f"backbone.num_actions={self.backbone.num_actions} != num_actions={self.num_actions}")
        ae = self.autoencoder
        if tuple(self.obs_shape) != (ae.image_size, ae.image_size, ae.image_channels):
            raise ValueError(
                f"obs_shape={tuple(self.obs_shape)} != the autoencoder's frames "
                f"{(ae.image_size, ae.image_size, ae.image_channels)}"
            )
        lat = self.autoencoder_latent_shape
        if (self.backbone.latent_channels, *self.backbone.latent_size) != lat:
            raise ValueError(
                f"backbone latent (C, h, w)={(self.backbone.latent_channels, *self.backbone.latent_size)} "
                f"!= autoencoder latent {lat}"
            )

    @property
    def autoencoder_latent_shape(self) -> tuple[int, int, int]:
        """The latent grid (C, h, w) of one frame."""
        return self.autoencoder.latent_shape


def world_model_config(preset: str, variant: str = "hybrid", **overrides) -> WorldModelConfig:
    """The world model of a preset ("tiny", "cpu", "paper"); `variant` picks a backbone baseline. A
    ``num_actions`` override sizes the backbone's action embedding too."""
    ae = autoencoder_config(preset)
    c, h, w = ae.latent_shape
    n = overrides.get("num_actions", WorldModelConfig.__dataclass_fields__["num_actions"].default)
    bb = backbone_config(preset, variant, latent_channels=c, latent_size=(h, w), num_actions=n)
    diff = DiffusionConfig(**presets.DIFFUSION[preset])
    return WorldModelConfig(autoencoder=ae, backbone=bb, diffusion=diff, **overrides)


def with_env(cfg: WorldModelConfig, num_actions: int, env_id: str | None = None) -> WorldModelConfig:
    """``cfg`` for a real env with ``num_actions`` discrete actions (the backbone's action embedding sized to
    match) and, when given, the id ``env_id``: what the episodes a model trains on say about their env."""
    bb = cfg.backbone
    if bb.num_actions is not None:
        bb = dataclasses.replace(bb, num_actions=int(num_actions))
    return dataclasses.replace(cfg, backbone=bb, num_actions=int(num_actions), env_id=env_id or cfg.env_id)


ENCODE_BATCH = 256  # frames through the autoencoder at once: bounds its activation memory on long episodes


@dataclass(frozen=True)
class LossNoise:
    """The random draws of one Diffusion Forcing loss (:meth:`WorldModel.draw_loss_noise`), drawn apart from the
    loss so that a batch's draws can be made per window and the batch split across processes and micro-batches
    without changing them."""

    tau: torch.Tensor
    """(B, T) noise level of each frame (0 on a clean prefix)."""
    mask: torch.Tensor
    """(B, T) bool: the frames the diffusion loss covers (those after the clean prefix)."""
    drop: torch.Tensor | None
    """(B, T) bool: the frames whose action is dropped to the null action (None without action dropout)."""
    eps: torch.Tensor
    """(B, T, C, h, w) the Gaussian noise added to the latents."""

    def __getitem__(self, index: slice) -> LossNoise:
        """The draws of windows ``index`` (a slice of the batch)."""
        drop = self.drop[index] if self.drop is not None else None
        return LossNoise(tau=self.tau[index], mask=self.mask[index], drop=drop, eps=self.eps[index])

    @staticmethod
    def cat(parts: Sequence[LossNoise]) -> LossNoise:
        """The draws of several batches as one batch (in order)."""
        drop = torch.cat([p.drop for p in parts]) if parts[0].drop is not None else None
        return LossNoise(
            tau=torch.cat([p.tau for p in parts]),
            mask=torch.cat([p.mask for p in parts]),
            drop=drop,
            eps=torch.cat([p.eps for p in parts]),
        )


@dataclass
class DreamState:
    """What a running batch of dreams carries between frames: bounded in size whatever the rollout length
    (the frame count per dream is the backbone state's `t`)."""

    backbone_state: Any
    generator: torch.Generator


class WorldModel(nn.Module):
    """The long-context video world model: autoencoder, backbone over latent frames, reward head.

    Args:
        cfg: the model's config (see :class:`WorldModelConfig`).
        autoencoder: a trained stage-1 autoencoder built from ``cfg.autoencoder`` (e.g. from
            ``load_autoencoder(..., expected=cfg.autoencoder)``); a fresh one when None (e.g. before loading a
            checkpoint's weights).

    Training calls :meth:`loss` on latent windows (:meth:`encode_frames`). Imagination streams frame by frame
    with constant memory: :meth:`start` warms a :class:`DreamState` on real context, :meth:`step` imagines one
    frame per dream (pure: the state passed in is not modified, so dreams can be forked), :meth:`rollout` does
    both for a whole open-loop action sequence. Load a trained model with :func:`load`.
    """

    def __init__(self, cfg: WorldModelConfig, autoencoder: Autoencoder | None = None):
        super().__init__()
        self.config = cfg
        self.autoencoder = autoencoder if autoencoder is not None else Autoencoder(cfg.autoencoder)
        self.backbone = Backbone(cfg.backbone)
        d = cfg.backbone.dim
        self.reward_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))

    # ------------------------------------------------------------------ latents
    @property
    def device(self) -> torch.device:
        """The device the backbone's weights are on (inputs are moved there)."""
        return next(self.backbone.parameters()).device

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, batch: int = ENCODE_BATCH) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3) -> latents (B, T, C, h, w), encoded ``batch`` frames at a time."""
        b, t = frames.shape[:2]
        flat = rearrange(frames, "b t h w c -> (b t) h w c")
        z = torch.cat(
            [self.autoencoder.encode(flat[i : i + batch].to(self.device)) for i in range(0, len(flat), batch)]
        )
        return rearrange(z, "(b t) c h w -> b t c h w", b=b, t=t)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, T, C, h, w) -> uint8 frames (B, T, H, W, 3)."""
        b, t = z.shape[:2]
        x = self.autoencoder.decode(rearrange(z, "b t c h w -> (b t) c h w"))
        return rearrange(float_to_frames(x), "(b t) h w c -> b t h w c", b=b, t=t)

    # ------------------------------------------------------------------ training
    def loss(
        self,
        z: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: LossNoise | None = None,
        totals: tuple[float, float] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Diffusion Forcing loss on latent windows + the reward head's loss.

        z (B, T, C, h, w) clean latents, actions (B, T) int64, rewards (B, T) float. Returns (loss, logs).
        The random draws (noise levels, clean prefixes, action dropout, noise) come from ``generator``, or are
        ``noise`` (:meth:`draw_loss_noise`) when given. ``totals``: the loss is one part of a larger batch's,
        (noised frames, reward-scored frames) of that whole batch (:meth:`loss_totals`): both means are then
        divided by those totals, so the parts' losses (and gradients) add up to the whole batch's."""
        cfg = self.config
        b, t = z.shape[:2]
        # 1. per-frame noise levels with the long-context clean prefix; loss mask = noised frames
        if noise is None:
            noise = self.draw_loss_noise(b, t, generator, device=z.device)
        tau, mask = noise.tau.to(z.device), noise.mask.to(z.device)
        actions = self._apply_action_drop(actions, noise.drop)
        # 2. noise the latents and predict v
        eps = noise.eps.to(z)
        x_t = add_noise(z, tau, eps)
        pred, feats = self.backbone(x_t, actions, tau)
        loss_diff = diffusion_loss(pred, z, tau, eps, mask, cfg.diffusion, total=totals[0] if totals else None)
        # 3. reward head on the per-frame features of the frames seen at low noise
        logits = self.reward_head(feats).squeeze(-1)  # (B, T)
        target = (rewards > 0).to(logits.dtype)
        rmask = (tau <= cfg.reward_max_noise).to(logits.dtype)
        pos_w = torch.full((), cfg.reward_pos_weight, device=z.device)
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_w, reduction="none")
        reward_total = max(totals[1], 1.0) if totals else rmask.sum().clamp_min(1.0)
        loss_rew = (bce * rmask).sum() / reward_total
        loss = loss_diff + cfg.reward_weight * loss_rew
        logs = {
            "wm/loss": loss.item(),
            "wm/diffusion": loss_diff.item(),
            "wm/reward_bce": loss_rew.item(),
            "wm/noised_frac": mask.float().mean().item(),
        }
        return loss, logs

    def draw_loss_noise(
        self, batch: int, frames: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> LossNoise:
        """The random draws of :meth:`loss` for ``batch`` windows of ``frames`` frames, from ``generator`` on the
        CPU in a fixed order: noise levels and clean prefixes, action dropout, then the noise itself."""
        tau, mask = sample_noise_levels(batch, frames, self.config.diffusion, generator=generator, device=device)
        p = self.config.action_dropout
        drop = torch.rand(batch, frames, generator=generator) < p if p > 0 else None  # (B, T) bool
        eps = torch.randn((batch, frames, *self.config.autoencoder_latent_shape), generator=generator)
        return LossNoise(tau=tau, mask=mask, drop=drop, eps=eps)

    def loss_totals(self, noise: LossNoise) -> torch.Tensor:
        """(noised frames, reward-scored frames) of ``noise``'s windows as a float64 tensor (2,): what
        :meth:`loss`'s ``totals`` takes once summed over every part of a batch."""
        scored = (noise.tau <= self.config.reward_max_noise).sum()
        return torch.stack([noise.mask.sum(), scored]).double()

    def drop_actions(self, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Action dropout: each frame's action replaced by the null action with probability ``action_dropout``.

        actions (B, T) int64 -> (B, T); unchanged (the same tensor) when action_dropout is 0. The draw comes from
        ``generator`` on the CPU, so training is reproducible on every device."""
        p = self.config.action_dropout
        if p <= 0:
            return actions
        return self._apply_action_drop(actions, torch.rand(actions.shape, generator=generator) < p)

    def _apply_action_drop(self, actions: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """actions (B, T) with the frames where ``drop`` (B, T) bool is True set to the null action."""
        if drop is None:
            return actions
        drop = drop.to(actions.device)
        return torch.where(drop, torch.full_like(actions, self.config.num_actions), actions)

    def reward_events(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-frame features (..., D) -> predicted reward events (...) bool.

        The head is trained with BCE whose positives weigh `reward_pos_weight`, so its logit estimates
        log(w p / (1 - p)); an event is p > 1/2, i.e. logit > log(w)."""
        return self.reward_head(feats).squeeze(-1) > math.log(self.config.reward_pos_weight)

    # ------------------------------------------------------------------ streaming generation
    def _check_inputs(self, frames: torch.Tensor, actions: torch.Tensor, what: str) -> None:
        cfg = self.config
        if frames.dim() != 5 or tuple(frames.shape[2:]) != tuple(cfg.obs_shape):
            raise ValueError(
                f"{what} frames must be (B, T, {', '.join(map(str, cfg.obs_shape))}) uint8, got {tuple(frames.shape)}"
            )
        if frames.dtype != torch.uint8:
            raise ValueError(f"{what} frames must be uint8, got {frames.dtype}")
        if actions.shape != frames.shape[:2]:
            raise ValueError(f"{what} actions must be (B, T)={tuple(frames.shape[:2])}, got {tuple(actions.shape)}")
        if frames.shape[1] < cfg.min_context_frames:
            raise ValueError(
                f"{what}: the model needs at least {cfg.min_context_frames} context frames, got {frames.shape[1]}"
            )
        self._check_actions(actions)

    def _check_actions(self, actions: torch.Tensor) -> None:
        n = self.config.num_actions
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= n):
            raise ValueError(
                f"actions must be integers in [0, {n}), got values in [{int(actions.min())}, {int(actions.max())}]"
            )

    def _noise(self, shape, gen: torch.Generator) -> torch.Tensor:
        # drawn on the CPU so the same seed gives the same dream on every device
        return torch.randn(shape, generator=gen).to(self.device)

    @torch.no_grad()
    def start(
        self,
        context_frames: torch.Tensor,
        context_actions: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> DreamState:
        """Warm the model on real context: frames uint8 (B, Tc, H, W, 3), actions int64 (B, Tc)."""
        return self.start_with_features(context_frames, context_actions, generator)[1]

    @torch.no_grad()
    def start_with_features(
        self,
        context_frames: torch.Tensor,
        context_actions: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, DreamState]:
        """:meth:`start` that also returns the last context frame's per-frame features (B, D): what an agent
        acting on the model's features sees of the newest real frame (as :meth:`plan_step` gives for an
        imagined one)."""
        self._check_inputs(context_frames, context_actions, "context")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        b, tc = context_actions.shape
        z = self.encode_frames(context_frames)  # (B, Tc, C, h, w)
        # 1. feed the context at the stabilisation level in one parallel pass (== Tc streaming steps)
        cn = torch.full((b, tc), self.config.diffusion.context_noise, device=self.device)
        x = add_noise(z, cn, self._noise(z.shape, gen))
        _, feats, state = self.backbone.prefill(x, context_actions.to(self.device), cn)  # feats (B, Tc, D)
        return feats[:, -1], DreamState(state, gen)

    @torch.no_grad()
    def step(self, dream: DreamState, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, DreamState]:
        """Imagine one frame for each dream: actions int64 (B,) -> frames uint8 (B, H, W, 3), rewards (B,).

        Returns the new DreamState; `dream` itself is not modified.
        """
        dcfg = self.config.diffusion
        # a copy of the noise generator: `dream` stays untouched, so a planner can fork it freely
        gen = torch.Generator()
        gen.set_state(dream.generator.get_state())
        actions = actions.to(self.device).long()
        self._check_actions(actions)
        b = actions.shape[0]
        c, h, w = self.config.autoencoder_latent_shape
        ts = ddim_timesteps(dcfg.sampling_steps)
        # 2. denoise from pure noise with DDIM, every call from the same state
        x = self._noise((b, c, h, w), gen)
        null = torch.full_like(actions, self.config.num_actions) if dcfg.guidance != 1.0 else None
        for k in range(dcfg.sampling_steps):
            t = ts[k].expand(b).to(self.device)
            t_next = ts[k + 1].expand(b).to(self.device)
            v, _, _ = self.backbone.step(x, actions, t, dream.backbone_state)  # v or x0 (dcfg.prediction)
            if null is not None:  # classifier-free guidance on the action (linear in either parameterisation)
                v_null, _, _ = self.backbone.step(x, null, t, dream.backbone_state)
                v = v_null + dcfg.guidance * (v - v_null)
            x, _ = ddim_update(x, v, t, t_next, eta=dcfg.eta, generator=gen, prediction=dcfg.prediction)
        z0 = x
        # 3. commit the finished frame at the stabilisation level; its features predict the reward
        cn = torch.full((b,), dcfg.context_noise, device=self.device)
        x_c = add_noise(z0, cn, self._noise(z0.shape, gen))
        _, feat, new_state = self.backbone.step(x_c, actions, cn, dream.backbone_state)
        rewards = self.reward_events(feat).float()
        frames = self.decode_latents(z0[:, None])[:, 0]
        return frames, rewards, DreamState(new_state, gen)

    @torch.no_grad()
    def rollout(
        self,
        context_frames: torch.Tensor,
        context_actions: torch.Tensor,
        future_actions: torch.Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Open-loop imagination, batched: returns {"frames": uint8 (B, Tf, H, W, 3), "rewards": (B, Tf)}.

        Memory does not grow with Tf: only the bounded streaming state is carried between frames.
        """
        if future_actions.dim() != 2 or future_actions.shape[0] != context_actions.shape[0]:
            raise ValueError(
                f"future_actions must be (B, Tf) with B={context_actions.shape[0]}, got {tuple(future_actions.shape)}"
            )
        dream = self.start(context_frames, context_actions, generator)
        frames, rewards = [], []
        it = range(future_actions.shape[1])
        if progress:
            it = tqdm(it, desc="imagining", unit="frame")
        for i in it:
            f, r, dream = self.step(dream, future_actions[:, i])
            frames.append(f.cpu())
            rewards.append(r.cpu())
        return {"frames": torch.stack(frames, 1), "rewards": torch.stack(rewards, 1)}

    # ------------------------------------------------------------------ planning (planners/)
    def expected_reward(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-frame features (..., D) -> the reward head's probability of a reward event (...) in [0, 1].

        The head's logit estimates log(w p / (1 - p)) with w = `reward_pos_weight` (see :meth:`reward_events`),
        so p = sigmoid(logit - log w): a calibrated expected reward, where :meth:`reward_events` thresholds it."""
        logit = self.reward_head(feats).squeeze(-1)
        return torch.sigmoid(logit - math.log(self.config.reward_pos_weight))

    def fork(self, dream: DreamState, n: int) -> DreamState:
        """Each of the B dreams repeated ``n`` times in place (B -> B*n, copies of dream b at b*n .. b*n+n-1;
        :func:`worldmodel.state.state_repeat`) with a copy of the noise generator; ``dream`` is untouched."""
        gen = torch.Generator()
        gen.set_state(dream.generator.get_state())
        return DreamState(state_repeat(dream.backbone_state, n), gen)

    @torch.no_grad()
    def plan_step(
        self,
        dream: DreamState,
        actions: torch.Tensor,
        sampling_steps: int | None = None,
        shared_noise: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, DreamState]:
        """:meth:`step` for planners: no pixel decoding, the expected reward instead of the event.

        actions int64 (B,) -> (expected reward (B,) in [0, 1], per-frame features (B, D), new DreamState);
        ``dream`` is not modified. ``sampling_steps`` DDIM steps (None: the config's) may be fewer than
        rendering uses. ``shared_noise``: every dream of the batch starts from the same noise and is committed
        with the same noise (common random numbers: candidates differ only by their actions, and a batch of N
        equals N single-dream calls from the same generator; DDIM's own noise when ``eta > 0`` stays per dream).
        """
        dcfg = self.config.diffusion
        steps = dcfg.sampling_steps if sampling_steps is None else int(sampling_steps)
        if steps < 1:
            raise ValueError(f"sampling_steps={sampling_steps!r}: expected at least 1 denoising step")
        gen = torch.Generator()
        gen.set_state(dream.generator.get_state())
        actions = actions.to(self.device).long()
        self._check_actions(actions)
        b = actions.shape[0]
        c, h, w = self.config.autoencoder_latent_shape

        def noise() -> torch.Tensor:  # (B, C, h, w)
            return self._noise((1, c, h, w), gen).expand(b, c, h, w) if shared_noise else self._noise((b, c, h, w), gen)

        ts = ddim_timesteps(steps)
        # 1. denoise from pure noise with DDIM, every call from the same state (as in step)
        x = noise()
        null = torch.full_like(actions, self.config.num_actions) if dcfg.guidance != 1.0 else None
        for k in range(steps):
            t = ts[k].expand(b).to(self.device)
            t_next = ts[k + 1].expand(b).to(self.device)
            v, _, _ = self.backbone.step(x, actions, t, dream.backbone_state)
            if null is not None:
                v_null, _, _ = self.backbone.step(x, null, t, dream.backbone_state)
                v = v_null + dcfg.guidance * (v - v_null)
            x, _ = ddim_update(x, v, t, t_next, eta=dcfg.eta, generator=gen, prediction=dcfg.prediction)
        # 2. commit at the stabilisation level; its features give the expected reward (no decoding)
        cn = torch.full((b,), dcfg.context_noise, device=self.device)
        _, feat, new_state = self.backbone.step(add_noise(x, cn, noise()), actions, cn, dream.backbone_state)
        return self.expected_reward(feat), feat, DreamState(new_state, gen)

    @torch.no_grad()
    def observe(self, dream: DreamState, frames: torch.Tensor, actions: torch.Tensor) -> DreamState:
        """Feed one REAL frame per dream into the state (the commit pass of :meth:`step` on a real frame).

        frames uint8 (B, H, W, 3), actions int64 (B,) (the action that led into the frame) -> the new DreamState;
        ``dream`` is not modified. :meth:`start` on frames 0..t then ``observe`` of frame t+1 gives the state
        ``start`` gives on frames 0..t+1 (the same noise draws for B = 1; up to float rounding: a streaming step
        against a parallel pass), so a controller keeps the dream in step with reality at every real step."""
        return self.observe_with_features(dream, frames, actions)[1]

    @torch.no_grad()
    def observe_with_features(
        self, dream: DreamState, frames: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, DreamState]:
        """:meth:`observe` that also returns the real frame's per-frame features (B, D) (an agent acts on them)."""
        if frames.dim() != 4 or tuple(frames.shape[1:]) != tuple(self.config.obs_shape):
            raise ValueError(
                f"observe: frames must be (B, {', '.join(map(str, self.config.obs_shape))}) uint8, "
                f"got {tuple(frames.shape)}"
            )
        if frames.dtype != torch.uint8:
            raise ValueError(f"observe: frames must be uint8, got {frames.dtype}")
        if tuple(actions.shape) != tuple(frames.shape[:1]):
            raise ValueError(f"observe: actions must be (B,)={tuple(frames.shape[:1])}, got {tuple(actions.shape)}")
        self._check_actions(actions)
        gen = torch.Generator()
        gen.set_state(dream.generator.get_state())
        z = self.encode_frames(frames[:, None])[:, 0]  # (B, C, h, w)
        cn = torch.full((z.shape[0],), self.config.diffusion.context_noise, device=self.device)
        x = add_noise(z, cn, self._noise(z.shape, gen))
        _, feat, new_state = self.backbone.step(x, actions.to(self.device).long(), cn, dream.backbone_state)
        return feat, DreamState(new_state, gen)


# ---------------------------------------------------------------------- checkpoints


# sampler settings: used only at generation, free to change between training and rollout
INFERENCE_ONLY_FIELDS = (
    "diffusion.sampling_steps",
    "diffusion.context_noise",
    "diffusion.eta",
    "diffusion.guidance",
)


WORLD_MODEL_CHECKPOINT = (
    "RUN_DIR/checkpoint.pt written by python -m worldmodel.train: a dict with 'config' "
    "({'train': ..., 'model': ...}), 'model' and 'ema' weights"
)


class NonFiniteWeightsError(ValueError):
    """A world model's weights hold NaN or infinite values (a corrupt file or a diverged training run)."""


def check_finite_weights(weights: nn.Module | Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming ``source`` and the first tensor holding NaN or inf values.

    ``weights``: a model (its state_dict is checked) or a state_dict. A model with such weights imagines black or
    garbage frames without any error, so the dream env and :func:`load` refuse it instead."""
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise NonFiniteWeightsError(
                    f"{source}: weight tensor {name!r} {tuple(t.shape)} holds {bad} NaN/inf value(s) of "
                    f"{t.numel()} (a corrupt file or a diverged training run); refusing to use these weights"
                )


def _world_model_entries(ckpt: Any, path) -> tuple[dict, dict]:
    """(model config dict, checkpoint dict) of a world-model checkpoint; a ValueError saying what the file is
    otherwise (an autoencoder.pt, a plain state_dict, something else)."""
    expected = f"expected a world-model checkpoint ({WORLD_MODEL_CHECKPOINT})"
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a world-model checkpoint: {expected}")
    kind = ckpt.get("kind")
    if isinstance(kind, str) and "autoencoder" in kind:
        raise ValueError(
            f"{path} is a stage-1 autoencoder checkpoint (kind {kind!r}, RUN_DIR/autoencoder.pt), "
            f"not a world model: {expected}. Load it with "
            f"worldmodel.train_autoencoder.load_autoencoder"
        )
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(
            f"{path} holds a plain state_dict ({len(ckpt)} tensors, no config): {expected}. "
            f"Weights alone cannot rebuild the model"
        )
    missing = [k for k in ("config", "model") if k not in ckpt]
    if missing:
        raise ValueError(
            f"{path} is not a world-model checkpoint: missing {missing} (found keys "
            f"{sorted(map(str, ckpt))}); {expected}"
        )
    cfg = ckpt["config"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        found = sorted(map(str, cfg)) if isinstance(cfg, dict) else type(cfg).__name__
        hint = (
            " (an autoencoder config: is this an autoencoder.pt?)"
            if isinstance(cfg, dict) and ("latent_channels" in cfg)
            else ""
        )
        raise ValueError(f"{path}: its 'config' has no 'model' entry (found {found}){hint}; {expected}")
    return cfg["model"], ckpt


def load(
    path,
    device: str | torch.device = "auto",
    ema: bool = True,
    sampling_steps: int | None = None,
    context_noise: float | None = None,
    guidance: float | None = None,
) -> WorldModel:
    """Load a trained world model from a `RUN_DIR/checkpoint.pt`, ready to roll out (eval mode, EMA weights).

    `ema=False` takes the raw training weights instead of their moving average. `sampling_steps`,
    `context_noise` and `guidance` override the sampler settings stored with the model. Refused with a
    ValueError naming the file: anything but a world-model checkpoint (e.g. an autoencoder.pt or a plain
    state_dict), and weights holding NaN or inf values (:class:`NonFiniteWeightsError`, naming the first bad tensor)."""
    model_cfg, ckpt = _world_model_entries(torch_load(path), path)
    cfg = config_from_dict(WorldModelConfig, model_cfg, path)
    over = {
        k: v
        for k, v in (("sampling_steps", sampling_steps), ("context_noise", context_noise), ("guidance", guidance))
        if v is not None
    }
    if over:
        cfg = dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, **over))
    entry = "ema" if (ema and ckpt.get("ema") is not None) else "model"
    weights = ckpt[entry]
    if not isinstance(weights, Mapping):
        raise ValueError(f"{path}: its {entry!r} entry is a {type(weights).__name__}, not a state_dict")
    check_finite_weights(weights, f"{path} ({entry!r} weights)")
    model = WorldModel(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # missing / unexpected / mis-shaped tensors: re-raised naming the file
        raise ValueError(f"{path}: the {entry!r} weights do not fit the model its config describes: {e}") from e
    return model.to(resolve_device(device)).eval()


def check_model_config(expected: WorldModelConfig, stored: dict, path) -> None:
    """Raise naming every differing field (flattened, e.g. backbone.dim) between a config and a checkpoint's.

    A field the checkpoint lacks (written before the field existed) counts as its default, the behaviour the
    code had then, as :func:`load` reads it."""
    try:
        stored = config_to_dict(config_from_dict(WorldModelConfig, stored, path))
    except ValueError:
        pass  # not a readable config: compare it as it is, naming what differs
    exp = {k: v for k, v in _flatten(config_to_dict(expected)).items() if k not in INFERENCE_ONLY_FIELDS}
    got = {k: v for k, v in _flatten(stored).items() if k not in INFERENCE_ONLY_FIELDS}
    check_config(exp, got, what=f"checkpoint {path}")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
