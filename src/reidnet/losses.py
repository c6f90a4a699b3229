"""Training losses of the strong baseline: label-smoothed identity loss, batch-hard triplet loss,
center loss, and ``ReidLoss``, which combines them the way a spec asks.

All losses compute in float32 whatever the autocast dtype of their inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reidnet.contracts import MetricLossType, Sampler


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against ``(1 - epsilon) * onehot + epsilon / num_classes`` targets."""

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        self.num_classes = num_classes
        self.epsilon = epsilon

    def forward(self, cls_score: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if cls_score.shape[1] != self.num_classes:
            raise ValueError(
                f"got scores for {cls_score.shape[1]} classes, the loss expects {self.num_classes}"
            )
        # torch's label_smoothing is exactly this target distribution, fused.
        return F.cross_entropy(cls_score.float(), labels, label_smoothing=self.epsilon)


def pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """[N, N] Euclidean distances, through the Gram matrix; squared values clamped at 1e-12 so
    the square root keeps a finite gradient on the diagonal.

    The Gram matrix is computed in float64: autocast would run it in half precision, and with
    `torch.set_float32_matmul_precision("high")` (set for training on CUDA) a float32 matmul
    runs in TF32, a 10-bit mantissa. ||a||^2 + ||b||^2 - 2ab cancels almost everything for close
    features, so either loses all their digits; float64 never takes TF32. An [N, D] batch costs
    N^2 D multiply-adds, nothing next to the network.
    """
    with torch.autocast(features.device.type, enabled=False):
        exact = features.double()
        squared_norms = exact.pow(2).sum(1, keepdim=True)
        squared = squared_norms + squared_norms.T - 2.0 * exact @ exact.T
        return squared.clamp(min=1e-12).sqrt().to(torch.float32)


class TripletOutput(NamedTuple):
    loss: torch.Tensor
    dist_ap: torch.Tensor  # [N] hardest-positive distance of each anchor
    dist_an: torch.Tensor  # [N] hardest-negative distance of each anchor


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on unnormalised features.

    For each anchor: its farthest same-label sample and its nearest other-label sample.
    ``margin`` gives ``mean(relu(d_ap - d_an + margin))``; ``margin=None`` the soft margin
    ``mean(softplus(d_ap - d_an))``. An anchor with no negative in the batch contributes 0.
    """

    def __init__(self, margin: float | None = 0.3) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> TripletOutput:
        dist = pairwise_euclidean(features)
        same = labels[:, None] == labels[None, :]
        dist_ap = dist.masked_fill(~same, float("-inf")).amax(1)
        dist_an = dist.masked_fill(same, float("inf")).amin(1)
        if self.margin is None:
            loss = F.softplus(dist_ap - dist_an).mean()
        else:
            loss = F.relu(dist_ap - dist_an + self.margin).mean()
        return TripletOutput(loss, dist_ap, dist_an)


class CenterLoss(nn.Module):
    """Center loss as in BoT: ``sum_i clamp(||x_i - c_{y_i}||^2, 1e-12, 1e12) / batch_size``.

    The centers are a parameter; the strong baseline updates them with their own SGD optimizer
    (``train.optim.center_lr``), dividing their gradient by ``center_loss_weight`` first.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        offsets = features.float() - self.centers.float()[labels]
        squared = offsets.pow(2).sum(1).clamp(min=1e-12, max=1e12)
        return squared.sum() / features.shape[0]


class ReidLoss(nn.Module):
    """The training objective of a spec, returning its named terms and their weighted total.

    * identity loss ("id") when ``sampler`` is softmax or softmax_triplet, label-smoothed
      (epsilon 0.1) when ``label_smooth``;
    * triplet loss ("triplet") when ``sampler`` is triplet or softmax_triplet and
      ``metric_loss_type`` is triplet or triplet_center;
    * center loss ("center") when ``with_center_loss``; metric types "center" and
      "triplet_center" require it.

    The dict holds each term unweighted; "total" weighs them by ``id_loss_weight``,
    ``triplet_loss_weight`` and ``center_loss_weight``.

    ``center_loss`` is None when unused; its parameters belong in a separate optimizer.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        metric_loss_type: MetricLossType = "triplet",
        sampler: Sampler = "softmax_triplet",
        label_smooth: bool = True,
        triplet_margin: float | None = 0.3,
        with_center_loss: bool = False,
        center_loss_weight: float = 0.0005,
        id_loss_weight: float = 1.0,
        triplet_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.id_loss_weight = id_loss_weight
        self.triplet_loss_weight = triplet_loss_weight
        self.center_loss_weight = center_loss_weight
        self.id_loss = (
            CrossEntropyLabelSmooth(num_classes, 0.1 if label_smooth else 0.0)
            if sampler in ("softmax", "softmax_triplet")
            else None
        )
        uses_triplet = sampler in ("triplet", "softmax_triplet") and metric_loss_type != "center"
        self.triplet_loss = TripletLoss(triplet_margin) if uses_triplet else None
        self.center_loss = CenterLoss(num_classes, feat_dim) if with_center_loss else None

    def forward(
        self, cls_score: torch.Tensor, global_feat: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        total = global_feat.new_zeros((), dtype=torch.float32)
        if self.id_loss is not None:
            terms["id"] = self.id_loss(cls_score, labels)
            total = total + self.id_loss_weight * terms["id"]
        if self.triplet_loss is not None:
            terms["triplet"] = self.triplet_loss(global_feat, labels).loss
            total = total + self.triplet_loss_weight * terms["triplet"]
        if self.center_loss is not None:
            terms["center"] = self.center_loss(global_feat, labels)
            total = total + self.center_loss_weight * terms["center"]
        terms["total"] = total
        return terms
