"""torch.distributed for the trainers: one process per GPU under torchrun, FSDP2 (`fully_shard`) sharding.

`Dist.from_env()` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; without them it is a single process and
every collective below is the identity, so the trainer reads the same either way (no `if rank == 0`
branches). Backend: NCCL on GPUs, gloo on the CPU (CI tests 1 vs 2 processes with gloo).

What is sharded: every decoder layer and the root module of the policy (and of the reference model) with
FSDP2, so parameters, gradients and AdamW state are split over ranks; rollouts run on the gathered weights
(`gathered(model)`), each rank generating for its own share of the prompts.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not tdist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            tdist.init_process_group(backend)
        return cls(rank, world, local)

    def device(self, requested: str) -> str:
        """Each rank on its own GPU under torchrun; `requested` otherwise."""
        if self.enabled and torch.cuda.is_available() and requested in ("auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    # ---- collectives (identity in a single process) ------------------------------------------------------
    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, wherever x lives (NCCL needs GPU tensors: moved there and back)."""
        if not self.enabled:
            return x
        y = x.to(self._comm_device()).clone()
        tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
        return y.to(x.device)

    def max_int(self, n: int) -> int:
        if not self.enabled:
            return n
        t = torch.tensor([n], dtype=torch.long, device=self._comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return int(t)

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def close(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()

    def _comm_device(self):
        return (
            torch.device(f"cuda:{self.local_rank}")
            if tdist.get_backend() == "nccl"
            else torch.device("cpu")
        )

    # ---- sharding ------------------------------------------------------------------------------------------
    def shard(self, module):
        """FSDP2: each decoder layer, then the root `module` (a LogprobModel: its forward is the entry point,
        so the root group -- embeddings, final norm, head -- is gathered there). No-op in a single process."""
        if not self.enabled:
            return module
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from ..models.load import unwrap

        # Parameters stay in their dtype (bf16 on GPUs, with fp32 masters in the optimizer); gradients are
        # reduced across ranks in fp32 so the sum over ranks loses nothing.
        mp = MixedPrecisionPolicy(reduce_dtype=torch.float32)
        for layer in unwrap(module).get_decoder().layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(module, mp_policy=mp)
        return module


@contextlib.contextmanager
def gathered(model):
    """All parameters gathered once for the whole rollout (FSDP2 would otherwise all-gather every layer at every
    decoding step); sharded again afterwards. A no-op for an unsharded model."""
    units = [m for m in model.modules() if hasattr(m, "unshard") and hasattr(m, "reshard")]
    if not units:
        yield model
        return
    layers = [m for m in units if m is not model]
    for m in layers:  # keep layers gathered between the decoding steps' forwards
        m.set_reshard_after_forward(False, recurse=False)
    for m in units:
        m.unshard()
    try:
        yield model
    finally:
        for m in units:
            m.reshard()
        for m in layers:
            m.set_reshard_after_forward(True, recurse=False)
