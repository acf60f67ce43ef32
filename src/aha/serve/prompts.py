"""Prompts -> checked token ids and per-completion token limits, for `aha serve`.

Everything a request could do to the engine is bounded here, before it is queued: token ids must be in the
vocabulary, prompt + max_tokens must fit the model's context (max_tokens defaults to what fits), a request asks
for at most `max_sequences` completions. A text far too long for the context is refused without tokenizing it:
no token covers more text than the longest vocabulary entry (x 4, room for a normalizer that shrinks text), so
a longer text than ctx x that many bytes has more than ctx tokens: a 10 MB prompt costs a length check, not
minutes of tokenization.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from ..rollout.base import SamplingParams
from .protocol import ApiError, GenRequest

RESERVED_TEMPLATE_KWARGS = {"chat_template", "tokenize", "conversation", "messages", "tools"}
RESERVED_TEMPLATE_KWARGS |= {"documents", "add_generation_prompt", "continue_final_message"}


class Prompts:
    def __init__(
        self, tokenizer, model=None, *, max_model_len=0, chat_template=None, max_sequences=256
    ):
        self.tokenizer, self.max_sequences = tokenizer, max_sequences
        self.ctx = max_model_len or context_length(model, tokenizer)
        rows = model.get_input_embeddings().num_embeddings if model is not None else len(tokenizer)
        self.vocab = min(len(tokenizer), rows)
        self.eos = eos_ids(model, tokenizer)
        self.longest = max(len(s.encode()) for s in tokenizer.get_vocab())  # bytes, an upper bound
        if chat_template and Path(chat_template).is_file():
            chat_template = Path(chat_template).read_text()
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)

    def encode(self, req: GenRequest) -> tuple[list[list[int]], list[str]]:
        """The request's prompts as token ids (and texts, for echo); runs in a worker thread."""
        if req.chat:
            text = self.render(req)
            return [self.tokenize(text, req.add_special_tokens)], [text]
        prompts, texts = [], []
        for p in req.prompts:
            if isinstance(p, str):
                prompts.append(self.tokenize(p, req.add_special_tokens))
                texts.append(p)
            else:
                self.check_length(len(p))
                self.check_ids(p, "prompt")
                prompts.append(list(p))
                texts.append(self.tokenizer.decode(p) if req.echo else "")
        return prompts, texts

    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        if (n := len(text.encode())) > self.ctx * self.longest * 4:
            self.check_length(n // (self.longest * 4))
        ids = self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids
        self.check_length(len(ids))
        return ids

    def render(self, req: GenRequest) -> str:
        if not self.chat_template:
            raise ApiError("this model has no chat template; use /v1/completions, or start aha serve with "
                           "--chat-template FILE")  # fmt: skip
        bad = RESERVED_TEMPLATE_KWARGS & set(req.chat_template_kwargs)
        if bad:
            raise ApiError(f"chat_template_kwargs may not set {', '.join(sorted(bad))}",
                           param="chat_template_kwargs")  # fmt: skip
        try:
            return self.tokenizer.apply_chat_template(
                req.messages,
                tokenize=False,
                add_generation_prompt=req.add_generation_prompt,
                continue_final_message=req.continue_final_message,
                chat_template=self.chat_template,
                **req.chat_template_kwargs,
            )
        except Exception as e:  # jinja2.TemplateError, or a ValueError on the flags
            raise ApiError(f"cannot render the chat template: {e}", param="messages") from None

    def check_length(self, n: int) -> None:
        if n >= self.ctx:
            raise ApiError(f"This model's maximum context length is {self.ctx} tokens. However, your "
                           f"request has {n} input tokens.", param="prompt")  # fmt: skip

    def check_ids(self, ids, param: str) -> None:
        bad = next((t for t in ids if not 0 <= t < self.vocab), None)
        if bad is not None:
            raise ApiError(
                f"token id {bad} is out of the vocabulary [0, {self.vocab})", param=param
            )

    def limits(self, req: GenRequest, prompts: list[list[int]]) -> list[int]:
        """New tokens allowed per completion (prompt-major); max_tokens defaults to what fits."""
        if len(prompts) * req.n > self.max_sequences:
            raise ApiError(f"{len(prompts)} prompts x n={req.n} completions is more than this server's "
                           f"limit of {self.max_sequences} per request", param="n")  # fmt: skip
        out = []
        for ids in prompts:
            if not ids:
                raise ApiError("the prompt is empty; give at least one token", param="prompt")
            self.check_length(len(ids))
            limit = self.ctx - len(ids) if req.max_tokens is None else req.max_tokens
            if len(ids) + limit > self.ctx:
                raise ApiError(f"'max_tokens' is too large: {limit}. This model's maximum context length "
                               f"is {self.ctx} tokens and your request has {len(ids)} input tokens "
                               f"({limit} > {self.ctx} - {len(ids)}).", param="max_tokens")  # fmt: skip
            out += [limit] * req.n
        return out

    def params(self, req: GenRequest, limits: list[int]) -> SamplingParams:
        self.check_ids(req.stop_token_ids, "stop_token_ids")
        try:
            return SamplingParams(
                n=req.n,
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=req.top_k,
                max_tokens=max(1, *limits),
                stop_token_ids=tuple(dict.fromkeys((*req.stop_token_ids, *self.eos))),
                seed=req.seed,
                stop=req.stop,
                include_stop_str_in_output=req.include_stop_str_in_output,
            )
        except ValueError as e:
            raise ApiError(str(e)) from None


def context_length(model, tokenizer) -> int:
    """The model's context (prompt + completion tokens) from its config, else the tokenizer's."""
    cfg = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(cfg, attr, None), int):
            return getattr(cfg, attr)
    n = getattr(tokenizer, "model_max_length", None)
    if isinstance(n, int) and n < 10**8:
        return n
    raise ConfigError(
        "max_model_len", "cannot tell the model's context length; pass --max-model-len N"
    )


def eos_ids(model, tokenizer) -> tuple[int, ...]:
    """Ids that end a completion: the tokenizer's eos and the generation config's (instruct models list
    their end-of-turn token there)."""
    from ..models.tokenizer import stop_token_ids

    return stop_token_ids(tokenizer, model)
