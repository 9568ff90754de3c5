"""python -m planners.evaluate on the tiny model: results written, resumable per episode, settings and CLI checked."""

import dataclasses
import json

import numpy as np
import pytest

from planners.evaluate import EvaluateJob, evaluate, main, mean_ci, parse_args, write


def _job(ckpt, tmp_path, **kw):
    base = dict(
        checkpoint=ckpt,
        preset="tiny",
        methods=("cem", "random", "oracle"),
        episodes=2,
        max_steps=6,
        record=1,
        throughput_rounds=1,
        work_dir=tmp_path / "work",
        out=tmp_path / "out",
        progress=False,
    )
    job = parse_args(["--checkpoint", str(ckpt), "--preset", "tiny"])
    return EvaluateJob(**{**{f: getattr(job, f) for f in job.__dataclass_fields__}, **base, **kw})


def test_evaluate_writes_results_and_resumes_per_episode(tiny_checkpoint, tmp_path):
    job = _job(tiny_checkpoint, tmp_path)
    res = evaluate(job)
    for ext in ("json", "png", "md"):
        assert (tmp_path / "out" / f"planners.{ext}").is_file()
    assert set(res["methods"]) == {"cem", "random", "oracle"}
    cem = res["methods"]["cem"]
    assert cem["in_step_with_env"] and cem["return"]["n"] == 2
    assert all(e["steps"] == 6 and e["frames_seen"] == 7 for e in cem["episodes"])
    assert res["seeds"] == [2000, 2001]
    assert res["throughput"]["batch"] == job.planner.population
    assert res["reward_horizon"]["windows"] >= 1
    assert list((tmp_path / "work" / "tb").iterdir())
    table = (tmp_path / "out" / "planners.md").read_text()
    assert "| cem | 2 |" in table and "| oracle | 2 |" in table
    assert "replan every 1 steps" in table and "Goal, a planner's reward rate above random's" in table
    assert json.loads((tmp_path / "out" / "planners.json").read_text())["max_steps"] == 6
    # a rerun skips the finished planner episodes (their files are not rewritten)
    files = sorted((tmp_path / "work" / "episodes").glob("cem_*.json"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    again = evaluate(job)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again["methods"]["cem"]["episodes"] == cem["episodes"]
    # results are named per world unless --name says otherwise: a Crafter run never replaces Memory Maze's
    write(dataclasses.replace(job, out=tmp_path / "w"), {**res, "env": "longdream/Crafter-v0"})
    write(dataclasses.replace(job, out=tmp_path / "w", name="mine"), res)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        f"{stem}.{ext}" for stem in ("mine", "planners_crafter") for ext in ("json", "md", "png")
    ]


def test_a_rerun_with_other_settings_into_the_same_folder_is_refused(tiny_checkpoint, tmp_path):
    evaluate(_job(tiny_checkpoint, tmp_path, methods=("random",), throughput_rounds=1))
    with pytest.raises(ValueError, match="max_steps"):
        evaluate(_job(tiny_checkpoint, tmp_path, methods=("random",), max_steps=7))


def test_cli_presets_and_bad_values(tiny_checkpoint, tmp_path, capsys):
    assert parse_args(["--checkpoint", str(tiny_checkpoint), "--preset", "gpu"]).planner.population == 512
    job = parse_args(["--checkpoint", str(tiny_checkpoint), "--planner.horizon", "9"])
    assert job.planner.horizon == 9 and job.planner.population == 32  # the cpu preset's other values
    for args, message in ((["--planner.horizon", "0"], "horizon=0"), (["--episodes", "0"], "--episodes 0")):
        with pytest.raises(SystemExit) as exit_info:  # tyro reports a refused value and exits with status 2
            main(["--checkpoint", str(tiny_checkpoint), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_mean_ci_known_answer():
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["ci95"] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert mean_ci([5.0]) == {"n": 1, "mean": 5.0, "ci95": 0.0}
