"""Every benchmark's --quick mode runs in a subprocess, writes to --out only, and its JSON holds sensible numbers."""

import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TIMEOUT_S = 300  # a quick run takes seconds; this only stops a hung one
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# every benchmark with a --quick mode, the longest runs first (they start first)
BENCHMARKS = [
    "collect_speed",
    "dream_speed",
    "dream_fidelity",
    "latency",
    "train_cost",
    "world_model_report",
    "ssd_speed",
    "action_following",
]
PARALLEL_RUNS = 2  # quick runs at once: each is one busy process (two cores on our machines)


def positive(x) -> bool:
    """A finite number above zero (the JSON writer stores non-finite floats as strings)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _run_quick(name: str, out: Path, extra: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m benchmarks.NAME --quick --out OUT EXTRA...` from the repo root: (the finished process, seconds)."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def quick(tmp_path_factory, real_episodes, tiny_checkpoint):
    """quick(name): the parsed JSON of `python -m benchmarks.NAME --quick --out DIR ...`, after checking the run
    succeeded, wrote a PNG beside it and left benchmarks/results/ alone. Every benchmark runs once per module,
    PARALLEL_RUNS at a time, all into one folder (quick.out); quick.seconds holds each run's wall time."""
    out = tmp_path_factory.mktemp("quick")
    extra = {
        # the shared tiny model and the 3 real episodes it was trained on (needs 4 context frames: QUICK's 6 is more)
        "dream_fidelity": ["--checkpoint", str(tiny_checkpoint), "--episodes", str(real_episodes)],
        "world_model_report": ["--run-dir", str(tiny_checkpoint.parent), "--reward-episodes", str(real_episodes)],
        "action_following": ["--checkpoint", str(tiny_checkpoint), "--episodes", str(real_episodes)],
    }
    stems = {"world_model_report": "world_model_cpu"}  # the report's default result name (what summary reads)
    published = {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
    seconds: dict[str, float] = {}
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        runs = {name: pool.submit(_run_quick, name, out, extra.get(name, [])) for name in BENCHMARKS}

        def result(name: str) -> dict:
            proc, seconds[name] = runs[name].result()
            assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stderr[-3000:]}"
            stem = stems.get(name, name)
            png = out / f"{stem}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC, f"{png} is not a PNG"
            now = {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()}
            assert now == published, f"a quick run with --out touched benchmarks/results/ (after {name})"
            return json.loads((out / f"{stem}.json").read_text())

        result.out, result.seconds = out, seconds
        yield result
    print("\nquick run seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


def test_collect_speed_quick(quick):
    """Every stepping variant is timed, the sped-up envs render the very frames of stock, and fast costs less CPU."""
    r = quick("collect_speed")
    assert r["benchmark"] == "collect_speed" and r["steps_per_measurement"] == 20 and r["rounds"] == 1
    assert set(r["steps_per_s"]) == {"stock", "fast_activation", "fast", "fast_x1"}
    assert all(positive(v) for v in r["steps_per_s"].values())
    assert all(len(v) == 1 and positive(v[0]) for v in r["steps_per_s_rounds"].values())
    assert r["frames_identical_to_stock"] is True
    s = r["steps_per_s"]
    assert r["speedup_vs_stock"]["fast"] == pytest.approx(s["fast"] / s["stock"])
    assert r["parallel"]["workers"] == 1 and r["goal_scaling"] is None  # one worker: scaling not judged
    assert 0 < r["parallel"]["cpu_share"] <= 1.5
    # CPU time per step does not depend on machine load: the speed-ups (about 3x) must show in it
    assert r["cpu_speedup_vs_stock"]["fast"] > 1.5, r["steps_per_cpu_s"]
    assert r["machine"]["cpus"] >= 1 and "git_commit" in r["machine"] and "load_average_before" in r["machine"]


def test_ssd_speed_quick(quick):
    """Both scans are timed at the quick lengths and agree to float32 precision."""
    records = quick("ssd_speed")
    assert {(r["batch"], r["T"]) for r in records} == {(1, 64), (1, 256)}
    for r in records:
        assert positive(r["chunked_ms"]) and positive(r["sequential_ms"])
        assert r["speedup"] == pytest.approx(r["sequential_ms"] / r["chunked_ms"])
        assert r["max_abs_err_y"] <= 1e-4 * max(1.0, r["max_abs_y"]), r
        assert r["max_abs_err_state"] <= 1e-4 * max(1.0, r["max_abs_y"]), r
        assert r["machine"]["torch"]


def test_latency_quick(quick):
    """Every variant is timed at both contexts; the hybrid's state is constant, full attention's KV cache grows."""
    records = quick("latency")
    by = {(r["variant"], r["context_frames"]): r for r in records}
    assert set(by) == {(v, c) for v in ("hybrid", "causal_full", "causal_window") for c in (8, 32)}
    for r in records:
        assert positive(r["ms_per_frame"]) and positive(r["state_mb"]) and r["peak_mb"] >= r["state_mb"]
        assert r["timed_steps"] == 3 and r["preset"] == "tiny" and r["meta"]["quick"] is True
    assert by[("hybrid", 8)]["state_mb"] == by[("hybrid", 32)]["state_mb"]
    assert by[("causal_full", 32)]["state_mb"] > by[("causal_full", 8)]["state_mb"]
    assert records[0]["meta"]["skipped"] == []


def test_train_cost_quick(quick):
    """Every variant is timed at each quick length plus its reference point, and the variants are parameter-matched."""
    records = quick("train_cost")
    variants = ("hybrid", "causal_full", "causal_window", "mamba2")
    assert {(r["variant"], r["batch"], r["frames"], r["reference_point"]) for r in records} == {
        (v, b, f, ref) for v in variants for b, f, ref in ((1, 8, False), (1, 16, False), (2, 8, True))
    }
    for r in records:
        assert positive(r["ms_per_iter"]) and positive(r["tokens_per_s"]) and r["ms_per_iter_min"] <= r["ms_per_iter"]
    params = {r["variant"]: r["params"] for r in records}
    assert all(abs(p / params["hybrid"] - 1) <= 0.10 for p in params.values()), params  # backbone_config's 10%


def test_dream_speed_quick(quick):
    """Each precision and batch is timed, its per-frame split adds up, bf16 frames stay close to fp32."""
    r = quick("dream_speed")
    real = r["real_env"]["steps_per_s"]
    assert positive(real) and positive(r["real_env"]["stock_steps_per_s"]) and r["context_frames"] == 4
    assert r["model"]["preset"] == "tiny" and r["model"]["parameters"] > 0
    for prec in ("fp32", "bf16"):
        assert set(r["dream"][prec]) == {"1", "4"}
        for d in r["dream"][prec].values():
            assert positive(d["frames_per_s"]) and d["x_real_env"] == pytest.approx(d["frames_per_s"] / real)
            ms = d["ms_per_frame"]
            parts = ("denoising_passes", "commit_pass", "decode_noise_reward", "env_overhead")
            assert all(positive(ms[p]) for p in parts), ms
            assert sum(ms[p] for p in parts) == pytest.approx(ms["total"])
            assert d["refill"]["slots"] == 1 and positive(d["refill"]["seconds"])
        assert r["goal"][prec]["batch"] == 4
    drift = r["bf16_vs_fp32"]
    assert len(drift["psnr_bf16_vs_fp32_per_step"]) == drift["steps"] == 4
    assert 20 < drift["psnr_mean"] <= 100  # close frames; identical ones count as the 100 dB cap
    flops = r["model"]["gflop_per_frame"]
    assert flops["total"] == pytest.approx(flops["backbone_pass"] * flops["backbone_passes"] + flops["decode"])
    # channels-last decode is the same convolution summed in another order: at most one level of rounding
    assert r["decoder_layout"]["max_abs_diff_levels_fp32"] <= 1


def test_dream_fidelity_quick(quick):
    """The open-loop comparison scores each imagined step of the quick windows with finite PSNR and valid SSIM."""
    r = quick("dream_fidelity")
    assert r["benchmark"] == "dream_fidelity" and r["quick"] is True
    assert (r["context_frames"], r["horizon"], r["windows"]) == (6, 6, 2)
    for key in ("psnr_dream", "psnr_copy_last", "psnr_autoencoder"):
        assert len(r["per_step"][key]) == 6 and all(positive(v) and v <= 100 for v in r["per_step"][key])
        assert r["mean"][key] == pytest.approx(sum(r["per_step"][key]) / 6)
    assert all(-1 <= v <= 1 for v in r["per_step"]["ssim_dream"])
    assert r["rewards"]["precision"] is None or 0 <= r["rewards"]["precision"] <= 1


def test_world_model_report_quick(quick):
    """The report publishes the run's held-out evaluation and the reward head's P/R on the quick reward episodes."""
    r = quick("world_model_report")
    assert r["benchmark"] == "world_model_cpu" and r["config"]
    assert positive(r["psnr_dream_mean"]) and positive(r["psnr_copy_last_mean"])
    extra = r["reward_extra"]
    assert extra["episodes"] == 2
    for key in ("reward_precision", "reward_recall"):
        assert extra[key] is None or 0 <= extra[key] <= 1


def test_summary_reads_every_quick_result(quick):
    """summary builds a row from every benchmark's JSON (quick sizes included) without failing."""
    for name in BENCHMARKS:
        quick(name)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.summary", "--results", str(quick.out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "`" in line]
    tags = [
        "collect_speed",
        "ssd_speed",
        "latency",
        "train_cost",
        "worldmodel.train",
        "dream_fidelity",
        "dream_speed",
        "action_following",
    ]
    assert len(rows) == len(tags) and all(f"`{t}`" in row for t, row in zip(tags, rows)), proc.stdout
    assert "nan" not in proc.stdout.lower()


def test_summary_reads_every_published_result():
    """summary makes one row of each published result file it knows (the README table)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.summary"], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    known = [
        "collect_speed",
        "ssd_speed",
        "latency",
        "train_cost",
        "autoencoder_cpu",
        "world_model_cpu",
        "dream_fidelity",
        "dream_speed",
        "action_following",
        "action_following_long",
        "train_levers",
        "scaling",
        "planners",
        "agents",
        "recall",
        "dream_fidelity_crafter",
        "recall_crafter",
        "planners_crafter",
        "agents_crafter",
        "train_ddp",
    ]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == sum((RESULTS / f"{n}.json").exists() for n in known), proc.stdout


def test_action_following_quick(quick):
    """Both action measures are reported on the held-out episodes, with the goals judged from them."""
    r = quick("action_following")
    assert r["context_frames"] == 4 and r["horizon"] == 3 and r["episodes"] == 2 and r["guidance"] == 1.0
    for kind in ("turning", "forward"):
        assert r[kind]["windows"] >= 1, r[kind]
        assert r[kind]["psnr_real_minus_swapped"] == pytest.approx(r[kind]["psnr_real"] - r[kind]["psnr_swapped"])
    const = r["constant"]
    assert const["windows"] == 2 and all(positive(const[f"psnr_{p}"]) for p in ("left_vs_right", "seed_vs_seed"))
    assert r["goals"]["left_right_differ_as_much_as_seeds"] == (
        const["psnr_left_vs_right"] <= const["psnr_seed_vs_seed"]
    )
    ref = r["real_env"]  # the same windows replayed in the real maze: reality's action effect, the reference
    for kind in ("turning", "forward"):
        assert ref[kind]["windows"] == r[kind]["windows"] and positive(ref[kind]["psnr_real_vs_swapped"])
    assert ref["constant"]["windows"] == 2 and ref["constant"]["psnr_left_vs_right"] < 100  # turning changes the view
