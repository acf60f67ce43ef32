"""`aha push`: the right checkpoint's Hugging Face files plus a model card, uploaded in one commit through
huggingface_hub's HfApi, here a local stand-in that records the calls and copies the files (no network)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from aha.cli import main
from aha.push import RESUME_ONLY, model_card, pick_checkpoint


def fake_run(root: Path, steps=(10, 20)) -> Path:
    """What `aha train` leaves: config.yaml, metrics.jsonl, checkpoints/step-N with HF files and resume state."""
    run = root / "run"
    for s in steps:
        ck = run / "checkpoints" / f"step-{s:06d}"
        (ck / "state").mkdir(parents=True)
        (ck / "state" / "__0_0.distcp").write_bytes(b"optimizer")
        (ck / "critic").mkdir()
        (ck / "config.json").write_text(json.dumps({"model_type": "qwen2", "step": s}))
        (ck / "model.safetensors").write_bytes(b"weights%d" % s)
        (ck / "tokenizer.json").write_text("{}")
        (ck / "state.json").write_text(json.dumps({"step": s, "weights": "hf"}))
        (ck / "trainer_state.pt").write_bytes(b"rng")
    cfg = {
        "model": {"path": "Qwen/Qwen2.5-0.5B"},
        "task": {"name": "gsm8k", "template": "r1-zero"},
        "algorithm": {"name": "grpo", "advantage": "grpo", "beta": 0.0},
        "sampling": {"group_size": 8},
        "steps": 20,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = [
        {"step": 0, "eval/pass1": 0.2, "eval/pass1_lo": 0.1, "eval/pass1_hi": 0.3},
        {"step": 20, "reward/mean": 0.7, "reward/accuracy": 0.6, "len/mean": 180.0},
        {"step": 20, "eval/pass1": 0.5, "eval/pass1_lo": 0.4, "eval/pass1_hi": 0.6},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


class FakeHub:
    """HfApi's calls as aha push makes them: records them, 'uploads' by copying into `dest`."""

    calls: list = []
    dest: Path = Path()
    logged_in = True

    def whoami(self):
        if not FakeHub.logged_in:
            raise OSError("Token is required (`token=True`), but no token found.")
        return {"name": "someone"}

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        FakeHub.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=""):
        FakeHub.calls.append(("upload_folder", repo_id, repo_type, commit_message))
        shutil.copytree(
            folder_path, FakeHub.dest / repo_id, dirs_exist_ok=True
        )  # follows the links


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub

    FakeHub.calls, FakeHub.dest, FakeHub.logged_in = [], tmp_path / "hub", True
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    return FakeHub


def test_push_uploads_the_latest_checkpoint_with_a_card(tmp_path, hub, capsys):
    run = fake_run(tmp_path)
    assert main(["push", str(run), "--repo", "me/r1-zero", "--private"]) == 0
    assert hub.calls[0] == ("create_repo", "me/r1-zero", True, True, "model")
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]  # one commit
    got = hub.dest / "me" / "r1-zero"
    names = {p.name for p in got.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "aha_config.yaml",
    }
    assert not names & RESUME_ONLY
    assert (got / "model.safetensors").read_bytes() == b"weights20"  # the latest step
    card = (got / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "Qwen/Qwen2.5-0.5B" and "grpo" in front["tags"]
    assert "held-out pass@1: 0.200 [0.100, 0.300] -> 0.500 [0.400, 0.600] (step 0 -> 20)" in card
    assert "| reward/accuracy | 0.6 |" in card and "## Training metrics at step 20" in card
    assert 'AutoModelForCausalLM.from_pretrained("me/r1-zero")' in card
    assert capsys.readouterr().out.strip().endswith("pushed to https://huggingface.co/me/r1-zero")


def test_push_a_chosen_step_and_the_one_line_errors(tmp_path, hub, capsys):
    run = fake_run(tmp_path)
    assert main(["push", str(run), "--repo", "me/x", "--step", "10"]) == 0
    assert (hub.dest / "me" / "x" / "model.safetensors").read_bytes() == b"weights10"
    for args, words in [
        ([str(run), "--repo", "me/x", "--step", "15"], "no checkpoint of step 15 in"),
        ([str(run)], "usage: aha push RUN_DIR --repo NAME"),
        ([str(tmp_path / "nope"), "--repo", "me/x"], "not found"),
        ([str(run), "--repo", "me/x", "--stpe", "3"], "unexpected argument '--stpe'"),
    ]:
        capsys.readouterr()
        assert main(["push", *args]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    hub.logged_in = False
    assert main(["push", str(run), "--repo", "me/y"]) == 2
    err = capsys.readouterr().err
    assert "not logged in to the Hugging Face Hub" in err and "hf auth login" in err
    assert not (hub.dest / "me" / "y").exists()


def test_missing_huggingface_hub_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    run = fake_run(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    assert main(["push", str(run), "--repo", "me/x"]) == 2
    assert "pip install huggingface_hub" in capsys.readouterr().err


def test_card_of_a_local_base_model_names_it_without_a_hub_link(tmp_path):
    run = fake_run(tmp_path, steps=(5,))
    (run / "config.yaml").write_text(
        yaml.safe_dump({"model": {"path": "tiny-base"}, "task": {"name": "chain"}})
    )
    card = model_card(run, pick_checkpoint(run, None), "me/tiny")
    assert "base_model" not in card.split("---")[1] and "`tiny-base`" in card
