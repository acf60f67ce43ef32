"""Whether the Triton kernels run for a tensor: on CUDA when triton imports, or on the CPU through the
Triton interpreter (TRITON_INTERPRET=1, for tests). AHA_FAST_TRITON=0 forces the torch fallbacks."""

from __future__ import annotations

import os

try:  # triton is optional: the CPU path (CI) never needs it
    import triton
    import triton.language as tl

    HAS_TRITON = True
except Exception:  # noqa: BLE001 - any import failure means "no triton"
    triton = tl = None
    HAS_TRITON = False


def use_triton(t) -> bool:
    if not HAS_TRITON or os.environ.get("AHA_FAST_TRITON", "1") == "0":
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
