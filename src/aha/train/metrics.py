"""Where metrics go: metrics.jsonl (always), a console line, a progress bar, TensorBoard / W&B (optional).

Sinks that are off are null objects, so the training loop never branches on them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .run_dir import truncate_jsonl


class NullSink:
    def log(self, metrics: dict, step: int) -> None: ...
    def close(self) -> None: ...


class TensorBoardSink:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError(
                "logging.tensorboard=true needs tensorboard: pip install 'aha-rl[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, metrics, step):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)

    def close(self):
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, project: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise RuntimeError(
                "logging.wandb=true needs wandb: pip install 'aha-rl[wandb]'"
            ) from None
        self.run = wandb.init(project=project, dir=str(run_dir), config=config, name=run_dir.name)

    def log(self, metrics, step):
        self.run.log(metrics, step=step)

    def close(self):
        self.run.finish()


class NullLog:
    """What ranks other than 0 log to."""

    def log(self, metrics: dict, step: int) -> None: ...
    def truncate_after(self, step: int) -> None: ...
    def close(self) -> None: ...


class MetricsLog:
    """Appends one JSON line per step to RUN/metrics.jsonl and fans out to the optional sinks."""

    def __init__(
        self, run_dir: Path, *, tensorboard=False, wandb=False, wandb_project="aha", config=None
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.sinks = [
            TensorBoardSink(run_dir) if tensorboard else NullSink(),
            WandbSink(run_dir, wandb_project, config or {}) if wandb else NullSink(),
        ]

    def truncate_after(self, step: int) -> None:
        """On resume: forget lines of steps after the checkpoint (they will be recomputed). A torn last line
        (a full disk, a kill mid-write) is dropped with one line; other damage is an error (run_dir.py)."""
        truncate_jsonl(self.path, step)

    def log(self, metrics: dict, step: int) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for sink in self.sinks:
            sink.log(row, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


CONSOLE_KEYS = [
    ("loss", "loss", "{:.4f}"),
    ("reward/mean", "reward", "{:.3f}"),
    ("reward/accuracy", "acc", "{:.2f}"),
    ("reward/format", "fmt", "{:.2f}"),
    ("len/mean", "len", "{:.0f}"),
    ("kl", "kl", "{:.4f}"),
    ("grad_norm", "gnorm", "{:.2f}"),
    ("value/loss", "vloss", "{:.4f}"),
    ("value/explained_variance", "ev", "{:.2f}"),
    ("time/step", "s", "{:.1f}"),
]


def console_line(step: int, total: int, metrics: dict) -> str:
    parts = [f"step {step}/{total}"]
    for key, name, fmt in CONSOLE_KEYS:
        v = metrics.get(key)
        if v is not None:
            parts.append(f"{name} " + fmt.format(float(v)))
    return " | ".join(parts)


def print_samples(rows: list[dict], file=sys.stdout, width: int = 160) -> None:
    """A small table of sample completions (prompt tail, completion head, reward)."""
    for r in rows:
        comp = r["completion"].replace("\n", "\\n")
        print(
            f"  [r={r['reward']:+.2f}] {comp[:width]}{'...' if len(comp) > width else ''}",
            file=file,
        )
