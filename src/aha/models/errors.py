"""The one error model loading raises: a one-line message naming the model and the fix (the CLI exits 2).

Also `missing_local_path`, torch-free so that the CLI's preflight can name a model directory that is not there
before torch and transformers load (seconds), and so that such a path is never sent to the hub as a repo id
(transformers then answers "Repo id must be in the form ..." or, offline, retries for most of a minute).
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_NAMES = ("tiny-base", "tiny-recheck", "tiny-random")


class ModelLoadError(RuntimeError):
    """One-line message: which model could not be loaded and what to do."""


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id: it starts with . / ~, exists, is a .gguf file, or has more
    than one '/' (a hub id is NAME or OWNER/NAME)."""
    p = str(path)
    return (
        p.startswith((".", "/", "~"))
        or p.count("/") > 1
        or "\\" in p
        or p.lower().endswith(".gguf")
        or Path(p).expanduser().exists()
    )


def missing_local_path(path: str) -> str | None:
    """A one-line message when `path` is meant as a local model path and is not there, else None."""
    if path in BUILTIN_NAMES or not looks_local(path):
        return None
    p = Path(path).expanduser()
    if p.exists():
        return None
    where = "" if p.is_absolute() else f" (relative to {Path.cwd()})"
    return (
        f"model path '{path}' does not exist{where}; pass an existing model directory or .gguf "
        "file, a hub id (OWNER/NAME) or tiny-base"
    )
