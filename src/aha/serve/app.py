"""The HTTP side of `aha serve`: a FastAPI app over the engine's `Scheduler`.

    POST /v1/completions, /v1/chat/completions   (stream: SSE chunks, then "data: [DONE]")
    GET  /v1/models, /v1/models/{id}, /health
    POST /tokenize, /detokenize                    (vLLM's)

Everything on the event loop is short: the body is read under a size cap and a deadline, tokenization and
chat-template rendering run in worker threads, generation runs on the scheduler's thread, and results come
back as events. Each request is checked before it reaches the engine (token ids within the vocabulary, prompt
+ max_tokens within the context, at most `max_sequences` completions), so a bad request is a 400 of its own and
never a failure of the requests batched with it. A client that disconnects has its work abandoned.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .prompts import Prompts
from .protocol import ApiError, parse
from .responses import Formatter
from .scheduler import Job, Scheduler, ServerClosing
from .text import TextStream, whole_text

log = logging.getLogger("aha.serve")


class _Gone(Exception):
    """The client disconnected: nothing is sent."""


class Api:
    def __init__(
        self,
        engine,
        tokenizer,
        name: str,
        *,
        model=None,
        aliases: tuple[str, ...] = (),
        max_model_len: int = 0,
        api_key: str | None = None,
        chat_template: str | None = None,
        batch_window_ms: float = 5.0,
        max_batch_prompts: int = 64,
        max_sequences: int = 256,
        max_body_mb: float = 32.0,
        timeout_s: float = 30.0,
    ):
        self.tokenizer, self.name, self.aliases = tokenizer, name, {name, *aliases}
        self.model = model if model is not None else getattr(engine, "model", None)
        self.prompts = Prompts(tokenizer, self.model, max_model_len=max_model_len,
                               chat_template=chat_template, max_sequences=max_sequences)  # fmt: skip
        self.api_key = api_key or None
        self.max_body, self.timeout = int(max_body_mb * 2**20), timeout_s
        self.created = int(time.time())
        self.scheduler = Scheduler(
            engine, tokenizer, self.model, window_ms=batch_window_ms, max_prompts=max_batch_prompts
        )

    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_app):
            yield
            await asyncio.to_thread(self.scheduler.close)

        app = FastAPI(title="aha serve", lifespan=lifespan, openapi_url=None)
        routes = [
            ("/health", "GET", self.health, False),
            ("/v1/models", "GET", self.models, True),
            ("/v1/models/{model_id:path}", "GET", self.model_card, True),
            ("/v1/completions", "POST", self.completions, True),
            ("/v1/chat/completions", "POST", self.chat, True),
            ("/tokenize", "POST", self.tokenize, True),
            ("/detokenize", "POST", self.detokenize, True),
        ]
        for path, method, fn, auth in routes:
            app.add_api_route(path, self._guard(fn, auth), methods=[method])

        async def http_error(_request, e: HTTPException):  # unknown route, wrong method
            msg = (
                f"no route {_request.method} {_request.url.path}"
                if e.status_code in (404, 405)
                else e.detail
            )
            return JSONResponse(ApiError(str(msg), e.status_code).body(), status_code=e.status_code)

        app.add_exception_handler(HTTPException, http_error)
        return app

    def _guard(self, fn, auth: bool):
        async def endpoint(request: Request):
            try:
                if auth:
                    self._auth(request)
                return await fn(request)
            except ApiError as e:
                return JSONResponse(e.body(), status_code=e.status)
            except _Gone:
                return Response(status_code=499)  # never reaches the client
            except Exception as e:
                log.exception("aha serve: %s %s failed", request.method, request.url.path)
                err = ApiError(f"internal error: {type(e).__name__}: {e}", 500)
                return JSONResponse(err.body(), status_code=500)

        endpoint.__name__ = fn.__name__
        return endpoint

    # ---- routes -------------------------------------------------------------------------------------------
    async def health(self, request: Request):
        return JSONResponse({"status": "ok"})

    def _card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "aha",
                "root": self.name, "parent": None, "max_model_len": self.prompts.ctx}  # fmt: skip

    async def models(self, request: Request):
        return JSONResponse({"object": "list", "data": [self._card()]})

    async def model_card(self, request: Request):
        self._check_model(request.path_params["model_id"])
        return JSONResponse(self._card())

    async def completions(self, request: Request):
        return await self._generate(request, chat=False)

    async def chat(self, request: Request):
        return await self._generate(request, chat=True)

    async def tokenize(self, request: Request):
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError("the request body must be a JSON object")
        if "messages" in body:
            req = parse(body, chat=True)
            self._check_model(req.model)
            [ids], _ = await asyncio.to_thread(self.prompts.encode, req)
        else:
            extra = set(body) - {"model", "prompt", "add_special_tokens"}
            if extra or not isinstance(body.get("prompt"), str):
                raise ApiError(
                    "/tokenize takes {prompt: string, add_special_tokens} or {messages, ...}"
                )
            self._check_model(body.get("model"))
            req = parse({**body, "max_tokens": 1}, chat=False)
            [ids], _ = await asyncio.to_thread(self.prompts.encode, req)
        return JSONResponse({"count": len(ids), "max_model_len": self.prompts.ctx, "tokens": ids})

    async def detokenize(self, request: Request):
        body = await self._body(request)
        if not isinstance(body, dict) or set(body) - {"model", "tokens"}:
            raise ApiError("/detokenize takes {tokens: [ids]}")
        self._check_model(body.get("model"))
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(type(t) is int for t in ids):
            raise ApiError("'tokens' must be a list of token ids", param="tokens")
        self.prompts.check_ids(ids, "tokens")
        return JSONResponse({"prompt": self.tokenizer.decode(ids)})

    # ---- generation ---------------------------------------------------------------------------------------
    async def _generate(self, request: Request, chat: bool):
        req = parse(await self._body(request), chat)
        self._check_model(req.model)
        prompts, texts = await asyncio.to_thread(self.prompts.encode, req)
        job = self._job(req, prompts)
        fmt = Formatter(self.tokenizer, self.name, req)
        try:
            self.scheduler.submit(job)
        except ServerClosing as e:
            raise ApiError(str(e), 503) from None
        if req.stream:
            return StreamingResponse(
                self._stream(job, fmt, prompts, texts),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(fmt.response(await self._wait(job, request), prompts, texts))

    def _job(self, req, prompts: list[list[int]]) -> Job:
        limits = self.prompts.limits(req, prompts)
        params = self.prompts.params(req, limits)
        k = req.logprobs
        if (k or (req.echo and k is not None)) and self.model is None:
            raise ApiError(
                "top and prompt logprobs need the model; this server has none", param="logprobs"
            )
        return Job(
            prompts,
            params,
            limits,
            loop=asyncio.get_running_loop(),
            stream=req.stream and k is None,  # with logprobs a choice is sent whole, once done
            alternatives=k or None,
            prompt_logprobs=req.echo and k is not None,
        )

    async def _wait(self, job: Job, request: Request):
        watch = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                get = asyncio.ensure_future(job.events.get())
                done, _ = await asyncio.wait({get, watch}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    raise _Gone()
                kind, *rest = get.result()
                if kind == "done":
                    return rest[0]
                if kind == "error":
                    raise _engine_error(rest[0])
        finally:
            watch.cancel()
            job.aborted = True  # a no-op once done; abandons the work of a client that left

    async def _stream(self, job: Job, fmt: Formatter, prompts, texts):
        req = fmt.req
        streams = [TextStream(self.tokenizer, req.stop) for _ in job.limits]
        try:
            for i in range(len(job.limits)):  # opening chunks: the role, or the echoed prompt
                if req.chat:
                    yield fmt.chunk(i, role=True)
                elif req.echo and job.stream:
                    yield fmt.chunk(i, texts[i // req.n])
            while True:
                kind, *rest = await job.events.get()
                if kind == "tokens":
                    k, ids = rest
                    if delta := streams[k].push(ids):
                        yield fmt.chunk(k, delta)
                    continue
                if kind == "error":
                    yield fmt.sse(_engine_error(rest[0]).body())
                    break
                outs = rest[0]
                for k, out in enumerate(outs):
                    if job.stream:
                        if tail := streams[k].finish(whole_text(out.completion)):
                            yield fmt.chunk(k, tail)
                    else:  # logprobs: the whole choice in one chunk
                        ch = fmt.choice(k, out, prompts, texts)
                        text = ch["message"]["content"] if req.chat else ch["text"]
                        yield fmt.chunk(k, text, logprobs=ch["logprobs"])
                    yield fmt.chunk(k, finish=out)
                if req.include_usage:
                    yield fmt.usage_chunk(prompts, outs)
                break
            yield "data: [DONE]\n\n"
        finally:  # also on a disconnect, which cancels this generator
            job.aborted = True

    # ---- checks -------------------------------------------------------------------------------------------
    def _auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise ApiError(
                "invalid or missing API key; send the header 'Authorization: Bearer KEY'", 401
            )

    def _check_model(self, model: str | None) -> None:
        if model is not None and model not in self.aliases:
            raise ApiError(
                f"The model `{model}` does not exist; this server serves '{self.name}'",
                404,
                "model",
            )

    async def _body(self, request: Request):
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > self.max_body:
            raise ApiError(f"the request body is larger than {self.max_body >> 20} MiB", 413)

        async def read() -> bytes:
            parts, n = [], 0
            async for part in request.stream():
                n += len(part)
                if n > self.max_body:
                    raise ApiError(
                        f"the request body is larger than {self.max_body >> 20} MiB", 413
                    )
                parts.append(part)
            return b"".join(parts)

        try:
            raw = await asyncio.wait_for(read(), self.timeout)
        except asyncio.TimeoutError:
            raise ApiError(
                f"the request body did not arrive within {self.timeout:g} s", 408
            ) from None
        except ClientDisconnect:
            raise _Gone() from None
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ApiError(f"the request body is not valid JSON ({e})") from None
        try:  # a \ud800 escape parses to a lone surrogate, which no UTF-8 text (nor a tokenizer) holds
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError as e:
            bad = e.object[e.start : e.end].encode("unicode_escape").decode()
            raise ApiError(
                f"the request holds a string that is not valid Unicode (a lone surrogate {bad}); send "
                "UTF-8 text"
            ) from None
        return body


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _engine_error(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ServerClosing):
        return ApiError(str(e), 503)
    log.error("aha serve: generation failed: %s: %s", type(e).__name__, e, exc_info=e)
    return ApiError(f"generation failed: {type(e).__name__}: {e}", 500)
