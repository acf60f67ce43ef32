"""Errors before the model loads (issue 17 item 1): bad names, bad data and an unwritable out= stop `aha train`,
`sft`, `sample`, `eval` and `pipeline` with one stderr line and exit code 2, and the model loader is never
called. Each case runs the CLI in-process (aha.cli.main) with the loader replaced by one that fails the test."""

import json
import re

import pytest

from aha.cli import main

GOOD = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "answer": "4"}]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def cli(monkeypatch, capsys):
    """run(argv) -> (exit code, stderr lines); fails if the model (or a served model's tokenizer) loads."""
    loaded = []

    def loader(*a, **k):
        loaded.append(a)
        raise AssertionError("the model was loaded before the config and data were checked")

    monkeypatch.setattr("aha.models.load.load_model", loader)
    monkeypatch.setattr("aha.sample.engine.load_tokenizer", loader)

    def run(argv):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert not loaded
        return code, err

    return run


def files(tmp_path):
    """name -> path of each kind of broken data file."""
    good = json.dumps(GOOD[0])
    out = {
        "malformed": tmp_path / "malformed.jsonl",
        "noanswer": tmp_path / "noanswer.jsonl",
        "latin1": tmp_path / "latin1.jsonl",
        "empty": tmp_path / "empty.jsonl",
    }
    out["malformed"].write_text(f'{good}\n{{"question": "b", "answer": \n{good}\n')
    jsonl(out["noanswer"], [{"question": "a", "solution": "1"}])
    out["latin1"].write_bytes(good.encode() + b'\n{"question": "caf\xe9", "answer": "1"}\n')
    out["empty"].write_text("")
    return {k: str(v) for k, v in out.items()}


DATA_CASES = [  # (file, the one line's regex)
    ("malformed", r"malformed\.jsonl: row 2: invalid JSON"),
    ("noanswer", r"noanswer\.jsonl: no column 'answer' for field 'answer'"),
    ("latin1", r"latin1\.jsonl: row 2: byte 0xe9 is not UTF-8"),
    ("empty", r"empty\.jsonl: no rows"),
]


def task_args(command, path, tmp_path):
    out = f"out={tmp_path / 'run'}"
    task = ["task.name=jsonl", f"task.options.path={path}"]
    return {
        "train": ["train", *task, out],
        "eval": ["eval", "--task", "jsonl", f"task.options.path={path}", out],
        "sample": ["sample", *task, out],
        "pipeline": ["pipeline", "r1-zero", *task, out],
    }[command]


@pytest.mark.parametrize("command", ["train", "eval", "sample", "pipeline"])
@pytest.mark.parametrize("name,message", DATA_CASES)
def test_bad_task_data(cli, tmp_path, command, name, message):
    code, err = cli(task_args(command, files(tmp_path)[name], tmp_path))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"aha {command}: ") and re.search(message, err[0]), err


@pytest.mark.parametrize("name,message", [c for c in DATA_CASES if c[0] != "noanswer"])
def test_bad_sft_data(cli, tmp_path, name, message):
    code, err = cli(["sft", f"data.path=[{files(tmp_path)[name]}]", f"out={tmp_path / 'run'}"])
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err


def test_sft_rows_in_no_known_format(cli, tmp_path):
    path = jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "c"}])
    code, err = cli(["sft", f"data.path=[{path}]", f"out={tmp_path / 'run'}"])
    assert code == 2 and len(err) == 1
    assert "x.jsonl: row 2: neither 'messages', 'completion' nor 'text'" in err[0]


@pytest.mark.parametrize(
    "completion,message",
    [
        ({"text": "b"}, "'completion' is a dict, not text"),
        (
            [{"role": "assistant", "content": "b"}],
            "'completion' is a list, not text (a message list needs a message-list prompt)",
        ),
        (True, "'completion' is a bool, not text"),
        (float("nan"), "'completion' is a float, not text"),
        (None, "'completion' is null; give the completion text"),
    ],
)
def test_sft_completion_that_is_not_text(cli, tmp_path, completion, message):
    """A dict or list completion under a string prompt was trained on as its Python repr."""
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": completion}]
    path = jsonl(tmp_path / "x.jsonl", rows)
    code, err = cli(["sft", f"data.path=[{path}]", f"out={tmp_path / 'run'}"])
    assert code == 2 and len(err) == 1 and "x.jsonl: row 2: " + message in err[0], err


def test_sft_numeric_and_chat_completions_pass_the_check():
    from aha.data.sft import RowFormat, check_rows

    chat = [{"role": "user", "content": "2+3?"}]
    rows = [
        {"prompt": "2+3=", "completion": 5},  # an answer column of numbers: its text
        {"prompt": chat, "completion": "5"},
        {"prompt": chat, "completion": [{"role": "assistant", "content": "5"}]},
    ]
    check_rows(rows, RowFormat(), "x.jsonl")


NAME_CASES = [  # (overrides, the key named, message)
    (["task.name=countdwn"], "task.name", "unknown task 'countdwn'"),
    (["task.template=r1"], "task.template", "unknown template 'r1'"),
    (["rewards.funcs=[{name: acuracy}]"], "rewards.funcs[0].name", "unknown reward 'acuracy'"),
    (
        ["rewards.funcs=[{name: accuracy}, {name: 'no_such_module:fn'}]"],
        "rewards.funcs[1].name",
        "cannot import reward 'no_such_module:fn'",
    ),
    (["task.options={seeed: 1}"], "task.options", "seeed"),
    (
        ["rewards.funcs=[{name: format, kwargs: {min_thnk_chars: 8}}]"],
        "rewards.funcs[0].kwargs",
        "reward 'format' takes no option min_thnk_chars; its options: min_think_chars",
    ),
]


def test_a_user_rewards_options_are_checked_against_its_signature(cli, tmp_path, monkeypatch):
    (tmp_path / "myrew.py").write_text(
        "def short(completions, max_len=10):\n"
        "    return [float(len(c) <= max_len) for c in completions]\n"
        "def loose(completions, **kwargs):\n"
        "    return [0.0 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = f"out={tmp_path / 'run'}"
    funcs = "rewards.funcs=[{name: 'myrew:short', kwargs: {max_lenn: 5}}]"
    code, err = cli(["train", funcs, out])
    assert code == 2 and len(err) == 1, err
    assert "'rewards.funcs[0].kwargs'" in err[0], err
    assert "reward 'myrew:short' takes no option max_lenn; its options: max_len" in err[0], err
    # a function that takes **kwargs takes any option
    from aha.preflight import check_reward_kwargs

    check_reward_kwargs("myrew:loose", {"anything": 1}, None, "rewards.funcs[0].kwargs")
    check_reward_kwargs("myrew:short", {"max_len": 3}, None, "rewards.funcs[0].kwargs")


@pytest.mark.parametrize("overrides,key,message", NAME_CASES)
def test_bad_names_in_train(cli, tmp_path, overrides, key, message):
    code, err = cli(["train", *overrides, f"out={tmp_path / 'run'}"])
    assert code == 2 and len(err) == 1, err
    assert f"config error at '{key}'" in err[0] and message in err[0], err


def test_bad_names_in_sample_eval_and_pipeline(cli, tmp_path):
    out = f"out={tmp_path / 'run'}"
    code, err = cli(["sample", "verifier=mth", out])
    assert code == 2 and len(err) == 1 and "'verifier': unknown reward 'mth'" in err[0]
    code, err = cli(["eval", "--task", "math5000", out])
    assert code == 2 and len(err) == 1 and "'task.name': unknown task 'math5000'" in err[0]
    code, err = cli(["pipeline", "r1-zero", "rl.rewards.funcs=[{name: tagg}]", out])
    assert code == 2 and len(err) == 1 and "'rl.rewards.funcs[0].name'" in err[0]


@pytest.mark.parametrize("command", ["train", "eval", "sample", "sft", "pipeline"])
def test_unwritable_out(cli, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    args = {
        "train": ["train"],
        "eval": ["eval", "--task", "countdown"],
        "sample": ["sample"],
        "sft": [
            "sft",
            f"data.path=[{jsonl(tmp_path / 'd.jsonl', [{'prompt': 'a', 'completion': 'b'}])}]",
        ],
        "pipeline": ["pipeline", "r1-zero"],
    }[command]
    code, err = cli([*args, f"out={blocker / 'run'}"])
    assert code == 2 and len(err) == 1, err
    assert (
        f"config error at 'out': cannot create {blocker / 'run'}: {blocker} is not a directory"
        in err[0]
    )
    assert not (tmp_path / "run").exists()


def test_a_50_mb_row_is_one_line_before_the_model(cli, tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps(GOOD[0]) + "\n")
        f.write(json.dumps({"question": "x" * (50 * 2**20), "answer": "1"}) + "\n")
    code, err = cli(task_args("train", str(path), tmp_path))
    assert code == 2 and len(err) == 1
    assert "huge.jsonl: row 2 holds 50.0 MB of text (limit 16 MB)" in err[0]


def test_pipeline_stage_data_is_named_by_its_key(cli, tmp_path):
    good = jsonl(
        tmp_path / "cold.jsonl", [{"question": "1+1?", "completion": "<answer>2</answer>"}]
    )
    out = f"out={tmp_path / 'run'}"
    code, err = cli(
        ["pipeline", "r1", f"cold_start.data.path=[{good}]", "cold_start.data.template=r2", out]
    )
    assert code == 2 and len(err) == 1
    assert "config error at 'cold_start.data.template': unknown template 'r2'" in err[0]
    bad = files(tmp_path)["malformed"]
    code, err = cli(["pipeline", "r1", f"cold_start.data.path=[{bad}]", out])
    assert code == 2 and len(err) == 1 and "malformed.jsonl: row 2: invalid JSON" in err[0]


def test_an_out_whose_folder_takes_nothing_is_one_line(tmp_path, monkeypatch):
    """Permission bits pass (root passes them; a read-only mount keeps them): the probe folder fails."""
    import tempfile

    from aha.config import ConfigError
    from aha.preflight import check_out

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(
        ConfigError, match="takes no new folder .Read-only file system.; choose another"
    ):
        check_out(str(tmp_path / "run"))
    monkeypatch.undo()
    check_out(str(tmp_path / "run"))  # a writable folder: passes, and leaves nothing behind
    assert list(tmp_path.iterdir()) == []


def test_sft_bad_rows_are_counted_in_one_line(cli, tmp_path):
    """Every bad row is found before training: the first named, the others counted, and an empty completion
    (nothing to train on) is one of them."""
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "  "}]
    rows += [{"prompt": "d"}] * 7
    path = jsonl(tmp_path / "x.jsonl", rows)
    code, err = cli(["sft", f"data.path=[{path}]", f"out={tmp_path / 'run'}"])
    assert code == 2 and len(err) == 1, err
    assert (
        "x.jsonl: row 2: 'completion' is empty; there is nothing to train on (drop the row)"
        in err[0]
    )
    assert "(7 more bad rows: 3, 4, 5, 6, 7, ...)" in err[0], err


def test_reward_options_from_the_config_reach_the_function():
    """rewards.funcs[].kwargs (it had only name and weight): e.g. the format reward's min_think_chars."""
    from aha.config import load_config
    from aha.data import get_task
    from aha.rewards import RewardRunner, RewardSpec
    from aha.train.config import TrainConfig
    from aha.train.rollout import reward_specs

    funcs = "rewards.funcs=[{name: format, kwargs: {min_think_chars: 50}}, {name: 'm:f', chunk: 0}]"
    cfg = load_config(TrainConfig, None, [funcs])
    specs = reward_specs(cfg, get_task("chain"))
    assert specs[0] == RewardSpec("format", 1.0, {"min_think_chars": 50}, chunk=8)
    assert specs[1].chunk == 0  # rewards.funcs[].chunk reaches the runner
    specs = specs[:1]
    text = "<think>a short thought</think><answer>1</answer>"
    with RewardRunner(specs, num_workers=0) as strict, RewardRunner([("format", 1.0)]) as plain:
        assert strict.score([text], [{}]).scores[0, 0] == 0.0  # 15 characters < 50
        assert plain.score([text], [{}]).scores[0, 0] == 1.0


def verl_rows(tmp_path, **changes):
    """A verl-layout JSONL file (the parquet layout's columns) whose second row takes `changes`."""
    rows = [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"20+{i}?"}],
            "reward_model": {"style": "rule", "ground_truth": str(20 + i)},
        }
        for i in range(2)
    ]
    rows[1].update(changes)
    return jsonl(tmp_path / "verl.jsonl", rows)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"data_source": "codecontests"}, "data_source 'codecontests' is code"),
        ({"data_source": "searchR1_nq"}, "data_source 'searchR1_nq' is search QA"),
        (
            {"data_source": "hiyouga/geometry3k"},
            "data_source 'hiyouga/geometry3k' asks about images",
        ),
        (
            {"reward_model": {"ground_truth": {"target": ["Paris"]}}},
            r"its ground truth is a dict \(keys target\)",
        ),
    ],
)
def test_verl_rows_the_math_verifier_cannot_score(cli, tmp_path, changes, message):
    """verl routes these rows to other scorers; aha's accuracy reward scored every completion 0, silently."""
    path = verl_rows(tmp_path, **changes)
    code, err = cli(
        ["train", "grpo", "task.name=verl", f"task.options.path={path}", f"out={tmp_path / 'r'}"]
    )
    assert code == 2 and len(err) == 1, err
    assert re.search(r"task 'verl', train split, row 2: " + message, err[0]), err
    assert "verl.utils.reward_score:default_compute_score" in err[0]


def test_verl_rows_with_their_own_reward_pass_the_check(monkeypatch, tmp_path):
    """Without the accuracy reward (verl's compute_score as the reward) such rows are the user's to score."""
    from aha.config import load_config
    from aha.preflight import preflight
    from aha.train.config import TrainConfig

    path = verl_rows(tmp_path, data_source="codecontests")
    args = [
        "task.name=verl",
        f"task.options.path={path}",
        f"out={tmp_path / 'r'}",
        "model.path=tiny-random",
    ]
    own = "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]"
    preflight("train", load_config(TrainConfig, None, [*args, own]))
    with pytest.raises(Exception, match="data_source 'codecontests' is code"):
        preflight(
            "train", load_config(TrainConfig, None, args)
        )  # the default rewards hold accuracy
    with pytest.raises(Exception, match="is code"):  # ... as does a held-out evaluation
        preflight("train", load_config(TrainConfig, None, [*args, own, "eval.limit=2"]))


def test_verl_list_ground_truth_is_any_of(tmp_path):
    from aha.data import get_task
    from aha.rewards import math_accuracy

    path = verl_rows(tmp_path, reward_model={"ground_truth": ["21", "21.0"]})
    rows = get_task("verl", path=path).dataset("train")
    assert rows[1]["answer"] == ["21", "21.0"]
    assert math_accuracy("<think>x</think><answer>21.0</answer>", rows[1]["answer"]) == 1.0
    assert math_accuracy("<think>x</think><answer>22</answer>", rows[1]["answer"]) == 0.0
    empty = verl_rows(tmp_path, reward_model={"ground_truth": []})
    with pytest.raises(Exception, match="row 2, column 'reward_model.ground_truth': empty value"):
        get_task("verl", path=empty).dataset("train")
