"""Cold-start rows: worked solutions in the R1 format, verified, from the train split only."""

import json
from pathlib import Path

import pytest

import aha.demo  # noqa: F401  (registers the chain task)
from aha.data import get_task
from aha.data.cold_start import cold_start_rows, worked_solution
from aha.rewards.format import format_reward

FIXTURES = Path(__file__).parent / "fixtures"


class TrainOnly:
    """Wraps a task so that reading its test split fails the test."""

    def __init__(self, task):
        self.task, self.name, self.accuracy_reward = task, task.name, task.accuracy_reward

    def dataset(self, split):
        assert split == "train", f"cold start read the {split} split"
        return self.task.dataset(split)


@pytest.mark.parametrize(
    "name, options",
    [
        ("arithmetic", {"ops": ["+", "*"], "digits": [1, 3]}),
        ("chain", {}),
        ("countdown", {}),
    ],
)
def test_rows_are_verified_formatted_and_never_test_problems(name, options):
    task = get_task(name, **options)
    rows = cold_start_rows(TrainOnly(task), 150)
    assert len(rows) == 150
    test_questions = {task.dataset("test")[i]["question"] for i in range(200)}
    assert not test_questions & {r["question"] for r in rows}
    for r in rows:
        assert format_reward(r["completion"]) == 1.0
        assert r["completion"].endswith(f"<answer> {r['answer']} </answer>")


def test_arithmetic_steps_are_the_column_method():
    row = {"question": "What is 47 + 38?", "answer": "85"}
    assert worked_solution("arithmetic", row) == (
        "<think> 47 + 38: 7 + 8 = 15, write 5 carry 1; 4 + 3 + 1 = 8. So 47 + 38 = 85. </think> "
        "<answer> 85 </answer>"
    )
    row = {"question": "What is 23 * 45?", "answer": "1035"}
    assert "23 * 5 = 115; 23 * 40 = 920. Add: 115 + 920 = 1035" in worked_solution(
        "arithmetic", row
    )
    assert worked_solution("arithmetic", {"question": "What is 99 + 1?"}).endswith(
        "<answer> 100 </answer>"
    )


def test_gsm8k_uses_the_train_solution_without_calculator_marks(tmp_path):
    (tmp_path / "train.jsonl").write_text((FIXTURES / "gsm8k_train_3.jsonl").read_text())
    task = get_task("gsm8k", path=str(tmp_path / "{split}.jsonl"))
    rows = cold_start_rows(TrainOnly(task), 10)
    assert len(rows) == 3  # every row of the file, no test file needed
    first = json.loads((FIXTURES / "gsm8k_train_3.jsonl").read_text().splitlines()[0])
    assert rows[0]["answer"] == first["answer"].split("####")[1].strip()
    assert "<<" not in rows[0]["completion"] and "48/2 = 24" in rows[0]["completion"]


def test_unsolvable_rows_are_skipped_and_unknown_tasks_named():
    assert worked_solution("arithmetic", {"question": "What is seven plus 2?"}) is None
    assert worked_solution("gsm8k", {"question": "q", "answer": "no marker"}) is None
    with pytest.raises(ValueError, match="no cold-start writer for task 'math'"):
        worked_solution("math", {"question": "q"})
