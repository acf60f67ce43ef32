"""File tasks: rows read from JSONL, JSON, CSV or parquet files, a saved `datasets` directory or a hub name.

    get_task("gsm8k", path="gsm8k/{split}.jsonl")         # GSM8K format: question, answer ("... #### 42")
    get_task("math", path="math500/test.jsonl")           # MATH format: problem, answer or solution (\\boxed{})
    get_task("jsonl", train="a.jsonl", test="b.jsonl", question="prompt", answer="target")
    get_task("csv", path="x.csv", accuracy_reward="countdown", columns={"numbers": "nums"})

Split files: a `path` containing "{split}" is formatted with the split; `train=` / `test=` name one file each;
a plain `path` serves whichever split is asked for (then train and test are the same rows: use it for
evaluation only). Column mapping: `question=` and `answer=` name the source columns of those two fields,
`columns={field: column}` any others; a row keeps its original columns too. The required fields are
"question" plus those the accuracy reward requires (math: answer; countdown: numbers, target; code: tests).
In CSV every cell is text, so a cell of a mapped field that holds a JSON list/object is decoded.

Errors are one line: a missing file or column, an empty dataset, and a malformed row (named by file, row
number from 1, and column).
"""

from __future__ import annotations

import csv
import json
import os

from aha.data.tasks import Task, check_split, register_task

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")


def _infer_format(path: str) -> str:
    if os.path.isdir(path):
        return "datasets"
    ext = path.lower().rsplit(".", 1)[-1] if "." in os.path.basename(path) else ""
    if ext in ("jsonl", "json", "csv", "parquet"):
        return ext
    if not os.path.exists(path):
        return "datasets"  # maybe a hub name
    raise ValueError(
        f"{path}: cannot tell the format from the extension; pass format= one of {', '.join(FORMATS)}"
    )


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}: row {n}: invalid JSON ({e.msg} at column {e.colno}); fix or remove "
                    "the line"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}: row {n}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
    return rows


def _read_json(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: invalid JSON ({e.msg} at line {e.lineno}); expected a list of objects"
            ) from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for n, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {n}: expected a JSON object, got {type(row).__name__}")
    return data


def _read_csv(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise ValueError(
                    f"{path}: row {reader.line_num - 1}: {len(row) - 1 + len(row[None])} cells "
                    f"for {len(reader.fieldnames or [])} columns; quote cells that contain commas"
                )
            rows.append(row)
    return rows


def _read_parquet(path: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise ValueError(
                f"{path}: reading parquet needs pyarrow (pip install pyarrow) or pandas"
            ) from None
        return pd.read_parquet(path).to_dict("records")
    return pq.read_table(path).to_pylist()


def _read_datasets(path: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"{path}: not a file; loading a `datasets` directory or hub name needs the datasets "
            "package (pip install datasets)"
        ) from None
    if os.path.isdir(path):
        data = datasets.load_from_disk(path)
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"{path}: no split {split!r} (splits: {', '.join(data)})")
            data = data[split]
    else:
        data = datasets.load_dataset(path, split=split)
    return [dict(r) for r in data]


def read_rows(path: str, fmt: str | None = None, split: str = "train") -> list[dict]:
    """The raw rows of a file (or datasets directory / hub name) as dicts."""
    fmt = fmt or _infer_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown file format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt != "datasets" and not os.path.isfile(path):
        raise ValueError(f"{path}: no such file; check the task's path/train/test option")
    if fmt == "datasets":
        return _read_datasets(path, split)
    return {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}[
        fmt
    ](path)


class FileTask(Task):
    def __init__(
        self,
        path: str | None = None,
        *,
        train: str | None = None,
        test: str | None = None,
        format: str | None = None,
        question: str = "question",
        answer: str = "answer",
        columns: dict | None = None,
        accuracy_reward: str = "math",
        limit: int | None = None,
        name: str = "file",
        answer_fallback: str | None = None,
    ):
        if path is None and train is None and test is None:
            raise ValueError(
                f"task {name!r} needs a file: pass path= (may contain {{split}}) or train=/test="
            )
        self.name, self.accuracy_reward, self.format, self.limit = (
            name,
            accuracy_reward,
            format,
            limit,
        )
        self.paths = {"train": train or path, "test": test or path}
        self.mapping = {"question": question, "answer": answer, **(columns or {})}
        self.answer_fallback = answer_fallback
        self._cache: dict[str, list[dict]] = {}

    def _required(self) -> list[str]:
        from aha.rewards.registry import get_reward, is_batch, row_params

        if is_batch(self.accuracy_reward):
            return ["question"]
        required, _ = row_params(get_reward(self.accuracy_reward))
        return ["question"] + sorted(required - {"question"})

    def dataset(self, split: str) -> list[dict]:
        check_split(split)
        if split not in self._cache:
            path = self.paths[split]
            if path is None:
                raise ValueError(
                    f"task {self.name!r} has no {split} file; pass {split}=PATH or a path with {{split}}"
                )
            path = path.replace("{split}", split)
            self._cache[split] = self._convert(read_rows(path, self.format, split), path)
        return self._cache[split]

    def _convert(self, raw: list[dict], path: str) -> list[dict]:
        if not raw:
            raise ValueError(f"{path}: no rows; the {self.name} task needs a non-empty file")
        mapping = dict(self.mapping)
        if (
            self.answer_fallback
            and mapping["answer"] not in raw[0]
            and self.answer_fallback in raw[0]
        ):
            mapping["answer"] = self.answer_fallback  # e.g. MATH files with only a worked solution
        needed = self._required()
        mapping.update({field: field for field in needed if field not in mapping})
        present = set(raw[0])
        for field in needed:
            if mapping[field] not in present:
                raise ValueError(
                    f"{path}: no column {mapping[field]!r} for field {field!r} (columns: "
                    f"{', '.join(sorted(present))}); map one with {field}=COLUMN or columns={{...}}"
                )
        is_csv = (self.format or _infer_format(path)) == "csv"
        rows = []
        for n, src in enumerate(raw[: self.limit] if self.limit else raw, 1):
            row = dict(src)
            for field, column in mapping.items():
                if column not in src:
                    if field in needed:
                        raise ValueError(f"{path}: row {n}, column {column!r}: missing")
                    continue
                value = src[column]
                if is_csv and isinstance(value, str) and value[:1] in "[{" and field != "question":
                    try:
                        value = json.loads(value)
                    except json.JSONDecodeError:
                        raise ValueError(
                            f"{path}: row {n}, column {column!r}: looks like JSON but does not "
                            "parse; fix the cell"
                        ) from None
                row[field] = value
            q = row.get("question")
            if not isinstance(q, str) or not q.strip():
                raise ValueError(
                    f"{path}: row {n}, column {mapping['question']!r}: expected non-empty text, got "
                    f"{q!r:.40}"
                )
            for field in needed[1:]:
                if row.get(field) is None:
                    raise ValueError(f"{path}: row {n}, column {mapping[field]!r}: empty value")
            rows.append(row)
        return rows


def _file_task(fmt: str | None, name: str, **preset):
    def make(path: str | None = None, **options) -> FileTask:
        opts = {**preset, **options}
        if fmt is not None:
            opts.setdefault("format", fmt)
        return FileTask(path, name=name, **opts)

    return make


register_task("file")(_file_task(None, "file"))
for _fmt in ("jsonl", "json", "csv", "parquet", "datasets"):
    register_task(_fmt)(_file_task(_fmt, _fmt))
# GSM8K: "question", "answer" = worked solution ending in "#### <number>" (the math reward reads past ####).
register_task("gsm8k")(
    _file_task(None, "gsm8k", question="question", answer="answer", accuracy_reward="math")
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
