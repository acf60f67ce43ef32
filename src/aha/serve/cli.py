"""`aha serve MODEL [--port N] [--served-model-name NAME] [--api-key KEY] [key=value ...]`.

Order: arguments, then the serve extra (fastapi, uvicorn; one line naming it if missing), then the port (one
line if in use), then the model (the slow part), then serving until Ctrl-C / SIGTERM (exit 0). This module
imports neither torch nor fastapi, so `ServeConfig` is cheap to read for help text.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import ConfigError, check

FLAGS = {
    "--served-model-name": "name",
    "--api-key": "api_key",
    "--host": "host",
    "--port": "port",
    "--max-model-len": "max_model_len",
    "--chat-template": "chat_template",
    "--dtype": "dtype",
    "--device": "device",
    "--engine": "engine",
    "--threads": "threads",
}
USAGE = (
    "usage: aha serve MODEL [--port 8000] [--host 127.0.0.1] [--served-model-name NAME] [--api-key KEY] "
    "[--max-model-len N] [--chat-template FILE] [--threads N] [key=value ...]"
)


@dataclass
class ServeConfig:
    model: str = "tiny-base"  # a local HF directory, a .gguf file, a hub id, tiny-base, tiny-recheck or tiny-random
    name: str = ""  # the model name of the API ("" = the model directory's or file's name)
    host: str = "127.0.0.1"  # 0.0.0.0 to accept connections from other machines
    port: int = 8000  # 0 = any free port (printed)
    api_key: str = ""  # clients must send 'Authorization: Bearer KEY' ("" = $AHA_API_KEY)
    max_model_len: int = 0  # context: prompt + max_tokens (0 = the model's max_position_embeddings)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # bf16 on GPU, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: the fast engine on a GPU, HF generate on the CPU
    engine: Literal["auto", "hf", "fast"] = "auto"
    chat_template: str | None = None  # Jinja string or file, for tokenizers that have none
    batch_window_ms: float = 5.0  # how long a request waits for others to share its engine call
    max_batch_prompts: int = 64  # prompts per engine call
    max_sequences: int = 256  # completions one request may ask for (prompts x n)
    max_body_mb: float = 32.0  # larger request bodies are refused (413)
    timeout_s: float = 30.0  # deadline for a request's head and body (then closed / 408)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "warning"  # uvicorn's
    # CPU threads of torch's intra-op pool (null = torch's default, all cores; 1 on a shared machine)
    threads: int | None = None

    def __post_init__(self):
        check(0 <= self.port < 65536, "port", f"must be in [0, 65535], got {self.port}")
        check(self.max_model_len >= 0, "max_model_len", "must be >= 0 (0 = the model's)")
        check(self.batch_window_ms >= 0, "batch_window_ms", "must be >= 0")
        check(self.max_batch_prompts >= 1, "max_batch_prompts", "must be >= 1")
        check(self.max_sequences >= 1, "max_sequences", "must be >= 1")
        check(self.max_body_mb > 0, "max_body_mb", "must be > 0")
        check(self.timeout_s > 0, "timeout_s", "must be > 0")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")


def default_name(model: str) -> str:
    """A local directory is served under its last component (step-000060, not runs/x/checkpoints/...), a local
    file (a .gguf) under its file name; a hub id or built-in name as given."""
    p = Path(model).expanduser()
    return p.resolve().name if p.is_dir() or p.is_file() else model


def bind(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket, or a one-line ConfigError."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(
            "host", f"cannot use host '{host}' ({e}); try 127.0.0.1 or 0.0.0.0"
        ) from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
    except OSError as e:
        sock.close()
        raise ConfigError(
            "port",
            f"cannot listen on {host}:{port} ({e.strerror}); pick another port with --port N "
            "(0 = any free port) or stop what uses it",
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/v1"


def cmd_serve(args: list[str]) -> int:
    from ..cli_args import UsageError, flags_to_overrides, split_args
    from ..config import load_config

    model, overrides = split_args(flags_to_overrides(args, FLAGS))
    if model is None:
        raise UsageError(USAGE)
    cfg = load_config(ServeConfig, None, [f"model={model}", *overrides])
    from ..models.errors import model_path_problem

    problem = model_path_problem(cfg.model)  # before torch, fastapi and the model: at once
    if problem:
        raise ConfigError("model", problem)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"aha serve needs the serve extra ({e.name} is missing): pip install 'aha-rl[serve]'"
        ) from None
    # before the slow imports and the model: a busy port fails at once
    sock = bind(cfg.host, cfg.port)
    try:
        from ..models.load import load_model
        from ..rollout.factory import make_engine
        from .app import Api
        from .server import BACKLOG, make_server

        if cfg.threads is not None:
            import torch

            torch.set_num_threads(cfg.threads)
        m, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        m.eval()
        limit = getattr(m.config, "max_position_embeddings", None)
        if limit and cfg.max_model_len > limit:
            raise ConfigError("max_model_len", f"{cfg.max_model_len} is over the model's {limit}")
        name = cfg.name or default_name(cfg.model)
        api = Api(
            make_engine(cfg.engine, m, tok),
            tok,
            name,
            model=m,
            aliases=(cfg.model,),
            max_model_len=cfg.max_model_len,
            api_key=cfg.api_key or os.environ.get("AHA_API_KEY") or None,
            chat_template=cfg.chat_template,
            batch_window_ms=cfg.batch_window_ms,
            max_batch_prompts=cfg.max_batch_prompts,
            max_sequences=cfg.max_sequences,
            max_body_mb=cfg.max_body_mb,
            timeout_s=cfg.timeout_s,
        )
        server = make_server(api, cfg.timeout_s, cfg.log_level)
        sock.listen(BACKLOG)
        # Ctrl-C / SIGTERM stop the server from here on (uvicorn's own handlers take over while it runs
        # and re-raise the signal into these when it has shut down): a stopped server exits 0.
        stop = lambda sig, frame: server.handle_exit(sig, frame)
        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        auth = ", API key required" if api.api_key else ""
        print(
            f"serving {cfg.model} as '{name}' at {url_of(sock)}{auth} (Ctrl-C to stop)", flush=True
        )
        try:
            server.run(sockets=[sock])
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    finally:
        sock.close()
    print("aha serve: stopped", flush=True)
    return 0
