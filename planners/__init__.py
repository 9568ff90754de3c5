"""Model-predictive control inside the dream: random shooting, CEM and MPPI over batched imagined rollouts.

    import worldmodel
    from planners import CEM, MPCController, WorldModelDream, planner_config

    model = WorldModelDream(worldmodel.load("runs/demo/checkpoint.pt"))
    planner = CEM(planner_config("cpu"), model.action_space)
    controller = MPCController(model, planner)          # receding horizon on any env with the model's spaces
    result = controller.run_episode(env, seed=2000, max_steps=200)

Modules: ``config`` (PlannerConfig and presets), ``dream_model`` (what planners need from a model; the trained
WorldModel behind it), ``base`` (the Planner interface, batched rollouts, refits), ``random_shooting``, ``cem``,
``mppi``, ``controller`` (the MPC loop on a real env) and ``evaluate`` (``python -m planners.evaluate``).
"""

from planners.base import Plan, Planner, rollout_returns
from planners.cem import CEM
from planners.config import PLANNER_PRESETS, PlannerConfig, planner_config
from planners.controller import EpisodeResult, MPCController
from planners.dream_model import DreamModel, ObservableModel, WorldModelDream
from planners.mppi import MPPI
from planners.random_shooting import RandomShooting

PLANNERS = {"random_shooting": RandomShooting, "cem": CEM, "mppi": MPPI}
"""Planner classes by name."""

__all__ = [
    "CEM",
    "MPPI",
    "PLANNERS",
    "PLANNER_PRESETS",
    "DreamModel",
    "EpisodeResult",
    "MPCController",
    "ObservableModel",
    "Plan",
    "Planner",
    "PlannerConfig",
    "RandomShooting",
    "WorldModelDream",
    "planner_config",
    "rollout_returns",
]
