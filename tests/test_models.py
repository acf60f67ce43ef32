"""Model loading from local files, LoRA (with the reference = adapters off), gradient checkpointing, errors."""

import json

import pytest
import torch

from aha.config import load_config
from aha.models.load import ModelLoadError, load_model, reference_model
from aha.models.tiny import char_tokenizer, tiny_model
from aha.train.config import TrainConfig
from aha.train.grpo import train


def save_tiny(path):
    tok = char_tokenizer()
    tiny_model(len(tok), family="llama", seed=7).save_pretrained(path)
    tok.save_pretrained(path)


def test_local_directory_loads(tmp_path):
    save_tiny(tmp_path / "m")
    model, tok = load_model(str(tmp_path / "m"), device="cpu")
    assert model.config.model_type == "llama" and model.dtype == torch.float32 and model.training
    assert tok.decode(tok("12+3").input_ids) == "12+3"


def test_saved_tokenizer_reloads_identically(tmp_path):
    save_tiny(tmp_path / "m")
    _, tok = load_model(str(tmp_path / "m"), device="cpu")
    text = "Q: <answer> 1 2</answer>\n 37 + 45"
    assert tok(text).input_ids == char_tokenizer()(text).input_ids
    assert tok.decode(tok(text).input_ids) == text


def test_lora_checkpoint_is_a_merged_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from aha.models.load import merged_state_dict

    model, tok = load_model("tiny-random", lora_r=4, lora_alpha=8)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.get_base_model().save_pretrained(tmp_path, state_dict=merged_state_dict(model))
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # live weights untouched
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([tok("abc 12").input_ids])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, model(ids).logits, atol=1e-5)


def test_missing_or_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("has CUDA")
        load_model("tiny-random", device="cuda")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache, no proxy, not offline, and a fake network: hub["up"] says whether
    connecting to the hub works; hub["probes"] counts the attempts."""
    import socket

    import huggingface_hub.constants

    from aha.models import errors

    for var in (*errors.PROXY_VARS, "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(errors, "_reachable", {})
    state = {"up": False, "probes": 0}

    class Conn:
        def close(self):
            pass

    def connect(address, timeout=None):
        state["probes"] += 1
        if not state["up"]:
            raise OSError("[Errno -2] Name or service not known")
        return Conn()

    monkeypatch.setattr(socket, "create_connection", connect)
    return state


def test_a_hub_id_without_network_fails_at_once(hub, tmp_path, monkeypatch):
    """Offline, an uncached hub id is a one-line error before transformers' minute of retries; a cached id, a
    local path, a built-in name, HF_HUB_OFFLINE and a proxy are not probed."""
    import time

    from aha.config import ConfigError
    from aha.models.errors import unreachable_hub
    from aha.models.load import load_config as model_config
    from aha.preflight import check_model_paths

    t0 = time.monotonic()
    with pytest.raises(
        ModelLoadError, match="not in the local Hugging Face cache and huggingface.co"
    ):
        load_model("Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(ModelLoadError, match="Name or service not known"):
        model_config("Qwen/Qwen2.5-0.5B-Instruct")  # the memory plan reads the config first
    cfg = load_config(TrainConfig, None, ["model.path=Qwen/Qwen2.5-0.5B-Instruct"])
    with pytest.raises(ConfigError, match="HF_ENDPOINT"):
        check_model_paths(cfg)
    assert time.monotonic() - t0 < 10 and hub["probes"] == 1  # probed once per process
    # a cached id: no probe
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("abc")
    assert unreachable_hub("acme/tiny") is None
    for path in ("tiny-base", "tiny-random", str(tmp_path), "./model", "m.gguf"):
        assert unreachable_hub(path) is None, path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert unreachable_hub("acme/other") is None  # transformers answers at once offline
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert unreachable_hub("acme/other") is None  # the download would go through the proxy
    assert hub["probes"] == 1
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")  # an http mirror behind a proxy
    assert unreachable_hub("acme/other") is None
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv(
        "HF_ENDPOINT", "https://mirror.example:80a"
    )  # transformers will name the bad port
    assert unreachable_hub("acme/other") is None
    monkeypatch.setenv("HF_ENDPOINT", "mirror.example")  # no scheme: https
    assert "mirror.example cannot be reached" in unreachable_hub("acme/other")
    monkeypatch.delenv("HF_ENDPOINT")
    assert hub["probes"] == 2
    # a reachable hub (a fresh process): no error here, transformers downloads
    from aha.models import errors

    monkeypatch.setattr(errors, "_reachable", {})
    hub["up"] = True
    assert unreachable_hub("acme/other") is None and hub["probes"] == 3


def test_lora_reference_is_base_model(tmp_path):
    model, tok = load_model("tiny-random", lora_r=4, lora_alpha=8)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in model.parameters()) / 2
    for n, p in model.named_parameters():  # make the adapters non-trivial
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.tensor([tok("abc").input_ids])
    ref = reference_model(model)
    with torch.no_grad():
        with ref() as r:
            off = r(ids).logits
        on = model(ids).logits
        base = model.get_base_model()
        with model.disable_adapter():
            plain = base(ids).logits
    assert torch.allclose(off, plain) and not torch.allclose(on, off)


def lora_run(tmp_path) -> list[str]:
    """Overrides of a LoRA GRPO run on a saved tiny model (saved here)."""
    save_tiny(tmp_path / "m")
    return [
        f"model.path={tmp_path / 'm'}",
        "task.name=arithmetic",
        "sampling.group_size=4",
        "batch.prompts_per_step=2",
        "batch.micro_batch_size=4",
        "sampling.max_new_tokens=8",
        "logging.progress=false",
        "rewards.num_workers=1",
        "model.lora.r=4",
        "optim.lr=1e-2",
        "rewards.funcs=[{name: 'reward_fixtures:count_sevens'}]",
    ]


def test_lora_and_checkpointing_train_and_resume(tmp_path):
    common = lora_run(tmp_path) + [
        "algorithm.beta=0.1",
        "model.gradient_checkpointing=true",
        f"out={tmp_path / 'run'}",
    ]
    train(load_config(TrainConfig, None, common + ["steps=2"]))
    ck = tmp_path / "run" / "checkpoints" / "step-000002"
    assert (ck / "adapter" / "adapter_config.json").is_file() and (ck / "config.json").is_file()
    summary = train(load_config(TrainConfig, None, common + ["steps=3", "resume=true"]))
    assert summary["steps"] == 3
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(
        r["grad_norm"] > 0 for r in rows if r["reward/std"] > 0
    )  # gradients reach the adapters


def test_a_lora_checkpoint_keeps_only_the_adapters_and_resumes_exactly(tmp_path):
    """state/ holds the trainable tensors only (the frozen base is model.path's): a walkthrough's SmolLM2 LoRA
    checkpoint carried 664 MB of base weights there for a 3.7 MB adapter. 2 steps + resume = 3 straight."""
    common = lora_run(tmp_path) + ["eval.limit=0"]
    train(load_config(TrainConfig, None, common + ["steps=3", f"out={tmp_path / 'full'}"]))
    part = [f"out={tmp_path / 'part'}"]
    train(load_config(TrainConfig, None, common + ["steps=2", *part]))
    ck = tmp_path / "part" / "checkpoints" / "step-000002"
    assert json.loads((ck / "state.json").read_text())["weights"] == "trainable"
    import torch.distributed.checkpoint as dcp

    keys = dcp.FileSystemReader(str(ck / "state")).read_metadata().state_dict_metadata
    model_keys = [k for k in keys if k.startswith("model.")]
    assert model_keys and all("lora_" in k for k in model_keys), model_keys
    train(load_config(TrainConfig, None, common + ["steps=3", "resume=true", *part]))
    rows = lambda run: [
        json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
    ]
    full, resumed = rows("full"), rows("part")
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for key in ("reward/mean", "loss", "grad_norm"):
        assert full[2][key] == pytest.approx(resumed[2][key], rel=1e-6, abs=1e-9), key
