"""File tasks: rows read from JSONL, JSON, CSV or parquet files, a saved `datasets` directory or a hub dataset.

    get_task("gsm8k", path="gsm8k/{split}.jsonl")         # GSM8K format: question, answer ("... #### 42")
    get_task("math", path="math500/test.jsonl")           # MATH format: problem, answer or solution (\\boxed{})
    get_task("jsonl", train="a.jsonl", test="b.jsonl", question="prompt", answer="target")
    get_task("csv", path="x.csv", accuracy_reward="countdown", columns={"numbers": "nums"})
    get_task("file", path="openai/gsm8k", config="main", answer="answer")   # the hub (pip install 'aha-rl[data]')
    get_task("verl", path="gsm8k/{split}.parquet")       # verl's layout: prompt messages, reward_model.ground_truth

Sources (aha.data.read, the one reader RL and SFT share): a `path` containing "{split}" is formatted with the
split; `train=` / `test=` name one source each; a plain `path` serves whichever split is asked for (then train
and test are the same rows: use it for evaluation only). A directory or hub id is read with `datasets`:
`config=` names its config, `train_split=` / `test_split=` the source's split names for aha's train and test
(default: the same names; e.g. test_split=validation).

Column mapping: `question=` and `answer=` name the source columns of those two fields, `columns={field:
column}` any others; a dotted column reads a nested field (verl's `reward_model.ground_truth`); a row keeps its
original columns too. A question column holding a list of chat messages (TRL's conversational `prompt`, verl's
`prompt`) gives the text of its user turn; a system turn there is kept in the row's `system` field but not
rendered (the prompt's system text is task.system, one for all rows), and multi-turn prompts are refused.
The required fields are "question" plus those the accuracy reward requires (math: answer; countdown: numbers,
target; code: tests). In CSV every cell is text, so a cell of a mapped field that holds a JSON list/object is
decoded.

Errors are one line (aha.data.read.DataError): a missing file or column, an empty dataset, a malformed row
(named by file, row number from 1, and column), a row over `max_row_mb`, a hub load that fails.
"""

from __future__ import annotations

import json

from aha.data.read import FORMATS, MAX_ROW_MB, DataError, infer_format, read_rows
from aha.data.tasks import Task, check_split, register_task
from aha.rewards.text import is_messages

__all__ = ["FORMATS", "DataError", "FileTask", "read_rows"]


def _lookup(row: dict, column: str):
    """row[column], or the nested field a dotted column names ("reward_model.ground_truth"); KeyError if absent."""
    if column in row:
        return row[column]
    value = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(column)
        value = value[part]
    return value


def _has(row: dict, column: str) -> bool:
    try:
        _lookup(row, column)
    except KeyError:
        return False
    return True


def _from_messages(messages: list[dict], where: str) -> tuple[str, str | None]:
    """A conversational prompt -> (the user turn's text, the system turn's text or None)."""
    roles = [m.get("role") for m in messages]
    if roles.count("user") != 1 or any(r not in ("system", "user") for r in roles):
        raise DataError(
            f"{where}: the prompt has turns {roles}; a task prompt is one user turn (and an optional "
            "system turn); keep the last user turn in the data, or map question= to a text column"
        )
    text = {m["role"]: m.get("content") for m in messages}
    if isinstance(text["user"], list):  # content given as parts: keep the text parts
        text["user"] = "".join(p.get("text", "") for p in text["user"] if isinstance(p, dict))
    return text["user"], text.get("system")


class FileTask(Task):
    def __init__(
        self,
        path: str | None = None,
        *,
        train: str | None = None,
        test: str | None = None,
        format: str | None = None,
        config: str | None = None,
        train_split: str = "train",
        test_split: str = "test",
        question: str = "question",
        answer: str = "answer",
        columns: dict | None = None,
        accuracy_reward: str = "math",
        limit: int | None = None,
        name: str = "file",
        answer_fallback: str | None = None,
        question_fallback: str | None = None,
        max_row_mb: float = MAX_ROW_MB,
    ):
        if path is None and train is None and test is None:
            raise DataError(
                f"task {name!r} needs a file: pass path= (may contain {{split}}) or train=/test="
            )
        if format is not None and format not in FORMATS:
            raise DataError(f"unknown file format {format!r}; valid: {', '.join(FORMATS)}")
        self.name, self.accuracy_reward, self.format, self.limit = (
            name,
            accuracy_reward,
            format,
            limit,
        )
        self.config, self.max_row_mb = config, max_row_mb
        self.paths = {"train": train or path, "test": test or path}
        self.source_splits = {"train": train_split, "test": test_split}
        self.mapping = {"question": question, "answer": answer, **(columns or {})}
        self.fallbacks = {"answer": answer_fallback, "question": question_fallback}
        self._cache: dict[str, list[dict]] = {}

    def _required(self) -> list[str]:
        from aha.rewards.registry import get_reward, is_batch, row_params

        if is_batch(self.accuracy_reward):
            return ["question"]
        required, _ = row_params(get_reward(self.accuracy_reward))
        return ["question"] + sorted(required - {"question"})

    def source(self, split: str) -> str:
        """Where `split`'s rows come from (a file, a directory or a hub id)."""
        check_split(split)
        path = self.paths[split]
        if path is None:
            raise DataError(
                f"task {self.name!r} has no {split} file; pass {split}=PATH or a path with {{split}}"
            )
        return path.replace("{split}", split)

    def dataset(self, split: str) -> list[dict]:
        if split not in self._cache:
            path = self.source(split)
            raw = read_rows(
                path,
                split=self.source_splits[split],
                format=self.format,
                config=self.config,
                max_row_mb=self.max_row_mb,
            )
            self._cache[split] = self._convert(raw, path)
        return self._cache[split]

    def _convert(self, raw: list[dict], path: str) -> list[dict]:
        if not raw:
            raise DataError(f"{path}: no rows; the {self.name} task needs a non-empty file")
        mapping = dict(self.mapping)
        for field, fallback in self.fallbacks.items():
            # e.g. MATH files with only a worked solution, AMC copies with "question" for "problem"
            if fallback and not _has(raw[0], mapping[field]) and _has(raw[0], fallback):
                mapping[field] = fallback
        needed = self._required()
        mapping.update({field: field for field in needed if field not in mapping})
        for field in needed:
            if not _has(raw[0], mapping[field]):
                raise DataError(
                    f"{path}: no column {mapping[field]!r} for field {field!r} (columns: "
                    f"{', '.join(sorted(map(str, raw[0])))}); map one with {field}=COLUMN or "
                    "columns={...}"
                )
        is_csv = (self.format or infer_format(path)) == "csv"
        rows = []
        for n, src in enumerate(raw[: self.limit] if self.limit else raw, 1):
            row = dict(src)
            for field, column in mapping.items():
                try:
                    value = _lookup(src, column)
                except KeyError:
                    if field in needed:
                        raise DataError(
                            f"{path}: row {n}, column {column!r}: missing; give every row a value there "
                            "(or remove the row)"
                        ) from None
                    continue
                if is_csv and isinstance(value, str) and value[:1] in "[{" and field != "question":
                    try:
                        value = json.loads(value)
                    except json.JSONDecodeError:
                        raise DataError(
                            f"{path}: row {n}, column {column!r}: looks like JSON but does not "
                            "parse; fix the cell"
                        ) from None
                row[field] = value
            q = row.get("question")
            if is_messages(q):
                q, system = _from_messages(q, f"{path}: row {n}, column {mapping['question']!r}")
                row["question"] = q
                if system is not None:
                    row["system"] = system
            if not isinstance(q, str) or not q.strip():
                raise DataError(
                    f"{path}: row {n}, column {mapping['question']!r}: expected non-empty text, got "
                    f"{q!r:.40}; fix or remove the row"
                )
            for field in needed[1:]:
                value = row.get(field)
                if (
                    value is None
                    or (isinstance(value, (str, list, tuple)) and not value)
                    or (isinstance(value, str) and not value.strip())
                ):
                    raise DataError(
                        f"{path}: row {n}, column {mapping[field]!r}: empty value; fix or remove the row"
                    )
            rows.append(row)
        return rows


def check_options(name: str, options: dict) -> None:
    """A DataError naming an option FileTask does not take (a typo in task.options) and the valid ones."""
    import inspect

    valid = [
        p for p in inspect.signature(FileTask.__init__).parameters if p not in ("self", "name")
    ]
    for key in options:
        if key not in valid:
            raise DataError(f"task {name!r}: unknown option {key!r}; options: {', '.join(valid)}")


def _file_task(fmt: str | None, name: str, **preset):
    def make(path: str | None = None, **options) -> FileTask:
        check_options(name, options)
        opts = {**preset, **options}
        if fmt is not None:
            opts.setdefault("format", fmt)
        return FileTask(path, name=name, **opts)

    return make


register_task("file")(_file_task(None, "file"))
for _fmt in FORMATS:
    register_task(_fmt)(_file_task(_fmt, _fmt))
# verl's RL parquet layout: "prompt" = chat messages, "reward_model": {"ground_truth": ...}, "data_source".
# The rows of these data sources are not maths for verl's own default_compute_score (code run against tests, search
# QA by exact match, geometry that needs its images): aha's math verifier cannot score them (preflight says so).
VERL_CODE_SOURCES = ("codecontests", "apps", "codeforces", "taco")


def verl_unverifiable(row: dict) -> str | None:
    """Why the math verifier cannot score this verl row (its data_source or its ground truth), else None."""
    ds, gold = row.get("data_source"), row.get("answer")
    if ds in VERL_CODE_SOURCES:
        return f"data_source {ds!r} is code, which verl scores by running tests"
    if isinstance(ds, str) and ds.startswith("searchR1_"):
        return f"data_source {ds!r} is search QA, which verl scores by exact match"
    if ds == "hiyouga/geometry3k":
        return f"data_source {ds!r} asks about images, which aha does not read"
    if isinstance(gold, dict):
        return f"its ground truth is a dict (keys {', '.join(map(str, gold))}), not an answer"
    if isinstance(gold, (list, tuple)) and not all(
        isinstance(g, (str, int, float)) and not isinstance(g, bool) for g in gold
    ):
        return "its ground truth is a list that holds other things than answers"
    return None


register_task("verl")(
    _file_task(None, "verl", question="prompt", answer="reward_model.ground_truth")
)
# MATH / MATH-500: "problem", "answer" when present, else the "solution" with its \boxed{} answer.
register_task("math")(
    _file_task(
        None,
        "math",
        question="problem",
        answer="answer",
        answer_fallback="solution",
        accuracy_reward="math",
    )
)
