"""A run that runs out of GPU memory (torch.OutOfMemoryError, injected here on the CPU) in generation, the update or
an evaluation: one line naming the phase and the keys that lower it, the last completed step saved (never a state
an optimizer step had begun to change), exit code 75, metrics intact, and resume=true continues exactly as an
uninterrupted run. Also: gradients freed right after the optimizer step, the memory plan naming the GiB other
processes hold (aha.train.oom, train/loop.py, train/memory_setup.py)."""

import json
import re

import pytest
import torch

import aha.train.sft as sft_module
import aha.train.update as update_module
from aha.cli import main
from aha.rollout import HFEngine
from aha.train.grpo import GRPOTrainer
from aha.train.oom import OOM_EXIT, OOMInfo
from aha.train.sft import SFTTrainer
from aha.train.update import clip_and_step
from test_sft import write_rows
from test_train_e2e import BASE

# What torch's CUDA caching allocator says (its format since torch 2.2; the numbers made up).
MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.72 GiB of which "
    "1.50 GiB is free. Process 4242 has 88.00 GiB memory in use. Including non-PyTorch memory, this process "
    "has 50.00 GiB memory in use. Of the allocated memory 45.10 GiB is allocated by PyTorch, and 3.20 GiB is "
    "reserved by PyTorch but unallocated."
)
RL = [*BASE, "eval.limit=0", "checkpoint.save_every=0", "optim.lr=1e-2"]
TIMES = ("time/", "tokens_per_s", "memory/")


def oom():
    return torch.OutOfMemoryError(MESSAGE)


def rows(run):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoints(run):
    d = run / "checkpoints"
    return sorted(p.name for p in d.iterdir() if p.name.startswith("step-")) if d.is_dir() else []


def same_metrics(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for k in x:
            if not k.startswith(TIMES):
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-7), (x["step"], k)


def raise_once(monkeypatch, owner, name, when):
    """Patch owner.name to raise the OOM on the call where when(call number, args, kwargs) holds, once."""
    real, calls = getattr(owner, name), {"n": 0, "raised": False}

    def fake(*a, **k):
        calls["n"] += 1
        if not calls["raised"] and when(calls["n"], a, k):
            calls["raised"] = True
            raise oom()
        return real(*a, **k)

    monkeypatch.setattr(owner, name, fake)
    return calls


def track_steps(monkeypatch, cls) -> dict:
    """{"step": the step cls.train_step is running, "trainer": the trainer}, kept up to date."""
    state, real = {"step": 0}, cls.train_step

    def train_step(self, k):
        state.update(step=k, trainer=self)
        return real(self, k)

    monkeypatch.setattr(cls, "train_step", train_step)
    return state


def the_line(out: str) -> str:
    lines = [l for l in out.splitlines() if "out of GPU memory" in l]
    assert len(lines) == 1, out
    return lines[0]


# ---- the parts ---------------------------------------------------------------------------------------------
def test_torchs_message_is_read():
    info = OOMInfo.parse(MESSAGE)
    assert (info.asked_gib, info.free_gib, info.total_gib, info.own_gib) == (2.0, 1.5, 139.72, 50.0)
    assert info.others_gib == pytest.approx(88.22)
    assert (
        info.text() == "asked for 2.00 GiB, 1.50 of 139.7 GiB free, other processes hold 88.2 GiB"
    )
    small = OOMInfo.parse("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has ...")
    assert small.asked_gib == pytest.approx(20 / 1024) and small.free_gib is None
    assert OOMInfo.parse("out of memory").text() == ""  # nothing said: nothing made up


def test_gradients_are_freed_right_after_the_optimizer_step():
    """They would otherwise sit in GPU memory through the next rollout. The step itself is AdamW's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    ref = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    ref.load_state_dict(model.state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref)]
    x = torch.randn(5, 8)
    for _ in range(2):
        for m in (model, ref):
            m(x).square().sum().backward()
        norm, stepped = clip_and_step(model, opts[0], max_norm=0.5)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        opts[1].step()
        opts[1].zero_grad(set_to_none=True)
        assert stepped and all(p.grad is None for p in model.parameters())
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


# ---- GRPO ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    assert main(["train", *RL, "steps=5", f"out={run}"]) == 0
    return rows(run)


def test_oom_in_the_update_saves_the_last_step_and_resume_continues(
    tmp_path, monkeypatch, capsys, uninterrupted
):
    at = track_steps(monkeypatch, GRPOTrainer)  # step 3's first training forward:
    raise_once(monkeypatch, update_module, "sequence_logprobs", lambda n, a, k: at["step"] == 3)
    assert main(["train", *RL, "steps=5", f"out={tmp_path}"]) == OOM_EXIT
    out = capsys.readouterr().out
    line = the_line(out)
    assert line.startswith("out of GPU memory in update at step 3/5 (asked for 2.00 GiB, 1.50 of")
    assert "other processes hold 88.2 GiB" in line and f"step 2 saved ({tmp_path}" in line
    for key in (
        "memory.max_memory_gib",
        "batch.micro_batch_tokens (now no limit)",
        "batch.micro_batch_size (now 4)",
        "model.gradient_checkpointing=true",
        "sampling.max_new_tokens (now 12)",
    ):
        assert key in line
    assert line.endswith("; then resume with resume=true") and "Traceback" not in out
    assert "done:" not in out and checkpoints(tmp_path) == ["step-000002"]
    assert [r["step"] for r in rows(tmp_path)] == [1, 2]
    monkeypatch.undo()
    assert main(["train", *RL, "steps=5", f"out={tmp_path}", "resume=true"]) == 0
    same_metrics(rows(tmp_path), uninterrupted)


def test_oom_in_generation_is_named_so(tmp_path, monkeypatch, capsys, uninterrupted):
    at = track_steps(monkeypatch, GRPOTrainer)
    raise_once(monkeypatch, HFEngine, "generate", lambda n, a, k: at["step"] == 2)
    assert main(["train", *RL, "steps=5", f"out={tmp_path}"]) == OOM_EXIT
    line = the_line(capsys.readouterr().out)
    assert line.startswith("out of GPU memory in generation at step 2/5")
    # generation's keys first: the plan sizes the KV cache from memory.max_memory_gib
    assert (
        "with memory.max_memory_gib (this run's share of the GPU), sampling.max_new_tokens" in line
    )
    assert checkpoints(tmp_path) == ["step-000001"] and [r["step"] for r in rows(tmp_path)] == [1]
    monkeypatch.undo()
    assert main(["train", *RL, "steps=5", f"out={tmp_path}", "resume=true"]) == 0
    same_metrics(rows(tmp_path), uninterrupted)


MU2 = ["steps=5", "checkpoint.save_every=2", "algorithm.mu=2"]


@pytest.fixture(scope="module")
def uninterrupted_mu2(tmp_path_factory):
    """The uninterrupted run of the two cases below (one run for both)."""
    run = tmp_path_factory.mktemp("full_mu2")
    assert main(["train", *RL, *MU2, f"out={run}"]) == 0
    return rows(run)


@pytest.mark.parametrize("where", ["optimizer step", "second pass"])
def test_a_step_the_optimizer_began_to_change_is_not_saved(
    tmp_path, monkeypatch, capsys, where, uninterrupted_mu2
):
    """Step 4 dies after an optimizer step began: the weights are neither step 3 nor 4, so nothing is written
    and the step-2 checkpoint stays the latest; resume continues from it."""
    extra = MU2
    real_step = GRPOTrainer.train_step

    def train_step(self, k):
        if (
            k == 4 and where == "optimizer step"
        ):  # inside optimizer.step, after the loop's own pre-hook
            handle = self.optimizer.register_step_pre_hook(lambda *_: (_ for _ in ()).throw(oom()))
            try:
                return real_step(self, k)
            finally:
                handle.remove()
        return real_step(self, k)

    monkeypatch.setattr(GRPOTrainer, "train_step", train_step)
    if (
        where == "second pass"
    ):  # mu=2: step 4's first training forward after pass 1's optimizer step
        at = track_steps(monkeypatch, GRPOTrainer)
        raise_once(
            monkeypatch,
            update_module,
            "sequence_logprobs",
            lambda n, a, k: at["step"] == 4 and at["trainer"].oom.moved,
        )
    run = tmp_path / "run"
    assert main(["train", *RL, *extra, f"out={run}"]) == OOM_EXIT
    line = the_line(capsys.readouterr().out)
    assert "at step 4/5" in line
    assert "not saved: an optimizer step of step 4 had begun changing the weights" in line
    assert "the latest checkpoint stays step-000002" in line
    assert checkpoints(run) == ["step-000002"] and [r["step"] for r in rows(run)] == [1, 2, 3]
    monkeypatch.undo()
    assert main(["train", *RL, *extra, f"out={run}", "resume=true"]) == 0
    same_metrics(rows(run), uninterrupted_mu2)


def test_oom_in_an_evaluation_keeps_the_steps_metrics(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}

    def evaluate(self):
        calls["n"] += 1
        if calls["n"] == 2:  # step 0's evaluation passes, step 2's runs out
            raise oom()
        return {"eval/pass1": 0.5}

    monkeypatch.setattr(GRPOTrainer, "evaluate", evaluate)
    args = [*RL, "steps=4", "logging.eval_every=2", "eval.limit=2", f"out={tmp_path}"]
    assert main(["train", *args]) == OOM_EXIT
    line = the_line(capsys.readouterr().out)
    assert line.startswith("out of GPU memory in evaluation at step 2/4")
    assert re.search(
        r"with eval\.batch_size \(now \d+\), eval\.sampling\.max_new_tokens \(now \d+\)", line
    )
    assert "step 2 saved" in line and checkpoints(tmp_path) == ["step-000002"]
    assert [(r["step"], "eval/pass1" in r) for r in rows(tmp_path)] == [(0, 1), (1, 0), (2, 0)]
    calls["n"] = -10  # no more OOM: resume runs steps 3 and 4
    assert main(["train", *args, "resume=true"]) == 0
    assert [r["step"] for r in rows(tmp_path)] == [0, 1, 2, 3, 4]


def test_oom_in_the_first_evaluation(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(GRPOTrainer, "evaluate", lambda self: (_ for _ in ()).throw(oom()))
    assert main(["train", *RL, "steps=4", "eval.limit=2", f"out={tmp_path}"]) == OOM_EXIT
    line = the_line(capsys.readouterr().out)
    assert (
        line.startswith("out of GPU memory in evaluation at step 0/4") and "nothing trained" in line
    )
    assert checkpoints(tmp_path) == []


# ---- SFT and pipelines ---------------------------------------------------------------------------------------
def test_sft_oom_saves_and_resume_continues(tmp_path, monkeypatch, capsys):
    data = write_rows(tmp_path / "data.jsonl")
    args = ["model.path=tiny-random", f"data.path={data}", "data.max_length=64", "steps=5"]
    args += ["batch.batch_size=4", "batch.micro_batch_size=2", "logging.progress=false"]
    args += ["checkpoint.save_every=0", "optim.lr=1e-2"]
    assert main(["sft", *args, f"out={tmp_path / 'full'}"]) == 0
    at = track_steps(monkeypatch, SFTTrainer)  # step 4's first forward
    raise_once(monkeypatch, sft_module, "packed_logprobs", lambda n, a, k: at["step"] == 4)
    run = tmp_path / "run"
    assert main(["sft", *args, f"out={run}"]) == OOM_EXIT
    line = the_line(capsys.readouterr().out)
    assert line.startswith("out of GPU memory in update at step 4/5") and "step 3 saved" in line
    assert "memory.max_memory_gib" not in line  # SFT has no memory plan
    assert "batch.micro_batch_tokens (now no limit), batch.micro_batch_size (now 2)" in line
    assert checkpoints(run) == ["step-000003"] and [r["step"] for r in rows(run)] == [1, 2, 3]
    monkeypatch.undo()
    assert main(["sft", *args, f"out={run}", "resume=true"]) == 0
    same_metrics(rows(run), rows(tmp_path / "full"))


def test_pipeline_passes_the_oom_exit_code_on(tmp_path, monkeypatch, capsys):
    import aha.train

    stopped = {"steps": 2, "stopped_early": True, "stopped": "oom", "exit_code": OOM_EXIT}
    monkeypatch.setattr(aha.train, "train", lambda cfg: stopped)
    args = ["r1-zero", "model=tiny-random", f"out={tmp_path}", "eval.limit=0"]
    assert main(["pipeline", *args, "task.name=arithmetic"]) == OOM_EXIT
    assert (
        "RL stopped at step 2/30 (oom); rerun the same command with less memory"
        in capsys.readouterr().out
    )


# ---- the memory plan on a shared GPU -------------------------------------------------------------------------
def fake_gpu(monkeypatch, free_gib: float, total_gib: float, reserved_gib: float = 0.0):
    g = 2**30
    monkeypatch.setattr(
        torch.cuda, "mem_get_info", lambda d=None: (int(free_gib * g), int(total_gib * g))
    )
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: int(reserved_gib * g))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: int(reserved_gib * g))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")


def test_the_plan_says_what_other_processes_hold(monkeypatch):
    from aha.config import load_config
    from aha.train.config import TrainConfig
    from aha.train.memory_setup import held_by_others, plan_memory

    cuda = torch.device("cuda")
    fake_gpu(monkeypatch, free_gib=40.0, total_gib=140.0, reserved_gib=2.0)
    assert held_by_others(cuda) == 98 * 2**30  # 140 - 40 free - 2 this process's torch holds
    said = []
    plan_memory(load_config(TrainConfig, None, BASE), 1, cuda, said.append)
    table = said[0].splitlines()
    assert table[0].startswith("memory plan: ") and "free on NVIDIA H200" in table[0]
    assert table[-2] == (
        "  other processes     98.00  held on this GPU at start; several runs on one GPU: give each "
        "memory.max_memory_gib"
    )
    fake_gpu(monkeypatch, free_gib=139.2, total_gib=140.0)  # this process's CUDA context alone
    assert held_by_others(cuda) == 0
    said.clear()
    plan_memory(load_config(TrainConfig, None, BASE), 1, cuda, said.append)
    assert "other processes" not in said[0]
    assert held_by_others(torch.device("cpu")) == 0


def test_a_run_that_cannot_fit_names_what_others_hold(monkeypatch):
    from aha.config import ConfigError, load_config
    from aha.train.config import TrainConfig
    from aha.train.memory_setup import plan_memory

    fake_gpu(monkeypatch, free_gib=0.001, total_gib=140.0)
    with pytest.raises(ConfigError) as e:
        plan_memory(load_config(TrainConfig, None, BASE), 1, torch.device("cuda"), print)
    assert "(90% of 0.0 GiB, free on NVIDIA H200; other processes hold 140.0 GiB)" in str(e.value)


# ---- CUDA libraries that fail to allocate, and running out outside a step ------------------------------------
CUBLAS = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


def test_is_oom_knows_the_plain_runtime_errors_of_cuda_libraries():
    from aha.train.oom import is_oom

    assert is_oom(oom()) and is_oom(RuntimeError(CUBLAS))
    assert is_oom(
        RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported later")
    )
    for said in (
        "Triton Error [CUDA]: out of memory",  # loading a kernel's module (the fused lm head, the engine)
        "CUDA driver error: out of memory",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "NCCL error: unhandled cuda error, NCCL version 2.21.5 ... Cuda failure 'out of memory'",
    ):
        assert is_oom(RuntimeError(said)), said
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert not is_oom(ValueError("CUDA out of memory"))  # only RuntimeErrors


def test_a_cublas_allocation_failure_in_the_update_stops_like_an_oom(tmp_path, monkeypatch, capsys):
    at = track_steps(monkeypatch, GRPOTrainer)
    real = update_module.sequence_logprobs

    def logprobs(*a, **k):  # called from the update's own frame, which names the phase
        if at["step"] == 2:
            raise RuntimeError(CUBLAS)
        return real(*a, **k)

    monkeypatch.setattr(update_module, "sequence_logprobs", logprobs)
    assert main(["train", *RL, "steps=3", f"out={tmp_path}"]) == OOM_EXIT
    assert the_line(capsys.readouterr().out).startswith("out of GPU memory in update at step 2/3")
    assert checkpoints(tmp_path) == ["step-000001"]


def test_other_runtime_errors_still_raise(tmp_path, monkeypatch):
    def update(self, batch, passes=None):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(update_module.PolicyUpdate, "__call__", update)
    with pytest.raises(RuntimeError, match="a bug, not memory"):
        main(["train", *RL, "steps=2", f"out={tmp_path}"])


@pytest.mark.parametrize("error", [oom, lambda: RuntimeError(CUBLAS)])
def test_running_out_while_loading_is_one_line(tmp_path, monkeypatch, capsys, error):
    import aha.models.load as load

    def load_model(*a, **k):
        raise error()

    monkeypatch.setattr(load, "load_model", load_model)
    assert main(["train", *RL, "steps=2", f"out={tmp_path}"]) == OOM_EXIT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aha train: out of GPU memory while starting")
    assert "then run again" in err[0] and "optim.name=adamw_8bit" in err[0]
    if error is oom:
        assert (
            "(asked for 2.00 GiB, 1.50 of 139.7 GiB free, other processes hold 88.2 GiB)" in err[0]
        )
