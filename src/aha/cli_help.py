"""`aha <command> --help [KEY_PREFIX]`: every config key with its type, default and meaning, read from the
config dataclasses themselves, so the help cannot drift from the code.

The meaning of a key is the comment written beside its field in the source (on the field's lines, or the
comment lines right above it), read with `ast` + `tokenize`: the one place a field is documented. Defaults are
the declared ones, before `__post_init__` resolves a null (so `algorithm.clip_low` shows null and its comment
says what null becomes), including a command's own section defaults (aha.config.section). Nothing here imports
torch: the config modules are torch-free, which keeps `aha train --help` well under a second.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import shutil
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .config import _merged


@dataclass
class KeyDoc:
    key: str  # dotted, e.g. "algorithm.clip_high"; list items as "rewards.funcs[].name"
    type: str
    default: Any
    meaning: str
    section: bool = False  # a nested config section (its keys follow)
    group: str = ""  # a comment above a field that has its own: a heading for the ones below
    # where the value shown comes from: "default", a config or recipe's name, or "set" (a key=value)
    source: str = "default"


@cache
def _module_source(filename: str) -> tuple[dict[str, ast.ClassDef], dict[int, str], list[str]]:
    """A module's top-level classes, its comments by line and its lines: parsed once per module."""
    source = Path(filename).read_text()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {
        t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT
    }
    classes = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
    return classes, comments, source.splitlines()


@cache
def _class_comments(cls) -> dict[str, tuple[str, str]]:
    """{field name: (group heading, its comment)} for the fields `cls` itself declares. Comment lines above a
    field are its meaning, unless the field has a comment of its own: then they head a group of fields."""
    try:
        filename = inspect.getsourcefile(cls)
    except TypeError:  # built without source
        return {}
    node = _module_source(filename)[0].get(cls.__name__) if filename else None
    if node is None:
        return {}
    _, comments, lines = _module_source(filename)
    out, prev_end = {}, node.lineno  # line numbers are the module's, 1-based
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            above = []
            i = stmt.lineno - 1  # the line above
            while i > prev_end and lines[i - 1].strip().startswith("#"):
                above.insert(0, comments.get(i, ""))
                i -= 1
            inside = [comments[j] for j in range(stmt.lineno, stmt.end_lineno + 1) if j in comments]
            above_text, inside_text = " ".join(t for t in above if t), " ".join(inside)
            out[stmt.target.id] = (above_text, inside_text) if inside_text else ("", above_text)
        prev_end = getattr(stmt, "end_lineno", prev_end)
    return out


def comments(cls) -> dict[str, tuple[str, str]]:
    """(group heading, comment) of the fields of `cls` and its bases (a subclass's own comment wins)."""
    out: dict[str, tuple[str, str]] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            out.update({k: v for k, v in _class_comments(base).items() if any(v)})
    return out


def type_name(annotation: str) -> str:
    """The annotation as written, Literal[...] shown as its choices: "auto|hf|fast"."""
    text = str(annotation).replace("typing.", "")
    text = re.sub(
        r"Literal\[([^\]]*)\]",
        lambda m: "|".join(s.strip().strip("'\"") for s in m.group(1).split(",")),
        text,
    )
    return text.replace("None", "null")


def _nested(tp) -> type | None:
    """The dataclass a field holds (X or X | None), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0] if typing.get_origin(tp) is not list else None
    return None


def _list_item(tp) -> type | None:
    """The dataclass of a list[X] field's items."""
    if typing.get_origin(tp) is list:
        args = typing.get_args(tp)
        if args and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _plain(v):
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def keys(cls, prefix: str = "", overrides: dict | None = None) -> list[KeyDoc]:
    """Every key of config class `cls` (depth first), with declared defaults; `overrides` are the section
    defaults a parent declared for it (aha.config.section), nested as dicts."""
    overrides = overrides or {}
    hints = typing.get_type_hints(cls)
    notes = comments(cls)
    out: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{prefix}{f.name}"
        tp, (group, meaning) = hints[f.name], notes.get(f.name, ("", ""))
        sub = _nested(tp)
        if sub is not None:
            own = overrides.get(f.name)
            section_defaults = _merged(
                f.metadata.get("defaults") or {}, own if isinstance(own, dict) else {}
            )
            optional = f.default is None
            doc = (sub.__doc__ or "").strip().splitlines()[0] if sub.__doc__ else ""
            if doc.startswith(f"{sub.__name__}("):  # dataclass's generated signature, not a doc
                doc = ""
            out.append(
                KeyDoc(
                    key, type_name(f.type), None if optional else "", meaning or doc, True, group
                )
            )
            out += keys(sub, key + ".", section_defaults)
            continue
        if f.name in overrides:
            default = overrides[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = _plain(f.default_factory())
        else:
            default = dataclasses.MISSING
        out.append(KeyDoc(key, type_name(f.type), default, meaning, group=group))
        item = _list_item(tp)
        if item is not None:
            out += keys(item, key + "[].")
    return out


def _value(v) -> str:
    if v is dataclasses.MISSING:
        return "(required)"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v) if v == "" or v.strip() != v else v
    if isinstance(v, (list, tuple, dict)):
        import yaml

        return yaml.safe_dump(_plain(v), default_flow_style=True, width=10**6).strip()
    return str(v)


def render(docs: list[KeyDoc], prefix: str | None = None, width: int | None = None) -> str:
    """The key table, one key per line (key, type, default) and its meaning wrapped below it; `prefix` keeps
    the keys that start with it (a section name or a partial key)."""
    if prefix:
        docs = [d for d in docs if d.key.startswith(prefix)]
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    kw = min(max((len(d.key) for d in docs), default=10), 36)
    tw = min(max((len(d.type) for d in docs if not d.section), default=4), 24)
    lines = []
    for d in docs:
        if d.group:
            lines += textwrap.wrap(
                f"-- {d.group}", width, initial_indent="  ", subsequent_indent="     "
            )
        if d.section:
            head = f"{d.key}:" + (f"  {d.meaning}" if d.meaning else "")
            head += " (null = none)" if d.default is None and "null = " not in head else ""
            lines += textwrap.wrap(head, width, subsequent_indent="    ")
            continue
        lines.append(f"  {d.key:<{kw}}  {d.type:<{tw}}  {d.source} {_value(d.default)}".rstrip())
        if d.meaning:
            lines += textwrap.wrap(
                d.meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    return "\n".join(lines)


# Per command: usage, what it does, its flags. The keys of config commands follow, generated (keys()).
USAGES = {
    "train": """usage: aha train CONFIG [key.sub=value ...]
RL training: GRPO and its variants (Dr. GRPO, DAPO, GSPO, RLOO, ...), PPO with algorithm.name=ppo.
  CONFIG           a recipe name (grpo, dr_grpo, dapo, ppo; `aha recipes`) or a YAML file
  key.sub=value    override one key, YAML syntax (optim.lr=1e-5, rewards.funcs=[{name: accuracy}])
  --help [PREFIX]  this help; PREFIX keeps the keys that start with it (aha train --help algorithm)
Writes OUT/metrics.jsonl, checkpoints/step-N (Hugging Face format), config.yaml, samples.jsonl;
resume=true continues from the latest checkpoint of OUT.""",
    "eval": """usage: aha eval --model PATH --task NAME [--k 4] [--limit N] [flags below] [key.sub=value ...]
       aha eval CONFIG [key.sub=value ...]
pass@1 over k samples (the R1 paper's T 0.6, top-p 0.95), cons@k, pass@k, format, length, reflection, each
with a bootstrap interval; writes OUT/results.json, samples.jsonl, report/index.html. R1's benchmarks:
--task math500|gsm8k|aime24|amc23; a model behind an OpenAI-compatible server: --endpoint URL --model NAME.
Each flag sets a key:""",
    "sft": """usage: aha sft CONFIG [key.sub=value ...]
Supervised fine-tuning on prompt/completion, question/completion or chat rows (cold start, distillation).
  CONFIG           a recipe name (sft) or a YAML file; data.path=[FILE.jsonl] sets the rows""",
    "sample": """usage: aha sample CONFIG [key.sub=value ...]
Rejection sampling: k samples per prompt, keep verified, readable ones -> OUT/data.jsonl (SFT rows).
  CONFIG           a recipe name (sample) or a YAML file""",
    "pretrain": """usage: aha pretrain CONFIG [key.sub=value ...]
Pretrain a demo base model on the synthetic corpus -> a Hugging Face directory (out_dir).
  CONFIG           a recipe name (pretrain, pretrain_recheck, pretrain_gpu, pretrain_student) or a YAML file""",
    "demo": """usage: aha demo [--quick] [--gpu | --recheck] [--out DIR] [key.sub=value ...]
R1-Zero GRPO on the shipped tiny base model: held-out pass@1 and format before vs after, on the CPU.
  --quick          half the steps and evaluation
  --gpu            the 23M-parameter GPU variant (after `aha pretrain pretrain_gpu`)
  --recheck        tiny-recheck, whose corpus's steps slip unless checked
  --out DIR        the run directory (default runs/demo-TIME)
  key.sub=value    any `aha train` key on top of the demo's recipe (aha train --help lists them)""",
    "report": """usage: aha report RUN_DIR
PNG plots and one self-contained HTML page (RUN_DIR/report/index.html) of a run or an eval directory,
opening with the headline: held-out pass@1 before -> after, with intervals.""",
    "pipeline": """usage: aha pipeline r1-zero|r1|distill [CONFIG] [key.sub=value ...]
Chain the stages (SFT, RL, rejection sampling, evaluation); rerunning the command resumes, skipping finished
stages. CONFIG: a recipe name or a YAML file; without one, the recipe of the pipeline's name (`aha recipes
r1-zero` prints it). Keys and the recipe's values: aha pipeline NAME [CONFIG] --help [PREFIX].""",
    "serve": """{usage}
Our engine behind an OpenAI-compatible HTTP API (the `serve` extra: fastapi, uvicorn).""",
    "recipes": """usage: aha recipes [NAME]
List the recipes shipped with aha (any command's CONFIG may be a recipe name); with NAME, print that recipe's
YAML (`aha recipes grpo > my.yaml`, edit, then `aha train my.yaml`).""",
    "push": """usage: aha push RUN_DIR --repo NAME [--private] [--step N]
Upload a checkpoint of RUN_DIR (the latest unless --step N) to the Hugging Face Hub with a generated model card
(base model, recipe, config, held-out figures, final metrics). Needs `huggingface-cli login` (or HF_TOKEN).
  --repo NAME      the model repository, e.g. you/qwen-r1-zero (created if missing)
  --private        create it private
  --step N         the checkpoint of step N instead of the latest""",
}


def command_help(command: str, args: list[str], entry: dict, resolve, flags=None) -> str:
    """The help of `aha COMMAND`: usage, flags, and for config commands every key (filtered by the argument
    after --help, if any). `entry` and `resolve` are aha.cli's command table and importer; `flags` the
    command's {--flag: key} table, listed under the usage."""
    flag = "--help" if "--help" in args else "-h"
    after = args[args.index(flag) + 1 :]
    text = USAGES.get(command, "")
    cls = config = None
    if command == "serve":
        text = text.format(usage=resolve("aha.serve.cli:USAGE"))
        flags = resolve("aha.serve.cli:FLAGS")
    if flags:
        text += "\n" + "\n".join(f"  {f:<20} {k}" for f, k in flags.items())
    # before --help: CONFIG and key=value overrides of the commands that take them
    before = [a for a in args[: args.index(flag)] if not a.startswith("-")]
    sets = [a for a in before if "=" in a]
    named = [a for a in before if "=" not in a]
    if command == "pipeline":
        from .pipelines import PIPELINES, get_pipeline

        name = next((a for a in args if a in PIPELINES), None)
        if name is None:
            return text
        cls = get_pipeline(name)[0]
        after = [a for a in after if a != name]  # `aha pipeline --help r1`: the name, not a prefix
        config = next((a for a in named if a != name), name)  # no CONFIG: the recipe called NAME
    elif command == "demo":
        return text + "\n\n" + _demo_recipe(resolve)
    elif command in entry:
        cls = resolve(entry[command][0])
        # eval's and serve's positional arguments are flag values or a model, not a config
        if command in CONFIG_FIRST:
            config = named[0] if named else None
        else:
            sets = []
    prefix = after[0] if after and not after[0].startswith("-") else None
    if cls is None:
        return text
    docs = keys(cls)
    if config or sets:  # the values they set, labelled by where each comes from
        docs = _labelled(cls, docs, config, sets, command)
    table = render(docs, prefix)
    if prefix and not table:
        table = _no_match(docs, prefix)
    sources = [
        "default",
        *([config] if config else []),
        *(["set (your key=value)"] if sets else []),
    ]
    which = f"value from {' / '.join(sources)}" if len(sources) > 1 else "default"
    head = f"keys{f' starting with {prefix!r}' if prefix else ''} (type, {which}, meaning):"
    return f"{text}\n\n{head}\n{table}"


CONFIG_FIRST = ("train", "sft", "sample", "pretrain")  # `aha COMMAND CONFIG ...`


def _labelled(cls, docs: list[KeyDoc], config: str | None, sets: list[str], command: str):
    """The key table with the config's values (labelled with its name) and the overrides' (labelled "set")."""
    from .config import apply_override, read_config
    from .recipes import resolve as find

    values = read_config(find(config, command)) if config else {}
    plain = {d.key: d.default for d in docs}
    mid = {d.key: d.default for d in keys(cls, overrides=values)}
    for item in sets:
        apply_override(values, item)
    docs = keys(cls, overrides=values)
    for d in docs:
        if d.section:
            continue
        if d.default != mid.get(d.key, d.default):
            d.source = "set"
        elif d.default != plain.get(d.key, d.default):
            d.source = config
    return docs


def _demo_recipe(resolve) -> str:
    demo = resolve("aha.demo.run:DEMO")
    return "the demo's recipe (aha train keys; override any of them):\n  " + "\n  ".join(demo)


def _no_match(docs: list[KeyDoc], prefix: str) -> str:
    """No key starts with `prefix`: keys containing it, a TRL/verl alias, or the sections."""
    from .config_aliases import lookup

    inside = [d for d in docs if prefix in d.key]
    if inside:
        return render(inside)
    hit = lookup([prefix])
    if hit is not None:
        return f"  {prefix} is a TRL/verl name; aha's is {hit[1]}" + (
            f" ({hit[2]})" if hit[2] else ""
        )
    sections = sorted({d.key.split(".")[0] for d in docs})
    return f"  no key starts with {prefix!r}; sections: {', '.join(sections)}"
