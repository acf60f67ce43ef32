"""benchmarks/vs_trl.py: aha's rewards wrapped for TRL score exactly as aha does, the hyperparameter mapping, a
--tiny smoke run, and (with trl installed) the same gradients as TRL's GRPOTrainer on the same completions."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _trl_arm import AhaReward, sample_completions, trl_config_kwargs  # noqa: E402
from aha.data import get_task  # noqa: E402
from aha.rewards import RewardRunner  # noqa: E402
from vs_trl import aha_config, build_tiny, main, parse_args, prompt_rows  # noqa: E402

HAVE_TRL = importlib.util.find_spec("trl") is not None


def test_wrapped_rewards_equal_aha_runner():
    """Called the way TRL calls a reward function (columns as per-completion lists plus TRL's extra kwargs),
    each wrapped reward gives aha's RewardRunner column; None exactly where aha has NaN."""
    task = get_task("countdown")
    rows = [task.dataset("train")[i] for i in range(3)]
    comps, per_comp_rows = [], []
    for r in rows:
        for c in sample_completions(r) + ["<think>x</think><answer>1+2</answer>"]:
            comps.append(c)
            per_comp_rows.append(r)
    keys = sorted(rows[0])
    columns = {k: [r[k] for r in per_comp_rows] for k in keys}
    extra = dict(trainer_state=None, log_extra=lambda *a: None, log_metric=lambda *a: None)
    specs = [("accuracy", "countdown"), ("format", "format"), ("tag", "tag")]
    with RewardRunner([(s, 1.0) for _, s in specs]) as runner:
        want = runner.score(comps, per_comp_rows).scores  # (N, 3)
    assert np.nanmax(want[:, 0]) == 1.0 and np.nanmin(want[:, 0]) == 0.0  # both outcomes exercised
    assert len(set(want[:, 2].round(3))) > 2  # tag gives partial credit
    for f, (name, spec) in enumerate(specs):
        fn = AhaReward(name, spec, keys)
        try:
            got = fn(
                prompts=["p"] * len(comps),
                completions=comps,
                completion_ids=None,
                **columns,
                **extra,
            )
        finally:
            fn.close()
        assert fn.__name__ == name
        assert [g is None for g in got] == list(np.isnan(want[:, f]))
        assert np.array_equal(
            np.array([np.nan if g is None else g for g in got]), want[:, f], equal_nan=True
        )


def test_trl_config_maps_aha_settings(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    m = str(tmp_path / "m")
    a = parse_args(
        ["--model", m, "--prompts", "6", "--group", "4", "--micro", "8", "--warmup", "2"]
    )
    kw = trl_config_kwargs(a, 3, tmp_path, cuda=False)
    assert kw["per_device_train_batch_size"] * kw["gradient_accumulation_steps"] == 6 * 4
    assert (kw["num_generations"], kw["max_completion_length"], kw["seed"]) == (4, 256, 3)
    assert (kw["loss_type"], kw["scale_rewards"], kw["num_iterations"]) == ("grpo", "group", 1)
    assert kw["epsilon"] == kw["epsilon_high"] == 0.2 and kw["beta"] == a.beta == 0.04
    assert (
        kw["use_bias_correction_kl"] is False
    )  # plain k3, as aha; TRL's default differs (see the test below)
    assert kw["reward_weights"] == [1.0, 0.5] and not kw["shuffle_dataset"]
    assert kw["lr_scheduler_type"] == "constant_with_warmup" and kw["warmup_steps"] == 2
    assert not kw["bf16"] and kw["use_cpu"] and not kw["gradient_checkpointing"]
    cfg = aha_config(a, 3, tmp_path)
    assert cfg["algorithm"]["agg"] == "seq-mean-token-mean" and cfg["algorithm"]["mu"] == 1
    assert (cfg["batch"]["prompts_per_step"], cfg["batch"]["micro_batch_size"]) == (6, 8)
    assert cfg["optim"]["betas"] == [kw["adam_beta1"], kw["adam_beta2"]]
    with pytest.raises(SystemExit):  # 24 sequences do not split into micro-batches of 5
        parse_args(["--model", m, "--prompts", "6", "--group", "4", "--micro", "5"])
    with pytest.raises(SystemExit):  # not a model directory: one line, exit 2
        parse_args(["--model", str(tmp_path)])


@pytest.mark.slow
def test_tiny_smoke(tmp_path):
    """--tiny end to end: both arms when trl is installed (aha's alone otherwise): tables, curves, plot."""
    arms = ["aha", "trl"] if HAVE_TRL else ["aha"]
    out = tmp_path / "run"
    main(["--tiny", "--task", "countdown", "--arms", *arms, "--out", str(out)])
    text = (out / "summary.md").read_text()
    assert all(f"### {arm}" in text for arm in arms)
    with (out / "curves.csv").open() as f:
        steps = [(r["arm"], int(r["step"])) for r in csv.DictReader(f)]
    assert steps == [(arm, s) for arm in arms for s in (1, 2)]
    res = json.loads((out / "results.json").read_text())
    for run in res["runs"]:
        assert run["summary"]["step_s"] > 0 and 0 <= run["summary"]["pass1"] <= 1
        if run["arm"] == "trl":
            assert (
                run["info"]["reward_check"]["identical"] and run["info"]["prompt_tokens_identical"]
            )
    assert (out / "reward_curves.png").stat().st_size > 1000
    assert not (out / "aha" / "seed0" / "checkpoints" / "step-000002").exists()  # models deleted
    merged = main(["--merge", str(out), "--out", str(tmp_path / "merged")])  # report-only mode
    assert [(r["arm"], r["seed"]) for r in merged["runs"]] == [(arm, 0) for arm in arms]
    assert (tmp_path / "merged" / "summary.md").read_text() == text
    with pytest.raises(SystemExit, match="appears twice"):
        main(["--merge", str(out), str(out), "--out", str(tmp_path / "dup")])


# ---- same completions -> same gradients as TRL ---------------------------------------------------------------
FIXED = [  # per prompt, G = 4 completions; "format" and "tag" give them different rewards
    # (think blocks of >= 4 characters: a shorter one earns no format reward, rewards/format.py)
    [
        "<think>one plus</think><answer>1</answer>",
        "<think>b is it</think>",
        "xyz",
        "<think>cc and dd</think> <answer>22</answer>",
    ],
    [
        "<answer>3</answer>",
        "<think>q to r</think>\n<answer>4</answer>",
        "",
        "<think></think><answer>5",
    ],
]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TRL, reason="trl not installed")
def test_same_gradients_as_trl(tmp_path, monkeypatch):
    """aha's GRPO (as vs_trl configures it) and TRL's GRPOTrainer (as vs_trl maps it) fed the same completions:
    the gradient of each of two optimizer steps agrees (step 2 includes the KL term, beta = 0.1, and
    temperature 0.7 scales both arms' logprobs; 2 micro-batches, so accumulation is normalised alike)."""
    from _trl_arm import build_trl
    from aha.config import load_config
    from aha.rollout.base import Completion
    from aha.train.config import TrainConfig
    from aha.train.grpo import GRPOTrainer

    model = build_tiny(tmp_path / "model")
    args = ["--model", str(model), "--task", "countdown", "--steps", "2", "--prompts", "2"]
    args += [
        "--group",
        "4",
        "--micro",
        "4",
        "--beta",
        "0.1",
        "--temperature",
        "0.7",
        "--lr",
        "1e-2",
    ]
    a = parse_args(
        args + ["--rewards", "format:1", "tag:0.5", "--max-grad-norm", "0", "--device", "cpu"]
    )
    task = get_task("countdown")
    prompts, rows = prompt_rows(a, task, None, seed=0)  # 2 steps x 2 prompts, in aha's order
    from aha.models.load import load_tokenizer

    tok = load_tokenizer(str(model))
    group_of = {
        tuple(tok(p, add_special_tokens=False).input_ids): i % 2 for i, p in enumerate(prompts)
    }
    fixed_ids = [
        [tok(c, add_special_tokens=False).input_ids + [tok.eos_token_id] for c in g] for g in FIXED
    ]
    fixed_ids[1][3] = fixed_ids[1][3][:-1]  # one completion ends without EOS (truncated)

    class FixedEngine:
        def generate(self, ids, params):
            out = []
            for j, p in enumerate(ids):
                for c in fixed_ids[group_of[tuple(p)]]:
                    text = tok.decode(c, skip_special_tokens=True)
                    out.append(Completion(j, list(c), [0.0] * len(c), text, "stop"))
            return out

    (tmp_path / "aha.yaml").write_text(json.dumps(aha_config(a, 0, tmp_path / "aha")))
    aha = GRPOTrainer(load_config(TrainConfig, tmp_path / "aha.yaml"))
    aha.engine = aha.rollout.engine = FixedEngine()
    aha_grads = []
    import aha.train.update as update

    clip = update.clip_and_step

    def capture(module, *args, **kwargs):  # the gradients as they reach the clip-and-step
        aha_grads.append({n: p.grad.clone() for n, p in aha.model.named_parameters()})
        return clip(module, *args, **kwargs)

    monkeypatch.setattr(update, "clip_and_step", capture)
    try:
        aha.fit()
    finally:
        aha.close()

    specs = [(n, (n, w)) for n, w in a.rewards]
    trl, _, funcs = build_trl(a, 0, prompts, rows, specs, tmp_path / "trl", cuda=False)

    def fixed_turn(prompt_ids, images, multimodal_fields, num_generations):
        return [fixed_ids[i // 4 % 2][i % 4] for i in range(len(prompt_ids))], None

    trl._generate_single_turn = fixed_turn
    trl_grads = []
    from transformers import AutoModelForCausalLM, TrainerCallback

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            trl_grads.append({n: p.grad.clone() for n, p in model.named_parameters()})

    trl.add_callback(Capture())
    try:
        trl.train()
    finally:
        for f in funcs:
            f.close()
    assert len(aha_grads) == len(trl_grads) == 2
    for step, (ga, gt) in enumerate(zip(aha_grads, trl_grads), start=1):
        assert ga.keys() == gt.keys()
        num = sum((ga[n] - gt[n]).pow(2).sum() for n in ga).sqrt()
        den = sum(ga[n].pow(2).sum() for n in ga).sqrt()
        assert den > 1e-4, f"step {step}: no gradient, the test would prove nothing"
        assert num / den < 1e-3, f"step {step}: relative gradient difference {float(num / den):.2e}"
    # The weights after both steps: the two updates agree (Adam's first steps are nearly sign(grad), so a few
    # elements whose gradient is ~0 may move either way; compare the whole update, not element by element).
    w0 = dict(AutoModelForCausalLM.from_pretrained(model).named_parameters())
    wa, wt = dict(aha.model.named_parameters()), dict(trl.model.named_parameters())
    moved = sum((wa[n] - w0[n]).pow(2).sum() for n in w0).sqrt()
    apart = sum((wa[n] - wt[n]).pow(2).sum() for n in w0).sqrt()
    assert apart / moved < 1e-2, f"updates differ by {float(apart / moved):.2e} of their size"
