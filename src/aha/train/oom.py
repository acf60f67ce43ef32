"""A run that runs out of GPU memory stops cleanly: one line, the last completed step saved, a distinct exit code.

Runs that share one GPU each size their memory plan from the free memory they saw at start; when several start
at once, all see the whole GPU and some later die in the update with `torch.OutOfMemoryError`. The run loop
(train/loop.py) catches that error during generation, the update or an evaluation and then:

- saves the last *completed* step (the weights, optimizer state, RNG and data position of the start of the
  step that failed, as after a second Ctrl-C), unless an optimizer step had already begun changing the weights
  during the failed step (the second pass of mu > 1, PPO's critic before the policy, an OOM inside
  `optimizer.step`): that state is neither step N nor N + 1, so nothing is written and the latest checkpoint
  stays what it was;
- prints one line: what ran out (the phase, the GiB torch asked for and the free GiB it reported, what other
  processes hold), what was saved, the config keys that lower the run's memory, and "resume with resume=true";
- ends with exit code OOM_EXIT, 75 (sysexits' EX_TEMPFAIL: a temporary failure, retry later), which
  `aha pipeline` passes on like the other early stops.

This module holds the parts that need no run: reading torch's message, naming the phase from the traceback,
and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OOM_EXIT = 75  # sysexits.h EX_TEMPFAIL: resume later (with less memory), nothing is broken

# Where in a step the error was raised, by the first aha module (outermost first) of the traceback that names a
# phase; frames of the trainers themselves (grpo, ppo, rl) name none.
PHASES = (
    ("aha.train.rollout", "generation"),
    ("aha.rollout", "generation"),
    ("aha.train.update", "update"),
    ("aha.train.critic", "update"),
    ("aha.train.forward", "update"),
    ("aha.train.sft", "update"),
    ("aha.eval", "evaluation"),
    ("aha.train.checkpoint", "a checkpoint save"),
)
UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
GIB = 2**30
_SIZE = r"([\d.]+) (bytes|KiB|MiB|GiB|TiB)"


# How CUDA libraries that fail to allocate show up when torch raises a plain RuntimeError, not OutOfMemoryError:
# "CUDA error: out of memory", Triton's "Triton Error [CUDA]: out of memory", NCCL's "Cuda failure 'out of
# memory'", cuBLAS/cuDNN's CUBLAS_STATUS_ALLOC_FAILED / CUDNN_STATUS_ALLOC_FAILED.
RUNTIME_OOM = ("out of memory", "alloc_failed")


def is_oom(e: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError in which a CUDA library (cuBLAS, cuDNN, a kernel launch,
    Triton, NCCL) reports that it could not allocate."""
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e).lower() for s in RUNTIME_OOM)


def startup_line(command: str, e: BaseException) -> str:
    """The one line of a command that ran out of GPU memory outside a training step (loading the model, the
    reference or the engine; `aha eval` / `aha sample` / `aha serve` at any point): nothing was written by it."""
    said = OOMInfo.parse(str(e)).text()
    phase = phase_of(e.__traceback__, "while starting")
    where = phase if phase == "while starting" else f"in {phase}"
    keys = {
        "train": "memory.max_memory_gib, optim.name=adamw_8bit, model.lora.r=16, algorithm.beta=0",
        "pipeline": "the stage's memory.max_memory_gib, optim.name=adamw_8bit, model.lora.r=16",
        "sft": "batch.micro_batch_tokens, model.gradient_checkpointing=true, optim.name=adamw_8bit",
        "eval": "eval.batch_size, eval.sampling.max_new_tokens",
        "sample": "batch_size, sampling.max_new_tokens",
    }.get(command, "a smaller model or batch")
    again = (
        "run again" if phase == "while starting" else "run again (a training run: with resume=true)"
    )
    return (
        f"out of GPU memory {where}" + (f" ({said})" if said else "")
        + f"; free the GPU or lower the memory with {keys}, then {again}"
    )  # fmt: skip


def _size(pattern: str, text: str) -> float | None:
    """GiB of the first `pattern` (with a size group pair) in text, None if absent."""
    m = re.search(pattern.replace("SIZE", _SIZE), text)
    return float(m.group(1)) * UNITS[m.group(2)] / GIB if m else None


@dataclass
class OOMInfo:
    """What torch's CUDA caching allocator says when it fails (any of it may be missing: None)."""

    asked_gib: float | None = None  # "Tried to allocate 2.00 GiB"
    free_gib: float | None = None  # "... of which 1.10 GiB is free"
    total_gib: float | None = None  # "GPU 0 has a total capacity of 139.72 GiB"
    own_gib: float | None = None  # "this process has 50.00 GiB memory in use"

    @classmethod
    def parse(cls, message: str) -> OOMInfo:
        return cls(
            asked_gib=_size(r"[Tt]ried to allocate SIZE", message),
            free_gib=_size(r"of which SIZE is free", message),
            total_gib=_size(r"total capacity of SIZE", message),
            own_gib=_size(r"this process has SIZE memory in use", message),
        )

    @property
    def others_gib(self) -> float | None:
        """What the rest of the GPU's users hold: total - free - this process."""
        if None in (self.total_gib, self.free_gib, self.own_gib):
            return None
        return max(0.0, self.total_gib - self.free_gib - self.own_gib)

    def text(self) -> str:
        parts = []
        if self.asked_gib is not None:
            parts.append(f"asked for {self.asked_gib:.2f} GiB")
        if self.free_gib is not None:
            of = f" of {self.total_gib:.1f}" if self.total_gib is not None else ""
            parts.append(f"{self.free_gib:.2f}{of} GiB free")
        if self.others_gib is not None and self.others_gib >= 1.0:  # a CUDA context is ~0.5 GiB
            parts.append(f"other processes hold {self.others_gib:.1f} GiB")
        return ", ".join(parts)


def phase_of(tb, default: str = "the step") -> str:
    """The phase (generation, update, evaluation) whose code raised, from a traceback."""
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        for prefix, phase in PHASES:
            if module == prefix or module.startswith(prefix + "."):
                return phase
        tb = tb.tb_next
    return default


def _now(cfg, dotted: str):
    """cfg's value at a dotted key, or None where the config has no such key."""
    obj = cfg
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def lowering_keys(cfg, phase: str) -> list[str]:
    """The keys of `cfg` (a TrainConfig or an SFTConfig) that lower the memory of `phase`, the current values
    shown, those of that phase first."""
    update, generate = [], []
    if hasattr(cfg, "memory"):
        gib = _now(cfg, "memory.max_memory_gib")
        now = f"now {gib:g}" if gib is not None else "this run's share of the GPU"
        update.append(f"memory.max_memory_gib ({now})")
    mbt = _now(cfg, "batch.micro_batch_tokens")
    if mbt is not None:
        update.append(f"batch.micro_batch_tokens (now {mbt or 'no limit'})")
    if _now(cfg, "batch.micro_batch_size") is not None:
        update.append(f"batch.micro_batch_size (now {cfg.batch.micro_batch_size})")
    if _now(cfg, "model.gradient_checkpointing") is not True:
        update.append("model.gradient_checkpointing=true")
    if _now(cfg, "sampling.max_new_tokens") is not None:
        generate.append(f"sampling.max_new_tokens (now {cfg.sampling.max_new_tokens})")
    if phase == "evaluation":
        return [
            f"eval.batch_size (now {cfg.eval.batch_size})",
            f"eval.sampling.max_new_tokens (now {cfg.eval.sampling.max_new_tokens})",
            *update[:1],
        ]
    if phase == "generation":  # the KV cache is sized from memory.max_memory_gib by the plan
        return update[:1] + generate + update[1:]
    return update + generate


def oom_line(cfg, phase: str, info: OOMInfo, step: int, total: int, saved: str) -> str:
    """The one line a run that ran out of GPU memory ends with. `step` is the step that failed; `saved` says
    what was written (or why nothing was)."""
    said = info.text()
    return (
        f"out of GPU memory in {phase} at step {step}/{total}"
        + (f" ({said})" if said else "")
        + f"; {saved}; lower the run's memory with "
        + ", ".join(lowering_keys(cfg, phase))
        + "; then resume with resume=true"
    )


class OOMGuard:
    """The run loop's record of an OOM: whether an optimizer began a step during the current step (a step
    pre-hook on each optimizer the checkpoint holds), and what ran out, where, and what was saved."""

    def __init__(self):
        self.moved = False  # an optimizer step began during the current step
        self.report: tuple | None = None  # (phase, OOMInfo, the step that failed)
        self.saved = ""  # what save() wrote, or why nothing
        self._watched: set[int] = set()

    def watch(self, optimizers) -> None:
        def moving(*_):
            self.moved = True

        for opt in optimizers:
            if hasattr(opt, "register_step_pre_hook") and id(opt) not in self._watched:
                opt.register_step_pre_hook(moving)
                self._watched.add(id(opt))

    def note(self, e, phase: str, step: int) -> None:
        """Record what ran out: strings and numbers only (the error's frames, and the tensors they hold, are
        freed once the except clause ends). phase "step": named from the traceback."""
        if phase == "step":
            phase = phase_of(e.__traceback__)
        self.report = (phase, OOMInfo.parse(str(e)), step)

    def save(self, loop, step_start, saved_step: int) -> None:
        self.saved = save_after_oom(loop, step_start, saved_step, self.moved)

    def line(self, cfg, total: int) -> str:
        phase, info, step = self.report
        return oom_line(cfg, phase, info, step, total, self.saved)


def free_memory(pairs) -> None:
    """After the error: drop the failed step's gradients and hand the allocator's cached blocks back, so that
    the checkpoint can be written (and other processes on the GPU get the memory). pairs: (module, optimizer)."""
    import gc

    import torch

    for module, _ in pairs:
        module.zero_grad(set_to_none=True)
    gc.collect()  # the failed step's frames are gone; their tensors may sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def save_after_oom(loop, step_start, saved_step: int, moved: bool) -> str:
    """Write the last completed step of TrainLoop `loop` after an OOM, if that state is intact; -> what was
    saved, or why nothing was, for the line. step_start: (rng, data position) of the step that failed, None
    when the error came after a completed step (its evaluation, its save); moved: an optimizer step began
    during the failed step."""
    from . import checkpoint as ckpt

    free_memory(loop.guarded())
    latest = ckpt.latest_checkpoint(loop.out, log=lambda _: None)
    keeps = (
        f"the latest checkpoint stays {latest.name if latest else 'none (resume starts at step 0)'}"
    )
    if (
        loop.dist.enabled
    ):  # saving is collective; the other ranks may be waiting in another collective
        return f"not saved (one rank ran out under torchrun); {keeps}"
    if step_start is not None and moved:
        return (
            f"not saved: an optimizer step of step {loop.step + 1} had begun changing the weights, which are "
            f"then neither step {loop.step} nor {loop.step + 1}; {keeps}"
        )
    if loop.step == 0:
        return "nothing trained yet"
    if loop.step == saved_step and latest is not None:
        return f"step {loop.step} saved"
    rng, pos = step_start if step_start is not None else (None, None)
    try:
        path = loop.save(loop.step, rng=rng, data_position=pos)
    except RuntimeError as e:
        if not is_oom(e):
            raise
        free_memory(loop.guarded())
        return f"not saved: out of memory again while saving step {loop.step}; {keeps}"
    if path is None:  # the non-finite check refused it (and said so)
        return f"step {loop.step} not saved (not finite); {keeps}"
    return f"step {loop.step} saved ({path})"
