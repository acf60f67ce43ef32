"""SFT data: row formats -> ids + completion mask (hand-computed), first-fit packing, and the no-cross-attention
property of packed rows against separate forwards (float64 reference)."""

import json

import pytest
import torch

from aha.data.sft import (
    Example,
    RowFormat,
    block_causal_mask,
    build_examples,
    collate,
    pack,
    read_rows,
    to_example,
)
from aha.models.tiny import char_tokenizer, tiny_model
from aha.train.sft import packed_logprobs

TOK = char_tokenizer()
ids = lambda s: TOK(s, add_special_tokens=False).input_ids
EOS = TOK.eos_token_id


def test_prompt_completion_row():
    ex = to_example({"prompt": "ab", "completion": "cd"}, TOK)
    assert ex.input_ids == ids("abcd") + [EOS]
    assert ex.loss_mask == [0, 0, 1, 1, 1]
    ex = to_example({"prompt": "ab", "completion": "cd"}, TOK, RowFormat(add_eos=False))
    assert ex.input_ids == ids("abcd") and ex.loss_mask == [0, 0, 1, 1]


def test_text_rows_train_on_the_whole_text():
    """TRL's language-modeling format: every token and the eos are trained; a completion column wins."""
    ex = to_example({"text": "abc"}, TOK)
    assert ex.input_ids == ids("abc") + [EOS] and ex.loss_mask == [1, 1, 1, 1]
    ex = to_example({"body": "xy"}, TOK, RowFormat(text_key="body", add_eos=False))
    assert ex.input_ids == ids("xy") and ex.loss_mask == [1, 1]
    ex = to_example({"text": "zz", "prompt": "a", "completion": "b"}, TOK)
    assert ex.loss_mask == [0, 1, 1]


def test_text_rows_are_checked_before_training():
    from aha.data.read import DataError
    from aha.data.sft import check_rows

    check_rows([{"text": "abc"}, {"prompt": "a", "completion": "b"}], RowFormat(), "x.jsonl")
    for rows, message in [
        ([{"text": "ok"}, {"text": "  "}], "row 2: 'text' is empty"),
        ([{"text": 3}], "row 1: 'text' is a int, not text"),
        ([{"body": "x"}], "neither 'messages', 'completion' nor 'text' (keys: body)"),
    ]:
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_rows(rows, RowFormat(), "x.jsonl")


def test_template_renders_question_like_rl_prompts():
    row = {"question": "2+2", "completion": "4", "prompt": "ignored"}
    ex = to_example(row, TOK, RowFormat(template="Q: {prompt} A:", prefill="<t>"))
    assert ex.input_ids == ids("Q: 2+2 A:<t>4") + [EOS]
    assert sum(ex.loss_mask) == 2  # "4" and eos
    with pytest.raises(ValueError, match="question"):
        to_example({"prompt": "x", "completion": "y"}, TOK, RowFormat(template="plain"))
    with pytest.raises(ValueError, match="completion"):
        to_example({"prompt": "x"}, TOK)


CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def chat_tok():
    tok = char_tokenizer()
    tok.chat_template = CHAT
    return tok


def trained_text(tok, ex):
    return "".join(tok.decode([i]) if m else "_" for i, m in zip(ex.input_ids, ex.loss_mask))


def test_chat_rows_train_on_every_assistant_turn_only():
    tok = chat_tok()
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "ok"},
    ]
    ex = to_example({"messages": msgs}, tok)
    full = "<user>hi|<assistant>yo|<user>q|<assistant>ok|"
    assert tok.decode(ex.input_ids) == full  # no eos added: the template ends turns
    assert (
        trained_text(tok, ex)
        == "_" * len("<user>hi|<assistant>") + "yo|" + "_" * len("<user>q|<assistant>") + "ok|"
    )
    # a conversational prompt + string completion trains on the completion turn only
    ex2 = to_example({"prompt": msgs[:3], "completion": "ok"}, tok)
    assert tok.decode(ex2.input_ids) == full
    assert trained_text(tok, ex2) == "_" * len("<user>hi|<assistant>yo|<user>q|<assistant>") + "ok|"
    with pytest.raises(ValueError, match="chat template"):
        to_example({"messages": msgs}, TOK)


def test_build_examples_truncates_and_drops():
    rows = [
        {"prompt": "abc", "completion": "defgh"},
        {"prompt": "abcdefgh", "completion": "z"},
        {"prompt": "a", "completion": "b"},
    ]
    exs, stats = build_examples(rows, TOK, RowFormat(), max_length=6)
    assert stats == {"rows": 3, "truncated": 2, "dropped": 1, "examples": 2}
    assert exs[0].input_ids == ids("abcdef") and exs[0].loss_mask == [0, 0, 0, 1, 1, 1]
    assert exs[1].input_ids == ids("ab") + [EOS]


def test_pack_first_fit():
    assert pack([5, 9, 3, 7], 12) == [[0, 2], [1], [3]]
    assert pack([5, 9, 3, 7], 12, packing=False) == [[0], [1], [2], [3]]
    assert pack([4, 4, 4], 12) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="max_length"):
        pack([13], 12)


def test_collate_masks_and_positions():
    a = Example([10, 11, 12], [0, 1, 1])
    b = Example([20, 21], [0, 1])
    batch = collate([a, b], [[0, 1]], pad_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.segment_ids.tolist() == [[0, 0, 0, 1, 1]]
    # targets: 11 (trained), 12 (trained), 20 (other document: never), 21 (trained)
    assert batch.loss_mask.tolist() == [[1, 1, 0, 1]]
    two = collate([a, b], [[0], [1]], pad_id=0)
    assert two.input_ids.tolist() == [[10, 11, 12], [20, 21, 0]]
    assert two.segment_ids.tolist() == [[0, 0, 0], [0, 0, -1]]
    assert two.loss_mask.tolist() == [[1, 1], [1, 0]]
    m = block_causal_mask(batch.segment_ids)[0, 0]
    allowed = (m == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_forward_equals_separate_forwards(family, impl):
    model = tiny_model(len(TOK), family=family, seed=3)
    model.config._attn_implementation = impl
    model.eval()
    g = torch.Generator().manual_seed(0)
    exs = [
        Example(torch.randint(3, 100, (n,), generator=g).tolist(), [0, 0] + [1] * (n - 2))
        for n in (5, 9, 3, 7)
    ]
    rows = pack([len(e) for e in exs], 16)
    assert any(len(r) > 1 for r in rows)
    batch = collate(exs, rows, TOK.pad_token_id)
    with torch.no_grad():
        logp = packed_logprobs(model, batch)  # (R, L-1)
        ref64 = model.double()
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                x = torch.tensor([exs[i].input_ids])
                ref = torch.log_softmax(ref64(input_ids=x).logits[0, :-1].double(), -1)
                ref = ref.gather(-1, x[0, 1:, None])[:, 0]  # (n-1,) float64, document alone
                n = len(exs[i])
                assert torch.allclose(logp[r, at : at + n - 1].double(), ref, atol=1e-5)
                at += n


def test_read_rows_formats(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"messages": [{"role": "user", "content": "x"}]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    assert read_rows(str(tmp_path / "d.jsonl")) == rows
    assert read_rows(str(tmp_path / "d.json")) == rows
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl: row 2: invalid JSON"):
        read_rows(str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="no such file"):
        read_rows(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"the split no longer goes in the name.*data.split=test"):
        read_rows("hf:openai/gsm8k:test")  # the old SFT hub syntax names the new one


def test_read_rows_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(
        pa.Table.from_pylist([{"prompt": "a", "completion": "b"}]), tmp_path / "d.parquet"
    )
    assert read_rows(str(tmp_path / "d.parquet")) == [{"prompt": "a", "completion": "b"}]


def test_chat_rows_for_a_tokenizer_without_a_chat_template_are_one_line():
    """Found only once the tokenizer is loaded: a DataError (one line in the CLI, exit 2), not a traceback."""
    from aha.data.read import DataError

    tok = char_tokenizer()
    assert not getattr(tok, "chat_template", None)
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    ]
    with pytest.raises(
        DataError, match="SFT data, row 1: chat-format rows need a tokenizer with a chat"
    ) as e:
        build_examples(rows, tok, RowFormat(), 64)
    assert "\n" not in str(e.value)
