"""Stages and their manifests: what a multi-stage run did, with what, and what came out.

Every stage runs in OUT/<stage>/ and, once it finished, writes OUT/<stage>/manifest.json:

    {"stage", "kind", "status": "complete", "root" (OUT as given), "config" (resolved), "inputs" (models, data
     files + sha256), "outputs" (paths), "figures" (eval and training numbers), "git" {commit, dirty},
     "versions", "started", "finished", "seconds"}

A stage whose manifest says complete and whose outputs all exist is skipped on the next run (its recorded
outputs feed the next stage), so re-running a pipeline command resumes it; a stage that died half-way has no
manifest and is re-entered, and the trainers/sampler inside resume from their own checkpoints. A finished
stage whose recorded config differs from the current one (run-time knobs aside) stops the pipeline with a
ConfigError naming the keys: its outputs were made with other settings, so it is neither silently kept nor
silently redone; delete its directory to redo it. At the end OUT/summary.json (+ summary.png) lists every
stage's figures. A pipeline folder that was copied or moved is read from where it is: the recorded paths under
the recorded root are re-pointed at the new OUT, so its finished stages are skipped there too.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, as_today, config_changes, to_dict

MANIFEST = "manifest.json"
# keys that do not change what a stage makes: a rerun may change them
RUN_TIME = (
    "resume",
    "overwrite",
    "logging.progress",
    "progress",
    "model.threads",
    "reward_workers",
)


class StageInterrupted(RuntimeError):
    """A stage stopped before its end (Ctrl-C / SIGTERM, the non-finite guard, out of GPU memory): no manifest
    is written; rerun to resume it. `code` is the exit code the command ends with (130 Ctrl-C, 143 SIGTERM,
    1 guard, 75 out of memory)."""

    def __init__(self, message: str, code: int = 130):
        super().__init__(message)
        self.code = code


def git_revision() -> dict:
    """{commit, dirty} of the repository aha is imported from (None when it is not a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(here), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
        status = (
            subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            if commit
            else ""
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip()) if commit else None}


def versions() -> dict:
    import torch
    import transformers

    from .. import __version__

    return {
        "aha": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def describe_input(path: str) -> dict:
    """A file: its sha256 and size; a directory (a model): the checkpoint step when it has one."""
    p = Path(path)
    if p.is_file():
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return {"path": str(p), "sha256": h.hexdigest(), "bytes": p.stat().st_size}
    info: dict = {"path": str(path)}
    state = p / "state.json"
    if state.is_file():
        info["step"] = json.loads(state.read_text()).get("step")
    return info


def read_manifest(stage_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(stage_dir) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _paths(outputs: dict) -> list[str]:
    return [v for k, v in outputs.items() if isinstance(v, str) and k != "note"]


def _rebase(value, old: str, new: str):
    """Strings naming `old` or a path under it (the pipeline folder as the run that wrote them gave it) re-pointed
    at `new`, through dicts and lists."""
    if isinstance(value, str):
        if value == old:
            return new
        for sep in {"/", os.sep}:
            if value.startswith(old + sep):
                return new + value[len(old) :]
        return value
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, old, new) for v in value]
    return value


def completed(stage_dir: str | Path) -> dict | None:
    """The manifest of a finished stage whose outputs still exist, else None. Read from a copied or moved
    pipeline folder (the stage's parent), its recorded config, inputs and outputs point into that folder."""
    m = read_manifest(stage_dir)
    root = str(Path(stage_dir).parent)
    if m and m.get("root") not in (None, root):
        old = m["root"]
        m = {**m, "root": root} | {
            k: _rebase(m.get(k), old, root) for k in ("config", "inputs", "outputs")
        }
    if (
        m
        and m.get("status") == "complete"
        and all(Path(p).exists() for p in _paths(m.get("outputs", {})))
    ):
        return m
    return None


@dataclass
class Pipeline:
    """Runs stages in order under `out`, skipping finished ones; `stages` records what each gave."""

    out: Path
    name: str
    log: Callable[[str], None] = print
    stages: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def stage(
        self, name: str, kind: str, config, inputs: dict, run: Callable[[Path], tuple[dict, dict]]
    ) -> dict:
        """Run `run(stage_dir) -> (outputs, figures)` unless the stage is complete; returns its outputs."""
        stage_dir = self.out / name
        done = completed(stage_dir)
        cfg = to_dict(config)
        if done is not None:
            old = as_today(type(config), done.get("config") or {})
            changed = config_changes(old, cfg, ignore=RUN_TIME)
            if changed:
                raise ConfigError(
                    "",
                    f"stage {name} finished with other settings ({changed}); delete {stage_dir} to run "
                    "it again with these, or choose another out=",
                )
            made = ", ".join(f"{k} {v}" for k, v in (done.get("outputs") or {}).items())
            self.log(f"[{self.name}] {name}: complete, skipped ({made})")
            self.stages.append(done)
            return done["outputs"]
        self.log(f"[{self.name}] {name}: running ({kind})")
        stage_dir.mkdir(parents=True, exist_ok=True)
        t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
        outputs, figures = run(stage_dir)
        manifest = {
            "stage": name,
            "kind": kind,
            "status": "complete",
            "pipeline": self.name,
            "root": str(self.out),
            "config": cfg,
            "inputs": {
                k: describe_input(v) if isinstance(v, str) else [describe_input(x) for x in v]
                for k, v in inputs.items()
            },
            "outputs": outputs,
            "figures": figures,
            "git": git_revision(),
            "versions": versions(),
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        tmp = stage_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, default=str))
        tmp.replace(stage_dir / MANIFEST)
        self.stages.append(manifest)
        self.log(f"[{self.name}] {name}: complete in {manifest['seconds']:.1f}s {_short(figures)}")
        return outputs

    def finish(self) -> dict:
        """Write OUT/summary.json (+ summary.png when stages were evaluated); returns the summary."""
        summary = {
            "pipeline": self.name,
            "git": git_revision(),
            "stages": [
                {
                    "stage": s["stage"],
                    "kind": s["kind"],
                    "outputs": s["outputs"],
                    "figures": s["figures"],
                    "seconds": s.get("seconds"),
                }
                for s in self.stages
            ],
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        evals = [
            (s["stage"], s["figures"]["eval"])
            for s in self.stages
            if "eval" in s.get("figures", {})
        ]
        if evals:
            plot_summary(evals, self.out / "summary.png", self.name)
        return summary


def _short(figures: dict) -> str:
    ev = figures.get("eval") or {}
    keys = [k for k in ("pass1", "format", "len_mean") if k in ev]
    return ("| " + " ".join(f"{k} {ev[k]:.3f}" for k in keys)) if keys else ""


def plot_summary(evals: list[tuple[str, dict]], path: Path, title: str) -> None:
    """Bars of held-out pass@1 and format compliance after each evaluated stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, _ in evals]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.2))
    x = range(len(names))
    for off, key, label in (
        (-0.2, "pass1", "held-out pass@1"),
        (0.2, "format", "format compliance"),
    ):
        ax.bar(
            [i + off for i in x],
            [e.get(key, float("nan")) for _, e in evals],
            width=0.4,
            label=label,
        )
    ax.set_xticks(list(x), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
