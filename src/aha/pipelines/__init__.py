"""Multi-stage recipes: `aha pipeline r1-zero|r1|distill CONFIG [key.sub=value ...]` (parsed by aha.cli).

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


__all__ = [
    "PIPELINES",
    "get_pipeline",
    "Pipeline",
    "StageInterrupted",
    "completed",
    "read_manifest",
]
