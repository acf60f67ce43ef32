"""Checks before any model loads: `preflight(command, cfg)` for train, sft, sample, eval and the pipelines.

Loading a model takes seconds to minutes; a typo in a task, reward or template name, a broken data file or an
unwritable output directory found after that is time lost, and was a traceback (issue 17). Everything that
can be known without the model is checked here, first, each failure one line (exit code 2 in the CLI):

    task          the name and options build the task (aha.data.get_task); its template is known; the splits
                  the command reads (train / test) read and convert: malformed lines, missing columns,
                  bytes that are not UTF-8 (file and row named), empty files, rows over task.options.max_row_mb
    rewards       every reward name resolves, `module:function` ones import (RL stages, sample's verifier)
    SFT data      every data.path source reads, and each row is in a format SFT takes
    model paths   a model path meant as a local one (./x, /x, ~/x, a/b/c, x.gguf) exists: a checkpoint path
                  with a typo was a transformers "Repo id must be in the form ..." after torch's import
    out           can be written: it is, or its nearest existing parent is, a directory that takes a new folder
                  (a probe folder is made there and removed at once); for train and sft, a run already
                  there needs resume=true or overwrite=true

What needs the tokenizer (prompt lengths against the model's context) is checked after the load: an
evaluation skips and counts prompts that cannot fit (aha.eval.context). A pipeline's stages take the
pipeline's own task and output directory, so only those, and every stage's rewards and data, are checked.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from .config import ConfigError


def preflight(command: str, cfg) -> None:
    """Raise ConfigError (a name or a path in the config) or aha.data.read.DataError (the data) on the
    first problem found; return None when the command can start."""
    check_model_paths(cfg)
    task = getattr(cfg, "task", None)
    built = check_task(task) if task is not None else None  # names first: cheap, then out=
    sft_data = []
    # does anything score this task with its verifier (the accuracy reward, a held-out evaluation)?
    verifies = command in ("eval", "sample")
    for key, node in _walk(cfg):
        at = (lambda sub, key=key: f"{key}.{sub}") if key else (lambda sub: sub)
        kind = type(node).__name__
        if kind == "RewardsConfig":
            for i, item in enumerate(node.funcs):
                verifies |= item.name == "accuracy"
                check_reward(item.name, built, at(f"funcs[{i}].name"))
                check_reward_kwargs(item.name, item.kwargs, built, at(f"funcs[{i}].kwargs"))
        elif kind == "SampleConfig":
            verifies |= node.verifier == "accuracy"
            if node.verifier != "accuracy":
                check_reward(node.verifier, built, at("verifier"))
        elif isinstance(getattr(node, "limit", None), int) and kind.endswith(
            ("HeldOutConfig", "EvalConfig")
        ):
            verifies |= node.limit != 0
        elif kind == "SFTDataConfig" and node.path:
            sft_data.append((node, at))
    check_out(cfg.out)
    if command in ("train", "sft"):  # a run already there: resume, overwrite or another out=
        from .train.run_dir import check_out_dir

        check_out_dir(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)
    if task is not None:  # then the data, which may take a download
        read = splits(command, cfg)
        read_splits(built, task.name, read)
        if verifies and task.name == "verl" and built.accuracy_reward == "math":
            check_verl_rows(built, read)  # the rows read_splits just loaded (the task caches them)
    for node, at in sft_data:
        check_sft_data(node, at)


def check_model_paths(cfg) -> None:
    """The models a command or pipeline starts from (model / model.path, a distillation's teacher and
    student) exist when they name local paths. A served model (engine=openai) is a name on the server's
    side, so it is not looked for here."""
    from .models.errors import model_path_problem

    served = getattr(cfg, "engine", None) == "openai"
    sample = getattr(cfg, "sample", None)
    for key in ("model", "teacher", "student"):
        value = getattr(cfg, key, None)
        if isinstance(value, str):
            if key == "teacher" and getattr(sample, "engine", None) == "openai":
                continue
            at, path = key, value
        elif hasattr(value, "path") and not served:
            at, path = f"{key}.path", value.path
        else:
            continue
        message = model_path_problem(path) if path else None
        if message is not None:
            raise ConfigError(at, message)


def splits(command: str, cfg) -> list[str]:
    """The splits of cfg.task that `command` reads."""
    ev = getattr(cfg, "eval", None)
    held_out = ["test"] if ev is not None and getattr(ev, "limit", 0) != 0 else []
    if command in ("eval", "sample"):
        return [cfg.task.split or ("test" if command == "eval" else "train")]
    if command == "sft":
        return held_out
    return ["train", *held_out]  # train, pipeline


def check_task(task):
    """Build the task and check its template and verifier names; returns the built aha.data.Task."""
    from .data import TASKS, get_task
    from .data.tasks import _load_builtins
    from .data.templates import TEMPLATES

    _load_builtins()
    if task.name not in TASKS:
        raise ConfigError(
            "task.name", f"unknown task {task.name!r}; valid: {', '.join(sorted(TASKS))}"
        )
    try:
        built = get_task(task.name, **task.options)
    except (ValueError, TypeError) as e:  # an option the task does not take, or a bad value
        raise ConfigError("task.options", str(e)) from None
    if task.template not in TEMPLATES and "{prompt}" not in task.template:
        raise ConfigError(
            "task.template",
            f"unknown template {task.template!r}; valid: {', '.join(TEMPLATES)} or a string "
            "containing '{prompt}'",
        )
    check_reward(built.accuracy_reward, None, "task.options.accuracy_reward")
    return built


def read_splits(built, name: str, read: list[str]) -> None:
    """Read (and so check) the `read` splits of the built task; failures are one-line DataErrors."""
    from .data.read import DataError

    for split in read:
        try:
            rows = built.dataset(split)  # a file task's DataError names the file and row
            if len(rows) == 0:
                raise DataError(f"task {name!r}: the {split} split has no rows")
            rows[0]  # a procedural task draws its first problem
        except DataError:
            raise
        except (ValueError, TypeError, KeyError) as e:  # another task's own complaint
            raise DataError(f"task {name!r}, {split} split: {e}") from None


def check_verl_rows(built, read: list[str]) -> None:
    """A DataError for the first verl row the math verifier cannot score (it would score 0 on every completion)."""
    from .data.files import verl_unverifiable
    from .data.read import DataError

    for split in read:
        for n, row in enumerate(built.dataset(split), 1):
            why = verl_unverifiable(row)
            if why is not None:
                raise DataError(
                    f"task 'verl', {split} split, row {n}: {why}; aha's accuracy reward (the math verifier) "
                    "would score it 0: score such rows with verl's own function, rewards.funcs=[{name: "
                    "'verl.utils.reward_score:default_compute_score'}] in place of accuracy (or a module:function "
                    "of yours: it gets data_source, ground_truth and extra_info), or drop them"
                )


def check_reward(name: str, task, key: str) -> None:
    """The reward `name` resolves (the task's verifier for "accuracy"), importing `module:function`."""
    from .rewards.registry import get_reward

    name = _reward_name(name, task)
    if name is None:
        return
    try:
        get_reward(name)
    except ValueError as e:
        message = str(e)
        if message.startswith("unknown reward"):
            message = message.replace("valid: ", "valid: accuracy (the task's verifier), ", 1)
            if name in PEER_REWARDS:
                message += f"; {PEER_REWARDS[name]}"
        raise ConfigError(key, message) from None


def _reward_name(name: str, task) -> str | None:
    """The reward `name` stands for: the task's verifier for "accuracy" (None when no task is known)."""
    if name != "accuracy":
        return name
    return None if task is None else task.accuracy_reward


def check_reward_kwargs(name: str, kwargs: dict, task, key: str) -> None:
    """A reward's options are among its parameters (a typo would be dropped without a word): a built-in's
    after the completion, a 'module:function' reward's by name unless it takes **kwargs."""
    import inspect

    from .rewards.registry import get_reward, is_batch, row_params
    from .rewards.runner import TRL_ARGS

    name = _reward_name(name, task) if kwargs else None
    if name is None:
        return
    if is_batch(name):
        try:
            params = inspect.signature(get_reward(name)).parameters
        except Exception:  # noqa: BLE001 - check_reward reports a reward that does not import
            return
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        # after the completions (TRL's prompts / completion_ids are the trainer's to pass)
        optional = set(list(params)[1:]) - set(TRL_ARGS)
        required = set()
    else:
        required, optional = row_params(get_reward(name))
    unknown = sorted(set(kwargs) - required - optional)
    if unknown:
        takes = ", ".join(sorted(optional | required)) or "none"
        raise ConfigError(
            key, f"reward {name!r} takes no option {', '.join(unknown)}; its options: {takes}"
        )


# open-r1 / TRL reward names -> what aha calls them (their functions also run as given: 'module:function')
PEER_REWARDS = {
    "accuracy_reward": "aha's is accuracy",
    "format_reward": "aha's is format",
    "tag_count_reward": "aha's is tag",
    "tag_count": "aha's is tag",
    "think_format_reward": "aha's is format",
    "soft_overlong_punishment": "aha has it as a config key: algorithm.overlong_penalty",
    "len_reward": "no built-in; open-r1's function runs as 'module:len_reward' from your copy of it",
    "reasoning_steps_reward": "no built-in; open-r1's function runs as 'module:reasoning_steps_reward'",
    "code_reward": "aha's is code (a sandbox runs the row's tests)",
}


def check_sft_data(data, at) -> None:
    """Every source of an SFT data section reads, and its rows are in a format SFT takes."""
    from .data.sft import RowFormat, check_rows, read_rows
    from .data.templates import TEMPLATES

    if (
        data.template is not None
        and data.template not in TEMPLATES
        and "{prompt}" not in data.template
    ):
        raise ConfigError(
            at("template"),
            f"unknown template {data.template!r}; valid: {', '.join(TEMPLATES)}, a string with "
            "'{prompt}', or null",
        )
    fmt = RowFormat(
        data.prompt_key,
        data.completion_key,
        data.messages_key,
        data.question_key,
        data.template,
        text_key=data.text_key,
    )
    left = data.limit  # data.limit counts rows over all sources, in order
    for source in data.path:
        if left is not None and left <= 0:
            break
        rows = read_rows(source, data.split, data.config)
        check_rows(rows[:left] if left is not None else rows, fmt, source)
        left = None if left is None else left - len(rows)


def check_out(out: str, key: str = "out") -> None:
    """`out` is a writable directory or can be made one: its nearest existing folder takes a new directory (a
    probe made and removed at once; permission bits alone miss read-only mounts, and root passes them)."""
    path = Path(out).expanduser().absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            key, f"cannot create {path}: {probe} is not a directory; choose another out=DIR"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            key, f"cannot write to {probe} (permission denied); choose a writable out=DIR"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".aha-probe-", dir=probe))
    except OSError as e:
        raise ConfigError(
            key,
            f"cannot create {path}: {probe} takes no new folder ({e.strerror}); choose another out=DIR",
        ) from None


def _walk(node, key: str = ""):
    """(dotted key, dataclass) for `node` and every dataclass section under it."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        yield key, node
        for f in dataclasses.fields(node):
            child = getattr(node, f.name)
            yield from _walk(child, f"{key}.{f.name}" if key else f.name)
