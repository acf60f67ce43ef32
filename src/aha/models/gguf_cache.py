"""A cache of dequantized GGUF models, so that a .gguf file is parsed and dequantized once, not on every command.

Reading a .gguf through transformers parses its metadata (the vocabulary: tens of thousands of strings, field by
field), maps every tensor name and dequantizes the weights; for SmolLM2-135M-Instruct's 98 MB Q4_1 file that is
~80 s on 2 CPU cores (tokenizer 22 s, config 16 s, weights 42 s), repeated by every `aha eval`, `sample`,
`train` and `serve`. After a first load aha saves the dense model (in the dtype it was loaded in), its tokenizer
and config as an ordinary Hugging Face directory, and later loads of the same file read that instead (seconds).

    where       $AHA_GGUF_CACHE, else $XDG_CACHE_HOME/aha/gguf, else ~/.cache/aha/gguf; AHA_GGUF_CACHE=0: off
    key         the file's resolved path, size and modification time, the versions of transformers, gguf, aha
                and of this cache's layout (CACHE_VERSION), and the dtype: a changed or replaced file, or other
                conversion code, is read afresh (and its older cache removed)
    limits      models over MAX_BYTES dense (default 4 GiB) or a disk without twice their size free are not
                cached; a cache that cannot be written or read is skipped (the file is read as before)

A directory is written under a unique temporary name and renamed when complete (DONE marks it), so a run stopped
mid-write or two runs writing at once never leave a half cache that is read. In a multi-process run only each
machine's local rank 0 writes (the others read the file; the next run finds the cache).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

DONE = "aha-gguf-cache.json"
MAX_BYTES = 4 * 2**30
CACHE_VERSION = 1  # raise when what is saved changes (the tokenizer's fixes, the config's cleanup)


def cache_root() -> Path | None:
    env = os.environ.get("AHA_GGUF_CACHE", "")
    if env == "0":
        return None
    try:
        if env:
            return Path(env).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base).expanduser() / "aha" / "gguf"
    except RuntimeError:  # no home directory to be found (a bare container): no cache
        return None


def _key(file: Path) -> str:
    import gguf
    import transformers

    from .. import __version__

    st = file.stat()
    versions = f"{transformers.__version__}|{getattr(gguf, '__version__', '?')}|{__version__}|{CACHE_VERSION}"
    ident = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{versions}"
    return f"{file.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cached(file: Path, dtype=None) -> Path | None:
    """The complete cache directory of `file` loaded in `dtype` (in any dtype when None: for its config and
    tokenizer), or None."""
    root = cache_root()
    if root is None or not root.is_dir():
        return None
    try:
        key = glob.escape(_key(file))  # a file named model[v2].gguf
        pattern = f"{key}-{_dtype_name(dtype) if dtype is not None else '*'}"
        return next((d for d in sorted(root.glob(pattern)) if (d / DONE).is_file()), None)
    except OSError:
        return None


def damaged(error: BaseException) -> bool:
    """Whether reading a cache directory failed for the directory's sake (a missing or corrupt file), not the
    process's (out of memory, an interrupt)."""
    return (
        isinstance(error, (OSError, ValueError, KeyError))
        or "safetensor" in type(error).__name__.lower()
    )


def drop(done: Path) -> None:
    """Remove a cache directory that could not be read: renamed away first, so no reader finds it half gone."""
    try:
        trash = Path(tempfile.mkdtemp(prefix=f".{done.name}.", suffix=".old", dir=done.parent))
        os.replace(done, trash / done.name)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _drop_stale(root: Path, file: Path, dtype, keep: Path) -> None:
    """Remove the caches of the same file and dtype under an older key (the file changed, or transformers, gguf
    or aha did): nothing reads them again, and each is a whole model."""
    source = str(file.resolve())
    for d in root.glob(f"{glob.escape(file.stem)}-*-{_dtype_name(dtype)}"):
        try:
            meta = json.loads((d / DONE).read_text())
        except (OSError, ValueError):
            continue
        if d != keep and meta.get("source") == source and meta.get("dtype") == str(dtype):
            drop(d)


def save(file: Path, dtype, model, tok) -> Path | None:
    """Write the dense model and tokenizer of `file` to the cache (see the module doc); the directory, or None
    where none was written. Never raises for a cache that cannot be written."""
    root = cache_root()
    if root is None or os.environ.get("LOCAL_RANK", "0") != "0":
        return None
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    final = root / f"{_key(file)}-{_dtype_name(dtype)}"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        if size > MAX_BYTES or shutil.disk_usage(root).free < 2 * size:
            return None
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / DONE).write_text(json.dumps({"source": str(file.resolve()), "dtype": str(dtype)}))
        if not final.exists():
            os.replace(tmp, final)
    # a cache must never fail a load (a read-only home, safetensors' own errors)
    except Exception as e:  # noqa: BLE001
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if (final / DONE).is_file():  # another process (a rank of the same run) finished first
            return final
        print(
            f"aha: could not cache the dequantized {file.name} ({e}); reading the .gguf each time",
            file=sys.stderr,
        )
        return None
    if tmp.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    _drop_stale(root, file, dtype, final)
    print(
        f"aha: saved the dequantized {file.name} to {final} ({size / 2**20:.0f} MiB), so later loads take "
        "seconds; AHA_GGUF_CACHE=0 turns this off, AHA_GGUF_CACHE=DIR moves it",
        file=sys.stderr,
    )
    return final
