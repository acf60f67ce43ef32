"""`aha push RUN_DIR --repo NAME [--private] [--step N]`: a checkpoint to the Hugging Face Hub, with a model card.

    RUN_DIR/checkpoints/step-N (the latest unless --step) -> the Hugging Face files of that checkpoint (weights,
    config, tokenizer, generation config; not the optimizer state, RNG or critic) + README.md, a model card
    written from the run: base model, recipe, held-out figures (aha.eval.headline), final metrics, config
    -> HfApi.create_repo(exist_ok=True) + one upload_folder commit.

A LoRA run's checkpoint holds the merged weights, so what is pushed loads with AutoModelForCausalLM alone. The
upload goes through huggingface_hub (a dependency of transformers); a missing package or login is one line.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import yaml

from .cli_args import UsageError

USAGE = "usage: aha push RUN_DIR --repo NAME [--private] [--step N]"
# what a checkpoint holds for resuming only (the optimizer, RNG, PPO's critic, the LoRA adapter beside the
# merged weights): not pushed
RESUME_ONLY = {"state", "state.json", "trainer_state.pt", "critic", "adapter"}
STEP_DIR = re.compile(
    r"^step-(\d+)$"
)  # aha.train.checkpoint's names (not imported: it imports torch)


def parse(args: list[str]) -> tuple[Path, str, bool, int | None]:
    run, repo, private, step, i = None, None, False, None, 0
    while i < len(args):
        a = args[i]
        if a == "--private":
            private = True
        elif a in ("--repo", "--step"):
            if i + 1 >= len(args):
                raise UsageError(f"{a} needs a value; {USAGE}")
            i += 1
            if a == "--repo":
                repo = args[i]
            elif not args[i].isdigit():
                raise UsageError(f"--step takes a step number, got '{args[i]}'")
            else:
                step = int(args[i])
        elif a.startswith("-") or run is not None:
            raise UsageError(f"unexpected argument '{a}'; {USAGE}")
        else:
            run = Path(a)
        i += 1
    if run is None or not repo:
        raise UsageError(USAGE)
    return run, repo, private, step


def pick_checkpoint(run: Path, step: int | None) -> Path:
    if not run.is_dir():
        raise FileNotFoundError(
            f"run directory '{run}' not found; pass the out= directory of a run"
        )
    found = {
        int(m.group(1)): p
        for p in (run / "checkpoints").glob("step-*")
        if (m := STEP_DIR.match(p.name)) and (p / "config.json").is_file()
    }
    if not found:
        raise FileNotFoundError(
            f"'{run}/checkpoints' holds no checkpoint; train first, or pass a run directory"
        )
    if step is None:
        return found[max(found)]
    if step not in found:
        raise FileNotFoundError(
            f"no checkpoint of step {step} in {run}; steps: {', '.join(map(str, sorted(found)))}"
        )
    return found[step]


def _last_metrics(run: Path) -> dict:
    """The last training line of metrics.jsonl (a step-0 line holds only the held-out evaluation)."""
    last = {}
    path = run / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "step" in rec and any(k.startswith("reward/") for k in rec):
            last = rec
    return last


def model_card(run: Path, ckpt: Path, repo: str) -> str:
    """README.md for the pushed checkpoint, from what the run wrote."""
    from .eval.headline import headline_text

    cfg = {}
    if (run / "config.yaml").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    model = cfg.get("model", {}) if isinstance(cfg.get("model"), dict) else {}
    base = str(model.get("path") or cfg.get("model") or "")
    algo = cfg.get("algorithm", {}) if isinstance(cfg.get("algorithm"), dict) else {}
    task = cfg.get("task", {}) if isinstance(cfg.get("task"), dict) else {}
    kind = algo.get("advantage") or algo.get("name") or ("sft" if "data" in cfg else "")
    hub_base = "/" in base and not Path(base).exists()  # a hub id, not a local directory
    step = (
        json.loads((ckpt / "state.json").read_text()).get("step")
        if (ckpt / "state.json").is_file()
        else None
    )
    front = {"library_name": "transformers", "pipeline_tag": "text-generation"}
    front["tags"] = ["aha", "reinforcement-learning" if algo else "sft", *([kind] if kind else [])]
    if hub_base:
        front["base_model"] = base
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo.split('/')[-1]}",
        "",
    ]
    what = f"{kind.upper() if kind else 'Training'} with aha (the DeepSeek-R1 recipe as a library and CLI)"
    lines.append(
        f"{what} from `{base or 'unknown'}` on the task `{task.get('name', '?')}` (template "
        f"`{task.get('template', '?')}`), checkpoint of step {step}."
    )
    head = headline_text(run)
    if head:
        lines += ["", "## Held-out evaluation", "", head]
    rec = _last_metrics(run)
    if rec:
        keep = [
            k for k in rec if k.startswith(("reward/", "len/")) or k in ("kl", "entropy", "loss")
        ]
        rows = [f"| {k} | {rec[k]:.4g} |" for k in keep if isinstance(rec[k], (int, float))]
        if rows:
            lines += [
                "",
                f"## Training metrics at step {rec['step']}",
                "",
                "| metric | value |",
                "|---|---|",
            ]
            lines += rows
    recipe = {
        k: cfg[k]
        for k in ("algorithm", "sampling", "optim", "batch", "rewards", "steps")
        if k in cfg
    }
    if recipe:
        lines += [
            "",
            "## Recipe",
            "",
            "```yaml",
            yaml.safe_dump(recipe, sort_keys=False).strip(),
            "```",
        ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        "```",
        "",
        f"Prompts in the `{task.get('template', 'r1-zero')}` template as in training (`aha eval --model "
        f"{repo} --task {task.get('name', 'NAME')}` evaluates it the same way). The run's full config is "
        "`aha_config.yaml` in this repository.",
        "",
    ]
    return "\n".join(lines)


def push(run: Path, repo: str, *, private: bool = False, step: int | None = None, log=print) -> str:
    """Upload the checkpoint and its card; returns the repository's URL."""
    ckpt = pick_checkpoint(run, step)
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UsageError("aha push needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi()
    try:
        user = api.whoami()
    except Exception as e:  # no token, a revoked one, or no network: the same fix
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UsageError(
            f"not logged in to the Hugging Face Hub ({first}); run `hf auth login` or set HF_TOKEN"
        ) from None
    with tempfile.TemporaryDirectory(prefix="aha-push-") as tmp:
        stage = Path(tmp)
        for f in ckpt.iterdir():  # links, not copies: the weights are read once, by the upload
            if f.name not in RESUME_ONLY:
                (stage / f.name).symlink_to(f.resolve(), target_is_directory=f.is_dir())
        (stage / "README.md").write_text(model_card(run, ckpt, repo))
        if (run / "config.yaml").is_file():
            (stage / "aha_config.yaml").symlink_to((run / "config.yaml").resolve())
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        log(
            f"uploading {ckpt} to {repo} as {user.get('name', '?') if isinstance(user, dict) else user}"
        )
        api.upload_folder(
            folder_path=str(stage),
            repo_id=repo,
            repo_type="model",
            commit_message=f"aha push: {ckpt.name} of {run.name}",
        )
    return str(url)


def cmd_push(args: list[str]) -> int:
    run, repo, private, step = parse(args)
    url = push(run, repo, private=private, step=step)
    print(f"pushed to {url}")
    return 0
