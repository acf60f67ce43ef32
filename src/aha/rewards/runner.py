"""RewardRunner: score a batch of completions with several reward functions and weights.

    scores[i, f] = reward_f(completion_i, **row_i fields)      NaN where reward f does not apply to row i
    total[i]     = sum_f weight_f * scores[i, f] over applicable f    (NaN if none applies)

A reward does not apply when it returns None, or (built-ins) when the row lacks a field its signature requires
(a math reward on a code row). Cheap bounded functions (format, tag, countdown, exact, language) run in this
process; everything else (math equivalence, code, user "module:function" rewards) runs in a WorkerPool with a
per-item timeout. A timed-out or failing item scores 0 and is counted in metrics["reward/timeouts"] /
["reward/errors"]; the first error message of each reward is also issued as a warning.

User rewards are batch style, f(completions, **row_fields_as_lists) -> list[float | None]; they get chunks of
RewardSpec.chunk items (USER_CHUNK by default: consecutive completions, one group when G = 8; 0: all of them in
one call, as TRL's trainer calls a reward), each call with a budget of `timeout` seconds per USER_CHUNK items
a worker; a chunk that times out (or kills its worker) is retried one item at a time, so only the items that
really hang score 0. TRL's reward functions run as they are: a function that names `completions`,
`completion_ids` or `prompts` (or takes only keywords) is called with keywords, as TRL's trainer calls it,
`f(prompts=..., completions=..., completion_ids=..., **columns)` (what it takes; the prompt and completion
columns are not repeated as keywords, as in TRL), and on rows whose `prompt` column is a list of
chat messages (TRL's conversational format) each completion is `[{"role": "assistant", "content": text}]`.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from aha.rewards.registry import IN_PROCESS, get_reward, is_batch, reward_path, row_params
from aha.rewards.text import is_messages

USER_CHUNK = 8


class RewardError(ValueError):
    """A reward function that cannot work as configured (it failed on a whole first batch): the user's to fix,
    one line through the CLI."""


@dataclass
class RewardSpec:
    name: str  # registered name or "module:function"
    weight: float = 1.0
    kwargs: dict = field(
        default_factory=dict
    )  # fixed options, e.g. {"lang": "zh"}; row fields override
    timeout: float | None = None  # per-item seconds for this reward; None: the runner's
    # user rewards' completions per call; 0: the whole batch in one call (TRL's way)
    chunk: int = USER_CHUNK

    def __post_init__(self):
        if callable(self.name):  # a function, as TRL's reward_funcs=[fn]: by its import path
            self.name = function_path(self.name)


@dataclass
class RewardResult:
    scores: np.ndarray  # (N, F) float64, NaN = does not apply
    total: np.ndarray  # (N,) weighted sum over applicable functions, NaN if none applies
    names: list[str]  # (F,)
    metrics: dict[
        str, float
    ]  # "reward/<name>" means, "reward/total", "reward/timeouts", "reward/errors"


class RewardRunner:
    """See module docstring. `num_workers=0` runs everything in this process (no timeouts: debugging only)."""

    def __init__(
        self,
        specs,
        *,
        timeout: float = 5.0,
        num_workers: int = 2,
        think_prefilled: bool = False,
        memory_limit_mb: int = 4096,
    ):
        self.specs = [s if isinstance(s, RewardSpec) else RewardSpec(*s) for s in specs]
        if not self.specs:
            raise ValueError(
                "RewardRunner needs at least one reward spec, e.g. [('math', 1.0), ('format', 0.1)]"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout, self.num_workers, self.think_prefilled = (
            float(timeout),
            int(num_workers),
            think_prefilled,
        )
        self.memory_limit_mb = memory_limit_mb
        self.fns = [
            get_reward(s.name) for s in self.specs
        ]  # unknown / unimportable names fail here
        for s in self.specs:
            if (
                s.name == "code"
            ):  # no sandbox and no explicit opt-out: fail now, not at the first batch
                from aha.rewards.code import check_isolation

                check_isolation(bool(s.kwargs.get("allow_unsafe", False)))
        self.params = [
            (set(), set()) if is_batch(s.name) else row_params(fn)
            for s, fn in zip(self.specs, self.fns)
        ]
        self.paths = [reward_path(s.name) for s in self.specs]  # workers import rewards by path
        self.budgets = [s.timeout or self.timeout for s in self.specs]
        # user rewards in verl's convention, compute_score(data_source, solution_str, ground_truth, extra_info)
        self.verl = [
            is_batch(s.name) and VERL_PARAMS <= inspect.signature(fn).parameters.keys()
            for s, fn in zip(self.specs, self.fns)
        ]
        self.names = _unique([s.name for s in self.specs])
        self.weights = np.array([float(s.weight) for s in self.specs])
        self._pool = None
        self._warned: set[str] = set()
        self._scored = False  # the first batch is checked for a reward that fails on all of it

    # ---- jobs -------------------------------------------------------------------------------------------------
    def _item_kwargs(self, f: int, row: dict) -> dict | None:
        spec, (required, optional) = self.specs[f], self.params[f]
        kwargs = {k: v for k, v in spec.kwargs.items() if k in required | optional}
        kwargs.update({k: row[k] for k in required | optional if k in row})
        if self.think_prefilled and "think_prefilled" in optional:
            kwargs["think_prefilled"] = True
        return kwargs if required <= kwargs.keys() else None

    def _batch_jobs(
        self, f: int, completions: list[str], rows: list[dict], ids: list | None = None
    ) -> list[tuple[list[int], tuple, dict]]:
        fn = self.fns[f]
        params = inspect.signature(fn).parameters
        if self.verl[f]:  # verl's compute_score, one item a call through verl_batch
            return [
                (idx, (), {"path": self.paths[f], **_verl_items(completions, rows, idx)})
                for idx in _chunks(len(completions), self.specs[f].chunk)
            ]
        named = trl_style(fn)  # TRL's call: everything by keyword
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        takes = lambda k: takes_any or k in params
        columns = {k for r in rows for k in r}
        keys = sorted(columns | set(self.specs[f].kwargs))
        # TRL passes neither the prompt/completion columns (prompts= and completions= carry them) nor its own
        # arguments as columns
        keys = [k for k in keys if takes(k) and not (named and k in (*TRL_ARGS, *TRL_COLUMNS))]
        # TRL's conversational format: a message-list prompt gets message-list completions
        texts = [
            [{"role": "assistant", "content": c}] if is_messages(r.get("prompt")) else c
            for c, r in zip(completions, rows)
        ]
        jobs = []
        # calls of spec.chunk completions, spread over the workers (0: one call with all, as TRL's trainer)
        options = self.specs[f].kwargs
        for idx in _chunks(len(completions), self.specs[f].chunk):
            # a row column: one value per completion (the option where a row lacks it); an option that no row
            # has: as given, once (e.g. TRL's reasoning_delimiters=[...])
            kwargs = {
                k: [rows[i].get(k, options.get(k)) for i in idx] if k in columns else options[k]
                for k in keys
            }
            if not named:
                jobs.append((idx, ([texts[i] for i in idx],), kwargs))
                continue
            if takes("completions"):
                kwargs["completions"] = [texts[i] for i in idx]
            if takes("prompts"):
                kwargs["prompts"] = [rows[i].get("prompt", rows[i].get("question")) for i in idx]
            if ids is not None and takes("completion_ids"):
                kwargs["completion_ids"] = [list(ids[i]) for i in idx]
            jobs.append((idx, (), kwargs))
        return jobs

    # ---- scoring ----------------------------------------------------------------------------------------------
    def score(
        self, completions: list[str], rows: list[dict], completion_ids: list | None = None
    ) -> RewardResult:
        """completion_ids: each completion's token ids, for user rewards that take them (TRL's argument)."""
        from aha.rewards.pool import Job, WorkerPool

        if len(completions) != len(rows):
            raise ValueError(
                f"score() got {len(completions)} completions but {len(rows)} rows; pass one row "
                "per completion (repeat each prompt's row G times)"
            )
        n, F = len(completions), len(self.specs)
        scores = np.full((n, F), np.nan)
        counts = {"timeouts": 0, "errors": 0}
        remote: list[tuple[int, list[int], Job]] = []  # (f, item indices, job)
        for f, spec in enumerate(self.specs):
            if is_batch(spec.name):
                # verl's compute_score is called item by item by verl_batch
                fn, path = (
                    (verl_batch, VERL_BATCH) if self.verl[f] else (self.fns[f], self.paths[f])
                )
                for idx, args, kwargs in self._batch_jobs(f, completions, rows, completion_ids):
                    if self.num_workers == 0:  # debugging: in this process, no timeout
                        self._store(scores, counts, f, idx, _call(fn, args, kwargs))
                    else:
                        # the timeout is per USER_CHUNK items on each worker: a larger call gets what
                        # its chunks would have had on the workers side by side
                        per = USER_CHUNK * self.num_workers
                        budget = self.budgets[f] * max(1, math.ceil(len(idx) / per))
                        remote.append((f, idx, Job(path, args, kwargs, budget)))
                continue
            applied = 0
            for i, (c, row) in enumerate(zip(completions, rows)):
                kwargs = self._item_kwargs(f, row)
                if kwargs is None:
                    continue  # a required field is missing: does not apply (NaN)
                applied += 1
                if spec.name in IN_PROCESS or self.num_workers == 0:
                    self._store(scores, counts, f, [i], _call(self.fns[f], (c,), kwargs))
                else:
                    remote.append((f, [i], Job(self.paths[f], (c,), kwargs, self.budgets[f])))
            if rows and not applied:
                self._no_fields(f, rows)
        if remote:
            if self._pool is None:
                self._pool = WorkerPool(self.num_workers, memory_limit_mb=self.memory_limit_mb)
            outcomes = self._pool.run([job for _, _, job in remote])
            # A user chunk that timed out is retried item by item, so only the stuck completion scores 0.
            retry = {
                k for k, (_, idx, _) in enumerate(remote) if len(idx) > 1 and _stuck(outcomes[k])
            }
            singles = [
                (remote[k][0], [i], _single(remote[k][2], pos, remote[k][2].budget))
                for k in sorted(retry)
                for pos, i in enumerate(remote[k][1])
            ]
            if singles:
                outcomes += self._pool.run([job for _, _, job in singles])
            for k, ((f, idx, _), outcome) in enumerate(zip(remote + singles, outcomes)):
                if k not in retry:
                    self._store(scores, counts, f, idx, outcome)
        if not self._scored and n:
            self._scored = True
            self._check_first_batch(counts, n)
        total = np.where(
            np.isnan(scores).all(axis=1), np.nan, np.nansum(scores * self.weights, axis=1)
        )
        metrics = {f"reward/{name}": _nanmean(scores[:, f]) for f, name in enumerate(self.names)}
        metrics["reward/total"] = _nanmean(total)
        metrics["reward/timeouts"], metrics["reward/errors"] = (
            float(counts["timeouts"]),
            float(counts["errors"]),
        )
        return RewardResult(scores, total, list(self.names), metrics)

    def _check_first_batch(self, counts: dict, n: int) -> None:
        """A reward that fails on every completion of the first batch is a bug in it or in how it is called
        (a TRL function on plain-text rows, a wrong signature), not a zero reward to train on: one line."""
        for f in range(len(self.specs)):
            failed, first = counts.get(("errors", f), (0, ""))
            if failed == n:
                raise RewardError(
                    f"reward {self.names[f]!r} failed on all {n} completions of the first batch ({first}); "
                    "a 'module:function' reward is called as f(completions, **columns) -> list (README, "
                    "Rewards)"
                )

    def _no_fields(self, f: int, rows: list[dict]) -> None:
        """Reward f applies to none of the rows (they lack a field it needs): said once, since a run would
        otherwise train on it as on a zero reward without a word (a code task without its `tests` column)."""
        key = f"fields:{self.names[f]}"
        if key in self._warned:
            return
        self._warned.add(key)
        need = sorted(self.params[f][0] - set(self.specs[f].kwargs))
        have = sorted({k for r in rows for k in r})
        warnings.warn(
            f"reward '{self.names[f]}' applies to none of these {len(rows)} rows: they lack "
            f"{', '.join(repr(k) for k in need)} (rows have {', '.join(have)}); map a column to it "
            "(a file task's task.options.columns) or drop the reward",
            RuntimeWarning,
            stacklevel=3,
        )

    def _store(self, scores, counts, f: int, idx: list[int], outcome: tuple) -> None:
        kind, value = outcome
        batch = is_batch(self.specs[f].name)
        if (
            kind == "ok"
            and batch
            and (not isinstance(value, (list, tuple, np.ndarray)) or len(value) != len(idx))
        ):
            kind, value = (
                "error",
                f"returned {type(value).__name__} of length "
                f"{len(value) if hasattr(value, '__len__') else '?'} for {len(idx)} completions",
            )
        for k, i in enumerate(idx):
            item_kind, v = kind, (value[k] if kind == "ok" and batch else value)
            if item_kind == "ok" and v is not None:
                item_kind, v = _as_score(v)
            if item_kind == "ok":
                scores[i, f] = np.nan if v is None else v
                continue
            scores[i, f] = 0.0
            counts["timeouts" if item_kind == "timeout" else "errors"] += 1
            if item_kind == "error":
                counts.setdefault(("errors", f), [0, v])[0] += 1
            if item_kind == "error" and self.names[f] not in self._warned:
                self._warned.add(self.names[f])
                warnings.warn(
                    f"reward {self.names[f]!r} failed (scored 0): {v}", RuntimeWarning, stacklevel=3
                )

    # ---- lifetime ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stuck(outcome: tuple) -> bool:
    return outcome[0] == "timeout" or (
        outcome[0] == "error" and outcome[1].startswith("reward worker died")
    )


def _single(job, pos: int, timeout: float):
    """Item `pos` of a batch job, as a batch job of one (every argument is a per-item list; verl_batch's
    `path` is not)."""
    from aha.rewards.pool import Job

    args = tuple([a[pos]] for a in job.args)
    kwargs = {k: v if k == "path" else [v[pos]] for k, v in job.kwargs.items()}
    return Job(job.name, args, kwargs, timeout)


def _chunks(n: int, size: int = USER_CHUNK) -> list[list[int]]:
    """Item indices in calls of `size` (0: one call with all n)."""
    size = size or max(1, n)
    return [list(range(s, min(s + size, n))) for s in range(0, n, size)]


VERL_BATCH = "aha.rewards.runner:verl_batch"
VERL_PARAMS = {"solution_str", "ground_truth"}


def _verl_items(completions: list[str], rows: list[dict], idx: list[int]) -> dict:
    """verl's compute_score arguments for items idx: the row's data_source, the completion as solution_str,
    reward_model.ground_truth (else the row's answer) and extra_info."""

    def truth(row):
        rm = row.get("reward_model")
        return (
            rm["ground_truth"]
            if isinstance(rm, dict) and "ground_truth" in rm
            else row.get("answer")
        )

    return {
        "data_source": [rows[i].get("data_source") for i in idx],
        "solution_str": [completions[i] for i in idx],
        "ground_truth": [truth(rows[i]) for i in idx],
        "extra_info": [rows[i].get("extra_info") for i in idx],
    }


def verl_batch(path: str, data_source, solution_str, ground_truth, extra_info) -> list:
    """verl's reward function convention, compute_score(data_source, solution_str, ground_truth, extra_info)
    -> float or {"score": float, ...}, over a chunk (runs in the reward worker)."""
    from aha.rewards.registry import get_reward

    fn = get_reward(path)
    out = []
    for args in zip(data_source, solution_str, ground_truth, extra_info):
        v = fn(*args)
        out.append(v["score"] if isinstance(v, dict) else v)
    return out


def function_path(fn) -> str:
    """A reward function -> "module:qualname", the name worker processes import it by."""
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not qual or "<" in qual:
        raise ValueError(
            f"reward {fn!r} cannot be imported by a worker process (a lambda, a function defined inside "
            "another, a functools.partial or a callable object such as TRL's reward factories give); "
            "define it or assign it at the top level of a module and pass it, or 'module:name'"
        )
    return f"{module}:{qual}"


# the arguments TRL's trainer passes itself, and the columns it leaves out of the keywords
TRL_ARGS = ("prompts", "completions", "completion_ids")
TRL_COLUMNS = ("prompt", "completion")


def trl_style(fn) -> bool:
    """Whether `fn` is called as TRL's trainer calls rewards, by keyword: it names one of TRL's arguments
    (completions, completion_ids, prompts) or takes only keywords; else aha's style, the texts first."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.name in TRL_ARGS for p in params):
        return True
    return bool(params) and params[0].kind in (
        inspect.Parameter.VAR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _call(fn, args: tuple, kwargs: dict) -> tuple:
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:  # noqa: BLE001  (built-ins are total; this is a safety net)
        return ("error", f"{type(e).__name__}: {e}")


def _as_score(v) -> tuple[str, float | str]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "error", f"returned {type(v).__name__}, not a float or None"
    return ("ok", v) if math.isfinite(v) else ("error", f"returned non-finite value {v}")


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
