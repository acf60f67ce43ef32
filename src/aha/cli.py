"""`aha <command> [CONFIG] [key.sub=value ...]`: parse -> build -> run -> close. Nothing else lives here.

User mistakes (bad config, missing file, unknown command, a model that cannot be loaded) print one line
and exit with code 2; no traceback.
"""
from __future__ import annotations

import sys

USAGE = """usage: aha <command> [CONFIG] [key.sub=value ...]

commands:
  train CONFIG     GRPO / Dr. GRPO / DAPO training (configs/grpo.yaml, dr_grpo.yaml, dapo.yaml)
  version          print the version

Examples:
  aha train configs/grpo.yaml steps=20 optim.lr=1e-5
  aha train configs/grpo.yaml out=runs/grpo resume=true
"""


class UsageError(Exception):
    pass


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """First non key=value argument is the config path; the rest are overrides."""
    path, overrides = None, []
    for a in args:
        if "=" in a and not a.startswith("-"):
            overrides.append(a)
        elif path is None and not a.startswith("-"):
            path = a
        else:
            raise UsageError(f"unexpected argument '{a}'; arguments are CONFIG then key.sub=value overrides")
    return path, overrides


def cmd_train(args: list[str]) -> int:
    from .config import load_config
    from .train.config import TrainConfig
    from .train.grpo import train

    path, overrides = split_args(args)
    cfg = load_config(TrainConfig, path, overrides)
    summary = train(cfg)
    print(f"done: {summary['steps']} steps in {summary['seconds']:.1f}s; run directory {cfg.out}")
    return 0


COMMANDS = {"train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .models.load import ModelLoadError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in ("version", "--version"):
        from . import __version__
        print(f"aha {__version__}")
        return 0
    if cmd not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(COMMANDS)}"
        print(f"aha: unknown command '{cmd}'; {hint}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[cmd](rest)
    except (ConfigError, UsageError, ModelLoadError, FileNotFoundError) as e:
        print(f"aha {cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
