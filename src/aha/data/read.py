"""One reader for every row source: RL tasks (aha.data.files) and SFT data (aha.data.sft) both read here.

    read_rows("data/train.jsonl")                               # .jsonl / .json / .csv / .parquet, by extension
    read_rows("runs/sample/data")                               # a datasets.save_to_disk directory
    read_rows("openai/gsm8k", config="main", split="test")      # a Hugging Face hub dataset (or a local clone)

A source is a local file, a local directory (saved with `save_to_disk`, or a folder of data files / a clone of
a hub dataset that `datasets.load_dataset` reads), or a hub id; an optional "hf:" prefix says "hub" outright.
The hub's config name and split are separate arguments (TRL's dataset_config / dataset_train_split), never
part of the name: the old SFT form "hf:NAME:SPLIT" is refused with a line naming the new one. Hub ids and
directories need the `datasets` package (`pip install 'aha-rl[data]'`).

Every failure is a DataError, one line naming the source, the row when there is one (rows count from 1, as
lines of a JSONL file do) and the fix: a malformed line, bytes that are not UTF-8, a row over `max_row_mb`
(a 50 MB row is a broken file, not a prompt: no model's context holds it), a hub id that cannot be loaded
(no network, unknown id, unknown config or split). The CLI prints it and exits with code 2.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")
MAX_ROW_MB = (
    16  # rows larger than this are refused (a row is text for a prompt/completion, not a blob)
)


class DataError(ValueError):
    """Unreadable or malformed data. str(err) is one line naming the source, the row and the fix."""


def infer_format(path: str) -> str:
    """The format of `path` from its extension; "datasets" for directories and hub ids."""
    if os.path.isdir(path):
        return "datasets"
    base = os.path.basename(path)
    ext = base.lower().rsplit(".", 1)[-1] if "." in base else ""
    if ext in ("jsonl", "json", "csv", "parquet"):
        return ext
    if not os.path.exists(path):
        return "datasets"  # a hub id
    raise DataError(
        f"{path}: cannot tell the format from the extension; pass format= one of {', '.join(FORMATS)}"
    )


def read_rows(
    source: str,
    *,
    split: str = "train",
    format: str | None = None,
    config: str | None = None,
    max_row_mb: float = MAX_ROW_MB,
) -> list[dict]:
    """The rows of `source` (module docstring) as dicts. split/config apply to directories and hub ids."""
    source = str(source)
    if source.startswith("hf:"):
        name = source[3:]
        if ":" in name:
            old_split = name.split(":", 1)[1]
            raise DataError(
                f"'{source}': the split no longer goes in the name; give '{name.split(':')[0]}' and "
                f"the split separately (data.split={old_split} for SFT, task.options.train_split / "
                "test_split for tasks)"
            )
        rows = _read_datasets(name, split, config, hub=True)
    else:
        source = os.path.expanduser(source)
        fmt = format or infer_format(source)
        if fmt not in FORMATS:
            raise DataError(f"unknown file format {fmt!r}; valid: {', '.join(FORMATS)}")
        if fmt == "datasets":
            rows = _read_datasets(source, split, config, hub=not os.path.exists(source))
        elif not os.path.isfile(source):
            raise DataError(f"{source}: no such file; check the path (relative to {os.getcwd()})")
        else:
            rows = READERS[fmt](source)
    check_sizes(rows, source, max_row_mb)
    return rows


# ---- files ---------------------------------------------------------------------------------------------
def _text(path: str, unit: str = "line") -> str:
    """The file decoded as UTF-8 (a BOM is dropped); bytes that are not UTF-8 name their line."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}: {unit} {line}: byte 0x{data[e.start]:02x} is not UTF-8; re-encode the file as "
            "UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    for n, line in enumerate(_text(path, "row").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: row {n}: invalid JSON ({e.msg} at column {e.colno}); fix or remove the line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_json(path: str) -> list[dict]:
    text = _text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{") and e.lineno > 1:  # JSON lines in a .json file
            return _read_jsonl(path)
        raise DataError(
            f"{path}: invalid JSON ({e.msg} at line {e.lineno}); expected a list of objects"
        ) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for n, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {n}: expected a JSON object, got {type(row).__name__}")
    return data


def _read_csv(path: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(_text(path), newline=""))
    rows = []
    try:
        for row in reader:
            if None in row:  # more cells than header columns
                raise DataError(
                    f"{path}: row {reader.line_num - 1}: {len(row) - 1 + len(row[None])} cells "
                    f"for {len(reader.fieldnames or [])} columns; quote cells that contain commas"
                )
            rows.append(row)
    except csv.Error as e:
        raise DataError(f"{path}: row {reader.line_num - 1}: {e}; fix the CSV quoting") from None
    return rows


def _read_parquet(path: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001  (pyarrow raises its own types for a corrupt file)
        raise DataError(f"{path}: not a readable parquet file ({_first_line(e)})") from None


READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


# ---- datasets: saved directories, local dataset folders, the hub ---------------------------------------
def _read_datasets(source: str, split: str, config: str | None, hub: bool) -> list[dict]:
    try:
        import datasets
    except ImportError:
        where = "a hub dataset" if hub else "a dataset directory"
        raise DataError(
            f"{source}: not a file; loading {where} needs the datasets package "
            "(pip install 'aha-rl[data]')"
        ) from None
    saved = os.path.isdir(source) and any(
        os.path.isfile(os.path.join(source, f)) for f in ("dataset_dict.json", "state.json")
    )
    if saved:
        data = datasets.load_from_disk(source)
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise DataError(
                    f"{source}: no split {split!r} (splits: {', '.join(data)}); choose one of them"
                )
            data = data[split]
        return data.to_list()
    try:
        with _quiet("huggingface_hub"):  # its retry warnings: the failure is reported once, below
            data = datasets.load_dataset(source, config, split=split)
    except Exception as e:  # noqa: BLE001  (datasets raises many types; each becomes one line)
        raise hub_error(source, config, split, e, hub) from None
    return data.to_list()


@contextlib.contextmanager
def _quiet(name: str):
    """The logger `name` (and its children) at ERROR level for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def hub_error(source: str, config: str | None, split: str, e: Exception, hub: bool) -> DataError:
    """A failed datasets.load_dataset as one line: what went wrong and what to do."""
    msg, kind = _first_line(e), type(e).__name__
    what = f"'{source}'" + (f" (config {config!r}, split {split!r})" if config else "")
    if kind == "DatasetNotFoundError" or "doesn't exist on the Hub" in msg:
        return DataError(
            f"{what}: no local file or directory of that name, and no such dataset on the Hugging Face "
            "hub (private or gated ones need `hf auth login`); check the name"
        )
    if isinstance(e, ConnectionError) or "OfflineModeIsEnabled" in msg or "offline" in msg.lower():
        return DataError(
            f"{what}: not a local path, and the Hugging Face hub cannot be reached (no network, or "
            "HF_HUB_OFFLINE=1, which also skips the retries) with no cached copy; load it once "
            "online or give a local file"
        )
    if "Config name is missing" in msg:
        configs = str(e).split("configs:", 1)[-1].split("\n", 1)[0].strip()
        return DataError(f"{what}: has several configs {configs}; choose one with config=NAME")
    if "BuilderConfig" in msg:
        return DataError(f"{what}: {msg}; choose one of them with config=NAME")
    if "Unknown split" in msg:
        return DataError(f"{what}: {msg} Map aha's split to one with train_split= / test_split=")
    return DataError(f"{what}: datasets could not load it ({kind}: {msg})")


# ---- untrusted sizes -----------------------------------------------------------------------------------
def _chars(value) -> int:
    """Characters of text in a row value (nested lists/dicts of strings counted through)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    return 0


def check_sizes(rows: list[dict], source: str, max_row_mb: float = MAX_ROW_MB) -> None:
    """DataError naming the first row with more than max_row_mb MB of text."""
    limit = max_row_mb * 2**20
    for n, row in enumerate(rows, 1):
        size = _chars(row)
        if size > limit:
            raise DataError(
                f"{source}: row {n} holds {size / 2**20:.1f} MB of text (limit {max_row_mb:g} MB); "
                "remove or shorten it, or raise the limit with max_row_mb="
            )


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
