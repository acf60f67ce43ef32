"""The run around any trainer's step: checkpoints, resume, signals, logging, evaluation cadence.

A trainer subclasses `TrainLoop` and supplies `train_step(step) -> metrics` (and optionally `evaluate()`).
`fit()` then: resumes from the latest checkpoint when asked, runs steps, logs a line per step, saves every
`save_every` steps and, on Ctrl-C / SIGTERM or an exception, saves the last completed step before leaving.
Under torchrun every rank runs this loop; the stop decision is agreed across ranks so none is left waiting
in a collective.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import yaml

from ..config import to_dict
from . import checkpoint as ckpt
from .dist import Dist
from .metrics import MetricsLog, NullLog, console_line


class TrainLoop:
    name = "train"

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
        lg = cfg.logging
        self.log = (
            MetricsLog(
                self.out,
                tensorboard=lg.tensorboard,
                wandb=lg.wandb,
                wandb_project=lg.wandb_project,
                config=to_dict(cfg),
            )
            if dist.is_main
            else NullLog()
        )
        self.step = 0
        self.stop_requested = False

    def print(self, *args) -> None:
        if self.dist.is_main:
            print(*args, flush=True)

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
    def save(self, step: int, *, rng: dict | None = None, data_position: int | None = None) -> Path:
        pos = self.stream.position if data_position is None else data_position
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
            extra={"data_position": pos, **self.extra_state()},
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
            return
        state = ckpt.load_checkpoint(
            last, model=self.policy, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.step = state["step"]
        self.stream.position = state["data_position"]
        self.load_extra_state(state)
        self.log.truncate_after(self.step)
        self.print(
            f"resumed from {last} (step {self.step}, saved by {state.get('world_size', 1)} process(es))"
        )

    # ---- the run -----------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if self.stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop_requested = True
        self.print(
            f"\nreceived {signal.Signals(signum).name}: finishing this step, saving a checkpoint, then "
            "exiting (press Ctrl-C again to stop at once)"
        )

    def fit(self) -> dict:
        cfg, lg = self.cfg, self.cfg.logging
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self.maybe_resume()
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
        saved_step, step_start = self.step, None
        t_start = time.perf_counter()
        try:
            while self.step < cfg.steps and not self.dist.max_int(int(self.stop_requested)):
                # State at the start of the step: what a checkpoint must hold if this step dies half-way.
                step_start = (ckpt.rng_state(), self.stream.position)
                metrics = self.train_step(self.step + 1)
                step_start = None
                self.step += 1
                if cfg.eval.enabled and (
                    (lg.eval_every and self.step % lg.eval_every == 0) or self.step == cfg.steps
                ):
                    metrics.update(self.evaluate())
                self.log.log(metrics, self.step)
                bar.update(1)
                if lg.log_every and self.step % lg.log_every == 0 and self.dist.is_main:
                    bar.write(console_line(self.step, cfg.steps, metrics))
                if cfg.checkpoint.save_every and self.step % cfg.checkpoint.save_every == 0:
                    self.save(self.step)
                    saved_step = self.step
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            failed = sys.exc_info()[0] is not None and not isinstance(
                sys.exc_info()[1], KeyboardInterrupt
            )
            if failed and self.dist.enabled:
                # Saving is collective: with one rank failing, the others would wait forever.
                self.print(
                    f"not saving: a rank failed under torchrun; resume from step {saved_step}"
                )
            elif self.step != saved_step or (
                self.step and ckpt.latest_checkpoint(self.out) is None
            ):
                rng, pos = step_start if step_start is not None else (None, None)
                self.print(f"saved {self.save(self.step, rng=rng, data_position=pos)}")
        return {
            "steps": self.step,
            "seconds": time.perf_counter() - t_start,
            "stopped_early": self.stop_requested and self.step < cfg.steps,
        }

    def close(self) -> None:
        self.log.close()
