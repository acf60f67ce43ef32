"""reasoning-gym adapter: any reasoning-gym task by name, scored by its own verifier.

    get_task("gym", dataset="leg_counting", train_size=10_000, test_size=500, **generator_config)

Needs the optional extra `pip install aha-rl[gym]` (imported lazily; a clear error otherwise). Rows come from
`reasoning_gym.create_dataset(name, size=, seed=, **config)`; the test split uses another seed, and any train
problem whose question also occurs in the test split is dropped, so the splits never overlap. Each row keeps
the generator's entry, and the registered reward "gym" (gym_reward here) scores the extracted answer with the
dataset's own `score_answer(answer, entry)` (a float in [0, 1]).
"""

from __future__ import annotations

from functools import lru_cache

from aha.data.tasks import Task, check_split, register_task
from aha.rewards.format import extract_answer

TEST_SEED_OFFSET = 1_000_003  # test rows come from seed + this


def _rg():
    try:
        import reasoning_gym
    except ImportError:
        raise ValueError(
            "the gym task needs reasoning-gym: pip install 'aha-rl[gym]' (or pip install "
            "reasoning-gym)"
        ) from None
    return reasoning_gym


@lru_cache(maxsize=64)
def _scorer(name: str, config_items: tuple):
    # a small instance of the same generator: score_answer depends on the dataset class and its config
    return _rg().create_dataset(name, size=1, seed=0, **dict(config_items))


def gym_reward(completion: str, gym_entry) -> float:
    """reasoning-gym's own verifier on the extracted answer; 0.0 without an answer or on any error."""
    try:
        answer = extract_answer(completion)
        if answer is None:
            return 0.0
        name, config = gym_entry["gym_dataset"], gym_entry.get("gym_config", {})
        score = _scorer(name, tuple(sorted(config.items()))).score_answer(
            answer=answer, entry=gym_entry
        )
        return float(min(1.0, max(0.0, score)))
    except Exception:  # noqa: BLE001  (a total reward: third-party scorers may raise)
        return 0.0


@register_task("gym")
class GymTask(Task):
    accuracy_reward = "gym"

    def __init__(
        self,
        *,
        dataset: str,
        seed: int = 0,
        train_size: int = 10_000,
        test_size: int = 500,
        **config,
    ):
        self.name, self.gym_dataset, self.seed, self.config = (
            f"gym:{dataset}",
            dataset,
            seed,
            config,
        )
        self.sizes = {"train": train_size, "test": test_size}
        self._rows: dict[str, list[dict]] = {}
        rg = _rg()
        names = getattr(getattr(rg, "factory", None), "DATASETS", None)
        if names is not None and dataset not in names:
            raise ValueError(
                f"unknown reasoning-gym dataset {dataset!r}; valid: {', '.join(sorted(names))}"
            )

    def _generate(self, split: str, exclude: set[str]) -> list[dict]:
        seed = self.seed + (TEST_SEED_OFFSET if split == "test" else 0)
        data = _rg().create_dataset(
            self.gym_dataset, size=self.sizes[split] + len(exclude), seed=seed, **self.config
        )
        rows = []
        for entry in data:
            if entry["question"] in exclude:
                continue
            entry = dict(entry, gym_dataset=self.gym_dataset, gym_config=dict(self.config))
            rows.append(
                {
                    "question": entry["question"],
                    "answer": str(entry.get("answer")),
                    "gym_entry": entry,
                }
            )
            if len(rows) == self.sizes[split]:
                break
        return rows

    def dataset(self, split: str) -> list[dict]:
        check_split(split)
        if "test" not in self._rows:
            self._rows["test"] = self._generate("test", set())
        if split == "train" and "train" not in self._rows:
            self._rows["train"] = self._generate(
                "train", {r["question"] for r in self._rows["test"]}
            )
        return self._rows[split]
