"""The recall benchmark: last-seen distances, cycles, metrics, the harness end to end on tiny variants, resume."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import recall
from benchmarks.recall import NEVER, Example, HeldOut, HeldOutEpisode
from worldmodel import presets
from worldmodel.evaluate import PSNR_CAP_DB
from worldmodel.model import world_model_config
from worldmodel.train import train_config
from worldmodel.utils import torch_load

PNG = b"\x89PNG\r\n\x1a\n"
E2E_VARIANTS = ["hybrid", "causal_window", "mamba2_local_attn", "hybrid_no_trick"]


def _heading(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_last_seen_distance_on_a_hand_made_trajectory():
    """Same cell and heading within 45 degrees, only context frames count, latest one wins, NEVER otherwise."""
    track = [  # (x, y) in cell units, heading in degrees
        ((0.5, 0.5), 0),  # 0 context
        ((1.2, 0.7), 0),  # 1 context
        ((1.9, 0.1), 90),  # 2 context (same cell as 1, other heading)
        ((2.5, 0.5), 90),  # 3 context
        ((1.5, 0.5), 10),  # 4: cell (1, 0) at ~0 degrees: frame 1 -> 3
        ((1.5, 0.5), 80),  # 5: cell (1, 0) at ~90 degrees: frame 2 -> 3
        ((0.5, 0.5), 180),  # 6: cell (0, 0) seen only facing 0 degrees -> never
        ((2.5, 0.5), 120),  # 7: frame 3 (30 degrees off) -> 4
        ((0.5, 0.5), -20),  # 8: frame 0 (wraps around 0) -> 8
        ((1.5, 0.5), 5),  # 9: frame 1 -> 8 (frame 4, the same view, is generated: it does not count)
        ((1.5, 0.5), 45),  # 10: 45 degrees from frames 1 and 2 (both count): the latest, 2 -> 8
        ((3.5, 3.5), 0),  # 11: a cell the context never entered -> never
    ]
    pos = np.array([p for p, _ in track])
    heading = np.array([_heading(d) for _, d in track])
    got = recall.last_seen_distance(pos, heading, context=4)
    assert got.tolist() == [3, 3, NEVER, 4, 8, 8, 8, NEVER]
    assert recall.last_seen_distance(pos, heading, context=4, heading_tolerance_deg=5).tolist()[:2] == [NEVER, NEVER]
    with pytest.raises(ValueError, match=r"context=0 must be in 1..12"):
        recall.last_seen_distance(pos, heading, context=0)
    with pytest.raises(ValueError, match=r"must both be \(T, 2\), got \(12, 2\) and \(12, 3\)"):
        recall.last_seen_distance(pos, np.zeros((12, 3)), context=4)


def test_return_cycles_and_distance_bins():
    """Complete out-and-back cycles start at the frame before the outward run; a cut-off return is dropped."""
    phase = np.array([0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    assert recall.return_cycles(phase) == [(0, 3, 5), (4, 7, 10)]
    assert recall.return_cycles(np.array([0, 0, 1, 1])) == []
    bins = recall.distance_bins(np.array([1, 10, 11, 24, 25, 300, NEVER]), (1, 11, 25))
    assert bins.tolist() == [0, 0, 1, 1, 2, 2, -1]
    assert [recall.bin_label((1, 11, 25), i) for i in range(3)] == ["1-10", "11-24", ">=25"]


class _Oracle:
    """A stand-in model whose rollout returns the real future frames (plus an offset): scores are known."""

    def __init__(self, futures: dict, offset: int = 0):
        self.futures, self.offset = futures, offset
        self.config = world_model_config("tiny")

    def rollout(self, frames, context_actions, future_actions, generator=None):
        real = self.futures[(frames.shape[1], future_actions.shape[1])]
        return {"frames": (real.int() + self.offset).clamp(0, 255).to(torch.uint8)}


def _one_episode_heldout(offset_free: bool = True) -> tuple[HeldOut, dict]:
    """One toy episode (frames kept <= 200 so +16 never clips), one retrieval and one reasoning example."""
    ep = recall.toy_revisit_episode(steps=30, out_steps=4, seed=3)
    frames = torch.from_numpy(np.minimum(ep["image"], 200))
    e = HeldOutEpisode(
        path=recall.Path("toy.npz"),
        frames=frames,
        actions=torch.from_numpy(ep["action"].argmax(-1)).long(),
        phase=ep["phase"],
        agent_pos=ep["agent_pos"],
        agent_dir=ep["agent_dir"],
    )
    s, b, c = recall.return_cycles(ep["phase"])[0]
    h = c - b + 2  # the whole return and two frames of the next cycle (generated, not scored)
    scored = np.arange(b, b + h) < c
    dist_r = recall.last_seen_distance(ep["agent_pos"][s : b + h], ep["agent_dir"][s : b + h], b - s)
    dist_q = recall.last_seen_distance(ep["agent_pos"][2:20], ep["agent_dir"][2:20], 12)
    examples = {
        "retrieval": [Example("retrieval", 0, s, b - s, h, scored, dist_r)],
        "reasoning": [Example("reasoning", 0, 2, 12, 6, np.ones(6, bool), dist_q)],
    }
    futures = {(b - s, h): frames[None, b : b + h], (12, 6): frames[None, 14:20]}
    held = HeldOut([e], examples, skipped={}, notes=[], digests={"toy.npz": "x"})
    return held, futures


def test_metrics_on_identical_frames_and_a_known_noise_level():
    """A perfect dream scores PSNR_CAP_DB (the project's rule for +inf) and SSIM 1; +16 levels is 24.07 dB."""
    held, futures = _one_episode_heldout()
    proto = recall.PROTOCOLS["tiny"]
    scores, strips = recall.score_model(_Oracle(futures), held, proto)
    for p in ("retrieval", "reasoning", "all"):
        assert scores[p]["psnr"]["mean"] == pytest.approx(PSNR_CAP_DB)
        assert scores[p]["ssim"]["mean"] == pytest.approx(1.0)
    assert scores["retrieval"]["frames"] == int(held.examples["retrieval"][0].scored.sum()) == 8  # the return only
    assert scores["lpips"].startswith("LPIPS not computed")
    noisy, _ = recall.score_model(_Oracle(futures, offset=16), held, proto)
    expected = 10 * math.log10(255**2 / 16**2)  # MSE of a uniform +16 offset is 256
    assert noisy["all"]["psnr"]["mean"] == pytest.approx(expected, abs=1e-4) and expected == pytest.approx(24.065, 1e-3)
    assert noisy["all"]["ssim"]["mean"] < 1.0
    # every frame of the pooled set sits in one distance group: bins + never seen add up to all frames
    a = noisy["all"]
    assert sum(b["psnr"]["frames"] for b in a["bins"]) + a["never_seen"]["psnr"]["frames"] == a["frames"]
    assert set(strips) == {"retrieval", "reasoning"} and strips["retrieval"]["dream"].dtype == np.uint8


def test_missing_phase_and_positions_fall_back_and_say_so(tmp_path):
    """No `phase`: retrieval is skipped with the reason; no agent_pos/agent_dir: reasoning without distances."""
    folder = tmp_path / "held"
    folder.mkdir()
    for i, drop in enumerate((("phase",), ("phase", "agent_pos", "agent_dir"))):
        ep = recall.toy_revisit_episode(steps=30, out_steps=4, seed=i)
        for k in drop:
            ep.pop(k)
        recall.save_episode(folder / f"ep_{i:05d}.npz", ep)
    held = recall.prepare_heldout(folder, recall.PROTOCOLS["tiny"])
    assert "no held-out episode has `phase`" in held.skipped["retrieval"]
    assert any("lack agent_pos/agent_dir" in n and "ep_00001.npz" in n for n in held.notes)
    reasoning = held.examples["reasoning"]
    assert reasoning and {ex.distance is None for ex in reasoning} == {True, False}
    n, m = recall.PROTOCOLS["tiny"].reasoning_context, recall.PROTOCOLS["tiny"].reasoning_horizon
    futures = {
        (n, m): torch.stack([held.episodes[ex.episode].frames[ex.start + n : ex.start + n + m] for ex in reasoning])
    }
    scores, _ = recall.score_model(_Oracle(futures), held, recall.PROTOCOLS["tiny"])
    assert scores["retrieval"] == {"skipped": held.skipped["retrieval"]}
    assert scores["all"]["frames_with_distance"] < scores["all"]["frames"]
    with pytest.raises(ValueError, match="nothing to score"):
        recall.prepare_heldout(folder, recall.dataclasses.replace(recall.PROTOCOLS["tiny"], reasoning_context=100))


def test_the_recall_setting_puts_revisits_beyond_attention_and_inside_training():
    """The recall preset: 64-128-frame windows holding both protocols, the cpu model but the window baseline."""
    t, p = train_config("recall"), recall.PROTOCOLS["recall"]
    assert 64 <= t.max_window <= 128
    c = recall.COLLECTION["recall"]
    assert 20 <= c.revisit_steps <= 40
    assert c.revisit_steps + 1 + p.retrieval_horizon <= t.max_window
    assert p.reasoning_context + p.reasoning_horizon <= t.max_window
    cfg = world_model_config("recall")
    assert (
        2 * cfg.backbone.attn_chunk
        < p.distance_edges[1]
        <= world_model_config("recall", "causal_window").backbone.window_frames
    )
    cpu = dict(presets.BACKBONE["cpu"])
    assert {**presets.BACKBONE["recall"], "window_frames": cpu.get("window_frames", 192)} == {
        **cpu,
        "window_frames": 192,
    }
    assert presets.AUTOENCODER["recall"] is presets.AUTOENCODER["cpu"]
    train_cmd, held_cmd = recall.collect_commands("recall")
    assert (
        "--policy revisit --revisit-steps 32" in train_cmd and "--seed 0 " in train_cmd and "--seed 1000 " in held_cmd
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Four tiny variants trained 2 steps each on two toy revisit episodes, scored on two others."""
    tmp = tmp_path_factory.mktemp("recall")
    toy = {k: recall.QUICK_TOY[k] for k in ("steps", "out_steps")}
    recall.write_toy_episodes(tmp / "train", 2, seed=0, **toy)
    recall.write_toy_episodes(tmp / "held", 2, seed=100, **toy)
    args = [
        "--preset", "tiny", "--steps", "2", "--episodes", str(tmp / "train"), "--heldout-episodes", str(tmp / "held"),
        "--sweep", str(tmp / "sweep"), "--out", str(tmp / "out"), "--no-progress", "--variants", *E2E_VARIANTS,
    ]  # fmt: skip
    assert recall.main(args) == 0
    return args, tmp, json.loads((tmp / "out" / "recall.json").read_text())


def test_every_artefact_is_written_and_well_formed(sweep):
    _, tmp, res = sweep
    out, sw = tmp / "out", tmp / "sweep"
    assert set(res["variants"]) == set(E2E_VARIANTS) and res["missing"] == sorted(
        set(recall.VARIANTS) - set(E2E_VARIANTS), key=list(recall.VARIANTS).index
    )
    for name, v in res["variants"].items():
        s = v["scores"]
        assert s["retrieval"]["examples"] > 0 and s["reasoning"]["examples"] > 0
        for p in ("retrieval", "reasoning", "all"):
            assert 0 < s[p]["psnr"]["mean"] <= PSNR_CAP_DB and -1 <= s[p]["ssim"]["mean"] <= 1
        assert len(s["all"]["bins"]) == len(recall.PROTOCOLS["tiny"].distance_edges)
        assert s["all"]["beyond_attention"]["psnr"]["frames"] > 0  # the tiny reasoning context reaches past 10
        assert [r["context_frames"] for r in v["latency"]] == [8] and v["latency"][0]["ms_per_frame"] > 0
        assert v["train"]["steps"] == 2 and torch_load(sw / name / "checkpoint.pt")["step"] == 2
        assert (sw / name / "recall.json").is_file() and (sw / name / "recall_strips.npz").is_file()
        # one shared autoencoder, byte for byte
        assert (sw / name / "autoencoder.pt").read_bytes() == (sw / "_ae" / "autoencoder.pt").read_bytes()
    assert set(res["goals"]) >= {"hybrid_beats_causal_window", "hybrid_within_2db_of_causal_full"}
    assert res["goals"]["hybrid_beats_mamba2"]["met"] is None  # mamba2 was not run
    trick = json.loads((sw / "hybrid_no_trick" / "config.json").read_text())["model"]["diffusion"]
    assert trick["clean_prefix_prob"] == 0.0
    assert json.loads((sw / "hybrid" / "config.json").read_text())["model"]["diffusion"]["clean_prefix_prob"] == 0.5
    md = (out / "recall.md").read_text()
    for text in ("| Retrieval |", "| Reasoning |", "| Ablation |", "never seen", "n/a", "Goals"):
        assert text in md
    assert "| Mamba2 | not run |" in md
    for png in ("recall.png", "recall_strips.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_a_second_run_skips_scored_variants_and_scores_a_trained_one(sweep, capsys):
    args, tmp, _ = sweep
    sw = tmp / "sweep"
    before = {n: (sw / n / "recall.json").read_text() for n in E2E_VARIANTS}
    ckpt = (sw / "hybrid" / "checkpoint.pt").read_bytes()
    (sw / "hybrid" / "recall.json").unlink()  # trained, not scored: scored again without training
    capsys.readouterr()
    assert recall.main(args) == 0
    out = capsys.readouterr().out
    for name in E2E_VARIANTS[1:]:
        assert f"{name}: already scored" in out
        assert (sw / name / "recall.json").read_text() == before[name]
    assert "hybrid: already scored" not in out and "== hybrid: training" not in out
    assert (sw / "hybrid" / "checkpoint.pt").read_bytes() == ckpt
    assert json.loads((sw / "hybrid" / "recall.json").read_text())["scores"] == json.loads(before["hybrid"])["scores"]


def test_a_sweep_spread_over_jobs_equals_the_one_command_sweep(sweep, capsys):
    """--stage autoencoder, then a --stage train job for one variant, then --stage score: the same shared
    autoencoder, weights and scores as the one-command sweep; train and score wait for what they need."""
    args, tmp, _ = sweep
    base = args[: args.index("--sweep")] + ["--sweep", str(tmp / "spread"), "--out", str(tmp / "spread_out")]
    base += ["--no-progress", "--variants", "hybrid"]
    capsys.readouterr()
    assert recall.main([*base, "--stage", "train"]) == 2
    assert "not trained yet; run this command with --stage autoencoder first" in capsys.readouterr().err
    assert recall.main([*base, "--stage", "autoencoder"]) == 0
    assert recall.main([*base, "--stage", "score"]) == 0
    assert "hybrid: trained 0 of 2 steps, not scored" in capsys.readouterr().out
    assert recall.main([*base, "--stage", "train"]) == 0
    assert "hybrid: trained 2 of 2 steps" in capsys.readouterr().out
    assert not (tmp / "spread" / "hybrid" / "recall.json").exists()  # training jobs score nothing
    assert recall.main([*base, "--stage", "score"]) == 0
    for name in ("_ae/autoencoder.pt", "hybrid/checkpoint.pt"):
        a, b = torch_load(tmp / "sweep" / name), torch_load(tmp / "spread" / name)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    scored = json.loads((tmp / "spread_out" / "recall.json").read_text())
    assert list(scored["variants"]) == ["hybrid"]
    one_command = json.loads((tmp / "sweep" / "hybrid" / "recall.json").read_text())
    assert scored["variants"]["hybrid"]["scores"] == one_command["scores"]


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recall.main(["--variants", "hybrid", "nope"])
    assert "unknown variant(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recall.main(["--episodes", str(tmp_path / "missing"), "--heldout-episodes", str(tmp_path)])
    err = capsys.readouterr().err
    assert "missing: no such folder; collect them with" in err and "--policy revisit" in err
    with pytest.raises(SystemExit):
        recall.main(["--episodes", str(tmp_path), "--heldout-episodes", str(tmp_path)])
    assert "that is the training folder" in capsys.readouterr().err
    assert recall.main(["--collect-commands"]) == 0
    assert capsys.readouterr().out.count("python -m envs.collect") == 2


def test_quick_mode_writes_toy_data_and_results_into_its_folder(tmp_path):
    """--quick: toy revisit episodes, the tiny preset and 3 steps, everything under --out (one variant here)."""
    assert recall.main(["--quick", "--variants", "hybrid", "--out", str(tmp_path), "--no-progress"]) == 0
    res = json.loads((tmp_path / "recall.json").read_text())
    assert res["preset"] == "tiny" and res["steps"] == recall.QUICK_TOY["steps_per_variant"]
    assert list(res["variants"]) == ["hybrid"] and (tmp_path / "sweep" / "hybrid" / "checkpoint.pt").is_file()
    assert len(list((tmp_path / "toy_episodes").glob("*.npz"))) == recall.QUICK_TOY["train"]
