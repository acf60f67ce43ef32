"""The CLI as a user meets it: recipes by name, `--help` for every command generated from the config classes,
TRL/verl names answered with aha's key, one-line errors instead of running defaults, and no torch import
for help or a config error."""

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from aha import recipes
from aha.cli import ENTRY, main
from aha.cli_help import comments, keys
from aha.config import ConfigError, load_config
from aha.config_aliases import ALIASES, key_paths
from aha.pipelines import PIPELINES, get_pipeline
from aha.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_COMMANDS = ["train", "eval", "sft", "sample", "pretrain", "serve"]


def class_of(recipe: recipes.Recipe):
    words = recipe.run.split()
    if recipe.command == "pipeline":
        return get_pipeline(words[2])[0]
    from aha.cli import resolve

    return resolve(ENTRY[recipe.command][0])


@pytest.mark.parametrize("name", sorted(recipes.recipes()))
def test_every_recipe_says_what_it_is_and_loads_with_its_command(name):
    r = recipes.recipes()[name]
    assert r.description and not r.description.startswith(("run:", "needs:")), r
    assert r.command in {*ENTRY, "pipeline"}, r.run
    assert recipes.resolve(r.config_arg, r.command) == r.path  # the run line's name finds it
    cfg = load_config(class_of(r), r.path)
    for key, command in r.needs:  # a needs key names a real key holding a path
        value = recipes._lookup(cfg, key)
        assert isinstance(value, (str, list)) and command, (key, value)


def test_recipes_ship_in_the_wheel_and_configs_links_to_them():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["aha"]
    pkg = ROOT / "src" / "aha"
    shipped = {p for pat in patterns for p in pkg.glob(pat)}
    assert set(recipes.RECIPES_DIR.glob("*.yaml")) <= shipped
    assert (
        ROOT / "configs"
    ).resolve() == recipes.RECIPES_DIR  # a clone's configs/ is the same files


def test_a_recipe_resolves_by_name_and_by_path_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: names and clone-style paths still resolve
    grpo = recipes.RECIPES_DIR / "grpo.yaml"
    for arg in ("grpo", "grpo.yaml", "configs/grpo.yaml"):
        assert recipes.resolve(arg, "train") == grpo
    assert recipes.resolve("r1-zero", "pipeline").name == "pipeline_r1_zero.yaml"
    assert recipes.resolve("student", "pretrain").name == "pretrain_student.yaml"
    (tmp_path / "grpo.yaml").write_text("steps: 3\n")
    assert recipes.resolve("grpo.yaml", "train") == Path("grpo.yaml")  # a file wins over a recipe
    with pytest.raises(ConfigError, match=r"did you mean 'grpo'\? recipes for aha train: "):
        recipes.resolve("grop", "train")
    with pytest.raises(ConfigError, match="config file 'elsewhere/grpo.yaml' not found"):
        recipes.resolve("elsewhere/grpo.yaml", "train")


def test_a_missing_input_names_the_command_that_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "sample"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config error at 'model.path'" in err
    assert "does not exist yet; make it first: aha train grpo" in err
    cfg = load_config(TrainConfig, None, [])
    recipes.check_needs(
        recipes.RECIPES_DIR / "sft.yaml", {"data": {"path": ["x"]}}, cfg
    )  # key absent
    sft = recipes.RECIPES_DIR / "sft.yaml"
    from aha.train.sft_config import SFTConfig

    data = yaml.safe_load(sft.read_text())
    moved = load_config(SFTConfig, sft, ["data.path=[elsewhere.jsonl]"])
    recipes.check_needs(sft, data, moved)  # pointed elsewhere: the command's own checks apply
    (tmp_path / "runs" / "sample").mkdir(parents=True)
    (tmp_path / "runs" / "sample" / "data.jsonl").write_text("{}\n")
    recipes.check_needs(sft, data, load_config(SFTConfig, sft))  # made: no error


def test_recipes_command_lists_and_prints(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for r in recipes.recipes().values():
        assert r.run in out and r.description in out
    assert "first: aha pretrain pretrain_student" in out
    assert main(["recipes", "grpo"]) == 0
    assert capsys.readouterr().out == (recipes.RECIPES_DIR / "grpo.yaml").read_text()
    assert main(["recipes", "nope"]) == 2


@pytest.mark.parametrize("command", ["train", "sft", "sample", "pretrain", "eval"])
def test_no_config_says_where_to_start_instead_of_running_defaults(command, capsys):
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a" in err and "--help" in err


def test_pipeline_without_config_runs_its_own_recipe(monkeypatch, capsys, tmp_path):
    """`aha pipeline r1-zero [key=value ...]` is `aha pipeline r1-zero r1-zero ...`: the recipe of its name."""
    import aha.pipelines as pipelines
    from aha.config import load_config
    from aha.recipes import resolve as find

    ran = []
    real = pipelines.get_pipeline

    def fake(name):
        cls, _ = real(name)
        return cls, lambda cfg: ran.append(cfg) or {"stages": []}

    monkeypatch.setattr(pipelines, "get_pipeline", fake)
    assert main(["pipeline", "r1-zero", f"out={tmp_path / 'p'}", "rl.steps=3"]) == 0
    assert "the r1-zero recipe" in capsys.readouterr().out
    cls = real("r1-zero")[0]
    want = load_config(cls, find("r1-zero", "pipeline"), [f"out={tmp_path / 'p'}", "rl.steps=3"])
    assert ran == [want] and want.rl.steps == 3
    assert main(["pipeline", "r1-zero", "rl.nope=1"]) == 2  # the recipe's keys are checked as usual
    assert "rl.nope" in capsys.readouterr().err


def test_help_shows_the_values_a_recipe_sets(capsys):
    assert main(["train", "dapo", "--help", "algorithm.clip_high"]) == 0
    out = capsys.readouterr().out
    assert "value from default / dapo, meaning" in out and "dapo 0.28" in out
    assert main(["train", "--help", "algorithm.clip_high"]) == 0
    assert "default null" in capsys.readouterr().out
    assert main(["pipeline", "r1-zero", "--help", "rl.steps"]) == 0  # no CONFIG: the recipe r1-zero
    assert "r1-zero 30" in capsys.readouterr().out
    assert main(["train", "nope", "--help"]) == 2
    assert "no recipe or file named 'nope'" in capsys.readouterr().err
    # overrides before --help are shown too; the pipeline's name is never taken for a key prefix
    assert main(["pipeline", "r1-zero", "rl.steps=3", "--help", "rl.steps"]) == 0
    out = capsys.readouterr().out
    assert "default / r1-zero / set (your key=value)" in out and "rl.steps  int  set 3" in out
    assert main(["pipeline", "--help", "r1"]) == 0
    assert "\nkeys (type, value from default / r1, meaning):\n" in capsys.readouterr().out


def test_help_of_commands_without_a_config_and_of_bad_config_files(capsys, tmp_path):
    """`aha serve MODEL --help` and `aha eval --model M --help` take no CONFIG: their arguments are not read as one;
    a config file that is not YAML, or not a mapping, is the one-line error a run gives."""
    for argv in (["serve", "Qwen/Qwen2.5-0.5B", "--help"], ["serve", "--port", "8000", "--help"],
                 ["eval", "--model", "m", "--task", "gsm8k", "--help"]):  # fmt: skip
        assert main(argv) == 0, argv
        assert "usage: aha" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert main(["train", str(tmp_path / "bad.yaml"), "--help"]) == 2
    assert "cannot parse" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "list.yaml"), "--help"]) == 2
    assert "must hold a mapping" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [*CONFIG_COMMANDS, "demo", "report", "recipes", "push", "pipeline"]
)
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: aha ")
    if command in CONFIG_COMMANDS:  # every key of its config, by an independent walk of the classes
        from aha.cli import resolve

        cls = resolve(ENTRY[command][0])
        missing = [k for k in key_paths(cls) if f"  {k} " not in out and f"{k}:" not in out]
        assert not missing, missing


def test_aha_help_command_is_the_commands_help(capsys):
    assert main(["train", "--help", "algorithm"]) == 0
    want = capsys.readouterr().out
    assert main(["help", "train", "algorithm"]) == 0
    assert capsys.readouterr().out == want and "algorithm.beta" in want
    assert main(["help"]) == 0 and capsys.readouterr().out.startswith("usage: aha <command>")


def test_help_reads_types_defaults_and_meanings_from_the_source(capsys):
    docs = {d.key: d for d in keys(TrainConfig)}
    clip = docs["algorithm.clip_high"]
    assert (clip.type, clip.default) == ("float | null", None)
    assert "DAPO clip-higher: 0.28" in clip.meaning  # the comment beside the field
    assert docs["eval.limit"].default == 0  # TrainConfig's own section default, not HeldOutConfig's
    assert docs["eval.sampling.temperature"].default == 0.6
    assert docs["eval.sampling.max_new_tokens"].default is None
    assert docs["model.dtype"].type == "auto|float32|bfloat16|float16"
    assert docs["rewards.funcs[].weight"].default == 1.0
    assert docs["algorithm.gamma"].group.startswith("PPO only")  # a heading over the PPO knobs
    assert "discount" in docs["algorithm.gamma"].meaning
    # a field whose line in the source carries a comment has a meaning (the parser drops none)
    for cls in (TrainConfig, *[get_pipeline(p)[0] for p in PIPELINES]):
        for d in keys(cls):
            if not d.section and _commented_inline(cls, d.key):
                assert d.meaning, d.key
    assert (
        comments(dataclasses.make_dataclass("X", [("a", int, 1)])) == {}
    )  # no source: no comments
    assert main(["train", "--help", "optim.l"]) == 0
    out = capsys.readouterr().out
    table = out.split("(type, default, meaning):\n")[1]
    assert (
        table.split()[:4] == ["optim.lr", "float", "default", "1e-06"] and "optim.eps" not in table
    )
    assert main(["train", "--help", "num_generations"]) == 0
    assert "aha's is sampling.group_size" in capsys.readouterr().out
    assert main(["pipeline", "r1", "--help", "rl2.sampling.group"]) == 0
    assert "rl2.sampling.group_size" in capsys.readouterr().out


def _commented_inline(cls, key: str) -> bool:
    """Whether the line declaring `key` (dotted, from `cls`) has a # comment: a plain text scan."""
    import typing

    *path, name = key.replace("[]", "").split(".")
    for part in path:
        tp = typing.get_type_hints(cls)[part]
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        cls = next(a for a in args if dataclasses.is_dataclass(a))
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass) and name in klass.__dict__.get("__annotations__", {}):
            return any(l.strip().startswith(f"{name}:") and "#" in l for l in _source_lines(klass))
    return False


@functools.cache
def _source_lines(klass) -> list[str]:
    """A class's source lines, read once per class (~1,000 keys share a few dozen classes)."""
    import inspect

    return inspect.getsource(klass).splitlines()


@pytest.mark.parametrize(
    "override, key, aha_key",
    [
        ("num_generations=4", "num_generations", "sampling.group_size"),
        ("max_completion_length=64", "max_completion_length", "sampling.max_new_tokens"),
        ("epsilon_high=0.28", "epsilon_high", "algorithm.clip_high"),
        ("loss_type=dapo", "loss_type", "algorithm.agg"),
        ("num_iterations=2", "num_iterations", "algorithm.mu"),
        ("learning_rate=1e-6", "learning_rate", "optim.lr"),
        ("scale_rewards=false", "scale_rewards", "algorithm.std_scale"),
        ("per_device_train_batch_size=8", "per_device_train_batch_size", "batch.micro_batch_size"),
        ("sampling.num_generations=4", "sampling.num_generations", "sampling.group_size"),
        ("actor_rollout_ref.rollout.n=8", "actor_rollout_ref.rollout.n", "sampling.group_size"),
        (
            "actor_rollout_ref.actor.kl_loss_coef=0.1",
            "actor_rollout_ref.actor.kl_loss_coef",
            "algorithm.beta",
        ),
        ("data.max_response_length=256", "data.max_response_length", "sampling.max_new_tokens"),
        ("algorithm.adv_estimator=rloo", "algorithm.adv_estimator", "algorithm.advantage"),
        (
            "algorithm.kl_ctrl={kl_coef: 0.1}",
            "algorithm.kl_ctrl.kl_coef",
            "algorithm.reward_kl_coef",
        ),
        ("lr=1e-5", "lr", "optim.lr"),  # aha's own key at the wrong depth
        ("warmup_ratio=0.1", "warmup_ratio", "optim.warmup_steps"),
        ("use_peft=true", "use_peft", "model.lora"),
        ("lora_r=8", "lora_r", "model.lora.r"),
        ("torch_dtype=bfloat16", "torch_dtype", "model.dtype"),
        ("system_prompt=x", "system_prompt", "task.system"),
    ],
)
def test_trl_and_verl_names_give_the_aha_key(override, key, aha_key):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, [override])
    assert e.value.key == key and f" {aha_key}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override, aha_key",
    [
        ("per_device_train_batch_size=4", "batch.micro_batch_size (rows per forward/backward)"),
        ("gradient_accumulation_steps=2", "batch.batch_size (examples per optimizer step"),
        ("max_seq_length=512", "data.max_length"),
    ],
)
def test_trl_names_in_aha_sft_give_sfts_keys(override, aha_key):
    """aha sft reads TRL's batch names as SFT's (they pointed at RL's batch.prompts_per_step)."""
    from aha.train.sft_config import SFTConfig

    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, [override])
    assert f"aha's is {aha_key}" in str(e.value) and "prompts_per_step" not in str(e.value)


def test_aliases_are_found_at_any_depth_and_point_at_real_keys():
    cls = get_pipeline("r1")[0]
    with pytest.raises(ConfigError, match=r"aha's is rl2\.sampling\.group_size$"):
        load_config(cls, None, ["rl2.num_generations=4"])
    with pytest.raises(ConfigError, match=r"rl\.sampling\.group_size or rl2\.sampling\.group_size"):
        load_config(cls, None, ["num_generations=4"])
    from aha.train.sft_config import SFTConfig

    valid = set(key_paths(TrainConfig)) | set(key_paths(SFTConfig))
    assert not [(k, v) for k, (v, _) in ALIASES.items() if v not in valid]


def test_registered_names_match_the_torch_free_lists():
    from aha import algo_names as names
    from aha import algos

    assert tuple(algos.ADVANTAGES) == names.ADVANTAGE_NAMES
    assert tuple(algos.POLICY_LOSSES) == names.POLICY_LOSS_NAMES


def test_help_and_config_errors_do_not_import_torch(tmp_path):
    code = (
        "import sys\nfrom aha.cli import main\n"
        "assert main(['--help']) == 0 and main(['train', '--help']) == 0\n"
        "assert main(['pipeline', 'r1', '--help']) == 0 and main(['pretrain', '--help']) == 0\n"
        "assert main(['train', 'grpo', 'optim.lr=-1']) == 2 and main(['train', 'dapo', 'num_generations=2']) == 2\n"
        "assert main(['pipeline', 'r1', 'r1', 'rl.optim.lrr=1']) == 2\n"
        "assert main(['eval', '--model', './nope', '--task', 'arithmetic']) == 2\n"
        "assert main(['sample', 'sample', 'engine=openai', 'openai.bogus=1']) == 2\n"
        "open('bad.jsonl', 'w').write('{\"prompt\": \"a\"}\\n')\n"
        "assert main(['sft', 'sft', 'data.path=[bad.jsonl]', 'out=o']) == 2\n"
        "assert main(['train', 'grpo', 'out=/proc/x']) == 2\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not bad, bad[:5]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_servers_refusal_is_one_line(monkeypatch, capsys):
    """`aha eval --endpoint` against a server that refuses the request (HTTP 400: max_tokens past its context):
    the client's one-line OpenAIError, exit 2, not a traceback (seen against `aha serve tiny-base`)."""
    import aha.cli as cli
    from aha.rollout.openai_client.transport import OpenAIError

    said = (
        "http://127.0.0.1:8731/v1/completions: HTTP 400: 'max_tokens' is too large: 1024. This model's "
        "maximum context length is 512 tokens and your request has 301 input tokens (1024 > 512 - 301)."
    )

    def refused(rest):
        raise OpenAIError(said, 400)

    monkeypatch.setitem(cli.COMMANDS, "eval", refused)
    assert main(["eval", "--endpoint", "http://127.0.0.1:8731/v1"]) == 2
    assert capsys.readouterr().err.strip() == f"aha eval: {said}"
    monkeypatch.setitem(
        cli.COMMANDS, "eval", lambda rest: (_ for _ in ()).throw(RuntimeError("a bug"))
    )
    with pytest.raises(RuntimeError, match="a bug"):  # other errors keep their traceback
        main(["eval"])


@pytest.mark.parametrize("stdout", ["a file", "no descriptor"])
def test_a_broken_pipe_that_is_not_stdout_is_an_error(monkeypatch, request, stdout):
    """Only a closed stdout is silenced: a command's own broken pipe (a worker, a socket) keeps its traceback,
    whether stdout is a file (pytest's fd capture) or has no descriptor at all (capsys, a notebook)."""
    from aha import cli
    from aha.cli import main

    if stdout == "no descriptor":
        request.getfixturevalue("capsys")

    def broken(rest):
        raise BrokenPipeError("[Errno 32] Broken pipe: a reward worker")

    monkeypatch.setitem(cli.COMMANDS, "eval", broken)
    with pytest.raises(BrokenPipeError, match="reward worker"):
        main(["eval"])


@pytest.mark.parametrize("args", [["--help"], ["version"], ["train", "--help"]])
def test_a_reader_that_leaves_early_is_not_an_error(args):
    """`aha --help | head -3`: the pipe closes before aha writes; no traceback, exit 0."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; from aha.cli import main; sys.exit(main())", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()  # before the child has imported anything: its first write meets a closed pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_outside_a_training_step_is_one_line(monkeypatch, capsys, tmp_path):
    """Ctrl-C during the step-0 held-out evaluation (before the loop's own handler, which finishes a step and
    saves) printed a KeyboardInterrupt traceback; now one line saying what a rerun does, exit 130."""
    from aha.train.rl import RLTrainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RLTrainer, "evaluate", interrupted)
    argv = [
        "train",
        "grpo",
        "model.path=tiny-random",
        "task.name=arithmetic",
        f"out={tmp_path / 'r'}",
    ]
    assert main([*argv, "steps=1", "eval.limit=2", "logging.progress=false"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "aha train: interrupted (Ctrl-C); rerun with resume=true to continue from the last checkpoint "
        "saved (none yet: from step 0)"
    ]
