"""The R1 paper's math benchmarks as tasks: `aha eval --model M --task math500|gsm8k|aime24|amc23`.

    get_task("math500").dataset("test")    # 500 MATH problems, shipped (MIT), offline
    get_task("gsm8k").dataset("test")      # GSM8K test, 1,319 problems, shipped (MIT), offline
    get_task("aime24").dataset("test")     # 30 problems, from the hub (HuggingFaceH4/aime_2024) or path=FILE
    get_task("amc23").dataset("test")      # 40 problems, from the hub (math-ai/amc23) or path=FILE

MATH-500 and GSM8K's test split are MIT-licensed and ship in the package (benchmark_data/, with their licences
and a README of sources). AIME 2024 and AMC 2023 state no licence, so they are not shipped: they are read from
the hub dataset users know (needs `pip install 'aha-rl[data]'` and the network once; `datasets` caches it) or a
local copy (`task.options.path=FILE`, columns problem or question, and answer). When neither works the error
is one line saying where to get them. All four are verified by the math reward.

`gsm8k` with a path (`task.options.path=...`) is the GSM8K-format file task it always was; without one its
test split is the shipped file and its train split the hub's openai/gsm8k (config main). `math500` is an
evaluation set: it has no train split.

K holds each benchmark's default number of samples per problem for `aha eval` (pass@1 is their mean, cons@k
their majority vote). The R1 paper samples "between 4 and 64" per problem by test-set size and reports cons@64
on AIME; these defaults are lighter, so that a laptop run finishes: the small contests get 16, the large sets 4
(`--k 64` reproduces R1's AIME protocol). ANSWER holds the lenient reading `aha eval` reports beside the strict
one by default (an instruct model boxes MATH-style answers and ends GSM8K solutions with the number).
"""

from __future__ import annotations

from pathlib import Path

from aha.data.files import FileTask, check_options
from aha.data.read import DataError
from aha.data.tasks import register_task

DATA = Path(__file__).resolve().parent / "benchmark_data"
K = {"math500": 4, "gsm8k": 4, "aime24": 16, "amc23": 16}
# the lenient answer reading reported beside the strict one (eval.answer=auto): how an instruct model answers each
ANSWER = {"math500": "boxed", "gsm8k": "last-number", "aime24": "boxed", "amc23": "boxed"}
# name -> (hub id, the hub split holding the problems, what it is)
HUB = {
    "aime24": ("HuggingFaceH4/aime_2024", "train", "AIME 2024"),
    "amc23": ("math-ai/amc23", "test", "AMC 2023"),
}


def shipped(name: str) -> str:
    """The path of a shipped benchmark's test file."""
    path = DATA / name / "test.jsonl"
    if not path.is_file():
        raise DataError(f"benchmark file {path} is missing from this install; reinstall aha-rl")
    return str(path)


@register_task("math500")
def math500(path: str | None = None, **options) -> FileTask:
    """MATH-500 (problem, answer; the worked solution's \\boxed{} when a copy has no answer column)."""
    check_options("math500", options)
    named = _named(options)
    options.setdefault("question", "problem")
    return FileTask(
        test=path or options.pop("test", None) or shipped("math500"),
        name="math500",
        answer_fallback=None if "answer" in named else "solution",
        **options,
    )


def _named(options: dict) -> set[str]:
    """The fields whose column the user named (question=, answer=, columns={...}): a benchmark's fallback
    column never replaces one of those (a typo stays an error naming it)."""
    return set(options) | set(options.get("columns") or {})


@register_task("gsm8k")
def gsm8k(path: str | None = None, **options) -> FileTask:
    """GSM8K: "answer" is the worked solution ending in "#### <number>" (the math reward reads past ####)."""
    check_options("gsm8k", options)
    if path is not None:
        return FileTask(path, name="gsm8k", **options)
    # a local train file (task.options.train=gsm8k/train.jsonl) keeps the shipped test split, and the reverse
    options = {"train": "openai/gsm8k", "config": "main", **options}
    options.setdefault("test", shipped("gsm8k"))
    return FileTask(name="gsm8k", **options)


class HubBenchmark(FileTask):
    """A benchmark read from the hub or a local copy; a failed hub load says where to get it."""

    local = False  # True when task.options.path names a copy

    def dataset(self, split: str) -> list[dict]:
        try:
            return super().dataset(split)
        except DataError as e:
            if self.local or split != "test":
                raise
            hub, hub_split, title = HUB[self.name]
            raise DataError(
                f"task {self.name!r}: {title} states no licence, so aha does not ship it; it is read "
                f"from the hub ({hub}, split {hub_split}: pip install 'aha-rl[data]' and the network "
                f"once) or from a copy you have, task.options.path=FILE (columns problem, answer). "
                f"Reading the hub failed: {e}"
            ) from None


def _hub_benchmark(name: str):
    def make(path: str | None = None, **options) -> HubBenchmark:
        check_options(name, options)
        hub, hub_split, _ = HUB[name]
        if path is None:
            options.setdefault("test_split", hub_split)
        named = _named(options)
        options.setdefault("question", "problem")
        task = HubBenchmark(
            test=path or hub,
            name=name,
            # math-ai/amc23 calls it "question"
            question_fallback=None if "question" in named else "question",
            **options,
        )
        task.local = path is not None
        return task

    return make


for _name in HUB:
    register_task(_name)(_hub_benchmark(_name))
