"""The backbone's streaming state as a library object: walk it, measure it, and fork, pick or write back dreams.

A state is what `Backbone.init_state` / `prefill` / `step` carry between frames: a nested dict/list of tensors
(layout in worldmodel/backbone.py, "State layout") in which EVERY tensor holds the batch of dreams on axis 0,
per-dream frame counters included. That one rule makes dreams separable, which the dream env (refilling a
finished slot) and the planners (N imagined futures from one real history) build on:

    many = state_repeat(state, n)             # B dreams -> B*n (each dream repeated n times, in order)
    some = state_take(many, index, batch)     # the dreams `index` (K,) of a batch, as a K-dream state
    both = state_put(many, index, sub, batch) # a copy with dreams `index` replaced by the K dreams of `sub`

None of these modifies its input (the backbone's `step` does not either), so a planner can fork freely.

Axis legend: B dreams in a batch, K dreams picked, n copies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["map_state", "state_nbytes", "state_batch_size", "state_take", "state_put", "state_repeat"]


def map_state(fn: Callable[[Tensor], Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor of a (nested dict/list) state, e.g. ``lambda t: t.to(device)`` or
    ``lambda t: t.repeat_interleave(n, 0)`` (every tensor has the batch on axis 0)."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(fn, v) for v in state)
    return state


def state_nbytes(state: Any) -> int:
    """Bytes held by the tensors of a state (the exact cache size)."""
    total = 0

    def add(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    map_state(add, state)
    return total


def state_batch_size(state: Any) -> int:
    """The number of dreams B in a state (axis 0 of its tensors); ValueError if they disagree or there are none."""
    sizes: set[int] = set()

    def see(t: Tensor) -> Tensor:
        sizes.add(int(t.shape[0]) if t.dim() else -1)
        return t

    map_state(see, state)
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"not a batched backbone state: its tensors' axis-0 sizes are {sorted(sizes)}")
    return sizes.pop()


def _check_batch(x: Tensor, batch: int) -> None:
    if x.dim() == 0 or x.shape[0] != batch:
        raise ValueError(
            f"backbone state tensor of shape {tuple(x.shape)} has no batch axis of {batch} dreams on axis 0"
        )


def _check_index(index: Tensor, batch: int) -> Tensor:
    index = torch.as_tensor(index)
    if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"index must be a 1-d integer tensor of dream slots, got {index.dtype} {tuple(index.shape)}")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= batch):
        raise ValueError(f"index {index.tolist()} out of range for a batch of {batch} dreams")
    return index.long()


def state_take(state: Any, index: Tensor, batch: int) -> Any:
    """The dreams ``index`` (K,) of a batched state of ``batch`` dreams, as a state of K dreams (a copy)."""
    index = _check_index(index, batch)

    def take(x: Tensor) -> Tensor:
        _check_batch(x, batch)
        return x[index.to(x.device)]  # (K, ...)

    return map_state(take, state)


def state_repeat(state: Any, n: int) -> Any:
    """Each of the B dreams repeated ``n`` times in place: B -> B*n dreams, copies of dream b at b*n .. b*n+n-1
    (``repeat_interleave``), so a planner can imagine n futures from every real history."""
    if int(n) < 1:
        raise ValueError(f"n={n!r}: expected at least one copy")
    return map_state(lambda x: x.repeat_interleave(int(n), dim=0), state)  # (B*n, ...)


def state_put(state: Any, index: Tensor, sub: Any, batch: int) -> Any:
    """A copy of the batched state with dreams ``index`` (K,) replaced by the K-dream state ``sub``.

    Both states must have the same per-dream shapes: true for every backbone with bounded caches; the
    full-attention baseline ("causal_full"), whose KV cache grows with the frames seen, cannot mix dreams.
    """
    index = _check_index(index, batch)

    def walk(x, y, where):
        if isinstance(x, Tensor):
            _check_batch(x, batch)
            if not isinstance(y, Tensor) or tuple(x.shape[1:]) != tuple(y.shape[1:]) or y.shape[0] != len(index):
                shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(
                    f"backbone state {where}: cannot write dreams of shape {shape} into a batch of "
                    f"shape {tuple(x.shape)} at {len(index)} slot(s) (a cache that grows with the frames seen, "
                    f"e.g. the causal_full baseline, cannot be refilled per dream)"
                )
            out = x.clone()
            out[index.to(x.device)] = y.to(device=x.device, dtype=x.dtype)  # (K, ...) into (B, ...)
            return out
        if isinstance(x, dict):
            if not isinstance(y, dict) or set(x) != set(y):
                raise ValueError(
                    f"backbone state {where}: keys differ: {sorted(x)} vs "
                    f"{sorted(y) if isinstance(y, dict) else type(y).__name__}"
                )
            return {key: walk(x[key], y[key], f"{where}.{key}") for key in x}
        if isinstance(x, (list, tuple)):
            if not isinstance(y, (list, tuple)) or len(x) != len(y):
                raise ValueError(
                    f"backbone state {where}: lengths differ: {len(x)} vs "
                    f"{len(y) if isinstance(y, (list, tuple)) else type(y).__name__}"
                )
            out = [walk(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(x, y))]
            return out if isinstance(x, list) else tuple(out)
        if x != y:
            raise ValueError(
                f"backbone state {where}: a shared non-tensor value differs between dreams "
                f"({x!r} vs {y!r}): dreams cannot be refilled independently"
            )
        return x

    return walk(state, sub, "state")
