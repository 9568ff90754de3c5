"""Training on PyTorch's distributed engine (gloo on the CPU, 2 processes): one DDP step equals one process's step,
with and without gradient accumulation; torchrun runs resume on 2 processes and on 1; only rank 0 writes."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ddp_workers
import pytest
import torch
import torch.multiprocessing as mp

from worldmodel import distributed
from worldmodel.train import TRAIN_PRESETS, train
from worldmodel.utils import torch_load

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# the script under torchrun imports our modules from this checkout (not an installed copy), as `python -m` would
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(HERE)) if p)}
TIMEOUT_S = 300  # seconds: a run takes seconds; this only stops a hung one
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32 sums in another order: the only difference allowed


def _max_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two dicts of tensors with the same keys (non-float ones equal)."""
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())


def test_one_ddp_step_equals_one_process_with_the_global_batch(synthetic_episodes, tmp_path):
    """2 gloo processes with global batch 8 (4 each, or 2 x 2 accumulated) give the loss, logs and gradients of 1
    process with batch 8, for the world model and the autoencoder."""
    eps = synthetic_episodes(n=3, steps=16)
    runs = [(8, 4), (8, 2)]  # (global batch, micro batch): no accumulation, then 2 micro-batches per process
    mp.spawn(
        ddp_workers.parity_worker,
        args=(2, str(tmp_path / "init"), str(eps), str(tmp_path), runs),
        nprocs=2,
        join=True,
    )
    ref = ddp_workers.one_step(eps, batch=8, micro=8)  # one process, no process group, the whole batch at once
    assert not distributed.current().distributed
    for batch, micro in runs:
        ddp = torch.load(tmp_path / f"ddp_{batch}_{micro}.pt", weights_only=True)
        for part in ("grads", "ae_grads"):
            diff = _max_diff(ddp[part], ref[part])
            scale = max(float(g.abs().max()) for g in ref[part].values())
            print(
                f"{part}, 2 processes x micro batch {micro}: max |difference| {diff:.2e} (largest gradient {scale:.2e})"
            )
            for k in ref[part]:
                torch.testing.assert_close(ddp[part][k], ref[part][k], **TOLERANCE, msg=f"{part} {k}")
        for part in ("logs", "ae_logs"):
            for k, v in ref[part].items():
                print(f"{k}: 1 process {v:.8f}, 2 processes {ddp[part][k]:.8f}")
                assert ddp[part][k] == pytest.approx(v, rel=1e-5), k
    assert 0.0 < ref["logs"]["wm/noised_frac"] <= 1.0


def test_the_others_do_not_wait_for_rank_0s_final_evaluation_at_a_timed_collective(synthetic_episodes, tmp_path):
    """Rank 0's final evaluation may take longer than a collective's timeout (a paper-scale one covers every
    training episode): the other processes return after training instead of timing out at a barrier (which made
    torchrun stop rank 0 before it wrote eval.json)."""
    eps = synthetic_episodes(n=3, steps=16)
    run = tmp_path / "run"
    timeout_s, eval_s = 8.0, 16.0
    mp.spawn(
        ddp_workers.slow_final_evaluation_worker,
        args=(2, str(tmp_path / "init"), str(eps), str(run), timeout_s, eval_s),
        nprocs=2,
        join=True,
    )
    assert json.loads((run / "eval.json").read_text())["processes"] == 2


def test_accumulation_and_the_global_batch_must_divide():
    """batch = micro batch x accumulation x processes; numbers that do not divide are named."""
    assert distributed.accumulation(16, None, 2) == (8, 1)
    assert distributed.accumulation(16, 2, 2) == (2, 4)
    with pytest.raises(ValueError, match=r"batch_size=10 \(the global batch\) does not divide among 4 processes"):
        distributed.accumulation(10, None, 4)
    with pytest.raises(ValueError, match=r"micro batch 3 does not divide the 8 samples of each of the 2"):
        distributed.accumulation(16, 3, 2)
    with pytest.raises(ValueError, match=r"TrainConfig.micro_batch=0"):
        dataclasses.replace(TRAIN_PRESETS["tiny"], micro_batch=0)


def _torchrun(audit: Path, watched: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ddp_workers.py AUDIT WATCHED -- ARGS` from the repo root."""
    audit.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(HERE / "ddp_workers.py"), str(audit), str(watched), "--", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _writes(audit: Path) -> dict[int, list[str]]:
    return {r: json.loads((audit / f"rank{r}.json").read_text())["writes"] for r in (0, 1)}


def test_two_process_runs_resume_on_two_and_on_one_and_only_rank_0_writes(synthetic_episodes, tmp_path):
    """torchrun, 2 processes: a run stopped at step 3 resumes to 6 on 2 processes, and its step-3 checkpoint
    resumes to 6 in 1 process; both end where a 1-process run of 6 steps ends. Rank 1 writes no file."""
    eps = synthetic_episodes(n=3, steps=16)
    steps = {"--steps": "6", "--batch-size": "4", "--ae-steps": "4", "--ae-batch-size": "8", "--ckpt-every": "1"}
    args = ["--preset", "tiny", "--device", "cpu", "--threads", "1", "--episodes", str(eps)]
    args += [x for kv in steps.items() for x in kv]
    two = tmp_path / "runs" / "two"
    _torchrun(tmp_path / "audit1", tmp_path / "runs", [*args, "--run-dir", str(two), "--stop-after", "3"])
    first = torch_load(two / "checkpoint.pt")
    assert first["step"] == 3 and first["world_size"] == 2
    writes = _writes(tmp_path / "audit1")
    print(f"rank 0 wrote {len(writes[0])} times, rank 1 {len(writes[1])}")
    assert writes[1] == [] and any("checkpoint.pt" in w for w in writes[0])  # the audit sees rank 0's writes
    one = tmp_path / "one"
    shutil.copytree(two, one)

    _torchrun(tmp_path / "audit2", tmp_path / "runs", [*args, "--run-dir", str(two), "--resume"])
    assert _writes(tmp_path / "audit2")[1] == []
    cfg = dataclasses.replace(TRAIN_PRESETS["tiny"], steps=6, batch_size=4, ae_steps=4, ae_batch_size=8)
    train(cfg, eps, one, resume=True, device="cpu", progress=False)  # the 2-process checkpoint, in 1 process
    train(cfg, eps, tmp_path / "single", device="cpu", progress=False)  # 1 process all along
    runs = {name: torch_load(folder / "checkpoint.pt") for name, folder in (("two", two), ("one", one))}
    single = torch_load(tmp_path / "single" / "checkpoint.pt")
    losses = {
        name: [h["wm/loss"] for h in json.loads((folder / "eval.json").read_text())["history_tail"]]
        for name, folder in (("two", two), ("one", one), ("single", tmp_path / "single"))
    }
    print("losses of steps 4-6:", json.dumps({k: v[-3:] for k, v in losses.items()}))
    for name, ck in runs.items():
        assert ck["step"] == 6
        diff = _max_diff(ck["model"], single["model"])
        print(f"{name}: weights differ from the 1-process run by at most {diff:.2e}")
        assert diff < 1e-5, name
        assert losses[name][-3:] == pytest.approx(losses["single"][-3:], rel=1e-5), name  # the resumed steps
    assert json.loads((two / "eval.json").read_text())["processes"] == 2
    assert not list(two.glob(".*.tmp"))
