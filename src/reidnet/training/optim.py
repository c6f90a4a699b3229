"""Optimizers and learning-rate schedules of the strong-baseline recipe, stepped per epoch."""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from reidnet.config import OptimConfig


def build_optimizer(model: nn.Module, optim: OptimConfig, fused: bool = False):
    """Adam / AdamW / SGD with one parameter group per (lr, weight decay) pair.

    Biases get `base_lr * bias_lr_factor` and `weight_decay_bias`, as in the reference. With
    `large_fc_lr` the classifier gets `2 * base_lr`, as TAO gives it (for ResNet too). Frozen
    parameters (the BNNeck bias) are left out.
    """
    weights, biases, classifier = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if optim.large_fc_lr and name.startswith("classifier."):
            classifier.append(parameter)
        else:
            (biases if name.endswith("bias") else weights).append(parameter)
    groups = [
        {"params": weights, "lr": optim.base_lr, "weight_decay": optim.weight_decay},
        {
            "params": biases,
            "lr": optim.base_lr * optim.bias_lr_factor,
            "weight_decay": optim.weight_decay_bias,
        },
        {"params": classifier, "lr": optim.base_lr * 2, "weight_decay": optim.weight_decay},
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
    """The learning rate of each epoch, indexed as TAO and the strong baseline index it.

    Epochs are numbered from 1, and epoch ``n`` runs at the scheduler state ``last_epoch = n``
    (both step their WarmupMultiStepLR once before the first epoch). Linear warm-up gives epoch
    ``n < warmup_iters`` the factor ``warmup_factor * (1 - n / warmup_iters) + n / warmup_iters``
    (0.109 for epoch 1 with 10 and 0.01), constant warm-up ``warmup_factor``; each of `lr_steps`
    multiplies by `gamma` from that epoch on (epoch 40 is the first at x0.1).

    ``cosine`` is TAO's CosineLRScheduler, which has its own warm-up: epoch ``n`` is at
    ``t = n - 1``; for ``t < warmup_epochs`` the lr rises linearly from ``0.01 * base_lr`` to the
    group's lr, then follows ``lr_min + (lr - lr_min) * (1 + cos(pi * t / num_epochs)) / 2``
    with ``lr_min = 0.002 * base_lr``.
    """

    def __init__(self, optim: OptimConfig, num_epochs: int):
        self.method = optim.warmup_method
        self.warmup_factor = optim.warmup_factor
        self.warmup_iters = optim.warmup_iters
        self.milestones = sorted(optim.lr_steps)
        self.gamma = optim.gamma
        self.num_epochs = num_epochs
        self.base_lr = optim.base_lr
        self.cosine_warmup_epochs = optim.warmup_epochs

    def factor(self, number: int) -> float:
        """Warm-up multistep factor of epoch `number` (1-based)."""
        warmup = 1.0
        if number < self.warmup_iters:
            if self.method == "constant":
                warmup = self.warmup_factor
            else:
                alpha = number / self.warmup_iters
                warmup = self.warmup_factor * (1 - alpha) + alpha
        return warmup * self.gamma ** bisect.bisect_right(self.milestones, number)

    def lr(self, initial_lr: float, number: int) -> float:
        """The lr of a parameter group whose configured lr is `initial_lr`, in epoch `number`."""
        if self.method != "cosine":
            return initial_lr * self.factor(number)
        t = number - 1
        start, floor = 0.01 * self.base_lr, 0.002 * self.base_lr
        if t < self.cosine_warmup_epochs:
            return start + t * (initial_lr - start) / self.cosine_warmup_epochs
        return floor + 0.5 * (initial_lr - floor) * (1 + math.cos(math.pi * t / self.num_epochs))

    def apply(self, optimizer: torch.optim.Optimizer, number: int) -> float:
        """Set every group's lr for epoch `number` (1-based); returns the first group's lr."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr(group["initial_lr"], number)
        return optimizer.param_groups[0]["lr"]
