"""Reward registry: names -> scoring functions.

Built-in rewards are per-item: `f(completion, **row_fields) -> float`, called with the row fields their
signature names (parameters without a default are required: a row lacking one makes the function "not apply"
to it, NaN in the runner). "module:function" names a user reward in batch style:
`f(completions: list[str], **row_fields_as_lists) -> list[float | None]`, None meaning "does not apply".

Names resolve lazily (to "module:attr" paths) so importing aha.rewards does not import sympy, and worker
processes can import any registered function by its path.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable

REWARDS: dict[str, str] = {
    "format": "aha.rewards.format:format_reward",
    "tag": "aha.rewards.format:tag_reward",
    "math": "aha.rewards.math:math_accuracy",
    "countdown": "aha.rewards.countdown:countdown_reward",
    "exact": "aha.rewards.text:exact_match",
    "language": "aha.rewards.text:language_consistency",
    "code": "aha.rewards.code:code_reward",
    "gym": "aha.data.gym:gym_reward",  # reasoning-gym's own scorers (optional extra)
}
# Bounded pure-Python work (linear scans, capped parsers): run in the caller's process, no IPC.
IN_PROCESS: set[str] = {"format", "tag", "countdown", "exact", "language"}


def register_reward(name: str, *, in_process: bool = False):
    """Decorator: register a per-item reward `f(completion, **fields) -> float | None` under `name`.

    The function must be importable by module and name (defined at module top level) so that worker
    processes can load it. `in_process=True` only for functions whose time is bounded by construction.
    """

    def deco(fn: Callable) -> Callable:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered; choose another name")
        REWARDS[name] = f"{fn.__module__}:{fn.__qualname__}"
        if in_process:
            IN_PROCESS.add(name)
        return fn

    return deco


def _import(path: str) -> Callable:
    module_name, _, attr = path.partition(":")
    _find_in_cwd(module_name)
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"cannot import reward {path!r} ({e}); give 'module:function' with the module "
            "importable from the current sys.path"
        ) from None
    if not callable(obj):
        raise ValueError(f"reward {path!r} is not callable; point 'module:function' at a function")
    return obj


def _find_in_cwd(module_name: str) -> None:
    """A module in the working folder (myrewards.py next to the data) is found as `python script.py` would
    find it: the folder goes at the end of sys.path (installed packages keep precedence), which the reward
    workers inherit. The `aha` command, unlike `python -m`, does not put it there."""
    import os
    import sys

    cwd = os.getcwd()
    top = module_name.split(".")[0]
    if cwd not in sys.path and "" not in sys.path and importlib.util.find_spec(top) is None:
        if os.path.exists(os.path.join(cwd, top + ".py")) or os.path.isdir(os.path.join(cwd, top)):
            sys.path.append(cwd)


def reward_path(name: str) -> str:
    """The importable "module:function" path of a reward name (worker processes import by path, so rewards
    registered in this process at run time work there too)."""
    return REWARDS.get(name, name)


def is_batch(name: str) -> bool:
    """True for user rewards given as 'module:function' (batch style), False for registered names."""
    return name not in REWARDS and ":" in name


def get_reward(name: str) -> Callable:
    """The function registered as `name`, or the user callable `module:function`."""
    if name in REWARDS:
        return _import(REWARDS[name])
    if ":" in name:
        return _import(name)
    raise ValueError(
        f"unknown reward {name!r}; valid: {', '.join(sorted(REWARDS))} or 'module:function'"
    )


def row_params(fn: Callable) -> tuple[set[str], set[str]]:
    """(required, optional) keyword names a per-item reward takes after the completion."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    required = {p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty}
    optional = {
        p.name for p in params if p.kind in kinds and p.default is not inspect.Parameter.empty
    }
    return required, optional
