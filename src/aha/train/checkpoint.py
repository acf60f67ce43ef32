"""Checkpoints: the model in Hugging Face format plus everything needed to resume bit-for-bit on the CPU.

Layout: RUN/checkpoints/step-000050/
    config.json, model.safetensors, tokenizer files   the policy, loadable with AutoModelForCausalLM
    adapter/                                          LoRA adapters (peft format), when LoRA is on
    state/                                            model + AdamW state, torch.distributed.checkpoint
                                                      (sharded by rank; loads into any number of ranks)
    trainer_state.pt, state.json                      scheduler, RNG, step and data position
A checkpoint is written to `step-000050.tmp` and renamed when complete, so a run killed while saving never
leaves a half checkpoint as the latest; only the last `keep_last` are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from ..models.load import merged_state_dict, unwrap
from .dist import Dist

STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model,
    tokenizer,
    optimizer,
    scheduler,
    extra: dict,
    keep_last: int = 2,
    rng: dict | None = None,
    dist: Dist = Dist(),  # noqa: B008 (immutable single-process default)
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Collective under torchrun: every rank calls it; rank 0 writes the shared files. `before_rename(tmp)`
    (called on every rank) writes extra parts, e.g. PPO's critic, inside the same atomic rename."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    # The resumable state first: save_pretrained may re-tie parameters of the model it is given.
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "state"))
    if dist.enabled:  # gather the full weights for the Hugging Face copy (CPU, rank 0)
        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if dist.is_main:  # keys of the training wrapper (LogprobModel) carry an "lm." prefix
            full = {k.removeprefix("lm."): v for k, v in full.items()}
            if getattr(unwrap(model).config, "tie_word_embeddings", False):
                full.pop(
                    "lm_head.weight", None
                )  # tied: saved once, as the single-process save does
            unwrap(model).save_pretrained(tmp, state_dict=full, safe_serialization=True)
        del full
    else:
        lm = getattr(model, "lm", model)
        if hasattr(lm, "peft_config"):  # LoRA: the merged model for HF tools, the adapter beside it
            unwrap(model).save_pretrained(
                tmp, state_dict=merged_state_dict(lm), safe_serialization=True
            )
            lm.save_pretrained(tmp / "adapter")
        else:
            unwrap(model).save_pretrained(tmp, safe_serialization=True)
    if before_rename is not None:
        before_rename(tmp)
        dist.barrier()
    if dist.is_main:
        tokenizer.save_pretrained(tmp)
        torch.save(
            {"scheduler": scheduler.state_dict(), "rng": rng if rng is not None else rng_state()},
            tmp / "trainer_state.pt",
        )
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "world_size": dist.world, **extra}, indent=1)
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, *, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place (any number of ranks); returns state.json."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    try:
        dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path / "state"))
    except Exception as e:  # a different model or optimizer layout than the one that saved it
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise RuntimeError(
            f"checkpoint {path} does not match this model/optimizer ({first}); "
            "resume with the same model.path and LoRA settings"
        ) from None
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    trainer = torch.load(path / "trainer_state.pt", weights_only=False)
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"])
    return json.loads((path / "state.json").read_text())
