"""Where metrics go: metrics.jsonl (always), a console line, a progress bar, TensorBoard / W&B (optional).

Sinks that are off are null objects, so the training loop never branches on them. Besides the metrics, a sink
takes the sample completions of every logging.samples_every steps (`samples`): a wandb.Table of step, prompt,
completion and reward in W&B, a text table in TensorBoard. The W&B run's id is kept in RUN/wandb_run_id, so
`resume=true` continues the same W&B run (wandb.init(id=..., resume="allow")) instead of opening another.
"""

from __future__ import annotations

import json
import math
import secrets
import sys
from pathlib import Path

from .run_dir import truncate_jsonl


class NullSink:
    def log(self, metrics: dict, step: int) -> None: ...
    def samples(self, step: int, rows: list[dict]) -> None: ...
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

    def samples(self, step, rows):
        cell = lambda t: str(t).replace("|", "\\|").replace("\n", " ")
        table = ["| prompt | completion | reward |", "|---|---|---|"]
        table += [
            f"| {cell(r['question'])} | {cell(r['completion'])} | {r['reward']:.3f} |" for r in rows
        ]
        self.writer.add_text("samples", "\n".join(table), step)

    def close(self):
        self.writer.close()


class WandbSink:
    ID_FILE = "wandb_run_id"

    def __init__(self, run_dir: Path, project: str, config: dict, resume: bool = False):
        try:
            import wandb
        except ImportError:
            raise RuntimeError(
                "logging.wandb=true needs wandb: pip install 'aha-rl[wandb]'"
            ) from None
        self.wandb = wandb
        id_file = run_dir / self.ID_FILE
        # A resumed run continues its W&B run; a fresh run in the same directory starts a new one.
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        self.run = wandb.init(
            project=project,
            dir=str(run_dir),
            config=config,
            name=run_dir.name,
            id=run_id or secrets.token_hex(4),
            resume="allow",
        )
        id_file.write_text(self.run.id)

    def log(self, metrics, step):
        self.run.log(metrics, step=step)

    def samples(self, step, rows):
        data = [[step, r["question"], r["completion"], r["reward"]] for r in rows]
        table = self.wandb.Table(columns=["step", "prompt", "completion", "reward"], data=data)
        self.run.log({"samples": table}, step=step)

    def close(self):
        self.run.finish()


class NullLog:
    """What ranks other than 0 log to."""

    def log(self, metrics: dict, step: int) -> None: ...
    def samples(self, step: int, rows: list[dict]) -> None: ...
    def truncate_after(self, step: int) -> None: ...
    def close(self) -> None: ...


class MetricsLog:
    """Appends one JSON line per step to RUN/metrics.jsonl and fans out to the optional sinks."""

    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard=False,
        wandb=False,
        wandb_project="aha",
        config=None,
        resume=False,
    ):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self.sinks = [
            TensorBoardSink(run_dir) if tensorboard else NullSink(),
            WandbSink(run_dir, wandb_project, config or {}, resume) if wandb else NullSink(),
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

    def samples(self, step: int, rows: list[dict]) -> None:
        """rows: {question, completion, reward} of a few completions of this step."""
        for sink in self.sinks:
            sink.samples(step, rows)

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
    ("eval/pass1", "held-out pass@1", "{:.3f}"),
]


def console_line(step: int, total: int, metrics: dict) -> str:
    parts = [f"step {step}/{total}"]
    for key, name, fmt in CONSOLE_KEYS:
        v = metrics.get(key)
        if v is not None:
            parts.append(f"{name} " + fmt.format(float(v)))
    return " | ".join(parts)


def print_samples(rows: list[dict], file=None, width: int = 160) -> None:
    """A small table of sample completions (prompt tail, completion head, reward), through tqdm so that the
    progress bar stays intact."""
    from tqdm import tqdm

    for r in rows:
        comp = r["completion"].replace("\n", "\\n")
        line = f"  [r={r['reward']:+.2f}] {comp[:width]}{'...' if len(comp) > width else ''}"
        tqdm.write(line, file=file or sys.stdout)
