"""stable-baselines3's `VecEnv` API over a `DreamVectorEnv`: train SB3 agents inside the dream.

    from stable_baselines3 import PPO
    venv = DreamSB3VecEnv(DreamVectorEnv(checkpoint=..., episodes=..., num_envs=16))
    PPO("CnnPolicy", venv).learn(100_000)

Both sides autoreset on the step an episode ends (Gymnasium's SAME_STEP mode is SB3's convention), so the
adapter only translates: `dones` = terminated | truncated, and each ended slot's info gets SB3's
"terminal_observation" (the last imagined frame) and "TimeLimit.truncated".

Axis legend: N slots.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from envs.dream_vector import DreamVectorEnv

__all__ = ["DreamSB3VecEnv"]


class DreamSB3VecEnv(VecEnv):
    """stable-baselines3's `VecEnv` over a `DreamVectorEnv`; `reset()` uses the seed given to `seed()`
    (SB3 2.x)."""

    def __init__(self, venv: DreamVectorEnv):
        if not isinstance(venv, DreamVectorEnv):
            raise TypeError(f"DreamSB3VecEnv wraps a DreamVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        self.render_mode = venv.render_mode
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        """Reset every slot (with the seed given to ``seed()``, if any); returns the observations."""
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs, info = self.venv.reset(seed=seed)
        self._reset_seeds()
        self.reset_infos = self._infos_list(info)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions for ``step_wait``."""
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self):
        """Step the dreams: (obs, rewards float32, dones, infos) in SB3's convention."""
        if self._actions is None:
            raise RuntimeError("DreamSB3VecEnv.step_wait() without step_async()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos = self._infos_list(info)
        for j in np.flatnonzero(dones):
            infos[j]["terminal_observation"] = info["final_obs"][j]
            infos[j]["TimeLimit.truncated"] = bool(truncated[j] and not terminated[j])
        return obs, rewards.astype(np.float32), dones, infos

    def _infos_list(self, info: dict) -> list[dict]:
        return [
            {"step": int(info["step"][j]), "context_source": info["context_source"][j]} for j in range(self.num_envs)
        ]

    def close(self) -> None:
        """Close the wrapped DreamVectorEnv."""
        self.venv.close()

    def get_images(self):
        """The latest frame of every slot."""
        return list(self.venv.render())

    def get_attr(self, attr_name: str, indices=None) -> list:
        """An attribute of the (one, shared) vector env, once per requested slot."""
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        """Set an attribute of the shared vector env (all slots share it)."""
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list:
        """Call a method of the shared vector env, once per requested slot."""
        method = getattr(self.venv, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        """Never wrapped: the slots are dreams of one model, not separate envs."""
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
