"""Whether the Triton kernels run for a tensor: on CUDA when triton imports, or on the CPU through the
Triton interpreter (TRITON_INTERPRET=1, for tests). AHA_FAST_TRITON=0 forces the torch fallbacks.

Programmatic dependent launch (PDL, Hopper and later): a kernel launched with it has its blocks scheduled while
the kernel before it on the stream is still finishing, so the launch and whatever a block does before
`pdl_start` (a GEMM prefetches its weights into L2) overlap the previous kernel. `pdl_start` waits until the
previous kernel has finished and its writes are visible, then lets the next kernel launch. The rule that keeps
it correct: a kernel launched with PDL touches nothing another kernel writes (or reads) before its `pdl_start`;
the weights, which no kernel of a decode step writes, are the exception. Each such kernel finishes after the one
before it, so the order holds across any chain. The decode step's Triton kernels take **pdl_args(x);
AHA_PDL=0 turns it off.
"""

from __future__ import annotations

import functools
import os

try:  # triton is optional: the CPU path (CI) never needs it
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # noqa: BLE001 - any import failure means "no triton"
    triton = tl = None
    HAS_TRITON = False
try:  # grid dependency control (PDL's device side), Triton 3.4+
    from triton.language.extra import cuda as _gdc

    _gdc.gdc_wait, _gdc.gdc_launch_dependents  # noqa: B018
except Exception:  # noqa: BLE001
    _gdc = None


def use_triton(t) -> bool:
    if not HAS_TRITON or os.environ.get("AHA_FAST_TRITON", "1") == "0":
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@functools.cache
def triton_has_pdl() -> bool:
    """Whether this Triton has PDL: the launch option and the device instructions (3.4+)."""
    if _gdc is None:
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_pdl" in CUDAOptions.__dataclass_fields__


@functools.cache
def _pdl_device(index: int) -> bool:
    import torch

    if torch.version.hip is not None or torch.cuda.get_device_capability(index) < (9, 0):
        return False
    return triton_has_pdl()


def pdl(t) -> bool:
    """Whether Triton kernels on t's device launch with programmatic dependent launch (module docstring)."""
    if not HAS_TRITON or not t.is_cuda or os.environ.get("AHA_PDL", "1") == "0":
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return _pdl_device(t.device.index if t.device.index is not None else 0)


def pdl_args(t) -> dict:
    """The launch keywords of a kernel with a `PDL: tl.constexpr` parameter: PDL=pdl(t), and Triton's launch_pdl
    when it is on (an older Triton does not know the keyword)."""
    on = pdl(t)
    return {"PDL": True, "launch_pdl": True} if on else {"PDL": False}


if HAS_TRITON:

    @triton.jit
    def pdl_start(PDL: tl.constexpr):
        """A PDL kernel's barrier (module docstring): wait for the previous kernel, then let the next launch."""
        if PDL:
            _gdc.gdc_wait()
            _gdc.gdc_launch_dependents()
