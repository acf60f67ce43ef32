"""The non-finite guard: one NaN must not poison a run (issue 17, item 2).

A single optimizer step on a NaN or infinite gradient makes every weight NaN, and AdamW's moments with them; the
next rollout then crashes and the NaN model would be saved as the latest checkpoint. So:

- a step whose advantages, loss or gradient norm is not finite (on any rank) is skipped: no optimizer step,
  no schedule step, the gradients dropped (`update.clip_and_step`, and the trainers' advantage checks here);
- the run loop counts the skipped steps (`skipped_steps` in metrics.jsonl, one warning line each) and stops,
  with a checkpoint of the last good state and a non-zero exit, after `optim.max_skipped_steps` in a row
  (`SkipCounter`);
- before any checkpoint is written the weights and optimizer state are checked (`state_is_finite`): a
  non-finite state is never saved.

Huge but finite rewards are one cause (GRPO's group statistics survive rewards up to float64's limit, see
aha.algos.advantages, but Dr. GRPO's unscaled advantages of 5e307 do not fit the float32 batch, and PPO's
returns overflow its value loss); a learning rate large enough to blow the activations up is the other.
"""

from __future__ import annotations

import torch

SKIP_KEY = "skip_reason"  # a train_step's metrics carry it (a string) when the step was skipped


def nonfinite(name: str, t: torch.Tensor, dist) -> str | None:
    """None when every value of `t` is finite on every rank, else the reason a step is skipped."""
    bad = int(t.numel() - int(torch.isfinite(t).sum()))
    if not dist.max_int(int(bad > 0)):
        return None
    mine = f" ({bad} of {t.numel()} values here)" if bad else ""
    return f"non-finite {name}{mine}"


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP), the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def plain_parts(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold `t`'s values: itself, or the inner tensors of a tensor subclass (torchao's
    8-bit optimizer state: int8 codes and float scales), which support no reductions and need no dequantized
    copy to be checked."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return [p for n in names for p in plain_parts(getattr(t, n))]
    return [t]


def _finite(tensors) -> bool:
    """True if no tensor holds a NaN or an infinity. amax/amin are reductions (no copy the size of a weight)
    and both propagate NaN; one host sync per tensor is nothing next to the save this precedes."""
    for t in (p for x in tensors for p in plain_parts(local(x))):
        if t.is_floating_point() and t.numel():
            ends = torch.stack([t.detach().amax(), t.detach().amin()])
            if not bool(torch.isfinite(ends).all()):
                return False
    return True


def state_is_finite(pairs, dist) -> bool:
    """pairs: (module, optimizer or None). True if every parameter and optimizer-state tensor is finite on
    every rank (collective under torchrun)."""
    ok = True
    for module, optimizer in pairs:
        tensors = list(module.parameters())
        if optimizer is not None:
            tensors += [
                v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
            ]
        if not _finite(tensors):
            ok = False
            break
    return not dist.max_int(int(not ok))


class SkipCounter:
    """Counts skipped steps: all of them (`total`, saved in checkpoints) and those in a row (`in_a_row`)."""

    def __init__(self, limit: int):
        self.limit, self.total, self.in_a_row, self.last = limit, 0, 0, None

    def count(self, metrics: dict) -> str | None:
        """Pop the step's skip reason from `metrics`, add `skipped_steps`; -> the reason (None: not skipped)."""
        reason = metrics.pop(SKIP_KEY, None)
        if reason is None:
            self.in_a_row = 0
        else:
            self.total, self.in_a_row, self.last = self.total + 1, self.in_a_row + 1, reason
        metrics["skipped_steps"] = self.total
        return reason

    @property
    def exhausted(self) -> bool:
        return self.in_a_row >= self.limit
