"""Tasks: where rows come from and which reward verifies them.

    task = get_task("countdown", seed=0)      # or "arithmetic", "gsm8k", "math", "jsonl", "gym", ...
    rows = task.dataset("train")             # Sequence[dict]; every row has "question" + its reward's fields
    task.accuracy_reward                     # e.g. "countdown" -> aha.rewards.get_reward(...)

Procedural tasks return deterministic lazy sequences (row i is generated from (seed, split, i) on access)
whose train and test splits cannot overlap: a problem's split is a function of the problem itself (a hash of
its canonical form), and each split only keeps problems that hash into it. File tasks return lists.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

SPLITS = ("train", "test")
TASKS: dict[str, Callable[..., Task]] = {}


class Task:
    """A source of rows. Subclasses set `name`, `accuracy_reward` and implement `dataset(split)`."""

    name: str = ""
    accuracy_reward: str = "math"

    def dataset(self, split: str) -> Sequence[dict]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, accuracy_reward={self.accuracy_reward!r})"
        )


def register_task(name: str):
    """Decorator: register a Task subclass or factory `f(**options) -> Task` under `name`."""

    def deco(factory):
        if name in TASKS:
            raise ValueError(f"task {name!r} is already registered; choose another name")
        TASKS[name] = factory
        return factory

    return deco


def get_task(name: str, **options) -> Task:
    """Build the task registered as `name` with its options (e.g. get_task("gsm8k", path="train.jsonl"))."""
    _load_builtins()
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)


def _load_builtins() -> None:
    # Importing registers the built-in tasks (kept out of this module to avoid an import cycle).
    import aha.data.benchmarks  # noqa: F401
    import aha.data.chain  # noqa: F401
    import aha.data.files  # noqa: F401
    import aha.data.gym  # noqa: F401
    import aha.data.procedural  # noqa: F401


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def split_of(key: str, test_percent: int) -> str:
    """The split a problem belongs to, from its canonical key alone: the same problem is always in the same
    split, whatever seed or index produced it."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return "test" if bucket < test_percent else "train"


class ProceduralRows(Sequence):
    """Row i of `split`: the first problem drawn from Random(f"{salt}:{split}:{i}:{attempt}") that falls in
    `split`. `make(rng) -> (key, row)` draws one problem; its split is `split_fn(key)`, by default
    split_of(key, test_percent)."""

    def __init__(
        self,
        make: Callable[[random.Random], tuple[str, dict]],
        split: str,
        size: int,
        salt: str,
        test_percent: int = 10,
        split_fn: Callable[[str], str] | None = None,
    ):
        check_split(split)
        if size < 0:
            raise ValueError(f"dataset size must be >= 0, got {size}")
        if split_fn is None and not 0 < test_percent < 100:
            raise ValueError(f"test_percent must be in (0, 100), got {test_percent}")
        self.make, self.split, self.size, self.salt = make, split, size, salt
        self.split_fn = split_fn or (lambda key: split_of(key, test_percent))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"row {i} out of range for {self.size} rows")
        for attempt in range(10_000):
            key, row = self.make(random.Random(f"{self.salt}:{self.split}:{i}:{attempt}"))
            if self.split_fn(key) == self.split:
                return row
        raise RuntimeError(
            f"could not draw a {self.split} problem in 10,000 attempts; widen the task's ranges"
        )
