"""The Engine protocol over any OpenAI-compatible server: teacher traces from vLLM, SGLang, DeepSeek's API or
`aha serve`, with retries, bounded concurrency and a resumable request cache.

    engine.py     OpenAIEngine: request bodies, one request per prompt (per sample when a server ignores n)
    transport.py  httpx with pooled connections, timeouts, retries with backoff honouring Retry-After
    cache.py      the resumable on-disk request cache
    response.py   server JSON -> Completions (server token ids when given, reasoning as <think>...</think>)

Needs httpx: pip install 'aha-rl[teacher]'.
"""

from .engine import OpenAIEngine
from .transport import OpenAIError

__all__ = ["OpenAIEngine", "OpenAIError"]
