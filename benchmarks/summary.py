"""Print the README's benchmark table from the JSON files in benchmarks/results/.

    python -m benchmarks.summary                    # markdown table on stdout
    python -m benchmarks.summary --results DIR      # the table of the results in another folder

Every number comes from a results file written by one of the benchmark jobs; a benchmark without a results file
has no row. Benchmarks that run on several worlds get a row per world whose results exist (``dream_fidelity.json``
for Memory Maze, ``dream_fidelity_crafter.json`` for Crafter, ...: ``envs.worlds.result_name``). Keeps the
README's table honest: regenerate it after re-running a benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS_DIR
from benchmarks.latency import FLAT_TOLERANCE
from benchmarks.ssd_speed import GOAL_LENGTH, GOAL_SPEEDUP
from envs.worlds import DEFAULT_WORLD, WORLDS, result_name

AUTOENCODER_GOAL_DB = 28.0
"""Held-out PSNR the cpu-preset autoencoder should reach (above it, its reconstructions are sharp)."""


def _load(folder: Path, name: str):
    """The parsed ``folder/NAME.json``, or None when that benchmark has not written one."""
    p = folder / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _per_world(folder: Path, base: str):
    """(results, world key, its label or None for Memory Maze) of benchmark ``base`` in every world that has a
    results file (``base.json`` for Memory Maze, ``base_WORLD.json`` for the others: ``result_name``)."""
    for world, label in WORLDS.items():
        res = _load(folder, result_name(base, world))
        if res:
            yield res, world, None if world == DEFAULT_WORLD else label


def _rows(folder: Path) -> list[tuple[str, str, str]]:
    """(benchmark, result, goal) for every result file of ``folder``, in the README's order."""
    rows = []
    cs = _load(folder, "collect_speed")
    if cs:
        s = cs["steps_per_s"]
        workers = cs["parallel"]["workers"]
        rows.append(
            (
                "Memory Maze stepping (`collect_speed`)",
                f"stock {s['stock']:.0f} steps/s; ours {s['fast']:.0f} (1 process, "
                f"{cs['speedup_vs_stock']['fast']:.1f}x), {s[f'fast_x{workers}']:.0f} ({workers} processes)",
                "goal >= 3x stock: met" if cs.get("goal_single_process_3x") else "goal >= 3x stock: missed",
            )
        )
    ssd = _load(folder, "ssd_speed")
    if ssd:
        at = [r for r in ssd if r["T"] == GOAL_LENGTH]
        txt = ", ".join(f"batch {r['batch']}: {r['speedup']:.0f}x (max err {r['max_abs_err_y']:.1e})" for r in at)
        met = [str(r["batch"]) for r in at if r["speedup"] >= GOAL_SPEEDUP]
        if not at:
            verdict = f"not measured at T={GOAL_LENGTH}"
        else:
            verdict = "met" if len(met) == len(at) else f"met at batch {', '.join(met)} only" if met else "missed"
        rows.append(
            (
                f"SSD chunked vs sequential, T={GOAL_LENGTH} (`ssd_speed`)",
                txt,
                f"goal >= {GOAL_SPEEDUP:.0f}x: {verdict}",
            )
        )
    lat = _load(folder, "latency")
    if lat:

        def ms(v, n):
            r = [x for x in lat if x["variant"] == v and x["context_frames"] == n]
            return f"{r[0]['ms_per_frame']:.1f} ms / {r[0]['peak_mb']:.1f} MB" if r else "n/a"

        hy = {x["context_frames"]: x["ms_per_frame"] for x in lat if x["variant"] == "hybrid"}
        flat = bool(hy) and abs(hy[max(hy)] / hy[min(hy)] - 1) <= FLAT_TOLERANCE
        rows.append(
            (
                "Per-frame generation vs context (`latency`)",
                f"hybrid {ms('hybrid', 50)} at 50 frames, {ms('hybrid', 3200)} at 3200; full attention "
                f"{ms('causal_full', 50)} at 50, {ms('causal_full', 800)} at 800",
                f"hybrid flat within {FLAT_TOLERANCE:.0%}: " + ("met" if flat else "missed"),
            )
        )
    tc = _load(folder, "train_cost")
    if tc:

        def it(v, n):
            r = [x for x in tc if x["variant"] == v and x["frames"] == n and x["batch"] == 1]
            return f"{r[0]['ms_per_iter']:.0f}" if r else "n/a"

        rows.append(
            (
                "Training iteration vs length, batch 1 (`train_cost`)",
                f"hybrid {it('hybrid', 64)} -> {it('hybrid', 512)} ms (64 -> 512 frames); full attention "
                f"{it('causal_full', 64)} -> {it('causal_full', 512)} ms",
                "hybrid linear, attention quadratic",
            )
        )
    ae = _load(folder, "autoencoder_cpu")
    if ae:
        h = ae["held_out"]
        rows.append(
            (
                "Autoencoder, cpu preset, held-out (`train_autoencoder`)",
                f"PSNR {h['psnr']:.1f} dB, SSIM {h['ssim']:.3f} ({h['frames']} frames, "
                f"{ae.get('train_time_s', '?')} s training)",
                f"goal >= {AUTOENCODER_GOAL_DB:.0f} dB: " + ("met" if h["psnr"] >= AUTOENCODER_GOAL_DB else "missed"),
            )
        )
    wm = _load(folder, "world_model_cpu")
    if wm:
        rows.append(
            (
                "World model, cpu preset, held-out open loop (`worldmodel.train`)",
                f"PSNR dream {wm['psnr_dream_mean']:.1f} dB vs copy-last-frame {wm['psnr_copy_last_mean']:.1f} dB "
                f"(autoencoder ceiling {wm['psnr_autoencoder_mean']:.1f}); SSIM {wm['ssim_dream_mean']:.3f} vs "
                f"{wm['ssim_copy_last_mean']:.3f}; {wm['horizon']} frames after {wm['context_frames']} of "
                f"context; reward events P/R held-out {_fmt(wm.get('reward_precision'))}/"
                f"{_fmt(wm.get('reward_recall'))} ({_events(wm, 'reward')} events), training episodes "
                f"{_fmt(wm.get('reward_train_precision'))}/{_fmt(wm.get('reward_train_recall'))} "
                f"({_events(wm, 'reward_train')} events)" + _extra_reward(wm),
                "above copy-last: " + ("yes" if wm["psnr_dream_mean"] > wm["psnr_copy_last_mean"] else "no"),
            )
        )
    for fid, _, label in _per_world(folder, "dream_fidelity"):
        m, q1, q4 = fid["mean"], fid["mean_first_quarter"], fid["mean_last_quarter"]
        where = f"unseen worlds, {label}" if label else "unseen mazes"
        rows.append(
            (
                f"Dream vs real env, open loop on {where} (`dream_fidelity`)",
                f"{fid['horizon']} frames after {fid['context_frames']} of context, {fid['windows']} windows: "
                f"PSNR {m['psnr_dream']:.1f} dB vs copy-last {m['psnr_copy_last']:.1f} (first quarter "
                f"{q1['psnr_dream']:.1f} vs {q1['psnr_copy_last']:.1f}, last quarter {q4['psnr_dream']:.1f} vs "
                f"{q4['psnr_copy_last']:.1f}); SSIM {m['ssim_dream']:.3f} vs {m['ssim_copy_last']:.3f}",
                "reported (no goal)",
            )
        )
    ds = _load(folder, "dream_speed")
    if ds and ds["dream"].get("fp32"):
        real = ds["real_env"]["steps_per_s"]
        fp32, bf16 = ds["dream"]["fp32"], ds["dream"].get("bf16", {})
        goal = ds["goal"]["fp32"]  # the benchmark's own verdict at its largest batch
        top = str(goal["batch"])
        bf = bf16.get(top, {}).get("frames_per_s")
        x = goal["x_real_env"]
        rows.append(
            (
                "Dream throughput, cpu preset (`dream_speed`)",
                "imagined frames/s "
                + ", ".join(f"batch {b}: {d['frames_per_s']:.0f}" for b, d in fp32.items())
                + (f" (bf16 batch {top}: {bf:.0f})" if bf else "")
                + f" vs real env {real:.0f} steps/s",
                f"batch {top} >= real env: "
                + ("met" if goal["met_1x"] else f"missed in fp32 ({x:.2f}x)")
                + (f", bf16 {bf / real:.2f}x" if bf else ""),
            )
        )
    for stem, which in (("action_following", ""), ("action_following_long", ", long preset (`make train-long`)")):
        af = _load(folder, stem)
        if not af:
            continue
        tr, c = af["turning"], af["constant"]
        ref = af.get("real_env", {}).get("constant")
        rows.append(
            (
                f"Action-following on unseen mazes{which} (`action_following`)",
                f"turning windows: real actions {tr.get('psnr_real', float('nan')):.2f} dB vs left/right swapped "
                f"{tr.get('psnr_swapped', float('nan')):.2f} ({tr.get('windows', 0)} windows); constant left vs right "
                f"rollouts {c['psnr_left_vs_right']:.1f} dB apart vs two noise seeds {c['psnr_seed_vs_seed']:.1f}"
                + (f" (in the real maze: {ref['psnr_left_vs_right']:.1f})" if ref else ""),
                "real beats swapped by >= 2 dB: "
                + ("met" if af["goals"]["turning_real_beats_swapped_by_2db"] else "missed")
                + "; left/right differ as much as seeds: "
                + ("met" if af["goals"]["left_right_differ_as_much_as_seeds"] else "missed"),
            )
        )
    lev = _load(folder, "train_levers")
    if lev and lev.get("rows"):
        rs = lev["rows"]
        best = max(rs, key=lambda r: r["turning_real_minus_swapped_db"] or float("-inf"))
        sharp = max(rs, key=lambda r: r["psnr_gain"])
        rows.append(
            (
                f"Training levers, {len(rs)} settings x {rs[0]['steps']} steps (`train_levers`)",
                f"most action-following: {best['setting']} (turning real - swapped "
                f"{best['turning_real_minus_swapped_db']:+.2f} dB, L/R {best['left_vs_right_db']:.1f} vs seeds "
                f"{best['seed_vs_seed_db']:.1f} dB); best PSNR gain over copy-last: {sharp['setting']} "
                f"({sharp['psnr_gain']:+.2f} dB, SSIM {sharp['ssim_dream']:.3f})",
                "see the lever table below",
            )
        )
    sc = _load(folder, "scaling")
    if sc and sc.get("rows"):
        pts = "; ".join(
            f"{r['steps']} steps ({r['minutes']:.0f} min): {r['psnr_gain']:+.2f} dB over copy-last, SSIM "
            f"{r['ssim_dream']:.3f}, turning real - swapped {r['turning_real_minus_swapped_db']:+.2f} dB, L/R "
            f"{r['left_vs_right_db']:.1f} vs seeds {r['seed_vs_seed_db']:.1f}"
            for r in sc["rows"]
        )
        threads = sorted({r.get("torch_threads") for r in sc["rows"] if r.get("torch_threads")})
        how = f", minutes at {'/'.join(map(str, threads))} torch thread(s)" if threads else ""
        rows.append((f"Quality vs training steps, long preset{how} (`scaling`)", pts, "reported (what compute buys)"))
    rows += [_planner_row(pl, label) for pl, _, label in _per_world(folder, "planners")]
    rows += [_agents_row(ag, label) for ag, _, label in _per_world(folder, "agents")]
    for rc, world, label in _per_world(folder, "recall"):
        if rc.get("variants"):
            rows.append(_recall_row(rc, label and (label, result_name("recall", world))))
    dd = _load(folder, "train_ddp")
    if dd:
        one, two = (dd["processes"][n]["windows_per_s"] for n in ("1", "2"))
        rows.append(
            (
                f"Training on 2 processes vs 1, {dd['preset']} preset (`train_ddp`)",
                f"{one:.2f} -> {two:.2f} training windows/s (DDP over gloo, 1 thread per process, global batch "
                f"{dd['batch']}): {dd['speedup']:.2f}x",
                "reported (CPU processes; GPUs not measured)",
            )
        )
    return rows


def _recall_row(rc: dict, world: tuple[str, str] | None = None) -> tuple[str, str, str]:
    """Per variant: reasoning PSNR and PSNR on frames last seen beyond the attention window (``recall``); the
    latter only where the episodes have positions (Crafter's have none: reasoning only). ``world``: (its name, the
    results' stem) of a world other than Memory Maze, named in the row (None: Memory Maze's row)."""
    parts = []
    for name, v in rc["variants"].items():
        s = v["scores"]
        beyond = s.get("all", {}).get("beyond_attention", {}).get("psnr", {})
        reason = s.get("reasoning", {}).get("psnr", {})
        text = f"{name}: reasoning {reason.get('mean', float('nan')):.2f} dB"
        if beyond or world is None:
            text += f", beyond the attention window {beyond.get('mean', float('nan')):.2f} dB"
        parts.append(text)
    done = f"{len(rc['variants'])} of {len(rc['variants']) + len(rc.get('missing', []))} variants"
    if world is None:
        return (
            f"Recall, {rc['preset']} setting, {done} (`recall`)",
            "; ".join(parts),
            "the paper's orderings: see below",
        )
    label, stem = world
    return (f"Recall on {label}, {rc['preset']} setting, {done} (`recall`)", "; ".join(parts), f"reported ({stem}.md)")


def _agents_row(ag: dict, world: str | None = None) -> tuple[str, str, str]:
    """The agents' real-env reward rates against random and the oracle (``benchmarks.agents``); ``world``: the
    name of a world other than Memory Maze (None: the maze)."""
    parts = []
    for name, m in ag.get("methods", {}).items():
        r = m["reward_rate_per_100"]
        steps = f", {m['env_steps'] / 1000:.0f}k steps" if "env_steps" in m else ""
        parts.append(f"{name} {r['mean']:.2f} ± {r['ci95']:.2f}{steps}")
    met = ag.get("goals", {}).get("a_dream_agent_beats_random_95ci")
    return (
        f"Agents in the real {world or 'maze'}, reward / 100 steps (`benchmarks.agents`)",
        "; ".join(parts),
        "an agent trained only in the dream beats random (95% CI): " + ("met" if met else "missed"),
    )


def _planner_row(pl: dict, world: str | None = None) -> tuple[str, str, str]:
    """The planners' reward rates against random and the oracle (``planners.evaluate``; results named
    ``planners_WORLD`` with ``--name``); ``world``: the name of a world other than Memory Maze (None: the maze)."""
    ms = pl.get("methods", {})

    def rate(m: str) -> str:
        r = ms.get(m, {}).get("reward_rate_per_100", {})
        return f"{r.get('mean', float('nan')):.2f} ± {r.get('ci95', float('nan')):.2f}" if r else "n/a"

    planners = [m for m in ms if m not in ("random", "oracle")]
    beats = [m for m in planners if ms[m].get("beats_random")]
    return (
        f"MPC in the real {world or 'maze'}, reward / 100 steps (`planners.evaluate`)",
        ", ".join(f"{m} {rate(m)}" for m in planners)
        + f"; random {rate('random')}"
        + (f"; oracle {rate('oracle')}" if "oracle" in ms else ""),
        "a planner beats random (95% CI): " + (f"met ({', '.join(beats)})" if beats else "missed"),
    )


def _extra_reward(wm: dict) -> str:
    """The reward head's precision/recall on the extra unseen episodes, when the report measured them."""
    x = wm.get("reward_extra")
    if not x:
        return ""
    return (
        f", {x['episodes']} more unseen episodes {_fmt(x.get('reward_precision'))}/"
        f"{_fmt(x.get('reward_recall'))} ({_events(x, 'reward')} events)"
    )


def _events(d: dict, prefix: str) -> int:
    """Real reward events behind a precision/recall pair (true positives + false negatives)."""
    return int(d.get(f"{prefix}_true_positives", 0) + d.get(f"{prefix}_false_negatives", 0))


def _fmt(v) -> str:
    """A precision or recall with two decimals, "n/a" when undefined (no events)."""
    return "n/a" if v is None else f"{v:.2f}"


def table(folder: Path = RESULTS_DIR) -> str:
    """The markdown table of the results in ``folder`` (a benchmark without a results file has no row)."""
    lines = ["| benchmark | result | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows(folder)]
    return "\n".join(lines)


def lever_table(folder: Path = RESULTS_DIR) -> str:
    """The lever study (``train_levers.json``) as a markdown table, one row per setting, in run order."""
    lev = _load(folder, "train_levers")
    if not lev or not lev.get("rows"):
        return "(train_levers not run)"
    lines = [
        "| setting | change | min | PSNR dream / copy-last | SSIM | turning real - swapped | L/R vs seeds (dB) "
        "| reward P/R |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in lev["rows"]:
        lines.append(
            f"| {r['setting']} | {r['what']} | {r['minutes']:.1f} | {r['psnr_dream']:.2f} / {r['psnr_copy_last']:.2f} "
            f"| {r['ssim_dream']:.3f} | {r['turning_real_minus_swapped_db']:+.2f} | {r['left_vs_right_db']:.1f} vs "
            f"{r['seed_vs_seed_db']:.1f} | {_fmt(r.get('reward_precision'))}/{_fmt(r.get('reward_recall'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.summary", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS_DIR,
        help="folder of the benchmarks' JSON files (default: benchmarks/results)",
    )
    p.add_argument("--levers", action="store_true", help="print the training-lever study's table instead")
    args = p.parse_args(argv)
    if not args.results.is_dir():
        p.error(f"--results {args.results}: no such folder")
    print(lever_table(args.results) if args.levers else table(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
