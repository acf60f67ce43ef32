"""The R1 benchmarks as tasks: MATH-500 and GSM8K test shipped (offline, with licences), AIME 2024 and AMC 2023
from a local copy or the hub, with a one-line error saying where to get them when neither works."""

import json
from pathlib import Path

import pytest

from aha.data import get_task
from aha.data.benchmarks import DATA, K
from aha.data.read import DataError
from aha.rewards import RewardRunner, math_accuracy

AIME = [
    {"problem": "Find the remainder when $2^{10}$ is divided by $1000$.", "answer": "24"},
    {"problem": "How many positive divisors does $36$ have?", "answer": "9"},
]


def test_shipped_files_with_licences_and_sources():
    for name, rows in (("math500", 500), ("gsm8k", 1319)):
        assert (DATA / name / "LICENSE").read_text().startswith("MIT License")
        assert len(get_task(name).dataset("test")) == rows
    readme = (DATA / "README.md").read_text()
    assert "HuggingFaceH4/aime_2024" in readme and "math-ai/amc23" in readme and "MIT" in readme
    assert set(K) == {"math500", "gsm8k", "aime24", "amc23"}
    # the package-data line ships them in the wheel
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"data/benchmark_data/**/*"' in pyproject


def test_gsm8k_test_rows_verify_against_their_own_final_number():
    rows = get_task("gsm8k").dataset("test")
    finals = [r["answer"].rsplit("####", 1)[1].strip().replace(",", "") for r in rows]
    assert all(math_accuracy(f"<answer>{f}</answer>", r["answer"]) for f, r in zip(finals, rows))
    assert not any(
        math_accuracy(f"<answer>{int(float(f)) + 1}</answer>", r["answer"])
        for f, r in zip(finals[:50], rows)
    )


def test_math500_answers_verify_against_their_solutions():
    rows = get_task("math500").dataset("test")[::25]  # 20 problems across subjects
    with RewardRunner([("math", 1.0)], timeout=10) as runner:
        res = runner.score(
            [f"<answer>{r['answer']}</answer>" for r in rows],
            [{"answer": r["solution"]} for r in rows],
        )
    assert res.scores[:, 0].tolist() == [1.0] * len(rows)
    with pytest.raises(DataError, match="'math500' has no train file"):
        get_task("math500").dataset("train")


@pytest.mark.parametrize(
    "name,key", [("math500", "answer"), ("aime24", "question"), ("amc23", "question")]
)
def test_a_named_column_is_never_replaced_by_the_fallback(tmp_path, name, key):
    """math500 falls back to the worked solution, the contests to "question", only when the user named no
    column: a typo in answer= / question= is the one-line error (it silently graded against the solution), and
    naming the question column works (it was a TypeError)."""
    path = tmp_path / "copy.jsonl"
    path.write_text(
        json.dumps({"problem": "1+1?", "question": "1+1?", "answer": "2", "solution": "2"}) + "\n"
    )
    with pytest.raises(DataError, match=f"no column 'typo' for field '{key}'"):
        get_task(name, path=str(path), **{key: "typo"}).dataset("test")
    assert get_task(name, path=str(path), question="problem").dataset("test")[0]["answer"] == "2"


def test_gsm8k_with_a_path_is_still_the_file_task(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    assert get_task("gsm8k", path=str(path)).dataset("train")[0]["answer"] == "#### 2"
    assert get_task("gsm8k").paths["train"] == "openai/gsm8k"  # train from the hub, config main
    assert get_task("gsm8k").config == "main"
    local = get_task("gsm8k", train=str(path))  # a local train file keeps the shipped test split
    assert local.dataset("train")[0]["answer"] == "#### 2"
    assert len(local.dataset("test")) == 1319


@pytest.mark.parametrize("name", ["aime24", "amc23"])
def test_contests_from_a_local_copy(tmp_path, name):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in AIME))
    rows = get_task(name, path=str(path)).dataset("test")
    assert [r["question"] for r in rows] == [r["problem"] for r in AIME]
    assert math_accuracy("<answer>24</answer>", rows[0]["answer"]) == 1.0


def test_amc23_in_the_hub_layout(tmp_path):
    """math-ai/amc23 names the column "question" and stores answers as floats (27.0)."""
    datasets = pytest.importorskip("datasets")
    rows = [{"id": 0, "question": "How many miles from A?", "answer": 27.0, "url": "u"}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(tmp_path / "amc")
    got = get_task("amc23", path=str(tmp_path / "amc")).dataset("test")
    assert got[0]["question"] == "How many miles from A?"
    assert math_accuracy("<answer>27</answer>", got[0]["answer"]) == 1.0


@pytest.mark.parametrize(
    "name,hub", [("aime24", "HuggingFaceH4/aime_2024"), ("amc23", "math-ai/amc23")]
)
def test_contests_without_a_copy_say_where_to_get_them(monkeypatch, name, hub):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError(f"Couldn't reach '{hub}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as e:
        get_task(name).dataset("test")
    msg = str(e.value)
    assert "\n" not in msg and hub in msg and "task.options.path=FILE" in msg
    assert "states no licence" in msg and "hub cannot be reached" in msg
