"""Converters: MineRL v0.4 folders, TECO npz/mp4, MineRL Navigate into episodes; bad inputs; the CLI, resuming."""

import json
import shutil

import numpy as np
import pytest
from minecraft_files import (
    colour_frames,
    navigate_entry,
    nearest_frames,
    write_minerl_folder,
    write_navigate_folder,
    write_teco_mp4,
    write_teco_npz,
)

from envs.convert import ConvertConfig, SourceError, convert, main, read_minerl, read_navigate, read_teco
from envs.episodes import EpisodeStore, load_episode
from envs.video import VideoError, write_video

# six MineRL steps and their compact actions under the default rule (threshold 5 degrees, default forward):
# forward; yaw -10 left; jump; jump+forward -> jump; yaw +7 right; yaw 2 (below threshold), nothing -> forward
FORWARD = [1, 0, 0, 1, 0, 0]
JUMP = [0, 0, 1, 1, 0, 0]
CAMERA = [[1.0, 0.0], [2.0, -10.0], [3.0, 0.0], [4.0, 0.0], [5.0, 7.0], [6.0, 2.0]]  # [pitch, yaw]
REWARD = [0.0, 1.0, 0.0, 2.0, 0.0, 0.5]
COMPACT = [0, 1, 3, 3, 2, 0]


def minerl_folder(tmp_path, name="v3_fake_trajectory-1_100-200", **kwargs):
    return write_minerl_folder(tmp_path / "MineRLNavigate-v0" / name, FORWARD, JUMP, CAMERA, REWARD, **kwargs)


def assert_actions(ep, compact):
    assert ep["action"].shape == (len(compact) + 1, 4) and not ep["action"][0].any()
    assert ep["action"][1:].argmax(1).tolist() == compact and np.all(ep["action"][1:].sum(1) == 1)


# --- MineRL v0.4 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lead", [3, 0])
def test_minerl_skips_the_leading_frames_and_maps_actions(tmp_path, lead):
    """The video's first true_video_frame_count - (len(reward) + 1) frames are skipped; actions, rewards and the
    raw controls line up with the frames they led into."""
    ep = read_minerl(minerl_folder(tmp_path, lead=lead), size=32)
    assert set(ep) == {"image", "action", "reward", "action_box"}
    assert np.array_equal(ep["image"], colour_frames(7, (32, 32), start=lead))  # resized, frames lead..lead+6
    assert_actions(ep, COMPACT)
    assert ep["reward"].tolist() == [0.0, *REWARD] and ep["reward"].dtype == np.float32
    box = np.column_stack([FORWARD, JUMP, np.array(CAMERA)])
    assert np.array_equal(ep["action_box"], np.vstack([np.zeros(4), box]).astype(np.float32))


def test_minerl_rule_options(tmp_path):
    """--turn-threshold and --default-action change the compact actions as documented."""
    folder = minerl_folder(tmp_path)
    assert read_minerl(folder, turn_threshold=8.0)["action"][1:].argmax(1).tolist() == [0, 1, 3, 3, 0, 0]
    assert read_minerl(folder, default_action="jump")["action"][1:].argmax(1).tolist() == [0, 1, 3, 3, 2, 3]


def test_minerl_real_codec_decodes_to_the_right_frames(tmp_path):
    """A yuv420p H.264 recording (what MineRL ships) gives the right frames after the skip, within rounding."""
    ep = read_minerl(minerl_folder(tmp_path, codec="libx264"))
    order, worst = nearest_frames(ep["image"], 10)
    assert order == list(range(3, 10)) and worst <= 8


def _drop(folder, name):
    (folder / name).unlink()


def _npz_without(key):
    def edit(folder):
        with np.load(folder / "rendered.npz", allow_pickle=True) as npz:
            data = {k: npz[k] for k in npz.files if k != key}
        np.savez(folder / "rendered.npz", **data)

    return edit


def _npz_set(key, value):
    def edit(folder):
        with np.load(folder / "rendered.npz", allow_pickle=True) as npz:
            data = {k: npz[k] for k in npz.files}
        data[key] = value
        np.savez(folder / "rendered.npz", **data)

    return edit


def _meta_set(**changes):
    def edit(folder):
        meta = json.loads((folder / "metadata.json").read_text())
        meta.update(changes)
        (folder / "metadata.json").write_text(json.dumps(meta))

    return edit


MINERL_BREAKAGES = {
    "no npz": (lambda f: _drop(f, "rendered.npz"), "missing rendered.npz; a MineRL v0.4 trajectory folder holds"),
    "no video": (lambda f: _drop(f, "recording.mp4"), "missing recording.mp4"),
    "no camera": (_npz_without("action$camera"), r"rendered.npz: missing key\(s\) \['action\$camera'\]"),
    "short camera": (_npz_set("action$camera", np.zeros((5, 2))), "different lengths .*'action\\$camera': 5"),
    "camera shape": (_npz_set("action$camera", np.zeros(6)), r"'action\$camera' is float64 \(6,\); expected"),
    "forward 2": (_npz_set("action$forward", np.array([1, 2, 0, 0, 0, 0])), r"'action\$forward'\[1\] = 2"),
    "nan camera": (_npz_set("action$camera", np.full((6, 2), np.nan)), "'action\\$camera' has non-finite"),
    "more frames": (_meta_set(true_video_frame_count=11), "recording.mp4: has 10 frames; .* says 11"),
    "too few": (_meta_set(true_video_frame_count=6), "true_video_frame_count 6 is less than the 7 states"),
    "no count": (_meta_set(true_video_frame_count=None), "'true_video_frame_count' is None"),
    "bad json": (lambda f: (f / "metadata.json").write_text("{not json"), "metadata.json: not readable JSON"),
    "bad video": (lambda f: (f / "recording.mp4").write_bytes(b"\0" * 300), "recording.mp4: unreadable video"),
    "not npz": (lambda f: (f / "rendered.npz").write_bytes(b"junk"), "rendered.npz: not a readable .npz"),
}


@pytest.mark.parametrize("case", list(MINERL_BREAKAGES))
def test_minerl_bad_inputs_name_the_file_and_the_expectation(tmp_path, case):
    """Each broken MineRL folder raises an error naming the file and what was expected."""
    edit, message = MINERL_BREAKAGES[case]
    folder = minerl_folder(tmp_path)
    edit(folder)
    with pytest.raises(SourceError if case != "bad video" else VideoError, match=message):
        read_minerl(folder)


# --- TECO ---------------------------------------------------------------------------------------------------
TECO_ACTIONS = [0, 1, 2, 3, 3, 1, 2]  # 0 at the first frame, then 1 forward, 2 left, 3 right
TECO_COMPACT = [0, 1, 2, 2, 0, 1]


def test_teco_npz_resized_with_actions(tmp_path):
    """A collector npz (128x128 video + actions) becomes 64x64 frames, compact actions and zero rewards."""
    ep = read_teco(write_teco_npz(tmp_path / "train" / "0" / "000000.npz", TECO_ACTIONS))
    assert set(ep) == {"image", "action", "reward"}
    assert np.array_equal(ep["image"], colour_frames(7, (64, 64)))
    assert_actions(ep, TECO_COMPACT)
    assert not ep["reward"].any() and len(ep["reward"]) == 7


@pytest.mark.parametrize("beside", ["npy", "npz"])
def test_teco_mp4_with_actions_beside(tmp_path, beside):
    """An mp4 (mpeg4, as OpenCV writes) with actions in <name>.npy or <name>.npz: frames in order, actions."""
    ep = read_teco(write_teco_mp4(tmp_path / "000001.mp4", TECO_ACTIONS, beside=beside))
    order, worst = nearest_frames(ep["image"], 7)
    assert order == list(range(7)) and worst <= 8
    assert_actions(ep, TECO_COMPACT)


def test_teco_bad_inputs(tmp_path):
    """Length mismatch, out-of-range ids, a first action other than 0, missing keys or actions: named errors."""
    cases = {
        "short": ([0, 1, 2], None, "'actions' has 3 entries for the 7 video frames; expected one per frame"),
        "id 4": ([0, 1, 2, 4, 1, 1, 1], None, r"'actions'\[3\] = 4; expected TECO's ids: 0 at index 0"),
        "first 1": ([1, 1, 2, 3, 1, 1, 1], None, r"'actions'\[0\] = 1"),
        "zero later": ([0, 1, 0, 3, 1, 1, 1], None, r"'actions'\[2\] = 0"),
    }
    for name, (actions, _, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, video=colour_frames(7, (16, 16)), actions=np.asarray(actions, np.int32))
        with pytest.raises(SourceError, match=message):
            read_teco(path)
    np.savez(tmp_path / "nokey.npz", video=colour_frames(3, (16, 16)))
    with pytest.raises(SourceError, match=r"nokey.npz: missing key\(s\) \['actions'\]; found \['video'\]"):
        read_teco(tmp_path / "nokey.npz")
    np.savez(tmp_path / "float.npz", video=colour_frames(3, (16, 16)).astype(np.float32), actions=[0, 1, 1])
    with pytest.raises(SourceError, match="'video' is float32 .* expected TECO's 'video'"):
        read_teco(tmp_path / "float.npz")
    write_video(tmp_path / "alone.mp4", colour_frames(3, (16, 16)))
    with pytest.raises(SourceError, match="alone.mp4: no actions beside the video; expected alone.npz"):
        read_teco(tmp_path / "alone.mp4")
    mp4 = write_teco_mp4(tmp_path / "long.mp4", TECO_ACTIONS)
    np.save(mp4.with_suffix(".npy"), np.array([0, 1, 1], np.int32))
    with pytest.raises(SourceError, match="long.npy: 'actions' has 3 entries for the 7 video frames"):
        read_teco(mp4)


# --- MineRL Navigate ----------------------------------------------------------------------------------------
def navigate_folder(tmp_path):
    # per frame: forward, jump, camera_x (pitch), camera_y (yaw); the last entry leads past the video
    a = navigate_entry([1, 0, 0, 1, 1], [0, 0, 1, 0, 0], [0, 30, 0, 0, 0], [0, -9, 0, 12, 90])
    b = navigate_entry([0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [6, -6, 0, -90])
    return write_navigate_folder(tmp_path / "minerl_navigate" / "train", {"000.mp4": a, "001.mp4": b})


def test_navigate_alignment_and_yaw_key(tmp_path):
    """Action t (taken at frame t) leads into frame t+1, the last is dropped; the yaw list is chosen by the option."""
    folder = navigate_folder(tmp_path)
    ep = read_navigate(folder / "000.mp4")
    assert np.array_equal(ep["image"], colour_frames(5))
    assert_actions(ep, [0, 1, 3, 2])  # forward, yaw -9 left, jump, yaw +12 right (yaw 90 at the end: dropped)
    assert ep["action_box"][1:].tolist() == [[1, 0, 0, 0], [0, 0, 30, -9], [0, 1, 0, 0], [1, 0, 0, 12]]
    assert_actions(read_navigate(folder / "001.mp4"), [2, 1, 0])
    # camera_x as the yaw: step 1 turns by +30 (right); the other steps' pitch lists are 0
    assert_actions(read_navigate(folder / "000.mp4", navigate_yaw_key="camera_x"), [0, 2, 3, 0])


def test_navigate_bad_inputs(tmp_path):
    """No metadata.json, no entry for the video, a missing list, a list of the wrong length: named errors."""
    folder = navigate_folder(tmp_path)
    meta = json.loads((folder / "metadata.json").read_text())
    write_video(folder / "002.mp4", colour_frames(5))
    with pytest.raises(SourceError, match="metadata.json: has no object for '002.mp4'; expected one per video"):
        read_navigate(folder / "002.mp4")
    del meta["000.mp4"]["camera_y"]
    meta["001.mp4"]["forward"] = [0, 0, 0]
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SourceError, match=r"entry '000.mp4' lacks \['camera_y'\]"):
        read_navigate(folder / "000.mp4")
    with pytest.raises(SourceError, match="entry '001.mp4': 'forward' has 3 actions for the 4 frames"):
        read_navigate(folder / "001.mp4")
    (folder / "metadata.json").unlink()
    with pytest.raises(SourceError, match="001.mp4: no metadata.json beside the video"):
        read_navigate(folder / "001.mp4")


# --- the command ------------------------------------------------------------------------------------------
def test_help_explains_each_format(capsys):
    """--help names the three formats and what each reads."""
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    for words in ("recording.mp4", "rendered.npz", "metadata.json", "TECO", "Navigate", "--skip-bad", "SRC", "OUT"):
        assert words in text


def test_convert_writes_episodes_manifest_and_resumes(tmp_path, capsys):
    """Every trajectory becomes a valid episode named after its path; a rerun skips them; a lost one is redone."""
    src = tmp_path / "minecraft"
    write_teco_npz(src / "train" / "0" / "000000.npz", TECO_ACTIONS, size=(32, 32))
    write_teco_npz(src / "train" / "0" / "000001.npz", [0, 3, 3], size=(32, 32))
    write_teco_mp4(src / "train" / "1" / "000000.mp4", TECO_ACTIONS)
    out = tmp_path / "episodes"
    assert main(["--format", "teco", str(src), str(out), "--size", "16", "--quiet"]) == 0
    assert "converted 3, skipped 0 already done, 0 bad (of 3 found)" in capsys.readouterr().out
    store = EpisodeStore(out)
    names = [p.name for p in store.paths]
    assert names == ["train__0__000000.npz", "train__0__000001.npz", "train__1__000000.npz"]
    assert store.lengths == [7, 3, 7]
    ep = load_episode(out / "train__0__000001.npz")
    assert ep["image"].shape == (3, 16, 16, 3) and ep["action"][1:].argmax(1).tolist() == [2, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_format"] == "teco" and manifest["size"] == 16 and manifest["src"] == str(src.resolve())
    assert manifest["actions"] == ["forward", "left", "right", "jump"] and manifest["bad"] == []
    stamp = (out / "train__0__000000.npz").stat().st_mtime_ns
    assert main(["--format", "teco", str(src), str(out), "--size", "16", "--quiet"]) == 0
    assert "converted 0, skipped 3 already done" in capsys.readouterr().out
    assert (out / "train__0__000000.npz").stat().st_mtime_ns == stamp
    (out / "train__1__000000.npz").unlink()
    (out / "train__0__000001.npz").write_bytes(b"half a file")  # e.g. copied in by hand, broken
    assert main(["--format", "teco", str(src), str(out), "--size", "16", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "converted 2, skipped 1 already done" in captured.out and "converting train__0__000001.npz again" in (
        captured.err
    )
    assert EpisodeStore(out).lengths == [7, 3, 7]


def test_a_bad_trajectory_stops_the_run_unless_skip_bad(tmp_path, capsys):
    """Without --skip-bad a bad trajectory stops the run (exit 1, file named); with it the rest converts and the
    bad ones are listed at the end and in the manifest."""
    src = tmp_path / "MineRL"
    minerl_folder(src, name="a_good")
    bad = minerl_folder(src, name="b_bad")
    _meta_set(true_video_frame_count=12)(bad)
    minerl_folder(src, name="c_good")
    out = tmp_path / "episodes"
    assert main(["--format", "minerl", str(src), str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "b_bad/recording.mp4: has 10 frames; metadata.json's true_video_frame_count says 12" in err
    assert "--skip-bad" in err
    assert sorted(p.name for p in out.glob("*.npz")) == ["MineRLNavigate-v0__a_good.npz"]
    assert main(["--format", "minerl", str(src), str(out), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "converted 1, skipped 1 already done, 1 bad (of 3 found)" in captured.out
    assert "bad: " in captured.out and "b_bad/recording.mp4: has 10 frames" in captured.out
    assert "convert minerl" in captured.err  # the progress bar
    names = sorted(p.name for p in out.glob("*.npz"))
    assert names == ["MineRLNavigate-v0__a_good.npz", "MineRLNavigate-v0__c_good.npz"]
    assert "action_box" in load_episode(out / names[1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [b["source"] for b in manifest["bad"]] == [str(bad)] and "says 12" in manifest["bad"][0]["problem"]


def test_refused_commands_exit_2_before_writing(tmp_path, capsys):
    """Different settings into a used OUT, OUT inside SRC, an empty or missing SRC: one line, exit 2."""
    src = navigate_folder(tmp_path).parent
    out = tmp_path / "episodes"
    assert main(["--format", "navigate", str(src), str(out), "--quiet"]) == 0
    assert EpisodeStore(out).lengths == [5, 4]
    capsys.readouterr()
    manifest = (out / "manifest.json").read_text()
    assert main(["--format", "navigate", str(src), str(out), "--navigate-yaw-key", "camera_x", "--quiet"]) == 2
    assert "holds a different conversion (navigate_yaw_key: folder has 'camera_y', command has 'camera_x')" in (
        capsys.readouterr().err
    )
    assert (out / "manifest.json").read_text() == manifest
    assert main(["--format", "navigate", str(src), str(src / "episodes"), "--quiet"]) == 2
    assert "is inside SRC" in capsys.readouterr().err and not (src / "episodes").exists()
    (tmp_path / "empty").mkdir()
    assert main(["--format", "teco", str(tmp_path / "empty"), str(tmp_path / "t"), "--quiet"]) == 2
    assert "holds no teco trajectories" in capsys.readouterr().err and not (tmp_path / "t").exists()
    assert main(["--format", "minerl", str(tmp_path / "nowhere"), str(tmp_path / "m"), "--quiet"]) == 2
    assert "nowhere: does not exist" in capsys.readouterr().err


def test_convert_api_matches_the_readers(tmp_path):
    """convert() writes exactly what the reader returns (validated by the store on load)."""
    src = tmp_path / "data"
    shutil.copytree(navigate_folder(tmp_path), src / "train")
    summary = convert(ConvertConfig(format="navigate", src=str(src), out=str(tmp_path / "ep")), progress=False)
    assert summary["converted"] == 2 and summary["bad"] == []
    want = read_navigate(src / "train" / "000.mp4")
    got = load_episode(tmp_path / "ep" / "train__000.npz")
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
