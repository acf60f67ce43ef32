"""The run around any trainer's step: checkpoints, resume, signals, logging, evaluation cadence.

A trainer subclasses `TrainLoop` and supplies `train_step(step) -> metrics` (and optionally `evaluate()`).
`fit()` then: resumes from the latest checkpoint when asked (saying which config keys changed since the run's
config.yaml), evaluates once at step 0 when evaluation is on (so curves and the report's headline start from the
model before training), runs steps, logs a line per step, saves every `save_every` steps and, on Ctrl-C /
SIGTERM or an exception, saves the last completed step before leaving. Under torchrun every rank runs this loop;
the stop decision is agreed across ranks so none is left waiting in a collective.

A run must not lose or poison its data (issue 17): a step the trainer skipped for non-finite values is counted
and too many in a row stop the run (train/guard.py); no checkpoint is written from a NaN/inf state; a run that
stops early says why and returns a non-zero `exit_code` (128 + signal, 1 for the guard, 75 when the GPU ran out
of memory: train/oom.py); on resume the logs are cut back to the checkpoint's step, or emptied when there is none
(train/run_dir.py).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from pathlib import Path

import yaml

from ..config import as_today, config_changes, to_dict
from . import checkpoint as ckpt
from .dist import Dist
from .guard import SkipCounter, state_is_finite
from .metrics import MetricsLog, NullLog, console_line
from .oom import OOM_EXIT, OOMGuard, is_oom
from .run_dir import clear_run, truncate_jsonl


class TrainLoop:
    name = "train"
    nonfinite_hint = (
        "lower optim.lr or check the rewards' scale"  # what to try when the guard stops a run
    )

    def __init__(self, cfg, *, dist: Dist, policy, tokenizer, optimizer, scheduler, stream):
        """cfg needs .steps .out .resume .logging .checkpoint .eval; policy is the module that is optimised and
        checkpointed (a LogprobModel); stream is the PromptStream (its position is the data position)."""
        self.cfg, self.dist = cfg, dist
        self.policy, self.tok, self.optimizer, self.scheduler, self.stream = (
            policy,
            tokenizer,
            optimizer,
            scheduler,
            stream,
        )
        self.out = Path(cfg.out)
        if getattr(cfg, "overwrite", False) and dist.is_main:  # before the sinks open their files
            clear_run(self.out)
        lg = cfg.logging
        self.log = (
            MetricsLog(
                self.out,
                tensorboard=lg.tensorboard,
                wandb=lg.wandb,
                wandb_project=lg.wandb_project,
                config=to_dict(cfg),
                resume=cfg.resume,
            )
            if dist.is_main
            else NullLog()
        )
        self.step = 0
        self.stop_requested = False
        self.stop_reason: str | None = (
            None  # "SIGTERM" / "SIGINT" / "non-finite": why the run stopped early
        )
        self.skips = SkipCounter(
            cfg.optim.max_skipped_steps
        )  # the non-finite guard (train/guard.py)
        self.oom = OOMGuard()  # out of GPU memory: what ran out, what was saved (train/oom.py)

    def print(self, *args) -> None:
        """A line on the main rank; through tqdm so that it does not break the progress bar."""
        if self.dist.is_main:
            from tqdm import tqdm

            tqdm.write(" ".join(str(a) for a in args))
            sys.stdout.flush()

    # ---- to override -------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict:
        raise NotImplementedError

    def evaluate(self) -> dict:
        return {}

    def extra_state(self) -> dict:
        """More state for state.json (plain JSON); restored by `load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_parts(self, tmp: Path) -> None:
        """Write more parts (e.g. PPO's critic) into the checkpoint being written at `tmp`, before its atomic
        rename. Collective under torchrun."""

    # ---- checkpoints -------------------------------------------------------------------------------------
    def guarded(self) -> list:
        """(module, optimizer) pairs a checkpoint holds, checked for NaN/inf before it is written."""
        return [(self.policy, self.optimizer)]

    def save(
        self, step: int, *, rng: dict | None = None, data_position: int | None = None
    ) -> Path | None:
        """Write checkpoint `step`; None (nothing written, the run stops) if its state is not finite."""
        if not state_is_finite(self.guarded(), self.dist):
            self.stop_reason = "non-finite"
            self.print(
                f"not saving step {step}: the weights or optimizer state hold NaN/inf; the latest "
                f"checkpoint stays {ckpt.latest_checkpoint(self.out, log=lambda _: None)}"
            )
            return None
        pos = self.stream.position if data_position is None else data_position
        with no_shard_bar():
            return self._save(step, rng, pos)

    def _save(self, step: int, rng: dict | None, pos: int) -> Path:
        return ckpt.save_checkpoint(
            self.out,
            step,
            model=self.policy,
            tokenizer=self.tok,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            keep_last=self.cfg.checkpoint.keep_last,
            save_optimizer=self.cfg.checkpoint.save_optimizer,
            rng=rng,
            dist=self.dist,
            extra={"data_position": pos, "skipped_steps": self.skips.total, **self.extra_state()},
            before_rename=self.save_parts,
        )

    def maybe_resume(self) -> None:
        if not self.cfg.resume:
            return
        last = ckpt.latest_checkpoint(self.out)
        if last is None:
            self.print(
                f"resume=true but {self.out}/checkpoints holds no checkpoint: starting from step 0"
            )
            self.truncate_logs(0)  # the earlier attempt's lines would be logged again
            return
        state = ckpt.load_checkpoint(
            last, model=self.policy, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.step = state["step"]
        self.stream.position = state["data_position"]
        self.load_extra_state(state)
        self.skips.total = state.get("skipped_steps", 0)
        self.truncate_logs(self.step)
        self.print(
            f"resumed from {last} (step {self.step}, saved by {state.get('world_size', 1)} process(es))"
        )

    def truncate_logs(self, step: int) -> None:
        """Resume: forget metrics and samples of steps after `step` (torn last lines dropped on the way)."""
        self.log.truncate_after(step)
        if self.dist.is_main:
            truncate_jsonl(self.out / "samples.jsonl", step, log=self.print)

    # ---- the run -----------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.stop_reason = signal.Signals(signum).name
        if self.stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop_requested = True
        self.print(
            f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, then "
            "exiting (press Ctrl-C again to stop at once)"
        )

    def fit(self) -> dict:
        cfg, lg = self.cfg, self.cfg.logging
        config, changed = self.out / "config.yaml", ""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.resume and config.is_file():
                old = as_today(type(cfg), yaml.safe_load(config.read_text()) or {})
                changed = config_changes(old, to_dict(cfg))
                if changed:
                    self.print(f"resume: the config changed since the run started: {changed}")
        try:
            self.maybe_resume()
        except ckpt.CheckpointMismatch as e:  # config.yaml still describes the checkpoints
            hint = f" (the run's config.yaml differs: {changed})" if changed else ""
            raise ckpt.CheckpointMismatch("resume", e.message + hint) from None
        # written once the checkpoint took: a failed resume leaves the run's own
        if self.dist.is_main:
            config.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.first_step = self.step  # a resumed run starts past 0
        self.oom.watch([opt for _, opt in self.guarded()])
        if self.step == 0 and cfg.eval.enabled:
            # the model before training: the first point of the held-out curve and the report's "before"
            try:
                metrics = self.evaluate()
            except RuntimeError as e:  # OutOfMemoryError, or a CUDA library that could not allocate
                if not is_oom(e):
                    raise
                self.stop_reason = "oom"
                self.oom.note(e, "evaluation", 0)
            if self.stop_reason == "oom":  # outside the except: the error's frames are freed by now
                self.oom.save(self, None, 0)
                return self.summary(0.0)
            self.log.log(metrics, 0)
            self.print(console_line(0, cfg.steps, metrics))
        old_handlers = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (lg.progress and self.dist.is_main),
            desc=self.name,
            leave=False,
        )
        saved_step, step_start, unlogged, phase = self.step, None, None, "step"
        t_start = time.perf_counter()
        try:
            while self.step < cfg.steps and not self.dist.max_int(int(self.stop_requested)):
                # State at the start of the step: what a checkpoint must hold if this step dies half-way.
                step_start = (ckpt.rng_state(), self.stream.position)
                self.oom.moved, phase = False, "step"
                metrics = self.train_step(self.step + 1)
                step_start = None
                self.step += 1
                self.count_skip(metrics, bar)
                if cfg.eval.enabled and (
                    (lg.eval_every and self.step % lg.eval_every == 0) or self.step == cfg.steps
                ):
                    unlogged, phase = metrics, "evaluation"  # an OOM here still logs the step
                    metrics.update(self.evaluate())
                self.log.log(metrics, self.step)
                unlogged, phase = None, "a checkpoint save"
                bar.update(1)
                if lg.log_every and self.step % lg.log_every == 0 and self.dist.is_main:
                    bar.write(console_line(self.step, cfg.steps, metrics))
                if self.skips.exhausted:
                    self.stop_reason = "skipped"
                    break
                if cfg.checkpoint.save_every and self.step % cfg.checkpoint.save_every == 0:
                    if self.save(self.step) is None:
                        break
                    saved_step = self.step
        except KeyboardInterrupt:  # a second Ctrl-C: saved below, as after the last complete step
            self.stop_reason = "SIGINT"
        except RuntimeError as e:
            # out of GPU memory: saved below, as after a second Ctrl-C (train/oom.py); anything else goes on
            if not is_oom(e):
                raise
            self.stop_reason = "oom"
            self.oom.note(e, phase, self.step + (step_start is not None))
            if unlogged is not None:
                self.log.log(unlogged, self.step)
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            failed = sys.exc_info()[0] is not None
            if self.oom.report is not None:
                self.oom.save(self, step_start, saved_step)
                self.stop_reason = "oom"  # a refused non-finite save does not change why it stopped
            elif failed and self.dist.enabled:
                # Saving is collective: with one rank failing, the others would wait forever.
                self.print(
                    f"not saving: a rank failed under torchrun; resume from step {saved_step}"
                )
            elif self.stop_reason != "non-finite" and (
                self.step != saved_step or (self.step and ckpt.latest_checkpoint(self.out) is None)
            ):
                rng, pos = step_start if step_start is not None else (None, None)
                path = self.save(self.step, rng=rng, data_position=pos)
                if path is not None:
                    self.print(f"saved {path}")
        return self.summary(time.perf_counter() - t_start)

    def count_skip(self, metrics: dict, bar) -> None:
        """The non-finite guard's bookkeeping for the step just taken: skipped_steps, one line per skip."""
        reason = self.skips.count(metrics)
        if reason is not None and self.dist.is_main:
            k, limit = self.skips.in_a_row, self.skips.limit
            bar.write(
                f"step {self.step} skipped: {reason}; weights and optimizer state unchanged "
                f"({k} in a row; {limit} in a row stop the run: optim.max_skipped_steps)"
            )

    def summary(self, seconds: float) -> dict:
        """fit()'s result; a run that stopped early says why in one line and carries a non-zero exit code:
        128 + the signal's number (SIGTERM 143, Ctrl-C 130), 1 for a run the non-finite guard stopped."""
        why, n, total = self.stop_reason, self.step, self.cfg.steps
        if why in ("SIGTERM", "SIGINT") and n >= total:
            why = None  # the signal came during the last step: the run is complete
        code = 0
        if why in ("SIGTERM", "SIGINT"):
            code = 128 + signal.Signals[why].value
            self.print(f"stopped at step {n}/{total} by {why}; resume with resume=true")
        elif why == "skipped":
            code = 1
            self.print(
                f"stopped at step {n}/{total}: {self.skips.in_a_row} steps in a row were skipped "
                f"({self.skips.last}); {self.nonfinite_hint}, then resume with resume=true"
            )
        elif why == "oom":
            code = OOM_EXIT
            line = self.oom.line(self.cfg, total)
            if self.dist.is_main:
                self.print(line)
            else:  # the rank that ran out may not be the one that prints
                print(f"rank {self.dist.rank}: {line}", file=sys.stderr, flush=True)
        elif why == "non-finite":
            code = 1
            self.print(
                f"stopped at step {n}/{total}: the weights are not finite and were not saved; resume "
                "with resume=true from the latest checkpoint"
            )
        return {
            "steps": n,
            # the steps this process took (fewer after a resume)
            "ran": n - self.first_step,
            "seconds": seconds,
            "stopped_early": why is not None,
            "stopped": why,
            "exit_code": code,
        }

    def close(self) -> None:
        self.log.close()


@contextlib.contextmanager
def no_shard_bar():
    """transformers draws a "Writing model shards" bar on every save_pretrained, one shard or not: noise under
    the training's own bar, so its bars are off while a checkpoint is written."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def held_out_metrics(res) -> dict:
    """An EvalResult as metrics.jsonl keys: eval/<metric>, and pass@1's bootstrap interval as eval/pass1_lo and
    eval/pass1_hi when the evaluation drew one (eval.n_boot > 0)."""
    out = res.flat()
    lo, hi = res.ci.get("pass1", (float("nan"), float("nan")))
    if math.isfinite(lo) and math.isfinite(hi):
        out["eval/pass1_lo"], out["eval/pass1_hi"] = lo, hi
    return out
