"""What the distributed-training tests run in each process: a one-step gradient check and a run whose final evaluation
outlasts the collective timeout (torch.multiprocessing), and,
as a script under torchrun, ``python -m worldmodel.train`` with a record of every file this process writes.

    torchrun --standalone --nproc_per_node 2 tests/worldmodel/ddp_workers.py AUDIT_DIR WATCHED_DIR -- TRAIN_ARGS...
"""

import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import worldmodel.train as train_module
from worldmodel import distributed
from worldmodel.autoencoder import Autoencoder
from worldmodel.model import WorldModel, world_model_config
from worldmodel.train import TRAIN_PRESETS, LatentEpisodes, accumulate_gradients
from worldmodel.train import main as train_main
from worldmodel.train_autoencoder import accumulate_gradients as accumulate_ae_gradients

CPU = torch.device("cpu")
STEP = 3  # the optimiser step whose gradients are compared (any step: its batch follows from seed and step)


def one_step(episodes: Path, batch: int, micro: int) -> dict:
    """The world model's and the autoencoder's loss and gradients of one global batch of ``batch`` windows (frames),
    ``micro`` per forward/backward pass, in this process (the process group, if any, already running)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = world_model_config("tiny")
    model = WorldModel(cfg)  # an untrained autoencoder is a fine encoder for a gradient check
    for p in model.autoencoder.parameters():
        p.requires_grad_(False)
    train_cfg = dataclasses.replace(TRAIN_PRESETS["tiny"], batch_size=batch)
    data = LatentEpisodes(model, sorted(episodes.glob("*.npz")), min_frames=12, progress=False)
    logs = accumulate_gradients(
        distributed.wrap(model, torch.device("cpu")), model, data, train_cfg, STEP, micro, "cpu"
    )
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    ae = Autoencoder(cfg.autoencoder).train()
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, generator=gen)
    noise = torch.randn((batch, *cfg.autoencoder.latent_shape), generator=gen)
    ae_logs = accumulate_ae_gradients(distributed.wrap(ae, CPU), frames, noise, micro, CPU)
    ae_grads = {n: p.grad.clone() for n, p in ae.named_parameters()}
    return {"logs": logs, "grads": grads, "ae_logs": ae_logs, "ae_grads": ae_grads}


def parity_worker(rank: int, world: int, init_file: str, episodes: str, out: str, runs: list) -> None:
    """torch.multiprocessing.spawn target: join a gloo group of ``world`` processes, then for each (batch, micro)
    of ``runs`` compute one step; rank 0 saves the results to OUT/ddp_{batch}_{micro}.pt."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for batch, micro in runs:
            res = one_step(Path(episodes), batch, micro)
            if rank == 0:
                torch.save(res, Path(out) / f"ddp_{batch}_{micro}.pt")
    finally:
        dist.destroy_process_group()


def slow_final_evaluation_worker(
    rank: int, world: int, init_file: str, episodes: str, run_dir: str, timeout_s: float, eval_s: float
) -> None:
    """torch.multiprocessing.spawn target: a tiny 2-step ``train`` in a gloo group whose collectives time out after
    ``timeout_s`` seconds, rank 0's final evaluation taking ``eval_s`` seconds longer (as a paper-scale one takes
    hours): every process must still return (the others must not wait for it at a timed collective)."""
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timeout)
    real = train_module.evaluate

    def slow(*args, **kwargs):
        time.sleep(eval_s)
        return real(*args, **kwargs)

    train_module.evaluate = slow
    try:
        cfg = dataclasses.replace(TRAIN_PRESETS["tiny"], steps=2, batch_size=4, ae_steps=2, ae_batch_size=8)
        _, res = train_module.train(cfg, Path(episodes), Path(run_dir), device="cpu", progress=False)
        assert res["steps"] == 2
    finally:
        train_module.evaluate = real
        dist.destroy_process_group()


def _audit(watched: Path, written: list[str]):
    """An audit hook recording every write under ``watched``: files opened for writing, renames, removals, new
    folders (pathlib, open, numpy, torch.save, tensorboard all go through these events)."""
    root = str(watched.resolve())

    def under(path) -> bool:
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(root)
        except (TypeError, ValueError):
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = (args[1] or "r"), (args[2] or 0)
            if (any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)) and under(
                args[0]
            ):
                written.append(f"open {args[0]}")
        elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "os.truncate") and args and under(args[0]):
            written.append(f"{event} {args[0]}")

    return hook


def main(argv: list[str]) -> int:
    """Script mode (under torchrun): run worldmodel.train.main(TRAIN_ARGS) recording this process's writes under
    WATCHED_DIR, then write AUDIT_DIR/rank{RANK}.json: {"writes": [...], "exit": status}."""
    audit_dir, watched, rest = Path(argv[0]), Path(argv[1]), argv[argv.index("--") + 1 :]
    written: list[str] = []
    sys.addaudithook(_audit(watched, written))
    status = train_main(rest)
    record = {"writes": list(written), "exit": status}
    (audit_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    return 0 if status == 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
