"""Typed configs from YAML + `key.sub=value` overrides, validated on load.

`load_config(cls, path, overrides)` builds any (nested) dataclass. Every mistake is a `ConfigError` whose
message is one line naming the key and the fix: an unknown key names the closest valid one, a renamed key
names its new name (a class's RENAMED map), a wrong type names the expected type, and a dataclass's
`__post_init__` checks impossible values. The CLI prints it and exits with code 2 -- before any model is loaded.

A section shared by several commands (aha.schema) is one class; a command whose defaults differ declares the
field with `section(cls, key=default, ...)`: the YAML's keys are applied on top of those defaults, so they hold
whichever other keys a YAML sets (a plain default_factory would be replaced as a whole).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A bad config value. `key` is the dotted path; str(err) is the one-line message for the user."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(
            f"config error at '{key}': {message}" if key else f"config error: {message}"
        )


def check(cond: bool, key: str, message: str) -> None:
    """Validation helper for __post_init__: raise ConfigError(key, message) unless cond."""
    if not cond:
        raise ConfigError(key, message)


def section(cls, **defaults):
    """A dataclass field holding section `cls` with this command's own defaults (nested sections as dicts)."""
    return dataclasses.field(
        default_factory=lambda: build(cls, copy.deepcopy(defaults), ""),
        metadata={"defaults": defaults},
    )


def _merged(defaults: dict, value: dict) -> dict:
    """value on top of defaults, nested mappings merged key by key."""
    out = copy.deepcopy(defaults)
    for k, v in value.items():
        out[k] = _merged(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def load_config(cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """YAML file or shipped recipe name (optional; `grpo`, `configs/grpo.yaml`: as the CLI takes them) +
    `a.b=value` overrides -> validated instance of dataclass `cls`."""
    data: dict = {}
    if path is not None:
        # a recipe name finds the package's copy: a wheel has no configs/ folder
        from .recipes import resolve

        data = read_config(resolve(path))
    for item in overrides:
        apply_override(data, item)
    return build(cls, data, "")


def read_config(p: Path) -> dict:
    """A config file's mapping; bad YAML or a file that is not a mapping is a ConfigError naming it."""
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(
            "", f"cannot parse '{p}'{where}: {getattr(e, 'problem', e)}; fix the YAML syntax"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "", f"'{p}' must hold a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(item, "overrides are written key.sub=value (e.g. optim.lr=1e-5)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(item, "an override needs a key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def to_dict(obj) -> Any:
    """Dataclass -> plain dict (YAML-safe), for writing the resolved config next to a run."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _renamed(cls, data: dict, prefix: str) -> None:
    """A key the class lists in its RENAMED map ({old dotted key: new dotted key}) is an error naming the new key."""
    at = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    for old, new in getattr(cls, "RENAMED", {}).items():
        node = data
        for part in old.split(".")[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and old.split(".")[-1] in node:
            raise ConfigError(at(old), f"this key was renamed; use {at(new)}")


def build(cls, data: Any, prefix: str, ancestors: tuple = ()):
    """`data` (a mapping) -> validated `cls` at dotted `prefix`; `ancestors` are the enclosing (class, prefix)
    pairs, for the TRL/verl alias hints of unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a mapping of keys for this section, got {data!r}")
    _renamed(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields)
    chain = (*ancestors, (cls, prefix))
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        defaults = fields[key].metadata.get("defaults") if key in fields else None
        if defaults is not None and (value is None or isinstance(value, dict)):
            value = _merged(defaults, value or {})
        if key not in names:
            _alias_hint(chain, str(key), value)
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = (
                f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(names)}"
            )
            raise ConfigError(path, f"unknown key; {hint}")
        try:
            kwargs[key] = convert(hints[key], value, path, chain)
        except ConfigError as e:
            if e.key == path and isinstance(
                value, dict
            ):  # verl's nested form: algorithm.kl_ctrl.kl_coef
                _alias_hint(chain, str(key), value)
            raise
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not e.key.startswith(prefix + "."):
            raise ConfigError(f"{prefix}.{e.key}" if e.key else prefix, e.message) from None
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(prefix, str(e)) from None


def _alias_hint(chain: tuple, key: str, value) -> None:
    """A key TRL or verl users write (aha.config_aliases) -> ConfigError naming aha's key; else nothing."""
    from .config_aliases import flatten, key_paths, lookup

    prefix = chain[-1][1]
    leaves = flatten(value, key)
    sft = chain[0][0].__name__ == "SFTConfig"  # aha sft reads some TRL names as its own keys
    for cls, at in reversed(chain):  # the innermost config that holds the aha key
        rel = prefix[len(at) :].lstrip(".") if at else prefix
        hit = lookup([f"{rel}.{leaf}" if rel else leaf for leaf in leaves], sft=sft)
        if hit is None:
            continue
        foreign, target, note = hit
        paths = key_paths(cls)
        where = [target] if target in paths else [p for p in paths if p.endswith("." + target)]
        if where:
            full = f"{at}.{foreign}" if at else foreign
            names = " or ".join(f"{at}.{w}" if at else w for w in where[:3])
            raise ConfigError(
                full,
                f"unknown key (a TRL/verl name); aha's is {names}" + (f" ({note})" if note else ""),
            )
    if isinstance(value, dict):
        return
    for cls, at in reversed(chain):  # an aha key written at the wrong depth: `lr` for optim.lr
        where = [p for p in key_paths(cls) if p.endswith("." + key)]
        if where:
            names = " or ".join(f"{at}.{w}" if at else w for w in where[:3])
            raise ConfigError(
                f"{prefix}.{key}" if prefix else key, f"unknown key here; did you mean {names}?"
            )


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(tp, value: Any, path: str, ancestors: tuple = ()):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, path, ancestors)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(
            path,
            errors[0]
            if len(errors) == 1
            else f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}",
        )
    if origin is Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            # YAML 1.1 reads off/no/false (on/yes/true) as a boolean: give back the word the choices use
            words = ("off", "no", "false") if not value else ("on", "yes", "true")
            value = next((a for a in args if isinstance(a, str) and a.lower() in words), value)
        if value in args:
            return value
        # a boolean left over is a word YAML read as one (on/yes/true or off/no/false): not "got True"
        said = repr(value)
        if isinstance(value, bool):
            said += f" (YAML reads {'on/yes/true' if value else 'off/no/false'} as {str(value).lower()})"
        raise ConfigError(path, f"got {said}; choose one of: {', '.join(map(str, args))}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, path, ancestors)
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and origin is list:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [convert(item_tp, v, f"{path}[{i}]", ancestors) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(path, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(path, f"expected a string, got {value!r}")
    return value


def config_changes(
    old: dict, new: dict, limit: int = 12, ignore: tuple[str, ...] = ("resume",)
) -> str:
    """ "key: old -> new" for each leaf that differs between two config dicts (keys in `ignore`, and keys under
    them, left out); "" when none does."""

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
        return out

    a, b = flat(old), flat(new)
    skip = lambda k: any(k == i or k.startswith(i + ".") for i in ignore)
    keys = [
        k
        for k in sorted(set(a) | set(b))
        if not skip(k) and a.get(k, "(unset)") != b.get(k, "(unset)")
    ]
    parts = [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys[:limit]]
    return "; ".join(parts) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def as_today(cls, recorded: dict) -> dict:
    """An earlier run's recorded config (its config.yaml or manifest) read through today's `cls`: keys added
    since then take their defaults, so an upgrade alone is not a change of settings (config_changes against
    it names only what the user changed); the record as it is when it no longer builds (a key removed)."""
    try:
        return to_dict(build(cls, copy.deepcopy(recorded), ""))
    except Exception:  # noqa: BLE001 - compared as recorded: every difference is then named
        return recorded
