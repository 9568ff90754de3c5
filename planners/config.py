"""The planners' settings: one frozen, documented :class:`PlannerConfig` and its presets.

    cfg = planner_config("cpu")                       # one decision ~1 s on 2 CPU cores (cpu-preset model)
    cfg = planner_config("gpu", horizon=12)           # TD-MPC2-like: 512 samples, 6 iterations, 64 elites

Every field is checked in ``__post_init__``; a bad value raises a ValueError naming the field and the value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["PLANNER_PRESETS", "PlannerConfig", "PlannerPreset", "planner_config"]

PlannerPreset = Literal["tiny", "cpu", "gpu"]


@dataclass(frozen=True)
class PlannerConfig:
    """How a planner searches action sequences in the dream (random shooting, CEM, MPPI share it).

    One decision = ``iterations`` rounds of ``population`` candidate sequences of ``horizon`` actions, each round
    rolled out as ONE batch through the model; ``iterations * population * horizon`` imagined sample-steps."""

    horizon: int = 8
    """Actions per candidate sequence (imagined frames per rollout)."""
    population: int = 64
    """Candidate sequences per iteration (the batch of one imagined rollout)."""
    elites: int = 8
    """Best candidates the CEM and MPPI distributions are refitted on (<= population)."""
    iterations: int = 2
    """Sampling rounds per decision; random shooting samples every round uniformly (iterations x population
    candidates in all), CEM and MPPI refit their distribution between rounds."""
    temperature: float = 0.05
    """MPPI: elite weights are softmax(return / temperature) (> 0; small = greedy, large = uniform). Returns
    are sums of reward probabilities, so their scale is that of the discounted number of rewards."""
    discount: float = 0.99
    """Discount of the predicted rewards inside the horizon, in (0, 1]."""
    replan: int = 1
    """Real steps executed from each plan before the next decision (1 = replan every step; <= horizon)."""
    sampling_steps: int | None = 1
    """DDIM denoising steps per imagined frame while planning (None: the model's own, the rendering setting)."""
    smoothing: float = 0.1
    """CEM / MPPI: weight of the previous distribution in each refit (0 = the elites alone), in [0, 1)."""
    min_prob: float = 0.02
    """Discrete actions: floor of every action's probability after a refit (keeps exploring), in
    [0, 1 / number of actions]."""
    min_std: float = 0.05
    """Continuous (Box) actions: lower bound of the per-step std, as a fraction of each dimension's range."""
    max_std: float = 0.5
    """Continuous (Box) actions: the initial (and highest) per-step std, as a fraction of each dimension's range."""
    warm_start: float = 0.5
    """Weight of the previous decision's distribution (shifted by ``replan`` steps) in the next one's start; the
    shifted previous plan is also a candidate. 0 = every decision starts from scratch. In [0, 1]."""
    seed: int = 0
    """Seed of the candidates' sampling (numpy) generator; the dream's noise comes from the model's state."""

    def __post_init__(self) -> None:
        def whole(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"PlannerConfig.{name}={v!r}: expected an integer >= {minimum}")

        for name in ("horizon", "population", "elites", "iterations", "replan"):
            whole(name, 1)
        whole("seed", 0)
        if self.elites > self.population:
            raise ValueError(
                f"PlannerConfig.elites={self.elites} > population={self.population}: the elites are picked "
                f"from one iteration's population"
            )
        if self.replan > self.horizon:
            raise ValueError(
                f"PlannerConfig.replan={self.replan} > horizon={self.horizon}: a plan holds only horizon actions"
            )
        if self.sampling_steps is not None:
            whole("sampling_steps", 1)
        if not self.temperature > 0:
            raise ValueError(f"PlannerConfig.temperature={self.temperature!r}: expected > 0")
        if not 0 < self.discount <= 1:
            raise ValueError(f"PlannerConfig.discount={self.discount!r}: expected a value in (0, 1]")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"PlannerConfig.smoothing={self.smoothing!r}: expected a value in [0, 1)")
        if not 0 <= self.warm_start <= 1:
            raise ValueError(f"PlannerConfig.warm_start={self.warm_start!r}: expected a value in [0, 1]")
        if not 0 <= self.min_prob < 1:
            raise ValueError(f"PlannerConfig.min_prob={self.min_prob!r}: expected a probability in [0, 1)")
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(
                f"PlannerConfig.min_std={self.min_std!r}, max_std={self.max_std!r}: expected 0 < min_std <= max_std"
            )

    @property
    def samples_per_decision(self) -> int:
        """Imagined sample-steps (frames) one decision costs: iterations x population x horizon."""
        return self.iterations * self.population * self.horizon


PLANNER_PRESETS: dict[str, dict[str, Any]] = {
    # tests: a handful of candidates through the tiny model
    "tiny": dict(horizon=3, population=8, elites=2, iterations=2, sampling_steps=1),
    # 2 CPU cores, cpu-preset world model: 2 x 32 x 6 = 384 imagined frames per decision at 1 denoising step
    # (the planning step runs ~180-300 frames/s at batch 32-48 on 2 cores: 1-2 s; measured per run in
    # benchmarks/results/planners.json); a horizon of 6 steps = 1.5 s of Memory Maze at 4 Hz
    "cpu": dict(horizon=6, population=32, elites=4, iterations=2, sampling_steps=1, replan=1),
    # TD-MPC2's MPPI sizes: 512 samples, 64 elites, 6 iterations (its temperature multiplies normalised returns
    # and its std bounds are fractions of a [-1, 1] range; here temperature and std keep PlannerConfig's defaults)
    "gpu": dict(horizon=12, population=512, elites=64, iterations=6, sampling_steps=None, replan=1),
}
"""Field values of each preset (the rest are PlannerConfig's defaults)."""


def planner_config(preset: str = "cpu", **overrides: Any) -> PlannerConfig:
    """The :class:`PlannerConfig` of a preset ("tiny", "cpu", "gpu") with ``overrides`` applied (checked)."""
    if preset not in PLANNER_PRESETS:
        raise ValueError(f"preset={preset!r}: expected one of {', '.join(get_args(PlannerPreset))}")
    known = {f.name for f in dataclasses.fields(PlannerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown PlannerConfig field(s) {unknown}: expected some of {sorted(known)}")
    return PlannerConfig(**{**PLANNER_PRESETS[preset], **overrides})
