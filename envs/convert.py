"""Convert Minecraft trajectories (MineRL v0.4 data, TECO's Minecraft data, MineRL Navigate) into the episode store.

    python -m envs.convert --format minerl   data/MineRL/MineRLNavigate-v0   data/episodes/minerl-navigate
    python -m envs.convert --format teco     data/minecraft/train            data/episodes/teco
    python -m envs.convert --format navigate data/minerl_navigate/train      data/episodes/navigate

Every trajectory found under SRC becomes one episode file ``OUT/<its path under SRC, '/' -> '__'>.npz`` with the
store's keys (:mod:`envs.episodes`): ``image`` (T+1, size, size, 3) uint8 resized with
:func:`envs.video.resize_frames`, ``action`` (T+1, 4) one-hot of TECO's compact set
(:data:`envs.minerl.ACTION_NAMES`: forward, left, right, jump; ``action[t]`` led into ``image[t]``,
``action[0]`` = 0), ``reward`` (T+1,) with ``reward[0]`` = 0, and where the source has the raw controls,
``action_box`` (T+1, 4) = [forward, jump, camera pitch, camera yaw] (the layout of :class:`envs.minerl.MineRLEnv`'s
Box actions). Videos are decoded with PyAV (:func:`envs.video.read_video`).

What is read, exactly:

- ``minerl`` (MineRL v0.4 dataset, e.g. ``$MINERL_DATA_ROOT/MineRLNavigate-v0``): every folder under SRC holding
  ``recording.mp4``, ``rendered.npz`` or ``metadata.json`` is a trajectory and must hold all three.
  ``rendered.npz`` (read with ``allow_pickle=False``; other keys are not touched): ``reward`` (N,),
  ``action$forward`` (N,), ``action$jump`` (N,) 0/1 and ``action$camera`` (N, 2) [pitch, yaw] degrees, where step
  i's action was taken in state i and led to state i+1 with reward i. ``metadata.json``: ``true_video_frame_count``,
  which must equal the video's frame count. As MineRL's own loader (``minerl.data.DataPipeline._load_data_pyfunc``)
  does, the first ``true_video_frame_count - (N + 1)`` video frames are skipped (Minecraft still loading); the rest
  are the N+1 states. (That loader also overwrites the last frame with the one before it, a guard against an
  unreadable last frame; here the decoded last frame is kept.) Compact actions by
  :func:`envs.minerl.compact_actions` (``--turn-threshold``, ``--default-action``).
- ``teco`` (TECO's Minecraft data, written by wilson1yan/collect-minecraft): each ``*.npz`` under SRC holding
  ``video`` (T+1, H, W, 3) uint8 and ``actions`` (T+1,) int; or each ``*.mp4`` under SRC with its actions beside
  it in ``<same name>.npz`` (key ``actions``; what TECO's loader reads) or ``<same name>.npy`` (what the collector
  writes). ``actions[0]`` = 0 (no action led into the first frame), then 1 forward, 2 left, 3 right (the
  collector's ids plus one; its forward also jumps, and so do all three in its later version) -> compact
  forward, left, right. No rewards (zeros), no raw controls (no ``action_box``).
- ``navigate`` (MineRL Navigate for video prediction, CW-VAE's ``minerl_navigate``: 500-frame 64x64 MP4s): each
  ``*.mp4`` under SRC, with the ``metadata.json`` of its folder (one per split folder) mapping the video's file
  name to per-frame action lists ``forward``, ``jump``, ``camera_x``, ``camera_y`` (also ``attack``, ``back``,
  ``left``, ``place``, ``right``, ``sneak``, ``sprint``, unused). One action per frame, MineRL's order: action t
  was taken at frame t, so it led into frame t+1; the last one leads past the video and is dropped. Which camera
  list is the yaw is not documented by the dataset: ``--navigate-yaw-key`` (default ``camera_y``, i.e. the lists
  are MineRL's camera [pitch, yaw] columns in order). No rewards (zeros).

Resuming: the same command again skips every episode file that exists and passes its header check; temp files of
a killed run are removed. One conversion per OUT at a time (``OUT/.lock``). ``OUT/manifest.json`` records the
settings; a different format, SRC or setting into the same OUT is refused. Writes are atomic.

Bad inputs (missing files or keys, unreadable video, frame count vs actions, values out of range) raise an error
naming the file and what was expected; ``--skip-bad`` reports each, goes on, lists them at the end and records
them in the manifest.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro
from tqdm import tqdm

from envs.episodes import EpisodeError, episode_length, save_episode
from envs.fileio import RunLock, RunLockedError, atomic_write_json, clean_stale_temps
from envs.minerl import ACTION_NAMES, box_actions, compact_actions
from envs.video import read_video, resize_frames

__all__ = [
    "FORMATS",
    "ConvertArgs",
    "ConvertConfig",
    "SourceError",
    "convert",
    "find_sources",
    "main",
    "read_minerl",
    "read_navigate",
    "read_teco",
]

FORMATS = ("minerl", "teco", "navigate")
MANIFEST = "manifest.json"
STORE_FORMAT = "longdream-episodes/1 (image, action one-hot, reward; action[t] led into image[t], action[0]=0)"
MINERL_FILES = ("recording.mp4", "rendered.npz", "metadata.json")
MINERL_KEYS = {"reward": (), "action$forward": (), "action$jump": (), "action$camera": (2,)}
MINERL_EXPECTED = "MineRL v0.4's reward (N,), action$forward (N,), action$jump (N,), action$camera (N, 2) numbers"
TECO_EXPECTED = "TECO's 'video' (T+1, H, W, 3) uint8 and 'actions' (T+1,) integers"
NAVIGATE_KEYS = ("forward", "jump", "camera_x", "camera_y")
TECO_IDS = {1: "forward", 2: "left", 3: "right"}  # TECO's stored ids -> compact action names
# the settings that shape a format's episodes: a resume must use the same
_SETTINGS = {
    "minerl": ("size", "turn_threshold", "default_action"),
    "teco": ("size",),
    "navigate": ("size", "turn_threshold", "default_action", "navigate_yaw_key"),
}
EXIT_BAD_INPUT = 1  # a bad source trajectory (without --skip-bad)
EXIT_USAGE = 2  # a refused command (bad option, SRC/OUT unusable, OUT in use), like argparse's
_EXIT_SIGINT = 130


class SourceError(EpisodeError):
    """A bad source trajectory. ``str(e)`` is ``"<file>: <what is wrong and what was expected>"``."""


@dataclass(frozen=True)
class ConvertConfig:
    """One conversion: which format, from where, into which folder, with which frame size and action rule."""

    format: Literal["minerl", "teco", "navigate"]
    """minerl: MineRL v0.4 trajectory folders (recording.mp4, rendered.npz, metadata.json);
    teco: TECO's Minecraft data (.npz with video + actions, or .mp4 with actions in .npz/.npy beside it);
    navigate: MineRL Navigate for video prediction (.mp4 files + one metadata.json of action lists per folder)."""
    src: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SRC")]
    """Folder searched (recursively) for trajectories of --format."""
    out: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Episode folder to write (created if missing; must not be inside SRC)."""
    size: int = 64
    """Frames are resized to size x size."""
    turn_threshold: float = 5.0
    """minerl/navigate: a camera yaw of at least this many degrees in a step is a turn (left if negative)."""
    default_action: Literal["forward", "left", "right", "jump"] = "forward"
    """minerl/navigate: the compact action of a step that neither turns, jumps nor walks forward."""
    navigate_yaw_key: Literal["camera_x", "camera_y"] = "camera_y"
    """navigate: which of the two camera lists is the yaw (the other is the pitch)."""
    skip_bad: bool = False
    """Report bad trajectories and go on (listed at the end and in the manifest) instead of stopping."""


@dataclass(frozen=True)
class ConvertArgs(ConvertConfig):
    """The command line: a conversion plus how it reports progress."""

    quiet: bool = False
    """No progress bar."""

    def config(self) -> ConvertConfig:
        """The conversion settings without the display options."""
        return ConvertConfig(**{f.name: getattr(self, f.name) for f in fields(ConvertConfig)})


# --- reading helpers --------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(path, f"not readable JSON: {e}") from e
    if not isinstance(obj, dict):
        raise SourceError(path, f"holds a JSON {type(obj).__name__}; expected an object")
    return obj


@functools.lru_cache(maxsize=2)
def _read_json_cached(path: str, mtime_ns: int, size: int) -> dict:
    """One parse per metadata.json (Navigate's holds every video of its folder); keyed by the file's state."""
    return _read_json(Path(path))


def _read_arrays(path: Path, wanted: dict[str, tuple], expected: str, same_length: bool = True) -> dict:
    """The ``wanted`` keys of an ``.npz`` (``allow_pickle=False``; other keys are not read), numeric, with the
    trailing shapes given (None: any size) and, with ``same_length``, one common length. ``expected`` describes
    the format for the error messages."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in wanted if k not in npz.files]
            if missing:
                raise SourceError(path, f"missing key(s) {missing}; found {sorted(npz.files)} (expected {expected})")
            arrays = {k: npz[k] for k in wanted}
    except SourceError:
        raise
    except (OSError, ValueError, EOFError) as e:  # not a zip, truncated, or an object array (pickle refused)
        raise SourceError(path, f"not a readable .npz (corrupt, truncated or holding pickled objects?): {e}") from e
    for key, trailing in wanted.items():
        arr = arrays[key]
        numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        shaped = arr.ndim == 1 + len(trailing) and all(w in (None, s) for s, w in zip(arr.shape[1:], trailing))
        if not (numeric and shaped):
            raise SourceError(path, f"'{key}' is {arr.dtype} {arr.shape}; expected {expected}")
    lengths = {k: len(a) for k, a in arrays.items()}
    if same_length and len(set(lengths.values())) > 1:
        raise SourceError(path, f"the arrays have different lengths {lengths}; expected one entry per step each")
    return arrays


def _check_binary(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise SourceError(path, f"'{name}'[{i}] = {values[i].item()!r}; expected 0 or 1 (a key pressed or not)")
    return values


def _check_finite(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise SourceError(path, f"'{name}' has non-finite values (NaN or inf); expected camera angles in degrees")
    return values


def _episode(frames: np.ndarray, actions: np.ndarray, size: int, reward=None, box=None) -> dict[str, np.ndarray]:
    """Episode arrays from N+1 frames and the N compact actions between them (action[0] = 0, reward[0] = 0)."""
    n = len(actions)
    assert len(frames) == n + 1, (len(frames), n)
    action = np.zeros((n + 1, len(ACTION_NAMES)), np.float32)
    action[np.arange(1, n + 1), actions] = 1.0
    rewards = np.zeros(n + 1, np.float32)
    if reward is not None:
        rewards[1:] = reward
    ep = {"image": resize_frames(frames, size), "action": action, "reward": rewards}
    if box is not None:
        ep["action_box"] = np.concatenate([np.zeros((1, box.shape[1]), np.float32), box])
    return ep


# --- the three formats ------------------------------------------------------------------------------------
def read_minerl(folder, size: int = 64, turn_threshold: float = 5.0, default_action: str = "forward") -> dict:
    """One MineRL v0.4 trajectory folder as episode arrays (see the module docstring for what is read)."""
    folder = Path(folder)
    video_path, npz_path, meta_path = (folder / name for name in MINERL_FILES)
    missing = [p.name for p in (video_path, npz_path, meta_path) if not p.is_file()]
    if missing:
        raise SourceError(
            folder, f"missing {', '.join(missing)}; a MineRL v0.4 trajectory folder holds {', '.join(MINERL_FILES)}"
        )
    count = _read_json(meta_path).get("true_video_frame_count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SourceError(meta_path, f"'true_video_frame_count' is {count!r}; expected the video's frame count (>= 1)")
    arrays = _read_arrays(npz_path, MINERL_KEYS, MINERL_EXPECTED)
    n = len(arrays["reward"])
    skip = count - (n + 1)  # MineRL's loader: the video's leading frames before the first state
    if skip < 0:
        raise SourceError(
            meta_path,
            f"true_video_frame_count {count} is less than the {n + 1} states of rendered.npz ({n} rewards + the "
            f"final state)",
        )
    frames = read_video(video_path)
    if len(frames) != count:
        raise SourceError(video_path, f"has {len(frames)} frames; metadata.json's true_video_frame_count says {count}")
    forward = _check_binary(npz_path, "action$forward", arrays["action$forward"])
    jump = _check_binary(npz_path, "action$jump", arrays["action$jump"])
    camera = _check_finite(npz_path, "action$camera", arrays["action$camera"])  # (N, 2) [pitch, yaw]
    reward = _check_finite(npz_path, "reward", arrays["reward"])
    actions = compact_actions(forward, jump, camera[:, 1], turn_threshold, default_action)
    return _episode(frames[skip:], actions, size, reward=reward, box=box_actions(forward, jump, camera))


def _teco_actions_beside(video_path: Path) -> tuple[Path, np.ndarray]:
    """The actions of a TECO ``.mp4``: ``<name>.npz`` (key ``actions``) or ``<name>.npy`` beside it."""
    npz_path, npy_path = video_path.with_suffix(".npz"), video_path.with_suffix(".npy")
    if npz_path.is_file():
        return npz_path, _read_arrays(npz_path, {"actions": ()}, "TECO's 'actions' (T+1,) integers")["actions"]
    if npy_path.is_file():
        try:
            actions = np.load(npy_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise SourceError(npy_path, f"not a readable .npy of actions: {e}") from e
        return npy_path, actions
    raise SourceError(
        video_path, f"no actions beside the video; expected {npz_path.name} (key 'actions') or {npy_path.name}"
    )


def read_teco(path, size: int = 64) -> dict:
    """One TECO Minecraft trajectory (``.npz`` with video and actions, or ``.mp4`` with actions beside it)."""
    path = Path(path)
    if path.suffix == ".mp4":
        frames = read_video(path)
        actions_path, actions = _teco_actions_beside(path)
    else:
        arrays = _read_arrays(path, {"video": (None, None, 3), "actions": ()}, TECO_EXPECTED, same_length=False)
        frames, actions = arrays["video"], arrays["actions"]
        if frames.dtype != np.uint8:
            raise SourceError(path, f"'video' is {frames.dtype} {frames.shape}; expected {TECO_EXPECTED}")
        actions_path = path
    actions = np.asarray(actions)
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
        raise SourceError(actions_path, f"'actions' is {actions.dtype} {actions.shape}; expected integers (T+1,)")
    if len(actions) != len(frames):
        raise SourceError(
            actions_path,
            f"'actions' has {len(actions)} entries for the {len(frames)} video frames; expected one per frame "
            f"(actions[0] = 0 for the first frame)",
        )
    ok = np.isin(actions, list(TECO_IDS))
    ok[0] = actions[0] == 0
    if not ok.all():
        i = int(np.argmin(ok))
        raise SourceError(
            actions_path,
            f"'actions'[{i}] = {int(actions[i])}; expected TECO's ids: 0 at index 0 (nothing led into the first "
            f"frame), then 1 forward, 2 left, 3 right",
        )
    compact = np.array([ACTION_NAMES.index(TECO_IDS[int(a)]) for a in actions[1:]], np.int64)
    return _episode(frames, compact, size)


def read_navigate(
    path,
    size: int = 64,
    turn_threshold: float = 5.0,
    default_action: str = "forward",
    navigate_yaw_key: str = "camera_y",
) -> dict:
    """One MineRL Navigate video (``.mp4``) with its entry of the folder's ``metadata.json``."""
    path = Path(path)
    meta_path = path.parent / "metadata.json"
    if not meta_path.is_file():
        raise SourceError(
            path, "no metadata.json beside the video (MineRL Navigate keeps one per folder, keyed by video file name)"
        )
    stat = meta_path.stat()
    meta = _read_json_cached(str(meta_path), stat.st_mtime_ns, stat.st_size)
    entry = meta.get(path.name)
    if not isinstance(entry, dict):
        raise SourceError(
            meta_path,
            f"has no object for {path.name!r}; expected one per video, keyed by its file name ({len(meta)} entries)",
        )
    missing = [k for k in NAVIGATE_KEYS if k not in entry]
    if missing:
        raise SourceError(
            meta_path, f"entry {path.name!r} lacks {missing}; expected per-frame lists of {NAVIGATE_KEYS}"
        )
    lists = {}
    for key in NAVIGATE_KEYS:
        try:
            lists[key] = np.asarray(entry[key], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise SourceError(meta_path, f"entry {path.name!r}: '{key}' is not a list of numbers ({e})") from e
        if lists[key].ndim != 1:
            raise SourceError(meta_path, f"entry {path.name!r}: '{key}' has shape {lists[key].shape}; expected a list")
    frames = read_video(path)
    for key, values in lists.items():
        if len(values) != len(frames):
            raise SourceError(
                meta_path,
                f"entry {path.name!r}: '{key}' has {len(values)} actions for the {len(frames)} frames of the video; "
                f"expected one per frame",
            )
    steps = slice(0, len(frames) - 1)  # action t led into frame t+1; the last leads past the video
    pitch_key = "camera_x" if navigate_yaw_key == "camera_y" else "camera_y"
    forward = _check_binary(meta_path, "forward", lists["forward"][steps])
    jump = _check_binary(meta_path, "jump", lists["jump"][steps])
    camera = _check_finite(meta_path, "camera", np.stack([lists[pitch_key], lists[navigate_yaw_key]], -1)[steps])
    actions = compact_actions(forward, jump, camera[:, 1], turn_threshold, default_action)
    return _episode(frames, actions, size, box=box_actions(forward, jump, camera))


READERS = {"minerl": read_minerl, "teco": read_teco, "navigate": read_navigate}


# --- finding the trajectories -----------------------------------------------------------------------------
def _name(path: Path, src: Path) -> str:
    """Output stem of a source: its path under SRC without suffix, '/' -> '__' (SRC itself: SRC's name)."""
    rel = path.relative_to(src)
    parts = rel.with_suffix("").parts if path.is_file() else rel.parts
    return "__".join(parts) or src.resolve().name


def find_sources(fmt: str, src) -> list[tuple[str, Path]]:
    """``(output stem, source path)`` of every trajectory of format ``fmt`` under folder ``src``, sorted by path.

    minerl: folders holding any of recording.mp4 / rendered.npz / metadata.json (the reader requires all three);
    teco: ``*.mp4`` files, and ``*.npz`` files that are not the actions of a video beside them; navigate: ``*.mp4``.
    """
    src = Path(src)
    if fmt == "minerl":
        paths = sorted({p.parent for name in MINERL_FILES for p in src.rglob(name) if p.is_file()})
    elif fmt == "teco":
        videos = sorted(p for p in src.rglob("*.mp4") if p.is_file())
        beside = {v.with_suffix(".npz") for v in videos}
        paths = sorted([*videos, *(p for p in src.rglob("*.npz") if p.is_file() and p not in beside)])
    elif fmt == "navigate":
        paths = sorted(p for p in src.rglob("*.mp4") if p.is_file())
    else:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return [(_name(p, src), p) for p in paths]


# --- the conversion ---------------------------------------------------------------------------------------
def check_config(cfg: ConvertConfig) -> tuple[Path, Path]:
    """Check every setting (ValueError naming the option and value); returns (SRC, OUT). Writes nothing."""
    if cfg.format not in FORMATS:
        raise ValueError(f"--format {cfg.format!r}: expected one of {', '.join(FORMATS)}")
    if isinstance(cfg.size, bool) or not isinstance(cfg.size, int) or cfg.size < 1:
        raise ValueError(f"--size {cfg.size!r}: expected a positive integer (frames become size x size)")
    if not cfg.turn_threshold > 0:
        raise ValueError(f"--turn-threshold {cfg.turn_threshold!r}: expected > 0 degrees")
    if cfg.default_action not in ACTION_NAMES:
        raise ValueError(f"--default-action {cfg.default_action!r}: expected one of {', '.join(ACTION_NAMES)}")
    if cfg.navigate_yaw_key not in ("camera_x", "camera_y"):
        raise ValueError(f"--navigate-yaw-key {cfg.navigate_yaw_key!r}: expected camera_x or camera_y")
    src, out = Path(cfg.src), Path(cfg.out)
    if not src.is_dir():
        raise ValueError(f"SRC {src}: {'is not a folder' if src.exists() else 'does not exist'}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"OUT {out}: is a file, not a folder; choose a folder for the episodes")
    if out.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"OUT {out} is inside SRC {src}; write the episodes elsewhere (they would be read as input)")
    return src, out


def _settings(cfg: ConvertConfig, src: Path) -> dict:
    return {
        "source_format": cfg.format,
        "src": str(src.resolve()),
        **{k: getattr(cfg, k) for k in _SETTINGS[cfg.format]},
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _previous_manifest(out: Path, settings: dict) -> dict | None:
    """OUT's manifest, if any, after checking that it records the same settings (else a ValueError)."""
    path = out / MANIFEST
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable manifest ({e}); move it away or use a new OUT") from e
    diff = [
        f"{k}: folder has {old.get(k)!r}, command has {v!r}" for k, v in settings.items() if old and old.get(k) != v
    ]
    if diff:
        raise ValueError(
            f"{out} holds a different conversion ({'; '.join(diff)}); use a new OUT, or repeat the original command "
            f"to resume"
        )
    return old


def _finished(path: Path) -> bool:
    """An episode file counts as finished when it exists and its header checks out (else it is redone)."""
    if not path.is_file():
        return False
    try:
        episode_length(path)
        return True
    except EpisodeError as e:
        print(f"warning: converting {path.name} again: {e.problem}", file=sys.stderr)
        path.unlink()
        return False


def convert(cfg: ConvertConfig, progress: bool = True) -> dict:
    """Convert every trajectory of ``cfg.src`` into ``cfg.out`` (resuming); returns a summary dict.

    Raises ValueError for a bad setting, SRC or OUT before anything is written, :class:`envs.fileio.RunLockedError`
    when another conversion uses OUT, and :class:`SourceError` (or :class:`envs.video.VideoError`, both
    :class:`envs.episodes.EpisodeError`) for a bad trajectory unless ``cfg.skip_bad``.
    """
    # 1. every check that needs no folder, then the sources, then OUT and its lock and manifest
    src, out = check_config(cfg)
    sources = find_sources(cfg.format, src)
    if not sources:
        raise ValueError(f"SRC {src} holds no {cfg.format} trajectories (see python -m envs.convert --help)")
    names = [name for name, _ in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"SRC {src}: different trajectories would share the output name(s) {dup[:5]}")
    settings = _settings(cfg, src)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out, what="conversion").acquire()
    except OSError as e:
        raise ValueError(f"OUT {out}: cannot write there ({e.strerror or e})") from e
    try:
        old = _previous_manifest(out, settings)
        clean_stale_temps(out)
        manifest = {
            "format": STORE_FORMAT,
            **settings,
            "actions": list(ACTION_NAMES),
            "files": "<path under src, '/' -> '__'>.npz",
            "episodes": len(sources),
            "versions": {"python": sys.version.split()[0], **{d: _version(d) for d in ("longdream", "av", "numpy")}},
            "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
        }
        atomic_write_json(out / MANIFEST, manifest)
        # 2. the missing episodes
        todo = [(name, path) for name, path in sources if not _finished(out / f"{name}.npz")]
        summary = {"out": str(out), "found": len(sources), "skipped": len(sources) - len(todo), "converted": 0}
        bad = _convert_missing(cfg, todo, out, summary, progress)
        summary["bad"] = bad
        atomic_write_json(out / MANIFEST, {**manifest, "bad": bad})
        return summary
    finally:
        lock.release()


def _convert_missing(cfg: ConvertConfig, todo: list, out: Path, summary: dict, progress: bool) -> list[dict]:
    reader = READERS[cfg.format]
    options = {k: getattr(cfg, k) for k in _SETTINGS[cfg.format]}
    bad: list[dict] = []
    with tqdm(
        todo, unit="traj", desc=f"convert {cfg.format}", disable=not (progress and todo), dynamic_ncols=True
    ) as bar:
        for name, path in bar:
            try:
                save_episode(out / f"{name}.npz", reader(path, **options))
            except EpisodeError as e:
                if not cfg.skip_bad:
                    raise
                bad.append({"source": str(path), "problem": str(e)})
                bar.set_postfix_str(f"{len(bad)} bad")
                continue
            summary["converted"] += 1
    return bad


# --- command line -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m envs.convert``: parse the options, convert, print a summary; returns the exit code."""
    args = tyro.cli(
        ConvertArgs,
        args=argv,
        prog="python -m envs.convert",
        description="Convert Minecraft trajectories into the episode store (one .npz per trajectory: image, "
        "action one-hot of forward/left/right/jump, reward). --format minerl: MineRL v0.4 trajectory folders "
        "(recording.mp4, rendered.npz, metadata.json; the leading video frames skipped as MineRL's loader does); "
        "teco: TECO's Minecraft data (.npz with 'video' and 'actions', or .mp4 with 'actions' in a .npz/.npy of "
        "the same name); navigate: MineRL Navigate for video prediction (.mp4 files and their folder's "
        "metadata.json of per-frame action lists). Re-running the same command resumes.",
    )
    try:
        summary = convert(args.config(), progress=not args.quiet)
    except EpisodeError as e:  # before ValueError: a bad trajectory is an EpisodeError, itself a ValueError
        print(f"error: {e}\n(--skip-bad reports bad trajectories and converts the others)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume (finished episodes are kept)", file=sys.stderr)
        return _EXIT_SIGINT
    print(
        f"{summary['out']}: converted {summary['converted']}, skipped {summary['skipped']} already done, "
        f"{len(summary['bad'])} bad (of {summary['found']} found)"
    )
    for item in summary["bad"]:
        print(f"  bad: {item['problem']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
