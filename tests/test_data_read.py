"""The one reader (aha.data.read) for RL tasks and SFT data: `datasets` directories and hub-style datasets with a
config and split (offline: a save_to_disk fixture and a local dataset folder), one-line errors for failed hub
loads, bytes that are not UTF-8, oversized rows; TRL's conversational prompts and verl's parquet layout."""

import json

import pytest

from aha.data import get_task
from aha.data.read import DataError, hub_error, read_rows
from aha.data.sft import read_rows as sft_read_rows

datasets = pytest.importorskip("datasets")

GSM = [
    {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"},
    {"question": "A box holds 4 pens. How many in 2 boxes?", "answer": "4*2=8\n#### 8"},
]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and a private cache: what `datasets` does on a machine without the hub."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def hub_style_folder(root):
    """A dataset laid out as on the hub: configs main/socratic declared in the README, splits as files."""
    for config in ("main", "socratic"):
        (root / config).mkdir(parents=True)
        for split, rows in (("train", GSM), ("test", GSM[:1])):
            tagged = [{**r, "question": f"[{config}] {r['question']}"} for r in rows]
            (root / config / f"{split}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in tagged)
            )
    card = ["---", "configs:"]
    for config in ("main", "socratic"):
        card += [f"- config_name: {config}", "  data_files:"]
        card += [f"  - split: {s}\n    path: {config}/{s}.jsonl" for s in ("train", "test")]
    (root / "README.md").write_text("\n".join(card + ["---", ""]))
    return str(root)


def test_saved_dataset_directory_for_rl_and_sft(tmp_path, offline):
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(GSM), "test": datasets.Dataset.from_list(GSM[:1])}
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    task = get_task("gsm8k", path=str(tmp_path / "saved"))
    assert [r["answer"] for r in task.dataset("train")] == [r["answer"] for r in GSM]
    assert len(task.dataset("test")) == 1
    assert sft_read_rows(str(tmp_path / "saved"), "test") == GSM[:1]
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: train, test\)"):
        read_rows(str(tmp_path / "saved"), split="validation")


def test_config_and_split_of_a_hub_style_dataset(tmp_path, offline):
    path = hub_style_folder(tmp_path / "gsm8k")
    task = get_task("file", path=path, config="socratic")
    assert task.dataset("train")[0]["question"].startswith("[socratic] Tom")
    assert len(task.dataset("test")) == 1
    # aha's test split read from the source's train split (AIME on the hub keeps its problems in "train")
    remapped = get_task("file", path=path, config="main", test_split="train")
    assert len(remapped.dataset("test")) == 2
    assert sft_read_rows(path, "test", "main")[0]["question"].startswith("[main] Tom")
    # the same source through the SFT stage's config key
    from aha.config import load_config
    from aha.train.sft_config import SFTConfig

    cfg = load_config(SFTConfig, None, [f"data.path=[{path}]", "data.config=main"])
    assert cfg.data.config == "main"


@pytest.mark.parametrize(
    "options,message",
    [
        ({}, r"has several configs \['main', 'socratic'\]; choose one with config=NAME"),
        (
            {"config": "nope"},
            r"BuilderConfig 'nope' not found.*choose one of them with config=NAME",
        ),
        (
            {"config": "main", "test_split": "validation"},
            r"Unknown split \"validation\".*test_split=",
        ),
    ],
)
def test_a_failed_load_is_one_line(tmp_path, offline, options, message):
    path = hub_style_folder(tmp_path / "gsm8k")
    with pytest.raises(DataError, match=message) as e:
        get_task("file", path=path, **options).dataset("test")
    assert "\n" not in str(e.value)


def test_hub_without_network_and_unknown_ids(monkeypatch, offline):
    with pytest.raises(DataError, match="hub cannot be reached") as e:
        read_rows("openai/gsm8k", config="main", split="test")
    assert "\n" not in str(e.value) and "'openai/gsm8k' (config 'main', split 'test')" in str(
        e.value
    )

    def not_found(*a, **k):
        raise datasets.exceptions.DatasetNotFoundError("Dataset 'nobody/nothing' doesn't exist")

    monkeypatch.setattr(datasets, "load_dataset", not_found)
    with pytest.raises(DataError, match="no such dataset on the Hugging Face hub"):
        read_rows("hf:nobody/nothing")
    assert "datasets could not load it (RuntimeError: boom)" in str(
        hub_error("x/y", None, "train", RuntimeError("boom\nmore"), hub=True)
    )


def test_not_utf8_names_the_row(tmp_path):
    good = json.dumps({"question": "a", "answer": "1"}).encode()
    (tmp_path / "latin.jsonl").write_bytes(
        good + b"\n" + good + b"\n" + b'{"question": "caf\xe9"}\n'
    )
    with pytest.raises(DataError, match=r"latin\.jsonl: row 3: byte 0xe9 is not UTF-8; re-encode"):
        get_task("jsonl", path=str(tmp_path / "latin.jsonl")).dataset("train")
    (tmp_path / "latin.csv").write_bytes(b"question,answer\na,1\ncaf\xe9,2\n")
    with pytest.raises(DataError, match=r"latin\.csv: line 3: byte 0xe9"):
        read_rows(str(tmp_path / "latin.csv"))


def test_oversized_rows_are_refused(tmp_path):
    rows = [{"question": "short", "answer": "1"}, {"question": "x" * 3000, "answer": "2"}]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DataError, match=r"big\.jsonl: row 2 holds 0\.0 MB of text \(limit 0\.002 MB\)"
    ):
        get_task("jsonl", path=str(path), max_row_mb=0.002).dataset("train")
    assert (
        len(get_task("jsonl", path=str(path)).dataset("train")) == 2
    )  # the default limit is 16 MB


def test_trl_conversational_prompt_column(tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": "What is 2+2?"}], "solution": "4"},
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is 3+3?"}]},
            ],
            "solution": "6",
        },
    ]
    path = tmp_path / "trl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = get_task("jsonl", path=str(path), question="prompt", answer="solution").dataset("test")
    assert [r["question"] for r in got] == ["What is 2+2?", "What is 3+3?"]
    assert [r["answer"] for r in got] == ["4", "6"] and got[1]["system"] == "Be brief."
    multi = {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps({**multi, "solution": "1"}) + "\n")
    with pytest.raises(
        DataError, match=r"row 1, column 'prompt': the prompt has turns \['user', 'a"
    ):
        get_task("jsonl", path=str(path), question="prompt", answer="solution").dataset("test")


def test_verl_parquet_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from aha.rewards import math_accuracy

    rows = [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"Q{i}: 20+{i}? Let's think step by step."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(20 + i)},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    got = get_task("verl", path=str(tmp_path / "{split}.parquet")).dataset("train")
    assert [r["question"] for r in got] == [r["prompt"][0]["content"] for r in rows]
    assert [r["answer"] for r in got] == ["20", "21", "22"] and got[0][
        "data_source"
    ] == "openai/gsm8k"
    assert math_accuracy("<think>x</think><answer>21</answer>", got[1]["answer"]) == 1.0


def test_unknown_task_option_is_one_line():
    with pytest.raises(
        DataError, match=r"task 'jsonl': unknown option 'pth'; options: path, train"
    ):
        get_task("jsonl", pth="x.jsonl")
