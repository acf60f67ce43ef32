"""GGUF in: a tiny GGUF written here (gguf_fixture) loads through aha as the HF model it was written from,
trains one GRPO step, and saves an ordinary checkpoint that reloads with the same logits and tokenizer."""

import json

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from aha.config import load_config  # noqa: E402
from aha.models.load import ModelLoadError, load_model  # noqa: E402
from aha.models.tokenizer import stop_token_ids  # noqa: E402
from gguf_fixture import CHAT_TEMPLATE, write_tiny_gguf  # noqa: E402

TEXTS = [
    "What is 12 + 35? <think> 12 + 35 = 47 </think> <answer> 47 </answer>",
    "  two  spaces, digits 0123456789 and unicode: é ü 数<|im_end|>",
]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf"
    ref, bare_tok = write_tiny_gguf(path, seed=3)
    return path, ref, bare_tok


def test_gguf_loads_as_the_model_it_was_written_from(tiny_gguf):
    path, ref, bare_tok = tiny_gguf
    model, tok = load_model(str(path), device="cpu")
    assert model.dtype == torch.float32 and model.training
    assert getattr(model.config, "quantization_config", None) is None  # trainable, saveable
    assert getattr(model, "hf_quantizer", None) is None
    # the tokenizer rebuilt from the file's metadata = the one it was written from (encoded as aha does)
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == bare_tok.encode(text).ids
        assert tok.decode(ids) == text
    ids = torch.tensor([bare_tok.encode(t).ids[:24] for t in TEXTS])  # (2, 24)
    with torch.no_grad():
        got, want = model(ids).logits, ref(ids).logits  # (2, 24, V)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # the instruct model's end of turn stops generation; the file's pad id pads
    assert tok.chat_template == CHAT_TEMPLATE
    assert stop_token_ids(tok, model) == (tok.convert_tokens_to_ids("<|im_end|>"),)
    assert tok.pad_token == "<|endoftext|>"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_gguf_saves_an_ordinary_checkpoint(tiny_gguf, tmp_path):
    path, _, _ = tiny_gguf
    model, tok = load_model(str(path), device="cpu")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    tok_cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] != "TokenizersBackend"  # a class transformers 4.x loads too
    again, tok2 = load_model(str(tmp_path), device="cpu")
    ids = torch.tensor([tok(TEXTS[0]).input_ids])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
    assert all(tok2(t).input_ids == tok(t).input_ids for t in TEXTS)
    assert tok2.chat_template == CHAT_TEMPLATE


def test_gguf_trains_a_grpo_step_and_its_checkpoint_reloads(tiny_gguf, tmp_path):
    from aha.train.config import TrainConfig
    from aha.train.grpo import train

    path, ref, _ = tiny_gguf
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"model.path={path}",
            "model.device=cpu",
            "task.name=arithmetic",
            "sampling.group_size=4",
            "batch.prompts_per_step=2",
            "batch.micro_batch_size=8",
            "sampling.max_new_tokens=8",
            "logging.progress=false",
            "rewards.num_workers=1",
            "optim.lr=1e-2",
            "rewards.funcs=[{name: 'reward_fixtures:length'}]",
            "steps=1",
            f"out={tmp_path / 'run'}",
        ],
    )
    assert train(cfg)["steps"] == 1
    ck = tmp_path / "run" / "checkpoints" / "step-000001"
    model, _ = load_model(str(ck), device="cpu")
    assert "quantization_config" not in json.loads((ck / "config.json").read_text())
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["reward/std"] > 0 and row["grad_norm"] > 0
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, ref.state_dict()[n])]
    assert len(moved) == len(ref.state_dict())  # the saved checkpoint holds the stepped weights


def test_gguf_without_the_extra_is_one_line(tiny_gguf, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    with pytest.raises(ModelLoadError, match=r"needs gguf: pip install 'aha-rl\[gguf\]'"):
        load_model(str(tiny_gguf[0]), device="cpu")


def test_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file .* not found"):
        load_model(str(tmp_path / "nope.gguf"), device="cpu")


def test_a_damaged_gguf_file_says_what_to_do(tiny_gguf, tmp_path):
    """A file cut short (an interrupted copy) and a file that is not a GGUF: one line each, with the fix."""
    data = tiny_gguf[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    for end in (100, len(data) * 2 // 3):  # in the header's metadata, in the tensors
        cut.write_bytes(data[:end])
        with pytest.raises(ModelLoadError, match="truncated or damaged: download or copy it again"):
            load_model(str(cut), device="cpu")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf" * 100)
    with pytest.raises(ModelLoadError, match=r"pass a \.gguf model file"):
        load_model(str(fake), device="cpu")


def test_drop_quantization_makes_a_marked_model_saveable(tiny_gguf, tmp_path):
    """Without aha's dequantize request (transformers before GgufConfig(dequantize=)), the dequantized model
    comes back marked as GGUF-quantized and save_pretrained refuses it; drop_quantization lifts that."""
    from transformers import AutoModelForCausalLM

    from aha.models.gguf import drop_quantization

    path = tiny_gguf[0]
    raw = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    if getattr(raw.config, "quantization_config", None) is None:
        pytest.skip("this transformers returns GGUF models unmarked")
    with pytest.raises(Exception, match="quantized"):
        raw.save_pretrained(tmp_path / "refused")
    drop_quantization(raw).save_pretrained(tmp_path / "ok")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ok")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, raw(ids).logits)


def test_gguf_config_without_weights_feeds_the_memory_plan(tiny_gguf):
    """Plans made before the load (train/memory_setup.model_shape) read a .gguf file's config too."""
    from aha.models.load import load_config
    from aha.train.memory_setup import model_shape

    path, ref, _ = tiny_gguf
    cfg = load_config(str(path))
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers) == ("llama", 64, 2)
    shape = model_shape(str(path))
    assert shape.params == sum(p.numel() for p in ref.parameters())
    assert (shape.hidden, shape.layers, shape.kv_heads, shape.tied) == (64, 2, 2, False)


def test_a_second_load_reads_the_dequantized_cache(tiny_gguf, tmp_path, monkeypatch, capsys):
    """The first load saves the dense model, tokenizer and config; the next loads never parse the .gguf
    (its reader is made to fail) and give the same model and tokenizer; a changed file or a damaged cache is
    read from the file again; AHA_GGUF_CACHE=0 writes nothing."""
    import os

    import gguf

    from aha.models import gguf_cache
    from aha.models.load import load_config

    path, _, bare_tok = tiny_gguf
    monkeypatch.setenv("AHA_GGUF_CACHE", str(tmp_path / "cache"))
    first, tok1 = load_model(str(path), device="cpu")
    assert "saved the dequantized tiny-llama.Q8_0.gguf" in capsys.readouterr().err
    done = gguf_cache.cached(path, torch.float32)
    assert done is not None and done.parent == tmp_path / "cache"

    def no_parse(*a, **k):
        raise AssertionError("the .gguf was parsed again")

    with monkeypatch.context() as m:
        m.setattr(gguf.GGUFReader, "__init__", no_parse)
        second, tok2 = load_model(str(path), device="cpu")
        config = load_config(str(path))
    s1, s2 = first.state_dict(), second.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert config.num_hidden_layers == first.config.num_hidden_layers
    for text in TEXTS:
        assert tok2(text, add_special_tokens=False).input_ids == bare_tok.encode(text).ids
    assert (tok2.chat_template, tok2.pad_token, tok2.eos_token) == (
        tok1.chat_template,
        tok1.pad_token,
        tok1.eos_token,
    )
    assert stop_token_ids(tok2, second) == stop_token_ids(tok1, first)
    err = capsys.readouterr().err
    assert "saved the dequantized" not in err and "read from its dequantized cache" in err

    for w in done.glob(
        "*.safetensors"
    ):  # a damaged cache: the file is read again, and cached again
        w.unlink()
    third, _ = load_model(str(path), device="cpu")
    assert torch.equal(third.state_dict()["lm_head.weight"], s1["lm_head.weight"])
    assert "saved the dequantized" in capsys.readouterr().err and any(done.glob("*.safetensors"))

    st = path.stat()  # a changed file (another modification time) misses the cache
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert gguf_cache.cached(path) is None
    load_model(str(path), device="cpu")  # cached again, under the new key; the old one is removed
    new = gguf_cache.cached(path, torch.float32)
    assert new is not None and new != done and not done.exists()
    assert [d.name for d in (tmp_path / "cache").iterdir()] == [new.name]
    capsys.readouterr()
    monkeypatch.setenv("AHA_GGUF_CACHE", "0")
    load_model(str(path), device="cpu")
    assert gguf_cache.cached(path) is None and "saved" not in capsys.readouterr().err


def test_a_cache_that_cannot_be_written_does_not_fail_the_load(
    tiny_gguf, tmp_path, monkeypatch, capsys
):
    path, _, _ = tiny_gguf
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AHA_GGUF_CACHE", str(blocker / "cache"))  # under a file: cannot be made
    model, _ = load_model(str(path), device="cpu")
    err = capsys.readouterr().err
    assert "could not cache the dequantized tiny-llama.Q8_0.gguf" in err
    assert model.config.num_hidden_layers > 0 and not list(tmp_path.glob(".*.tmp"))


def test_the_cache_takes_odd_file_names_and_only_local_rank_0_writes(
    tiny_gguf, tmp_path, monkeypatch
):
    import shutil

    from aha.models import gguf_cache

    path, _, _ = tiny_gguf
    odd = tmp_path / "tiny[v2]*.gguf"  # glob characters in the name
    shutil.copy(path, odd)
    monkeypatch.setenv("AHA_GGUF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LOCAL_RANK", "1")  # a second process of a torchrun job: reads, never writes
    load_model(str(odd), device="cpu")
    assert gguf_cache.cached(odd) is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    load_model(str(odd), device="cpu")
    done = gguf_cache.cached(odd, torch.float32)
    assert done is not None and done.name.startswith("tiny[v2]*-")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [done.name]  # no temporary left


def test_no_home_directory_means_no_cache(monkeypatch):
    from pathlib import Path

    from aha.models import gguf_cache

    def homeless():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("AHA_GGUF_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    assert gguf_cache.cache_root() is None
