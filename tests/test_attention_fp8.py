"""The CUDA decode attention over the fp8 KV cache (rollout/fast/attention_fp8.py, built at run time by aha._cuda).

- Compiles for Ada and Hopper with every shape family the engine meets wherever NVRTC is installed (the
  test-triton extra installs it, so CI compiles the source without a GPU).
- On a GPU: against a float64 reference over the same e4m3 values and scales, through decode_attention (the
  engine's entry), for ragged lengths, two page sizes, split and fused-merge launches, bf16 and fp16 queries,
  in both MMA layouts (query heads on M, or transposed with keys on M for <= 8 query heads a KV head).
- Falls back to the Triton kernel, with one line, when it cannot be built.
"""

import pytest
import torch

from aha import _cuda
from aha.rollout.fast import attention_fp8
from aha.rollout.fast.attention import decode_attention
from aha.rollout.fast.kv_cache import quantize

try:
    _cuda._nvrtc()
    NVRTC = True
except _cuda.CudaUnavailable:
    NVRTC = False
GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.skipif(not NVRTC, reason="no NVRTC library (pip install nvidia-cuda-nvrtc-cu12)")
@pytest.mark.parametrize("arch", ["sm_89", "sm_90"])
@pytest.mark.parametrize(
    "G,D,dtype", [(6, 128, "bf16"), (7, 64, "bf16"), (16, 128, "f16"), (1, 64, "f16")]
)
@pytest.mark.parametrize("transposed", [False, True])
def test_the_kernel_compiles_for_ada_and_hopper(arch, G, D, dtype, transposed):
    if transposed and G > 8:
        with pytest.raises(ValueError, match="at most 8 query heads"):
            attention_fp8.defines(G, D, 16, torch.float16, 8, transposed=True)
        return
    dt = torch.bfloat16 if dtype == "bf16" else torch.float16
    # the register double buffer (stages 0) and the cp.async ring with one and two tiles a step
    # (and with programmatic dependent launch: griddepcontrol needs sm_90)
    pdl = arch == "sm_90"
    for warps, stages, tiles, p in (
        (4, 0, 1, 0),
        (8, 0, 1, 0),
        (8, 2, 1, 0),
        (8, 2, 2, pdl),
        (4, 3, 2, 0),
    ):
        defs = attention_fp8.defines(G, D, 16, dt, warps, stages, tiles, bool(p), transposed)
        cubin = _cuda.check_source(attention_fp8.SOURCE, "aha_decode_fp8", defs, arch)
        assert cubin[:4] == b"\x7fELF"


@pytest.mark.skipif(not NVRTC, reason="no NVRTC library")
def test_a_compile_error_is_raised_with_the_compilers_log():
    with pytest.raises(_cuda.CudaUnavailable, match="undefined_name"):
        _cuda.check_source('extern "C" __global__ void k() { undefined_name = 1; }', "k")


def test_the_cuda_kernel_falls_back_to_triton_in_one_line(monkeypatch, capsys):
    def broken(*a, **k):
        raise _cuda.CudaUnavailable("no NVRTC library")

    monkeypatch.setattr(_cuda, "compile", broken)
    monkeypatch.setattr(attention_fp8, "_failed", set())
    q, cache = torch.zeros(2, 4, 64), torch.zeros(32, 2, 64)
    args = (q, cache, cache, None, None, None, None, 16, 0.125, q, q, q, 1)
    assert attention_fp8.decode_fp8(*args, warps=4) is False
    assert attention_fp8.decode_fp8(*args, warps=4) is False  # tried once: no second line
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["aha: fp8 decode attention falls back to Triton: no NVRTC library"]
    assert not attention_fp8.usable(q, 2, 16)  # a CPU tensor never takes the CUDA path


def _case(lens, NH, KVH, D, page, dtype, seed, small_values):
    g = torch.Generator().manual_seed(seed)
    B, W = len(lens), -(-max(lens) // page) + 1
    bt = (torch.randperm(B * W, generator=g) + 1).view(B, W).to(torch.int32)
    slots = (B * W + 1) * page
    # keys with a large per-dim bias (as Qwen2.5's), values tiny in some cases (their fp8 scales ~1e-5)
    k = torch.randn(slots, KVH, D, generator=g) * 2 + torch.randn(1, KVH, D, generator=g) * 4
    v = torch.randn(slots, KVH, D, generator=g) * (1e-3 if small_values else 1.0)
    q = torch.randn(B, NH, D, generator=g).to(dtype)
    (k8, ks), (v8, vs) = quantize(k), quantize(v)
    lens = torch.tensor(lens, dtype=torch.int32)
    return [t.cuda() for t in (q, k8, v8, ks, vs, bt, lens)]


def _reference(q, k8, v8, ks, vs, bt, lens, page):
    G = q.shape[1] // k8.shape[1]
    out = []
    for b in range(q.shape[0]):
        p = torch.arange(int(lens[b]), device=q.device)
        slots = bt[b, p // page].long() * page + p % page
        K = (k8[slots].double() * ks[slots].double()[..., None]).repeat_interleave(G, 1)
        V = (v8[slots].double() * vs[slots].double()[..., None]).repeat_interleave(G, 1)
        s = torch.einsum("hd,lhd->hl", q[b].double(), K) * q.shape[-1] ** -0.5
        out.append(torch.einsum("hl,lhd->hd", s.softmax(-1), V))
    return torch.stack(out)


@pytest.mark.skipif(not GPU, reason="needs an sm_89+ GPU")
@pytest.mark.parametrize(
    "NH,KVH,D", [(12, 2, 128), (14, 2, 64), (16, 1, 128), (4, 4, 64), (16, 2, 128)]
)
@pytest.mark.parametrize("page", [16, 32])
@pytest.mark.parametrize("splits,fused", [(1, False), (2, False), (4, True), (16, True)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("transposed", [False, True])
def test_cuda_fp8_decode_matches_a_float64_reference(
    NH, KVH, D, page, splits, fused, dtype, transposed, monkeypatch
):
    monkeypatch.setattr(attention_fp8, "TRANSPOSED", transposed)  # G > 8 keeps the 16-row layout
    for seed, lens in enumerate(([1, 17, 100, 16, 33], [300, 5, 64, 1000])):
        args = _case(lens, NH, KVH, D, page, dtype, seed, small_values=seed == 0)
        q, k8, v8, ks, vs, bt, lens_t = args
        assert attention_fp8.usable(q, KVH, page, splits)
        cnt = torch.zeros(len(lens) * KVH, dtype=torch.int32, device="cuda") if fused else None
        got = decode_attention(
            q, k8, v8, bt, lens_t, page, D**-0.5, splits, k_scale=ks, v_scale=vs, counters=cnt
        )
        ref = _reference(*args, page)
        err = ((got.double() - ref).norm() / ref.norm()).item()
        assert err < 5e-3, (lens, err)
        if fused:
            assert int(cnt.abs().sum()) == 0  # left zero for the next layer


@pytest.mark.skipif(not GPU, reason="needs an sm_89+ GPU")
@pytest.mark.parametrize("stages,tiles", [(0, 1), (2, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("warps,splits", [(8, 1), (2, 1), (4, 2)])
@pytest.mark.parametrize("transposed", [False, True])
def test_every_pipeline_matches_a_float64_reference(stages, tiles, warps, splits, transposed):
    """The register double buffer and the cp.async ring with one tile a step, and two from PAIR_FROM tiles a
    warp (lengths on both sides of it, odd tile counts), directly through decode_fp8."""
    from aha.rollout.fast.attention import _merge

    lens = [1, 17, 300, 1025, 2100, 2049]
    q, k8, v8, ks, vs, bt, lens_t = args = _case(lens, 12, 2, 128, 16, torch.bfloat16, 7, False)
    B, NH, D = q.shape
    out = torch.empty_like(q)
    mo = torch.empty((B, NH, splits, D), dtype=torch.float32, device="cuda")
    ml = torch.empty((B, NH, splits), dtype=torch.float32, device="cuda")
    assert attention_fp8.decode_fp8(
        q, k8, v8, ks, vs, bt, lens_t, 16, D**-0.5, out, mo, ml, splits, None, warps, stages, tiles,
        transposed,
    )  # fmt: skip
    if splits > 1:
        _merge(mo, ml, out, splits)
    ref = _reference(*args, 16)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 5e-3


def test_the_ring_runs_where_its_shared_memory_fits(monkeypatch):
    """pipeline_for: the cp.async ring for 8-warp blocks on a GPU that opts in to its shared memory (an H200's
    227 KiB), the register double buffer on one that cannot (Ada's 99 KiB) or an unknown one, for 4-warp blocks,
    and on the CPU."""
    import types

    for optin, want in [(232448, (2, 2)), (101376, (0, 1)), (None, (0, 1))]:
        props = (
            types.SimpleNamespace()
            if optin is None
            else types.SimpleNamespace(shared_memory_per_block_optin=optin)
        )
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d, p=props: p)
        assert attention_fp8.pipeline_for(128, 8, "cuda") == want
        assert attention_fp8.pipeline_for(128, 4, "cuda") == (
            0,
            1,
        )  # 4-warp blocks: not timed with it
    assert attention_fp8.ring_bytes(128, 8, 2, 2) == 8 * 2 * 2 * (32 * 128 + 128)
    assert attention_fp8.pipeline_for(128, 8, "cpu") == (0, 1)


def test_launch_shape_fills_the_multiprocessors_once():
    """Splits and warps for the CUDA kernel (measured on an H200, docs/results/scale_h200/s10): 64 rows x 2 KV
    heads are 128 blocks of 8 warps, one split; 4 KV heads, 256 blocks of 4 warps; 8 rows, 8 splits."""
    from aha.rollout.fast.attention import decode_splits

    sms = 132
    for rows, kvh, splits, warps in [
        (64, 2, 1, 8),
        (64, 4, 1, 4),
        (8, 2, 8, 8),
        (1, 1, 16, 8),
        (40, 2, 1, 8),
    ]:
        assert decode_splits(rows, kvh, sms, fp8=True) == splits
        assert attention_fp8.warps_for(rows * kvh * splits, sms) == warps
    # never more blocks than two a multiprocessor, never more than the 16 splits the merge holds
    for rows in range(1, 300):
        s = decode_splits(rows, 2, sms, fp8=True)
        assert 1 <= s <= 16 and (s == 1 or rows * 2 * s <= sms)


LATE_WRITER = r"""
extern "C" __global__ void late_write(const long long* slots, const unsigned char* k_new,
                                      const unsigned char* v_new, const float* ks_new, const float* vs_new,
                                      const unsigned short* q_new, unsigned char* KC, unsigned char* VC, float* KS,
                                      float* VS, unsigned short* Q, int row_bytes, int kvh, int q_elems, int cycles) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {}
  const int b = blockIdx.x;
  const long long s = slots[b];
  for (int i = threadIdx.x; i < row_bytes; i += blockDim.x) {
    KC[s * row_bytes + i] = k_new[b * row_bytes + i];
    VC[s * row_bytes + i] = v_new[b * row_bytes + i];
  }
  for (int i = threadIdx.x; i < kvh; i += blockDim.x) {
    KS[s * kvh + i] = ks_new[b * kvh + i];
    VS[s * kvh + i] = vs_new[b * kvh + i];
  }
  for (int i = threadIdx.x; i < q_elems; i += blockDim.x) Q[b * q_elems + i] = q_new[b * q_elems + i];
}
"""


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)),
    reason="needs a Hopper (sm_90+) GPU: programmatic dependent launch",
)
@pytest.mark.parametrize(
    "warps,stages,tiles", [(8, 2, 2), (8, 2, 1), (8, 0, 1), (4, 0, 1), (4, 3, 2)]
)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("splits", [1, 4])
def test_early_loads_never_read_what_the_previous_kernel_writes(
    warps, stages, tiles, transposed, splits
):
    """With PDL the kernel requests its first tiles before griddepcontrol.wait (EARLY). A previous kernel that
    lets it launch at once, spins ~0.5 ms, then writes Q and each sequence's newest key and value (position L - 1):
    the output must use what it wrote, for lengths whose last tile is among the early ones and lengths where it
    is not."""
    from aha import _triton

    lens = [1, 17, 130, 300, 1025, 2100, 2049, 4000]
    page = 16
    q, k8, v8, ks, vs, bt, lens_t = _case(lens, 12, 2, 128, page, torch.bfloat16, 11, False)
    new = _case(lens, 12, 2, 128, page, torch.bfloat16, 12, False)  # what the late kernel writes
    assert _triton.pdl(q)
    pos = lens_t.long() - 1
    slots = (bt.gather(1, (pos // page)[:, None])[:, 0].long() * page + pos % page).contiguous()
    B, NH, D = q.shape
    KVH = k8.shape[1]
    k_new, v_new = new[1][slots].contiguous(), new[2][slots].contiguous()
    ks_new, vs_new, q_new = new[3][slots].contiguous(), new[4][slots].contiguous(), new[0]
    final = [q_new, k8.clone(), v8.clone(), ks.clone(), vs.clone(), bt, lens_t]
    final[1][slots], final[2][slots], final[3][slots], final[4][slots] = (
        k_new,
        v_new,
        ks_new,
        vs_new,
    )
    ref = _reference(*final, page)

    writer = _cuda.compile(LATE_WRITER, "late_write")
    out = torch.empty_like(q)
    mo = torch.empty((B, NH, splits, D), dtype=torch.float32, device="cuda")
    ml = torch.empty((B, NH, splits), dtype=torch.float32, device="cuda")
    cnt = torch.zeros(B * KVH, dtype=torch.int32, device="cuda") if splits > 1 else None
    args = [slots, k_new, v_new, ks_new, vs_new, q_new, k8, v8, ks, vs, q]

    def attend():
        assert attention_fp8.decode_fp8(
            q, k8, v8, ks, vs, bt, lens_t, page, D**-0.5, out, mo, ml, splits, cnt, warps, stages, tiles,
            transposed,
        )  # fmt: skip

    attend()  # compiled now: the launch below follows the writer's within microseconds
    torch.cuda.synchronize()
    writer((B,), (256,), args + [KVH * D, KVH, NH * D, 1_000_000], pdl=True)  # ~0.5 ms of spinning
    attend()
    torch.cuda.synchronize()
    assert torch.equal(q, q_new) and torch.equal(k8[slots], k_new)  # the writer ran
    err = ((out.double() - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).tolist()
    assert max(err) < 5e-3, dict(
        zip(lens, err)
    )  # per sequence: one stale key of a long one is a small error
