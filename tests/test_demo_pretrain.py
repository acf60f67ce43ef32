"""Pretraining plumbing at toy size, its config checks, and the shipped tiny-base checkpoint."""

import json
import math
from pathlib import Path

import pytest
import torch

from aha.config import ConfigError, load_config
from aha.demo.pretrain import ModelDims, OptimSchedule, PretrainConfig, lr_at, pack_rows, pretrain
from aha.models.compat import dtype_kwarg  # dtype= needs transformers >= 4.56
from aha.rollout import HFEngine, SamplingParams

ASSET = Path(__file__).resolve().parents[1] / "src" / "aha" / "assets" / "tiny-base"


def test_pack_rows_by_hand():
    ids, mask = pack_rows([[5, 6, 1], [7, 1], [8, 9, 9, 1], [3] * 9], seq_len=6, pad_id=0)
    assert ids.tolist() == [[5, 6, 1, 7, 1, 0], [8, 9, 9, 1, 0, 0], [3] * 6]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1] * 6]


def test_lr_schedule_by_hand():
    o = OptimSchedule(steps=110, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, o) == pytest.approx(0.1) and lr_at(9, o) == pytest.approx(1.0)
    assert lr_at(10, o) == pytest.approx(1.0)
    assert lr_at(60, o) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, o) == pytest.approx(0.1)


def test_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="num_heads"):
        ModelDims(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="min_lr"):
        OptimSchedule(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ConfigError, match="optim.steps"):
        load_config(PretrainConfig, None, ["optim.steps=0"])
    cfg = load_config(
        PretrainConfig, str(Path(__file__).resolve().parents[1] / "configs" / "pretrain.yaml"), []
    )
    assert cfg.out_dir and cfg.model.hidden_size > 0


TOY = [
    "model.hidden_size=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.intermediate_size=64",
    "vocab_size=300",
    "corpus.n_docs=300",
    "optim.steps=3",
    "optim.batch_size=4",
    "optim.seq_len=128",
    "optim.warmup_steps=1",
    "device=cpu",
    "dtype=float32",
]


def test_toy_pretrain_writes_loadable_dir(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = pretrain(load_config(PretrainConfig, None, TOY + [f"out_dir={tmp_path / 'm'}"]))
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["config"]["optim"]["steps"] == 3 and recipe["tokens_seen"] > 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # step 0 and the last step
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tok) <= 300
    assert tok.eos_token_id == model.config.eos_token_id == 1
    outs = HFEngine(model, tok).generate(
        [tok("Compute 1 + 2")["input_ids"]],
        SamplingParams(max_tokens=5, temperature=0, stop_token_ids=[1]),
    )
    assert 1 <= len(outs[0].token_ids) <= 5


def test_toy_pretrain_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a, b = (
        pretrain(load_config(PretrainConfig, None, TOY + [f"out_dir={tmp_path / d}"])) for d in "ab"
    )
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


@pytest.mark.parametrize(
    "asset, recipe", [("tiny-base", "pretrain.yaml"), ("tiny-recheck", "pretrain_recheck.yaml")]
)
def test_recipe_yaml_is_the_shipped_recipe(asset, recipe):
    import dataclasses

    cfg = dataclasses.asdict(
        load_config(PretrainConfig, str(ASSET.parents[3] / "configs" / recipe), [])
    )
    shipped = json.loads((ASSET.parent / asset / "recipe.json").read_text())["config"]
    # p_slip and p_verify came after these weights; at 0 they draw the same corpus (test_demo_corpus.py)
    shipped["corpus"] = {"p_slip": 0.0, "p_verify": 0.0, **shipped["corpus"]}
    for key in cfg.keys() - {
        "out_dir",
        "threads",
        "log_every",
        "device",
    }:  # where/how fast, not what
        assert cfg[key] == shipped[key], key


def test_shipped_tiny_base_follows_the_r1_zero_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aha.data import render_prompt
    from aha.data.chain import ChainTask
    from aha.rewards.format import format_reward

    tok = AutoTokenizer.from_pretrained(ASSET)
    model = AutoModelForCausalLM.from_pretrained(ASSET, **dtype_kwarg(torch.float32))
    assert [tok.decode([i]) for i in tok(" <think>")["input_ids"]] == [
        " <",
        "t",
        "h",
        "i",
        "n",
        "k",
        ">",
    ]
    rows = ChainTask().dataset("test")[:8]
    outs = HFEngine(model, tok).generate(
        [tok(render_prompt(r["question"]))["input_ids"] for r in rows],
        SamplingParams(max_tokens=80, temperature=0, stop_token_ids=[1]),
    )
    # the corpus never shows <think>/<answer>; the base copies the tags the template states
    assert sum(format_reward(o.text) for o in outs) >= 6


def test_shipped_tiny_base_loads_and_computes():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (ASSET / "model.safetensors").stat().st_size <= 10 * 2**20
    assert json.loads((ASSET / "recipe.json").read_text())["config"]["corpus"]["seed"] is not None
    tok = AutoTokenizer.from_pretrained(ASSET)
    model = AutoModelForCausalLM.from_pretrained(ASSET, **dtype_kwarg(torch.float32))
    # greedy one-step arithmetic (a number plus or minus one digit), the skill the worked solutions rely on
    prompts = [tok(t)["input_ids"] for t in ("75-8 =", "33-6 =", "140+8 =")]
    outs = HFEngine(model, tok).generate(
        prompts, SamplingParams(max_tokens=4, temperature=0, stop_token_ids=[tok.eos_token_id])
    )
    assert [o.text.split()[0].rstrip(".,") for o in outs] == ["67", "27", "148"]
