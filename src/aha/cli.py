"""`aha <command> [CONFIG] [key.sub=value ...]`: parse -> build -> run -> close. Nothing else lives here.

The CLI sits on top: every command is an entry function in the module that owns it, taking its typed config
(ENTRY below names both), and no module below imports this one. Here only the arguments are turned into that
config (aha.cli_args, aha.config, aha.recipes) and the outcome into printed lines. User mistakes (bad config,
missing file, unknown command, a model that cannot be loaded) print one line and exit with code 2; no
traceback. `aha --help`, `aha <command> --help` and config errors import no torch (aha.cli_help).
"""

from __future__ import annotations

import importlib
import sys

from .cli_args import UsageError, flags_to_overrides, split_args

USAGE = """usage: aha <command> [CONFIG] [key.sub=value ...]      (aha <command> --help [KEY_PREFIX]: its keys)

commands:
  demo [--quick]   R1-Zero on the tiny base model shipped with aha, on the CPU: pass@1 and format before vs after
       [--gpu]     the 23M-parameter GPU variant (after `aha pretrain pretrain_gpu`)
       [--recheck] on tiny-recheck, whose corpus's steps slip unless checked: the model learns to verify
  train CONFIG     RL training: GRPO / Dr. GRPO / DAPO (recipes grpo, dr_grpo, dapo), PPO (ppo)
  eval [CONFIG]    pass@1 over k samples, cons@k, pass@k, format, length, reflection
                   (or: aha eval --model PATH --task NAME [--k 16] [--limit N] [--answer boxed]);
                   R1's benchmarks: --task math500|gsm8k|aime24|amc23; a served model: --endpoint URL
  report RUN_DIR   PNG plots and a self-contained HTML page of a run, headline first
  sft CONFIG       supervised fine-tuning (cold start, distillation) on prompt/completion or chat data
  sample CONFIG    rejection sampling: k samples per prompt, keep verified, readable ones -> SFT data
  serve MODEL      our engine behind an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)
  pipeline NAME CONFIG   chain the stages: r1-zero | r1 | distill (resumable; a manifest per stage)
  pretrain CONFIG  pretrain a demo base model: recipes pretrain (tiny-base), pretrain_recheck, pretrain_gpu
  push RUN_DIR --repo NAME   upload a checkpoint with a generated model card to the Hugging Face Hub
  recipes [NAME]   list the shipped recipes (CONFIG may be a recipe name or a YAML path); NAME: print one
  version          print the version

Examples:
  aha train grpo steps=20 optim.lr=1e-5
  aha train grpo out=runs/grpo resume=true
  aha train --help algorithm
  aha eval --model runs/grpo/checkpoints/step-000060 --task chain --k 8 --limit 200
"""

# command -> (its config dataclass, its entry function run(cfg)), as "module:name", imported when used. The one
# place to look up a command's keys and defaults (`aha demo` takes TrainConfig overrides on top of its recipe;
# the pipelines' configs are in aha.pipelines.PIPELINES).
ENTRY = {
    "train": ("aha.train.config:TrainConfig", "aha.train:train"),
    "eval": ("aha.eval.run:EvalConfig", "aha.eval.run:run_eval"),
    "sft": ("aha.train.sft_config:SFTConfig", "aha.train.sft:sft"),
    "sample": ("aha.sample.config:SampleConfig", "aha.sample.run:sample"),
    "pretrain": ("aha.demo.pretrain_config:PretrainConfig", "aha.demo.pretrain:pretrain"),
    "demo": ("aha.train.config:TrainConfig", "aha.demo.run:run_demo"),
    "serve": ("aha.serve.cli:ServeConfig", "aha.serve.cli:cmd_serve"),
}

EVAL_FLAGS = {
    "--model": "model.path",
    "--task": "task.name",
    "--k": "k",
    "--limit": "limit",
    "--out": "out",
    "--engine": "engine",
    "--answer": "answer",
    "--endpoint": "endpoint",
    "--tokenizer": "tokenizer",
    "--threads": "model.threads",
    "--max-new-tokens": "sampling.max_new_tokens",
}
DEMO_SWITCHES = ("--quick", "--gpu", "--recheck")
INTERRUPTED = {  # what a rerun does after a Ctrl-C outside a training step
    "train": "; rerun with resume=true to continue from the last checkpoint saved (none yet: from step 0)",
    "sft": "; rerun with resume=true to continue from the last checkpoint saved (none yet: from step 0)",
    "pipeline": "; finished stages are kept: rerun the same command to resume",
    "sample": "; rows already written are kept: rerun the same command to continue",
    "eval": "; rerun the same command to evaluate again",
    "demo": "; rerun to start again",
}
START = {"train": "grpo", "pipeline": "r1-zero"}  # the recipe a command without a config points to
# commands whose config aha.preflight checks first
PREFLIGHT = ("train", "eval", "sft", "sample", "pipeline")


def resolve(ref: str):
    """'module:name' -> the object."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def load(command: str, args: list[str], *, cls=None):
    """`CONFIG key.sub=value ...` -> (the command's validated config, its entry function). CONFIG is a YAML
    path or a recipe name; no arguments at all is a UsageError naming a recipe to start from."""
    import yaml

    from . import recipes
    from .config import load_config
    from .preflight import preflight

    cls = cls or resolve(ENTRY[command][0])
    path, overrides = split_args(args)
    if path is None and not overrides:
        first = START.get(command) or (recipes.names_for(command) or ["grpo"])[0]
        raise UsageError(
            f"needs a config; start from a recipe: `aha {command} {first}` "
            f"(`aha recipes` lists them, `aha {command} --help` the keys)"
        )
    if path is None and command != "eval":  # `aha eval --model M --task T` is its usual form
        print(f"aha {command}: no config file: the defaults (aha {command} --help) and your keys")
    file = recipes.resolve(path, command) if path is not None else None
    cfg = load_config(cls, file, overrides)
    if file is not None:
        recipes.check_needs(file, yaml.safe_load(file.read_text()) or {}, cfg)
    if command in PREFLIGHT:
        preflight(command, cfg)  # names, data and out= checked before any model loads
    # the entry's module last: it may import torch (seconds), which a config error need not wait for
    return cfg, resolve(ENTRY[command][1]) if command in ENTRY else None


def _done(summary: dict, what: str = "steps") -> str:
    """`done: 30 steps in 41.2s`, or after a resume `done: step 30 (10 steps in 13.9s after resuming at step 20)`."""
    n, ran = summary["steps"], summary.get("ran", summary["steps"])
    took = f"{ran} {what[:-1] if ran == 1 else what} in {summary['seconds']:.1f}s"
    return (
        f"done: {took}" if ran == n else f"done: step {n} ({took} after resuming at step {n - ran})"
    )


def cmd_train(args: list[str]) -> int:
    cfg, train = load("train", args)
    summary = train(cfg)
    if summary.get("exit_code"):  # stopped early: the run said why and how to resume
        return summary["exit_code"]
    print(_done(summary))
    _print_held_out(cfg.out)
    print(f"run directory: {cfg.out} (metrics.jsonl, checkpoints/); plots: aha report {cfg.out}")
    return 0


def _print_held_out(out: str) -> None:
    """The run's held-out figures (the first and the last evaluation), if it ran any."""
    from .eval.headline import headline_text

    line = headline_text(out)
    if line:
        print(line)


def cmd_eval(args: list[str]) -> int:
    from pathlib import Path

    rest = flags_to_overrides(args, EVAL_FLAGS)
    if not rest:
        raise UsageError(
            "needs a model: aha eval --model PATH --task NAME [--k 4] [--limit N] "
            "(or a config file; `aha eval --help` lists the keys)"
        )
    cfg, run_eval = load("eval", rest)
    run_eval(cfg)  # logs every figure with its interval and the files it wrote
    _print_held_out(cfg.out)
    if cfg.report:
        print(f"report: {Path(cfg.out) / 'report' / 'index.html'}")
    return 0


def cmd_sft(args: list[str]) -> int:
    cfg, sft = load("sft", args)
    summary = sft(cfg)
    if summary.get("exit_code"):  # stopped early: the run said why and how to resume
        return summary["exit_code"]
    print(f"{_done(summary, 'SFT steps')}; model {summary['checkpoint']}")
    _print_held_out(cfg.out)
    return 0


def cmd_sample(args: list[str]) -> int:
    from pathlib import Path

    cfg, sample = load("sample", args)
    stats = sample(cfg)
    print(
        f"kept {stats.get('kept', 0)} of {stats.get('samples', 0)} samples "
        f"({stats.get('prompts_kept', 0)}/{stats.get('prompts', 0)} prompts) -> "
        f"{Path(cfg.out) / 'data.jsonl'}"
    )
    return 0


def cmd_pretrain(args: list[str]) -> int:
    cfg, pretrain = load("pretrain", args)
    print(f"pretrained model written to {pretrain(cfg)}")
    return 0


def cmd_report(args: list[str]) -> int:
    from pathlib import Path

    from .eval.report import make_report

    if len(args) != 1:
        raise UsageError("usage: aha report RUN_DIR")
    if not Path(args[0]).is_dir():
        raise FileNotFoundError(
            f"run directory '{args[0]}' not found; pass the out= directory of a run"
        )
    path = make_report(args[0])
    _print_held_out(args[0])
    print(f"report: {path}")
    return 0


def cmd_demo(args: list[str]) -> int:
    """`aha demo [--quick] [--gpu | --recheck] [--out DIR] [key.sub=value ...]`."""
    quick, gpu, recheck = (
        s in args for s in DEMO_SWITCHES
    )  # both --gpu and --recheck: a ConfigError
    rest = flags_to_overrides(
        [a for a in args if a not in DEMO_SWITCHES], {"--out": "out"}, DEMO_SWITCHES
    )
    out = next((r.split("=", 1)[1] for r in rest if r.startswith("out=")), None)
    overrides = [r for r in rest if not r.startswith("out=")]
    for o in overrides:
        if "=" not in o:
            raise UsageError(
                f"unexpected argument '{o}'; usage: aha demo [--quick] [--gpu | --recheck] "
                "[--out DIR] [key.sub=value ...]"
            )
    run_demo = resolve(ENTRY["demo"][1])
    run_demo(quick=quick, out=out, overrides=tuple(overrides), gpu=gpu, recheck=recheck)
    return 0


def cmd_pipeline(args: list[str]) -> int:
    """`aha pipeline NAME [CONFIG] [key.sub=value ...]` (no CONFIG: the recipe called NAME); interrupted: exit
    130 (Ctrl-C) / 143 (SIGTERM) / 1 (the non-finite guard), rerun the same command to resume."""
    from .pipelines import PIPELINES, StageInterrupted, get_pipeline

    if not args or args[0] not in PIPELINES:
        raise UsageError(
            f"usage: aha pipeline {'|'.join(PIPELINES)} [CONFIG] [key.sub=value ...]"
            + (f" (unknown pipeline '{args[0]}')" if args else "")
        )
    cls, run = get_pipeline(args[0])
    rest = args[1:]
    if split_args(rest)[0] is None:  # no CONFIG: the pipeline's own recipe, with the keys given
        print(f"aha pipeline {args[0]}: the {args[0]} recipe (`aha recipes {args[0]}` prints it)")
        rest = [args[0], *rest]
    cfg, _ = load("pipeline", rest, cls=cls)
    try:
        summary = run(cfg)
    except StageInterrupted as e:
        print(f"aha pipeline {args[0]}: {e}")
        return e.code
    for s in summary["stages"]:
        ev = s["figures"].get("eval")
        score = f"pass1 {ev['pass1']:.3f} format {ev['format']:.3f}" if ev else ""
        print(f"  {s['stage']:<16} {s['kind']:<7} {score}")
    print(f"done: {cfg.out}/summary.json")
    return 0


def cmd_serve(args: list[str]) -> int:
    return resolve(ENTRY["serve"][1])(args)


def cmd_recipes(args: list[str]) -> int:
    from .recipes import cmd_recipes as run

    return run(args)


def cmd_push(args: list[str]) -> int:
    from .push import cmd_push as run

    return run(args)


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "eval": cmd_eval,
    "report": cmd_report,
    "pretrain": cmd_pretrain,
    "sft": cmd_sft,
    "sample": cmd_sample,
    "serve": cmd_serve,
    "pipeline": cmd_pipeline,
    "recipes": cmd_recipes,
    "push": cmd_push,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are a user's mistake: one line, exit 2 (aha.models.errors imports no torch)."""
    from .config import ConfigError
    from .data.read import DataError
    from .models.errors import ModelLoadError
    from .rewards.runner import RewardError

    errors = (ConfigError, DataError, UsageError, ModelLoadError, FileNotFoundError, RewardError)
    # A server's refusal (`aha eval --endpoint`, `engine=openai`) is already one line: URL, status, message.
    # Only when the client was loaded: its package imports the fast engine (torch).
    transport = sys.modules.get("aha.rollout.openai_client.transport")
    return errors + ((transport.OpenAIError,) if transport is not None else ())


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush into a closed pipe stays silent."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a descriptor (a notebook, a test's capture)
        pass


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has left: poll reports an error on its write end. A stdout without a
    descriptor cannot be that pipe; where poll is missing (Windows), a broken pipe is taken to be stdout's."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def _say(text: str) -> None:
    """Print to stdout; a reader that left early (`aha --help | head -3`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _quiet_stdout()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (
        len(argv) > 1 and argv[0] == "help"
    ):  # `aha help train [PREFIX]` is `aha train --help [PREFIX]`
        argv = [argv[1], "--help", *argv[2:]]
    if not argv or argv[0] in ("-h", "--help", "help"):
        _say(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in ("version", "--version"):
        from . import __version__

        _say(f"aha {__version__}")
        return 0
    if cmd not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(COMMANDS)}"
        print(f"aha: unknown command '{cmd}'; {hint}", file=sys.stderr)
        return 2
    try:
        if "--help" in rest or "-h" in rest:
            from .cli_help import command_help

            flags = EVAL_FLAGS if cmd == "eval" else None
            print(command_help(cmd, rest, ENTRY, resolve, flags), flush=True)
            return 0
        return COMMANDS[cmd](rest)
    except KeyboardInterrupt:
        # Ctrl-C outside a training step (loading, an evaluation, sampling): one line, not a traceback;
        # a training step's own Ctrl-C finishes the step and saves (train/loop.py)
        print(f"aha {cmd}: interrupted (Ctrl-C){INTERRUPTED.get(cmd, '')}", file=sys.stderr)
        return 130
    except Exception as e:
        # `aha train --help | head` is not an error; a broken pipe elsewhere (a worker, a socket) is
        if isinstance(e, BrokenPipeError) and _stdout_gone():
            _quiet_stdout()
            return 0
        if "torch" in sys.modules:  # out of GPU memory outside a training step: one line, exit 75
            from .train.oom import OOM_EXIT, is_oom, startup_line

            if is_oom(e):
                print(f"aha {cmd}: {startup_line(cmd, e)}", file=sys.stderr)
                return OOM_EXIT
        if not isinstance(e, _user_errors()):
            raise
        print(f"aha {cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
