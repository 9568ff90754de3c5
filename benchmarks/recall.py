"""Does the model remember what it saw long ago? Retrieval, reasoning and recall against distance, for the hybrid
and every baseline of the paper (Po et al. 2025, Tables 2, 3 and 5 and Fig. 7), trained alike.

    python -m benchmarks.recall --episodes data/episodes/mm9-revisit \\
        --heldout-episodes data/episodes/mm9-revisit-heldout --sweep runs/recall      # make bench-recall
    python -m benchmarks.recall ... --autoencoder runs/demo/autoencoder.pt   # share the demo's stage 1
    python -m benchmarks.recall ... --variants hybrid causal_window          # some variants only
    python -m benchmarks.recall --collect-commands                           # how to collect the data
    python -m benchmarks.recall --quick                                      # smoke run in seconds (toy data)

Spread over processes or machines (a shared SWEEP folder; ``--stage``, default ``all`` = the one command above):

    python -m benchmarks.recall ... --stage autoencoder                      # 1. the shared autoencoder, once
    python -m benchmarks.recall ... --stage train --variants causal_full     # 2. one job per variant, anywhere
    python -m benchmarks.recall ... --stage score                            # 3. score what is trained, report

Each variant trains with its own config's seed, the one the sequential sweep gives it, into its own folder
SWEEP/VARIANT (locked while it trains), so where and when it runs does not change it; ``--stage score`` scores
the variants trained to their planned steps (the others are named and left for a later pass) and writes the
same results as the sequential sweep.

The sweep. Every variant of ``VARIANTS`` (hybrid; causal Transformer with full context and with a window; Mamba2
only; Mamba2 + frame-local attention, "w/o block-wise"; hybrid with block size 1; hybrid trained without the
long-context trick, ``clean_prefix_prob=0``) is a ``worldmodel.train`` run of the same preset (``recall`` by
default: worldmodel/presets.py says why its sizes), with the parameter count matched to the hybrid's
(``worldmodel.backbone.backbone_config``), on the same episodes, for the same steps, on top of ONE shared
autoencoder: ``SWEEP/_ae/autoencoder.pt``, trained once (or copied from ``--autoencoder``) and copied into every
run, so every variant sees the same latents. One command trains what is missing and scores everything:

    SWEEP/.lock                    held by the running sweep (a second one on the folder is refused)
    SWEEP/_ae/autoencoder.pt       the shared stage 1
    SWEEP/VARIANT/                 a worldmodel.train run folder (checkpoint.pt, config.json, eval.json, tb/)
    SWEEP/VARIANT/recall.json      the variant's scores, written when it is scored (with the settings they hold for)
    SWEEP/VARIANT/recall_strips.npz  its example frames (context | real | dream) for the strip figure
    SWEEP/VARIANT/recall_minutes.json  training wall time summed over the invocations

Resumable at any point: a scored variant (its recall.json holds the current settings) is skipped; an interrupted
training resumes exactly from its last checkpoint (``worldmodel.train``'s resume); a trained, unscored variant is
only scored. After every variant the combined results are rewritten from all scored variants.

The protocols, on held-out episodes no model trained on (other seeds: unseen mazes):

- retrieval (Table 2): in ``revisit`` episodes (``python -m envs.collect --policy revisit``; per-frame ``phase``
  0 outward, 1 retracing), the context is one outward path (the frame the cycle starts from plus its outward
  frames), then the model generates ``retrieval_horizon`` frames under the real actions; scored against the real
  return path (the phase-1 frames among them: frames of the next cycle are generated but not scored). Episodes
  without ``phase`` are left out of retrieval, and the report says so.
- reasoning (Table 3): ``reasoning_context`` real frames, then ``reasoning_horizon`` generated under the real
  actions, all scored; windows spread over the episodes by ``worldmodel.evaluate.eval_windows``.
- recall against distance (Fig. 7): every generated frame of both protocols gets its last-seen distance
  (:func:`last_seen_distance`): how many frames before it the same view was last seen IN THE CONTEXT, where the
  same view means the same maze cell (``floor(agent_pos)``, cell units) and a heading (``agent_dir``) within
  ``HEADING_TOLERANCE_DEG`` = 45 degrees (about two turn steps of Memory Maze; a hard 4-sector binning would
  split views a degree apart). PSNR/SSIM per distance bin; frames whose view the context never showed are
  reported apart (they test imagination, not memory). Episodes without ``agent_pos``/``agent_dir`` get no
  distances (retrieval and reasoning only), and the report says so. In ``revisit`` data the return path faces
  the other way, so most retrieval frames are "never seen" by this rule; the revisits at 40-80 frames come from
  the next cycle walking out again (the reasoning windows).

Metrics: ``worldmodel.evaluate``'s per-frame PSNR (capped at ``PSNR_CAP_DB``, the project's rule for identical
frames), SSIM, and LPIPS only when its weights are on disk ("n/a" otherwise). Each episode's frames are averaged
first; tables give the mean over episodes and the half-width of its 95% t-interval (``planners.evaluate.mean_ci``).
Beside quality, each variant's per-frame generation time and streaming-state memory (``benchmarks.latency.
measure``, one thread, batch 1) at the protocol's ``latency_contexts``.

Outputs (``--out``, default benchmarks/results/): recall.json (everything), recall.md (tables laid out like the
paper's Tables 2, 3 and 5, recall by distance, the goals, notes), recall.png (PSNR and SSIM against distance for
every variant, the attention windows and the training window marked), recall_strips.png (context | real | each
model, one example per protocol).

Worlds. The world is the held-out episodes' (their ``manifest.json``: the env ``envs.collect`` recorded, or the
format ``envs.convert`` read; no manifest: Memory Maze), or ``--world``. Outputs and the default sweep are per world,
so a Crafter run leaves the Memory Maze results and runs alone: Memory Maze writes recall.* and trains in
runs/recall; Crafter writes recall_crafter.* (``recall_crafter.json``, ``.md``, ``.png``, ``_strips.png``) and
trains in runs/recall-crafter; MineRL and TECO episodes (``python -m envs.convert``) likewise (recall_minerl.*,
runs/recall-minerl; recall_teco.*, runs/recall-teco). Two worlds in one sweep folder would share its autoencoder
and resume each other's checkpoints: give each its own ``--sweep``.

    python -m benchmarks.recall --preset crafter --episodes data/episodes/crafter \
        --heldout-episodes data/episodes/crafter-heldout --autoencoder runs/crafter/autoencoder.pt   # recall_crafter.*
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import worldmodel
from benchmarks.common import RESULTS_DIR, figure, machine_info, write_results
from benchmarks.latency import measure as measure_latency
from envs.episodes import EpisodeStore, file_digest, load_episode, save_episode
from envs.fileio import RunLockedError, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from envs.worlds import DEFAULT_WORLD, WORLDS, episodes_world, result_name, world_label
from planners.evaluate import mean_ci
from worldmodel.evaluate import EVAL_SEED, PSNR_CAP_DB, eval_windows, frame_lpips, frame_psnr, frame_ssim
from worldmodel.metrics import LPIPS_MISSING_MESSAGE, lpips_available
from worldmodel.model import WorldModel, WorldModelConfig, world_model_config
from worldmodel.run_folder import open_run_folder
from worldmodel.train import TrainConfig, train, train_config
from worldmodel.train_autoencoder import load_autoencoder, train_autoencoder
from worldmodel.utils import resolve_device, save_figure, torch_load

__all__ = [
    "COLLECTION",
    "HEADING_TOLERANCE_DEG",
    "NEVER",
    "PROTOCOLS",
    "VARIANTS",
    "CollectionSettings",
    "Example",
    "HeldOut",
    "Protocol",
    "SweepVariant",
    "bin_label",
    "collect_commands",
    "default_folders",
    "default_sweep",
    "distance_bins",
    "last_seen_distance",
    "main",
    "prepare_heldout",
    "return_cycles",
    "score_model",
    "toy_revisit_episode",
    "variant_configs",
]

NAME = "recall"
RESULT_VERSION = 1
"""Bumped when the per-variant scores change meaning (older recall.json files are then re-scored)."""
HEADING_TOLERANCE_DEG = 45.0
"""Two frames show the same view when the agent stands in the same cell with headings at most this far apart."""
NEVER = -1
"""The last-seen distance of a frame whose view the context never showed."""
PROTOCOL_NAMES = ("retrieval", "reasoning")
STAGES = ("all", "autoencoder", "train", "score")
"""What one invocation does (``--stage``): everything, or one part of a sweep spread over jobs."""


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SweepVariant:
    """One model of the sweep: a backbone variant, optionally trained with other Diffusion Forcing settings."""

    backbone: str
    """``worldmodel.backbone`` variant (parameter count matched to the hybrid's)."""
    label: str
    """The row name in the tables (the paper's names)."""
    what: str
    """What it is, in words."""
    diffusion: dict[str, Any] = field(default_factory=dict)
    """``DiffusionConfig`` overrides (the long-context-trick ablation)."""


VARIANTS: dict[str, SweepVariant] = {
    "hybrid": SweepVariant("hybrid", "hybrid (ours)", "block-wise Mamba2 scan + frame-local attention (the paper's)"),
    "causal_window": SweepVariant("causal_window", "causal Transformer, window", "causal Transformer, W-frame window"),
    "causal_full": SweepVariant("causal_full", "causal Transformer, full", "causal Transformer, full context"),
    "mamba2": SweepVariant("mamba2", "Mamba2", "one Mamba2 scan over the whole frame, no attention"),
    "mamba2_local_attn": SweepVariant(
        "mamba2_local_attn", "Mamba2 + frame-local attn (w/o block-wise)", "whole-frame scan + frame-local attention"
    ),
    "hybrid_block1": SweepVariant("hybrid_block1", "block size 1", "the hybrid with 1x1-token blocks"),
    "hybrid_no_trick": SweepVariant(
        "hybrid", "w/o long-context trick", "the hybrid trained without clean prefixes", {"clean_prefix_prob": 0.0}
    ),
}
MAIN_ROWS = ("causal_window", "mamba2", "mamba2_local_attn", "hybrid", "causal_full")
"""The rows of the paper's Tables 2 and 3, in its order."""
ABLATION_ROWS = ("mamba2_local_attn", "hybrid_block1", "hybrid_no_trick", "hybrid")
"""The rows of the paper's Table 5 (ablations), in its order (the full model last)."""


@dataclass(frozen=True)
class Protocol:
    """How the held-out episodes are used; one per preset (``PROTOCOLS``)."""

    retrieval_horizon: int
    """Frames generated after each outward path (scored: the real return path's frames among them)."""
    retrieval_per_episode: int
    """Out-and-back cycles used per episode (spread over its complete ones)."""
    reasoning_context: int
    """Real context frames of a reasoning window."""
    reasoning_horizon: int
    """Frames generated (and scored) after the context of a reasoning window."""
    reasoning_per_episode: int
    """Reasoning windows per held-out episode."""
    heldout_episodes: int
    """Held-out episodes read (the first in name order)."""
    batch: int
    """Dreams generated at once."""
    distance_edges: tuple[int, ...]
    """Lower edges of the last-seen distance bins (frames); the last bin is open-ended."""
    latency_contexts: tuple[int, ...]
    """Frames already in context at which per-frame time and state memory are measured."""
    latency_steps: int
    """Timed streaming steps per latency point."""
    strip_frames: int = 8
    """Frames per row of the example strips."""


PROTOCOLS: dict[str, Protocol] = {
    # tests and --quick: toy episodes of a few dozen frames (the tiny model trains on 12-frame windows; the
    # reasoning context is longer, so that some views were last seen beyond the 10-frame attention window)
    "tiny": Protocol(
        retrieval_horizon=6,
        retrieval_per_episode=2,
        reasoning_context=24,
        reasoning_horizon=4,
        reasoning_per_episode=2,
        heldout_episodes=4,
        batch=8,
        distance_edges=(1, 4, 11),
        latency_contexts=(8,),
        latency_steps=2,
        strip_frames=4,
    ),
    # the 2-core sweep: outward paths of 32 steps (33 context frames), returns of 20-45 frames; reasoning in
    # 64 + 32 frames (the paper's 576 + 224 scaled to the 96-frame training window); bins split at the
    # frame-local attention window (10), the windowed Transformer's 24 frames and the training window (96)
    "recall": Protocol(
        retrieval_horizon=40,
        retrieval_per_episode=2,
        reasoning_context=64,
        reasoning_horizon=32,
        reasoning_per_episode=2,
        heldout_episodes=12,
        batch=24,
        distance_edges=(1, 11, 25, 49, 73, 97),
        latency_contexts=(96, 384),
        latency_steps=10,
    ),
    # Crafter (the crafter world-model preset, 32- then 48-frame training windows): the paper's Minecraft protocol,
    # 100 context frames and 50 generated (300-frame training windows), scaled to 32 + 16. Crafter episodes have
    # no revisit phase nor agent_pos/agent_dir, so retrieval and the distance bins are left out (reasoning only).
    "crafter": Protocol(
        retrieval_horizon=16,
        retrieval_per_episode=1,
        reasoning_context=32,
        reasoning_horizon=16,
        reasoning_per_episode=2,
        heldout_episodes=12,
        batch=24,
        distance_edges=(1, 11, 25),
        latency_contexts=(48, 192),
        latency_steps=10,
    ),
    # the paper: 400-frame outward paths, 400 generated; reasoning 576 + 224 (800-frame training windows)
    "paper": Protocol(
        retrieval_horizon=400,
        retrieval_per_episode=1,
        reasoning_context=576,
        reasoning_horizon=224,
        reasoning_per_episode=1,
        heldout_episodes=64,
        batch=8,
        distance_edges=(1, 11, 50, 100, 193, 400, 801),
        latency_contexts=(800, 3200),
        latency_steps=10,
    ),
}


@dataclass(frozen=True)
class CollectionSettings:
    """The recall data of a preset: ``revisit`` episodes, training and held-out folders with other seeds."""

    steps: int
    """Actions per episode."""
    revisit_steps: int
    """Outward steps before retracing (``--revisit-steps``)."""
    episodes: int
    """Training episodes (seeds ``seed .. seed + episodes - 1``)."""
    heldout_episodes: int
    """Held-out episodes (seeds from ``heldout_seed``: unseen mazes)."""
    seed: int = 0
    """First seed of the training episodes."""
    heldout_seed: int = 1000
    """First seed of the held-out episodes."""
    env: str = "longdream/MemoryMaze-9x9-ExtraObs-v0"
    """The env (ExtraObs: agent_pos / agent_dir are recorded)."""


COLLECTION: dict[str, CollectionSettings] = {
    # 40 x 400 steps (as many frames as `make data`; ~1 minute with 2 workers): ~6 out-and-back cycles each
    "recall": CollectionSettings(steps=400, revisit_steps=32, episodes=40, heldout_episodes=12),
    # one 400-step path and its return per 1000-step episode (the 9x9 task's full length)
    "paper": CollectionSettings(steps=1000, revisit_steps=400, episodes=2000, heldout_episodes=64),
}
DEFAULT_EPISODES = Path("data/episodes/mm9-revisit")
DEFAULT_HELDOUT = Path("data/episodes/mm9-revisit-heldout")
DEFAULT_SWEEP = Path("runs/recall")
"""The default sweep folder of Memory Maze; another world's is runs/recall-WORLD (:func:`default_sweep`)."""


def default_folders(preset: str) -> tuple[Path, Path]:
    """The default training and held-out folders of a preset's recall data: DEFAULT_EPISODES / DEFAULT_HELDOUT,
    suffixed with the preset's name for presets other than recall (e.g. data/episodes/mm9-revisit-paper)."""
    suffix = "" if preset == "recall" else f"-{preset}"
    return (
        DEFAULT_EPISODES.with_name(DEFAULT_EPISODES.name + suffix),
        DEFAULT_HELDOUT.with_name(DEFAULT_HELDOUT.name + suffix),
    )


def default_sweep(world: str) -> Path:
    """The default sweep folder of ``world`` (a ``envs.worlds.WORLDS`` key): DEFAULT_SWEEP for Memory Maze,
    runs/recall-crafter for Crafter, ..., so the worlds' sweeps never share an autoencoder or a checkpoint."""
    if world == DEFAULT_WORLD:
        return DEFAULT_SWEEP
    return DEFAULT_SWEEP.with_name(f"{DEFAULT_SWEEP.name}-{world.replace('_', '-')}")


def collect_commands(preset: str = "recall", episodes: Path | None = None, heldout: Path | None = None) -> list[str]:
    """The two ``python -m envs.collect`` commands that collect a preset's recall data (training, held-out) into
    ``episodes`` and ``heldout`` (default: :func:`default_folders`)."""
    c = COLLECTION.get(preset)
    if c is None:
        raise ValueError(f"no recall data settings for preset {preset!r}; known: {sorted(COLLECTION)}")
    default_episodes, default_heldout = default_folders(preset)
    episodes, heldout = episodes or default_episodes, heldout or default_heldout
    common = f"--env {c.env} --steps {c.steps} --policy revisit --revisit-steps {c.revisit_steps} --workers 2"
    return [
        f"python -m envs.collect {common} --episodes {c.episodes} --seed {c.seed} --out {episodes}",
        f"python -m envs.collect {common} --episodes {c.heldout_episodes} --seed {c.heldout_seed} --out {heldout}",
    ]


def variant_configs(name: str, preset: str, steps: int | None = None) -> tuple[TrainConfig, WorldModelConfig]:
    """The training and model configs of sweep variant ``name`` at ``preset`` (``steps``: the preset's if None)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {list(VARIANTS)}")
    v = VARIANTS[name]
    model_cfg = world_model_config(preset, v.backbone)
    if v.diffusion:
        model_cfg = dataclasses.replace(model_cfg, diffusion=dataclasses.replace(model_cfg.diffusion, **v.diffusion))
    over: dict[str, Any] = {"variant": v.backbone}
    if steps:
        over["steps"] = int(steps)
    return train_config(preset, **over), model_cfg


# ---------------------------------------------------------------------------------------------- distances


def last_seen_distance(
    agent_pos: np.ndarray, agent_dir: np.ndarray, context: int, heading_tolerance_deg: float = HEADING_TOLERANCE_DEG
) -> np.ndarray:
    """For every frame after the context, how many frames before it its view was last seen in the context.

    agent_pos (T, 2) in cell units, agent_dir (T, 2) unit headings (dx, dy); frames 0 .. context-1 are the
    context. Frame t >= context and context frame j show the same view when ``floor(agent_pos)`` (the cell) is
    equal and the headings differ by at most ``heading_tolerance_deg``. Returns int64 (T - context,): t - j for
    the latest such j, or ``NEVER`` (-1) when no context frame shows that view."""
    pos = np.asarray(agent_pos, dtype=np.float64)
    heading = np.asarray(agent_dir, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or heading.shape != pos.shape:
        raise ValueError(
            f"last_seen_distance: agent_pos and agent_dir must both be (T, 2), got {pos.shape} and {heading.shape}"
        )
    n = len(pos)
    if not 1 <= int(context) <= n:
        raise ValueError(f"last_seen_distance: context={context} must be in 1..{n} (the frames given)")
    c = int(context)
    cell = np.floor(pos).astype(np.int64)  # (T, 2)
    angle = np.arctan2(heading[:, 1], heading[:, 0])  # (T,)
    same_cell = (cell[c:, None, :] == cell[None, :c, :]).all(-1)  # (T-c, c)
    turn = np.abs(np.angle(np.exp(1j * (angle[c:, None] - angle[None, :c]))))  # (T-c, c) wrapped to [0, pi]
    match = same_cell & (np.degrees(turn) <= heading_tolerance_deg + 1e-9)
    last = c - 1 - np.argmax(match[:, ::-1], axis=1)  # latest matching context frame (if any)
    t = np.arange(c, n)
    return np.where(match.any(axis=1), t - last, NEVER).astype(np.int64)


def distance_bins(distances: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Bin index of every distance: i for edges[i] <= d < edges[i+1] (the last bin open-ended), -1 for NEVER."""
    d = np.asarray(distances)
    idx = np.searchsorted(np.asarray(edges), d, side="right") - 1
    return np.where(d == NEVER, -1, idx)


def bin_label(edges: Sequence[int], i: int) -> str:
    """``"11-24"`` for bin i of ``edges`` (``">=97"`` for the last)."""
    return f">={edges[i]}" if i == len(edges) - 1 else f"{edges[i]}-{edges[i + 1] - 1}"


def return_cycles(phase: np.ndarray) -> list[tuple[int, int, int]]:
    """The complete out-and-back cycles of a ``revisit`` episode's per-frame phase (0 outward, 1 retracing):
    (context start s, return start b, return end c) with frames s .. b-1 the outward path (the frame the cycle
    starts from and its outward frames) and b .. c-1 the return, followed by a new cycle (c < T)."""
    ph = np.asarray(phase).astype(np.int64)
    runs, start = [], 0
    for t in range(1, len(ph) + 1):
        if t == len(ph) or ph[t] != ph[start]:
            runs.append((int(ph[start]), start, t))
            start = t
    cycles = []
    for (p0, a, b), (p1, b2, c) in zip(runs, runs[1:]):
        if p0 == 0 and p1 == 1 and b == b2 and c < len(ph):
            cycles.append((max(a - 1, 0), b, c))
    return cycles


# ---------------------------------------------------------------------------------------------- held-out data


@dataclass
class HeldOutEpisode:
    """One held-out episode as the protocols read it."""

    path: Path
    frames: torch.Tensor  # (T, H, W, 3) uint8
    actions: torch.Tensor  # (T,) int64, actions[t] led into frame t
    phase: np.ndarray | None  # (T,) 0 outward / 1 retracing, None when the file has no `phase`
    agent_pos: np.ndarray | None  # (T, 2) cell units, None when absent
    agent_dir: np.ndarray | None  # (T, 2) unit headings, None when absent


@dataclass(frozen=True)
class Example:
    """One generation to score: context frames start .. start+context-1, then horizon generated frames."""

    protocol: str
    episode: int
    start: int
    context: int
    horizon: int
    scored: np.ndarray  # (horizon,) bool: the generated frames that count
    distance: np.ndarray | None  # (horizon,) int64 last-seen distances (NEVER = -1); None without positions


@dataclass
class HeldOut:
    """The held-out episodes and the examples of every protocol that could run on them."""

    episodes: list[HeldOutEpisode]
    examples: dict[str, list[Example]]
    skipped: dict[str, str]
    """protocol -> why it did not run."""
    notes: list[str]
    """What the report must say about the data (episodes left out of a protocol, distances missing)."""
    digests: dict[str, str]
    """file name -> sha256 of every episode read (part of the settings a result holds for)."""


def _spread(items: list, k: int) -> list:
    """Up to k items spread evenly over the list (all when it has at most k)."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def prepare_heldout(folder: str | Path, protocol: Protocol) -> HeldOut:
    """Read the first ``protocol.heldout_episodes`` episodes of ``folder`` and build each protocol's examples.

    Retrieval needs ``phase`` (revisit episodes) and distances need ``agent_pos``/``agent_dir``: episodes without
    them are left out of that part, with a note. A protocol no episode can serve is in ``skipped`` with the
    reason; a ValueError when neither protocol can run."""
    try:
        paths = EpisodeStore(folder).paths[: protocol.heldout_episodes]
    except (FileNotFoundError, NotADirectoryError) as e:
        raise ValueError(f"held-out episodes: {e}") from e
    episodes = []
    for p in paths:
        ep = load_episode(p)
        has_pos = "agent_pos" in ep and "agent_dir" in ep
        episodes.append(
            HeldOutEpisode(
                path=p,
                frames=torch.from_numpy(np.ascontiguousarray(ep["image"])),
                actions=torch.from_numpy(np.asarray(ep["action"]).argmax(-1)).long(),
                phase=np.asarray(ep["phase"]) if "phase" in ep else None,
                agent_pos=np.asarray(ep["agent_pos"]) if has_pos else None,
                agent_dir=np.asarray(ep["agent_dir"]) if has_pos else None,
            )
        )
    notes: list[str] = []
    skipped: dict[str, str] = {}
    no_pos = [e.path.name for e in episodes if e.agent_pos is None]
    if no_pos:
        notes.append(
            f"{len(no_pos)} of {len(episodes)} held-out episode(s) lack agent_pos/agent_dir ({', '.join(no_pos[:5])}"
            f"{' ...' if len(no_pos) > 5 else ''}): no last-seen distances for them (retrieval and reasoning only)"
        )

    def distances(e: HeldOutEpisode, s: int, context: int, horizon: int) -> np.ndarray | None:
        if e.agent_pos is None:
            return None
        end = s + context + horizon
        return last_seen_distance(e.agent_pos[s:end], e.agent_dir[s:end], context)

    # 1. retrieval: each complete cycle's outward path as context, the return generated
    h = protocol.retrieval_horizon
    retrieval: list[Example] = []
    no_phase = [e.path.name for e in episodes if e.phase is None]
    for i, e in enumerate(episodes):
        if e.phase is None:
            continue
        cycles = [(s, b, c) for s, b, c in return_cycles(e.phase) if b + h <= len(e.frames)]
        for s, b, c in _spread(cycles, protocol.retrieval_per_episode):
            scored = np.arange(b, b + h) < c  # the return path's frames; the next cycle's are not scored
            retrieval.append(Example("retrieval", i, s, b - s, h, scored, distances(e, s, b - s, h)))
    if no_phase:
        notes.append(
            f"retrieval: {len(no_phase)} of {len(episodes)} held-out episode(s) have no `phase` (not revisit "
            f"episodes: python -m envs.collect --policy revisit): left out of retrieval"
        )
    if not retrieval:
        skipped["retrieval"] = (
            "no held-out episode has `phase` (collect revisit episodes: python -m envs.collect --policy revisit)"
            if len(no_phase) == len(episodes)
            else f"no complete out-and-back cycle followed by {h} frames in the held-out episodes"
        )
    # 2. reasoning: context + horizon windows spread over the episodes
    n, m = protocol.reasoning_context, protocol.reasoning_horizon
    reasoning: list[Example] = []
    try:
        picks = eval_windows([len(e.frames) for e in episodes], n + m, len(episodes) * protocol.reasoning_per_episode)
    except ValueError as err:
        skipped["reasoning"] = str(err)
        picks = []
    for i, s in sorted(set(picks)):
        reasoning.append(Example("reasoning", i, s, n, m, np.ones(m, dtype=bool), distances(episodes[i], s, n, m)))
    if not retrieval and not reasoning:
        raise ValueError(f"held-out episodes {folder}: nothing to score: " + "; ".join(skipped.values()))
    return HeldOut(
        episodes=episodes,
        examples={"retrieval": retrieval, "reasoning": reasoning},
        skipped=skipped,
        notes=notes,
        digests={p.name: file_digest(p) for p in paths},
    )


# ---------------------------------------------------------------------------------------------- scoring


def _over_episodes(episode_ids: np.ndarray, values: np.ndarray) -> dict:
    """Frame values averaged per episode, then mean and 95% t-interval over episodes (+ frame count)."""
    if len(values) == 0:
        return {"n": 0, "mean": None, "ci95": None, "frames": 0}
    per_episode = [float(values[episode_ids == e].mean()) for e in np.unique(episode_ids)]
    return {**mean_ci(per_episode), "frames": int(len(values))}


def _summary(frames: dict[str, np.ndarray], metrics: Sequence[str], edges: Sequence[int], window: int) -> dict:
    """Scores of a set of generated frames: every metric overall, per distance bin, never seen, and within /
    beyond the attention window. ``frames`` holds per-frame arrays "episode", "distance" and the metrics."""
    ep, dist = frames["episode"], frames["distance"]
    out: dict[str, Any] = {m: _over_episodes(ep, frames[m]) for m in metrics}
    out["episodes"] = int(len(np.unique(ep)))
    out["frames"] = int(len(ep))
    known = dist != -2  # -2: no positions in that episode
    out["frames_with_distance"] = int(known.sum())
    if known.any():
        bins = distance_bins(dist[known], edges)
        out["bins"] = []
        for i in range(len(edges)):
            sel = bins == i
            out["bins"].append(
                {
                    "label": bin_label(edges, i),
                    "lo": int(edges[i]),
                    "hi": int(edges[i + 1] - 1) if i + 1 < len(edges) else None,
                    **{m: _over_episodes(ep[known][sel], frames[m][known][sel]) for m in metrics},
                }
            )
        groups = {
            "never_seen": dist == NEVER,
            "within_attention": (dist >= 1) & (dist <= window),
            "beyond_attention": dist > window,
        }
        for key, sel in groups.items():
            out[key] = {m: _over_episodes(ep[sel], frames[m][sel]) for m in metrics}
    return out


@torch.no_grad()
def score_model(model: WorldModel, heldout: HeldOut, protocol: Protocol, progress: bool = False) -> tuple[dict, dict]:
    """Generate every example of ``heldout`` with ``model`` and score it.

    Returns (scores, strips): scores per protocol and pooled ("all"; see :func:`_summary`) with the attention
    window used for "within"/"beyond"; strips {protocol: {"context", "real", "dream"}: uint8 (k, H, W, 3)} of
    each protocol's first example. Every batch draws its noise from ``EVAL_SEED`` + its index, so every model
    is scored on the same examples with the same seeds."""
    with_lpips = lpips_available()
    metrics = ("psnr", "ssim", "lpips") if with_lpips else ("psnr", "ssim")
    window = 2 * model.config.backbone.attn_chunk  # the frame-local attention window (frames)
    pooled: dict[str, list] = {k: [] for k in ("episode", "distance", *metrics)}
    scores: dict[str, Any] = {}
    strips: dict[str, dict[str, np.ndarray]] = {}
    k = protocol.strip_frames
    for name in PROTOCOL_NAMES:
        examples = heldout.examples.get(name, [])
        if not examples:
            scores[name] = {"skipped": heldout.skipped.get(name, "no examples")}
            continue
        groups: dict[tuple[int, int], list[int]] = {}
        for j, ex in enumerate(examples):
            groups.setdefault((ex.context, ex.horizon), []).append(j)
        dreams: dict[int, torch.Tensor] = {}
        batches = [
            (ctx, hor, idx[i : i + protocol.batch])
            for (ctx, hor), idx in groups.items()
            for i in range(0, len(idx), protocol.batch)
        ]
        for b, (ctx, hor, idx) in enumerate(tqdm(batches, desc=f"{name} rollouts", leave=False, disable=not progress)):
            eps = [heldout.episodes[examples[j].episode] for j in idx]
            starts = [examples[j].start for j in idx]
            frames = torch.stack([e.frames[s : s + ctx] for e, s in zip(eps, starts)])  # (K, ctx, H, W, 3)
            acts = torch.stack([e.actions[s : s + ctx + hor] for e, s in zip(eps, starts)])  # (K, ctx+hor)
            gen = torch.Generator().manual_seed(EVAL_SEED + b)
            out = model.rollout(frames, acts[:, :ctx], acts[:, ctx:], generator=gen)["frames"]  # (K, hor, H, W, 3)
            for j, dream in zip(idx, out):
                dreams[j] = dream
        per: dict[str, list] = {key: [] for key in pooled}
        for j, ex in enumerate(examples):
            e = heldout.episodes[ex.episode]
            real = e.frames[ex.start + ex.context : ex.start + ex.context + ex.horizon][ex.scored]  # (M', H, W, 3)
            dream = dreams[j][torch.from_numpy(ex.scored)]
            values = {"psnr": frame_psnr(real, dream), "ssim": frame_ssim(real, dream)}
            if with_lpips:
                values["lpips"] = frame_lpips(real, dream)
            per["episode"].append(np.full(len(real), ex.episode))
            dist = ex.distance[ex.scored] if ex.distance is not None else np.full(len(real), -2)
            per["distance"].append(dist)
            for m in metrics:
                per[m].append(values[m].double().numpy())
        arrays = {key: np.concatenate(v) for key, v in per.items()}
        scores[name] = {"examples": len(examples), **_summary(arrays, metrics, protocol.distance_edges, window)}
        for key in pooled:
            pooled[key].append(arrays[key])
        # the strip of the first example: context, real and dream frames spread over the context / scored frames
        ex = examples[0]
        e = heldout.episodes[ex.episode]
        ctx_idx = np.linspace(0, ex.context - 1, min(k, ex.context)).round().astype(int)
        scored_idx = np.flatnonzero(ex.scored)
        fut_idx = scored_idx[np.linspace(0, len(scored_idx) - 1, min(k, len(scored_idx))).round().astype(int)]
        strips[name] = {
            "context": e.frames[ex.start + ctx_idx].numpy(),
            "real": e.frames[ex.start + ex.context + fut_idx].numpy(),
            "dream": dreams[0][fut_idx].numpy(),
        }
    arrays = {key: np.concatenate(v) for key, v in pooled.items() if v}
    scores["all"] = _summary(arrays, metrics, protocol.distance_edges, window) if arrays else {}
    scores["attention_window"] = window
    scores["lpips"] = "computed" if with_lpips else LPIPS_MISSING_MESSAGE
    return scores, strips


def latency(model: WorldModel, protocol: Protocol, device: torch.device) -> list[dict]:
    """Per-frame generation time and streaming-state memory at each of ``protocol.latency_contexts``, measured by
    ``benchmarks.latency.measure`` on one thread, batch 1 (a frame costs sampling_steps + 1 backbone steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    calls = model.config.diffusion.sampling_steps + 1
    rows = []
    try:
        for context in protocol.latency_contexts:
            with torch.no_grad():
                r = measure_latency(model.backbone, context, protocol.latency_steps, 1, device, torch.Generator())
            rows.append(
                {
                    "context_frames": context,
                    "ms_per_step": r["ms_per_frame"],
                    "ms_per_frame": r["ms_per_frame"] * calls,
                    "backbone_calls_per_frame": calls,
                    "state_mb": r["state_mb"],
                    "peak_mb": r["peak_mb"],
                }
            )
    finally:
        torch.set_num_threads(threads)
    return rows


# ---------------------------------------------------------------------------------------------- the sweep


def _step_of(checkpoint: Path) -> int:
    """The optimiser step of a worldmodel.train checkpoint (0 when there is none)."""
    return int(torch_load(checkpoint)["step"]) if checkpoint.exists() else 0


def _finished_autoencoder(path: Path) -> bool:
    return path.exists() and bool(load_autoencoder(path, allow_unfinished=True).stats_ready)


def shared_autoencoder(args: argparse.Namespace, model_cfg: WorldModelConfig, cfg: TrainConfig) -> Path:
    """SWEEP/_ae/autoencoder.pt: copied from ``--autoencoder`` or trained here (resumed when interrupted) on the
    training split worldmodel.train draws, so it never sees the held-out episodes."""
    ae_dir = args.sweep / "_ae"
    path = ae_dir / "autoencoder.pt"
    if args.autoencoder is not None:
        load_autoencoder(args.autoencoder, expected=model_cfg.autoencoder)  # refuses another preset's, naming fields
        if path.exists() and file_digest(path) != file_digest(args.autoencoder):
            raise ValueError(
                f"--autoencoder {args.autoencoder}: the sweep {args.sweep} already shares another autoencoder "
                f"({path}); its variants must share one: drop --autoencoder or use a new --sweep"
            )
        if not path.exists():
            ae_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, Path(args.autoencoder).read_bytes())
        return path
    if not _finished_autoencoder(path):
        train_paths, test_paths = EpisodeStore(args.episodes).split(test_fraction=cfg.test_fraction, seed=cfg.seed)
        print(f"== the shared autoencoder ({cfg.ae_steps} steps) into {ae_dir}")
        train_autoencoder(
            model_cfg.autoencoder,
            train_paths,
            test_paths,
            ae_dir,
            steps=cfg.ae_steps,
            batch_size=cfg.ae_batch_size,
            device=args.device,
            seed=cfg.seed,
            log=args.progress,
            resume=path.exists(),
        )
    return path


def train_variant(name: str, args: argparse.Namespace, ae_path: Path) -> dict:
    """Train (or resume) variant ``name`` in SWEEP/NAME on the shared autoencoder; returns its training record."""
    cfg, model_cfg = variant_configs(name, args.preset, args.steps)
    run = args.sweep / name
    run.mkdir(parents=True, exist_ok=True)
    ae = run / "autoencoder.pt"
    if not ae.exists():
        atomic_write_bytes(ae, ae_path.read_bytes())
    elif file_digest(ae) != file_digest(ae_path):
        raise ValueError(
            f"{ae} differs from the sweep's shared autoencoder {ae_path}: every variant must encode the same latents; "
            f"remove {run} to retrain it on the shared one"
        )
    ckpt = run / "checkpoint.pt"
    timing_path = run / "recall_minutes.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"seconds": 0.0, "steps_timed": 0}
    at = _step_of(ckpt)
    if at < cfg.steps:
        if at > timing["steps_timed"]:
            timing["incomplete"] = True  # an invocation was killed: its minutes were never recorded
        print(f"== {name}: training steps {at}..{cfg.steps} in {run}")
        _, res = train(
            cfg,
            args.episodes,
            run,
            resume=ckpt.exists(),
            device=args.device,
            model_cfg=model_cfg,
            progress=args.progress,
            heldout=args.heldout_episodes,
        )
        timing["seconds"] += float(res["train_seconds"])
        timing["steps_timed"] = int(res["steps"])
        atomic_write_json(timing_path, timing)
    steps = _step_of(ckpt)
    return {
        "steps": steps,
        "planned_steps": cfg.steps,
        "minutes": timing["seconds"] / 60,
        "minutes_incomplete": bool(timing.get("incomplete")) or timing["steps_timed"] < steps,
        "batch_size": cfg.batch_size,
        "curriculum": [list(c) for c in cfg.curriculum],
        "training_window": cfg.max_window,
    }


def _settings(args: argparse.Namespace, protocol: Protocol, heldout: HeldOut) -> dict:
    """What a variant's scores hold for: a stored result with other settings is scored again."""
    steps = variant_configs("hybrid", args.preset, args.steps)[0].steps
    return {
        "version": RESULT_VERSION,
        "preset": args.preset,
        "steps": steps,
        "episodes": str(Path(args.episodes).resolve()),
        "protocol": asdict(protocol),
        "heldout": heldout.digests,
        "heldout_notes": heldout.notes,
    }


def run_variant(name: str, args: argparse.Namespace, ae_path: Path, protocol: Protocol, heldout: HeldOut) -> dict:
    """Train what is missing of variant ``name``, score it, write SWEEP/NAME/recall.json and its strips."""
    trained = train_variant(name, args, ae_path)
    run = args.sweep / name
    model = worldmodel.load(run / "checkpoint.pt", device=args.device)
    t0 = time.perf_counter()
    scores, strips = score_model(model, heldout, protocol, progress=args.progress)
    score_s = time.perf_counter() - t0
    v = VARIANTS[name]
    bb = model.config.backbone
    result = {
        "variant": name,
        "label": v.label,
        "what": v.what,
        "backbone": v.backbone,
        "diffusion_overrides": v.diffusion,
        "settings": args.settings,
        "train": trained,
        "params_backbone": sum(p.numel() for p in model.backbone.parameters()),
        "params_world_model": sum(p.numel() for p in model.parameters()),
        "depth": bb.depth,
        "dim": bb.dim,
        "attn": bb.attn,
        "window_frames": bb.window_frames if bb.attn == "window" else None,
        "scores": scores,
        "latency": latency(model, protocol, resolve_device(args.device)),
        "score_seconds": score_s,
    }
    with atomic_write(run / "recall_strips.npz") as f:
        np.savez_compressed(f, **{f"{p}_{k}": a for p, rows in strips.items() for k, a in rows.items()})
    atomic_write_json(run / "recall.json", result)
    return result


def _stored(sweep: Path, name: str, settings: dict) -> dict | None:
    """SWEEP/NAME/recall.json when it holds for ``settings``, else None."""
    path = sweep / name / "recall.json"
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    return res if res.get("settings") == json.loads(json.dumps(settings)) else None


# ---------------------------------------------------------------------------------------------- reports


def _fmt(stat: dict | None, digits: int) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("n") == 1:
        return f"{stat['mean']:.{digits}f} (1 episode)"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def _metric(scores: dict, protocol: str, metric: str, group: str | None = None) -> dict | None:
    block = scores.get(protocol, {})
    if group is not None:
        block = block.get(group, {})
    return block.get(metric)


def goals(variants: dict[str, dict]) -> dict:
    """The issue's goals, checked on the pooled frames last seen beyond the attention window (and Table 5's
    ablations also on reasoning PSNR): each {"met": bool | None (a variant missing), numbers}."""

    def beyond(name: str) -> float | None:
        v = variants.get(name)
        stat = _metric(v["scores"], "all", "psnr", "beyond_attention") if v else None
        return stat["mean"] if stat and stat.get("mean") is not None else None

    def reasoning(name: str) -> float | None:
        v = variants.get(name)
        stat = _metric(v["scores"], "reasoning", "psnr") if v else None
        return stat["mean"] if stat and stat.get("mean") is not None else None

    def check(what: str, a: float | None, b: float | None, ok) -> dict:
        return {"what": what, "hybrid_db": a, "other_db": b, "met": None if a is None or b is None else bool(ok(a, b))}

    h = beyond("hybrid")
    out = {
        "hybrid_beats_causal_window": check(
            "beyond the attention window: hybrid PSNR > windowed Transformer", h, beyond("causal_window"), float.__gt__
        ),
        "hybrid_beats_mamba2": check(
            "beyond the attention window: hybrid PSNR > Mamba2 only", h, beyond("mamba2"), float.__gt__
        ),
        "hybrid_within_2db_of_causal_full": check(
            "beyond the attention window: hybrid PSNR >= full-context Transformer - 2 dB",
            h,
            beyond("causal_full"),
            lambda a, b: a >= b - 2.0,
        ),
    }
    for ab in ("mamba2_local_attn", "hybrid_block1", "hybrid_no_trick"):
        out[f"{ab}_below_hybrid"] = check(
            f"beyond the attention window: {VARIANTS[ab].label} PSNR < hybrid", h, beyond(ab), float.__gt__
        )
        out[f"{ab}_below_hybrid_reasoning"] = check(
            f"reasoning (Table 5): {VARIANTS[ab].label} PSNR < hybrid", reasoning("hybrid"), reasoning(ab), float.__gt__
        )
    return out


def markdown(res: dict) -> str:
    """The report: Tables 2, 3 and 5 in the paper's layout (mean ± 95% interval over episodes), recall against
    distance, latency and memory beside quality, the goals and the notes."""
    variants, proto = res["variants"], res["protocol"]
    window, train_window = res["attention_window"], res["training_window"]
    lp = res["lpips"] == "computed"
    lat_ctx = proto["latency_contexts"][0]
    lines = [
        f"# Recall benchmark on {res.get('world', WORLDS[DEFAULT_WORLD])}: `{res['preset']}` setting",
        "",
        f"{len(variants)} variant(s) scored of {len(VARIANTS)}; every one trained {res['steps']} steps on the same "
        f"episodes with one shared autoencoder, parameter counts matched. Held-out episodes: "
        f"{len(res['settings']['heldout'])}. Mean ± 95% interval over episodes. Frame-local attention window: "
        f"{window} frames; training window: {train_window} frames. LPIPS: "
        f"{'computed' if lp else 'n/a (' + LPIPS_MISSING_MESSAGE + ')'}.",
        "",
    ]

    def table(title: str, rows: Sequence[str], protocol: str, extra: bool = True) -> None:
        head = f"| {title} | SSIM ↑ | LPIPS ↓ | PSNR ↑ |"
        sep = "|---|---|---|---|"
        if extra:
            head += f" PSNR, last seen > {window} frames ago | ms / frame @ {lat_ctx} | state MB @ {lat_ctx} | params |"
            sep += "---|---|---|---|"
        lines.extend([head, sep])
        for name in rows:
            v = variants.get(name)
            if v is None:
                lines.append(f"| {VARIANTS[name].label} | not run | | |" + (" | | | |" if extra else ""))
                continue
            s = v["scores"]
            if "skipped" in s.get(protocol, {}):
                lines.append(
                    f"| {v['label']} | skipped: {s[protocol]['skipped']} | | |" + (" | | | |" if extra else "")
                )
                continue
            lpips_txt = _fmt(_metric(s, protocol, "lpips"), 3) if lp else "n/a"
            row = (
                f"| {v['label']} | {_fmt(_metric(s, protocol, 'ssim'), 3)} | {lpips_txt} | "
                f"{_fmt(_metric(s, protocol, 'psnr'), 2)} |"
            )
            if extra:
                lat = (v.get("latency") or [{}])[0]
                row += (
                    f" {_fmt(_metric(s, protocol, 'psnr', 'beyond_attention'), 2)} | {lat.get('ms_per_frame', 0):.1f} "
                    f"| {lat.get('state_mb', 0):.2f} | {v['params_backbone'] / 1e6:.2f}M |"
                )
            lines.append(row)
        lines.append("")

    r = proto
    lines.append(
        f"## Retrieval (Table 2): the outward path as context, up to {r['retrieval_horizon']} frames of the "
        "return generated under the real actions"
    )
    lines.append("")
    table("Retrieval", MAIN_ROWS, "retrieval")
    lines.append(
        f"## Reasoning (Table 3): {r['reasoning_context']} context frames, {r['reasoning_horizon']} generated under "
        "the real actions"
    )
    lines.append("")
    table("Reasoning", MAIN_ROWS, "reasoning")
    lines.append("## Ablations (Table 5), reasoning")
    lines.append("")
    table("Ablation", ABLATION_ROWS, "reasoning", extra=False)

    # recall against distance
    edges = r["distance_edges"]
    labels = [bin_label(edges, i) for i in range(len(edges))]
    lines += [
        "## Recall against distance (Fig. 7): PSNR by how many frames ago the context last showed the same view",
        "",
        f"Same view: same cell, heading within {HEADING_TOLERANCE_DEG:g} degrees. Both protocols' generated frames "
        "pooled; frames counted per bin in the header (of the first variant).",
        "",
    ]
    first = next(iter(variants.values()), None)
    counts = []
    if first and first["scores"].get("all", {}).get("bins"):
        counts = [b["psnr"]["frames"] for b in first["scores"]["all"]["bins"]]
        never = first["scores"]["all"]["never_seen"]["psnr"]["frames"]
        lines.append(
            "| variant | " + " | ".join(f"{lab} ({n})" for lab, n in zip(labels, counts)) + f" | never seen ({never}) |"
        )
        lines.append("|---|" + "---|" * (len(labels) + 1))
        for name in VARIANTS:
            v = variants.get(name)
            if v is None or not v["scores"].get("all", {}).get("bins"):
                continue
            a = v["scores"]["all"]
            cells = [_fmt(b["psnr"], 2) for b in a["bins"]] + [_fmt(a["never_seen"]["psnr"], 2)]
            lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    else:
        lines.append("No last-seen distances: the held-out episodes lack agent_pos/agent_dir (reasoning only).")
    lines.append("")

    # latency and memory
    lines += ["## Per-frame generation time and streaming-state memory (1 thread, batch 1)", ""]
    ctxs = proto["latency_contexts"]
    lines.append(
        "| variant | "
        + " | ".join(f"ms / frame @ {c}" for c in ctxs)
        + " | "
        + " | ".join(f"state MB @ {c}" for c in ctxs)
        + " |"
    )
    lines.append("|---|" + "---|" * (2 * len(ctxs)))
    for name in VARIANTS:
        v = variants.get(name)
        if v is None:
            continue
        lat = {row["context_frames"]: row for row in v.get("latency", [])}
        lines.append(
            f"| {v['label']} | "
            + " | ".join(f"{lat[c]['ms_per_frame']:.1f}" if c in lat else "–" for c in ctxs)
            + " | "
            + " | ".join(f"{lat[c]['state_mb']:.2f}" if c in lat else "–" for c in ctxs)
            + " |"
        )
    lines.append("")

    # training
    lines += [
        "## Training",
        "",
        "| variant | steps | minutes | depth x width | backbone params |",
        "|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        v = variants.get(name)
        if v is None:
            continue
        t = v["train"]
        mins = f"{t['minutes']:.1f}" + (
            " (incomplete: an interrupted run's time is lost)" if t["minutes_incomplete"] else ""
        )
        lines.append(f"| {v['label']} | {t['steps']} | {mins} | {v['depth']} x {v['dim']} | {v['params_backbone']:,} |")
    lines.append("")

    lines += ["## Goals (frames last seen beyond the attention window, pooled over both protocols)", ""]
    for g in res["goals"].values():
        verdict = {True: "met", False: "not met", None: "not measured"}[g["met"]]
        nums = (
            f" (hybrid {g['hybrid_db']:.2f} dB, other {g['other_db']:.2f} dB)"
            if g["hybrid_db"] is not None and g["other_db"] is not None
            else ""
        )
        lines.append(f"- {g['what']}: {verdict}{nums}")
    lines.append("")
    if res["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def plot(res: dict):
    """PSNR and SSIM against last-seen distance, one line per variant (95% intervals as error bars), the
    attention windows and the training window marked; a third panel for frames never seen."""
    fig, axes = figure(1, 3, figsize=(16, 4.5))
    edges = res["protocol"]["distance_edges"]
    hi = [edges[i + 1] - 1 if i + 1 < len(edges) else 2 * edges[i] for i in range(len(edges))]
    xs = np.sqrt(np.asarray(edges, dtype=float) * np.asarray(hi, dtype=float))  # geometric bin centres
    names = [n for n in VARIANTS if res["variants"].get(n, {}).get("scores", {}).get("all", {}).get("bins")]
    for k, name in enumerate(names):
        v = res["variants"][name]
        a = v["scores"]["all"]
        for ax, metric in zip(axes[:2], ("psnr", "ssim")):
            mean = [b[metric]["mean"] if b[metric]["mean"] is not None else np.nan for b in a["bins"]]
            err = [b[metric]["ci95"] if b[metric]["ci95"] is not None else 0.0 for b in a["bins"]]
            ax.errorbar(xs * (1 + 0.02 * (k - len(names) / 2)), mean, yerr=err, fmt="o-", ms=4, capsize=2,
                        label=v["label"])  # fmt: skip
        never = a["never_seen"]["psnr"]
        if never["mean"] is not None:
            axes[2].bar(k, never["mean"], yerr=never["ci95"], color=f"C{k}", capsize=3)
    marks = [(res["attention_window"], "frame-local attention", "C7")]
    if res.get("causal_window_frames"):
        marks.append((res["causal_window_frames"], "windowed Transformer", "C8"))
    marks.append((res["training_window"], "training window", "C3"))
    for ax, metric in zip(axes[:2], ("PSNR (dB)", "SSIM")):
        for x, what, colour in marks:
            ax.axvline(x + 0.5, color=colour, ls="--", lw=1, label=f"{what} ({x} frames)")
        ax.set_xscale("log")
        ax.set_xlabel("frames since the context last showed the same view")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    axes[2].set_xticks(range(len(names)), [res["variants"][n]["label"] for n in names], rotation=60, ha="right",
                       fontsize=7)  # fmt: skip
    axes[2].set_ylabel("PSNR (dB), views never seen in the context")
    fig.suptitle(
        f"{res.get('world', WORLDS[DEFAULT_WORLD])}: recall against distance, {res['preset']} setting, held-out "
        "episodes (mean ± 95% interval)"
    )
    fig.tight_layout()
    return fig


def strips_figure(res: dict, strips: dict[str, dict[str, np.ndarray]]):
    """context | real | each model, one column per protocol (the first example of each)."""
    protocols = [p for p in PROTOCOL_NAMES if any(p in s for s in strips.values())]
    names = [n for n in VARIANTS if n in strips]
    if not protocols or not names:
        return None
    rows = ["context", "real"] + names
    fig, axes = figure(len(rows), len(protocols), figsize=(7 * len(protocols), 1.0 * len(rows) + 0.6))
    axes = np.asarray(axes).reshape(len(rows), len(protocols))
    for c, p in enumerate(protocols):
        ref = strips[names[0]][p]
        for r, row in enumerate(rows):
            ax = axes[r, c]
            frames = ref[row] if row in ("context", "real") else strips[row].get(p, {}).get("dream")
            ax.set_xticks([])
            ax.set_yticks([])
            if frames is not None:
                ax.imshow(np.concatenate(list(frames), axis=1))
            label = row if row in ("context", "real") else res["variants"].get(row, {}).get("label", row)
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        axes[0, c].set_title(f"{p}: context (spread) | real and generated (spread over the scored frames)", fontsize=8)
    fig.tight_layout()
    return fig


def write_outputs(args: argparse.Namespace, heldout: HeldOut, protocol: Protocol) -> dict:
    """Combine every variant scored under the current settings into NAME.json/.md/.png and NAME_strips.png (NAME:
    recall, or recall_WORLD for a world other than Memory Maze: ``args.name``)."""
    variants, strips = {}, {}
    for name in VARIANTS:
        stored = _stored(args.sweep, name, args.settings)
        if stored is None:
            continue
        variants[name] = stored
        npz = args.sweep / name / "recall_strips.npz"
        if npz.exists():
            with np.load(npz, allow_pickle=False) as z:
                rows: dict[str, dict[str, np.ndarray]] = {}
                for key in z.files:
                    p, _, kind = key.partition("_")
                    rows.setdefault(p, {})[kind] = z[key]
            strips[name] = rows
    cfg, hybrid_cfg = variant_configs("hybrid", args.preset, args.steps)
    window_cfg = world_model_config(args.preset, "causal_window").backbone
    notes = list(heldout.notes)
    notes += [f"{p}: not run: {why}" for p, why in heldout.skipped.items()]
    first = next(iter(variants.values()), None)
    ret = first["scores"].get("retrieval", {}) if first else {}
    if ret.get("never_seen") and ret.get("frames_with_distance"):
        notes.append(
            f"retrieval: {ret['never_seen']['psnr']['frames']} of {ret['frames_with_distance']} scored return frames "
            f"show a view the outward path never showed (same cell, heading within {HEADING_TOLERANCE_DEG:g} "
            "degrees): retracing its path the agent faces the other way, so retrieval scores memory of the maze "
            "seen from the other side; the distance bins score memory of the views themselves"
        )
    steps = {v["train"]["steps"] for v in variants.values()}
    if len(steps) > 1:
        notes.append(f"the variants were trained for different numbers of steps ({sorted(steps)}): not equal footing")
    res = {
        "benchmark": NAME,
        "world": world_label(args.world),
        "preset": args.preset,
        "steps": cfg.steps,
        "sweep": str(args.sweep),
        "protocol": asdict(protocol),
        "settings": args.settings,
        "attention_window": 2 * hybrid_cfg.backbone.attn_chunk,
        "causal_window_frames": window_cfg.window_frames,
        "training_window": cfg.max_window,
        "heading_tolerance_deg": HEADING_TOLERANCE_DEG,
        "psnr_cap_db": PSNR_CAP_DB,
        "lpips": "computed" if lpips_available() else LPIPS_MISSING_MESSAGE,
        "variants": variants,
        "missing": [n for n in VARIANTS if n not in variants],
        "goals": goals(variants),
        "notes": notes,
        "machine": machine_info(resolve_device(args.device)),
    }
    write_results(args.name, res, plot(res), args.out)
    atomic_write_text(args.out / f"{args.name}.md", markdown(res))
    fig = strips_figure(res, strips)
    if fig is not None:
        save_figure(fig, args.out / f"{args.name}_strips.png", dpi=110)
    return res


# ---------------------------------------------------------------------------------------------- toy data


TOY_GRID = 5
"""Cells per side of the toy world of --quick and the tests."""
_TOY_STEP = ((1, 0), (0, 1), (-1, 0), (0, -1))  # heading index 0..3 -> (dx, dy): +x, +y, -x, -y


def _toy_frame(x: int, y: int, h: int) -> np.ndarray:
    """The toy world's view from cell (x, y) facing heading h: the cell's colour above, the cell ahead's below
    (black beyond the border), a heading marker: one image per (cell, heading), so revisits repeat frames."""

    def colour(cx: int, cy: int) -> np.ndarray:
        if not (0 <= cx < TOY_GRID and 0 <= cy < TOY_GRID):
            return np.zeros(3, np.uint8)
        return np.array([40 + 40 * cx, 40 + 40 * cy, 200 - 30 * ((cx + cy) % 4)], np.uint8)

    img = np.empty((64, 64, 3), np.uint8)
    img[:32] = colour(x, y)
    dx, dy = _TOY_STEP[h]
    img[32:] = colour(x + dx, y + dy)
    img[28:36, 8 + 12 * h : 20 + 12 * h] = 255
    return img


def toy_revisit_episode(steps: int, out_steps: int, seed: int) -> dict[str, np.ndarray]:
    """A toy episode in the official format with ``revisit``'s structure, on a TOY_GRID x TOY_GRID grid: the
    outward path (``out_steps`` random moves, drawn once per episode; phase 0), a half turn, the moves undone in
    reverse and another half turn (phase 1: back where and as it started), and the same cycle again, so every
    view comes back one cycle (2 out_steps + 4 frames) later. Actions use Memory Maze's ids (0 noop, 1 forward,
    2 left, 3 right); a frame depends only on (cell, heading)."""
    rng = np.random.default_rng(seed)
    x, y = (int(v) for v in rng.integers(0, TOY_GRID, 2))
    h = int(rng.integers(4))

    def move(x: int, y: int, h: int, a: int) -> tuple[int, int, int]:
        if a == 1:
            return x + _TOY_STEP[h][0], y + _TOY_STEP[h][1], h
        if a in (2, 3):
            return x, y, (h + (1 if a == 2 else -1)) % 4
        return x, y, h

    outward, (px, py, ph_) = [], (x, y, h)
    for _ in range(out_steps):
        a = int(rng.choice([1, 1, 2, 3]))
        nx, ny, _ = move(px, py, ph_, a)
        if not (0 <= nx < TOY_GRID and 0 <= ny < TOY_GRID):
            a = 0  # a blocked move is recorded as a noop, so undoing it is a noop too
        outward.append(a)
        px, py, ph_ = move(px, py, ph_, a)
    back = [2, 2] + [{2: 3, 3: 2}.get(b, b) for b in reversed(outward)] + [2, 2]
    cycle = [(a, 0) for a in outward] + [(a, 1) for a in back]
    n = steps + 1
    image, pos, heading = [_toy_frame(x, y, h)], [(x, y)], [h]
    action = np.zeros((n, 6), np.float32)
    phase = np.zeros(n, np.int8)
    for t in range(1, n):
        a, phase[t] = cycle[(t - 1) % len(cycle)]
        x, y, h = move(x, y, h, a)
        action[t, a] = 1.0
        image.append(_toy_frame(x, y, h))
        pos.append((x, y))
        heading.append(h)
    angle = np.asarray(heading) * (np.pi / 2)
    return {
        "image": np.stack(image),
        "action": action,
        "reward": np.zeros(n, np.float32),
        "maze_layout": np.ones((TOY_GRID, TOY_GRID), np.uint8),
        "agent_pos": np.asarray(pos, np.float32) + 0.5,
        "agent_dir": np.stack([np.cos(angle), np.sin(angle)], -1).astype(np.float32),
        "targets_pos": np.zeros((n, 3, 2), np.float32),
        "targets_vec": np.zeros((n, 3, 2), np.float32),
        "target_pos": np.zeros((n, 2), np.float32),
        "target_vec": np.zeros((n, 2), np.float32),
        "target_color": np.zeros((n, 3), np.float32),
        "phase": phase,
    }


def write_toy_episodes(folder: Path, count: int, steps: int, out_steps: int, seed: int) -> Path:
    """``count`` toy revisit episodes (seeds seed, seed+1, ...) as ``folder/ep_00000.npz`` ...; returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        save_episode(folder / f"ep_{i:05d}.npz", toy_revisit_episode(steps, out_steps, seed + i))
    return folder


QUICK_TOY = {"train": 3, "heldout": 2, "steps": 40, "out_steps": 8, "steps_per_variant": 3}
"""--quick: 3 training and 2 held-out toy episodes of 40 steps (outward paths of 8: a 20-frame cycle, so views
come back beyond the 10-frame attention window), 3 training steps per variant."""


# ---------------------------------------------------------------------------------------------- command line


def _finished_shared(args: argparse.Namespace) -> Path:
    """SWEEP/_ae/autoencoder.pt when trained (or ``--autoencoder``, copied there); else a ValueError saying how to
    make it (the train and score stages never train it: jobs started together would race for it)."""
    path = args.sweep / "_ae" / "autoencoder.pt"
    if args.autoencoder is None and not _finished_autoencoder(path):
        raise ValueError(
            f"{path}: the sweep's shared autoencoder is not trained yet; run this command with --stage autoencoder "
            "first (once), or give --autoencoder"
        )
    cfg, model_cfg = variant_configs("hybrid", args.preset, args.steps)
    return shared_autoencoder(args, model_cfg, cfg)


def _train_stage(args: argparse.Namespace) -> int:
    """--stage autoencoder: the shared autoencoder only; --stage train: train --variants on it, nothing scored.
    Neither takes the sweep's lock (each training locks its own folder), so jobs run side by side."""
    try:
        cfg, model_cfg = variant_configs("hybrid", args.preset, args.steps)
        if args.stage == "autoencoder":
            print(f"shared autoencoder: {shared_autoencoder(args, model_cfg, cfg)}")
            return 0
        ae_path = _finished_shared(args)
        for name in args.variants:
            r = train_variant(name, args, ae_path)
            print(f"{name}: trained {r['steps']} of {r['planned_steps']} steps in {args.sweep / name}")
    except (ValueError, OSError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every value is checked here (exit status 2 with a message naming it)."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.recall", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--episodes", type=Path, help=f"training episodes (revisit policy; default {DEFAULT_EPISODES}[-PRESET])"
    )
    ap.add_argument(
        "--heldout-episodes", type=Path, help=f"held-out episodes, other seeds (default {DEFAULT_HELDOUT}[-PRESET])"
    )
    ap.add_argument(
        "--sweep",
        type=Path,
        help=f"folder of the variants' runs (default per world: {DEFAULT_SWEEP} for Memory Maze, "
        f"{default_sweep('crafter')} for Crafter, ...)",
    )
    ap.add_argument(
        "--world",
        choices=list(WORLDS),
        help="the world the results are named after (recall_WORLD.*; memory_maze: recall.*) (default: the held-out "
        "episodes' manifest: the env they were collected from or the format they were converted from)",
    )
    ap.add_argument("--preset", choices=sorted(PROTOCOLS), help="model, training and protocol sizes (default: recall)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="variants to train and score (default: all)")
    ap.add_argument("--steps", type=int, help="training steps of every variant (default: the preset's)")
    ap.add_argument(
        "--autoencoder", type=Path, help="a trained autoencoder.pt of the preset to share (default: train one)"
    )
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results; --quick: a new temp folder)")
    ap.add_argument("--quick", action="store_true", help="smoke run in seconds: tiny preset, toy episodes, 3 steps")
    ap.add_argument("--redo", action="store_true", help="score again variants already scored")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    ap.add_argument("--collect-commands", action="store_true", help="print the commands that collect the data, exit")
    ap.add_argument(
        "--stage",
        choices=STAGES,
        default="all",
        help="all: train what is missing and score (default); autoencoder: only the shared autoencoder; train: only "
        "train --variants (one job per variant on a shared --sweep, after the autoencoder stage); score: only score "
        "the variants trained to the end and write the results",
    )
    args = ap.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps {args.steps}: expected >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: expected >= 1")
    try:
        resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        ap.error(f"--device {args.device}: {e}")
    if args.autoencoder is not None and not args.autoencoder.is_file():
        ap.error(f"--autoencoder {args.autoencoder}: no such file (a worldmodel autoencoder.pt)")
    args.preset = args.preset or ("tiny" if args.quick else "recall")
    if args.collect_commands:
        return args
    if args.quick:
        args.out = args.out or Path(tempfile.mkdtemp(prefix=f"{NAME}_quick_"))
        args.sweep = args.sweep or args.out / "sweep"
        args.steps = args.steps or QUICK_TOY["steps_per_variant"]
        if args.episodes is None:
            args.episodes = args.out / "toy_episodes"
            args.heldout_episodes = args.heldout_episodes or args.out / "toy_heldout"
    args.out = args.out or RESULTS_DIR
    default_episodes, default_heldout = default_folders(args.preset)
    args.episodes = args.episodes or default_episodes
    args.heldout_episodes = args.heldout_episodes or default_heldout
    if args.out.suffix == ".json":
        ap.error(f"--out {args.out}: give a folder (the run writes {NAME}.json, .md, .png into it)")
    toy = args.quick and args.episodes == args.out / "toy_episodes"
    if not toy:
        for opt in ("episodes", "heldout_episodes"):
            if not getattr(args, opt).is_dir():
                hint = (
                    "; collect them with:\n  "
                    + "\n  ".join(collect_commands(args.preset, args.episodes, args.heldout_episodes))
                    if args.preset in COLLECTION
                    else ""
                )
                ap.error(f"--{opt.replace('_', '-')} {getattr(args, opt)}: no such folder{hint}")
        if args.episodes.resolve() == args.heldout_episodes.resolve():
            ap.error(f"--heldout-episodes {args.heldout_episodes}: that is the training folder")
    if args.world is None:  # the toy episodes of --quick are Memory Maze's format (no manifest)
        try:
            worlds = {opt: episodes_world(getattr(args, opt)) for opt in ("episodes", "heldout_episodes")}
        except ValueError as e:
            ap.error(str(e))
        if not toy and worlds["episodes"] != worlds["heldout_episodes"]:
            ap.error(
                f"--episodes {args.episodes} are {world_label(worlds['episodes'])} episodes, --heldout-episodes "
                f"{args.heldout_episodes} {world_label(worlds['heldout_episodes'])}: score a model on its own world"
            )
        args.world = worlds["heldout_episodes"]
    args.name = result_name(NAME, args.world)
    args.sweep = args.sweep or default_sweep(args.world)
    args.toy = toy
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.recall``: train what is missing, score every variant, write the results."""
    args = parse_args(argv)
    if args.collect_commands:
        preset = args.preset if args.preset in COLLECTION else "recall"
        for cmd in collect_commands(preset, args.episodes, args.heldout_episodes):
            print(cmd)
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.toy:
        q = QUICK_TOY
        write_toy_episodes(args.episodes, q["train"], q["steps"], q["out_steps"], seed=0)
        write_toy_episodes(args.heldout_episodes, q["heldout"], q["steps"], q["out_steps"], seed=1000)
    if args.stage in ("autoencoder", "train"):
        return _train_stage(args)
    protocol = PROTOCOLS[args.preset]
    try:
        heldout = prepare_heldout(args.heldout_episodes, protocol)  # checked before any training
        args.settings = _settings(args, protocol, heldout)
        lock = open_run_folder(args.sweep, what="recall sweep")
    except (ValueError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in heldout.notes + [f"{p}: not run: {why}" for p, why in heldout.skipped.items()]:
        print(f"note: {note}")
    try:
        cfg, model_cfg = variant_configs("hybrid", args.preset, args.steps)
        ae_path = shared_autoencoder(args, model_cfg, cfg) if args.stage == "all" else _finished_shared(args)
        for name in args.variants:
            if _stored(args.sweep, name, args.settings) is not None and not args.redo:
                print(f"{name}: already scored in {args.sweep / name / 'recall.json'}, skipped (--redo to score again)")
                continue
            if args.stage == "score":  # score only what the train jobs finished
                planned = variant_configs(name, args.preset, args.steps)[0].steps
                at = _step_of(args.sweep / name / "checkpoint.pt")
                if at < planned:
                    print(f"{name}: trained {at} of {planned} steps, not scored (train it with --stage train)")
                    continue
            r = run_variant(name, args, ae_path, protocol, heldout)
            write_outputs(args, heldout, protocol)  # after every variant: an interruption loses nothing scored
            s = r["scores"]
            parts = [f"{p} PSNR {_fmt(s[p].get('psnr'), 2)}" for p in PROTOCOL_NAMES if "psnr" in s.get(p, {})]
            beyond = s.get("all", {}).get("beyond_attention", {}).get("psnr")
            if beyond:
                parts.append(f"beyond the attention window {_fmt(beyond, 2)}")
            print(f"{name}: " + ", ".join(parts) + f" ({r['train']['steps']} steps, {r['train']['minutes']:.1f} min)")
        res = write_outputs(args, heldout, protocol)
    except (ValueError, OSError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    print(f"{len(res['variants'])} of {len(VARIANTS)} variants scored; results in {args.out / args.name}.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
