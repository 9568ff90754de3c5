"""Benchmarks on several worlds: results named per world, the Crafter fidelity and recall runs, their summary rows."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import dream_fidelity, recall, summary
from envs.collect import CollectConfig, collect
from envs.worlds import env_world, episodes_world, result_name, world_label
from worldmodel.evaluate import PSNR_CAP_DB
from worldmodel.train import TRAIN_PRESETS, train

CRAFTER = "longdream/Crafter-v0"
PNG = b"\x89PNG\r\n\x1a\n"


def test_world_of_an_env_id_a_folder_and_the_result_names(tmp_path):
    """Env ids and episode manifests (collect's env, convert's source format; none: Memory Maze) give the world;
    only Memory Maze's results keep the bare name; a manifest naming no world is an error naming the file."""
    ids = ("longdream/MemoryMaze-9x9-ExtraObs-v0", CRAFTER, "longdream/CrafterNoReward-v0")
    assert [env_world(e) for e in ids] == ["memory_maze", "crafter", "crafter"]
    assert env_world("MineRLNavigate-v0") == "minerl" and env_world("mypkg.envs:My/Cart-Pole-v1") == "cart_pole_v1"
    assert [result_name("recall", w) for w in ("memory_maze", "crafter", "teco")] == [
        "recall",
        "recall_crafter",
        "recall_teco",
    ]
    assert [world_label(w) for w in ("memory_maze", "crafter", "minerl", "teco")] == [
        "Memory Maze",
        "Crafter",
        "MineRL",
        "TECO",
    ]
    assert episodes_world(tmp_path) == "memory_maze"  # no manifest: the official Memory Maze data
    for manifest, world in (
        ({"env": CRAFTER}, "crafter"),
        ({"env": "longdream/MemoryMaze-9x9-ExtraObs-v0"}, "memory_maze"),
        ({"source_format": "teco"}, "teco"),
        ({"source_format": "navigate"}, "minerl"),
        ({"source_format": "minerl"}, "minerl"),
    ):
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        assert episodes_world(tmp_path) == world, manifest
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"manifest.json: expected an episode manifest with 'env'.*--world"):
        episodes_world(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest.json: unreadable manifest"):
        episodes_world(tmp_path)


@pytest.fixture(scope="module")
def crafter(tmp_path_factory):
    """Tiny Crafter data and model: 3 training episodes of 24 steps, 2 held-out ones of 30 (other seeds), and the
    tiny preset trained 2 + 2 steps on the training ones (its run folder holds the autoencoder recall shares)."""
    tmp = tmp_path_factory.mktemp("crafter")
    for folder, n, steps, seed in (("train", 3, 24, 0), ("held", 2, 30, 1000)):
        cfg = CollectConfig(env=CRAFTER, episodes=n, steps=steps, out=str(tmp / folder), seed=seed)
        collect(dataclasses.replace(cfg, policy="random_repeat"), progress=False)
    cfg = dataclasses.replace(TRAIN_PRESETS["tiny"], steps=2, ae_steps=2)
    model, _ = train(cfg, tmp / "train", tmp / "run", device="cpu", progress=False)
    assert (model.config.env_id, model.config.num_actions) == (CRAFTER, 17)
    return tmp


@pytest.fixture(scope="module")
def fidelity(crafter):
    """dream_fidelity --quick on the Crafter checkpoint: (its results folder, the parsed JSON)."""
    out = crafter / "fidelity"
    ckpt = crafter / "run" / "checkpoint.pt"
    assert dream_fidelity.main(["--quick", "--checkpoint", str(ckpt), "--episodes", str(crafter / "train"),
                                "--out", str(out)]) == 0  # fmt: skip
    return out, json.loads((out / "dream_fidelity_crafter.json").read_text())


def test_dream_fidelity_runs_in_the_checkpoints_world_under_a_policy_that_fits(fidelity):
    """No --env, no --policy: the real env is the checkpoint's (Crafter), the policy random_repeat (explore reads
    Memory Maze's map); the results are named for Crafter and nothing is written under the Memory Maze name."""
    out, r = fidelity
    assert sorted(p.name for p in out.iterdir()) == ["dream_fidelity_crafter.json", "dream_fidelity_crafter.png"]
    assert (out / "dream_fidelity_crafter.png").read_bytes()[:8] == PNG
    assert (r["benchmark"], r["name"], r["world"], r["env"], r["policy"]) == (
        "dream_fidelity",
        "dream_fidelity_crafter",
        "Crafter",
        CRAFTER,
        "random_repeat",
    )
    assert (r["context_frames"], r["horizon"], r["windows"]) == (6, 6, 2)
    assert r["env_seeds"] == [dream_fidelity.FIRST_UNSEEN_SEED, dream_fidelity.FIRST_UNSEEN_SEED + 1]
    assert r["env_seeds_ended_early"] == []  # nobody dies in 11 steps
    for key in ("psnr_dream", "psnr_copy_last", "psnr_autoencoder"):
        assert len(r["per_step"][key]) == 6 and all(0 < v <= PSNR_CAP_DB for v in r["per_step"][key])
        assert r["mean"][key] == pytest.approx(np.mean(r["per_step"][key]))
    assert all(-1 <= v <= 1 for v in r["per_step"]["ssim_dream"])


def test_dream_fidelity_refuses_a_policy_or_env_that_does_not_fit(crafter, capsys):
    """--policy explore is refused for Crafter naming the policies that fit; a Memory Maze --env for a Crafter
    model is refused naming both action counts; a bad --name is named. Nothing is written."""
    base = ["--quick", "--checkpoint", str(crafter / "run" / "checkpoint.pt"), "--episodes", str(crafter / "train")]
    out = crafter / "refused"
    assert dream_fidelity.main([*base, "--out", str(out), "--policy", "explore"]) == 2
    err = capsys.readouterr().err
    assert "--policy explore: reads info keys agent_pos, agent_dir, maze_layout" in err
    assert "use one of random, random_repeat" in err
    assert dream_fidelity.main([*base, "--out", str(out), "--env", "longdream/MemoryMaze-9x9-v0"]) == 2
    assert "--env longdream/MemoryMaze-9x9-v0: 6 actions, but the checkpoint's model acts in 17" in (
        capsys.readouterr().err
    )
    assert not list(out.glob("*.json"))
    with pytest.raises(SystemExit):
        dream_fidelity.main([*base, "--name", "a/b"])
    assert "--name 'a/b': expected a plain file-name stem" in capsys.readouterr().err


def test_dream_fidelity_passes_over_episodes_that_end_before_the_window(crafter, monkeypatch):
    """A seed whose episode ends early (the Crafter player dies) is replaced by the next one and listed; when too
    few last the window, the error says so and how to shorten it."""
    real = dream_fidelity.collect_episode

    def dies_on_odd_seeds(env, policy, seed, steps):
        ep = real(env, policy, seed, steps)
        return {k: v[:3] for k, v in ep.items()} if seed % 2 else ep

    monkeypatch.setattr(dream_fidelity, "collect_episode", dies_on_odd_seeds)
    w = dream_fidelity.real_windows(CRAFTER, None, 10, 2, 5, num_actions=17, progress=False)
    assert (w["seeds"], w["ended_early"], w["policy"]) == ([10, 12], [11], "random_repeat")
    assert w["image"].shape == (2, 5, 64, 64, 3) and w["action"].shape == (2, 5) and w["action"].max() < 17
    monkeypatch.setattr(dream_fidelity, "SEED_TRIES", 1)
    with pytest.raises(ValueError, match=r"only 1 of 2 episodes \(seeds 10..11\) lasted 5 frames.*--context/--horizon"):
        dream_fidelity.real_windows(CRAFTER, None, 10, 2, 5, num_actions=17, progress=False)


def test_recall_names_its_outputs_and_default_sweep_per_world(crafter, tmp_path, capsys):
    """The world comes from the episodes' manifests (or --world): Crafter's recall writes recall_crafter.* and
    trains in runs/recall-crafter by default, Memory Maze's (no manifest) recall.* in runs/recall; a training and a
    held-out folder of different worlds are refused."""
    args = recall.parse_args(["--episodes", str(crafter / "train"), "--heldout-episodes", str(crafter / "held")])
    assert (args.world, args.name, args.sweep) == ("crafter", "recall_crafter", Path("runs/recall-crafter"))
    maze = recall.write_toy_episodes(tmp_path / "maze", 1, steps=10, out_steps=3, seed=0)
    maze_held = recall.write_toy_episodes(tmp_path / "maze_held", 1, steps=10, out_steps=3, seed=5)
    args = recall.parse_args(["--episodes", str(maze), "--heldout-episodes", str(maze_held)])
    assert (args.world, args.name, args.sweep) == ("memory_maze", "recall", Path("runs/recall"))
    args = recall.parse_args(["--episodes", str(maze), "--heldout-episodes", str(maze_held), "--world", "teco"])
    assert (args.world, args.name, args.sweep) == ("teco", "recall_teco", Path("runs/recall-teco"))
    with pytest.raises(SystemExit):
        recall.parse_args(["--episodes", str(maze), "--heldout-episodes", str(crafter / "held")])
    assert "are Memory Maze episodes, --heldout-episodes" in capsys.readouterr().err


@pytest.fixture(scope="module")
def crafter_recall(crafter):
    """The recall sweep's hybrid on the tiny Crafter episodes (reasoning only), sharing the run's autoencoder."""
    out = crafter / "recall_out"
    argv = [
        "--preset", "tiny", "--steps", "2", "--episodes", str(crafter / "train"),
        "--heldout-episodes", str(crafter / "held"), "--sweep", str(crafter / "sweep"), "--out", str(out),
        "--autoencoder", str(crafter / "run" / "autoencoder.pt"), "--variants", "hybrid", "--no-progress",
    ]  # fmt: skip
    assert recall.main(argv) == 0
    return out, json.loads((out / "recall_crafter.json").read_text())


def test_recall_on_crafter_writes_recall_crafter_with_its_world(crafter_recall):
    """recall_crafter.json/.md/.png/_strips.png and no recall.*: reasoning scored, retrieval and distances left out
    (no revisit phase, no maze position) and the report says so; the world is named in the report."""
    out, res = crafter_recall
    assert sorted(p.name for p in out.iterdir()) == [
        "recall_crafter.json",
        "recall_crafter.md",
        "recall_crafter.png",
        "recall_crafter_strips.png",
    ]
    assert (res["benchmark"], res["world"], res["preset"], list(res["variants"])) == (
        "recall",
        "Crafter",
        "tiny",
        ["hybrid"],
    )
    s = res["variants"]["hybrid"]["scores"]
    assert s["reasoning"]["examples"] > 0 and 0 < s["reasoning"]["psnr"]["mean"] <= PSNR_CAP_DB
    assert "skipped" in s["retrieval"] and "bins" not in s["all"]
    md = (out / "recall_crafter.md").read_text()
    assert md.startswith("# Recall benchmark on Crafter: `tiny` setting")
    assert "No last-seen distances" in md and "retrieval: not run" in md
    for png in ("recall_crafter.png", "recall_crafter_strips.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_summary_gives_each_world_its_rows(fidelity, crafter_recall, tmp_path):
    """Crafter's fidelity and recall results get rows naming Crafter (reasoning only, no NaN); beside Memory Maze's
    files (here copies under the Memory Maze names) each world gets its own row."""
    for src in (fidelity[0] / "dream_fidelity_crafter.json", crafter_recall[0] / "recall_crafter.json"):
        (tmp_path / src.name).write_bytes(src.read_bytes())
    rows = summary._rows(tmp_path)
    assert [r[0] for r in rows] == [
        "Dream vs real env, open loop on unseen worlds, Crafter (`dream_fidelity`)",
        "Recall on Crafter, tiny setting, 1 of 7 variants (`recall`)",
    ]
    fid = fidelity[1]
    assert f"PSNR {fid['mean']['psnr_dream']:.1f} dB vs copy-last {fid['mean']['psnr_copy_last']:.1f}" in rows[0][1]
    psnr = crafter_recall[1]["variants"]["hybrid"]["scores"]["reasoning"]["psnr"]["mean"]
    assert rows[1][1] == f"hybrid: reasoning {psnr:.2f} dB" and rows[1][2] == "reported (recall_crafter.md)"
    assert "nan" not in summary.table(tmp_path).lower()
    (tmp_path / "dream_fidelity.json").write_bytes((tmp_path / "dream_fidelity_crafter.json").read_bytes())
    (tmp_path / "recall.json").write_bytes((tmp_path / "recall_crafter.json").read_bytes())
    titles = [r[0] for r in summary._rows(tmp_path)]
    assert titles == [
        "Dream vs real env, open loop on unseen mazes (`dream_fidelity`)",
        "Dream vs real env, open loop on unseen worlds, Crafter (`dream_fidelity`)",
        "Recall, tiny setting, 1 of 7 variants (`recall`)",
        "Recall on Crafter, tiny setting, 1 of 7 variants (`recall`)",
    ]


def test_summary_gives_planners_a_row_per_world(tmp_path):
    """planners.json (Memory Maze) and planners_crafter.json (``--name planners_crafter``) each get a row naming
    their world; Crafter's has no oracle (Memory Maze only) and says which planner beat random."""

    def methods(names, beats=()):
        rate = {"mean": 1.5, "ci95": 0.25}
        return {m: {"reward_rate_per_100": rate, "beats_random": m in beats} for m in names}

    maze = {"methods": methods(["cem", "random", "oracle"])}
    crafter = {"methods": methods(["cem", "mppi", "random"], beats=("mppi",))}
    (tmp_path / "planners.json").write_text(json.dumps(maze))
    (tmp_path / "planners_crafter.json").write_text(json.dumps(crafter))
    rows = summary._rows(tmp_path)
    assert rows == [
        (
            "MPC in the real maze, reward / 100 steps (`planners.evaluate`)",
            "cem 1.50 ± 0.25; random 1.50 ± 0.25; oracle 1.50 ± 0.25",
            "a planner beats random (95% CI): missed",
        ),
        (
            "MPC in the real Crafter, reward / 100 steps (`planners.evaluate`)",
            "cem 1.50 ± 0.25, mppi 1.50 ± 0.25; random 1.50 ± 0.25",
            "a planner beats random (95% CI): met (mppi)",
        ),
    ]


def test_summary_rows_of_the_demo_and_long_action_following(tmp_path):
    """action_following.json (make demo's model) and action_following_long.json (runs/long) get a row each; the
    real maze's left-vs-right distance is quoted when the results hold the real-env reference."""
    af = {
        "turning": {"windows": 16, "psnr_real": 19.5, "psnr_swapped": 17.25},
        "constant": {"psnr_left_vs_right": 21.0, "psnr_seed_vs_seed": 26.0},
        "goals": {"turning_real_beats_swapped_by_2db": True, "left_right_differ_as_much_as_seeds": True},
    }
    (tmp_path / "action_following.json").write_text(json.dumps(af))
    af["real_env"] = {"constant": {"psnr_left_vs_right": 15.25}}
    (tmp_path / "action_following_long.json").write_text(json.dumps(af))
    rows = summary._rows(tmp_path)
    assert [r[0] for r in rows] == [
        "Action-following on unseen mazes (`action_following`)",
        "Action-following on unseen mazes, long preset (`make train-long`) (`action_following`)",
    ]
    assert "(in the real maze" not in rows[0][1] and rows[1][1].endswith("(in the real maze: 15.2)")
    assert rows[1][2] == "real beats swapped by >= 2 dB: met; left/right differ as much as seeds: met"
