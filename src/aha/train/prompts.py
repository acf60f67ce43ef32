"""Deterministic prompt order: row i of the stream depends only on (seed, i), so a resumed run sees the
same prompts as an uninterrupted one. Small datasets are walked epoch by epoch in a seeded permutation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERMUTE_MAX = 10_000_000  # larger (lazy, procedural) datasets are sampled with replacement instead


class PromptStream:
    def __init__(self, dataset: Sequence[dict], seed: int, position: int = 0):
        if len(dataset) == 0:
            raise ValueError("the training split has no rows; check task.name / task.options")
        self.dataset, self.seed, self.position = dataset, seed, position
        self._perm: tuple[int, np.ndarray] | None = None

    def index(self, i: int) -> int:
        n = len(self.dataset)
        if n > PERMUTE_MAX:
            return int(np.random.default_rng([self.seed, i]).integers(n))
        epoch = i // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][i % n])

    def take(self, k: int) -> list[dict]:
        rows = [self.dataset[self.index(self.position + j)] for j in range(k)]
        self.position += k
        return rows
