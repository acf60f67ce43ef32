"""Stand-in OpenAI-compatible servers for the OpenAIEngine tests: a threaded HTTP/1.1 server on 127.0.0.1 whose
answer to each request is decided by a script, and scripts that answer as vLLM, DeepSeek's API, a server that
ignores n, ... do (only the fields the client reads)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DROP = "drop"  # a script returning this closes the connection without answering


class Fake:
    """`script(body, count) -> (code, obj, headers) | DROP`; records bodies, connections and requests in flight."""

    def __init__(self, script, delay: float = 0.0):
        self.script, self.delay, self.count, self.bodies = script, delay, 0, []
        self.in_flight = self.max_in_flight = 0
        self.connections: set = set()  # client (host, port) pairs seen: one per TCP connection
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.count += 1
                    n = fake.count
                    fake.bodies.append(body)
                    fake.connections.add(self.client_address)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay)
                    answer = fake.script(body, n)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                if answer == DROP:
                    self.close_connection = True
                    return
                code, obj, headers = answer
                data = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client cut off: not news
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def error(code: int, message: str, headers: dict | None = None):
    return code, {"error": {"message": message, "type": "invalid_request_error"}}, headers or {}


def text_of(body: dict, j: int) -> str:
    """Choice j's text: the prompt (or last message), the sample index and the seed, e.g. "ab/0/5"."""
    prompt = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
    return f"{prompt}/{j}/{body.get('seed')}"


def plain(body, count=0, n_choices=None):
    """A minimal OpenAI completions answer (text, finish_reason; nothing vLLM-specific); a script as it is."""
    k = body["n"] if n_choices is None else n_choices
    choices = [{"index": j, "text": text_of(body, j), "finish_reason": "stop"} for j in range(k)]
    return 200, {"object": "text_completion", "choices": choices}, {}


def vllm(tok):
    """vLLM: every field it implements; token_ids (with EOS) only when asked with return_token_ids, and they are
    deliberately not the text's encoding ("#" per character) so a test can tell them from re-encoded ids."""

    def script(body, n):
        want_ids = body.get("return_token_ids")
        choices = []
        for j in range(body["n"]):
            text = text_of(body, j)
            ids = tok("#" * len(text), add_special_tokens=False).input_ids + [tok.eos_token_id]
            c = {"index": j, "finish_reason": "stop", "stop_reason": None}
            if want_ids:
                c["token_ids"] = ids
            lps = [-0.5 - 0.01 * t for t in range(len(ids))]
            if "prompt" in body:
                c["text"] = text
                c["logprobs"] = {"token_logprobs": lps} if body.get("logprobs") else None
                if want_ids:
                    c["prompt_token_ids"] = [7, 8, 9]
            else:
                c["message"] = {"role": "assistant", "content": text, "reasoning": "hmm"}
                c["logprobs"] = (
                    {"content": [{"token": "x", "logprob": v} for v in lps]}
                    if body.get("logprobs")
                    else None
                )
            choices.append(c)
        out = {"choices": choices}
        if "messages" in body and want_ids:
            out["prompt_token_ids"] = [7, 8, 9]
        return 200, out, {}

    return script


def deepseek(body, n):
    """DeepSeek's reasoner on /chat/completions: rejects logprobs, ignores n, splits off reasoning_content."""
    if "logprobs" in body:
        return error(400, "deepseek-reasoner does not support the parameter `logprobs`")
    message = {
        "role": "assistant",
        "content": f"<answer>{text_of(body, 0)}</answer>",
        "reasoning_content": "Let me think.\nDone.",
    }
    return 200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}, {}
