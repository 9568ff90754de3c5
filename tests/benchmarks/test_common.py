"""The shared benchmark plumbing: output folders, size defaults, timing rounds, machine info, atomic results."""

import json
import re
import time

import pytest

from benchmarks.common import (
    RESULTS_DIR,
    Sizes,
    benchmark_parser,
    figure,
    interleaved_rounds,
    machine_info,
    median_of_rounds,
    output_dir,
    timed_calls,
    write_results,
)


def test_output_dir_never_sends_a_quick_run_to_the_published_results(tmp_path):
    """--out wins; --quick without --out gets a new empty temporary folder; a full run writes the published ones."""
    assert output_dir(tmp_path / "x", quick=True, name="b") == tmp_path / "x"
    a, b = output_dir(None, quick=True, name="b"), output_dir(None, quick=True, name="b")
    assert a != b and RESULTS_DIR not in (a, b) and a.is_dir() and not any(a.iterdir())
    assert output_dir(None, quick=False, name="b") == RESULTS_DIR
    with pytest.raises(ValueError, match=r"--out .*b\.json: give a folder"):
        output_dir(tmp_path / "b.json", quick=False, name="b")


def test_sizes_take_the_command_line_then_quick_then_full():
    """Unset settings get the --quick value with --quick (the full one where quick has none); given ones stay."""
    sizes = Sizes(full={"steps": 200, "drift_steps": 3}, quick={"steps": 20})
    p = benchmark_parser("b", "doc", sizes)
    sizes.add(p, "steps", "timed steps", type=int)
    sizes.add(p, "drift_steps", "steps compared", type=int)
    args = sizes.fill(p.parse_args(["--quick"]))
    assert (args.steps, args.drift_steps) == (20, 3)
    args = sizes.fill(p.parse_args([]))
    assert (args.steps, args.drift_steps) == (200, 3)
    args = sizes.fill(p.parse_args(["--quick", "--steps", "7", "--drift-steps", "0"]))
    assert (args.steps, args.drift_steps) == (7, 0)


def test_benchmark_parser_help_shows_real_defaults_only(capsys):
    """--help names the defaults that exist and never prints '(default: None)' or '(default: False)'."""
    sizes = Sizes(full={"steps": 200}, quick={"steps": 20})
    p = benchmark_parser("b", "The b benchmark.\n\n    python -m benchmarks.b", sizes)
    sizes.add(p, "steps", "timed steps", type=int)
    p.add_argument("--seed", type=int, default=0, help="seed")
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "seed (default: 0)" in text and "smoke run in seconds: steps 20" in text
    assert "timed steps (default: 200; --quick: 20)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "    python -m benchmarks.b" in text  # the docstring's layout is kept


def test_timed_calls_warms_up_then_times_each_call():
    """warmup untimed calls, then one wall time per timed call, and the last call's result."""
    calls = []
    times, last = timed_calls(lambda: calls.append(len(calls)) or len(calls), rounds=3, warmup=2)
    assert len(calls) == 5 and last == 5 and len(times) == 3 and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="rounds >= 1"):
        timed_calls(lambda: None, rounds=0)


def test_median_of_rounds_is_the_median_of_the_timed_calls():
    """The median of the timed calls' wall times, after the warm-up calls (which may be slow: they are not timed)."""
    delays = iter([0.05, 0.0, 0.02, 0.0])  # warm-up, then three timed calls: 0, 20 ms, 0
    assert median_of_rounds(lambda: time.sleep(next(delays)), rounds=3, warmup=1) < 0.01


def test_interleaved_rounds_alternate_the_order():
    """Each round runs every variant once; odd rounds in reverse order; results come back in round order."""
    order = []
    out = interleaved_rounds({k: (lambda r, k=k: order.append(k) or (k, r)) for k in "abc"}, rounds=3)
    assert order == list("abccbaabc")
    assert out == {k: [(k, 0), (k, 1), (k, 2)] for k in "abc"}


def test_write_results_writes_json_and_png_atomically(tmp_path):
    """NAME.json holds the data, NAME.png a PNG; the folder is created and no temp file is left behind."""
    fig, ax = figure()
    ax.plot([1, 2], [3, 4])
    out = tmp_path / "new" / "folder"
    path = write_results("bench", {"x": 1.5, "nested": [1, 2]}, fig, out)
    assert path == out / "bench.json" and json.loads(path.read_text()) == {"x": 1.5, "nested": [1, 2]}
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.png"]


def test_machine_info_names_the_machine_and_the_commit():
    """CPU count, torch and its threads, the device when given, and the git commit of this checkout."""
    info = machine_info("cpu")
    assert info["cpus"] >= 1 and info["threads"] >= 1 and info["torch"] and info["device"] == "cpu"
    assert re.fullmatch(r"[0-9a-f]{40}", info["git_commit"]) and isinstance(info["git_dirty"], bool)
    assert len(info["load_average"]) == 3
