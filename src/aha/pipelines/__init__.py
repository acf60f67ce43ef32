"""Multi-stage recipes: `aha pipeline r1-zero|r1|distill CONFIG [key.sub=value ...]`.

Each pipeline chains stages (SFT, RL, rejection sampling, evaluation), feeds each stage's output to the next,
skips stages that are already complete, and writes a manifest per stage (see manifest.py)."""

from __future__ import annotations

import importlib

from .manifest import Pipeline, StageInterrupted, completed, read_manifest

# name -> (module, config class, run function)
PIPELINES = {
    "r1-zero": ("r1_zero", "R1ZeroPipelineConfig", "run_r1_zero"),
    "r1": ("r1", "R1PipelineConfig", "run_r1"),
    "distill": ("distill", "DistillPipelineConfig", "run_distill"),
}


def get_pipeline(name: str):
    """-> (config class, run function) of the pipeline `name`."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; valid: {', '.join(PIPELINES)}")
    module, cls, fn = PIPELINES[name]
    mod = importlib.import_module(f"{__name__}.{module}")
    return getattr(mod, cls), getattr(mod, fn)


def cmd_pipeline(args: list[str]) -> int:
    """`aha pipeline NAME CONFIG [key.sub=value ...]`; interrupted: exit 130, rerun the same command to resume."""
    from ..cli_args import UsageError, split_args
    from ..config import load_config

    if not args or args[0] not in PIPELINES:
        raise UsageError(
            f"usage: aha pipeline {'|'.join(PIPELINES)} CONFIG [key.sub=value ...]"
            + (f" (unknown pipeline '{args[0]}')" if args else "")
        )
    cls, run = get_pipeline(args[0])
    path, overrides = split_args(args[1:])
    cfg = load_config(cls, path, overrides)
    try:
        summary = run(cfg)
    except StageInterrupted as e:
        print(f"aha pipeline {args[0]}: {e}")
        return 130
    for s in summary["stages"]:
        ev = s["figures"].get("eval")
        score = f"pass1 {ev['pass1']:.3f} format {ev['format']:.3f}" if ev else ""
        print(f"  {s['stage']:<16} {s['kind']:<7} {score}")
    print(f"done: {cfg.out}/summary.json")
    return 0


__all__ = [
    "PIPELINES",
    "get_pipeline",
    "cmd_pipeline",
    "Pipeline",
    "StageInterrupted",
    "completed",
    "read_manifest",
]
