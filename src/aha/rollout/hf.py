"""HFEngine: the reference engine, a thin wrapper over `model.generate` that works for any HF causal LM.

Slow (per-step host overhead) but obviously right; the fast engine is tested against it. Stop strings,
`on_tokens` and aborts run through a StoppingCriteria that pushes each step's new token of every running row to
its Tracker (aha.rollout.stops), so a row ends at the step its stop string completes and `on_tokens` is
called once per step per row (HF generate syncs the host every step anyway). The logprobs of the
sampled tokens are log_softmax(logits / T) of the decode-time logits (`output_logits`) when those fit in
`logits_budget` bytes, else from one teacher-forced forward over the finished sequences (chunked over the
vocabulary): the (B, T, V) logits are 37 GiB at 256 x 256 tokens and V = 152k, 44 MB for the demo's model.
"""

from __future__ import annotations

import torch

from .base import Completion, OnTokens, SamplingParams
from .stops import Tracker, completions


def _watch(trackers: list[Tracker]):
    """A StoppingCriteria that feeds each step's new token of every row to its tracker; done rows stop."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Watch(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            for t, tok in zip(trackers, input_ids[:, -1].tolist()):
                t.push([tok])
            return torch.tensor([t.done for t in trackers], device=input_ids.device)

    return StoppingCriteriaList([Watch()])


class HFEngine:
    def __init__(
        self, model, tokenizer=None, *, max_batch_size: int = 256, logits_budget: int = 1 << 30
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.logits_budget = (
            logits_budget  # bytes of decode-time logits kept; above it, a second forward
        )

    @torch.no_grad()
    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]:
        from transformers import GenerationConfig

        if not prompt_token_ids or any(len(p) == 0 for p in prompt_token_ids):
            raise ValueError("generate() needs a non-empty list of non-empty prompts")
        device = next(self.model.parameters()).device
        stop = list(params.stop_token_ids)
        pad_id = stop[0] if stop else 0
        greedy = params.temperature == 0
        # A fresh GenerationConfig: the checkpoint's own defaults (top_k=50, repetition penalty, ...) must
        # not leak into RL sampling, whose logprobs have to match the training forward.
        gen_cfg = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else params.top_k,
            # no stop ids means none: an empty list, not None, or generate() falls back to the checkpoint's eos
            eos_token_id=stop,
            pad_token_id=pad_id,
            return_dict_in_generate=True,
        )
        # Expand prompts n times, prompt-major, and run in chunks of max_batch_size.
        flat = [(i, p) for i, p in enumerate(prompt_token_ids) for _ in range(params.n)]
        trackers = [Tracker(j, params, self.tokenizer, on_tokens) for j in range(len(flat))]
        out: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices, enabled=params.seed is not None):
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                for start in range(0, len(flat), self.max_batch_size):
                    out.extend(
                        self._generate_chunk(
                            flat[start : start + self.max_batch_size],
                            trackers[start : start + self.max_batch_size],
                            params,
                            gen_cfg,
                            device,
                            pad_id,
                        )
                    )
        finally:
            self.model.train(was_training)
        return out

    def _generate_chunk(self, items, trackers, params, gen_cfg, device, pad_id) -> list[Completion]:
        width = max(len(p) for _, p in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (_, p) in enumerate(items):  # left padding: generation continues on the right
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        vocab = self.model.get_output_embeddings().weight.shape[0]
        keep_logits = len(items) * params.max_tokens * vocab * 4 <= self.logits_budget
        gen_cfg.output_logits = keep_logits
        watch = bool(params.stop) or trackers[0].on_tokens is not None
        res = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=gen_cfg,
            stopping_criteria=_watch(trackers) if watch else None,
        )
        seqs = res.sequences  # (B, width + T_new)
        new = seqs[:, width:].cpu()  # (B, T_new)
        temp = params.logprob_temperature
        if keep_logits:
            logits = torch.stack(res.logits, dim=1).float() / temp  # (B, T_new, V)
            logp = logits.log_softmax(-1).gather(-1, seqs[:, width:, None]).squeeze(-1).cpu()
        else:
            logp = self._logprobs(seqs, mask.to(device), width, temp)  # (B, T_new)
        for row, t in enumerate(trackers):
            if not watch:  # nothing needed the tokens step by step: cut at stop ids / length now
                t.push(new[row].tolist())
            t.logprobs = logp[row, : len(t.ids)].tolist()
        return completions(trackers, [prompt_index for prompt_index, _ in items])

    def _logprobs(
        self,
        seqs: torch.Tensor,
        prompt_mask: torch.Tensor,
        width: int,
        temperature: float,
        rows_per_pass: int = 16,
    ) -> torch.Tensor:
        """log_softmax(logits / T) of each generated token, by a forward over the finished sequences."""
        from ..algos.logprobs import token_logprobs_entropy

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        mask = torch.cat([prompt_mask, torch.ones_like(seqs[:, width:])], dim=1)  # (B, L)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # left padding
        out = []
        for s in range(0, seqs.shape[0], rows_per_pass):
            sl = slice(s, s + rows_per_pass)
            hidden = base.get_decoder()(
                input_ids=seqs[sl],
                attention_mask=mask[sl],
                position_ids=positions[sl],
                use_cache=False,
            ).last_hidden_state
            logp, _ = token_logprobs_entropy(
                hidden[:, width - 1 : -1],
                base.get_output_embeddings().weight,
                seqs[sl, width:],
                temperature=temperature,
                with_entropy=False,
            )
            out.append(logp.float().cpu())
        return torch.cat(out)
