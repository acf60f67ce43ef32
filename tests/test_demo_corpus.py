"""The demo corpus, problems and tokenizer: no template/tag/held-out leakage; splits disjoint; tokenizer
round-trips the R1-Zero template it never saw."""
import random
import re

import pytest

from aha.data.templates import R1_ZERO
from aha.demo.corpus import CorpusConfig, build_corpus, step_text
from aha.demo.problems import Problem, chains_in, sample_split, split_of
from aha.demo.task import ChainTask
from aha.demo.tokenizer import left_anchored_merges, train_tokenizer



@pytest.fixture(scope="module")
def docs():
    return build_corpus(CorpusConfig(n_docs=4000, seed=3))


def test_problem_values_by_hand():
    p = Problem((37, 5, 8, 6), ("+", "-", "+"))
    assert p.expression == "37+5-8+6"
    assert p.partials() == [42, 34, 40] and p.answer == 40
    rng = random.Random(0)
    for _ in range(200):
        q = sample_split(rng, "test", min_terms=3, max_terms=5)
        assert split_of(q.expression) == "test" and 3 <= len(q.numbers) <= 5
        assert all(v >= 0 for v in q.partials())          # minus only when the total stays >= 0


def test_step_text_rewrites_the_chain_by_hand():
    rng = random.Random(1)
    p = Problem((31, 3, 2, 3, 1), ("+", "+", "-", "+"))
    assert step_text(p, rng, p_recheck=0.0) == "31+3+2-3+1 = 34+2-3+1 = 36-3+1 = 33+1 = 34"
    for _ in range(50):          # with a re-check, every segment after the fix is still the right one
        text = step_text(p, rng, p_recheck=1.0)
        assert ("wait" in text or "hmm" in text or "check" in text) and text.removesuffix(" (check: 33+1 = 34, yes)").endswith(" 34")
        assert text.startswith("31+3+2-3+1 = ")
        for right in ("34+2-3+1", "36-3+1", "33+1"):
            assert right in text


def test_corpus_is_deterministic(docs):
    assert build_corpus(CorpusConfig(n_docs=4000, seed=3)) == docs
    assert build_corpus(CorpusConfig(n_docs=50, seed=4)) != docs[:50]


def test_corpus_has_no_tags_or_template_text(docs):
    text = "\n".join(docs)
    for tag in ("<think>", "</think>", "<answer>", "</answer>", "think>", "answer>"):
        assert tag not in text
    sentences = [s.strip() for s in R1_ZERO.replace("{prompt}", "\x00").split(". ") if len(s.strip()) > 12]
    assert len(sentences) >= 4
    for s in sentences:
        assert s not in text, s
    for frag in ("reasoning process here", "answer here", "conversation between User and Assistant"):
        assert frag not in text
    # the tagged documents are there, with tags copied from their instruction
    assert sum("</" in d for d in docs) > 1000


def test_corpus_has_no_heldout_problem(docs):
    text = "\n".join(docs)
    chains = chains_in(text)
    assert len(chains) > 1000 and chains_in("= 34+2-3+1 = 36-3+1 = 33+1") == ["34+2-3+1", "36-3+1"]
    assert all(split_of(c) == "train" for c in chains)      # questions and every rewritten step
    heldout = ChainTask().dataset("test")[:200]
    assert all(split_of(r["question"].removeprefix("Compute ")) == "test" for r in heldout)
    assert not {r["question"].removeprefix("Compute ") for r in heldout} & set(chains)


def test_task_rows_and_disjoint_splits():
    task = ChainTask(seed=0, train_size=500, test_size=200)
    assert task.accuracy_reward == "exact"
    train, test = task.dataset("train")[:], task.dataset("test")[:]
    assert len(train) == 500 and len(test) == 200 and task.dataset("test")[7] == test[7]
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    r = test[0]
    expr = r["question"].removeprefix("Compute ")
    assert int(r["answer"]) == eval(expr) and r["terms"] == len(re.split(r"[+-]", expr))
    with pytest.raises(ValueError, match="valid: train, test"):
        task.dataset("dev")


def test_corpus_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="p_steps"):
        CorpusConfig(p_steps=1.5)
    with pytest.raises(ValueError, match="min_terms"):
        CorpusConfig(min_terms=4, max_terms=3)


def test_tokenizer_round_trips_unseen_template(docs):
    tok = train_tokenizer(docs[:1500], vocab_size=400)
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and len(tok) <= 400
    prompt = R1_ZERO.replace("{prompt}", "Compute 37+5-8+6")
    completion = " <think> 37+5-8 = 42-8 = 34 </think> <answer> 34 </answer>"
    for text in (prompt, completion, prompt + completion, "unseen: é ✓ {}"):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text and 1 not in ids and 0 not in ids   # nothing added, byte-level
    # numbers are spelt one digit per token
    assert [tok.decode([i]) for i in tok(" 126")["input_ids"]] == [" ", "1", "2", "6"]
    # tag names (no leading space) are spelt letter by letter, unseen ones included
    assert [tok.decode([i]) for i in tok(" <think> </answer>")["input_ids"]] == \
        [" <", "t", "h", "i", "n", "k", ">", " </", "a", "n", "s", "w", "e", "r", ">"]
    # frequent words are whole tokens, so the template stays short even with this toy vocabulary
    assert tok(" answer")["input_ids"] == [tok.convert_tokens_to_ids("Ġanswer")]
    assert len(tok(prompt)["input_ids"]) < 0.55 * len(prompt)


def test_autotokenizer_of_a_qwen2_dir_encodes_like_training(docs, tmp_path):
    # transformers picks the tokenizer class from config.json's model_type; it must not change the encoding
    from transformers import AutoTokenizer, Qwen2Config

    tok = train_tokenizer(docs[:1500], vocab_size=400)
    tok.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=64).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = docs[:100] + [R1_ZERO.replace("{prompt}", "Compute 37+5-8") + " <think> 37+5-8 = 42-8 = 34 </think>"]
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert loaded.eos_token_id == 1 and loaded.pad_token_id == 0


def test_left_anchored_merges_by_hand():
    from collections import Counter

    counts = Counter({"Ġab": 3, "Ġac": 2, "Ġb": 1})
    assert left_anchored_merges(counts, 10) == [("Ġ", "a"), ("Ġa", "b"), ("Ġa", "c"), ("Ġ", "b")]
    assert left_anchored_merges(counts, 2) == [("Ġ", "a"), ("Ġa", "b")]
