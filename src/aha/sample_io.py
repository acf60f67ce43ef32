"""What `aha sample` reads and writes around its selection logic (src/aha/sample.py):

- the sampled model: a local engine (hf/fast) on the loaded model, or a teacher behind an OpenAI-compatible
  server (engine=openai, its requests cached in OUT/requests.jsonl), and the checkpoint step for provenance;
- the resumable output: OUT/data.jsonl (the kept rows) and OUT/progress.jsonl (one entry per finished chunk of
  prompts). A chunk's rows and then its progress entry are appended and fsynced; on open, rows of chunks without
  a progress entry (a crash between the two) and a torn last line are dropped, so a restarted run continues with
  the next chunk and never duplicates a row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sample import SampleConfig


# ---- resumable output ---------------------------------------------------------------------------------------------
class ResumableWriter:
    """OUT/data.jsonl + OUT/progress.jsonl; rows of chunks without a progress entry are dropped on open."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.data, self.progress = out / "data.jsonl", out / "progress.jsonl"
        self.chunks = [r for r in _read_jsonl(self.progress) if "prompts" in r]
        self.done = {i for r in self.chunks for i in r["prompts"]}
        _rewrite(self.progress, self.chunks)  # also drops a torn last line
        rows = [r for r in _read_jsonl(self.data) if r.get("prompt_index") in self.done]
        _rewrite(self.data, rows)

    def commit(self, prompts: list[int], rows: list[dict], stats: dict) -> None:
        for path, recs in (
            (self.data, rows),
            (self.progress, [{"prompts": prompts, "stats": stats}]),
        ):
            with path.open("a") as f:
                for r in recs:
                    f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.chunks.append({"prompts": prompts, "stats": stats})
        self.done.update(prompts)

    def totals(self) -> dict:
        out: dict = {}
        for c in self.chunks:
            for k, v in c["stats"].items():
                out[k] = out.get(k, 0) + v
        return out


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn by a crash mid-write
    return rows


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    os.replace(tmp, path)


# ---- the sampled model ----------------------------------------------------------------------------------------------
def checkpoint_step(path: str) -> int | None:
    """The training step of a checkpoint directory (its state.json), None for other models."""
    state = Path(path) / "state.json"
    try:
        return int(json.loads(state.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_engine(cfg: SampleConfig):
    """-> (engine, tokenizer, model name for provenance)."""
    from .models.load import load_model
    from .rollout.factory import make_engine

    m = cfg.model
    if cfg.engine != "openai":
        model, tok = load_model(
            m.path,
            device=m.device,
            dtype=m.dtype,
            trust_remote_code=m.trust_remote_code,
            seed=cfg.sampling.seed,
        )
        model.eval()
        return make_engine(cfg.engine, model, tok), tok, m.path
    from .rollout.openai_client import OpenAIEngine

    tok = load_tokenizer(m.path, m.trust_remote_code)
    o = cfg.openai
    engine = OpenAIEngine(
        o.base_url,
        o.model,
        tok,
        api=o.api,
        api_key=os.environ.get(o.api_key_env) if o.api_key_env else None,
        concurrency=o.concurrency,
        timeout=o.timeout,
        max_retries=o.max_retries,
        backoff=o.backoff,
        send_token_ids=o.send_token_ids,
        vllm_extensions=o.vllm_extensions,
        logprobs=o.logprobs,
        extra_body=o.extra_body,
        system=o.system,
        cache_path=Path(cfg.out) / "requests.jsonl",
    )
    return engine, tok, f"{o.model}@{o.base_url}"


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer alone (engine=openai: the server holds the model), with a pad token as load_model sets it."""
    from .models.load import BUILTIN
    from .models.tiny import char_tokenizer

    if path == "tiny-random":
        return char_tokenizer()
    from .models.load import load_tokenizer as load_saved

    tok = load_saved(str(BUILTIN.get(path, path)), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
