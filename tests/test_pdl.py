"""Programmatic dependent launch of the decode step's kernels (aha._triton's docstring): off where it cannot run,
every kernel launched with it waits for the previous kernel before it reads or writes anything but weights, and
on a Hopper GPU a decode gives the same tokens and logprobs with it as without.

The PTX checks compile the kernels for sm_90 without a GPU (Triton's own ptxas), so CI runs them.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from aha import _triton

GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)


def test_pdl_is_off_on_the_cpu_under_the_interpreter_and_with_aha_pdl_0(monkeypatch):
    x = torch.zeros(2)
    assert not _triton.pdl(x)
    assert _triton.pdl_args(x) == {
        "PDL": False
    }  # no launch_pdl keyword: an older Triton rejects it
    if GPU:
        y = x.cuda()
        monkeypatch.setenv("AHA_PDL", "0")
        assert _triton.pdl_args(y) == {"PDL": False}
        monkeypatch.setenv("AHA_PDL", "1")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert not _triton.pdl(y)


def _ptx(kernel, ptrs: dict, consts: dict) -> str:
    """The kernel's PTX for sm_90 with PDL on: pointer arguments typed by `ptrs`, eps fp32, other scalars i32."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for p in kernel.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name in ptrs:
            sig[p.name] = "*" + ptrs[p.name]
        else:
            sig[p.name] = "fp32" if p.name == "eps" else "i32"
    src = ASTSource(fn=kernel, signature=sig, constexprs=dict(consts, PDL=True))
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"launch_pdl": True})
    return out.asm["ptx"]


MEMORY = re.compile(r"\b(ld\.global|st\.global|atom\.|red\.|cp\.async)")


def _kernels_before_wait() -> dict:
    """{kernel: (what its PTX does before griddepcontrol.wait: memory instructions, L2 prefetches), or None
    without a wait} for the decode kernels compiled with PDL (run where the kernels are compiled, not
    interpreted: in a child process, since conftest sets TRITON_INTERPRET)."""
    from aha.rollout.fast import fp8_linear as f8
    from aha.rollout.fast import layers

    bf, e4, f32, i64 = "bf16", "fp8e4nv", "fp32", "i64"
    cases = {
        "rms_fp8": (
            f8._rms_fp8_kernel,
            dict(X=bf, R=bf, W=bf, Q=e4, QS=f32, ROUT=bf),
            dict(HAS_RES=True, BLOCK=2048, ROUND=False, SPLITS=0),
        ),
        "rms_fp8_partials": (  # reading a split-K GEMM's partial sums
            f8._rms_fp8_kernel,
            dict(X=f32, R=bf, W=bf, Q=e4, QS=f32, ROUT=bf),
            dict(HAS_RES=True, BLOCK=2048, ROUND=False, SPLITS=2),
        ),
        "silu_fp8": (
            f8._silu_mul_fp8_kernel,
            dict(G=bf, U=bf, Q=e4, QS=f32),
            dict(BLOCK=16384, ROUND=False),
        ),
        "split_sum": (
            f8._split_sum_kernel,
            dict(P=f32, B=f32, O=bf),
            dict(SPLIT_K=4, HAS_BIAS=False, BLOCK=1024),
        ),
        "rms": (
            layers._rms_kernel,
            dict(X=bf, R=bf, W=bf, OUT=bf, ROUT=bf),
            dict(HAS_RES=True, BLOCK=2048),
        ),
        "silu": (layers._silu_mul_kernel, dict(G=bf, U=bf, O=bf), dict(BLOCK=1024)),
        "rope_cache": (
            layers._rope_cache_kernel,
            dict(
                Q=bf,
                K=bf,
                V=bf,
                COS=bf,
                SIN=bf,
                POS=i64,
                SLOT=i64,
                QO=bf,
                KC=e4,
                VC=e4,
                KS=f32,
                VS=f32,
                QW=bf,
                KW=bf,
            ),  # fmt: skip
            dict(NH=12, KVH=2, HALF=64, BH=16, BKH=2, BHALF=64, NORM=False, QUANT=True),
        ),
        "fp8_gemm": (
            f8._fp8_linear_kernel,
            dict(X=e4, XS=f32, W=e4, WS=f32, B=f32, O=bf, P=f32),
            dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=128, SPLIT_K=1, HAS_BIAS=False, LINES=16)
            | dict(LINE_ELEMS=128, SCALED=True, ROUND=False),
        ),
        "plain_gemm": (  # linear_partials: o_proj on its model-dtype weights, partial sums out
            f8._fp8_linear_kernel,
            dict(X=bf, XS=bf, W=bf, WS=bf, B=bf, O=bf, P=f32),
            dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=128, SPLIT_K=2, HAS_BIAS=False, LINES=16)
            | dict(LINE_ELEMS=64, SCALED=False, ROUND=False),
        ),
    }
    out = {}
    for name, (kernel, ptrs, consts) in cases.items():
        ptx = _ptx(kernel, ptrs, consts)
        head, wait, _ = ptx.partition("griddepcontrol.wait")
        dependents = "griddepcontrol.launch_dependents" in ptx
        out[name] = (
            (MEMORY.findall(head), head.count("prefetch.global.L2"))
            if wait and dependents
            else None
        )
    return out


@pytest.mark.skipif(not _triton.triton_has_pdl(), reason="needs a Triton with launch_pdl (3.4+)")
def test_every_decode_kernel_waits_before_touching_what_another_kernel_writes():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.splitlines()[-1])
    assert len(got) == 9
    for name, seen in got.items():
        assert seen is not None, f"{name}: no griddepcontrol.wait / launch_dependents"
        assert seen[0] == [], f"{name} touches memory before griddepcontrol.wait: {seen[0]}"
    assert [n for n, s in got.items() if s[1]] == ["fp8_gemm", "plain_gemm"]  # only GEMMs prefetch
    assert got["fp8_gemm"][1] == 8  # its 64 rows x 16 lines over 128 threads: 8 a thread
    assert got["plain_gemm"][1] == 4  # 32 rows x 16 lines


@pytest.mark.skipif(not GPU, reason="needs a Hopper (sm_90+) GPU")
@pytest.mark.parametrize("weights", ["auto", "fp8"])
def test_decode_with_pdl_gives_the_same_tokens_and_logprobs_as_without(weights, monkeypatch):
    """The engine's kernels (CUDA graphs, the fp8 KV cache and its CUDA attention) launched with PDL and
    without: the same samples, bit for bit."""
    from aha.models.tiny import char_tokenizer, tiny_model
    from aha.rollout import SamplingParams
    from aha.rollout.fast import FastEngine

    tok = char_tokenizer()
    torch.manual_seed(0)
    model = tiny_model(hidden_size=256, num_heads=4, num_kv_heads=2).cuda().to(torch.bfloat16)
    model.generation_config.eos_token_id = None
    prompts = [tok.encode(p) for p in ("the quick brown fox", "a", "jumps over the lazy dog " * 4)]
    params = SamplingParams(n=8, temperature=1.0, max_tokens=80, seed=3)
    runs = []
    for on in ("1", "0"):
        monkeypatch.setenv("AHA_PDL", on)
        x = torch.zeros(1, device="cuda")
        assert _triton.pdl(x) == (on == "1")
        eng = FastEngine(model, tok, weights_dtype=weights, kv_cache_dtype="fp8")
        runs.append([(c.token_ids, c.logprobs) for c in eng.generate(prompts, params)])
        del eng
    assert runs[0] == runs[1]


if __name__ == "__main__":
    print(json.dumps(_kernels_before_wait()))
