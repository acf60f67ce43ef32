"""`aha serve`: a model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn, the `serve` extra).

    cli.py        `aha serve MODEL ...`: ServeConfig, arguments, port, model, run (no torch/fastapi import)
    server.py     uvicorn on a socket bound first (one-line port errors); AhaServer runs it in a thread
    app.py        the routes: checks, tokenization off the event loop, non-streamed and SSE responses
    protocol.py   request bodies -> checked GenRequest; unimplemented fields are 400s naming them
    responses.py  OpenAI-shaped choices, logprobs and stream chunks
    scheduler.py  the engine's one thread: batching, per-request limits and failures, abandoning
    text.py       incremental detokenization with stop-string hold-back; the server's own stop/limit cut
    scoring.py    top-k alternatives and prompt logprobs by one teacher-forced forward, when asked

`from aha.serve import AhaServer` (tests, notebooks) needs fastapi; `cmd_serve` and `ServeConfig` do not.
"""

from .cli import ServeConfig, cmd_serve, default_name


def __getattr__(name: str):
    if name in ("AhaServer", "Api"):
        from . import app, server

        return {"AhaServer": server.AhaServer, "Api": app.Api}[name]
    raise AttributeError(f"module 'aha.serve' has no attribute {name!r}")


__all__ = ["AhaServer", "Api", "ServeConfig", "cmd_serve", "default_name"]
