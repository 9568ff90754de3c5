"""PyTorch's distributed engine for the training jobs: one process per device, gradients averaged by
DistributedDataParallel (DDP), processes started by ``torchrun``.

    python -m worldmodel.train ...                               one process, no process group (as always)
    torchrun --nproc_per_node=2 -m worldmodel.train ...          2 processes on this machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m worldmodel.train ...

:func:`session` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), starts the default process group with the device's backend (nccl on CUDA, gloo otherwise),
binds the process to its GPU (``cuda:LOCAL_RANK``) and ends the group when the job ends. Without torchrun's
variables it starts nothing: the job is one process of rank 0. The jobs ask :func:`current` for their rank and
the number of processes, write files only on the main process (rank 0), and use the helpers below, each a no-op
in a single process: :func:`barrier`, :func:`all_reduce_sum`, :func:`from_main` (run a function on rank 0 and
hand its result, or its exception, to every process), :func:`wrap` (DDP around a model's ``loss``) and
:func:`accumulation` (a global batch split into processes x accumulated micro-batches).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .utils import resolve_device

__all__ = [
    "TORCHRUN_VARIABLES",
    "Context",
    "LossModule",
    "accumulation",
    "all_reduce_sum",
    "backend_for",
    "barrier",
    "current",
    "from_main",
    "launched_by_torchrun",
    "micro_batch_context",
    "session",
    "wrap",
]

T = TypeVar("T")

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment variables torchrun sets in every process it starts."""
TIMEOUT = timedelta(minutes=60)
"""How long a process waits for the others at a collective (rank 0 evaluates and writes while they wait)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group of more than one process is running."""
        return self.world_size > 1


def current() -> Context:
    """This process's rank and the number of processes of the running process group (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return Context(rank=dist.get_rank(), world_size=dist.get_world_size())
    return Context()


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher setting the same variables) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def backend_for(device: torch.device) -> str:
    """The process group backend of ``device``: nccl for CUDA, gloo for the CPU (and anything else)."""
    return "nccl" if device.type == "cuda" else "gloo"


def _local_device(device: str | torch.device, local_rank: int) -> torch.device:
    """``device`` resolved; a CUDA device without an index becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


@contextlib.contextmanager
def session(device: str | torch.device = "auto") -> Iterator[tuple[Context, torch.device]]:
    """The job's process group for the ``with`` block: ``(context, device)``.

    Under torchrun: the default process group is started (nccl on CUDA, gloo on the CPU, chosen from ``device``),
    a CUDA process is bound to ``cuda:LOCAL_RANK``, and the group is destroyed when the block ends. Otherwise (a
    plain ``python -m ...``), or when a group is already running (its owner ends it), nothing is started."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        local_rank = int(os.environ.get("LOCAL_RANK", 0)) if launched_by_torchrun() else 0
        yield current(), _local_device(device, local_rank)
        return
    if not dist.is_available():
        raise RuntimeError("torchrun started this job, but this torch build has no torch.distributed")
    dev = _local_device(device, int(os.environ["LOCAL_RANK"]))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend_for(dev), timeout=TIMEOUT)
    try:
        yield current(), dev
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (a no-op in one process)."""
    if current().distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the processes, in place (returned; unchanged in one process). With nccl the tensor
    must be on this process's GPU."""
    if current().distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def from_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run on rank 0 only; every process returns its result, or raises the exception it
    raised (so a refusal on rank 0 stops every process with the same message, instead of leaving them waiting).
    The result and the exception travel pickled between our own processes (``broadcast_object_list``)."""
    ctx = current()
    if not ctx.distributed:
        return fn(*args, **kwargs)
    box: list[Any] = [None]
    original: Exception | None = None
    if ctx.is_main:
        try:
            box[0] = ("ok", fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001  (handed to every process, raised there and here)
            original, box[0] = e, ("error", _portable(e))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if original is not None:
        raise original
    if kind == "error":
        raise value
    return value


def _portable(error: Exception) -> Exception:
    """``error`` itself when it survives pickling, else an exception of its nearest built-in kind with its message
    (an exception whose ``__init__`` takes other arguments than its message cannot be rebuilt from a pickle)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        for kind in (FileNotFoundError, FileExistsError, OSError, ValueError, RuntimeError):
            if isinstance(error, kind):
                return kind(str(error))
        return RuntimeError(f"{type(error).__name__}: {error}")


class LossModule(nn.Module):
    """A model whose ``forward`` is its ``loss`` method, so DistributedDataParallel (which hooks ``forward``)
    averages the gradients of the loss. ``module`` is the model itself (its state dict has the model's keys)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model

    def forward(self, *args: Any, **kwargs: Any):
        """``module.loss(*args, **kwargs)``."""
        return self.module.loss(*args, **kwargs)


def wrap(model: nn.Module, device: torch.device) -> Callable[..., Any]:
    """What a training loop calls for its loss: ``model.loss`` in one process; under a process group, that loss
    through DistributedDataParallel (gradients averaged over the processes during ``backward``; parameters
    broadcast from rank 0 here, so every process starts from the same weights). Frozen parameters
    (``requires_grad=False``) are left out by DDP; buffers are synced once here, not at every forward (every
    process computes the same)."""
    if not current().distributed:
        return model.loss
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossModule(model), device_ids=ids, forward_sync_buffers=False)


def micro_batch_context(loss_fn: Callable[..., Any], last: bool) -> contextlib.AbstractContextManager:
    """Around the forward and backward of one micro-batch: DDP's ``no_sync`` (gradients only accumulated) for
    all but the ``last`` micro-batch of an optimiser step, whose backward averages them over the processes."""
    if last or not isinstance(loss_fn, DistributedDataParallel):
        return contextlib.nullcontext()
    return loss_fn.no_sync()


def accumulation(batch: int, micro_batch: int | None, world_size: int, what: str = "batch_size") -> tuple[int, int]:
    """``(micro_batch, accumulation_steps)`` with ``batch = micro_batch x accumulation_steps x world_size``.

    ``micro_batch`` None: each process's whole share at once (no accumulation). A ValueError naming the numbers
    when they do not divide."""
    if batch % world_size:
        raise ValueError(
            f"{what}={batch} (the global batch) does not divide among {world_size} processes: give a multiple of "
            f"{world_size}"
        )
    share = batch // world_size
    micro = share if micro_batch is None else micro_batch
    if isinstance(micro, bool) or not isinstance(micro, int) or micro < 1 or share % micro:
        raise ValueError(
            f"micro batch {micro_batch!r} does not divide the {share} samples of each of the {world_size} "
            f"process(es) ({what}={batch} = micro batch x accumulation steps x {world_size} processes): give a "
            f"divisor of {share}"
        )
    return micro, share // micro
