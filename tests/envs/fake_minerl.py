"""A fake MineRL 0.4 env: MineRL's dict observations and dict actions (old gym API), scripted, no Minecraft."""

from collections import OrderedDict

import numpy as np

# MineRLNavigate-v0's action keys (MineRL 0.4): 0/1 keys, camera [pitch, yaw] degrees, the `place` enum
NOOP = OrderedDict(
    attack=0,
    back=0,
    camera=np.zeros(2, np.float32),
    forward=0,
    jump=0,
    left=0,
    place="none",
    right=0,
    sneak=0,
    sprint=0,
)


class FakeActionSpace:
    """The one method of MineRL's Dict action space the adapter uses."""

    def noop(self):
        return OrderedDict((k, v.copy() if isinstance(v, np.ndarray) else v) for k, v in NOOP.items())


def pov_colour(t: int, yaw: float, forward: int, jump: int) -> tuple[int, int, int]:
    """The fake's frame colour: red = step x 10, green = yaw / 2 (mod 360 degrees), blue = 100 jump + 50 forward."""
    return (10 * t) % 256, int(yaw % 360) // 2, 100 * jump + 50 * forward


class FakeMineRL:
    """``reset() -> obs``, ``step(action) -> obs, reward, done, info``, ``seed``, ``close``, ``action_space.noop()``.

    ``obs["pov"]`` is a solid (H, W, 3) uint8 frame coloured by :func:`pov_colour` of the state it shows; reward is
    1 per forward step; ``done`` after ``steps`` steps, with ``info["TimeLimit.truncated"]`` when ``truncate``.
    Every action received is kept in ``.actions``; MineRL rejects dicts whose keys are not its action keys, so
    does the fake.
    """

    def __init__(self, pov_shape=(96, 128), steps=50, truncate=False):
        self.action_space = FakeActionSpace()
        self.pov_shape = tuple(pov_shape)
        self.steps = steps
        self.truncate = truncate
        self.actions: list[dict] = []
        self.seeds: list[int] = []
        self.closed = False

    def seed(self, seed):
        self.seeds.append(seed)

    def reset(self):
        self.t, self.yaw, self.last = 0, 0.0, (0, 0)
        return self._obs()

    def step(self, action):
        if set(action) != set(NOOP):
            raise KeyError(f"MineRL action keys {sorted(action)} != {sorted(NOOP)}")
        self.actions.append(action)
        self.t += 1
        self.yaw += float(np.asarray(action["camera"])[1])
        self.last = (int(action["forward"]), int(action["jump"]))
        done = self.t >= self.steps
        info = {"TimeLimit.truncated": True} if done and self.truncate else {}
        return self._obs(), float(action["forward"]), done, info

    def close(self):
        self.closed = True

    def _obs(self):
        pov = np.empty((*self.pov_shape, 3), np.uint8)
        pov[...] = pov_colour(self.t, self.yaw, *self.last)
        return {"pov": pov, "compass": {"angle": np.array(12.5)}}
