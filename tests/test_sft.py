"""The SFT loop: the loss and gradient equal a float64 per-document reference whatever the packing and
micro-batching, a tiny model memorises a completion, stop + resume equals an uninterrupted run, SIGTERM saves."""

import copy
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

import aha.train.sft as sft_module
from aha.cli import cmd_sft
from aha.config import ConfigError, load_config
from aha.rollout import HFEngine, SamplingParams
from aha.train.sft import SFTTrainer, sft
from aha.train.sft_config import SFTConfig


def write_rows(path: Path, n: int = 10) -> Path:
    rows = [
        {"prompt": f"Q{i} ", "completion": f"<think>{'ab' * (i % 4)}</think><answer>{i}</answer>"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg(tmp_path, *extra, data=None):
    data = data or write_rows(tmp_path / "data.jsonl")
    return load_config(
        SFTConfig,
        None,
        [
            "model.path=tiny-random",
            f"data.path={data}",
            f"out={tmp_path / 'run'}",
            "data.max_length=64",
            "batch.batch_size=4",
            "batch.micro_batch_size=2",
            "logging.progress=false",
            "checkpoint.save_every=0",
            *extra,
        ],
    )


def reference_loss(model, trainer, positions):
    """float64, one document at a time: -sum of completion-token logprobs / their number."""
    ref = copy.deepcopy(model).double()
    total, n = torch.zeros((), dtype=torch.float64), 0
    for j in positions:
        ex = trainer.examples[trainer.stream.index(j)]
        x = torch.tensor([ex.input_ids])
        logp = torch.log_softmax(ref(input_ids=x).logits[0, :-1], -1).gather(-1, x[0, 1:, None])[
            :, 0
        ]
        m = torch.tensor(ex.loss_mask[1:], dtype=torch.float64)
        total, n = total - (logp * m).sum(), n + int(m.sum())
    (total / n).backward()
    return float((total / n).detach()), {k: p.grad for k, p in ref.named_parameters()}


@pytest.mark.parametrize(
    "extra",
    [
        ["batch.micro_batch_size=1", "data.packing=false"],
        ["batch.micro_batch_size=8", "data.packing=true"],
        ["batch.micro_batch_size=1", "data.packing=true", "data.max_length=48"],
    ],
)
def test_loss_and_gradient_match_reference(tmp_path, extra, monkeypatch):
    t = SFTTrainer(cfg(tmp_path, "optim.max_grad_norm=0", "batch.batch_size=6", *extra))
    grads, real = {}, sft_module.clip_and_step

    def clip_and_step(model, *a, **k):  # the step frees the gradients: read them just before it
        grads.update({n: p.grad.clone() for n, p in model.named_parameters()})
        return real(model, *a, **k)

    monkeypatch.setattr(sft_module, "clip_and_step", clip_and_step)
    try:
        want_loss, want_grad = reference_loss(t.model, t, range(6))
        m = t.train_step(1)
        assert m["loss"] == pytest.approx(want_loss, rel=1e-5)
        for name, _ in t.model.named_parameters():
            assert torch.allclose(grads[name].double(), want_grad[name], atol=1e-6, rtol=1e-4), name
        assert m["tokens/trained"] == sum(
            sum(t.examples[t.stream.index(j)].loss_mask[1:]) for j in range(6)
        )
    finally:
        t.close()


def test_memorises_a_completion(tmp_path):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"prompt": "Q: ", "completion": "<answer>42</answer>"}) + "\n")
    t = SFTTrainer(cfg(tmp_path, "steps=40", "optim.lr=1e-2", "optim.schedule=constant", data=data))
    try:
        assert t.fit()["steps"] == 40
    finally:
        t.close()
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.1 < rows[0]["loss"]
    [c] = HFEngine(t.model, t.tok).generate(
        [t.tok("Q: ", add_special_tokens=False).input_ids],
        SamplingParams(temperature=0, max_tokens=30, stop_token_ids=[t.tok.eos_token_id]),
    )
    assert c.text == "<answer>42</answer>" and c.finish_reason == "stop"


def test_memorises_a_text_row(tmp_path):
    """TRL's language-modeling rows ({"text": ...}, here under another column) train on the whole text: the
    model continues its first character into the rest and stops."""
    data = tmp_path / "lm.jsonl"
    data.write_text(json.dumps({"body": "Z<answer>42</answer>"}) + "\n")
    extra = ["steps=40", "optim.lr=1e-2", "optim.schedule=constant", "data.text_key=body"]
    t = SFTTrainer(cfg(tmp_path, *extra, data=data))
    try:
        assert t.fit()["steps"] == 40
    finally:
        t.close()
    [c] = HFEngine(t.model, t.tok).generate(
        [t.tok("Z", add_special_tokens=False).input_ids],
        SamplingParams(temperature=0, max_tokens=30, stop_token_ids=[t.tok.eos_token_id]),
    )
    assert c.text == "<answer>42</answer>" and c.finish_reason == "stop"


def test_resume_continues_exactly(tmp_path):
    extra = ["steps=6", "optim.lr=1e-2", "optim.warmup_steps=2", "optim.schedule=cosine"]
    full = tmp_path / "full"
    full.mkdir()
    sft(cfg(full, *extra))
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    part = SFTTrainer(cfg(part_dir, *extra))
    step = part.train_step

    def stop_after_3(k):  # as if SIGTERM arrived during step 3
        part.stop_requested = k == 3
        return step(k)

    part.train_step = stop_after_3
    try:
        assert part.fit()["steps"] == 3
    finally:
        part.close()
    sft(cfg(part_dir, *extra, "resume=true"))
    a = [json.loads(l) for l in (full / "run" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (part_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        for key in ("loss", "grad_norm", "lr", "tokens/trained", "epoch"):
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), (x["step"], key)


def test_sigterm_saves_and_exits(tmp_path):
    t = SFTTrainer(cfg(tmp_path, "steps=100000"))
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        summary = t.fit()
    finally:
        timer.cancel()
        t.close()
    assert summary["stopped_early"] and 0 < summary["steps"] < 100000
    saved = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert saved[-1].name == f"step-{summary['steps']:06d}"
    assert (
        json.loads((saved[-1] / "state.json").read_text())["data_position"] == 4 * summary["steps"]
    )


def test_config_errors_and_cli(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        SFTTrainer(load_config(SFTConfig, None, ["model.path=tiny-random", f"out={tmp_path}"]))
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(SFTConfig, None, ["batch.batchsize=4"])
    with pytest.raises(ConfigError, match="task.name"):
        load_config(SFTConfig, None, ["eval.limit=4"])
    c = load_config(
        SFTConfig, None, ["optim.warmup_steps=3"]
    )  # SFT defaults survive a partial section
    assert (c.optim.lr, c.optim.schedule, c.optim.warmup_steps) == (1e-5, "cosine", 3)
    data = write_rows(tmp_path / "d.jsonl")
    assert (
        cmd_sft(
            [
                "model.path=tiny-random",
                f"data.path={data}",
                f"out={tmp_path / 'cli'}",
                "steps=1",
                "logging.progress=false",
                "batch.batch_size=2",
            ]
        )
        == 0
    )
    assert (tmp_path / "cli" / "checkpoints" / "step-000001" / "config.json").is_file()
