"""The demo corpus, problems and tokenizer: no template/tag/held-out leakage; splits disjoint; tokenizer
round-trips the R1-Zero template it never saw."""

import random
import re

import pytest

from aha.data.chain import ChainTask, Problem, chains_in, sample_split, split_of
from aha.data.templates import R1_ZERO
from aha.demo.corpus import CorpusConfig, build_corpus, noisy_steps, segment, step_text
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
        assert all(v >= 0 for v in q.partials())  # minus only when the total stays >= 0


def test_step_text_rewrites_the_chain_by_hand():
    rng = random.Random(1)
    p = Problem((31, 3, 2, 3, 1), ("+", "+", "-", "+"))
    assert step_text(p, rng, p_recheck=0.0) == "31+3+2-3+1 = 34+2-3+1 = 36-3+1 = 33+1 = 34"
    for _ in range(50):  # with a re-check, every segment after the fix is still the right one
        text = step_text(p, rng, p_recheck=1.0)
        assert ("wait" in text or "hmm" in text or "check" in text) and text.removesuffix(
            " (check: 33+1 = 34, yes)"
        ).endswith(" 34")
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
    sentences = [
        s.strip() for s in R1_ZERO.replace("{prompt}", "\x00").split(". ") if len(s.strip()) > 12
    ]
    assert len(sentences) >= 4
    for s in sentences:
        assert s not in text, s
    for frag in (
        "reasoning process here",
        "answer here",
        "conversation between User and Assistant",
    ):
        assert frag not in text
    # the tagged documents are there, with tags copied from their instruction
    assert sum("</" in d for d in docs) > 1000


def test_corpus_has_no_heldout_problem(docs):
    text = "\n".join(docs)
    chains = chains_in(text)
    assert len(chains) > 1000 and chains_in("= 34+2-3+1 = 36-3+1 = 33+1") == ["34+2-3+1", "36-3+1"]
    assert all(split_of(c) == "train" for c in chains)  # questions and every rewritten step
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
        assert (
            tok.decode(ids) == text and 1 not in ids and 0 not in ids
        )  # nothing added, byte-level
    # numbers are spelt one digit per token
    assert [tok.decode([i]) for i in tok(" 126")["input_ids"]] == [" ", "1", "2", "6"]
    # tag names (no leading space) are spelt letter by letter, unseen ones included
    assert [tok.decode([i]) for i in tok(" <think> </answer>")["input_ids"]] == [
        " <",
        "t",
        "h",
        "i",
        "n",
        "k",
        ">",
        " </",
        "a",
        "n",
        "s",
        "w",
        "e",
        "r",
        ">",
    ]
    # frequent words are whole tokens, so the template stays short even with this toy vocabulary
    assert tok(" answer")["input_ids"] == [tok.convert_tokens_to_ids("Ġanswer")]
    assert len(tok(prompt)["input_ids"]) < 0.55 * len(prompt)


def test_autotokenizer_of_a_qwen2_dir_encodes_like_training(docs, tmp_path):
    # transformers picks the tokenizer class from config.json's model_type; it must not change the encoding
    from transformers import AutoTokenizer, Qwen2Config

    tok = train_tokenizer(docs[:1500], vocab_size=400)
    tok.save_pretrained(tmp_path)
    Qwen2Config(
        vocab_size=400,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
    ).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = docs[:100] + [
        R1_ZERO.replace("{prompt}", "Compute 37+5-8") + " <think> 37+5-8 = 42-8 = 34 </think>"
    ]
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert loaded.eos_token_id == 1 and loaded.pad_token_id == 0


def test_left_anchored_merges_by_hand():
    from collections import Counter

    counts = Counter({"Ġab": 3, "Ġac": 2, "Ġb": 1})
    assert left_anchored_merges(counts, 10) == [("Ġ", "a"), ("Ġa", "b"), ("Ġa", "c"), ("Ġ", "b")]
    assert left_anchored_merges(counts, 2) == [("Ġ", "a"), ("Ġa", "b")]


def test_default_corpus_unchanged_by_slip_options():
    """p_slip = p_verify = 0 draws exactly as before those options existed: the shipped tiny-base's corpus.
    The hash is of the corpus built by the code before noisy_steps was added (commit 33d33ee)."""
    import hashlib

    docs = build_corpus(CorpusConfig(n_docs=400, seed=0))
    assert (
        hashlib.sha256("\x00".join(docs).encode()).hexdigest()
        == "9e5ef701fee01b563c5e3b230f3732e0fa8cc6c42d18fe89f139ebcda5f74ff6"
    )


def test_noisy_steps_by_hand():
    p = Problem((31, 3, 2, 3, 1), ("+", "+", "-", "+"))
    rng = random.Random(0)
    assert noisy_steps(p, rng, 0.0, verify=False) == (
        "31+3+2-3+1 = 34+2-3+1 = 36-3+1 = 33+1 = 34",
        34,
    )
    assert noisy_steps(p, rng, 0.0, verify=True) == (
        "31+3+2-3+1 = 34+2-3+1 (verify: 31+3 = 34) = 36-3+1 (verify: 34+2 = 36) = 33+1 (verify: 36-3 = 33)"
        " = 34 (verify: 33+1 = 34)",
        34,
    )
    # one slip, caught: the whole text fixed by the slip's value d
    q = Problem((10, 9, 1), ("-", "+"))
    for _ in range(20):
        text, answer = noisy_steps(q, rng, 1.0, verify=True)
        d1, d2 = (int(re.match(r"\d+", s).group()) for s in re.findall(r"= (\d+[^,]*), wait", text))
        assert (
            text == (f"10-9+1 = {d1}+1, wait, no: 10-9 = 1, so 1+1 = {d2}, wait, no: 1+1 = 2, so 2")
            and answer == 2
        )


def test_slips_keep_values_non_negative():
    """10-9+1 runs through 1, so a slip of -10 at the first step would go negative: only +10, -1 (to 0) and +1
    are drawn there, and every value the text reaches is >= 0."""
    q = Problem((10, 9, 1), ("-", "+"))
    rng = random.Random(1)
    seen = set()
    for _ in range(300):
        text, answer = noisy_steps(q, rng, 1.0, verify=False)
        first = int(text.split(" = ")[1].split("+")[0])
        seen.add(first - 1)
        assert answer >= 0 and first >= 0
    assert seen == {10, -1, 1}  # -10 is never drawn: 1-10 < 0


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


@pytest.mark.parametrize("seed", range(5))
def test_slips_carry_on_unless_verified(seed):
    rng = random.Random(seed)
    for _ in range(100):
        p = sample_split(rng, "train", min_terms=3, max_terms=5)
        # every step slips: the reached answer follows the written (wrong) running values, all >= 0
        text, answer = noisy_steps(p, rng, 1.0, verify=False)
        heads = [int(re.match(r"\d+", seg).group()) for seg in text.split(" = ")]
        assert heads[0] == p.numbers[0] and heads[-1] == answer and min(heads) >= 0
        for i, (op, n) in enumerate(zip(p.ops, p.numbers[1:])):
            assert heads[i + 1] - _apply(heads[i], op, n) in (-10, 10, -1, 1)
        # verified: every slip is caught ("wait, no: a+b = right"), the answer is right
        text, answer = noisy_steps(p, rng, 1.0, verify=True)
        assert answer == p.answer and text.count("wait, no: ") == len(p.ops)
        for a, op, b, v in re.findall(r"wait, no: (\d+)([+-])(\d+) = (\d+)", text):
            assert _apply(int(a), op, int(b)) == int(v)
        assert all(
            segment(p, i) in text for i in range(len(p.ops) + 1)
        )  # every right segment is there


def test_slipping_corpus_keeps_heldout_out_and_answers_consistent():
    cfg = CorpusConfig(n_docs=1500, seed=5, p_slip=0.2, p_verify=0.3)
    docs = build_corpus(cfg)
    assert all(split_of(c) == "train" for d in docs for c in chains_in(d))
    assert any("(verify: " in d for d in docs) and any("wait, no: " in d for d in docs)
    # every worked solution's stated answer is the last running value its steps reach; with slips that stand,
    # some of those answers are wrong (differ from the question's true value)
    tagged = re.compile(r"<(\w+)> (\d+(?:[+-]\d+)+ = [^<]*?) </\1>\s*<(\w+)> (\d+) </\3>")
    plain = re.compile(r"(\d+(?:[+-]\d+)+ = [^\n]*?)\. (?:So the|The) answer is (\d+)")
    kinds = {"tagged": 0, "plain": 0}
    wrong = 0
    for d in docs:
        if m := tagged.search(d):
            work, stated, kind = m.group(2), int(m.group(4)), "tagged"
        elif m := plain.search(d):
            work, stated, kind = m.group(1), int(m.group(2)), "plain"
        else:
            continue
        steps = work.split(" = ")
        assert int(re.match(r"\d+", steps[-1]).group()) == stated, d
        kinds[kind] += 1
        wrong += eval(steps[0]) != stated  # steps[0] is the question's chain: digits and +/- only
    assert min(kinds.values()) > 100 and wrong > 0, (kinds, wrong)
