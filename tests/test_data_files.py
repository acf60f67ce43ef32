"""File tasks (JSONL/JSON/CSV/parquet/datasets), presets, column mapping, one-line errors, the gym adapter."""

import json
import sys
import types
from pathlib import Path

import pytest

from aha.data import get_task
from aha.rewards import RewardRunner, math_accuracy
from aha.rewards.math import reference_answer

FIX = Path(__file__).parent / "fixtures"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_preset_rows_verify_against_their_solutions():
    rows = get_task("gsm8k", path=str(FIX / "gsm8k_sample.jsonl")).dataset("test")
    assert len(rows) == 20 and rows[0]["question"].startswith("Janet")
    for row in rows:
        final = row["answer"].rsplit("####", 1)[1].strip()
        assert math_accuracy(f"<think>r</think><answer>{final}</answer>", row["answer"]) == 1.0
        assert (
            math_accuracy(f"<think>r</think><answer>{int(final) + 1}</answer>", row["answer"])
            == 0.0
        )


def test_math_preset_rows_verify_through_the_runner():
    rows = get_task("math", path=str(FIX / "math500_sample.jsonl")).dataset("test")
    assert len(rows) == 20 and all(r["question"] == r["problem"] for r in rows)
    # each reference answer is accepted against its own worked solution (the \boxed{} in it)
    comps = [f"<think>r</think><answer>{r['answer']}</answer>" for r in rows]
    with RewardRunner([("math", 1.0)], timeout=10) as runner:
        res = runner.score(comps, [{"answer": r["solution"]} for r in rows])
        shifted = runner.score(comps[1:] + comps[:1], [{"answer": r["solution"]} for r in rows])
    assert res.scores[:, 0].tolist() == [1.0] * 20
    assert shifted.scores[:, 0].sum() <= 1  # another problem's answer is (almost always) wrong


def test_math_preset_falls_back_to_the_solution(tmp_path):
    src = [json.loads(line) for line in (FIX / "math500_sample.jsonl").read_text().splitlines()][:3]
    path = write_jsonl(
        tmp_path / "m.jsonl", [{"problem": r["problem"], "solution": r["solution"]} for r in src]
    )
    rows = get_task("math", path=path).dataset("train")
    assert [reference_answer(r["answer"]) for r in rows] == [
        reference_answer(r["solution"]) for r in src
    ]


def test_column_mapping_and_split_paths(tmp_path):
    write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": "1+1?", "target": 2}, {"prompt": "2+2?", "target": 4}]
    )
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "3+3?", "target": 6}])
    task = get_task(
        "jsonl", path=str(tmp_path / "{split}.jsonl"), question="prompt", answer="target"
    )
    assert task.accuracy_reward == "math"
    assert task.dataset("train") == [
        {"prompt": "1+1?", "target": 2, "question": "1+1?", "answer": 2},
        {"prompt": "2+2?", "target": 4, "question": "2+2?", "answer": 4},
    ]
    assert [r["answer"] for r in task.dataset("test")] == [6]
    only_train = get_task(
        "file", train=str(tmp_path / "train.jsonl"), question="prompt", answer="target", limit=1
    )
    assert len(only_train.dataset("train")) == 1
    with pytest.raises(ValueError, match="no test file"):
        only_train.dataset("test")


def test_csv_and_json(tmp_path):
    (tmp_path / "c.csv").write_text('q,nums,t\n"Make 7, please","[3, 4]",7\n')
    task = get_task(
        "csv",
        path=str(tmp_path / "c.csv"),
        question="q",
        accuracy_reward="countdown",
        columns={"numbers": "nums", "target": "t"},
    )
    row = task.dataset("train")[0]
    assert row["question"] == "Make 7, please" and row["numbers"] == [3, 4] and row["target"] == "7"
    (tmp_path / "j.json").write_text(json.dumps([{"question": "Q", "answer": "A"}]))
    assert (
        get_task("json", path=str(tmp_path / "j.json"), accuracy_reward="exact").dataset("test")[0][
            "answer"
        ]
        == "A"
    )


ERRORS = [  # (file name, content, options, message regex)
    (
        "bad.jsonl",
        '{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n',
        {},
        r"bad\.jsonl: row 2: invalid JSON",
    ),
    (
        "list.jsonl",
        '{"question": "a", "answer": "1"}\n[1, 2]\n',
        {},
        r"list\.jsonl: row 2: expected a JSON object",
    ),
    (
        "noq.jsonl",
        '{"prompt": "a", "answer": "1"}\n',
        {},
        r"no column 'question' for field 'question' "
        r"\(columns: answer, prompt\); map one with question=",
    ),
    ("noans.jsonl", '{"question": "a"}\n', {}, r"no column 'answer'"),
    (
        "rowq.jsonl",
        '{"question": "a", "answer": "1"}\n{"question": 7, "answer": "1"}\n',
        {},
        r"rowq\.jsonl: row 2, column 'question': expected non-empty text",
    ),
    (
        "rowmiss.jsonl",
        '{"question": "a", "answer": "1"}\n{"question": "b"}\n',
        {},
        r"rowmiss\.jsonl: row 2, column 'answer': missing; give every row a value there",
    ),
    (
        "rownull.jsonl",
        '{"question": "a", "answer": "1"}\n{"question": "b", "answer": null}\n',
        {},
        r"rownull\.jsonl: row 2, column 'answer': empty value; fix or remove the row",
    ),
    (
        "rowblank.jsonl",
        '{"question": "a", "answer": "1"}\n{"question": "b", "answer": "  "}\n',
        {},
        r"rowblank\.jsonl: row 2, column 'answer': empty value; fix or remove the row",
    ),
    ("empty.jsonl", "\n", {}, r"empty\.jsonl: no rows"),
    ("cells.csv", "question,answer\na,1\nb,2,3\n", {}, r"cells\.csv: row 2: 3 cells for 2 columns"),
    (
        "cd.csv",
        'question,numbers,target\na,"[1, 2",3\n',
        {"accuracy_reward": "countdown"},
        r"cd\.csv: row 1, column 'numbers': looks like JSON",
    ),
    ("x.txt", "hello", {}, r"cannot tell the format"),
]


@pytest.mark.parametrize("name,content,options,message", ERRORS)
def test_one_line_errors(tmp_path, name, content, options, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        get_task("file", path=str(tmp_path / name), **options).dataset("train")
    assert "\n" not in str(e.value)


def test_missing_file_and_path(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        get_task("jsonl", path=str(tmp_path / "nope.jsonl")).dataset("train")
    with pytest.raises(ValueError, match="needs a file: pass path="):
        get_task("math")


def test_parquet_and_datasets_need_their_packages(tmp_path):
    rows = [{"question": "Q", "answer": "1"}]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (tmp_path / "p.parquet").write_bytes(b"PAR1")
        with pytest.raises(ValueError, match="parquet needs pyarrow"):
            get_task("parquet", path=str(tmp_path / "p.parquet")).dataset("train")
    else:
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
        assert get_task("parquet", path=str(tmp_path / "p.parquet")).dataset("train") == rows
    try:
        import datasets  # noqa: F401
    except ImportError:
        (tmp_path / "dsdir").mkdir()
        with pytest.raises(ValueError, match="needs the datasets package"):
            get_task("file", path=str(tmp_path / "dsdir")).dataset("train")


class _FakeGymData(list):
    """Stands in for a reasoning_gym ProceduralDataset: question i+seed, answer (i+seed)*2."""

    def __init__(self, size, seed, scale=2):
        super().__init__(
            {
                "question": f"double {i % 50}?",
                "answer": str(i % 50 * scale),
                "metadata": {"x": i % 50},
            }
            for i in range(seed, seed + size)
        )

    def score_answer(self, answer, entry):
        return 1.0 if answer == entry["answer"] else 0.0


def test_gym_adapter_with_a_stand_in_package(monkeypatch):
    fake = types.ModuleType("reasoning_gym")
    fake.create_dataset = lambda name, size, seed, **config: _FakeGymData(size, seed, **config)
    fake.factory = types.SimpleNamespace(DATASETS={"doubling": None})
    monkeypatch.setitem(sys.modules, "reasoning_gym", fake)
    from aha.data.gym import _scorer, gym_reward

    _scorer.cache_clear()
    task = get_task("gym", dataset="doubling", train_size=20, test_size=10, scale=2)
    train, test = task.dataset("train"), task.dataset("test")
    assert len(test) == 10 and len(train) == 20
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    row = train[0]
    assert gym_reward(f"<answer>{row['answer']}</answer>", row["gym_entry"]) == 1.0
    assert gym_reward("<answer>-1</answer>", row["gym_entry"]) == 0.0
    assert gym_reward(row["answer"], row["gym_entry"]) == 0.0  # not inside the answer tags
    assert gym_reward("<answer>1</answer>", {"broken": True}) == 0.0
    with pytest.raises(ValueError, match="unknown reasoning-gym dataset 'nope'; valid: doubling"):
        get_task("gym", dataset="nope")


def test_gym_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import fails
    with pytest.raises(ValueError, match=r"pip install 'aha-rl\[gym\]'"):
        get_task("gym", dataset="leg_counting")
