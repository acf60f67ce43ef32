"""Tokenizers: load them as saved, give them a pad token, and say which ids end a completion.

- `load_tokenizer(path)`: a model directory, a built-in name's directory or a `.gguf` file. Tokenizers saved
  from a bare `tokenizers` object (ours: the char tokenizer, the demo's BPE) load as saved rather than through
  `AutoTokenizer`, which would rebuild the model family's own pre-tokenizer (transformers >= 5 makes a Qwen2
  tokenizer of any `model_type: qwen2` checkpoint), so spaces and digits would split differently from training.
- Every such tokenizer is a `PreTrainedTokenizerFast` of this module: transformers 5 calls its generic class
  `TokenizersBackend` and writes that name into `tokenizer_config.json`, a name transformers 4.x (and a vLLM
  built on it) cannot load. Ours saves as `PreTrainedTokenizerFast`, which both load, with the same token ids.
- `stop_token_ids(tokenizer, generation_config)`: the one place the engines' stop ids come from. Chat models
  end a turn on several ids (Llama-3-Instruct: <|eot_id|> and <|end_of_text|>; Qwen2.5-Instruct: <|im_end|>
  and <|endoftext|>); their `generation_config.eos_token_id` lists them, while `tokenizer.eos_token_id` is one.
- `ensure_pad_token(tokenizer, generation_config)`: a tokenizer with no pad token gets the model's own pad id
  if it names one, else its end token. No embedding is added (a new row would be untrained and would change
  the model's shapes); pad positions are masked everywhere, so any existing token serves.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast as _HFFast

from . import gguf_cache
from .errors import ModelLoadError


class PreTrainedTokenizerFast(_HFFast):
    """transformers' fast tokenizer, saved under the class name every transformers version loads."""

    @property
    def can_save_slow_tokenizer(self) -> bool:
        # transformers 5 strips a trailing "Fast" from the saved class name when this is True, which would
        # name a slow class that has no vocabulary files to load from.
        return False


def as_portable(tok):
    """`tok` as ours if it is transformers' generic fast tokenizer (same object, same state: ours adds no
    attribute), so that `tok.save_pretrained` writes a class every version loads: 5.x names the generic
    class `TokenizersBackend`, 4.x saves it as "PreTrainedTokenizer"."""
    if type(tok) is _HFFast:
        tok.__class__ = PreTrainedTokenizerFast
    return tok


def is_gguf(path) -> bool:
    return str(path).lower().endswith(".gguf")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer saved at `path` (a directory, a hub id or a .gguf file), as saved (see the module doc)."""
    from transformers import AutoTokenizer

    if is_gguf(path):
        require_gguf()
        p = Path(path).expanduser()
        done = gguf_cache.cached(p) if p.is_file() else None
        if done is not None:  # the tokenizer saved with the file's dequantized model
            return load_tokenizer(str(done))
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        return as_portable(gguf_special_tokens(tok, p))
    cfg_file = Path(path) / "tokenizer_config.json"
    if cfg_file.is_file():
        cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast", "PreTrainedTokenizer"):
            return PreTrainedTokenizerFast.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return as_portable(tok)


GGUF_SPECIALS = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "pad_token": "padding_token_id",
}


def gguf_special_tokens(tok, path: Path):
    """Set bos/eos/pad from the file's own `tokenizer.ggml.*_token_id` keys: transformers 4.x swaps bos and
    eos when it rebuilds a Llama-architecture GGUF tokenizer (SmolLM2's eos came out as <|im_start|>)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    for attr, key in GGUF_SPECIALS.items():
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None and field.data:
            token_id = int(field.parts[field.data[0]][0])
            if 0 <= token_id < len(tok):
                setattr(tok, attr, tok.convert_ids_to_tokens(token_id))
    return tok


def require_gguf() -> None:
    """transformers reads .gguf files through the `gguf` package and refuses them without `accelerate`."""
    import importlib.util

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelLoadError(
            f"loading a .gguf file needs {' and '.join(missing)}: pip install 'aha-rl[gguf]'"
        )


def _ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if v is not None]
    return [int(value)]


def _generation_config(source):
    """A GenerationConfig from a model (PEFT-wrapped or not), a GenerationConfig, or None."""
    if source is None:
        return None
    return getattr(source, "generation_config", source)


def stop_token_ids(tokenizer, generation_config=None) -> tuple[int, ...]:
    """The ids that end a completion: the model's `generation_config.eos_token_id` (an int or a list), then
    `tokenizer.eos_token_id`; duplicates dropped, order kept. `generation_config` may be the model itself."""
    gc = _generation_config(generation_config)
    ids = _ids(getattr(gc, "eos_token_id", None)) + _ids(tokenizer.eos_token_id)
    return tuple(dict.fromkeys(ids))


def generation_config_at(path: str):
    """The GenerationConfig saved beside a model directory's weights, or None (a .gguf file, a hub id, none
    saved): for callers that load only the tokenizer (engine=openai)."""
    from transformers import GenerationConfig

    if is_gguf(path) or not (Path(path) / "generation_config.json").is_file():
        return None
    return GenerationConfig.from_pretrained(path)


def ensure_pad_token(tokenizer, generation_config=None):
    """Give `tokenizer` a pad token if it has none (see the module doc); returns it."""
    if tokenizer.pad_token_id is not None:
        return tokenizer
    gc = _generation_config(generation_config)
    pad = getattr(gc, "pad_token_id", None)
    if isinstance(pad, int) and 0 <= pad < len(tokenizer):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
    else:
        stops = stop_token_ids(tokenizer, gc)
        if not stops:
            raise ModelLoadError(
                "the tokenizer has neither a pad nor an end-of-sequence token; save one with the "
                "model (tokenizer.eos_token = ...)"
            )
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(stops[0])
    return tokenizer
