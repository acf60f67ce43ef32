"""The sampled model of `aha sample`: a local engine (hf/fast) on the loaded model, or a teacher behind an
OpenAI-compatible server (engine=openai: only its tokenizer is loaded here; requests are cached in
OUT/requests.jsonl so a resumed run does not pay for them twice)."""

from __future__ import annotations

from pathlib import Path

from .config import SampleConfig


def build_engine(cfg: SampleConfig):
    """-> (engine, tokenizer, model name for provenance)."""
    from ..rollout.factory import make_engine

    m = cfg.model
    if cfg.engine != "openai":
        from ..data.templates import template_notice

        model, tok = m.load(seed=cfg.sampling.seed)
        model.eval()
        notice = template_notice(tok, cfg.task.template, m.path)
        if notice:
            print(notice)
        return make_engine(cfg.engine, model, tok), tok, m.path
    tok = load_tokenizer(m.path, m.trust_remote_code)
    o = cfg.openai
    engine = o.engine(tok, cache_path=Path(cfg.out) / "requests.jsonl")
    return engine, tok, f"{o.model}@{o.base_url}"


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer alone (engine=openai: the server holds the model), with a pad token as load_model sets it."""
    from ..models.load import BUILTIN
    from ..models.tiny import char_tokenizer

    if path == "tiny-random":
        return char_tokenizer()
    from ..models.load import load_tokenizer as load_saved

    tok = load_saved(str(BUILTIN.get(path, path)), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
