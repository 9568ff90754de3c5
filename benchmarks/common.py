"""What every benchmark shares: where results go, the machine they came from, timing rounds, figures, writing.

- :data:`RESULTS_DIR` is ``benchmarks/results/``, the folder of the published results that
  ``python -m benchmarks.summary`` reads.
- :func:`benchmark_parser` gives a benchmark its command line with ``--quick`` and ``--out``; :class:`Sizes`
  holds its size settings for a full run and for ``--quick``; :func:`output_dir` picks the folder: ``--out``
  when given, else a new temporary folder for ``--quick`` (a smoke run never replaces a published result),
  else :data:`RESULTS_DIR`.
- :func:`machine_info` records where the numbers come from (CPU, torch and its threads, device, git commit).
- :func:`timed_calls` / :func:`median_of_rounds` time a call after warm-up calls; :func:`interleaved_rounds`
  runs several variants round after round, so load drifts on a shared machine hit them alike.
- :func:`figure` makes a matplotlib figure in the benchmarks' one style (Agg, no display needed);
  :func:`write_results` writes ``NAME.json`` and ``NAME.png`` atomically.
- The worlds a result can be about and the names of results per world live in ``envs.worlds`` (the data layer,
  so planners and agents name their results as the benchmarks do).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from envs.fileio import atomic_write_json
from worldmodel.utils import git_commit, save_figure

__all__ = [
    "RESULTS_DIR",
    "STYLE",
    "Sizes",
    "benchmark_parser",
    "figure",
    "interleaved_rounds",
    "machine_info",
    "median_of_rounds",
    "output_dir",
    "sync",
    "timed_calls",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""The published results (committed, read by ``benchmarks.summary`` to build the README table)."""
REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout the benchmarks run from (its git commit goes into :func:`machine_info`)."""
STYLE = {
    "axes.grid": True,
    "axes.grid.which": "both",  # log axes get minor grid lines too
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
}
"""The matplotlib settings every benchmark figure is drawn with (on top of matplotlib's defaults)."""
FIGURE_DPI = 110
"""PNG resolution of every benchmark figure."""

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

# The plotting setup, once for every benchmark: files only (no display needed), one style.
matplotlib.use("Agg")
matplotlib.rcParams.update(STYLE)


# ------------------------------------------------------------------------------------------- output folder


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and appends ``(default: X)`` to options with a real default (not
    None or False: their help says what an unset option means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if action.option_strings and not unset and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


@dataclass(frozen=True)
class Sizes:
    """A benchmark's size settings: their values in a full run (the published results) and with ``--quick``.

    Each setting is a command-line option (``--drift-steps`` for the key ``drift_steps``) that stays None unless
    given; :meth:`fill` then sets it to its full-run or its quick value."""

    full: Mapping[str, Any]
    """Every setting's value in a full run."""
    quick: Mapping[str, Any]
    """The values a ``--quick`` smoke run uses instead (settings not named here keep their full-run value)."""

    def add(self, parser: argparse.ArgumentParser, key: str, text: str, **kwargs: Any) -> None:
        """Add the option of setting ``key`` to ``parser``: help ``text`` followed by both defaults; ``kwargs`` as
        for ``add_argument`` (type, choices, nargs)."""
        both = f"default: {self.full[key]}; --quick: {self.quick.get(key, self.full[key])}"
        parser.add_argument("--" + key.replace("_", "-"), default=None, help=f"{text} ({both})", **kwargs)

    def fill(self, args: argparse.Namespace) -> argparse.Namespace:
        """Give every setting left unset on the command line its full-run value, or its quick value with
        ``--quick``; returns ``args``."""
        for key, value in self.full.items():
            if getattr(args, key) is None:
                setattr(args, key, self.quick.get(key, value) if args.quick else value)
        return args

    def describe_quick(self) -> str:
        """The quick values in words, for ``--help``."""
        return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in self.quick.items())


def benchmark_parser(name: str, doc: str, sizes: Sizes) -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.NAME``: ``doc`` (the module docstring) as its description,
    ``--quick`` (a smoke run with the quick ``sizes``) and ``--out`` (see output_dir). The benchmark adds its
    size options with ``sizes.add`` and parses with ``sizes.fill(parser.parse_args(argv))``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}", description=doc, formatter_class=_HelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run in seconds: {sizes.describe_quick()}")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for {name}.json and {name}.png (default: {RESULTS_DIR.relative_to(REPO_ROOT)}; "
        "with --quick a new temporary folder, so a smoke run never replaces a published result)",
    )
    return parser


def output_dir(out: Path | None, quick: bool, name: str) -> Path:
    """The folder a run writes to: ``out`` when given, a new temporary folder for a quick run, else RESULTS_DIR."""
    if out is not None:
        if out.suffix == ".json":
            raise ValueError(f"--out {out}: give a folder (the run writes {name}.json and {name}.png into it)")
        return out
    if quick:
        return Path(tempfile.mkdtemp(prefix=f"{name}_quick_"))
    return RESULTS_DIR


def write_results(name: str, data: Any, fig: Figure | None = None, out: Path = RESULTS_DIR) -> Path:
    """Write ``data`` to ``out/NAME.json`` and ``fig`` (if any) to ``out/NAME.png``, each atomically; print and
    return the JSON path. ``out`` is created when missing."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    atomic_write_json(path, data)
    written = [path]
    if fig is not None:
        written.append(save_figure(fig, path.with_suffix(".png"), dpi=FIGURE_DPI))
    print("wrote " + " and ".join(str(p) for p in written))
    return path


# -------------------------------------------------------------------------------------------- the machine


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str | None = None) -> dict:
    """Where the numbers come from: CPUs, platform, python, torch and its intra-op threads, the CUDA device,
    the device measured on (when given), the git commit and the load average at the time of the call."""
    commit, dirty = git_commit()
    info = {
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "git_commit": commit,
        "git_dirty": dirty,
        "load_average": list(os.getloadavg()),
    }
    if device is not None:
        info["device"] = str(device)
    return info


# ----------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_calls(
    fn: Callable[[], T], rounds: int, warmup: int = 0, device: torch.device | None = None
) -> tuple[list[float], T | None]:
    """Call ``fn()`` ``warmup`` times untimed, then ``rounds`` times timed; returns (wall seconds of each timed
    call, what the last call returned). With a CUDA ``device`` each timed call is synchronised at both ends."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"timed_calls needs rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(rounds):
        if device is not None:
            sync(device)
        t0 = time.perf_counter()
        out = fn()
        if device is not None:
            sync(device)
        times.append(time.perf_counter() - t0)
    return times, out


def median_of_rounds(fn: Callable[[], Any], rounds: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median wall seconds of ``rounds`` timed calls of ``fn()`` after ``warmup`` untimed ones (see timed_calls)."""
    return statistics.median(timed_calls(fn, rounds, warmup, device)[0])


def interleaved_rounds(
    variants: Mapping[K, Callable[[int], T]], rounds: int, progress: str | None = None
) -> dict[K, list[T]]:
    """Run every variant once per round, round after round: ``variants[key](round_index)``; returns each
    variant's results in round order. Odd rounds run the variants in reverse order, so no variant always runs
    right after the same one. Interleaving puts the load drifts of a shared machine on every variant alike,
    where timing one variant's rounds after another's would not. ``progress``: a progress bar's label."""
    if rounds < 1:
        raise ValueError(f"interleaved_rounds needs rounds >= 1, got {rounds}")
    results: dict[K, list[T]] = {key: [] for key in variants}
    for r in tqdm(range(rounds), desc=progress, unit="round", disable=progress is None):
        for key in list(variants)[::-1] if r % 2 else list(variants):
            results[key].append(variants[key](r))
    return results


# ---------------------------------------------------------------------------------------------- figures


def figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8)) -> tuple[Figure, Any]:
    """A figure in the benchmarks' style (:data:`STYLE`, set when this module is imported) and its axes (one
    Axes, or an array of them for a grid). A bare ``Figure``, outside pyplot's window manager: nothing is shown
    and nothing needs closing."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)
