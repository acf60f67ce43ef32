"""One schema per concept (aha.schema): the shared sections, their per-command defaults (config.section), renamed
keys naming their new place, values resolved on load (std_scale, GSPO's clip range), and the bugs this fixed:
sample/eval sampling and an unknown language code rejected on load, before any model."""

from dataclasses import replace
from pathlib import Path

import pytest

from aha.config import ConfigError, load_config, to_dict
from aha.eval.run import EvalConfig
from aha.pipelines import get_pipeline
from aha.sample import SampleConfig
from aha.schema import EVAL_TEMPERATURE, EVAL_TOP_P, HeldOutConfig, SamplingConfig
from aha.train.config import TrainConfig
from aha.train.sft_config import SFTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_command_shares_the_sections():
    r1 = get_pipeline("r1")[0]()
    for owner in (TrainConfig(), SFTConfig(), EvalConfig(), SampleConfig(), r1.rl):
        assert type(owner.model).__name__ == "ModelConfig"
    for ev in (TrainConfig().eval, SFTConfig().eval, EvalConfig(), r1.eval):
        assert isinstance(ev, HeldOutConfig)
        assert (ev.sampling.temperature, ev.sampling.top_p) == (EVAL_TEMPERATURE, EVAL_TOP_P)
    assert isinstance(SampleConfig().sampling, SamplingConfig)


def test_section_defaults_hold_under_a_partial_yaml():
    cls = get_pipeline("r1-zero")[0]
    ev = load_config(cls, None, ["eval.sampling.temperature=1.0"]).eval
    assert (ev.sampling.temperature, ev.sampling.max_new_tokens, ev.sampling.top_p) == (
        1.0,
        256,
        0.95,
    )
    assert (ev.limit, ev.n_boot, ev.sampling.seed) == (100, 200, None)
    s = load_config(SampleConfig, None, ["sampling.top_k=5"]).sampling
    assert (s.temperature, s.top_p, s.max_new_tokens, s.top_k) == (0.7, 0.95, 1024, 5)
    assert load_config(SampleConfig, None, ["sampling=null"]).sampling.temperature == 0.7


def test_training_eval_takes_the_rollout_length_and_run_seed():
    c = load_config(TrainConfig, None, ["sampling.max_new_tokens=40", "eval.limit=5"])
    assert c.eval.sampling.max_new_tokens == 40 and c.eval.enabled
    assert (
        to_dict(c)["eval"]["sampling"]["max_new_tokens"] == 40
    )  # config.yaml shows the value used
    assert (
        load_config(
            TrainConfig, None, ["eval.sampling.max_new_tokens=7"]
        ).eval.sampling.max_new_tokens
        == 7
    )
    assert not TrainConfig().eval.enabled and TrainConfig().eval.sampling.seed is None


@pytest.mark.parametrize(
    "cls,key,new",
    [
        (TrainConfig, "logging.eval_size=4", "eval.limit"),
        (TrainConfig, "logging.eval_k=2", "eval.k"),
        (TrainConfig, "logging.eval_temperature=1", "eval.sampling.temperature"),
        (TrainConfig, "logging.eval_top_p=1", "eval.sampling.top_p"),
        (TrainConfig, "logging.eval_batch=8", "eval.batch_size"),
        (SFTConfig, "logging.eval_max_new_tokens=8", "eval.sampling.max_new_tokens"),
        (SampleConfig, "split=test", "task.split"),
    ],
)
def test_renamed_keys_name_the_new_one(cls, key, new):
    with pytest.raises(ConfigError) as e:
        load_config(cls, None, [key])
    assert e.value.key == key.split("=")[0] and f"use {new}" in str(e.value)
    assert "\n" not in str(e.value)


def test_renamed_keys_inside_a_pipeline_carry_its_prefix():
    cls = get_pipeline("r1")[0]
    with pytest.raises(ConfigError, match=r"use rl\.eval\.k$"):
        load_config(cls, None, ["rl.logging.eval_k=2"])
    with pytest.raises(ConfigError, match=r"use eval\.sampling\.max_new_tokens$"):
        load_config(cls, None, ["eval.max_new_tokens=8"])


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    if name.startswith("pretrain"):
        return  # aha pretrain's own config: tests/test_demo_pretrain.py
    cls = {"sft.yaml": SFTConfig, "sample.yaml": SampleConfig}.get(name, TrainConfig)
    if name.startswith(
        "pipeline_"
    ):  # pipeline_<name>[_<model>[_<task>]].yaml, e.g. pipeline_r1_zero_smollm2.yaml
        kind = name[len("pipeline_") : -len(".yaml")].split("_smollm2")[0].replace("_", "-")
        cls = get_pipeline(kind)[0]
    load_config(cls, CONFIGS / name)


def test_gspo_takes_its_papers_clip_range_unless_one_is_given():
    a = load_config(TrainConfig, None, ["algorithm.policy_loss=gspo"]).algorithm
    assert (a.clip_low, a.clip_high) == (3e-4, 4e-4)
    a = load_config(
        TrainConfig, None, ["algorithm.policy_loss=gspo", "algorithm.clip_high=1e-3"]
    ).algorithm
    assert (a.clip_low, a.clip_high) == (3e-4, 1e-3)
    a = load_config(TrainConfig, None, []).algorithm
    assert (a.clip_low, a.clip_high) == (0.2, 0.2)
    a = load_config(TrainConfig, CONFIGS / "grpo.yaml", ["algorithm.policy_loss=gspo"]).algorithm
    assert (a.clip_low, a.clip_high) == (3e-4, 4e-4)  # the README's GSPO command


@pytest.mark.parametrize(
    "advantage,given,resolved",
    [
        ("grpo", None, "group"),
        ("dr_grpo", None, "none"),
        ("rloo", None, "none"),
        ("rloo", "batch", "batch"),
        ("remax", None, "none"),
        ("reinforce++", None, "batch"),
        ("reinforce++_baseline", "none", "none"),
    ],
)
def test_std_scale_resolves_to_the_estimators_own(advantage, given, resolved):
    extra = [f"algorithm.std_scale={given}"] if given else []
    a = load_config(TrainConfig, None, [f"algorithm.advantage={advantage}", *extra]).algorithm
    assert a.std_scale == resolved


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["algorithm.advantage=remax", "algorithm.std_scale=group"], "algorithm.std_scale"),
        (["algorithm.advantage=reinforce++", "algorithm.std_scale=group"], "algorithm.std_scale"),
        (["algorithm.name=ppo", "algorithm.std_scale=batch"], "algorithm.std_scale"),
        (["algorithm.lam=0.9"], "algorithm.lam"),  # a PPO knob under GRPO would do nothing
        (["task.split=test"], "task.split"),
        (["sampling.temperature=0"], "sampling.temperature"),
    ],
)
def test_train_config_rejects_knobs_that_do_nothing(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, overrides)
    assert e.value.key == key


@pytest.mark.parametrize(
    "cls,override,key",
    [
        (
            SampleConfig,
            "sampling.top_p=0",
            "sampling.top_p",
        ),  # was accepted, then a traceback after the load
        (SampleConfig, "sampling.temperature=-1", "sampling.temperature"),
        (SampleConfig, "filters.language=xx", "filters.language"),  # was a silent zero score
        (SampleConfig, "model.lora.r=8", "model.lora.r"),
        (EvalConfig, "model.gradient_checkpointing=true", "model.gradient_checkpointing"),
        (EvalConfig, "sampling.max_new_tokens=null", "sampling.max_new_tokens"),
    ],
)
def test_generation_commands_fail_on_load(cls, override, key):
    with pytest.raises(ConfigError) as e:
        load_config(cls, None, [override])
    assert e.value.key == key and "\n" not in str(e.value)


def test_split_defaults_per_command():
    assert EvalConfig().task.split == "test" and SampleConfig().task.split == "train"
    assert TrainConfig().task.split is None
    cfg = load_config(EvalConfig, None, ["task.split=train"])
    assert replace(cfg, k=2).task.split == "train"


def test_sampling_params_and_the_temperature_rule():
    p = SamplingConfig(temperature=0.0, max_new_tokens=5).params(3, [7], seed=1)
    assert (p.n, p.temperature, p.max_tokens, p.stop_token_ids, p.seed) == (3, 0.0, 5, (7,), 1)
    assert p.logprob_temperature == 1.0  # greedy: unscaled logprobs
    assert SamplingConfig(temperature=0.7).params(1, [], None).logprob_temperature == 0.7


def test_stop_strings_reach_the_engine_in_training_and_its_evaluation():
    cfg = load_config(
        TrainConfig,
        None,
        ["sampling.stop=['User:', '</answer>']", "sampling.include_stop_str_in_output=true"],
    )
    p = cfg.sampling.params(8, [0], seed=1)
    assert p.stop == ("User:", "</answer>") and p.include_stop_str_in_output
    assert cfg.eval.sampling.stop == ["User:", "</answer>"]  # the held-out evaluation stops alike
    assert cfg.eval.sampling.include_stop_str_in_output
    with pytest.raises(ConfigError, match="sampling.stop"):
        load_config(TrainConfig, None, ["sampling.stop=['']"])


@pytest.mark.parametrize("value", ["1e-40", "-1"])
def test_a_temperature_that_overflows_the_logits_is_refused(value):
    with pytest.raises(ConfigError, match=r"must be 0 \(greedy\) or >= 1e-5"):
        load_config(TrainConfig, None, [f"sampling.temperature={value}"])
    assert load_config(SampleConfig, None, ["sampling.temperature=0"]).sampling.temperature == 0
