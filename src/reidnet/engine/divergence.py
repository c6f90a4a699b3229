"""A diverging run, caught: the first non-finite loss stops training before its epoch writes
anything.

The loop never waits on the GPU for this: each step's check is a device op, read at the epoch's
end together with the loss means.
"""

from __future__ import annotations

import torch

from reidnet.config import ExperimentSpec
from reidnet.contracts import latest_checkpoint
from reidnet.engine import distributed
from reidnet.engine.distributed import DistributedContext
from reidnet.errors import ReidnetError

_NO_STEP = torch.iinfo(torch.int64).max  # no non-finite loss yet


class DivergenceWatch:
    """`see` every step's total loss; `check` each epoch's end (all ranks call it)."""

    def __init__(self, spec: ExperimentSpec, device: torch.device, dist: DistributedContext):
        self.base_lr, self.dist = spec.train.optim.base_lr, dist
        self.results_dir = spec.action_results_dir("train")
        self._first_bad_step = torch.full((), _NO_STEP, dtype=torch.int64, device=device)

    def see(self, step: int, loss: torch.Tensor) -> None:
        """Remember `step` if its loss is the epoch's first non-finite one (no host sync)."""
        loss = loss.detach()
        earliest = self._first_bad_step.clamp(max=step)
        self._first_bad_step = torch.where(torch.isfinite(loss), self._first_bad_step, earliest)

    def check(self, epoch: int, mean_loss: float, lr: float) -> None:
        """Raise if a step of `epoch` had a non-finite loss, before the epoch writes anything.
        After the loss means are read, so the read waits for nothing more."""
        if self.dist.enabled:  # every rank stops at the same step, or none does
            distributed.minimum_(self._first_bad_step)
        step = int(self._first_bad_step.item())
        if step != _NO_STEP:
            raise ReidnetError(self._stop_message(epoch, step, mean_loss, lr))

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
