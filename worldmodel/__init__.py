"""worldmodel: the long-context hybrid video world model (block-wise Mamba2 + frame-local attention).

    import worldmodel
    model = worldmodel.load("runs/demo/checkpoint.pt")     # trained WorldModel, eval mode, EMA weights
    out = model.rollout(context_frames, context_actions, future_actions)

Submodules are imported lazily so `import worldmodel` stays cheap and never needs optional kernels.
"""


def load(
    path,
    device="auto",
    ema: bool = True,
    sampling_steps: int | None = None,
    context_noise: float | None = None,
    guidance: float | None = None,
):
    """Load a trained world model from RUN_DIR/checkpoint.pt (see :func:`worldmodel.model.load`)."""
    from .model import load as _load  # lazy on purpose: `import worldmodel` must not import torch

    return _load(
        path, device=device, ema=ema, sampling_steps=sampling_steps, context_noise=context_noise, guidance=guidance
    )
