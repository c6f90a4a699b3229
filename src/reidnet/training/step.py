"""One training step, top to bottom, and the choice of the module it runs (compiled or eager).

Whether torch.compile works here is decided before the first real step, by a warm-up forward and
backward of the compiled module on a batch of random images (outside DDP, weights and BatchNorm
statistics restored afterwards). A compilation error there means eager training; any other error
is a real one and propagates. Under DDP this keeps the reducer out of a failed first step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from reidnet.errors import ReidnetError
from reidnet.training import distributed
from reidnet.utils.devices import autocast_for

if TYPE_CHECKING:
    from reidnet.training.parts import RunParts

logger = logging.getLogger("reidnet.training.trainer")


def train_step(
    parts: RunParts, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """zero_grad, forward, loss, backward, clip, step: the loss terms (on the device)."""
    images = images.to(parts.device, non_blocking=True)
    labels = labels.to(parts.device, non_blocking=True)
    if parts.device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    optimizers = [parts.optimizer, parts.center_optimizer]
    for optimizer in filter(None, optimizers):
        optimizer.zero_grad(set_to_none=True)
    with autocast_for(parts.device, parts.spec.train.amp):
        cls_score, features = parts.forward(images)
        terms = parts.criterion(cls_score.float(), features.float(), labels)
    parts.scaler.scale(terms["total"]).backward()
    if parts.spec.train.grad_clip > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.spec.train.grad_clip)
    parts.scaler.step(parts.optimizer)
    if parts.center_optimizer is not None:
        _step_centers(parts)
    parts.scaler.update()
    terms["accuracy"] = (cls_score.detach().argmax(1) == labels).float().mean()
    return terms


def _step_centers(parts: RunParts) -> None:
    """The center loss enters the total scaled by its weight; its centers learn with center_lr
    on the unweighted gradient, as in the strong baseline."""
    parts.scaler.unscale_(parts.center_optimizer)
    centers = list(parts.criterion.center_loss.parameters())
    if parts.dist.enabled:  # DDP averages the model's gradients, not these
        distributed.average_gradients(centers)
    weight = parts.spec.train.optim.center_loss_weight
    if weight > 0:  # weight 0: the centers get no gradient from the total, nothing to undo
        for parameter in centers:
            if parameter.grad is not None:
                parameter.grad.mul_(1.0 / weight)
    parts.scaler.step(parts.center_optimizer)


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "torch.compile cannot work here" (no compiler, no backend);
    imported when asked, so importing the trainer does not load the compiler."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    return (TorchDynamoException, InductorError)


def warm_up(
    model: torch.nn.Module,
    forward: torch.nn.Module,
    batch_shape: tuple[int, ...],
    device: torch.device,
    amp: bool,
) -> None:
    """One forward and backward of `forward` (the model, or it compiled) on random images of
    the training batch's shape; `model`'s weights, BatchNorm statistics and gradients are as
    before afterwards. On CUDA the caching allocator keeps the step's memory, so what is free
    afterwards (the share the decoded training images may take) leaves room for the model."""
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    images = torch.randn(batch_shape, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.train()
    try:
        with autocast_for(device, amp):
            outputs = forward(images)
        sum(output.float().mean() for output in outputs).backward()
    except torch.OutOfMemoryError as error:
        del images
        raise ReidnetError(_out_of_memory(batch_shape, device, amp)) from error
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _out_of_memory(batch_shape: tuple[int, ...], device: torch.device, amp: bool) -> str:
    """What to change when one training step does not fit: said before any data was decoded
    or any checkpoint written, so nothing is lost."""
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    size = f"{total / 2**30:.0f} GiB " if total else ""
    return (
        f"one training step of {batch_shape[0]} images at {batch_shape[2]}x{batch_shape[3]} does "
        f"not fit in the {size}memory of {device}: lower dataset.batch_size (per GPU under "
        "torchrun) or model.input_height/input_width"
        + ("" if amp else ", or set train.amp=true (bf16 halves the activations)")
        + "; nothing was trained or written yet"
    )


def compiled_or_eager(
    model: torch.nn.Module,
    batch_shape: tuple[int, ...],
    device: torch.device,
    amp: bool,
) -> torch.nn.Module:
    """`torch.compile(model)` if a warm-up step with it compiles, else `model` itself."""
    compiled = torch.compile(model, dynamic=False)
    try:
        warm_up(model, compiled, batch_shape, device, amp)
    except compile_errors() as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        logger.warning(
            "torch.compile failed (%s: %s); training continues without compilation "
            "(train.compile=false skips the attempt)",
            type(error).__name__,
            first_line,
        )
        return model
    return compiled
