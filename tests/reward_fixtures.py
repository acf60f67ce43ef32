"""User-defined reward functions for the end-to-end tests (batch form: f(completions, **rows) -> list)."""


def count_sevens(completions, **rows):
    """A trivially learnable reward: the fraction of characters that are '7'."""
    return [c.count("7") / max(len(c), 1) for c in completions]


def only_some(completions, question, **rows):
    """Applies to half of the prompts only (None = does not apply)."""
    return [None if q.endswith("1") else float(len(c) > 3) for c, q in zip(completions, question)]


def huge_half(completions, **rows):
    """A finite reward of 1e308 for every other completion: a group's sum overflows float64 (issue 17, item 2)."""
    return [1e308 if i % 2 else 0.0 for i in range(len(completions))]


def length(completions, **rows):
    """Varies between almost any two samples of a random model: a step on it must move the weights."""
    return [len(c) / 32 for c in completions]
