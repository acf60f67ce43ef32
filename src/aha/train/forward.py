"""The training forward: per-token logprobs (and entropy) of the targets, without a (B, T, V) log-softmax.

`LogprobModel` wraps a causal LM: the decoder gives hidden states and `aha.algos.logprobs.token_logprobs_entropy`
projects them onto the vocabulary chunk by chunk. Logits are divided by the sampling temperature so that the
trainer's logprobs are those of the distribution the engine sampled from (the engine reports the same
quantity). The wrapper is the module the optimizer, checkpoints and FSDP2 see: its forward is the one entry
point, so FSDP's root hooks gather the embeddings and head for it and reduce their gradients afterwards.

Shared prompts. GRPO repeats every prompt G times and prompts are often longer than completions, so the plain
forward spends most of its time recomputing the same prompt. Given `prompt_lens`, the forward runs the decoder
once on the distinct prompts of the micro-batch (use_cache=True), repeats their KV cache to the rows (an index:
differentiable, so every completion's gradient flows back into its prompt's computation), and runs the decoder
on the completions alone against that cache, at positions prompt_len + j. Attention is causal, so hidden state t
depends only on tokens <= t and the result is the plain forward's up to float rounding: the logprob of
completion token 0 comes from the prompt's last hidden state, token j > 0 from completion hidden j-1. They are
laid out as the plain forward's (B, L-1) (target t+1 -> column t), zeros off the completion tokens.
The shared path needs an explicit (C, P+C) mask per row (no flash attention, K/V repeated to every head), so it
runs only where it saves at least SHARE_MIN_SAVING of the forward's tokens: prompts that are not much shorter
than their completions. With long completions (4k-16k tokens) the plain forward is both cheaper and leaner.

Long sequences. Rows are right-padded, so under a causal mask a real token never sees a padding token: the plain
forward passes no attention mask at all for such batches (and tells transformers its rows are not packed, see
`unpacked_rows`). Hugging Face then runs sdpa with is_causal (flash
attention on GPUs, GQA without repeating K/V) instead of building a (B, 1, L, L) mask, so no (L, L) tensor
exists at 16k tokens; padding positions get finite values that the loss mask drops. With the chunked lm head
below, the training forward's memory is O(L) per row plus one (chunk, V) block.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from ..algos.logprobs import token_logprobs_entropy
from ..models.load import unwrap

SHARE_MIN_SAVING = 0.1  # share prompts only when that removes >= 10% of the forward's tokens


def worth_sharing(saved_tokens: int, total_tokens: int) -> bool:
    """Whether computing each distinct prompt once (saving `saved_tokens` of `total_tokens`) is worth its mask."""
    return saved_tokens >= SHARE_MIN_SAVING * total_tokens


def right_padded(attention_mask: torch.Tensor) -> bool:
    """attention_mask (B, L): every row is ones then zeros (what aha.train.batching builds)."""
    lengths = attention_mask.sum(1, keepdim=True)  # (B, 1)
    ar = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return bool(torch.equal(attention_mask.bool(), ar < lengths))


def prompt_groups(
    input_ids: torch.Tensor, prompt_lens: torch.Tensor
) -> tuple[list[int], list[int]]:
    """input_ids (B, L), prompt_lens (B,) -> (first row of each of the D distinct prompts, their index per row (B,)).
    Prompts are compared by their token ids, so equal prompts from different groups share too."""
    ids, lens = input_ids.cpu(), prompt_lens.cpu().tolist()
    seen: dict[tuple, int] = {}
    first, inv = [], []
    for i, n in enumerate(lens):
        key = tuple(ids[i, :n].tolist())
        if key not in seen:
            seen[key] = len(first)
            first.append(i)
        inv.append(seen[key])
    return first, inv


def can_share(base) -> bool:
    """Whether the cached two-pass forward is exact and possible for this transformers model. Not under gradient
    checkpointing (HF turns the cache off there in training), nor with compiled layers, nor with sliding-window
    layers (the cache would be cropped), nor with flash attention (its padded path assumes left-padded queries;
    the 2-D mask here has holes)."""
    cfg = base.config
    # One pass over the modules: checkpointing, or compiled layers (model.compile: the KV cache object makes
    # dynamo compile once per layer, up to its recompile limit, and the rest run eagerly; the plain forward
    # compiles one graph for all layers).
    checkpointed_or_compiled = any(
        getattr(m, "gradient_checkpointing", False) is True
        or getattr(m, "_compiled_call_impl", None) is not None
        for m in base.modules()
    )
    return (
        not checkpointed_or_compiled
        and getattr(cfg, "_attn_implementation", "sdpa") in ("sdpa", "eager")
        and set(getattr(cfg, "layer_types", None) or ["full_attention"]) == {"full_attention"}
    )


def _not_packed(position_ids):
    return None


@contextlib.contextmanager
def unpacked_rows():
    """Within: transformers takes a forward without an attention mask to hold one sequence a row.

    Given no mask, transformers (4.5x+, masking_utils.find_packed_sequence_indices) checks whether the position
    ids pack several sequences into a row, and reads the answer back from the GPU: a host sync in every
    micro-batch's forward, after which the GPU waits while the CPU queues the layers again (1.5B x 4,096 on
    one-sequence micro-batches, under cProfile: 64 waits, 2.2 s of a 6.1 s update; docs/results/scale_h200/s14).
    The plain forward's rows never pack (position ids 0..L-1, right padding), so the answer is known: None, as
    the check would find. Nothing changes where transformers has no such function."""
    mu = sys.modules.get("transformers.masking_utils")
    found = getattr(mu, "find_packed_sequence_indices", None)
    if found is None:
        yield
        return
    mu.find_packed_sequence_indices = _not_packed
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = found


class LogprobModel(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm  # the HF causal LM (possibly PEFT-wrapped); state-dict prefix "lm."

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        with_entropy: bool = False,
        chunk_size: int | None = None,
        prompt_lens: torch.Tensor | None = None,
        padded_right: bool | None = None,
        ids_checked: bool = False,
    ):
        """input_ids, attention_mask: (B, L) right-padded -> logp (B, L-1) of input_ids[:, 1:], entropy or None.

        prompt_lens (B,): row i is prompt input_ids[i, :prompt_lens[i]] + completion; when given and some prompt
        occurs twice, each distinct prompt is computed once and logp/entropy are 0 off the completion tokens.
        padded_right: whether every row of attention_mask is ones then zeros, when the caller knows it (the
        update reads it off the batch on the CPU); None checks here, a host sync on a GPU. ids_checked: every id
        is in the vocabulary (checked by the caller on the CPU), so the lm head does not check it (another sync).
        """
        base = unwrap(self.lm)
        weight = base.get_output_embeddings().weight  # (V, H)
        kw = dict(
            temperature=temperature,
            chunk_size=chunk_size,
            with_entropy=with_entropy,
            check_targets=not ids_checked,
        )
        # can_share first: under checkpointing or compiled layers the prompt lengths are never read (a sync)
        if prompt_lens is not None and can_share(base) and int(prompt_lens.min()) >= 1:
            first, inv = prompt_groups(input_ids, prompt_lens)
            plens = prompt_lens.tolist()
            saved = sum(plens) - sum(plens[i] for i in first)
            if len(first) < len(inv) and worth_sharing(saved, int(attention_mask.sum())):
                return self.shared_forward(
                    base, weight, input_ids, attention_mask, prompt_lens, first, inv, kw
                )
        if padded_right is None:
            padded_right = right_padded(attention_mask)
        mask = None if padded_right else attention_mask  # causal alone is exact
        with unpacked_rows() if mask is None else contextlib.nullcontext():
            hidden = base.get_decoder()(
                input_ids=input_ids, attention_mask=mask, use_cache=False
            ).last_hidden_state  # (B, L, H)
        return token_logprobs_entropy(hidden[:, :-1], weight, input_ids[:, 1:], **kw)

    def shared_forward(self, base, weight, input_ids, attention_mask, prompt_lens, first, inv, kw):
        B, L = input_ids.shape
        dev, decoder = input_ids.device, base.get_decoder()
        first, inv = torch.tensor(first, device=dev), torch.tensor(inv, device=dev)  # (D,), (B,)
        plen = prompt_lens.to(dev)
        clen = attention_mask.sum(1) - plen  # (B,) completion lengths
        P, C = int(plen.max()), max(int(clen.max()), 1)
        # 1. The D distinct prompts, right-padded to P (columns past a prompt hold its first row's completion,
        # masked out). Right, not left, padding: no query row is fully masked, so no backend can make NaNs there
        # that a masked key would still carry as 0 * NaN.
        pmask = (torch.arange(P, device=dev) < plen[first, None]).long()  # (D, P)
        out = decoder(input_ids=input_ids[first, :P], attention_mask=pmask, use_cache=True)
        name = "cache" if "cache" in out else "past_key_values"  # renamed in transformers 5.2x
        cache = out[name]
        cache.batch_select_indices(inv)  # (D, ..) -> (B, ..); indexing keeps autograd
        last = out.last_hidden_state[inv, plen - 1]  # (B, H) the prompt's last hidden state
        # 2. The completions, right-padded to C, against the cache: mask = prompt part + completion part.
        j = torch.arange(C, device=dev)
        cids = input_ids.gather(1, (plen[:, None] + j).clamp(max=L - 1))  # (B, C)
        cmask = j < clen[:, None]  # (B, C)
        hc = decoder(
            input_ids=cids,
            attention_mask=torch.cat([pmask[inv], cmask.long()], 1),
            position_ids=plen[:, None] + j,
            use_cache=True,
            **{name: cache},
        ).last_hidden_state  # (B, C, H)
        hidden = torch.cat([last[:, None], hc[:, :-1]], 1)  # (B, C, H): column j predicts token j
        logp, ent = token_logprobs_entropy(
            hidden, weight, cids.masked_fill(~cmask, -1), **kw
        )  # (B, C)
        # 3. Back to the plain layout: completion token j of row i is the target of column prompt_len_i - 1 + j.
        rows, cols = cmask.nonzero(as_tuple=True)
        at = (rows, plen[rows] - 1 + cols)
        place = lambda x: None if x is None else x.new_zeros(B, L - 1).index_put(at, x[rows, cols])
        return place(logp), place(ent)


def sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_size: int | None = None,
    prompt_lens: torch.Tensor | None = None,
    padded_right: bool | None = None,
    ids_checked: bool = False,
):
    """The same for a LogprobModel or a bare causal LM."""
    wrapper = model if isinstance(model, LogprobModel) else LogprobModel(model)
    return wrapper(
        input_ids,
        attention_mask,
        temperature=temperature,
        with_entropy=with_entropy,
        chunk_size=chunk_size,
        prompt_lens=prompt_lens,
        padded_right=padded_right,
        ids_checked=ids_checked,
    )
