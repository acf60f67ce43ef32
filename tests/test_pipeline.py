"""The r1 pipeline end to end at toy size (cold-start SFT -> GRPO -> rejection sampling -> SFT -> GRPO), its
manifests and lineage, skipping finished stages, re-running a deleted one; r1-zero; distillation from a teacher
served over HTTP with the RL baseline.

The toy task: "Q7#<i>=" -> "<think>...</think><answer>7</answer>", verified by exact match. A random tiny model
never answers it; after the cold start it does, so rejection sampling keeps real verified traces. Texts have no
whitespace because a saved tiny-random tokenizer currently reloads without it (see notes/pipeline_requests.md).
"""

import json
import re
import time
from pathlib import Path

import pytest

from aha.cli import cmd_pipeline
from aha.config import ConfigError, load_config
from aha.data import TASKS, Task, register_task
from aha.pipelines import get_pipeline
from aha.pipelines.manifest import completed


class ToySeven(Task):
    name, accuracy_reward = "toy-seven", "exact"

    def dataset(self, split):
        return [
            {"question": f"Q7#{i}", "answer": "7"}
            for i in (range(10, 40) if split == "train" else range(40, 50))
        ]


if "toy-seven" not in TASKS:
    register_task("toy-seven")(ToySeven)

COLD = [
    {"question": f"Q7#{i}", "completion": "<think>itsseven</think><answer>7</answer>"}
    for i in range(10, 16)
]
TASK = ["task.name=toy-seven", "task.template={prompt}="]
RL = [
    "steps=2",
    "sampling.group_size=4",
    "batch.prompts_per_step=2",
    "batch.micro_batch_size=8",
    "sampling.max_new_tokens=48",
    "optim.lr=1e-3",
    "logging.progress=false",
    "logging.samples_every=0",
    "rewards.num_workers=1",
]
SFT = [
    "batch.batch_size=4",
    "batch.micro_batch_size=4",
    "data.max_length=64",
    "optim.lr=1e-2",
    "optim.schedule=constant",
    "logging.progress=false",
    "checkpoint.save_every=0",
]
EVAL = ["eval.limit=4", "eval.k=2", "eval.sampling.max_new_tokens=48"]


def over(prefix, items):
    return [f"{prefix}.{x}" for x in items]


def r1_overrides(tmp: Path):
    data = tmp / "cold.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in COLD))
    return [
        "model=tiny-random",
        f"out={tmp / 'r1'}",
        *TASK,
        *EVAL,
        f"cold_start.data.path={data}",
        "cold_start.steps=40",
        *over("cold_start", SFT),
        *over("rl", RL),
        "rl2.steps=1",
        *over("rl2", RL[1:]),
        "sample.num_prompts=4",
        "sample.k=4",
        "sample.m=2",
        "sample.prompts_per_call=2",
        "sample.sampling.max_new_tokens=48",
        "sample.progress=false",
        "sample.reward_workers=1",
        "sft.steps=40",
        *over("sft", SFT),
    ]


@pytest.fixture(scope="module")
def r1_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("r1")
    cls, run = get_pipeline("r1")
    cfg = load_config(cls, None, r1_overrides(tmp))
    t0 = time.perf_counter()
    summary = run(cfg)
    return tmp, cfg, summary, time.perf_counter() - t0


def manifest(tmp, stage):
    return json.loads((tmp / "r1" / stage / "manifest.json").read_text())


def test_r1_end_to_end_lineage_and_figures(r1_run):
    tmp, cfg, summary, seconds = r1_run
    stages = [(s["stage"], s["kind"]) for s in summary["stages"]]
    assert stages == [
        ("00-base", "eval"),
        ("01-cold-start", "sft"),
        ("02-rl", "rl"),
        ("03-sample", "sample"),
        ("04-sft", "sft"),
        ("05-rl", "rl"),
    ]
    m = {name: manifest(tmp, name) for name, _ in stages}
    assert all(
        x["status"] == "complete" and x["git"]["commit"] and x["versions"]["torch"]
        for x in m.values()
    )
    # lineage: every stage starts from the previous stage's output
    assert m["02-rl"]["inputs"]["model"]["path"] == m["01-cold-start"]["outputs"]["model"]
    assert m["02-rl"]["inputs"]["model"]["step"] == 40
    assert m["03-sample"]["inputs"]["model"]["path"] == m["02-rl"]["outputs"]["model"]
    assert m["04-sft"]["inputs"]["model"]["path"] == "tiny-random"  # sft_init=base, as R1
    sft_data = m["04-sft"]["inputs"]["data"]
    assert [d["path"] for d in sft_data] == [
        m["03-sample"]["outputs"]["data"],
        str(tmp / "cold.jsonl"),
    ]
    assert all(len(d["sha256"]) == 64 for d in sft_data)
    assert m["05-rl"]["inputs"]["model"]["path"] == m["04-sft"]["outputs"]["model"]
    assert m["02-rl"]["config"]["model"]["path"] == m["01-cold-start"]["outputs"]["model"]
    assert (
        m["02-rl"]["config"]["task"]["name"] == "toy-seven"
        and m["01-cold-start"]["config"]["data"]["template"] == "{prompt}="
    )
    # figures: the base model never answers; the cold start teaches the format and the answer
    base, cold = m["00-base"]["figures"]["eval"], m["01-cold-start"]["figures"]["eval"]
    assert base["format"] == 0 and base["pass1"] == 0
    assert cold["format"] >= 0.5 and cold["pass1"] >= 0.5
    assert m["01-cold-start"]["figures"]["loss_last"] < m["01-cold-start"]["figures"]["loss_first"]
    assert (
        m["04-sft"]["figures"]["eval"]["format"] >= 0.5
    )  # base + sampled traces: the format again
    assert m["02-rl"]["figures"]["steps"] == 2 and "reward/mean" in m["02-rl"]["figures"]["train"]
    # rejection sampling kept verified traces, with provenance
    rows = [json.loads(l) for l in Path(m["03-sample"]["outputs"]["data"]).read_text().splitlines()]
    stats = m["03-sample"]["figures"]["sample"]
    assert rows and len(rows) == stats["kept"] <= 2 * 4 and stats["samples"] == 16
    for r in rows:
        assert (
            r["completion"].endswith("<answer>7</answer>")
            and r["reward"] == 1.0
            and r["format"] == 1.0
        )
        assert (
            r["model"] == m["02-rl"]["outputs"]["model"]
            and r["step"] == 2
            and r["prompt"] == r["question"] + "="
        )
    assert (tmp / "r1" / "summary.json").is_file() and (
        tmp / "r1" / "summary.png"
    ).stat().st_size > 1000
    assert seconds < 150, seconds


def test_rerun_skips_complete_stages_and_redoes_a_deleted_one(r1_run, capsys):
    import shutil

    tmp, cfg, summary, _ = r1_run
    cls, run = get_pipeline("r1")
    before = {p: p.stat().st_mtime_ns for p in (tmp / "r1").rglob("manifest.json")}
    t0 = time.perf_counter()
    again = run(cfg)
    assert time.perf_counter() - t0 < 10
    assert {p: p.stat().st_mtime_ns for p in (tmp / "r1").rglob("manifest.json")} == before
    assert [s["figures"] for s in again["stages"]] == [s["figures"] for s in summary["stages"]]
    assert capsys.readouterr().out.count("complete, skipped") == 6
    shutil.rmtree(tmp / "r1" / "05-rl")
    again = run(cfg)
    assert completed(tmp / "r1" / "05-rl") is not None
    assert "05-rl: running" in capsys.readouterr().out
    changed = load_config(cls, None, r1_overrides(tmp) + ["sft.optim.lr=5e-3"])
    with pytest.raises(
        ConfigError, match=r"stage 04-sft finished with other settings \(optim.lr: "
    ) as e:
        run(changed)  # a finished stage is neither silently kept nor silently redone
    assert f"delete {tmp / 'r1' / '04-sft'} to run it again" in str(e.value)
    quiet = load_config(cls, None, r1_overrides(tmp) + ["sft.logging.progress=false"])
    assert (
        "complete, skipped" in (run(quiet), capsys.readouterr().out)[1]
    )  # a run-time knob may change


def test_stages_finished_by_an_older_aha_are_kept(r1_run, capsys):
    """A key added to the config since a stage ran (here rewards.funcs[].chunk and data.text_key, removed from
    the recorded configs) takes its default: an upgrade alone is not "other settings"."""
    tmp, cfg, _, _ = r1_run
    cls, run = get_pipeline("r1")
    for path in (tmp / "r1").rglob("manifest.json"):
        m = json.loads(path.read_text())
        config = m.get("config") or {}
        for item in (config.get("rewards") or {}).get("funcs") or []:
            item.pop("chunk", None)
        (config.get("data") or {}).pop("text_key", None)
        path.write_text(json.dumps(m))
    run(cfg)
    assert capsys.readouterr().out.count("complete, skipped") == 6
    changed = load_config(
        cls, None, r1_overrides(tmp) + ["rl.rewards.funcs=[{name: format, chunk: 4}]"]
    )
    with pytest.raises(
        ConfigError, match=r"stage 02-rl finished with other settings \(rewards.funcs: "
    ):
        run(changed)


def test_a_copied_pipeline_folder_skips_its_finished_stages(r1_run, capsys):
    """The manifests record the pipeline folder as the run gave it: a copy (or a moved folder) run with out= its new
    place skips every finished stage there and hands on its own outputs, not the original's."""
    import shutil

    tmp, _, summary, _ = r1_run
    copy = tmp / "elsewhere" / "r1-copy"
    shutil.copytree(tmp / "r1", copy)
    cls, run = get_pipeline("r1")
    cfg = load_config(cls, None, r1_overrides(tmp) + [f"out={copy}"])
    again = run(cfg)
    assert capsys.readouterr().out.count("complete, skipped") == 6
    assert [s["figures"] for s in again["stages"]] == [s["figures"] for s in summary["stages"]]
    paths = [v for s in again["stages"] for k, v in s["outputs"].items() if k != "note"]
    assert paths and all(str(p).startswith(str(copy)) for p in paths), paths
    m = completed(copy / "04-sft")
    assert m["root"] == str(copy) and m["config"]["out"].startswith(str(copy))


def test_r1_zero_and_cli(tmp_path, capsys):
    assert (
        cmd_pipeline(
            [
                "r1-zero",
                "model=tiny-random",
                f"out={tmp_path}",
                *TASK,
                "eval.limit=2",
                "eval.k=1",
                "eval.sampling.max_new_tokens=8",
                "eval.base=false",
                *over("rl", RL[:1] + ["steps=1"] + RL[2:]),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "01-rl" in out and "pass1" in out and (tmp_path / "summary.json").is_file()
    m = json.loads((tmp_path / "01-rl" / "manifest.json").read_text())
    assert m["figures"]["steps"] == 1 and "eval" in m["figures"]
    from aha.cli_args import UsageError

    with pytest.raises(UsageError, match="r1-zero|r1|distill"):
        cmd_pipeline(["r2"])
    with pytest.raises(ConfigError, match="cold_start.data.path"):
        cmd_pipeline(["r1", f"out={tmp_path / 'x'}"])


def test_distill_from_a_teacher_served_over_http(r1_run, tmp_path):
    from aha.models.load import load_model
    from aha.rollout import HFEngine
    from aha.serve import AhaServer

    tmp, *_ = r1_run
    teacher = manifest(tmp, "01-cold-start")["outputs"]["model"]
    model, tok = load_model(teacher, device="cpu")
    cls, run = get_pipeline("distill")
    with AhaServer(HFEngine(model.eval(), tok), tok, "teacher", port=0) as server:
        cfg = load_config(
            cls,
            None,
            [
                f"teacher={teacher}",
                "student=tiny-random",
                f"out={tmp_path}",
                *TASK,
                "eval.limit=4",
                "eval.k=2",
                "eval.sampling.max_new_tokens=48",
                "eval.base=false",
                "sample.engine=openai",
                f"sample.openai.base_url={server.url}",
                "sample.openai.model=teacher",
                "sample.num_prompts=4",
                "sample.k=2",
                "sample.m=1",
                "sample.progress=false",
                "sample.sampling.max_new_tokens=48",
                "sft.steps=40",
                *over("sft", SFT),
                "rl_baseline=true",
                *over("student_rl", RL[1:] + ["steps=1"]),
            ],
        )
        summary = run(cfg)
    names = [s["stage"] for s in summary["stages"]]
    assert names == ["01-sample", "02-sft", "03-student-rl"]
    rows = [json.loads(l) for l in (tmp_path / "01-sample" / "data.jsonl").read_text().splitlines()]
    assert rows and all(r["model"] == f"teacher@{server.url}" and r["reward"] == 1.0 for r in rows)
    distilled = summary["stages"][1]["figures"]["eval"]
    assert distilled["format"] >= 0.5  # the student learnt the teacher's traces
    assert "eval" in summary["stages"][2]["figures"]


@pytest.mark.parametrize(
    "name,path",
    [
        ("r1-zero", "pipeline_r1_zero"),
        ("r1", "pipeline_r1"),
        ("distill", "pipeline_distill"),
        ("sft", "sft"),
        ("sample", "sample"),
    ],
)
def test_shipped_configs_load(name, path):
    from aha.sample import SampleConfig
    from aha.train.sft_config import SFTConfig

    cls = {"sft": SFTConfig, "sample": SampleConfig}.get(name) or get_pipeline(name)[0]
    cfg = load_config(cls, str(Path(__file__).parents[1] / "configs" / f"{path}.yaml"))
    assert cfg.out.startswith("runs/")


def test_lora_stage_hands_on_a_merged_model(tmp_path):
    """A LoRA stage's checkpoint holds base weights + adapter/; the next stage must get the trained weights."""
    import torch

    from aha.models.load import load_model
    from aha.pipelines.stages import StageEvalConfig, run_sft, wire_sft
    from aha.train.config import TaskConfig
    from aha.train.sft_config import SFTConfig

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in COLD))
    task = TaskConfig(name="toy-seven", template="{prompt}=")
    cfg = wire_sft(
        load_config(
            SFTConfig,
            None,
            [*SFT, "model.lora.r=8", "model.lora.alpha=32", "steps=15", "optim.lr=3e-2"],
        ),
        model="tiny-random",
        task=task,
        seed=0,
        out=tmp_path / "run",
        data=[str(data)],
    )
    outputs, _ = run_sft(cfg, tmp_path, StageEvalConfig(limit=0), task)
    assert outputs["model"] == str(tmp_path / "merged")

    def loss(path):
        model, tok = load_model(path, device="cpu")
        x = torch.tensor(
            [tok("Q7#10=" + COLD[0]["completion"], add_special_tokens=False).input_ids]
        )
        with torch.no_grad():
            return float(model(input_ids=x, labels=x).loss)

    from safetensors.torch import load_file

    keys = load_file(tmp_path / "merged" / "model.safetensors").keys()
    assert not [k for k in keys if "lora" in k or "base_layer" in k]  # a plain HF model
    assert loss(outputs["model"]) < loss("tiny-random") - 0.1  # what LoRA learnt is kept


def test_cold_start_rows_written_by_the_pipeline(tmp_path):
    from aha.pipelines.r1 import write_cold_start

    cls, _ = get_pipeline("r1")
    over_ = ["task.name=arithmetic", "cold_start_rows=20", f"out={tmp_path}"]
    cfg = load_config(cls, None, over_)
    path = Path(write_cold_start(cfg, log=lambda *_: None))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20 and all(r["completion"].startswith("<think>") for r in rows)
    from aha.data import get_task

    test = {r["question"] for r in get_task("arithmetic").dataset("test")}
    assert not test & {r["question"] for r in rows}
    mtime = path.stat().st_mtime_ns
    assert write_cold_start(cfg, log=lambda *_: None) == str(path)  # complete: kept as it is
    assert path.stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="not both"):
        load_config(cls, None, over_ + [f"cold_start.data.path={path}"])
    small = ["task.name=countdown", "task.options={train_size: 1}", f"out={tmp_path}/c"]
    with pytest.raises(ConfigError, match="gave only 1 verified rows"):
        write_cold_start(load_config(cls, None, small + ["cold_start_rows=5"]), log=lambda *_: None)


@pytest.mark.parametrize(
    "name,key,message",
    [
        ("r1-zero", "rl.seed=5", "set seed= instead"),
        ("r1-zero", "rl.model.path=tiny-random", "set model= instead"),
        ("r1-zero", "rl.out=elsewhere", "set out= instead"),
        ("r1-zero", "rl.task.name=arithmetic", "set task.* instead"),
        ("r1", "sample.sampling.seed=3", "set seed= instead"),
        ("r1", "sft.data.path=[rows.jsonl]", "remove the key"),
        ("distill", "student_rl.model.path=x", "set teacher= or student= instead"),
    ],
)
def test_keys_the_pipeline_sets_are_refused_not_ignored(name, key, message):
    """A stage's model, task, seed and out are the pipeline's (wire()): given by the user they were silently
    replaced (rl.seed=5 ran with seed 0)."""
    from aha.recipes import resolve

    extra = ["teacher=tiny-base"] if name == "distill" else []
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_config(get_pipeline(name)[0], resolve(name, "pipeline"), [*extra, key])
    assert key.split("=")[0].startswith(e.value.key)  # rl.task.name: the section rl.task
