"""RewardRunner: the score table, user rewards, timeouts, dead workers, and no leaked processes."""

import glob
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from aha.rewards import RewardRunner, RewardSpec
from aha.rewards.code import isolation

FIXTURES = str(Path(__file__).parent / "fixtures")


@pytest.fixture(autouse=True)
def _fixture_path(monkeypatch):
    monkeypatch.syspath_prepend(FIXTURES)  # workers inherit sys.path, so they can import reward_fns


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every live (non-zombie) process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                out[int(d)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def _descendants(procs=None) -> set[int]:
    procs = _processes() if procs is None else procs
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, (ppid, _, _) in procs.items() if ppid in frontier} - found
        found |= frontier
    return found


@pytest.fixture
def no_leaks():
    """Asserts the test leaves no process behind: no new descendant, nothing left in a worker's group.
    The forkserver and resource tracker that multiprocessing keeps for the whole session are warmed first."""
    with RewardRunner([("math", 1.0)], num_workers=1) as r:
        r.score(["<answer>1</answer>"], [{"answer": "1"}])
    before = _descendants()
    groups: set[int] = set()
    yield groups  # the test adds the worker pids (= their process groups)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # killed processes may take a moment to be reaped
        procs = _processes()
        left = (_descendants(procs) - before) | {p for p, (_, g, _) in procs.items() if g in groups}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"
    scratch = [
        p
        for g in groups
        for p in glob.glob(os.path.join(tempfile.gettempdir(), f"aha-scratch-{g}-*"))
    ]
    assert not scratch, f"scratch directories left behind: {scratch}"


def test_score_table_and_metrics():
    completions = [
        "<think>9+9=18</think><answer>18</answer>",
        "<think>7+1=8?</think><answer>7</answer>",
        "<answer>(1 + 2) * 3</answer>",
        "no tags",
    ]
    rows = [
        {"answer": "#### 18"},
        {"answer": "\\boxed{8}"},
        {"numbers": [1, 2, 3], "target": 9},
        {"numbers": [1], "target": 2},
    ]
    with RewardRunner(
        [("math", 1.0), ("countdown", 1.0), RewardSpec("format", 0.5)], timeout=5
    ) as r:
        res = r.score(completions, rows)
    assert res.names == ["math", "countdown", "format"]
    nan = np.nan
    np.testing.assert_array_equal(res.scores, [[1, nan, 1], [0, nan, 1], [nan, 1, 0], [nan, 0, 0]])
    np.testing.assert_array_equal(res.total, [1.5, 0.5, 1.0, 0.0])
    assert res.scores.dtype == np.float64 and res.total.shape == (4,)
    assert res.metrics == {
        "reward/math": 0.5,
        "reward/countdown": 0.5,
        "reward/format": 0.5,
        "reward/total": 0.75,
        "reward/timeouts": 0.0,
        "reward/errors": 0.0,
    }


def test_in_process_mode_and_options():
    rows = [{"answer": "1"}, {"answer": "2", "lang": "zh"}]
    comps = ["reason</think><answer>1</answer>", "一加一等于二</think><answer>2</answer>"]
    with RewardRunner(
        [("format", 1), ("exact", 1), RewardSpec("language", 1, {"lang": "en"})],
        num_workers=0,
        think_prefilled=True,
    ) as r:
        res = r.score(comps, rows)
    np.testing.assert_array_equal(
        res.scores, [[1, 1, 1], [1, 1, 1]]
    )  # the row's lang overrides the spec's


def test_user_rewards_none_and_errors():
    comps, rows = ["short", "a much longer one", "also long enough"], [{}, {"skip": True}, {}]
    with RewardRunner([("reward_fns:length_over_10", 1.0)]) as r:
        res = r.score(comps, rows)
    np.testing.assert_array_equal(res.scores[:, 0], [0.0, np.nan, 1.0])  # None -> does not apply
    np.testing.assert_array_equal(res.total, [0.0, np.nan, 1.0])
    from aha.rewards.runner import RewardError

    for name in ["raises", "wrong_length", "not_a_number"]:
        with RewardRunner([(f"reward_fns:{name}", 1.0)]) as r:
            # failing on every completion of the first batch is a broken reward: one line, not zeros
            with (
                pytest.warns(RuntimeWarning, match=name),
                pytest.raises(RewardError, match="failed on all 3 completions of the first batch"),
            ):
                r.score(comps, rows)
            res = r.score(comps, rows)  # later batches: scored 0, counted
        np.testing.assert_array_equal(res.scores[:, 0], [0, 0, 0])
        assert res.metrics["reward/errors"] == 3.0 and res.metrics["reward/timeouts"] == 0.0


def test_empty_batch_and_threads():
    import threading

    with RewardRunner([("math", 1.0), ("format", 1.0)]) as r:
        res = r.score([], [])
        assert (
            res.scores.shape == (0, 2)
            and res.total.shape == (0,)
            and res.metrics["reward/errors"] == 0.0
        )
    out = {}
    # called from a non-main thread (math-verify's signal timeouts are off there; in-process path)
    with RewardRunner([("math", 1.0)], num_workers=0) as r:
        t = threading.Thread(
            target=lambda: out.update(
                res=r.score(["<answer>\\frac{2}{4}</answer>"], [{"answer": "\\boxed{0.5}"}])
            )
        )
        t.start()
        t.join()
    assert out["res"].scores.tolist() == [[1.0]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        RewardRunner([("nope", 1.0)])
    with (
        RewardRunner([("format", 1.0)]) as r,
        pytest.raises(ValueError, match="one row per completion"),
    ):
        r.score(["a", "b"], [{}])


@pytest.mark.parametrize(
    "fn,marker,kind",
    [
        ("hang_on_loop", "LOOP", "timeouts"),
        ("sleep_forever_in_c", "SLEEP", "timeouts"),
        ("spawn_and_hang", "SPAWN", "timeouts"),
        ("die", "DIE", "errors"),
    ],
)
def test_stuck_or_dead_worker_is_replaced(no_leaks, fn, marker, kind):
    comps = ["fine", marker, "fine", "fine"]
    start = time.monotonic()
    with RewardRunner([(f"reward_fns:{fn}", 1.0)], timeout=0.5, num_workers=2) as r:
        warm = r.score(["fine"], [{}])  # start the workers
        no_leaks.update(r._pool.pids())
        res = r.score(comps, [{}] * 4)
        no_leaks.update(r._pool.pids())
        assert r._pool.replaced >= 1
        again = r.score(["fine"] * 3, [{}] * 3)  # the pool works after a replacement
    np.testing.assert_array_equal(warm.scores[:, 0], [1.0])
    np.testing.assert_array_equal(res.scores[:, 0], [1, 0, 1, 1])  # only the stuck item scores 0
    assert res.metrics[f"reward/{kind}"] == 1.0
    np.testing.assert_array_equal(again.scores[:, 0], [1, 1, 1])
    # chunk budget 4 x 0.5 s, then the retry of the stuck item alone (0.5 s); plus worker start-up
    assert time.monotonic() - start < 15


def adversarial_batch():
    """200 completions built from the issue's attacks, each paired with a row whose right answer differs."""
    math_attacks = [
        "9**9**9**9",
        "10^{10^{10^{10}}}",
        "\\frac{1}{0}",
        "{" * 5000 + "1" + "}" * 5000,
        "7" * 100_000,
        "\\sin(" * 11 + "x" + ")" * 11,
        "2^{1000000}",
        "1000000!",
        "\\boxed{" * 3000,
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
        "x" * 999,
        "\x00\ud800",
    ]
    countdown_attacks = [
        "9**9**9**9",
        "(" * 5000 + "1" + ")" * 5000,
        "__import__('os').system('id')",
        "1/0",
        "1 + 1" * 20_000,
    ]
    out = []
    for k in range(200):
        if k % 40 == 39:
            out.append(("LOOP", {}))  # a user reward spinning forever on this one
        elif k % 2:
            a = math_attacks[k % len(math_attacks)]
            out.append((f"<think>r</think><answer>{a}</answer>", {"answer": "#### 42"}))
        else:
            a = countdown_attacks[k % len(countdown_attacks)]
            out.append(
                (f"<think>r</think><answer>{a}</answer>", {"numbers": [1, 2, 3], "target": 42})
            )
    if isolation() == "bwrap":  # infinite-loop code through the sandboxed code reward
        for k in range(3, 200, 50):
            loop = "<answer>```python\nwhile True:\n    pass\n```</answer>"
            out[k] = (loop, {"tests": [{"input": "", "output": "1"}]})
    return [c for c, _ in out], [r for _, r in out]


def test_200_adversarial_completions_bounded_and_clean(no_leaks):
    comps, rows = adversarial_batch()
    timeout = 0.5
    start = time.monotonic()
    specs = [("math", 1.0), ("countdown", 1.0), ("reward_fns:hang_on_loop", 0.0)]
    if isolation() == "bwrap":
        specs.append(RewardSpec("code", 1.0, {"timeout": 0.3, "budget": 0.3}))
    with RewardRunner(specs, timeout=timeout, num_workers=2) as r:
        res = r.score(comps, rows)
        no_leaks.update(r._pool.pids())
    elapsed = time.monotonic() - start
    acc = res.scores[:, [0, 1, 3]] if res.scores.shape[1] == 4 else res.scores[:, :2]
    assert np.all(np.isnan(acc) | (acc == 0.0)) and np.all(np.nansum(acc, axis=1) == 0.0)
    loops = [i for i, c in enumerate(comps) if c == "LOOP"]
    assert np.all(res.scores[loops, 2] == 0.0) and res.metrics["reward/timeouts"] >= len(loops)
    # Bound: the guards answer most attacks at once; what reaches sympy or loops is killed at `timeout`:
    # 5 LOOP chunks + 5 retries + ~8 nested-\sin items, 0.5 s each, and 4 looping programs stopped by the
    # sandbox at 0.3 s, on 2 workers -> ~6 s, plus start-up.
    assert elapsed < 30, f"took {elapsed:.1f}s"


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_without_main_guard_is_told_so(tmp_path, guarded):
    """Workers import the main script first (forkserver/spawn): without an `if __name__ == "__main__":` guard the
    script runs again in each worker and they die at start; the error names the guard, not a broken install."""
    body = (
        "from aha.rewards import RewardRunner\n"
        "with RewardRunner([('math', 1.0)], num_workers=1) as r:\n"
        "    print('scores', r.score(['<answer>1</answer>'], [{'answer': '1'}]).total.tolist())\n"
    )
    if guarded:
        body = "if __name__ == '__main__':\n" + "".join(
            "    " + ln + "\n" for ln in body.splitlines()
        )
    script = tmp_path / "train_script.py"
    script.write_text(body)
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    if guarded:
        assert out.returncode == 0, out.stderr[-2000:]
        assert "scores [1.0]" in out.stdout
    else:
        assert out.returncode != 0
        last = out.stderr.strip().splitlines()[-1]
        assert "die on start" in last and "train_script.py" in last
        assert 'if __name__ == "__main__":' in last


def test_a_reward_that_applies_to_no_row_is_said_once():
    """A code task without its `tests` column: the code reward applied to nothing and the run trained on zero
    reward without a word. Now one warning naming the missing field and the rows' fields."""
    import warnings

    rows = [{"prompt": "p", "answer": "1"}] * 3
    with RewardRunner([("code", 1.0), ("format", 0.5)], num_workers=0) as runner:
        with pytest.warns(
            RuntimeWarning,
            match=r"reward 'code' applies to none of these 3 rows: they lack 'tests' \(rows have answer, prompt\)",
        ):
            res = runner.score(["x"] * 3, rows)
        assert np.isnan(res.scores[:, 0]).all()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once per run
            runner.score(["x"] * 3, rows)


def test_reward_functions_written_for_trl_run_as_they_are():
    """TRL calls reward functions by keyword, f(prompts=, completions=, completion_ids=, **columns), and gives
    conversational rows (a message-list prompt) message-list completions: aha does the same."""
    chat = [{"role": "user", "content": "What is 3 + 4?"}]
    rows = [{"prompt": chat, "solution": "7"}, {"prompt": "3 + 4 =", "solution": "8"}]
    comps = ["<think>3 + 4</think><answer>7</answer>", "seven"]
    with RewardRunner([("reward_fns:trl_prompts_and_ids", 1.0)], num_workers=1) as r:
        res = r.score(comps, rows, completion_ids=[[5, 6, 7], [8]])
    # 3 ids + 0.5 (message-list prompt) + 1 (solution 7); 1 id, a string prompt, solution 8
    assert res.scores[:, 0].tolist() == [4.5, 1.0]
    with RewardRunner([("reward_fns:trl_think_format", 1.0)], num_workers=1) as r:
        res = r.score(comps, [rows[0], rows[0]])  # conversational rows: message-list completions
    assert res.scores[:, 0].tolist() == [1.0, 0.0] and res.metrics["reward/errors"] == 0.0


def test_a_keyword_called_reward_that_hangs_costs_only_its_item(no_leaks):
    with RewardRunner([("reward_fns:trl_hang_on_loop", 1.0)], timeout=1.0, num_workers=1) as r:
        res = r.score(["ok", "LOOP", "fine"], [{}, {}, {}])
    assert res.scores[:, 0].tolist() == [1.0, 0.0, 1.0] and res.metrics["reward/timeouts"] == 1.0


def trl_style_local(completions, **kwargs):  # a test-module function: workers import it by its path
    return [float(len(c)) for c in completions]


def batch_size_seen(completions, **kwargs):
    return [float(len(completions))] * len(completions)


def batch_size_positional(texts):
    return [float(len(texts))] * len(texts)


@pytest.mark.parametrize("workers", [0, 2])
def test_chunk_sets_the_completions_a_reward_call_sees(workers):
    """8 a call by default; chunk=N, N; chunk=0, all of them in one call as TRL's trainer does (open-r1's
    len_reward normalises over the completions it is given)."""
    from aha.rewards import RewardSpec

    rows = [{}] * 20
    for fn in ("batch_size_seen", "batch_size_positional"):
        path = f"{__name__}:{fn}"
        for chunk, want in [
            (None, [8.0] * 16 + [4.0] * 4),
            (6, [6.0] * 18 + [2.0] * 2),
            (0, [20.0] * 20),
        ]:
            spec = RewardSpec(path) if chunk is None else RewardSpec(path, chunk=chunk)
            with RewardRunner([spec], num_workers=workers) as r:
                assert r.score(["x"] * 20, rows).scores[:, 0].tolist() == want, (fn, chunk)


def test_a_function_is_taken_as_a_reward_by_its_import_path():
    """TRL's reward_funcs=[fn]: RewardRunner([(fn, weight)]) takes the function (it raised a TypeError)."""
    with RewardRunner([(trl_style_local, 1.0)], num_workers=0) as r:
        assert r.score(["ab", "abc"], [{}, {}]).scores[:, 0].tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="at the top level of a module"):
        RewardRunner([(lambda completions: [1.0] * len(completions), 1.0)])
    import functools

    # TRL's factories return callable objects, functools.partial has no name: both are told how to pass them
    with pytest.raises(ValueError, match="functools.partial or a callable object"):
        RewardRunner([(functools.partial(trl_style_local, x=1), 1.0)])


def token_length(completion_ids, **kwargs):  # TRL's soft overlong punishment reads only the ids
    return [float(len(ids)) for ids in completion_ids]


def option_and_columns(completions, delimiters=("x",), **kwargs):
    ok = isinstance(delimiters, list) and all(isinstance(d, str) for d in delimiters)
    leaked = "prompt" in kwargs or "completion" in kwargs
    return [
        float(ok and not leaked and kwargs["solution"] == ["7", "8"][: len(completions)])
    ] * len(completions)


@pytest.mark.parametrize("workers", [0, 1])
def test_trl_calling_conventions(workers):
    """As TRL's trainer: a reward that names only completion_ids gets the token ids by keyword (it got the
    texts as its first argument: every TRL length reward scored 0); an option no row has is passed as given,
    once (TRL's reasoning_delimiters=[...], not a list per item); the prompt and completion columns are not
    repeated as keywords."""
    from aha.rewards import RewardSpec

    chat = [{"role": "user", "content": "3 + 4?"}]
    rows = [
        {"prompt": chat, "completion": "x", "solution": "7"},
        {"prompt": "3+5=", "solution": "8"},
    ]
    with RewardRunner([(f"{__name__}:token_length", 1.0)], num_workers=workers) as r:
        res = r.score(["a b", "c"], rows, completion_ids=[[5, 6, 7], [8]])
    assert res.scores[:, 0].tolist() == [3.0, 1.0]
    spec = RewardSpec(f"{__name__}:option_and_columns", kwargs={"delimiters": ["</R>"]})
    with RewardRunner([spec], num_workers=workers) as r:
        res = r.score(["a", "b"], rows)
    assert res.scores[:, 0].tolist() == [1.0, 1.0] and res.metrics["reward/errors"] == 0.0


def test_a_reward_module_in_the_working_folder_is_found(tmp_path, monkeypatch):
    """`aha train ... rewards.funcs=[{name: 'myrewards:f'}]` next to myrewards.py: the `aha` command (unlike
    `python -m`) has no working folder on sys.path; the folder is appended (installed packages first)."""
    import sys

    from aha.rewards.registry import get_reward

    (tmp_path / "myrewards_cwd.py").write_text(
        "def f(completions, **kw):\n    return [1.0] * len(completions)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert get_reward("myrewards_cwd:f")(["a"]) == [1.0]
    assert sys.path[-1] == str(tmp_path)
    with pytest.raises(ValueError, match="cannot import reward 'not_here_at_all:f'"):
        get_reward("not_here_at_all:f")


@pytest.mark.parametrize("workers", [0, 1])
def test_verls_compute_score_runs_as_it_is(workers):
    """verl's custom_reward_function: compute_score(data_source, solution_str, ground_truth, extra_info), one
    item a call, ground truth from reward_model.ground_truth as verl's parquet holds it."""
    rows = [
        {"data_source": "gsm8k", "reward_model": {"ground_truth": "7"}, "extra_info": {"i": 0}},
        {"data_source": "dict_source", "reward_model": {"ground_truth": "8"}},
        {"data_source": "gsm8k", "answer": "9"},
    ]
    with RewardRunner([("reward_fns:verl_compute_score", 1.0)], num_workers=workers) as r:
        res = r.score(["so 7", "so 8", "so 1"], rows)
    assert res.scores[:, 0].tolist() == [1.5, 1.0, 0.0] and res.metrics["reward/errors"] == 0.0
