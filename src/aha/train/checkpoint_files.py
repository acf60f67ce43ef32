"""Checkpoint files without the model: is a checkpoint complete, how big will the next one be, does it fit.

`verify_checkpoint(path)` reads only headers and sizes (no tensor data) and names the first problem of a
checkpoint written by aha.train.checkpoint: a bad or missing state.json, a trainer_state.pt that does not load
with torch.load(weights_only=True) (truncated, or a pickle that would run code), a torch.distributed.checkpoint
directory without its .metadata or with a .distcp file shorter than the metadata says, a .safetensors file
whose header or data is cut short. Subdirectories (PPO's value/) are checked the same way. A complete save is
renamed into place atomically, so these only appear through outside damage (a full disk on a file system
without atomic rename, a copy interrupted, a hand edit); resume then falls back to the previous checkpoint.

`checkpoint_bytes` estimates a save's size from the tensors it will write; `check_space` stops a run with one
line (needed vs free, and the key that lowers it) before a save that would not fit (issue 15, item 3).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError

GIB = 1 << 30
SLACK_BYTES = 64 << 20  # tokenizer, config, state.json, metadata: small next to the tensors
# torch.load(weights_only=True) refuses numpy arrays; checkpoints of aha <= 0.x stored numpy's RNG state as one,
# so its three (data-free, code-free) reconstruction globals are allowed when reading trainer_state.pt.
_core = getattr(np, "_core", None) or np.core
NUMPY_SAFE_GLOBALS = [
    _core.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def load_trainer_state(path: Path) -> dict:
    """trainer_state.pt read safely: plain containers, numbers, strings and tensors only."""
    with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
        state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} holds a {type(state).__name__}, not a dict")
    return state


def _check_safetensors(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"{path.name} is truncated (header)"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return f"{path.name} has a corrupt header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) > size:
        return f"{path.name} is truncated ({size} bytes, needs {8 + n + max(ends)})"
    return None


def _check_dcp(d: Path) -> str | None:
    import torch.distributed.checkpoint as dcp

    if not (d / ".metadata").is_file():
        return f"{d.name}/.metadata is missing"
    try:
        meta = dcp.FileSystemReader(str(d)).read_metadata()
    except Exception as e:  # noqa: BLE001  (any unreadable metadata is damage)
        return f"{d.name}/.metadata is unreadable ({type(e).__name__})"
    sizes: dict[str, int] = {}
    for info in (meta.storage_data or {}).values():
        f = d / info.relative_path
        if info.relative_path not in sizes:
            sizes[info.relative_path] = f.stat().st_size if f.is_file() else -1
        if sizes[info.relative_path] < 0:
            return f"{d.name}/{info.relative_path} is missing"
        if info.offset + info.length > sizes[info.relative_path]:
            return f"{d.name}/{info.relative_path} is truncated"
    return None


def verify_checkpoint(path: Path) -> str | None:
    """The first problem that makes checkpoint `path` unusable for resuming, or None if it is complete."""
    path = Path(path)
    try:
        info = json.loads((path / "state.json").read_text())
        if not isinstance(info, dict) or not isinstance(info.get("step"), int):
            return "state.json has no step"
    except (OSError, ValueError):
        return "state.json is missing or not JSON"
    for d in [path, *sorted(p for p in path.rglob("*") if p.is_dir())]:
        if (d / "trainer_state.pt").exists() or d == path:
            try:
                load_trainer_state(d / "trainer_state.pt")
            except Exception as e:  # noqa: BLE001  (truncated zip, refused pickle, missing file)
                where = (d / "trainer_state.pt").relative_to(path)
                return f"{where} does not load safely ({type(e).__name__})"
        if d.name == "state" or any(d.glob("*.distcp")):
            if problem := _check_dcp(d):
                return problem
        for f in sorted(d.glob("*.safetensors")):
            if problem := _check_safetensors(f):
                return problem
    if info.get("weights") == "hf" and not any(path.glob("*.safetensors")):
        return "the model weights (*.safetensors) are missing"
    if (info.get("weights") != "hf" or info.get("optimizer", True)) and not (
        path / "state"
    ).is_dir():
        return "state/ is missing"
    return None


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct tensors among `tensors` (nested dicts/lists walked; tied weights counted once;
    a DTensor counts its global size, as the whole checkpoint holds it)."""
    seen, total, stack = set(), 0, [tensors]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif torch.is_tensor(x):
            local = getattr(x, "_local_tensor", x)
            key = (local.data_ptr(), tuple(x.shape)) if local.numel() else None
            if key is None or key not in seen:
                seen.add(key)
                total += x.numel() * x.element_size()
    return total


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def check_space(
    root: Path, needed: int, freed: int, *, save_optimizer: bool, optim_bytes: int
) -> None:
    """ConfigError (one line) when `needed` bytes do not fit in the free space of `root`'s file system plus
    `freed` (old checkpoints this save deletes first)."""
    existing = Path(root)
    while not existing.exists() and existing != existing.parent:  # not made yet on this rank
        existing = existing.parent
    free = shutil.disk_usage(existing).free + freed
    if needed <= free:
        return
    fix = "free space on that disk or set out= to a larger one"
    if save_optimizer:
        fix = (
            f"set checkpoint.save_optimizer=false (weights only, {(needed - optim_bytes) / GIB:.1f} "
            f"GiB; resuming then restarts AdamW's moments) or {fix}"
        )
    raise ConfigError(
        "checkpoint",
        f"the next checkpoint needs {needed / GIB:.1f} GiB in {root} but {free / GIB:.1f} GiB are free; "
        + fix,
    )
