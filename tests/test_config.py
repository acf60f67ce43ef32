"""Config loading: YAML + overrides, and one-line errors for every kind of mistake (exit code 2 in the CLI)."""

import pytest

from aha.cli import main
from aha.config import ConfigError, load_config
from aha.train.config import TrainConfig


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "optim:\n  lr: 1e-5\nsampling:\n  group_size: 4\nrewards:\n  funcs: [{name: format, weight: 2}]\n"
    )
    cfg = load_config(
        TrainConfig, f, ["optim.lr=3e-4", "batch.prompts_per_step=2", "batch.micro_batch_size=4"]
    )
    assert cfg.optim.lr == 3e-4 and cfg.sampling.group_size == 4
    assert cfg.rewards.funcs[0].name == "format" and cfg.rewards.funcs[0].weight == 2.0
    assert cfg.batch.prompts_per_step == 2


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["optim.lrr=1"], "optim.lrr", "did you mean 'lr'"),
        (["sampling.group_size=1"], "sampling.group_size", "group_size=8"),
        (["batch.micro_batch_size=5"], "batch.micro_batch_size", "divisor of 64"),
        (["optim.lr=-1"], "optim.lr", "must be > 0"),
        (["optim.lr=fast"], "optim.lr", "expected a number"),
        (["steps=1.5"], "steps", "expected an integer"),
        (["algorithm.name=foo"], "algorithm.name", "grpo, ppo"),
        (["resume=maybe"], "resume", "true or false"),
        (
            ["rewards.funcs=[{name: format, wieght: 1}]"],
            "rewards.funcs[0].wieght",
            "did you mean 'weight'",
        ),
        (["algorithm.advantage=nope"], "algorithm.advantage", "grpo"),
        (["algorithm.agg=nope"], "algorithm.agg", "token-mean"),
        (["nokey"], "nokey", "key.sub=value"),
    ],
)
def test_errors_name_key_and_fix(overrides, key, words):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, overrides)
    assert e.value.key == key
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_booleans_that_are_choice_words(tmp_path):
    """YAML 1.1 reads `off` as false: memory.plan=off (as the README writes it) is the choice 'off', from the
    command line and from a file; a boolean where no choice is such a word stays an error."""
    assert load_config(TrainConfig, None, ["memory.plan=off"]).memory.plan == "off"
    with pytest.raises(
        ConfigError, match=r"got True \(YAML reads on/yes/true as true\); choose one of: auto, off"
    ):
        load_config(TrainConfig, None, ["memory.plan=on"])
    f = tmp_path / "c.yaml"
    f.write_text("memory:\n  plan: off\n")
    assert load_config(TrainConfig, f).memory.plan == "off"
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(TrainConfig, None, ["algorithm.name=false"])


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(TrainConfig, bad)


def test_cli_errors_exit_2_one_line(tmp_path, capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'train'" in err and err.count("\n") == 1
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "optim.lr=-3"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and "Traceback" not in err and err.count("\n") == 1


def test_load_config_takes_a_recipe_name_as_the_cli_does(tmp_path, monkeypatch):
    """A wheel install has no configs/ folder: the API finds the package's recipe by name, from any folder."""
    from aha.config import ConfigError, load_config
    from aha.train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    for name in ("grpo", "grpo.yaml", "configs/grpo.yaml"):
        cfg = load_config(TrainConfig, name, ["steps=10"])
        assert cfg.steps == 10 and cfg.task.name == "chain"
    with pytest.raises(ConfigError, match="no recipe or file named 'grpoo'; did you mean 'grpo'"):
        load_config(TrainConfig, "grpoo")
    # the names the CLI takes: a pipeline's recipe by the pipeline's name
    from aha.pipelines.r1_zero import R1ZeroPipelineConfig

    assert load_config(R1ZeroPipelineConfig, "r1-zero").rl.steps == 30
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, "elsewhere/grpo.yaml")  # a path, not a recipe name
