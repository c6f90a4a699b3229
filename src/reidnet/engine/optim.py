"""Optimizers and learning-rate schedules of the strong-baseline recipe, stepped per epoch."""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from reidnet.config import OptimConfig


def build_optimizer(model: nn.Module, optim: OptimConfig, fused: bool = False):
    """Adam / AdamW / SGD with one parameter group per (lr, weight decay) pair.

    Biases get `base_lr * bias_lr_factor` and `weight_decay_bias`, as in the reference. Frozen
    parameters (the BNNeck bias) are left out.
    """
    weights, biases = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (biases if name.endswith("bias") else weights).append(parameter)
    groups = [
        {"params": weights, "lr": optim.base_lr, "weight_decay": optim.weight_decay},
        {
            "params": biases,
            "lr": optim.base_lr * optim.bias_lr_factor,
            "weight_decay": optim.weight_decay_bias,
        },
    ]
    groups = [g for g in groups if g["params"]]
    for group in groups:
        group["initial_lr"] = group["lr"]
    extra = {"fused": True} if fused else {}
    if optim.name == "SGD":
        return torch.optim.SGD(groups, momentum=optim.momentum, **extra)
    optimizer_class = torch.optim.AdamW if optim.name == "AdamW" else torch.optim.Adam
    return optimizer_class(groups, **extra)


class EpochSchedule:
    """Learning-rate factor per epoch: warm-up, then multistep decay or cosine annealing.

    Linear warm-up goes from `warmup_factor` at epoch 0 to 1 at `warmup_iters`; constant
    warm-up holds `warmup_factor`. Multistep multiplies by `gamma` at each of `lr_steps`.
    The `cosine` method warms up linearly, then anneals to 0 at `num_epochs`.
    """

    def __init__(self, optim: OptimConfig, num_epochs: int):
        self.method = optim.warmup_method
        self.warmup_factor = optim.warmup_factor
        self.warmup_epochs = optim.warmup_iters
        self.milestones = sorted(optim.lr_steps)
        self.gamma = optim.gamma
        self.num_epochs = num_epochs

    def factor(self, epoch: int) -> float:
        warmup = 1.0
        if epoch < self.warmup_epochs:
            if self.method == "constant":
                warmup = self.warmup_factor
            else:
                alpha = epoch / self.warmup_epochs
                warmup = self.warmup_factor * (1 - alpha) + alpha
        if self.method == "cosine":
            if epoch < self.warmup_epochs:
                return warmup
            span = max(1, self.num_epochs - self.warmup_epochs)
            progress = min(1.0, (epoch - self.warmup_epochs) / span)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return warmup * self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Set every group's lr for `epoch`; returns the first group's lr."""
        factor = self.factor(epoch)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return optimizer.param_groups[0]["lr"]
