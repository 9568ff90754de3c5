"""The scaling benchmark on the tiny preset: one run scored at milestones, resumed per milestone."""

import json
import shutil

import pytest
import torch

from benchmarks import scaling
from worldmodel.utils import torch_load


@pytest.fixture(scope="module")
def curve(tiny_checkpoint, real_episodes, tmp_path_factory):
    """A tiny run scored at steps 2 and 4 (the autoencoder copied in, as the study does); (args, folder, JSON)."""
    tmp = tmp_path_factory.mktemp("scaling")
    (tmp / "run").mkdir()
    shutil.copy2(tiny_checkpoint.parent / "autoencoder.pt", tmp / "run" / "autoencoder.pt")
    args = [
        "--preset", "tiny", "--milestones", "2", "4", "--episodes", str(real_episodes),
        "--heldout-episodes", str(real_episodes), "--run-dir", str(tmp / "run"), "--out", str(tmp / "out"),
        "--no-progress", "--threads", str(torch.get_num_threads()),
    ]  # fmt: skip
    assert scaling.main(args) == 0
    return args, tmp, json.loads((tmp / "out" / "scaling.json").read_text())


def test_each_milestone_is_scored_at_its_step_with_growing_minutes(curve):
    _, tmp, res = curve
    rows = res["rows"]
    assert [r["steps"] for r in rows] == [2, 4]
    assert 0 < rows[0]["minutes"] < rows[1]["minutes"]
    assert all(r["torch_threads"] == torch.get_num_threads() for r in rows)  # minutes depend on it: recorded
    assert torch_load(tmp / "run" / "checkpoint.pt")["step"] == 4
    for r in rows:
        assert r["psnr_gain"] == pytest.approx(r["psnr_dream"] - r["psnr_copy_last"])
        assert (tmp / "out" / r["strip"]).read_bytes()[:4] == b"\x89PNG"
    assert (tmp / "out" / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_invocation_continues_from_the_last_milestone(curve, capsys):
    args, tmp, res = curve
    more = args[:3] + ["4", "6"] + args[5:]
    assert scaling.main(more) == 0
    out = capsys.readouterr().out
    assert "milestone 4 steps: already scored" in out
    rows = json.loads((tmp / "out" / "scaling.json").read_text())["rows"]
    assert [r["steps"] for r in rows] == [2, 4, 6] and rows[2]["minutes"] > rows[1]["minutes"]
    assert rows[:2] == res["rows"]
    assert torch_load(tmp / "run" / "checkpoint.pt")["step"] == 6


def test_bad_milestones_are_named(real_episodes, capsys):
    base = ["--preset", "tiny", "--episodes", str(real_episodes), "--heldout-episodes", str(real_episodes)]
    for ms, what in ((["4", "2"], "expected ascending"), (["5", "100"], "beyond the tiny preset's 30 steps")):
        with pytest.raises(SystemExit):
            scaling.main(base + ["--milestones", *ms])
        assert what in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scaling.main(base + ["--threads", "0"])
    assert "--threads 0: expected a number of threads >= 1" in capsys.readouterr().err
