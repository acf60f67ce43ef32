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


def model_path_problem(path: str) -> str | None:
    """The one-line reason `path` cannot be loaded here before anything is read (a local path that is not there,
    an uncached hub id with the hub out of reach), else None."""
    return missing_local_path(path) or unreachable_hub(path)


PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# (host, port) -> None (reachable) or why not: probed once per process
_reachable: dict[tuple[str, int], str | None] = {}


def unreachable_hub(path: str, timeout: float = 3.0) -> str | None:
    """A one-line message when `path` is a hub id this machine has not cached and the hub cannot be reached,
    else None. Without it transformers retries for most of a minute before giving up. Not checked: local paths,
    built-in names, HF_HUB_OFFLINE (transformers answers at once there), runs behind a proxy (the direct
    connection this makes is not the one the download would use)."""
    import os
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    if (
        path in BUILTIN_NAMES
        or looks_local(path)
        or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    ):
        return None
    if any(os.environ.get(v) for v in PROXY_VARS) or getproxies():  # getproxies: the system's too
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(path, "config.json"), str):
            return None
    except Exception:  # an id the hub library refuses: transformers will say why
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    except ValueError:
        # e.g. a port that is not a number: transformers will say what is wrong with it
        return None
    if not host:
        return None
    if (host, port) not in _reachable:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _reachable[host, port] = None
        except OSError as e:
            _reachable[host, port] = str(e) or type(e).__name__
    why = _reachable[host, port]
    if why is None:
        return None
    return (
        f"model '{path}' is not in the local Hugging Face cache and {host} cannot be reached ({why}); pass a "
        "local model directory or .gguf file, or set HF_ENDPOINT to a hub mirror this machine can reach"
    )
