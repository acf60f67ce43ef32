"""Checkpoints: the model in Hugging Face format plus everything needed to resume bit-for-bit on the CPU.

Layout: RUN/checkpoints/step-000050/{config.json, model.safetensors, tokenizer files, trainer_state.pt,
state.json}. A checkpoint is written to `step-000050.tmp` and renamed when complete, so a run killed while
saving never leaves a half checkpoint as the latest; only the last `keep_last` are kept.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..models.load import unwrap

STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str | Path, step: int, *, model, tokenizer, optimizer, scheduler, extra: dict,
                    keep_last: int = 2, rng: dict | None = None) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # save_pretrained on a PEFT model writes only the adapter; users expect a loadable full model too,
    # so the adapter goes to adapter/ and the merged weights are not materialised (no extra memory).
    unwrap(model).save_pretrained(tmp, safe_serialization=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp / "adapter")
    tokenizer.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng if rng is not None else rng_state()},
               tmp / "trainer_state.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **extra}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, *, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place; returns state.json's content."""
    from safetensors.torch import load_file

    target = unwrap(model)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights
        set_peft_model_state_dict(model, load_peft_weights(str(path / "adapter")))
    else:
        state = {}
        for f in sorted(path.glob("*.safetensors")):
            state.update(load_file(f))
        missing, unexpected = target.load_state_dict(state, strict=False)
        # Tied embeddings are saved once; anything else missing is a real mismatch.
        missing = [k for k in missing if not (k.endswith("lm_head.weight") and target.config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {path} does not match the model (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}); resume with the same model.path")
    trainer = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"])
    return json.loads((path / "state.json").read_text())
