"""What a planner needs from a world model, as a protocol, and the trained `WorldModel` behind it.

A planner sees a model through :class:`DreamModel` only (the toy models of the tests implement it too):

    states = model.fork(state, n)                                       # 1 dream -> n copies; state untouched
    reward, feats, states = model.plan_step(states, actions, steps)     # one imagined frame per copy

The MPC controller also needs :class:`ObservableModel`: ``start`` on the first real frames, ``observe`` every
real frame after, ``frames_seen`` to check it keeps up, and ``imagine`` (decoded frames) for logging.
:class:`WorldModelDream` is both for a trained :class:`worldmodel.model.WorldModel`.

Axis legend: N candidates (dreams in a batch), T frames, A action dims, D feature dim, H x W x 3 frames.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from gymnasium import spaces

from worldmodel.model import DreamState, WorldModel

__all__ = ["DreamModel", "ObservableModel", "WorldModelDream"]


@runtime_checkable
class DreamModel(Protocol):
    """The model side of planning: fork a state, step a batch of dreams returning expected rewards."""

    action_space: spaces.Space
    """The actions ``plan_step`` takes (Discrete: int64 (N,); Box: float32 (N, A))."""

    def fork(self, state: Any, n: int) -> Any:
        """A 1-dream ``state`` repeated into ``n`` dreams; ``state`` itself is untouched."""
        ...

    def plan_step(
        self, state: Any, actions: torch.Tensor, sampling_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """actions (N,) or (N, A) -> (expected reward (N,), per-frame features (N, D), new state); pure."""
        ...


@runtime_checkable
class ObservableModel(DreamModel, Protocol):
    """A :class:`DreamModel` a controller can keep in step with a real env."""

    observation_space: spaces.Space
    """The real frames it observes."""
    min_context_frames: int
    """Real frames ``start`` needs."""

    def start(self, frames: np.ndarray, actions: np.ndarray, seed: int = 0) -> Any:
        """A 1-dream state warmed on real frames uint8 (T, H, W, 3) and the actions (T,) that led into them."""
        ...

    def observe(self, state: Any, frame: np.ndarray, action: Any) -> Any:
        """The state after one more real frame (H, W, 3) and the action that led into it; ``state`` untouched."""
        ...

    def frames_seen(self, state: Any) -> int:
        """How many frames (real or imagined) a 1-dream state has consumed."""
        ...

    def imagine(self, state: Any, actions: np.ndarray) -> np.ndarray:
        """Decoded frames uint8 (T, H, W, 3) of a 1-dream rollout under actions (T,) (for logging)."""
        ...


class WorldModelDream:
    """A trained :class:`~worldmodel.model.WorldModel` as a :class:`ObservableModel` (numpy in, torch inside).

    Args:
        model: the world model (e.g. ``worldmodel.load(path)``), in eval mode.
        action_space / observation_space: optional spaces of the env it must stand in for (a real env's);
            a model trained for other spaces is refused with an error naming both.
    """

    def __init__(
        self,
        model: WorldModel,
        action_space: spaces.Space | None = None,
        observation_space: spaces.Space | None = None,
    ):
        cfg = model.config
        self.model = model.eval()
        self.action_space = spaces.Discrete(int(cfg.num_actions))
        self.observation_space = spaces.Box(0, 255, tuple(cfg.obs_shape), np.uint8)
        self.min_context_frames = int(cfg.min_context_frames)
        if action_space is not None and action_space != self.action_space:
            raise ValueError(
                f"action_space={action_space}: the world model (env {cfg.env_id}) was trained for "
                f"action space {self.action_space}"
            )
        if observation_space is not None and (
            not isinstance(observation_space, spaces.Box)
            or tuple(observation_space.shape) != tuple(cfg.obs_shape)
            or observation_space.dtype != np.uint8
        ):
            raise ValueError(
                f"observation_space={observation_space}: the world model (env {cfg.env_id}) was trained on "
                f"frames {self.observation_space}"
            )

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.model.device

    def fork(self, state: DreamState, n: int) -> DreamState:
        """``WorldModel.fork``: B dreams -> B*n (``worldmodel.state.state_repeat``); ``state`` untouched."""
        return self.model.fork(state, n)

    def plan_step(
        self, state: DreamState, actions: torch.Tensor, sampling_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, DreamState]:
        """``WorldModel.plan_step`` (common random numbers across the batch, no decoding)."""
        return self.model.plan_step(state, actions, sampling_steps=sampling_steps)

    def start(self, frames: np.ndarray, actions: np.ndarray, seed: int = 0) -> DreamState:
        """``WorldModel.start`` on one real history: frames uint8 (T, H, W, 3), actions int (T,)."""
        f = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8))[None]  # (1, T, H, W, 3)
        a = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64))[None]  # (1, T)
        return self.model.start(f, a, generator=torch.Generator().manual_seed(int(seed)))

    def observe(self, state: DreamState, frame: np.ndarray, action: Any) -> DreamState:
        """``WorldModel.observe`` of one real frame uint8 (H, W, 3) and the action that led into it."""
        f = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.uint8))[None]  # (1, H, W, 3)
        a = torch.tensor([int(action)], dtype=torch.int64)
        return self.model.observe(state, f, a)

    def frames_seen(self, state: DreamState) -> int:
        """The backbone state's frame counter (``t``) of a 1-dream state."""
        t = state.backbone_state["t"]
        if t.numel() != 1:
            raise ValueError(f"frames_seen needs a 1-dream state, got {t.numel()} dreams")
        return int(t.item())

    def imagine(self, state: DreamState, actions: np.ndarray) -> np.ndarray:
        """Decoded frames uint8 (T, H, W, 3) of ``WorldModel.step`` (rendering settings) under actions (T,)."""
        frames = []
        for a in np.asarray(actions, dtype=np.int64):
            f, _, state = self.model.step(state, torch.tensor([int(a)]))
            frames.append(f[0].cpu().numpy())
        return np.stack(frames)
