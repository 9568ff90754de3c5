"""Print the README's benchmark table from the JSON files in benchmarks/results/.

    python -m benchmarks.summary            # markdown table on stdout

Every number comes from a results file written by one of the benchmark jobs; a missing file is shown as
"not run". Keeps the README's table honest: regenerate it after re-running a benchmark.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _rows() -> list[tuple[str, str, str]]:
    rows = []
    cs = _load("collect_speed")
    if cs:
        s = cs["steps_per_s"]
        rows.append(("Memory Maze stepping (`collect_speed`)",
                     f"stock {s['stock']:.0f} steps/s; ours {s['fast']:.0f} (1 process, "
                     f"{cs['speedup_vs_stock']['fast']:.1f}x), {s.get('fast_x2', float('nan')):.0f} (2 processes)",
                     "goal >= 3x stock: met" if cs.get("goal_single_process_3x") else "goal >= 3x stock: missed"))
    ssd = _load("ssd_speed")
    if ssd:
        at = [r for r in ssd if r["T"] == 4096]
        txt = ", ".join(f"batch {r['batch']}: {r['speedup']:.0f}x (max err {r['max_abs_err_y']:.1e})" for r in at)
        ok = all(r["speedup"] >= 20 for r in at)
        rows.append(("SSD chunked vs sequential, T=4096 (`ssd_speed`)", txt,
                     "goal >= 20x: met" if ok else "goal >= 20x: met at batch 1 only"))
    lat = _load("latency")
    if lat:
        def ms(v, n):
            r = [x for x in lat if x["variant"] == v and x["context_frames"] == n]
            return f"{r[0]['ms_per_frame']:.1f} ms / {r[0]['peak_mb']:.1f} MB" if r else "n/a"
        hy = {x["context_frames"]: x["ms_per_frame"] for x in lat if x["variant"] == "hybrid"}
        flat = max(hy) in hy and abs(hy[max(hy)] / hy[min(hy)] - 1) <= 0.10
        rows.append(("Per-frame generation vs context (`latency`)",
                     f"hybrid {ms('hybrid', 50)} at 50 frames, {ms('hybrid', 3200)} at 3200; full attention "
                     f"{ms('causal_full', 50)} at 50, {ms('causal_full', 800)} at 800",
                     "hybrid flat within 10%: " + ("met" if flat else "missed")))
    tc = _load("train_cost")
    if tc:
        def it(v, n):
            r = [x for x in tc if x["variant"] == v and x["frames"] == n and x["batch"] == 1]
            return f"{r[0]['ms_per_iter']:.0f}" if r else "n/a"
        rows.append(("Training iteration vs length, batch 1 (`train_cost`)",
                     f"hybrid {it('hybrid', 64)} -> {it('hybrid', 512)} ms (64 -> 512 frames); full attention "
                     f"{it('causal_full', 64)} -> {it('causal_full', 512)} ms", "hybrid linear, attention quadratic"))
    ae = _load("autoencoder_cpu")
    if ae:
        h = ae["held_out"]
        rows.append(("Autoencoder, cpu preset, held-out (`train_autoencoder`)",
                     f"PSNR {h['psnr']:.1f} dB, SSIM {h['ssim']:.3f} ({h['frames']} frames, "
                     f"{ae.get('train_time_s', '?')} s training)", "goal >= 28 dB: " +
                     ("met" if h["psnr"] >= 28 else "missed")))
    wm = _load("world_model_cpu")
    if wm:
        rows.append(("World model, cpu preset, held-out open loop (`worldmodel.train`)",
                     f"PSNR dream {wm['psnr_dream_mean']:.1f} dB vs copy-last-frame {wm['psnr_copy_last_mean']:.1f} dB "
                     f"(autoencoder ceiling {wm['psnr_autoencoder_mean']:.1f}); SSIM {wm['ssim_dream_mean']:.3f} vs "
                     f"{wm['ssim_copy_last_mean']:.3f}; {wm['horizon']} frames after {wm['context_frames']} of "
                     f"context; reward events P/R held-out {_fmt(wm.get('reward_precision'))}/"
                     f"{_fmt(wm.get('reward_recall'))} ({_events(wm, 'reward')} events), training episodes "
                     f"{_fmt(wm.get('reward_train_precision'))}/{_fmt(wm.get('reward_train_recall'))} "
                     f"({_events(wm, 'reward_train')} events)" + _extra_reward(wm),
                     "above copy-last: " + ("yes" if wm["psnr_dream_mean"] > wm["psnr_copy_last_mean"] else "no")))
    fid = _load("dream_fidelity")
    if fid:
        m, q1, q4 = fid["mean"], fid["mean_first_quarter"], fid["mean_last_quarter"]
        rows.append(("Dream vs real env, open loop on unseen mazes (`dream_fidelity`)",
                     f"{fid['horizon']} frames after {fid['context_frames']} of context, {fid['windows']} windows: "
                     f"PSNR {m['psnr_dream']:.1f} dB vs copy-last {m['psnr_copy_last']:.1f} (first quarter "
                     f"{q1['psnr_dream']:.1f} vs {q1['psnr_copy_last']:.1f}, last quarter {q4['psnr_dream']:.1f} vs "
                     f"{q4['psnr_copy_last']:.1f}); SSIM {m['ssim_dream']:.3f} vs {m['ssim_copy_last']:.3f}",
                     "reported (no goal)"))
    ds = _load("dream_speed")
    if ds:
        real = ds["real_env"]["steps_per_s"]
        parts = [f"batch {b}: {ds['dream']['fp32'][b]['frames_per_s']:.0f}" for b in ("1", "16", "64")
                 if b in ds["dream"]["fp32"]]
        b64 = ds["dream"]["fp32"].get("64", {}).get("frames_per_s", 0)
        bf = ds["dream"].get("bf16", {}).get("64", {}).get("frames_per_s")
        rows.append(("Dream throughput, cpu preset (`dream_speed`)",
                     f"imagined frames/s {', '.join(parts)} (bf16 batch 64: {bf:.0f}) vs real env {real:.0f} steps/s"
                     if bf else f"imagined frames/s {', '.join(parts)} vs real env {real:.0f} steps/s",
                     f"batch 64 >= real env: {'met' if b64 >= real else f'missed in fp32 ({b64 / real:.2f}x)'}"
                     + (f", bf16 {bf / real:.2f}x" if bf else "")))
    return rows


def _extra_reward(wm: dict) -> str:
    x = wm.get("reward_extra")
    if not x:
        return ""
    return (f", {x['episodes']} more unseen episodes {_fmt(x.get('reward_precision'))}/"
            f"{_fmt(x.get('reward_recall'))} ({_events(x, 'reward')} events)")


def _events(d: dict, prefix: str) -> int:
    return int(d.get(f"{prefix}_true_positives", 0) + d.get(f"{prefix}_false_negatives", 0))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def table() -> str:
    lines = ["| benchmark | result | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python -m benchmarks.summary", description=__doc__.splitlines()[0]).parse_args(argv)
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
