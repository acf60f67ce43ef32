"""make_report: plots for the keys that exist, one self-contained HTML page (structure always; a real headless
Chromium render when Debian's chromium is installed)."""

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from aha.eval.report import load_metrics, make_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run, steps=20):
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(steps):
            rec = {
                "step": s,
                "reward/mean": s / steps,
                "reward/std": 0.1,
                "reward/accuracy": s / (2 * steps),
                "reward/format": min(1.0, s / 10),
                "reward/timeouts": 0,
                "len/mean": 20 + s,
                "len/max": 40 + s,
                "kl": 0.001 * s,
                "entropy": 1.0 - s / 40,
                "clip/low": 0.0,
                "grad_norm": 1.0,
                "lr": 1e-6,
                "time/generate": 0.5,
                "note": "text is ignored",
                "flag": True,
            }
            if s % 5 == 4:
                rec.update(
                    {
                        "eval/pass1": s / 40,
                        "eval/pass@1": s / 40,
                        "eval/format": 0.5,
                        "eval/len_mean": 25.0,
                        "eval/reflection_rate": 0.1 + s / 100,
                    }
                )
            if s == 3:
                rec["kl"] = None  # a non-finite value logged as null
            f.write(json.dumps(rec) + "\n")
        f.write('{"step": 20, "reward/me')  # half-written last line of a running job
    (run / "config.yaml").write_text(
        'model:\n  path: tiny-random\nnote: "<script>alert(1)</script>"\n'
    )
    (run / "summary.json").write_text(
        json.dumps(
            {
                "pass1_before": 0.1,
                "pass1_after": 0.45,
                "steps": steps,
                "seconds": 12.5,
                "title": "<b>x</b>",
            }
        )
    )
    with open(run / "samples.jsonl", "w") as f:
        for step in (0, 10, steps - 1):
            for i in range(6):
                f.write(
                    json.dumps(
                        {
                            "step": step,
                            "prompt": f"Q{i} & <think>?",
                            "reward": 0.5,
                            "completion": f"<think>wait</think><answer>{step}</answer> <img src=x>",
                        }
                    )
                    + "\n"
                )


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(path):
    p = Collect()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p.tags


def test_load_metrics_skips_bad_lines_and_values(tmp_path):
    write_run(tmp_path)
    series, skipped = load_metrics(tmp_path / "metrics.jsonl")
    assert skipped == 1
    assert len(series["reward/mean"]) == 20 and series["reward/mean"][3] == (3.0, 3 / 20)
    assert len(series["kl"]) == 19  # the null was dropped
    assert [s for s, _ in series["eval/pass1"]] == [4.0, 9.0, 14.0, 19.0]
    assert "note" not in series and "flag" not in series  # strings and booleans are not curves


def test_report_structure(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_run(run)
    page = make_report(run)
    assert page == run / "report" / "index.html"
    pngs = {p.stem for p in (run / "report").glob("*.png")}
    assert {
        "reward",
        "reward_functions",
        "accuracy",
        "format",
        "length",
        "entropy",
        "kl",
        "reflection",
    } <= pngs
    assert {"clip", "time", "other_grad", "other_lr", "other_reward"} <= pngs
    tags = parse(page)
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == len(pngs)
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1])[:8] == PNG_MAGIC
        assert a.get("alt")
    for t, a in tags:  # nothing leaves the file
        assert t not in ("script", "link", "iframe", "object", "embed")
        for attr in ("src", "href"):
            if attr in a:
                assert a[attr].startswith(("data:", "#")), (t, a)
    text = page.read_text()
    assert (
        "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    )
    assert "&lt;think&gt;wait&lt;/think&gt;" in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert "Before: step 0" in text and "After: step 19" in text and "step 10" not in text
    assert text.count("class='sample'") == 8  # 4 before + 4 after
    assert "<p class='headline'>held-out pass@1: 0.100 &rarr; <b>0.450</b></p>" in text  # first
    assert text.index("class='headline'") < text.index("id='summary'") < text.index("id='curves'")
    assert (
        "<tr><th>pass1</th><td>0.1</td><td>0.45</td></tr>" in text
    )  # before -> after, no raw keys
    assert "1 malformed metrics lines skipped" in text


def test_report_minimal_and_eval_dirs(tmp_path):
    run = tmp_path / "small"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "reward/mean": 0.0}) + "\n")
    page = make_report(run, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").glob("*.png")] == ["reward.png"]
    assert len([1 for t, _ in parse(page) if t == "img"]) == 1
    assert "Sampled completions" not in page.read_text()  # no config: not known to be an RL run
    # a short run stores no samples: the report says which key and why, instead of no section at all
    (run / "config.yaml").write_text("steps: 2\nlogging:\n  samples_every: 10\n")
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "reward/mean": 0.0}) + "\n" for s in (1, 2))
    )
    text = make_report(run, tmp_path / "out").read_text()
    assert "every logging.samples_every=10 steps, and the run&#x27;s last logged step is 2" in text
    (run / "config.yaml").write_text("logging:\n  samples_every: 0\n")
    assert "samples_every=0 turns them off" in make_report(run, tmp_path / "out").read_text()
    (run / "config.yaml").write_text("logging:\n  every: 10\n")  # an SFT run: it never samples
    assert "Sampled completions" not in make_report(run, tmp_path / "out").read_text()
    (run / "config.yaml").write_text("eval:\n  limit: 0\n")  # no headline: the page says why
    assert "no held-out evaluation: eval.limit=0" in make_report(run, tmp_path / "out").read_text()

    ev = tmp_path / "eval"  # what aha eval writes
    ev.mkdir()
    (ev / "results.json").write_text(
        json.dumps(
            {"n_problems": 3, "k": 4, "metrics": {"pass1": 0.25}, "ci": {"pass1": [0.1, 0.4]}}
        )
    )
    (ev / "samples.jsonl").write_text(
        json.dumps({"problem": 0, "prompt": "p", "completion": "c", "correct": True})
    )
    text = make_report(ev).read_text()
    assert "pass1" in text and "[0.1, 0.4]" in text and "Samples" in text and "<img" not in text

    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        make_report(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_report(tmp_path / "nope")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(
    chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_run(run, steps=8)
    page = make_report(run)
    # A probe copy: after load, record whether every image decoded, for --dump-dom to print.
    probe = page.with_name("probe.html")
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load',()=>{const i=[...document.images];"
            "document.body.setAttribute('data-probe',i.length+':'+i.every(x=>x.complete&&x.naturalWidth>0))})"
            "</script></body>",
        )
    )
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    n_png = len(list((run / "report").glob("*.png")))
    assert f'data-probe="{n_png}:true"' in out
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--screenshot={shot}",
            "--window-size=1300,1600",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_report_from_a_short_training_run(tmp_path):
    """The real producer of metrics.jsonl/samples.jsonl/config.yaml: a 2-step GRPO run of a tiny random model."""
    import torch

    from aha.config import load_config
    from aha.train import grpo
    from aha.train.config import TrainConfig

    torch.set_num_threads(1)
    run = tmp_path / "run"
    cfg = load_config(
        TrainConfig,
        None,
        [
            "model.path=tiny-random",
            "model.device=cpu",
            "steps=2",
            "sampling.group_size=2",
            "sampling.max_new_tokens=8",
            "batch.prompts_per_step=2",
            "batch.micro_batch_size=4",
            "logging.samples_every=1",
            "logging.progress=false",
            "task.template=plain",
            f"out={run}",
        ],
    )
    grpo.train(cfg)
    page = make_report(run)
    pngs = {p.stem for p in page.parent.glob("*.png")}
    assert {"reward", "reward_functions", "length"} <= pngs
    tags = parse(page)
    assert len([1 for t, _ in tags if t == "img"]) == len(pngs)
    assert all(a["src"].startswith("data:image/png;base64,") for t, a in tags if t == "img")
    text = page.read_text()
    assert "Before: step 1" in text and "After: step 2" in text and "tiny-random" in text


def test_report_of_a_pipeline_folder(tmp_path):
    """A pipeline folder's report: the first and last evaluated stage as the headline, a row per stage with a
    link to (or the command for) its run's report; it was a raw dump of summary.json. A stage folder points at
    its run."""
    pipe = tmp_path / "p"
    run = pipe / "01-rl" / "run"
    (run / "report").mkdir(parents=True)
    (run / "report" / "index.html").write_text("<html></html>")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.5}) + "\n")
    ev = lambda p: {
        "pass1": p,
        "pass1_ci": [p - 0.1, p + 0.1],
        "format": 1.0,
        "n_problems": 8,
        "k": 2,
    }
    stages = [
        {"stage": "00-base", "kind": "eval", "figures": {"eval": ev(0.25)}, "seconds": 5.0},
        {
            "stage": "01-rl",
            "kind": "rl",
            "outputs": {"run": str(run)},
            "figures": {"eval": ev(0.75)},
        },
    ]
    (pipe / "summary.json").write_text(json.dumps({"pipeline": "r1-zero", "stages": stages}))
    text = make_report(pipe).read_text()
    assert "a pipeline of 2 stages" in text and "<th>stages</th>" not in text  # no JSON dump
    assert "r1-zero: held-out pass@1 0.25 [0.15, 0.35] &rarr; <b>0.75 [0.65, 0.85]</b>" in text
    assert "<a href='01-rl/run/report/index.html'>report</a>" in text
    with pytest.raises(FileNotFoundError, match=r"its training run: aha report .*01-rl/run\)"):
        make_report(pipe / "01-rl")
    stages[1]["figures"], stages[0]["outputs"] = (
        3,
        [],
    )  # a damaged summary: what is there, no traceback
    (pipe / "summary.json").write_text(json.dumps({"pipeline": "r1-zero", "stages": stages}))
    assert "<th>01-rl</th>" in make_report(pipe).read_text()
