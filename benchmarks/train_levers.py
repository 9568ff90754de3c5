"""The levers of world-model quality at a fixed CPU budget: one training run per setting, all judged alike.

    python -m benchmarks.train_levers --autoencoder runs/levers/_ae/autoencoder.pt \\
        --explore-episodes data/episodes/mm9 --mixed-episodes data/episodes/mm9-mixed \\
        --heldout-episodes data/episodes/mm9-heldout [--settings baseline mixed_data ...] [--steps 400]
    python -m benchmarks.train_levers --list          # the settings and what each changes

Every setting trains the cpu preset's world model (``worldmodel.train``) with one change (or a named set of
changes) from ``baseline`` for ``--steps`` optimiser steps on 2 cores, on top of one shared, already trained
autoencoder (copied into each run, so the minutes are the world model's alone); a setting that changes the latent
(``latent_16``, ``latent_4``) trains its own autoencoder in its run first, reported apart from the minutes. Each
trained model is then scored on the same held-out episodes, collected with other seeds than any training data
(unseen mazes):

- open loop after 16 real frames, 16 imagined frames: PSNR/SSIM of the dream and of copying the last context
  frame (``worldmodel.evaluate.evaluate``), reward-event precision/recall;
- action sensitivity (``worldmodel.evaluate.action_sensitivity``): on turning windows, PSNR under the real
  actions minus left/right swapped; PSNR between rollouts under constant left and right next to two noise seeds.

Resumable per setting: a finished setting is kept in the results and skipped; an interrupted one resumes from its
run's checkpoint. Results: train_levers.json (one row per setting and guidance scale, with the run's config,
minutes and strip) and train_levers.png in benchmarks/results/ (``--out`` to change), strips in
benchmarks/results/train_levers/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import worldmodel
from benchmarks.action_following import measure as measure_actions
from benchmarks.common import RESULTS_DIR, figure, machine_info, write_results
from envs.episodes import EpisodeStore
from worldmodel.evaluate import evaluate
from worldmodel.model import WorldModelConfig, world_model_config
from worldmodel.train import LatentEpisodes, train, train_config
from worldmodel.utils import config_to_dict, save_png

NAME = "train_levers"
EVAL_CONTEXT, EVAL_HORIZON, EVAL_WINDOWS = 16, 16, 16
"""Held-out open loop: 16 real frames, then 16 imagined, on 16 windows (the cpu preset's training eval)."""
ACTION_CONTEXT, ACTION_HORIZON, ACTION_WINDOWS = 16, 8, 16
"""Action sensitivity: 16 real frames, then 8 imagined, up to 16 windows per measure."""
HELDOUT_EPISODES = 12
"""Held-out episodes read (the first in name order)."""


@dataclass(frozen=True)
class Setting:
    """One training run of the study: what it changes from the cpu preset."""

    what: str
    """The change, in words."""
    data: str = "explore"
    """Training episodes: "explore" (the scripted explorer, as `make data`), "mixed" (with random segments) or
    "mixed120" (--more-episodes: 120 mixed episodes)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig overrides."""
    backbone: dict[str, Any] = field(default_factory=dict)
    """BackboneConfig overrides."""
    model: dict[str, Any] = field(default_factory=dict)
    """WorldModelConfig overrides (e.g. action_dropout)."""
    diffusion: dict[str, Any] = field(default_factory=dict)
    """DiffusionConfig overrides."""
    autoencoder: dict[str, Any] = field(default_factory=dict)
    """AutoencoderConfig overrides (e.g. latent_channels): the setting then trains its own stage 1 in its run instead
    of sharing --autoencoder (that stage's minutes are reported apart, not in the row's minutes)."""
    guidance: tuple[float, ...] = (1.0,)
    """Classifier-free guidance scales the trained model is evaluated with (one row each)."""
    reuse: str | None = None
    """Inference-only lever: score the model trained by this other setting (no training of its own)."""
    inference: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``worldmodel.load`` for scoring: ``ema``, ``sampling_steps``, ``context_noise``."""


_CFG = dict(backbone={"null_action": True}, model={"action_dropout": 0.1}, guidance=(1.0, 2.0))
_MT = {"action_tokens": True}  # the base of the one-change levers below: mixed data + action tokens


def _lever(what: str, data: str = "mixed", **kw) -> Setting:
    """A one-change lever on top of ``mixed_tokens`` (mixed data + action tokens)."""
    backbone = {**_MT, **kw.pop("backbone", {})}
    return Setting(what, data, backbone=backbone, **kw)


def _pf(what: str, **kw) -> Setting:
    """A one-change lever on top of ``prev_frame`` (mixed data + action tokens + the previous frame's patch)."""
    backbone = {"prev_frame": True, **kw.pop("backbone", {})}
    return _lever(what, backbone=backbone, **kw)


def _inference(what: str, **load_kwargs) -> Setting:
    """An inference-only lever: the ``mixed_tokens`` model scored with other ``worldmodel.load`` settings."""
    return Setting(what, "mixed", reuse="mixed_tokens", inference=load_kwargs)


SETTINGS: dict[str, Setting] = {
    "baseline": Setting("the cpu preset before this study, as `make demo` trained it (explore data)"),
    "mixed_data": Setting("training data with random-action segments (actions not predictable from frames)", "mixed"),
    "action_tokens": Setting(
        "action vector added to every token (input path beside adaLN)", backbone={"action_tokens": True}
    ),
    "mixed_tokens": Setting("mixed data + action tokens", "mixed", backbone=_MT),
    "mixed_tokens_cfg": Setting(
        "mixed data + action tokens + null action, 10% action dropout; evaluated with guidance 1 and 2",
        "mixed",
        backbone={**_MT, "null_action": True},
        model=_CFG["model"],
        guidance=_CFG["guidance"],
    ),
    # one change each on top of mixed_tokens
    "prev_frame": _lever(
        "+ each token also fed the previous frame's patch (DIAMOND-style)", backbone={"prev_frame": True}
    ),
    "prev_frame_cfg": _lever(
        "+ prev_frame + null action, 10% action dropout; evaluated with guidance 1 and 2",
        backbone={"prev_frame": True, "null_action": True},
        model=_CFG["model"],
        guidance=_CFG["guidance"],
    ),
    "edm_noise": _lever(
        "+ EDM's log-normal training noise levels (v + edm = EDM's recipe)", diffusion={"noise_levels": "edm"}
    ),
    "min_snr": _lever("+ Min-SNR-5 loss weighting", diffusion={"loss_weighting": "min_snr"}),
    "x0_prediction": _lever("+ the network predicts x0 instead of v", diffusion={"prediction": "x0"}),
    "lr_2e-3": _lever("+ learning rate 2e-3 (preset 1e-3)", train={"lr": 2e-3}),
    "short_windows": _lever(
        "+ batch 16 of 16-then-24-frame windows (preset: 8 of 32-then-48; same frames per step)",
        train={"batch_size": 16, "curriculum": ((0.0, 16), (0.7, 24))},
    ),
    "more_data": _lever("+ 120 mixed episodes instead of 40", data="mixed120"),
    # one change each on top of prev_frame (the cpu preset's model since the study: mixed data, action tokens and
    # the previous frame's patch); width x depth pairs keep dim^2 x depth, so the parameters and the cost per step
    # stay about the preset's
    "windows_32": _pf(
        "prev_frame + 32-frame windows throughout (preset: 32, then 48 from 70% of training): cheaper steps",
        train={"curriculum": ((0.0, 32),)},
    ),
    "ema_0.99": _pf("prev_frame + EMA decay 0.99 (preset 0.999)", train={"ema_decay": 0.99}),
    "latent_16": _pf(
        "prev_frame + a 16-channel latent (preset 8): 16 x 8x8 numbers per frame, its own autoencoder",
        autoencoder={"latent_channels": 16},
    ),
    "latent_4": _pf(
        "prev_frame + a 4-channel latent (preset 8): 4 x 8x8 numbers per frame, its own autoencoder",
        autoencoder={"latent_channels": 4},
    ),
    # second seeds (training order, noise, initialisation; latent_16's autoencoder too): the run-to-run spread
    "prev_frame_seed1": _pf("prev_frame again with training seed 1 (the spread between two runs)", train={"seed": 1}),
    "latent_16_seed1": _pf(
        "latent_16 again with training seed 1 (its autoencoder too)",
        autoencoder={"latent_channels": 16},
        train={"seed": 1},
    ),
    "wide_shallow": _pf(
        "prev_frame + width 160, depth 4 (preset 128 x 6; same parameters)",
        backbone={"dim": 160, "depth": 4, "block_sizes": ((2, 2), (4, 4)) * 2},
    ),
    "narrow_deep": _pf(
        "prev_frame + width 96, depth 10 (preset 128 x 6; same parameters)",
        backbone={"dim": 96, "depth": 10, "block_sizes": ((2, 2), (4, 4)) * 5},
    ),
    # inference only: the mixed_tokens model, other sampler settings
    "ctx_noise_0": _inference("mixed_tokens sampled with context noise 0 (preset 0.1)", context_noise=0.0),
    "ctx_noise_0.3": _inference("mixed_tokens sampled with context noise 0.3", context_noise=0.3),
    "sampling_4": _inference("mixed_tokens sampled with 4 DDIM steps (preset 2)", sampling_steps=4),
    "no_ema": _inference("mixed_tokens with its raw weights instead of the EMA", ema=False),
}


# The study started from the cpu preset as it was before it (no action tokens, no previous-frame input); every
# setting is that model plus its own changes, so the rows stay comparable after the preset took the winner.
STUDY_BASE_BACKBONE = {"action_tokens": False, "prev_frame": False}


def model_config(s: Setting, preset: str = "cpu") -> WorldModelConfig:
    """The preset's world model as it was before the study (STUDY_BASE_BACKBONE), with the setting's overrides."""
    cfg = world_model_config(preset)
    ae = dataclasses.replace(cfg.autoencoder, **s.autoencoder)
    c, h, w = ae.latent_shape  # the backbone reads and predicts the latent the autoencoder makes
    return dataclasses.replace(
        cfg,
        autoencoder=ae,
        backbone=dataclasses.replace(
            cfg.backbone, latent_channels=c, latent_size=(h, w), **{**STUDY_BASE_BACKBONE, **s.backbone}
        ),
        diffusion=dataclasses.replace(cfg.diffusion, **s.diffusion),
        **s.model,
    )


def run_setting(name: str, s: Setting, args: argparse.Namespace, rows_so_far: list[dict] = ()) -> list[dict]:
    """Train (or resume) one setting, then score it on the held-out episodes: one row per guidance scale.

    A setting with ``reuse`` trains nothing: it scores the named setting's model with other inference settings
    (its minutes are that run's)."""
    ae_stage = None  # a stage 1 of its own (a setting that changes the latent): its minutes and held-out quality
    if s.reuse is not None:
        run = args.runs / s.reuse
        if not (run / "checkpoint.pt").exists():
            raise SystemExit(f"setting {name!r} scores the model of {s.reuse!r}: run that setting first ({run})")
        cfg = train_config(args.preset, steps=args.steps, **SETTINGS[s.reuse].train)
        resumed = False
        trained = [r for r in rows_so_far if r["setting"].split("@")[0] == s.reuse and r["steps"] == args.steps]
        minutes = trained[0]["minutes"] if trained else float("nan")
    else:
        run = args.runs / name
        run.mkdir(parents=True, exist_ok=True)
        own_ae = bool(s.autoencoder)  # else the shared stage 1, copied in: the minutes below are the world model's
        if not own_ae and not (run / "autoencoder.pt").exists():
            shutil.copy2(args.autoencoder, run / "autoencoder.pt")
        ae_report = run / "autoencoder_report.json"  # written when a stage 1 of its own finishes
        ae_done_before = ae_report.exists()
        episodes = {"explore": args.explore_episodes, "mixed": args.mixed_episodes, "mixed120": args.more_episodes}[
            s.data
        ]
        cfg = train_config(args.preset, **{"steps": args.steps, **s.train})
        resumed = (run / "checkpoint.pt").exists()
        t0 = time.perf_counter()
        model_cfg = model_config(s, args.preset)
        train(cfg, episodes, run, resume=resumed, device="cpu", model_cfg=model_cfg, progress=args.progress)
        minutes = (time.perf_counter() - t0) / 60
        if own_ae:
            ae = json.loads(ae_report.read_text())
            ae_stage = {"minutes": round(ae["wall_time_s"] / 60, 2), "psnr": ae["psnr_mean"], "ssim": ae["ssim_mean"]}
            if not ae_done_before:  # trained in this call: its minutes are not the world model's
                minutes -= ae["wall_time_s"] / 60
    rows = []
    for g in s.guidance:
        label = name if len(s.guidance) == 1 else f"{name}@g{g:g}"
        scores = score(
            run / "checkpoint.pt", args.heldout_episodes, args.out / NAME / f"{label}.png", guidance=g, **s.inference
        )
        rows.append(
            {
                "setting": label,
                "what": s.what,
                "data": s.data,
                "guidance": g,
                "inference": s.inference,
                "reuses": s.reuse,
                "steps": args.steps,
                "train_steps": cfg.steps,
                "minutes": round(minutes, 2),
                "resumed": resumed,
                **({"autoencoder_stage": ae_stage} if ae_stage else {}),
                **scores,
                "config": {"train": config_to_dict(cfg), "model": scores.pop("model_config")},
                "strip": f"{NAME}/{label}.png",
            }
        )
    return rows


def score(checkpoint: Path, heldout: Path, strip_png: Path, **load_kwargs) -> dict:
    """Held-out scores of a checkpoint (``worldmodel.load`` keyword arguments: guidance, ema, sampler settings).

    Open loop (16 real frames, 16 imagined, 16 windows): mean PSNR/SSIM of the dream and of copy-last, reward
    precision/recall; action sensitivity (turning real minus swapped, constant left vs right vs two seeds);
    the per-frame curves and the full action measures; the strip is written to ``strip_png``."""
    model = worldmodel.load(checkpoint, device="cpu", **load_kwargs)
    paths = EpisodeStore(heldout).paths[:HELDOUT_EPISODES]
    data = LatentEpisodes(model, paths, min_frames=2, desc="encoding held-out", keep_frames=True)
    ev = evaluate(model, data, EVAL_CONTEXT, EVAL_HORIZON, EVAL_WINDOWS)
    # without the real env's reference: it does not depend on the model (action_following publishes it once)
    act = measure_actions(
        model, heldout, ACTION_CONTEXT, ACTION_HORIZON, ACTION_WINDOWS, HELDOUT_EPISODES, real_env=False, progress=False
    )
    save_png(strip_png, ev.pop("strip"))
    return {
        "psnr_dream": ev["psnr_dream_mean"],
        "psnr_copy_last": ev["psnr_copy_last_mean"],
        "psnr_gain": ev["psnr_dream_mean"] - ev["psnr_copy_last_mean"],
        "ssim_dream": ev["ssim_dream_mean"],
        "ssim_copy_last": ev["ssim_copy_last_mean"],
        "reward_precision": ev.get("reward_precision"),
        "reward_recall": ev.get("reward_recall"),
        "turning_real_minus_swapped_db": act["turning"].get("psnr_real_minus_swapped"),
        "turning_real_minus_shuffled_db": act["turning"].get("psnr_real_minus_shuffled"),
        "forward_real_minus_shuffled_db": act["forward"].get("psnr_real_minus_shuffled"),
        "left_vs_right_db": act["constant"]["psnr_left_vs_right"],
        "seed_vs_seed_db": act["constant"]["psnr_seed_vs_seed"],
        "follows_actions": act["constant"]["follows_actions"],
        "open_loop": {k: v for k, v in ev.items() if isinstance(v, list)},
        "action_sensitivity": act,
        "model_config": config_to_dict(model.config),
    }


def plot(rows: list[dict]):
    """Four bars per setting: PSNR gain over copy-last, SSIM, turning real-minus-swapped, left/right vs seeds."""
    fig, axes = figure(1, 4, figsize=(16, 0.45 * len(rows) + 2.2))
    names = [r["setting"] for r in rows]
    y = np.arange(len(rows))
    panels = [
        ("psnr_gain", "held-out PSNR dream - copy-last (dB)\n(goal >= 4)", 4.0),
        ("ssim_dream", "held-out SSIM of the dream\n(goal >= 0.65)", 0.65),
        ("turning_real_minus_swapped_db", "turning: real - swapped actions (dB)\n(goal >= 2)", 2.0),
        ("left_minus_seeds", "PSNR left-vs-right minus seed-vs-seed (dB)\n(goal <= 0)", 0.0),
    ]
    for ax, (key, label, goal) in zip(axes, panels):
        if key == "left_minus_seeds":
            vals = [r["left_vs_right_db"] - r["seed_vs_seed_db"] for r in rows]
        else:
            vals = [r[key] if r[key] is not None else float("nan") for r in rows]
        ax.barh(y, vals, color="C0")
        ax.axvline(goal, color="C3", ls="--", lw=1)
        ax.set_yticks(y, names if ax is axes[0] else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_xlabel(label, fontsize=8)
    fig.suptitle("held-out quality and action-following per training setting (cpu preset, 2 cores)", fontsize=10)
    fig.tight_layout()
    return fig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.train_levers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--list", action="store_true", help="print the settings and exit")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), help="settings to run, in order (default: all)")
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps per setting (default: 400)")
    ap.add_argument("--preset", default="cpu", choices=("tiny", "cpu"), help="model size (default: cpu; tiny: tests)")
    ap.add_argument("--autoencoder", type=Path, help="a trained cpu autoencoder.pt shared by every run")
    ap.add_argument("--explore-episodes", type=Path, default=Path("data/episodes/mm9"))
    ap.add_argument("--mixed-episodes", type=Path, default=Path("data/episodes/mm9-mixed"))
    ap.add_argument(
        "--more-episodes", type=Path, default=Path("data/episodes/mm9-mixed120"), help="120 mixed episodes (more_data)"
    )
    ap.add_argument("--heldout-episodes", type=Path, default=Path("data/episodes/mm9-heldout"))
    ap.add_argument("--runs", type=Path, default=Path("runs/levers"), help="folder of the runs (default: runs/levers)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: benchmarks/results)")
    ap.add_argument("--redo", action="store_true", help="re-score settings already in the results")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    ap.add_argument(
        "--threads", type=int, help="torch CPU threads (1 when other jobs share the cores: OpenMP oversubscription)"
    )
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: expected >= 1")
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    if args.steps < 1:
        ap.error(f"--steps {args.steps}: expected >= 1")
    if not args.list:
        if args.autoencoder is None or not args.autoencoder.is_file():
            ap.error(
                f"--autoencoder {args.autoencoder}: expected a trained autoencoder.pt (worldmodel.train_autoencoder)"
            )
        for opt in ("explore_episodes", "heldout_episodes"):
            if not getattr(args, opt).is_dir():
                ap.error(f"--{opt.replace('_', '-')} {getattr(args, opt)}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.train_levers``."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.list:
        for name, s in SETTINGS.items():
            print(f"{name:18s} {s.what}")
        return 0
    path = args.out / f"{NAME}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for name in args.settings:
        done = [r for r in rows if r["setting"].split("@")[0] == name and r["steps"] == args.steps]
        if done and not args.redo:
            print(f"{name}: already in {path}, skipped (--redo to score it again)")
            continue
        print(f"== {name}: {SETTINGS[name].what}")
        new = run_setting(name, SETTINGS[name], args, rows)
        rows = [r for r in rows if r not in done] + new
        write_results(NAME, {"rows": rows, "machine": machine_info()}, plot(rows), args.out)  # after every setting
        for r in new:
            print(
                f"{r['setting']}: PSNR {r['psnr_dream']:.2f} (copy-last {r['psnr_copy_last']:.2f}), SSIM "
                f"{r['ssim_dream']:.3f}, turning real-swapped {r['turning_real_minus_swapped_db']:+.2f} dB, "
                f"L/R {r['left_vs_right_db']:.1f} dB vs seeds {r['seed_vs_seed_db']:.1f}, {r['minutes']:.1f} min"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
