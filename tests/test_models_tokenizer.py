"""Tokenizers: the shipped ones load on transformers 4.x and 5.x with unchanged ids; checkpoints aha saves name a
class both load; stop ids come from the generation config (lists included); a missing pad token is supplied
without growing the vocabulary."""

import json

import pytest
from transformers import AutoTokenizer, GenerationConfig

from aha.models.load import BUILTIN, load_model
from aha.models.tiny import char_tokenizer
from aha.models.tokenizer import (
    as_portable,
    ensure_pad_token,
    generation_config_at,
    load_tokenizer,
    stop_token_ids,
)

SAMPLE = "A conversation.\nUser: What is 37 + 45?  <think> 7+5=12, carry 1 </think> <answer> 82 </answer>"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_shipped_tokenizer_class_loads_everywhere_with_the_trained_ids(name):
    from tokenizers import Tokenizer

    path = BUILTIN[name]
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"  # not 5.x's TokenizersBackend
    trained = (
        Tokenizer.from_file(str(path / "tokenizer.json")).encode(SAMPLE).ids
    )  # what the model saw
    assert load_tokenizer(str(path))(SAMPLE).input_ids == trained
    assert AutoTokenizer.from_pretrained(path)(SAMPLE).input_ids == trained


def test_checkpoints_save_a_class_transformers_4_loads(tmp_path):
    for i, tok in enumerate([char_tokenizer(), load_model("tiny-base", device="cpu")[1]]):
        tok.save_pretrained(tmp_path / str(i))
        cfg = json.loads((tmp_path / str(i) / "tokenizer_config.json").read_text())
        assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
        again = load_tokenizer(str(tmp_path / str(i)))
        assert again(SAMPLE).input_ids == tok(SAMPLE).input_ids
        assert (again.eos_token_id, again.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


def test_as_portable_renames_only_the_generic_class(tmp_path):
    from transformers import PreTrainedTokenizerFast as HFFast  # 5.x: TokenizersBackend

    generic = HFFast(tokenizer_object=char_tokenizer().backend_tokenizer, eos_token="<eos>")
    ids = generic(SAMPLE).input_ids
    as_portable(generic).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and generic(SAMPLE).input_ids == ids

    class Qwen2TokenizerLike(HFFast):
        pass

    other = Qwen2TokenizerLike(tokenizer_object=char_tokenizer().backend_tokenizer)
    assert type(as_portable(other)) is Qwen2TokenizerLike


def test_stop_ids_take_every_eos_of_the_generation_config():
    tok = char_tokenizer()  # eos "<eos>" = 1
    assert stop_token_ids(tok) == (1,)
    # Llama-3-Instruct style: several ids end a turn, the tokenizer's own eos among them
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=[7, 1, 9])) == (7, 1, 9)
    assert stop_token_ids(tok, GenerationConfig(eos_token_id=5)) == (5, 1)
    assert stop_token_ids(tok, GenerationConfig()) == (1,)
    model, _ = load_model("tiny-random", device="cpu")
    model.generation_config.eos_token_id = [4, 1]
    assert stop_token_ids(tok, model) == (4, 1)  # a model stands for its generation config


def test_missing_pad_token_comes_from_the_model_without_new_rows():
    tok = char_tokenizer()
    n = len(tok)
    tok.pad_token = None
    ensure_pad_token(tok, GenerationConfig(pad_token_id=2, eos_token_id=1))
    assert tok.pad_token_id == 2 and len(tok) == n
    tok.pad_token = None
    ensure_pad_token(tok, GenerationConfig(eos_token_id=[7, 1]))  # no pad id: the first end token
    assert tok.pad_token_id == 7 and len(tok) == n
    tok.pad_token = None
    ensure_pad_token(tok, GenerationConfig(pad_token_id=10**6))  # out of range: ignored
    assert tok.pad_token_id == tok.eos_token_id and len(tok) == n


def test_generation_config_at(tmp_path):
    assert generation_config_at(str(tmp_path)) is None
    GenerationConfig(eos_token_id=[3, 4]).save_pretrained(tmp_path)
    assert generation_config_at(str(tmp_path)).eos_token_id == [3, 4]
    assert generation_config_at(str(tmp_path / "x.gguf")) is None
