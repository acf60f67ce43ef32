"""Load the policy (and, when beta > 0, the reference) from a local path, a .gguf file, a hub id or a built-in
name. Every path a model goes through (train, eval, sample, serve, pipelines) comes here, so each accepts all
of them; tokenizers, pad and stop ids are in tokenizer.py, GGUF files in gguf.py."""

from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path

import torch

from . import gguf_cache
from .compat import dtype_kwarg
from .errors import ModelLoadError, looks_local, model_path_problem
from .gguf import load_gguf
from .tiny import char_tokenizer, tiny_model
from .tokenizer import ensure_pad_token, is_gguf, load_tokenizer, require_gguf

__all__ = [
    "ModelLoadError",
    "load_config",
    "load_model",
    "load_tokenizer",
    "reference_model",
    "unwrap",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUILTIN = {"tiny-base": ASSETS / "tiny-base", "tiny-recheck": ASSETS / "tiny-recheck"}
# How each was made: (recipe, the directory `aha pretrain RECIPE` writes)
RECIPES = {
    "tiny-base": ("configs/pretrain.yaml", "runs/pretrain/tiny-base"),
    "tiny-recheck": ("configs/pretrain_recheck.yaml", "runs/pretrain/tiny-recheck"),
}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device '{device}' asked for but CUDA is not available; use model.device=cpu"
        )
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_model(
    path: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    compile_layers: bool = False,
    lora_r: int = 0,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    lora_target_modules: list[str] | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
):
    """-> (model, tokenizer). The model is on `device` in `dtype`, in train mode, ready for the optimizer."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if path == "tiny-random":
        tok = char_tokenizer()
        model = tiny_model(len(tok), seed=seed, dtype=dt)
    elif is_gguf(path):
        model, tok = load_gguf(path, dt, trust_remote_code=trust_remote_code)
    else:
        src = BUILTIN.get(path, path)
        if path in BUILTIN and not Path(src).is_dir():
            recipe, out = RECIPES[path]
            raise ModelLoadError(
                f"built-in model '{path}' is missing from this install ({src}); reinstall aha-rl, or "
                f"run `aha pretrain {recipe}` and pass model.path={out}"
            )
        missing = model_path_problem(str(src))
        if missing is not None:
            raise ModelLoadError(missing)
        if looks_local(str(src)) and not (Path(src).expanduser() / "config.json").is_file():
            folder = Path(src).expanduser()
            ggufs = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
            hint = f"; it holds {ggufs[0].name}: pass model.path={ggufs[0]}" if ggufs else ""
            raise ModelLoadError(
                f"model path '{src}' has no config.json; pass a Hugging Face model directory "
                f"(saved with save_pretrained), a .gguf file or a hub id{hint}"
            )
        from transformers import AutoModelForCausalLM

        try:
            tok = load_tokenizer(str(src), trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                str(src), trust_remote_code=trust_remote_code, **dtype_kwarg(dt)
            )
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"cannot load model '{path}': {first}; pass a local model directory or a hub "
                "id this machine can download"
            ) from None
    ensure_pad_token(tok, model.generation_config)
    model.to(dev)
    if gradient_checkpointing:
        enable_checkpointing(model)
    if lora_r > 0:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ModelLoadError(
                "model.lora.r > 0 needs peft: pip install 'aha-rl[lora]'"
            ) from None
        # peft calls transformers' deprecated is_gradient_checkpointing: a warning at every LoRA run
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
            )
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora_r,
                    lora_alpha=lora_alpha,
                    lora_dropout=lora_dropout,
                    target_modules=lora_target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
    if compile_layers:
        compile_decoder_layers(model)
    model.train()
    return model, tok


def load_config(path: str, trust_remote_code: bool = False):
    """The transformers config of model.path (a built-in name, a directory, a hub id or a .gguf file) without
    loading weights: for plans made before the load (the memory plan)."""
    from transformers import AutoConfig

    if is_gguf(path):
        require_gguf()
        p = Path(path).expanduser()
        done = gguf_cache.cached(p) if p.is_file() else None
        if done is not None:
            return AutoConfig.from_pretrained(str(done))
        return AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    problem = model_path_problem(path)
    if problem is not None:
        raise ModelLoadError(problem)
    return AutoConfig.from_pretrained(
        str(BUILTIN.get(path, path)), trust_remote_code=trust_remote_code
    )


def merged_state_dict(model) -> dict:
    """The state dict of a PEFT LoRA model as a plain HF model's: W + delta(W) for adapted layers, computed out
    of place (the live weights are not touched), "base_layer." removed and adapter tensors dropped."""
    base = model.get_base_model()
    modules = dict(base.named_modules())
    out = {}
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            layer = modules[key[: -len(".base_layer.weight")]]
            value = value + sum(layer.get_delta_weight(a) for a in layer.active_adapters).to(
                value.dtype
            )
        out[key.replace(".base_layer.", ".")] = value
    return out


def reference_model(policy):
    """The frozen reference for the KL term, as a context-manager factory `ref()` yielding a model.

    With LoRA the reference is the same network with adapters disabled (no second copy in memory);
    otherwise a frozen copy of the initial policy.
    """
    if hasattr(policy, "disable_adapter"):

        @contextlib.contextmanager
        def lora_off():
            with policy.disable_adapter():
                yield policy

        return lora_off
    ref = copy.deepcopy(policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return lambda: contextlib.nullcontext(ref)


def enable_checkpointing(model) -> None:
    """Activation checkpointing on every decoder layer of a transformers model (each layer's
    `gradient_checkpointing` flag can then be switched alone). Non-reentrant: gradients reach LoRA adapters
    even though the embeddings are frozen."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x names it so
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


# Inductor's min-cut partitioner may recompute element-wise work in the backward instead of saving its output;
# by default it declines where the result is used far from where it is made, ends a long fusible chain or is
# materialized in the backward anyway, which keeps the RMSNorms' normalised outputs and SiLU(gate) * up (a third
# of a 1.5B layer's saved bytes). Off, a compiled layer saves only what a matmul or the attention made, plus
# the norms' inputs and rsqrt: 48 KiB a token and layer at 1.5B instead of 72 (aha.train.memory), for a few
# fused element-wise passes in the backward. Matmuls and the attention are never recomputed (not in the
# partitioner's allowlist). These are process-wide flags of torch._functorch.config, set when layers compile.
RECOMPUTE_ELEMENTWISE = {
    "ban_recompute_used_far_apart": False,
    "ban_recompute_long_fusible_chains": False,
    "ban_recompute_materialized_backward": False,
}


def elementwise_recompute() -> bool:
    """Whether this torch has the flags above (the memory plan counts what compiled layers keep by it)."""
    import torch._functorch.config as functorch_config

    return all(hasattr(functorch_config, name) for name in RECOMPUTE_ELEMENTWISE)


def compile_decoder_layers(model) -> int:
    """torch.compile every decoder layer in place (regional compilation: one graph serves all the layers, so
    compiling takes about a minute whatever the depth), with dynamic shapes (micro-batches change length every
    step) and the element-wise recomputation above. The fast engine reads the weights and never calls these
    modules, so generation is unaffected. -> the number of layers compiled."""
    layers = getattr(unwrap(model).get_decoder(), "layers", None)
    if layers is None:
        raise ModelLoadError(
            f"model.compile=true: {type(unwrap(model)).__name__} has no decoder `layers` list to compile; "
            "leave model.compile=false"
        )
    import torch._functorch.config as functorch_config

    if elementwise_recompute():  # else Inductor's defaults (the plan then counts what they keep)
        for name, value in RECOMPUTE_ELEMENTWISE.items():
            setattr(functorch_config, name, value)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def unwrap(model):
    """The underlying transformers model (of a training wrapper with `.lm`, PEFT-wrapped or not)."""
    model = getattr(model, "lm", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model
