"""`aha <command> [CONFIG] [key.sub=value ...]`: parse -> build -> run -> close. Nothing else lives here.

User mistakes (bad config, missing file, unknown command, a model that cannot be loaded) print one line
and exit with code 2; no traceback.
"""

from __future__ import annotations

import sys

from .cli_args import UsageError, flags_to_overrides, split_args

USAGE = """usage: aha <command> [CONFIG] [key.sub=value ...]

commands:
  demo [--quick]   R1-Zero on the tiny base model shipped with aha, on the CPU: pass@1 and format before vs after
       [--gpu]     the 23M-parameter GPU variant (after `aha pretrain configs/pretrain_gpu.yaml`)
       [--recheck] on tiny-recheck, whose corpus's steps slip unless checked: the model learns to verify
  train CONFIG     RL training: GRPO / Dr. GRPO / DAPO (configs/grpo.yaml, dr_grpo.yaml, dapo.yaml),
                   PPO with algorithm.name=ppo
  eval [CONFIG]    pass@1 over k samples, cons@k, pass@k, format, length, reflection
                   (or: aha eval --model PATH --task NAME [--k 16] [--limit N])
  report RUN_DIR   PNG plots and a self-contained HTML page of a run
  sft CONFIG       supervised fine-tuning (cold start, distillation) on prompt/completion or chat data
  sample CONFIG    rejection sampling: k samples per prompt, keep verified, readable ones -> SFT data
  serve MODEL      our engine behind an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)
  pipeline NAME CONFIG   chain the stages: r1-zero | r1 | distill (resumable; a manifest per stage)
  pretrain CONFIG  pretrain a demo base model: configs/pretrain.yaml (tiny-base), pretrain_recheck.yaml
                   (tiny-recheck), pretrain_gpu.yaml (the 23M GPU variant)
  version          print the version

Examples:
  aha train configs/grpo.yaml steps=20 optim.lr=1e-5
  aha train configs/grpo.yaml out=runs/grpo resume=true
  aha eval --model runs/grpo/checkpoints/step-000060 --task chain --k 8 --limit 200
"""


def cmd_train(args: list[str]) -> int:
    from .config import load_config
    from .train.config import TrainConfig
    from .train.grpo import train

    path, overrides = split_args(args)
    cfg = load_config(TrainConfig, path, overrides)
    if cfg.algorithm.name == "ppo":
        from .train.ppo import train
    summary = train(cfg)
    print(f"done: {summary['steps']} steps in {summary['seconds']:.1f}s; run directory {cfg.out}")
    return 0


EVAL_FLAGS = {
    "--model": "model.path",
    "--task": "task.name",
    "--k": "k",
    "--limit": "limit",
    "--out": "out",
    "--engine": "engine",
}


def cmd_eval(args: list[str]) -> int:
    from .config import load_config
    from .eval import EvalConfig, run_eval

    path, overrides = split_args(flags_to_overrides(args, EVAL_FLAGS))
    run_eval(load_config(EvalConfig, path, overrides))
    return 0


def cmd_report(args: list[str]) -> int:
    from pathlib import Path

    from .eval import make_report

    if len(args) != 1:
        raise UsageError("usage: aha report RUN_DIR")
    if not Path(args[0]).is_dir():
        raise FileNotFoundError(
            f"run directory '{args[0]}' not found; pass the out= directory of a run"
        )
    print(f"report: {make_report(args[0])}")
    return 0


def cmd_pretrain(args: list[str]) -> int:
    from .config import load_config
    from .demo.pretrain import PretrainConfig, pretrain

    path, overrides = split_args(args)
    print(f"pretrained model written to {pretrain(load_config(PretrainConfig, path, overrides))}")
    return 0


def cmd_sft(args: list[str]) -> int:
    from .train.sft import cmd_sft as run

    return run(args)


def cmd_sample(args: list[str]) -> int:
    from .sample import cmd_sample as run

    return run(args)


def cmd_serve(args: list[str]) -> int:
    from .serve import cmd_serve as run

    return run(args)


def cmd_demo(args: list[str]) -> int:
    from .pipelines.demo import cmd_demo as run

    return run(args)


def cmd_pipeline(args: list[str]) -> int:
    from .pipelines import cmd_pipeline as run

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
}


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
