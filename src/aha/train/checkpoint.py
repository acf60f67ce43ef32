"""Checkpoints: the model in Hugging Face format plus everything needed to resume bit-for-bit on the CPU.

Layout: RUN/checkpoints/step-000050/
    config.json, model.safetensors, tokenizer files   the policy, loadable with AutoModelForCausalLM
    adapter/                                          LoRA adapters (peft format), when LoRA is on
    state/                                            AdamW state (and, see below, the weights) saved with
                                                      torch.distributed.checkpoint (sharded by rank; loads
                                                      into any number of ranks)
    trainer_state.pt, state.json                      scheduler, RNG, step and data position

The weights are stored once. In one process without LoRA the Hugging Face safetensors hold exactly the live
parameters, so state/ holds only the optimizer and resume reads the weights from the safetensors
(state.json "weights": "hf"). Under torchrun (sharded state that must reshard) state/ holds the weights as well
("weights": "state"); with LoRA in one process it holds only the trainable ones, the adapters ("weights":
"trainable"): the frozen base is model.path's, which a resume loads anyway (a walkthrough found 664 MB of
SmolLM2-135M base weights in state/ beside its 3.7 MB adapter). `save_optimizer=False` (checkpoint.save_optimizer)
leaves AdamW's state out: for bf16 weights with fp32 master, exp_avg and exp_avg_sq that is 14 of the 16
bytes per parameter; resuming from such a checkpoint restarts AdamW's moments (said in one line).

Disk: before writing, the checkpoints this save will prune anyway are deleted when at least one complete
checkpoint stays (keep_last >= 2), and the save is sized against the free space (one line, needed vs free and
the key that lowers it, when it does not fit). The new checkpoint is written to `step-N.tmp` and renamed when
complete, never copied: the peak disk use is max(keep_last, 2) checkpoints (tests/test_checkpoint.py
measures it). A run killed while saving never leaves a half checkpoint as the latest, and a latest checkpoint
damaged afterwards is skipped for the previous complete one, with one line (checkpoint_files.py).
`trainer_state.pt` holds only plain types and tensors and is read with torch.load(weights_only=True).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..config import ConfigError
from ..models.load import merged_state_dict, unwrap
from .checkpoint_files import (
    SLACK_BYTES,
    check_space,
    dir_bytes,
    load_trainer_state,
    tensor_bytes,
    verify_checkpoint,
)
from .dist import Dist


class CheckpointMismatch(ConfigError, RuntimeError):
    """A checkpoint saved by another model or optimizer layout: the user's settings to fix (one line, exit 2)."""


@contextlib.contextmanager
def quiet_single_process():
    """dcp warns on every save and load outside torchrun that it assumes one process: true, and nothing a
    user can act on, so that one warning is dropped around aha's dcp calls (here and the critic's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninit"
        )
        yield


STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict:
    """Every RNG's state as plain types and tensors (safe for torch.load(weights_only=True))."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}
        | {"has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    npy = state["numpy"]
    if isinstance(npy, dict):
        keys = npy["keys"].numpy().astype(np.uint32)
        npy = (npy["name"], keys, npy["pos"], npy["has_gauss"], npy["gauss"])
    np.random.set_state(npy)  # a tuple with a numpy array: checkpoints written before the dict form
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _hf_holds_weights(path: Path, model) -> bool:
    """True if the safetensors at `path` hold every parameter and buffer of `model` (tied ones once)."""
    from safetensors import safe_open

    saved = {}
    for f in path.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            saved.update({k: tuple(st.get_slice(k).get_shape()) for k in st.keys()})  # noqa: SIM118
    ptrs = {t.data_ptr() for k, t in model.state_dict().items() if k in saved}
    return all(
        saved.get(k) == tuple(t.shape) or (k not in saved and t.data_ptr() in ptrs)
        for k, t in model.state_dict().items()
    )


def _load_hf_weights(path: Path, model) -> None:
    """Copy the safetensors' tensors into `model` in place; RuntimeError if they do not cover it."""
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in sd}
    missing = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]  # tied: fine
    if missing or unexpected:
        raise RuntimeError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")


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
    save_optimizer: bool = True,
    rng: dict | None = None,
    dist: Dist = Dist(),  # noqa: B008 (immutable single-process default)
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Collective under torchrun: every rank calls it; rank 0 writes the shared files. `before_rename(tmp)`
    (called on every rank) writes extra parts, e.g. PPO's critic, inside the same atomic rename (its size is
    not in the disk-space estimate)."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step-{step:06d}", root / f"step-{step:06d}.tmp"
    lm = getattr(model, "lm", model)
    lora = hasattr(lm, "peft_config")
    weights_in_hf = (
        not dist.enabled and not lora
    )  # else the sharded/adapter weights go to state/ too
    # The resumable state first: save_pretrained may re-tie parameters of the model it is given.
    model_sd, optim_sd = get_state_dict(model, optimizer)
    trainable_only = lora and not dist.enabled
    if trainable_only:  # the frozen base is model.path's: the adapters are what a resume needs
        model_sd = _trainable(model, model_sd)
    w_bytes, o_bytes = tensor_bytes(model_sd), tensor_bytes(optim_sd) if save_optimizer else 0
    needed = w_bytes * (1 if weights_in_hf else 2) + o_bytes + SLACK_BYTES
    old = [p for p in list_checkpoints(run_dir) if p != final]
    doomed = (
        old[: len(old) - (keep_last - 1)] if keep_last >= 2 else []
    )  # pruned by this save anyway
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        check_space(
            root,
            needed,
            sum(map(dir_bytes, doomed)),
            save_optimizer=save_optimizer,
            optim_bytes=o_bytes,
        )
        problem = None
    except ConfigError as e:
        problem = e
    if dist.max_int(
        problem is not None
    ):  # every rank stops: none waits at a barrier for the others
        raise problem or RuntimeError("another rank has too little disk space for the checkpoint")
    if dist.is_main:
        for p in doomed:
            shutil.rmtree(p, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
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
    elif lora:  # the merged model for HF tools, the adapter beside it
        unwrap(model).save_pretrained(
            tmp, state_dict=merged_state_dict(lm), safe_serialization=True
        )
        lm.save_pretrained(tmp / "adapter")
    else:
        unwrap(model).save_pretrained(tmp, safe_serialization=True)
        weights_in_hf = _hf_holds_weights(
            tmp, unwrap(model)
        )  # else (renamed keys) state/ keeps them
    state = ({} if weights_in_hf else {"model": model_sd}) | (
        {"optim": optim_sd} if save_optimizer else {}
    )
    if state:
        with quiet_single_process():
            dcp.save(state, checkpoint_id=str(tmp / "state"))
    if before_rename is not None:
        before_rename(tmp)
        dist.barrier()
    if dist.is_main:
        tokenizer.save_pretrained(tmp)
        rng = rng if rng is not None else rng_state()
        torch.save({"scheduler": scheduler.state_dict(), "rng": rng}, tmp / "trainer_state.pt")
        info = {
            "step": step,
            "world_size": dist.world,
            "weights": "hf" if weights_in_hf else "trainable" if trainable_only else "state",
        }
        info |= {"optimizer": save_optimizer, **extra}
        (tmp / "state.json").write_text(json.dumps(info, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for p in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(p, ignore_errors=True)
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


def latest_checkpoint(
    run_dir: str | Path, *, log: Callable[[str], None] | None = None
) -> Path | None:
    """The newest complete checkpoint. Each newer one that is damaged (checkpoint_files.verify_checkpoint)
    is skipped with one line through `log` (default: print, on rank 0 only)."""
    if log is None:
        log = print if os.environ.get("RANK", "0") == "0" else (lambda _: None)
    found = list_checkpoints(run_dir)
    for i in range(len(found) - 1, -1, -1):
        problem = verify_checkpoint(found[i])
        if problem is None:
            return found[i]
        then = (
            f"falling back to {found[i - 1].name}" if i else "no earlier checkpoint to fall back to"
        )
        log(f"checkpoint {found[i]} is incomplete or damaged ({problem}): {then}")
    return None


def _trainable(model, state_dict: dict) -> dict:
    """The entries of the parameters that train (LoRA's adapters), by their names in the state dict."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in state_dict.items() if k in names}


def load_checkpoint(path: Path, *, model, optimizer, scheduler, log: Callable = print) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place (any number of ranks); returns state.json."""
    info = json.loads((path / "state.json").read_text())
    hf_weights, with_optim = info.get("weights") == "hf", info.get("optimizer", True)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    trainable_only = info.get("weights") == "trainable"
    if trainable_only:  # the frozen base weights are the ones model.path loaded
        model_sd = _trainable(model, model_sd)
    state = ({} if hf_weights else {"model": model_sd}) | (
        {"optim": optim_sd} if with_optim else {}
    )
    try:
        if state:
            with quiet_single_process():
                dcp.load(state, checkpoint_id=str(path / "state"))
        if hf_weights:
            _load_hf_weights(path, unwrap(model))
    # CheckpointException derives from BaseException, not Exception: name it, or a mismatch escapes as a
    # multi-rank traceback (issue 17, item 3a).
    except (Exception, CheckpointException) as e:  # a different model or optimizer layout
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointMismatch(
            "resume",
            f"checkpoint {path} does not match this model/optimizer ({first}); "
            "resume with the same model.path and LoRA settings",
        ) from None
    if "model" in state:
        set_model_state_dict(model, model_sd, options=StateDictOptions(strict=not trainable_only))
    if with_optim:
        set_optimizer_state_dict(model, optimizer, optim_sd)
    else:  # get_state_dict above initialised it (fp32 masters of the old weights): start it afresh
        optimizer.state.clear()
        log(
            f"{path} holds no optimizer state (checkpoint.save_optimizer=false): AdamW restarts from zero"
        )
    trainer = load_trainer_state(path / "trainer_state.pt")
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"])
    return info
