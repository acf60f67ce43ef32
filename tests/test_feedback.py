"""Feedback on long work: a line every ~10 s while a phase runs, the held-out figures before -> after (step 0 is
evaluated and logged), a resumed run naming the keys that changed, W&B continuing the same run with sample
tables (a fake wandb module, no network), no library noise on a save, and each command's last lines saying
what it measured and where it wrote."""

import json
import sys
import time
import types
import warnings
from pathlib import Path

import pytest

from aha.cli import main
from aha.config import config_changes, load_config
from aha.eval.headline import headline, headline_text
from aha.progress import Heartbeat
from aha.train.config import TrainConfig
from aha.train.grpo import train

TINY = [
    "model.path=tiny-random",
    "task.name=arithmetic",
    "sampling.group_size=2",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=4",
    "sampling.max_new_tokens=6",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.num_workers=1",
    "eval.limit=2",
    "eval.k=2",
    "eval.sampling.max_new_tokens=4",
]


def rows(run):
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_heartbeat_speaks_while_a_phase_runs_and_not_after():
    said = []
    with Heartbeat("eval", said.append, every=0.05, status="sampling 8 problems x 4") as hb:
        time.sleep(0.3)
        hb.update("eval: generated 4/8 problems")
        time.sleep(0.3)
    n = len(said)
    time.sleep(0.2)
    assert len(said) == n and 3 <= n <= 14  # ~one line per 0.05 s, none after the phase
    assert said[0].startswith("eval: sampling 8 problems x 4 (")
    assert said[-1].startswith("eval: generated 4/8 problems (")  # the label is not repeated
    quiet = []
    with Heartbeat("eval", quiet.append, every=10.0):
        time.sleep(0.05)  # a quick phase prints nothing
    with Heartbeat("eval", None, every=0.01):  # no log: no thread, no output
        time.sleep(0.05)
    assert quiet == []


def test_headline_from_each_kind_of_run(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.json").write_text(
        json.dumps({"pass1_before": 0.419, "pass1_after": 0.904, "pass1_before_ci": [0.38, 0.46]})
    )
    assert headline_text(demo) == (
        "held-out pass@1: 0.419 [0.380, 0.460] -> 0.904 (before -> after training)"
    )
    tr = tmp_path / "train"
    tr.mkdir()
    lines = [
        {"step": 0, "eval/pass1": 0.25, "eval/pass1_lo": 0.1, "eval/pass1_hi": 0.4},
        {"step": 1, "reward/mean": 0.5},
        {
            "step": 2,
            "reward/mean": 0.6,
            "eval/pass1": 0.5,
            "eval/pass1_lo": 0.3,
            "eval/pass1_hi": 0.7,
        },
        {
            "step": 2,
            "reward/mean": 0.6,
            "eval/pass1": 0.75,
        },  # a resumed run re-logged step 2: it wins
    ]
    (tr / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 3, "re'
    )
    assert headline_text(tr) == "held-out pass@1: 0.250 [0.100, 0.400] -> 0.750 (step 0 -> 2)"
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "results.json").write_text(
        json.dumps(
            {"n_problems": 3, "k": 4, "metrics": {"pass1": 0.5}, "ci": {"pass1": [0.2, 0.8]}}
        )
    )
    assert headline_text(ev) == "pass@1 (3 problems x 4 samples): 0.500 [0.200, 0.800]"
    assert headline(tmp_path) is None and headline_text(tmp_path) == ""


def test_config_changes_names_each_changed_leaf():
    old = {"optim": {"lr": 1e-5, "betas": [0.9, 0.99]}, "steps": 10, "resume": False, "gone": 1}
    new = {"optim": {"lr": 3e-5, "betas": [0.9, 0.99]}, "steps": 20, "resume": True, "added": 2}
    assert config_changes(old, new) == (
        "added: (unset) -> 2; gone: 1 -> (unset); optim.lr: 1e-05 -> 3e-05; steps: 10 -> 20"
    )
    assert config_changes(old, old) == ""
    many = config_changes(
        {f"k{i}": i for i in range(15)}, {f"k{i}": -i - 1 for i in range(15)}, limit=3
    )
    assert many.endswith("; and 12 more") and many.count("->") == 3


def test_step0_eval_resume_diff_and_a_quiet_save(tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(load_config(TrainConfig, None, [*TINY, "steps=1", f"out={tmp_path}"]))
    assert not [w for w in caught if "torch.distributed" in str(w.message)], caught
    first = rows(tmp_path)
    assert [r["step"] for r in first] == [0, 1]  # the held-out curve starts at step 0
    assert "eval/pass1" in first[0] and "reward/mean" not in first[0]
    assert {"eval/pass1_lo", "eval/pass1_hi"} <= set(first[0])  # the interval, for the headline
    out = capsys.readouterr().out
    assert "step 0/1 | held-out pass@1" in out and "Writing model shards" not in out
    train(
        load_config(
            TrainConfig, None, [*TINY, "steps=2", "optim.lr=3e-6", "resume=true", f"out={tmp_path}"]
        )
    )
    out = capsys.readouterr().out
    assert (
        "resume: the config changed since the run started: optim.lr: 1e-06 -> 3e-06; steps: 1 -> 2"
        in out
    )
    assert [r["step"] for r in rows(tmp_path)] == [0, 1, 2]  # no second step-0 evaluation on resume
    # a run saved by an older aha: its config.yaml lacks keys added since (they take their defaults)
    import yaml

    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for item in saved["rewards"]["funcs"]:
        del item["chunk"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    again = [*TINY, "steps=3", "optim.lr=3e-6", "resume=true", f"out={tmp_path}"]
    train(load_config(TrainConfig, None, again))
    out = capsys.readouterr().out
    assert "resume: the config changed since the run started: steps: 2 -> 3" in out, out


class FakeRun:
    def __init__(self, **kw):
        self.kw, self.id, self.logged, self.finished = kw, kw["id"], [], False

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    def init(**kw):
        runs.append(FakeRun(**kw))
        return runs[-1]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Table=Table))
    return runs


def test_wandb_resumes_the_same_run_and_logs_sample_tables(tmp_path, fake_wandb):
    extra = ["logging.wandb=true", "logging.samples_every=1", "eval.limit=0", f"out={tmp_path}"]
    train(load_config(TrainConfig, None, [*TINY, *extra, "steps=1"]))
    (run,) = fake_wandb
    assert run.kw["resume"] == "allow" and run.finished
    assert (tmp_path / "wandb_run_id").read_text() == run.id
    tables = [(s, d["samples"]) for s, d in run.logged if "samples" in d]
    assert len(tables) == 1 and tables[0][0] == 1
    table = tables[0][1]
    assert table.columns == ["step", "prompt", "completion", "reward"] and len(table.data) == 2
    assert all(r[0] == 1 and isinstance(r[1], str) and isinstance(r[3], float) for r in table.data)
    assert any("reward/mean" in d for _, d in run.logged)
    train(load_config(TrainConfig, None, [*TINY, *extra, "steps=2", "resume=true"]))
    assert fake_wandb[1].id == run.id  # the same W&B run continues
    train(
        load_config(TrainConfig, None, [*TINY, *extra, "steps=1", "overwrite=true"])
    )  # a fresh run: a new W&B run
    assert fake_wandb[2].id != run.id
    assert (tmp_path / "wandb_run_id").read_text() == fake_wandb[2].id


def test_train_and_eval_end_with_their_figures_and_where_they_wrote(tmp_path, capsys):
    assert (
        main(
            ["train", "grpo", *TINY, "steps=1", "checkpoint.save_every=0", f"out={tmp_path / 'r'}"]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("held-out pass@1: ") and "(step 0 -> 1)" in out[-2]
    assert (
        out[-1]
        == f"run directory: {tmp_path / 'r'} (metrics.jsonl, checkpoints/); plots: aha report {tmp_path / 'r'}"
    )
    ev = tmp_path / "ev"
    args = [
        "--model",
        "tiny-random",
        "--task",
        "arithmetic",
        "--limit",
        "2",
        "--k",
        "2",
        "--out",
        str(ev),
    ]
    assert main(["eval", *args, "sampling.max_new_tokens=4", "n_boot=10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == f"eval: wrote {ev / 'results.json'}, {ev / 'samples.jsonl'}"
    assert out[-2].startswith("pass@1 (2 problems x 2 samples): ")
    assert out[-1] == f"report: {ev / 'report' / 'index.html'}"
    assert main(["report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("held-out pass@1: ") and out[1].startswith("report: ")
