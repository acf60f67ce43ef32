"""Load a `.gguf` file (llama.cpp's format) as a plain, trainable Hugging Face model.

transformers reads the architecture, the weights and the tokenizer (vocabulary, merges, special ids and the
chat template) from the file's metadata and dequantizes every weight (Q4_1, Q8_0, F16, ...) into an ordinary
dense tensor. What it leaves behind marks the model as still quantized: `config.quantization_config`
(`quant_method: gguf`) and, on transformers 5, an `hf_quantizer` whose `is_trainable` and `is_serializable` are
False, so `save_pretrained` refuses the model and a reload of its config would look for the .gguf file again.
Both go here, which makes the result an ordinary fp32 checkpoint: trained and saved like any other.

Parsing and dequantizing a file takes a while (~80 s for a 98 MB Q4_1 file on 2 cores), so the result is cached
as an ordinary model directory and later loads read that (gguf_cache.py).

Recent transformers can keep GGUF blocks packed (with the `kernels` package); those weights cannot be trained,
so aha asks for a full dequantization where that option exists.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import torch

from . import gguf_cache
from .compat import dtype_kwarg
from .errors import ModelLoadError
from .tokenizer import load_tokenizer, require_gguf


def _dequantize_kwarg(file: str) -> dict:
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers < 5.2x: GGUF is always dequantized on load
        return {}
    return {"quantization_config": GgufConfig(gguf_file=file, dequantize=True)}


def drop_quantization(model):
    """Unmark a dequantized model as quantized (see the module doc); returns it."""
    packed = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:
        raise ModelLoadError(
            f"the GGUF weights stayed packed ({packed[0]}, ...), so the model cannot be trained; "
            "upgrade transformers or uninstall the `kernels` package"
        )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if "is_quantized" in vars(model):  # transformers 4.x keeps a plain attribute
        model.is_quantized = False
    return model


def load_gguf(path: str, dtype: torch.dtype, trust_remote_code: bool = False):
    """-> (model, tokenizer) from a .gguf file, the model dense in `dtype` on the CPU."""
    require_gguf()
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelLoadError(
            f"GGUF file '{path}' not found; pass the path of an existing .gguf file"
        )
    from transformers import AutoModelForCausalLM

    done = gguf_cache.cached(file, dtype)
    if done is not None:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(done), **dtype_kwarg(dtype))
            tok = load_tokenizer(str(done))
            print(f"aha: {file.name} read from its dequantized cache {done}", file=sys.stderr)
            return model, tok
        # a damaged cache (safetensors raises its own types): read the file itself, cache it afresh
        except Exception as e:  # noqa: BLE001
            if not gguf_cache.damaged(e):
                raise
            gguf_cache.drop(done)
    try:
        tok = load_tokenizer(str(file), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(file.parent),
            gguf_file=file.name,
            trust_remote_code=trust_remote_code,
            **dtype_kwarg(dtype),
            **_dequantize_kwarg(file.name),
        )
    except (OSError, ValueError, KeyError, struct.error) as e:  # struct: a header cut short
        first = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load GGUF file '{path}': {first}{_fix(first)}") from None
    model = drop_quantization(model)
    gguf_cache.save(file, dtype, model, tok)
    return model, tok


def _fix(message: str) -> str:
    """What to do about a GGUF reader's error, where its message says (gguf's reader names neither)."""
    if "magic" in message.lower():
        return "; pass a .gguf model file (or a model directory)"
    # numpy's words when the reader's arrays run past the end of the file (a copy cut short)
    short = (
        "reshape",
        "larger dtype",
        "out of bounds",
        "buffer is too small",
        "mmap length",
        "requires a buffer",
    )
    if any(w in message for w in short):
        return "; the file looks truncated or damaged: download or copy it again"
    return ""
