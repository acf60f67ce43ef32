"""Differences between the transformers versions aha supports (the floor in pyproject.toml and up)."""

from __future__ import annotations


def transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int(minor)


def dtype_kwarg(dtype) -> dict:
    """`from_pretrained` / `from_config`'s dtype argument: `dtype=` since transformers 4.56, `torch_dtype=`
    before (5.x still takes `torch_dtype=` but warns that it is deprecated)."""
    return {"dtype": dtype} if transformers_version() >= (4, 56) else {"torch_dtype": dtype}
