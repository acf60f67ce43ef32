"""Command-line argument helpers shared by every command: `CONFIG key.sub=value ...` and `--flag VALUE`.

They live below the CLI (which only dispatches) so that a command's entry point can parse its own arguments
without importing `aha.cli`. A `UsageError` is a user's mistake: the CLI prints it on one line, exit code 2.
"""

from __future__ import annotations


class UsageError(Exception):
    """A wrong command line; its message is one line naming the fix."""


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """First non key=value argument is the config path; the rest are overrides."""
    path, overrides = None, []
    for a in args:
        if "=" in a and not a.startswith("-"):
            overrides.append(a)
        elif path is None and not a.startswith("-"):
            path = a
        else:
            raise UsageError(
                f"unexpected argument '{a}'; arguments are CONFIG then key.sub=value overrides"
            )
    return path, overrides


def flags_to_overrides(
    args: list[str], flags: dict[str, str], switches: tuple[str, ...] = ()
) -> list[str]:
    """`--model PATH` style flags -> `model.path=PATH` overrides; other arguments pass through. `switches` (flags
    without a value, taken out by the caller) are only named in the error for an unknown option."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=")
        if name in flags:
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{a} needs a value, e.g. {a} VALUE")
                i, val = i + 1, args[i + 1]
            out.append(f"{flags[name]}={val}")
        elif a.startswith("--"):
            raise UsageError(
                f"unknown option '{a}'; options: {', '.join([*switches, *flags])} "
                "(or key.sub=value overrides)"
            )
        else:
            out.append(a)
        i += 1
    return out
