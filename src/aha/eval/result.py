"""The result of one evaluation: metrics with bootstrap intervals, the per-sample records, and their files
(results.json, samples.jsonl: strict JSON, NaN written as null, so pandas, datasets and browsers read them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvalResult:
    metrics: dict[str, float]  # name -> value (names in the module docstring)
    ci: dict[str, tuple[float, float]]  # name -> (lo, hi), NaN when not bootstrapped
    samples: list[dict]  # one record per sample, as written to samples.jsonl
    n_problems: int
    k: int
    settings: dict = field(default_factory=dict)  # sampling, template, accuracy reward, seed
    seconds: float = 0.0

    def flat(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat {prefix + name: value} for metrics.jsonl, e.g. "eval/pass1", "eval/len_mean"."""
        return {prefix + name: float(v) for name, v in self.metrics.items()}

    def summary(self) -> str:
        """Readable lines: each metric with its interval."""
        lines = [f"{self.n_problems} problems x k={self.k} samples in {self.seconds:.1f}s"]
        if self.settings.get("skipped_prompts"):
            lines[0] += f" ({self.settings['skipped_prompts']} skipped: prompt too long)"
        if "pass1_lenient" in self.metrics:  # the headline: strict and lenient side by side
            m, cons = self.metrics, f"cons@{self.k}"
            lines.append(
                f"  pass1 {m['pass1']:.4g} strict (<answer> tags), {m['pass1_lenient']:.4g} lenient "
                f"({self.settings.get('answer')}); {cons} {m[cons]:.4g} / {m[cons + '_lenient']:.4g}"
            )
        for name, v in self.metrics.items():
            lo, hi = self.ci.get(name, (float("nan"), float("nan")))
            interval = f"  [{lo:.4g}, {hi:.4g}]" if math.isfinite(lo) and math.isfinite(hi) else ""
            lines.append(f"  {name:<16} {v:.4g}{interval}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return _finite(
            {
                "n_problems": self.n_problems,
                "k": self.k,
                "metrics": self.metrics,
                "ci": {name: list(v) for name, v in self.ci.items()},
                "settings": self.settings,
                "seconds": self.seconds,
            }
        )

    def write(self, out_dir: str | Path) -> Path:
        """Write results.json and samples.jsonl (one JSON object per line) into out_dir; returns results.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "results.json"
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        with open(out / "samples.jsonl", "w") as f:
            for rec in self.samples:
                f.write(json.dumps(_finite(rec), ensure_ascii=False, allow_nan=False) + "\n")
        return path


def _finite(x):
    """NaN/inf -> None so the files are strict JSON (pandas, datasets and browsers all read them)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _none_if_nan(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _reference(row: dict) -> str | None:
    """The reference answer as a string (one column type for pandas/datasets): "answer" when the row has one,
    else the other verification fields as JSON (e.g. countdown's numbers and target)."""
    if row.get("answer") is not None:
        return str(row["answer"])
    rest = {key: v for key, v in row.items() if key != "question"}
    return json.dumps(rest, sort_keys=True, default=str) if rest else None
