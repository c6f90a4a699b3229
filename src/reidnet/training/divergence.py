"""A diverging run, caught: the first non-finite loss stops training before its epoch writes
anything, and a loss grown by orders of magnitude is warned about once.

The loop never waits on the GPU for this: each step's check is a device op, read at the epoch's
end together with the loss means.
"""

from __future__ import annotations

import logging

import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import latest_checkpoint
from reidnet.errors import ReidnetError
from reidnet.training import distributed
from reidnet.training.distributed import DistributedContext

logger = logging.getLogger("reidnet.training.trainer")

# A healthy run's loss falls from its first step's (cross-entropy from about ln(identities), the
# triplet loss from the spread of the untrained features), so an epoch 1000 times above it has
# diverged. The floor of 1 keeps a fine-tune that starts near zero loss from warning on noise.
GROWTH_WARNING = 1000.0
GROWTH_FLOOR = 1.0

_NO_STEP = torch.iinfo(torch.int64).max  # no non-finite loss yet


class DivergenceWatch:
    """`see` every step's total loss; `check` each epoch's end (all ranks call it)."""

    def __init__(self, spec: ExperimentSpec, device: torch.device, dist: DistributedContext):
        self.base_lr, self.dist = spec.train.optim.base_lr, dist
        self.results_dir = spec.action_results_dir("train")
        self.first_loss: torch.Tensor | None = None  # the run's first step's: the reference
        self.warned = False
        self._first_bad_step = torch.full((), _NO_STEP, dtype=torch.int64, device=device)

    def see(self, step: int, loss: torch.Tensor) -> None:
        """Remember `step` if its loss is the epoch's first non-finite one (no host sync)."""
        loss = loss.detach()
        if self.first_loss is None:
            self.first_loss = loss.float()
        earliest = self._first_bad_step.clamp(max=step)
        self._first_bad_step = torch.where(torch.isfinite(loss), self._first_bad_step, earliest)

    def check(self, epoch: int, mean_loss: float, lr: float) -> None:
        """Raise if a step of `epoch` had a non-finite loss, before the epoch writes anything;
        warn once if the epoch's mean loss grew GROWTH_WARNING-fold. After the loss means are
        read, so the read waits for nothing more."""
        if self.dist.enabled:  # every rank stops at the same step, or none does
            distributed.minimum_(self._first_bad_step)
        step = int(self._first_bad_step.item())
        if step != _NO_STEP:
            raise ReidnetError(self._stop_message(epoch, step, mean_loss, lr))
        if self.warned or self.first_loss is None or not self.dist.is_main:
            return
        reference = float(self.first_loss)
        if mean_loss > GROWTH_WARNING * max(reference, GROWTH_FLOOR):
            self.warned = True
            logger.warning(
                "the loss is diverging: epoch %d's mean loss %.3g is over %g times the first "
                "step's (%.3g) and the model learns nothing; lower train.optim.base_lr (now %g)",
                epoch + 1,
                mean_loss,
                GROWTH_WARNING,
                reference,
                self.base_lr,
            )

    def _stop_message(self, epoch: int, step: int, mean_loss: float, lr: float) -> str:
        latest = latest_checkpoint(self.results_dir)
        kept = (
            f"the latest checkpoint, {latest}, is from before it (a re-run resumes from it; "
            "another results_dir starts afresh)"
            if latest
            else "no checkpoint was written"
        )
        return (
            f"training stopped: the loss became non-finite at epoch {epoch + 1}, step {step} "
            f"(the epoch's mean loss is {mean_loss}, its learning rate {lr:g}); lower "
            f"train.optim.base_lr (now {self.base_lr:g}). Nothing of epoch {epoch + 1} was "
            f"written; {kept}"
        )
