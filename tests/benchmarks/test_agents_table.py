"""benchmarks.agents: runs' eval.json next to random and the oracle on the same seeds, paired differences, errors."""

import json

import pytest

from agents.real import episode_record, summarise_episodes
from benchmarks.agents import collect, main, markdown


def _run(folder, world, rates, seeds=(3000, 3001, 3002), max_steps=5, env="longdream/MemoryMaze-9x9-v0"):
    folder.mkdir(parents=True)
    recs = [episode_record(s, [0.0] * (max_steps - 1) + [r]) for s, r in zip(seeds, rates)]
    ev = summarise_episodes(recs)
    ev.update(seeds=list(seeds), max_steps=max_steps)
    run = {
        "agent": "dreamer",
        "world": world,
        "env": env,
        "eval": ev,
        "env_steps": 100,
        "learn_seconds": 10.0,
        "imagined_steps": 100 if world == "dream" else 0,
        "real_steps_used": {"steps": 40},
    }
    (folder / "eval.json").write_text(json.dumps(run))
    return folder


def test_agents_table_pairs_runs_with_random_and_oracle(tmp_path):
    dream = _run(tmp_path / "d", "dream", [1.0, 1.0, 1.0])  # 20 per 100 steps on every seed
    real = _run(tmp_path / "r", "real", [0.0, 0.0, 0.0])
    res = collect([dream, real])
    assert list(res["methods"]) == ["dreamer (dream)", "dreamer (real)", "random", "oracle"]
    assert res["methods"]["random"]["return"]["n"] == 3  # random ran on the same seeds in the real env
    rand = {e["seed"]: e["reward_rate_per_100"] for e in res["methods"]["random"]["episodes"]}
    d = res["methods"]["dreamer (dream)"]["minus_random_rate_per_100"]
    assert d["mean"] == pytest.approx(20.0 - sum(rand.values()) / 3)
    assert res["methods"]["dreamer (dream)"]["steps_per_s"] == pytest.approx(10.0)
    table = markdown(res)
    assert "| dreamer (dream) | 1.00 ± 0.00 | 20.00 ± 0.00 |" in table and "100 imagined" in table


def test_agents_table_refuses_runs_evaluated_differently(tmp_path, capsys):
    a = _run(tmp_path / "a", "dream", [0, 0, 0])
    b = _run(tmp_path / "b", "real", [0, 0], seeds=(3000, 3001))
    with pytest.raises(ValueError, match="evaluate every run alike"):
        collect([a, b])
    assert main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "eval.json: no such file" in capsys.readouterr().err


def test_agents_results_are_named_per_world_and_summarised_per_world(tmp_path):
    """Crafter runs write agents_crafter.* (Memory Maze keeps agents.*); the summary gives each world its row,
    without an oracle where the world has none."""
    from benchmarks import summary

    crafter = _run(tmp_path / "c", "dream", [0.0, 1.0, 0.0], env="longdream/Crafter-v0")
    maze = _run(tmp_path / "m", "dream", [1.0, 1.0, 1.0])
    out = tmp_path / "out"
    assert main(["--runs", str(crafter), "--out", str(out)]) == 0
    assert main(["--runs", str(maze), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "agents.json", "agents.md", "agents.png", "agents_crafter.json", "agents_crafter.md", "agents_crafter.png",
    ]  # fmt: skip
    res = json.loads((out / "agents_crafter.json").read_text())
    assert res["env"] == "longdream/Crafter-v0" and list(res["methods"]) == ["dreamer (dream)", "random"]
    rows = summary._rows(out)
    assert [r[0] for r in rows] == [
        "Agents in the real maze, reward / 100 steps (`benchmarks.agents`)",
        "Agents in the real Crafter, reward / 100 steps (`benchmarks.agents`)",
    ]
    assert "oracle" in rows[0][1] and "oracle" not in rows[1][1]
