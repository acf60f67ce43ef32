"""Rejection sampling: readability filters and per-prompt selection on hand-made completions, the written SFT
rows and provenance, crash + resume giving the uninterrupted file, and a teacher behind `aha serve`."""

import json
import re

import numpy as np
import pytest

from aha.config import ConfigError, load_config
from aha.data import get_task
from aha.data.sft import RowFormat, to_example
from aha.models.tiny import char_tokenizer
from aha.rollout import Completion
from aha.sample import FilterConfig, ResumableWriter, SampleConfig, readability, sample, select

TOK = char_tokenizer()


def test_readability_filters():
    f = FilterConfig()
    assert readability("<think>add the numbers then check</think><answer>5</answer>", f) == (
        None,
        1.0,
    )
    assert readability("<think>12 + 30 = 42</think><answer>42</answer>", f) == (
        None,
        None,
    )  # no words: not judged
    reason, lang = readability("<think>we add 这个 数字 then</think><answer>5</answer>", f)
    assert reason == "language" and lang == pytest.approx(3 / 7)  # we add then | 这 个 数 字
    assert (
        readability("<think>" + "word " * 500 + "</think>", FilterConfig(max_paragraph_chars=100))[
            0
        ]
        == "long_paragraph"
    )
    assert (
        readability("<think>a\n\n" + "b" * 90 + "</think>", FilterConfig(max_paragraph_chars=100))[
            0
        ]
        is None
    )
    assert readability("<think>run ```print(1)```</think>", f)[0] == "code_block"
    assert (
        readability("<think>run ```print(1)```</think>", FilterConfig(no_code_blocks=False))[0]
        is None
    )
    assert readability("<think>这个</think>", FilterConfig(language=None))[0] is None


def test_select_counts_and_keeps_up_to_m():
    texts = [
        "<think>a</think> ok",
        "<think>a</think>   ok",
        "wrong",
        "trunc",
        "<think>b</think> ok2",
        "<think>c</think> x",
        "<think>d</think> y",
    ]
    truncated = [False, False, False, True, False, False, False]
    reward = np.array([1, 1, 0, 1, 1, np.nan, 1.0])
    fmt = np.array([1, 1, 1, 1, 1, 1, 0.0])
    lengths = [9, 9, 5, 5, 3, 4, 4]
    cfg = load_config(SampleConfig, None, ["m=1"])
    keep, counts, _ = select(texts, truncated, reward, fmt, cfg, lengths)
    assert keep == [0]
    assert counts == {
        "truncated": 1,
        "wrong": 2,
        "format": 1,
        "language": 0,
        "long_paragraph": 0,
        "code_block": 0,
        "duplicate": 1,
        "over_m": 1,
    }
    cfg = load_config(SampleConfig, None, ["m=1", "prefer=shortest"])
    assert select(texts, truncated, reward, fmt, cfg, lengths)[0] == [4]
    cfg = load_config(SampleConfig, None, ["m=0", "dedupe=false", "filters.require_format=false"])
    assert select(texts, truncated, reward, fmt, cfg, lengths)[0] == [0, 1, 4, 6]


class ScriptedEngine:
    """Answers "What is a + b?" / "a * b": sample j % 3 == 0 right and formatted, 1 wrong, 2 right but unformatted.
    The text depends on the call's seed, so a resumed run only matches if every chunk gets its own seed back."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls, self.fail_on_call = 0, fail_on_call

    def generate(self, prompts, params):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("engine died")
        out = []
        for i, p in enumerate(prompts):
            a, op, b = re.search(r"What is (\d+) ([+*]) (\d+)\?", TOK.decode(p)).groups()
            right = int(a) + int(b) if op == "+" else int(a) * int(b)
            for j in range(params.n):
                text = [
                    f"<think>seed {params.seed} sample {j}</think> <answer>{right}</answer>",
                    f"<think>guess</think> <answer>{right + 1}</answer>",
                    f"<answer>{right}</answer>",
                ][j % 3]
                out.append(
                    Completion(
                        i,
                        TOK(text, add_special_tokens=False).input_ids + [1],
                        [0.0] * (len(text) + 1),
                        text,
                        "stop",
                    )
                )
        return out


def cfg_for(tmp_path, *extra):
    return load_config(
        SampleConfig,
        None,
        [
            "model.path=tiny-random",
            "task.name=arithmetic",
            "verifier=exact",
            "num_prompts=7",
            "k=6",
            "m=1",
            "prompts_per_call=3",
            "progress=false",
            "reward_workers=1",
            f"out={tmp_path}",
            *extra,
        ],
    )


def test_rows_stats_and_provenance(tmp_path):
    stats = sample(cfg_for(tmp_path), ScriptedEngine(), TOK, "teacher-x")
    rows = [json.loads(l) for l in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and [r["prompt_index"] for r in rows] == list(range(7))
    assert stats["samples"] == 42 and stats["kept"] == 7 and stats["prompts_kept"] == 7
    assert (
        stats["wrong"] == 14
        and stats["format"] == 14
        and stats["over_m"] == 7
        and stats["duplicate"] == 0
    )
    assert stats["accept_rate"] == pytest.approx(7 / 42)
    test = get_task("arithmetic").dataset("train")
    for r in rows:
        assert (
            r["question"] == test[r["prompt_index"]]["question"]
            and r["answer"] == test[r["prompt_index"]]["answer"]
        )
        assert r["completion"].endswith(f"<answer>{r['answer']}</answer>") and r["sample"] == 0
        assert (r["model"], r["step"], r["reward"], r["format"], r["task"]) == (
            "teacher-x",
            None,
            1.0,
            1.0,
            "arithmetic",
        )
        ex = to_example(r, TOK, RowFormat(template="r1-zero"))  # loadable by aha sft, same prompt
        assert TOK.decode(ex.input_ids[: sum(1 for m in ex.loss_mask if not m)]) == r["prompt"]
    assert json.loads((tmp_path / "stats.json").read_text())["kept"] == 7


def test_crash_and_resume_equal_uninterrupted_run(tmp_path):
    sample(cfg_for(tmp_path / "full"), ScriptedEngine(), TOK, "t")
    with pytest.raises(RuntimeError, match="engine died"):
        sample(
            cfg_for(tmp_path / "part"), ScriptedEngine(fail_on_call=3), TOK, "t"
        )  # dies on the 3rd chunk
    part = tmp_path / "part" / "data.jsonl"
    assert len(part.read_text().splitlines()) == 6  # 2 chunks of 3 prompts committed
    with part.open("a") as f:  # a chunk that wrote rows but no progress
        f.write(
            json.dumps({"prompt_index": 6, "completion": "stale"})
            + "\n"
            + '{"prompt_index": 6, "compl'
        )
    eng = ScriptedEngine()
    sample(cfg_for(tmp_path / "part"), eng, TOK, "t")
    assert eng.calls == 1  # only the last chunk was generated
    assert part.read_text() == (tmp_path / "full" / "data.jsonl").read_text()
    again = ScriptedEngine()
    assert (
        sample(cfg_for(tmp_path / "part"), again, TOK, "t")["kept"] == 7 and again.calls == 0
    )  # all done


def test_a_rerun_with_other_settings_is_refused_and_more_prompts_are_added(tmp_path):
    """Rows made with k=6 are not topped up with k=8 rows, nor is config.yaml rewritten to say k=8; a rerun that
    only asks for more prompts samples just those."""
    from aha.config import ConfigError

    sample(cfg_for(tmp_path), ScriptedEngine(), TOK, "t")
    saved = (tmp_path / "config.yaml").read_text()
    for change in (["k=8"], ["sampling.temperature=1.2", "verifier=accuracy"]):
        eng = ScriptedEngine()
        with pytest.raises(ConfigError, match="holds samples made with other settings") as e:
            sample(cfg_for(tmp_path, *change), eng, TOK, "t")
        assert eng.calls == 0 and (tmp_path / "config.yaml").read_text() == saved
        assert "\n" not in str(e.value) and "choose another out=DIR" in str(e.value)
    assert "k: 6 -> 8" in str(
        pytest.raises(ConfigError, sample, cfg_for(tmp_path, "k=8"), None, TOK).value
    )
    eng = ScriptedEngine()
    stats = sample(cfg_for(tmp_path, "num_prompts=9", "progress=true"), eng, TOK, "t")
    assert eng.calls == 1 and stats["prompts"] == 9


def test_writer_drops_uncommitted_rows(tmp_path):
    w = ResumableWriter(tmp_path)
    w.commit([0, 1], [{"prompt_index": 0}, {"prompt_index": 1}], {"kept": 2})
    with (tmp_path / "data.jsonl").open("a") as f:
        f.write('{"prompt_index": 2}\n')
    with (tmp_path / "progress.jsonl").open("a") as f:
        f.write('{"prompts": [2')
    w2 = ResumableWriter(tmp_path)
    assert w2.done == {0, 1} and w2.totals() == {"kept": 2}
    assert (tmp_path / "data.jsonl").read_text().count("\n") == 2


def test_teacher_behind_aha_serve(tmp_path):
    from aha.models.tiny import tiny_model
    from aha.rollout import HFEngine
    from aha.serve import AhaServer

    model = tiny_model(len(TOK), seed=1).eval()
    with AhaServer(HFEngine(model, TOK), TOK, "tiny-teacher", port=0) as server:
        cfg = cfg_for(
            tmp_path,
            "engine=openai",
            f"openai.base_url={server.url}",
            "openai.model=tiny-teacher",
            "openai.concurrency=2",
            "num_prompts=2",
            "k=2",
            "m=0",
            "verifier=format",
            "min_reward=0",
            "filters.require_format=false",
            "filters.language=null",
            "filters.drop_truncated=false",
            "sampling.max_new_tokens=6",
            "dedupe=false",
        )
        stats = sample(cfg)
    rows = [json.loads(l) for l in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert stats["kept"] == 4 and len(rows) == 4
    assert rows[0]["model"] == f"tiny-teacher@{server.url}" and rows[0]["step"] is None
    assert (
        len((tmp_path / "requests.jsonl").read_text().splitlines()) == 2
    )  # one cached request per prompt


def test_only_a_torn_last_row_is_dropped(tmp_path, capsys):
    """Issue 17, item 6: a damaged middle row is an error naming file:line, not silently dropped."""
    sample(cfg_for(tmp_path), ScriptedEngine(), TOK, "t")
    data = tmp_path / "data.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:1] + ['{"prompt_index": 1, "compl\n'] + lines[2:]))
    with pytest.raises(ConfigError, match=re.escape(f"{data}:2 is not a JSON row")):
        sample(cfg_for(tmp_path), ScriptedEngine(), TOK, "t")
    progress = tmp_path / "progress.jsonl"
    progress.write_text(progress.read_text() + "\x00\x00\x00")  # a torn last line (binary garbage)
    data.write_text("".join(lines))
    again = ScriptedEngine()
    assert sample(cfg_for(tmp_path), again, TOK, "t")["kept"] == 7 and again.calls == 0
    assert f"{progress}:4: dropped a torn last line" in capsys.readouterr().out


def test_stats_count_the_rows_really_there(tmp_path, capsys):
    """A committed chunk whose last row was cut off (the file damaged after the commit) is sampled again, so
    stats.json never counts a row data.jsonl does not hold."""
    sample(cfg_for(tmp_path / "full"), ScriptedEngine(), TOK, "t")
    sample(cfg_for(tmp_path / "cut"), ScriptedEngine(), TOK, "t")
    data = tmp_path / "cut" / "data.jsonl"
    data.write_text(data.read_text()[:-20])  # the last row (prompt 6, the third chunk) torn
    eng = ScriptedEngine()
    stats = sample(cfg_for(tmp_path / "cut"), eng, TOK, "t")
    rows = data.read_text().splitlines()
    assert eng.calls == 1 and stats["kept"] == len(rows) == 7
    assert json.loads((tmp_path / "cut" / "stats.json").read_text())["kept"] == 7
    assert data.read_text() == (tmp_path / "full" / "data.jsonl").read_text()
    assert "sampling them again" in capsys.readouterr().out


def test_the_heartbeat_is_written_where_the_bar_is(tmp_path, capsys, monkeypatch):
    """Between chunks a line says the run is alive, on stderr with the bar (on stdout it landed mid-bar when
    both went to one file)."""
    import time

    import aha.progress

    class Quick(aha.progress.Heartbeat):
        def __init__(self, label, log, every=10.0, status=""):
            super().__init__(label, log, 0.05, status)

    class Slow(ScriptedEngine):
        def generate(self, prompts, params):
            time.sleep(0.3)
            return super().generate(prompts, params)

    monkeypatch.setattr(aha.progress, "Heartbeat", Quick)
    sample(cfg_for(tmp_path, "progress=true"), Slow(), TOK, "t")
    out, err = capsys.readouterr()
    assert "sample: " not in out
    assert re.search(r"(^|\n|\r)sample: (the first chunk|\d/7 prompts done)", err), err


def test_prompts_are_fitted_to_the_models_context(tmp_path, capsys):
    """As `aha eval` does: a prompt that cannot leave room for new tokens is skipped and counted, and
    max_new_tokens is lowered to what the longest kept prompt leaves (prompts here: 434-438 tokens)."""
    from types import SimpleNamespace

    class Bounded(ScriptedEngine):
        model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=873))

        def generate(self, prompts, params):
            self.max_tokens = params.max_tokens
            assert all(len(p) <= 437 for p in prompts)
            return super().generate(prompts, params)

    engine = Bounded()
    stats = sample(cfg_for(tmp_path), engine, TOK, "t")
    assert stats["too_long"] == 1 and stats["prompts"] == 7 and stats["samples"] == 36
    assert engine.max_tokens == 873 - 436
    rows = [json.loads(l) for l in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert sorted(r["prompt_index"] for r in rows) == [0, 1, 2, 3, 4, 6]
    out = capsys.readouterr().out
    assert "1 of 7 prompts skipped (too long for the model's 873-token context" in out
    assert "sampling.max_new_tokens 1024 -> 437" in out
