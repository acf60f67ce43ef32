"""Prefill: write prompts (and the tokens of preempted sequences) into the paged KV cache and start their rows.

A new unit (one prompt, k samples) is computed once: its full prompt pages are shared by the k samples, the
partly filled last page is copied to each sample's first private page, and token 0 of each sample is drawn
from the prompt's last logits with the same keyed noise as every later token (sampler.sample_torch). A resumed
sequence (preempted by recompute, scheduler.py) is prefilled with prompt + all its tokens but the last, which
becomes its row's current token; nothing is sampled, so it continues exactly where it stopped. Units are
packed into passes of about `max_tokens` tokens (one varlen forward each).
"""

from __future__ import annotations

import torch

from .batch import to_dev
from .sampler import sample_torch


class Prefill:
    def __init__(self, runner, cache, batch, max_tokens: int):
        self.runner, self.cache, self.batch, self.max_tokens = runner, cache, batch, max_tokens

    def to_dev(self, x, dtype=torch.long):
        return to_dev(x, self.runner.device, dtype)

    def __call__(self, units, prompts, params, trackers) -> int:
        """Prefill `units` in passes of about max_tokens tokens; returns the tokens prefilled."""
        total, chunk, size = 0, [], 0
        for i, u in enumerate(units):
            chunk.append(u)
            size += len(prompts[u.prompt_index]) + (u.seqs[0].gen if u.resume else 0)
            if size >= self.max_tokens or i == len(units) - 1:
                total += self._pass(chunk, prompts, params, trackers)
                chunk, size = [], 0
        return total

    def _pass(self, units, prompts, params, trackers) -> int:
        """Prefill new units (prompt once, sample token 0 of each of its samples) and resumed sequences
        (prompt + all their tokens but the last, which becomes the row's current token)."""
        S = self.cache.page_size
        toks, pos, slots, lens, rep, src, dst = [], [], [], [], [], [], []
        for ui, u in enumerate(units):
            s0 = u.seqs[0]
            p = prompts[u.prompt_index]
            if u.resume:
                p = p + trackers[s0.index].ids[:-1]
            toks += p
            pos += range(len(p))
            slots += [s0.pages[i // S] * S + i % S for i in range(len(p))]
            lens.append(len(p))
            if u.resume:
                continue
            rep += [ui] * len(u.seqs)
            if len(p) % S:  # the partly filled last prompt page is private: copy it
                src += [s0.pages[s0.n_shared]] * (len(u.seqs) - 1)
                dst += [s.pages[s.n_shared] for s in u.seqs[1:]]
        logits = self.runner.prefill(
            self.to_dev(toks), self.to_dev(pos), self.to_dev(slots), lens, self.cache
        )  # (P, V)
        if src:
            self.cache.copy_page(self.to_dev(src), self.to_dev(dst))
        fresh = [s for u in units if not u.resume for s in u.seqs]
        if fresh:
            seq_ids = self.to_dev([s.index for s in fresh])
            # token 0 of each completion, keyed like every other token (the torch sampler: same noise bits)
            tok, lp = sample_torch(
                logits[self.to_dev(rep)],
                params.temperature,
                params.top_p,
                params.top_k,
                keys=(self.batch.seed, seq_ids, torch.zeros_like(seq_ids)),
            )
            lens_of = [s.prompt_len for s in fresh]
            self._admit(fresh, tok, lp, lens_of, seq_ids, True)
        resumed = [u.seqs[0] for u in units if u.resume]
        if resumed:
            last = self.to_dev([trackers[s.index].ids[-1] for s in resumed])
            pos_of = [s.prompt_len + s.gen - 1 for s in resumed]
            self._admit(resumed, last, None, pos_of, self.to_dev([s.index for s in resumed]), False)
        return len(toks)

    def _admit(self, seqs, tok, lp, pos, seq_ids, fresh: bool) -> None:
        width = max(len(s.pages) for s in seqs)
        tables = [s.pages + [0] * (width - len(s.pages)) for s in seqs]
        self.batch.admit(
            self.to_dev([s.row for s in seqs]),
            tok,
            lp,
            self.to_dev(pos),
            self.to_dev([s.gen for s in seqs]),
            seq_ids,
            self.to_dev(tables, torch.int32),
            fresh=fresh,
        )
