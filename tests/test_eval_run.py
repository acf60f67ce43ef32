"""EvalConfig validation and run_eval end to end (tiny random model, countdown task) on the CPU."""

import json
from dataclasses import asdict, replace

import pytest

from aha.eval.run import EvalConfig, run_eval
from aha.schema import ModelConfig, SamplingConfig, TaskConfig


def test_defaults_are_the_paper_eval_settings():
    cfg = EvalConfig()
    assert cfg.sampling.temperature == 0.6 and cfg.sampling.top_p == 0.95 and cfg.k == 4
    assert cfg.engine == "auto" and cfg.limit is None


@pytest.mark.parametrize(
    "make,key",
    [
        (lambda: EvalConfig(k=0), "k"),
        (lambda: EvalConfig(limit=0), "limit"),
        (lambda: EvalConfig(engine="vllm"), "engine"),
        (lambda: EvalConfig(batch_size=0), "batch_size"),
        (lambda: EvalConfig(n_boot=-1), "n_boot"),
        (lambda: EvalConfig(out=" "), "out"),
        (lambda: EvalConfig(reflection_phrases=[" "]), "reflection_phrases"),
        (lambda: SamplingConfig(temperature=-0.1), "temperature"),
        (lambda: SamplingConfig(top_p=0.0), "top_p"),
        (lambda: SamplingConfig(top_p=1.5), "top_p"),
        (lambda: SamplingConfig(top_k=-1), "top_k"),
        (lambda: SamplingConfig(max_new_tokens=0), "max_new_tokens"),
        (lambda: TaskConfig(split="dev"), "split"),
        (lambda: TaskConfig(name=""), "name"),
        (lambda: ModelConfig(path=""), "path"),
    ],
)
def test_impossible_values_raise_one_line(make, key):
    with pytest.raises(ValueError) as e:
        make()
    msg = str(e.value)
    assert "\n" not in msg and f"'{key}'" in msg


def test_load_config_paths_and_round_trip(tmp_path):
    from aha import config

    with pytest.raises(config.ConfigError) as e:
        config.load_config(EvalConfig, None, ["sampling.top_p=2"])
    assert e.value.key == "sampling.top_p"
    with pytest.raises(config.ConfigError, match="temperature"):
        config.load_config(EvalConfig, None, ["sampling.temprature=1"])
    cfg = config.load_config(
        EvalConfig,
        None,
        [
            "model.path=tiny-random",
            "task.name=countdown",
            "k=16",
            "limit=5",
            "task.options={seed: 3}",
        ],
    )
    assert cfg.k == 16 and cfg.limit == 5 and cfg.task.options == {"seed": 3}
    import yaml

    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(asdict(cfg)))
    assert config.load_config(EvalConfig, path) == cfg


def test_run_eval_end_to_end(tmp_path):
    import torch

    torch.set_num_threads(1)
    out = tmp_path / "eval"
    cfg = EvalConfig(
        model=ModelConfig(path="tiny-random", device="cpu"),
        task=TaskConfig(name="countdown", template="plain"),
        sampling=replace(EvalConfig().sampling, max_new_tokens=8),
        k=2,
        limit=3,
        engine="hf",
        n_boot=20,
        out=str(out),
    )
    lines = []
    res = run_eval(cfg, log=lines.append)
    assert res.n_problems == 3 and res.k == 2 and len(res.samples) == 6
    assert 0.0 <= res.metrics["pass1"] <= 1.0 and res.metrics["len_max"] <= 8
    for name in ("results.json", "samples.jsonl", "config.yaml", "report/index.html"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["accuracy"] == "countdown" and results["settings"]["max_tokens"] == 8
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
    assert any("pass1" in line for line in lines)
