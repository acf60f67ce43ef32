"""The rollout stage of every RL trainer: prompts -> G completions each -> rewards, this rank's share.

    rollout(step) -> RolloutBatch(ids, rows, completions, scores (N, F), rewards (N,), params, dummy, metrics)

Under torchrun each rank takes a contiguous share of the step's prompts (groups never split). With DAPO's dynamic
sampling, groups whose rewards are all equal are dropped and more prompts drawn, up to max_resample_rounds
extra rounds; ranks draw in lockstep so the data stream stays identical on all. A rank that found no informative
group keeps one as a `dummy` (its rewards NaN: it joins the collectives but enters no statistic). The batch
records the SamplingParams it was generated with, so the trainer computes logprobs at that temperature.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..eval.reflection import reflection_rate, revision_rate
from ..models.tokenizer import stop_token_ids
from ..rewards import RewardRunner, RewardSpec, soft_overlong_penalty
from ..rollout import Completion, SamplingParams
from .dist import gathered
from .metrics import print_samples


@dataclass
class RolloutBatch:
    ids: list[list[int]]  # prompt token ids, one per kept prompt of this rank
    rows: list[dict]  # the task rows of those prompts
    completions: list[Completion]  # G per prompt, prompt-major (prompt_index into ids)
    scores: np.ndarray  # (N, F) each reward function's score (+ DAPO's overlong column), NaN = n/a
    rewards: (
        np.ndarray
    )  # (N,) the weighted total; NaN = no reward applies (all NaN on a dummy rank)
    params: SamplingParams  # what the completions were sampled with
    dummy: bool = False  # this rank kept nothing: its one group only joins the collectives
    metrics: dict = field(default_factory=dict)


def reward_specs(cfg, task) -> list[RewardSpec]:
    """rewards.funcs -> RewardRunner specs: `accuracy` is the task's verifier."""
    return [
        RewardSpec(
            task.accuracy_reward if r.name == "accuracy" else r.name,
            r.weight,
            dict(r.kwargs),
            chunk=r.chunk,
        )
        for r in cfg.rewards.funcs
    ]


class Rollout:
    def __init__(self, cfg, *, dist, engine, tokenizer, policy, task, stream):
        """cfg: the TrainConfig; policy: the training forward whose weights the engine reads (gathered under
        FSDP); task: the built aha.data.Task; stream: the PromptStream of its train split."""
        self.cfg, self.dist, self.engine, self.tok = cfg, dist, engine, tokenizer
        self.policy, self.task, self.stream = policy, task, stream
        # every end id of the model (instruct models list several in their generation config)
        self.stop_ids = list(stop_token_ids(tokenizer, getattr(engine, "model", None)))
        specs = reward_specs(cfg, task)
        self.reward_names = [r.name for r in cfg.rewards.funcs]
        self.rewards = RewardRunner(
            specs,
            timeout=cfg.rewards.timeout,
            num_workers=cfg.rewards.num_workers,
            think_prefilled=cfg.task.think_prefilled,
        )

    def prompt_ids(self, rows: list[dict]) -> list[list[int]]:
        texts = [self.cfg.task.render(r["question"], self.tok) for r in rows]
        return [self.tok(x, add_special_tokens=False).input_ids for x in texts]

    def generate(self, ids: list[list[int]], params: SamplingParams, first_index: int):
        """Completions for `ids`; with sampling.seed_per_prompt each prompt gets its own seed (its global
        index), so samples do not depend on how prompts are batched or split over processes."""
        with gathered(self.policy):
            if not self.cfg.sampling.seed_per_prompt:
                return self.engine.generate(ids, params)
            out = []
            for j, p in enumerate(ids):
                for c in self.engine.generate(
                    [p], replace(params, seed=params.seed + first_index + j)
                ):
                    c.prompt_index = j
                    out.append(c)
            return out

    def __call__(self, step: int) -> RolloutBatch:
        cfg, s, a = self.cfg, self.cfg.sampling, self.cfg.algorithm
        G, W, R = s.group_size, self.dist.world, self.dist.rank
        want = cfg.batch.prompts_per_step // W
        kept: list[tuple] = []  # (ids, row, completions, scores, rewards) per kept group
        fallback = None
        seed = cfg.seed if s.seed is None else s.seed
        metrics = dict.fromkeys(
            ("time/generate", "time/reward", "reward/timeouts", "reward/errors"), 0.0
        )
        for round_ in range((a.max_resample_rounds if a.dynamic_sampling else 0) + 1):
            need = self.dist.max_int(want - len(kept))
            if need == 0:
                break
            first = self.stream.position + R * need
            rows = self.stream.take(need * W)[R * need : (R + 1) * need]
            ids = self.prompt_ids(rows)
            params = s.params(
                G, self.stop_ids, seed=seed * 1_000_003 + step * 10_007 + round_ * 101
            )
            t0 = time.perf_counter()
            comps = self.generate(ids, params, first)
            t1 = time.perf_counter()
            result = self.rewards.score(
                [c.text for c in comps],
                [rows[c.prompt_index] for c in comps],
                completion_ids=[c.token_ids for c in comps],
            )
            scores, total = result.scores, result.total
            if a.overlong_penalty:
                pen = self.overlong(comps)
                scores, total = np.column_stack([scores, pen]), np.nan_to_num(total) + pen
            metrics["time/generate"] += t1 - t0
            metrics["time/reward"] += time.perf_counter() - t1
            for k in ("reward/timeouts", "reward/errors"):  # per-function means: by config name
                metrics[k] += result.metrics.get(k, 0.0)
            # DAPO drops the groups whose rewards are all equal (no reward applying counts as 0 here)
            flat = np.nan_to_num(total, nan=0.0).reshape(-1, G).std(axis=1) == 0
            for g in range(len(rows)):
                sl = slice(g * G, (g + 1) * G)
                group = (ids[g], rows[g], comps[sl], scores[sl], total[sl])
                fallback = fallback or group
                if len(kept) < want and not (a.dynamic_sampling and flat[g]):
                    kept.append(group)
        metrics["dynamic/groups"] = float(self.dist.sum(torch.tensor(float(len(kept)))))
        dummy = not kept  # this rank found nothing to learn from; it still joins the collectives
        if dummy:
            kept = [fallback]
        comps = [c for k in kept for c in k[2]]
        for i, c in enumerate(comps):  # re-index completions into the kept prompt list
            c.prompt_index = i // G
        rewards = np.concatenate([k[4] for k in kept])
        return RolloutBatch(
            ids=[k[0] for k in kept],
            rows=[k[1] for k in kept],
            completions=comps,
            scores=np.concatenate([k[3] for k in kept]),
            rewards=np.full_like(rewards, np.nan) if dummy else rewards,
            params=params,
            dummy=dummy,
            metrics=metrics,
        )

    def overlong(self, comps) -> np.ndarray:
        """DAPO's soft overlong penalty of each completion, (N,)."""
        s, a = self.cfg.sampling, self.cfg.algorithm
        return np.array(
            [
                soft_overlong_penalty(len(c.token_ids), s.max_new_tokens, a.overlong_cache)
                for c in comps
            ]
        )

    def greedy_rewards(self, ids: list[list[int]], rows: list[dict]) -> np.ndarray:
        """ReMax's baseline: the total reward of each prompt's greedy completion (overlong penalty included,
        as for the sampled ones), (P,)."""
        params = SamplingParams(
            n=1,
            temperature=0.0,
            max_tokens=self.cfg.sampling.max_new_tokens,
            stop_token_ids=self.stop_ids,
            stop=tuple(self.cfg.sampling.stop),
            include_stop_str_in_output=self.cfg.sampling.include_stop_str_in_output,
        )
        with gathered(self.policy):
            comps = self.engine.generate(ids, params)
        total = self.rewards.score(
            [c.text for c in comps], rows, completion_ids=[c.token_ids for c in comps]
        ).total
        if self.cfg.algorithm.overlong_penalty:
            total = np.nan_to_num(total) + self.overlong(comps)
        return np.asarray(total, dtype=np.float64)

    def metrics(self, rb: RolloutBatch) -> dict:
        """Reward, length and reflection statistics over all ranks' completions."""
        mine = (
            []
            if rb.dummy
            else [(len(c.token_ids), c.finish_reason, c.text) for c in rb.completions]
        )
        everyone = self.dist.gather((mine, None if rb.dummy else rb.scores))
        lengths = np.array([n for part, _ in everyone for n, _, _ in part] or [0])
        texts = [t for part, _ in everyone for _, _, t in part]
        truncated = [f == "length" for part, _ in everyone for _, f, _ in part]
        sc = [s for _, s in everyone if s is not None]
        scores = np.concatenate(sc) if sc else np.full((1, rb.scores.shape[1]), np.nan)
        total = np.concatenate(self.dist.gather(rb.rewards))
        finite = total[np.isfinite(total)]
        nan = float("nan")
        out = {
            "reward/mean": float(finite.mean()) if finite.size else nan,
            "reward/std": float(finite.std()) if finite.size else nan,
            "len/mean": float(lengths.mean()),
            "len/min": int(lengths.min()),
            "len/max": int(lengths.max()),
            "frac_truncated": float(np.mean(truncated or [0])),
            "reflection_rate": reflection_rate(texts) if texts else nan,
            "revision_rate": revision_rate(texts) if texts else nan,
        }
        names = self.reward_names + (
            ["overlong"] if scores.shape[1] > len(self.reward_names) else []
        )
        for j, name in enumerate(names):
            col = scores[:, j][np.isfinite(scores[:, j])]
            out[f"reward/{name}"] = float(col.mean()) if col.size else nan
        gen = rb.metrics.get("time/generate", 0.0)
        out["tokens_per_s"] = float(lengths.sum()) / max(gen, 1e-9) if texts else 0.0
        return out

    def write_samples(self, out_dir, step: int, rb: RolloutBatch, k: int = 4) -> list[dict]:
        """The first completion of up to k prompts -> out_dir/samples.jsonl (and the console); returns them."""
        G = self.cfg.sampling.group_size
        picked = [
            {
                "step": step,
                "question": rb.rows[c.prompt_index]["question"],
                "completion": c.text,
                "reward": float(np.nan_to_num(rb.rewards[i])),
            }
            for i, c in enumerate(rb.completions)
            if i % G == 0
        ][:k]
        with (out_dir / "samples.jsonl").open("a") as f:
            for r in picked:
                f.write(json.dumps(r) + "\n")
        if self.cfg.logging.progress:
            print_samples(picked)
        return picked

    def close(self) -> None:
        self.rewards.close()
