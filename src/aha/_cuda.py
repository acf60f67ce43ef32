"""CUDA C++ kernels compiled at run time: NVRTC (the nvidia-cuda-nvrtc library PyTorch's CUDA wheels install) turns
the source into machine code for the GPU in use, the driver API loads it and launches it on PyTorch's current
stream (so CUDA-graph capture records it). For the few kernels Triton cannot express at speed
(rollout/fast/attention_fp8.py); every caller keeps a Triton or torch path for when this is unavailable.

compile(source, name, defines) -> Kernel, cached per device, source and defines. CudaUnavailable (with the reason)
when there is no CUDA device, no NVRTC library or the compile fails; AHA_CUDA_KERNELS=0 turns this off.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import torch


class CudaUnavailable(RuntimeError):
    pass


_libs: dict = {}
_cache: dict = {}


def enabled() -> bool:
    """A CUDA (not ROCm) device, and AHA_CUDA_KERNELS is not 0."""
    if os.environ.get("AHA_CUDA_KERNELS", "1") == "0" or torch.version.hip is not None:
        return False
    return torch.cuda.is_available()


def _nvrtc() -> ctypes.CDLL:
    if "nvrtc" in _libs:
        return _libs["nvrtc"]
    # The pip wheels' first (nvidia/cuda_nvrtc/lib for CUDA 12, nvidia/cu13/lib for CUDA 13; the one of torch's
    # CUDA version before others), then the loader's search path (a system toolkit).
    major = (torch.version.cuda or "").split(".")[0]
    found = [
        f
        for root in sys.path
        for f in glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*"))
    ]
    found.sort(key=lambda f: not f.endswith(f".so.{major}"))
    names = (
        found
        + ["libnvrtc.so"]
        + [f"libnvrtc.so.{v}" for v in dict.fromkeys((major, "13", "12")) if v]
    )
    for name in names:
        if "builtins" in name or ".alt." in name:
            continue
        try:
            _libs["nvrtc"] = lib = ctypes.CDLL(name)
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            return lib
        except OSError:
            continue
    raise CudaUnavailable(
        "no NVRTC library (pip install nvidia-cuda-nvrtc, or PyTorch's CUDA wheels)"
    )


def _driver() -> ctypes.CDLL:
    if "cuda" not in _libs:
        try:
            _libs["cuda"] = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise CudaUnavailable(f"no CUDA driver library: {e}") from None
    return _libs["cuda"]


def _check(res: int, what: str) -> None:
    if res != 0:
        msg = ctypes.c_char_p()
        _driver().cuGetErrorString(res, ctypes.byref(msg))
        raise CudaUnavailable(f"{what}: CUDA error {res} ({(msg.value or b'?').decode()})")


def _to_cubin(source: str, name: str, arch: str) -> bytes:
    lib = _nvrtc()

    def check(res: int, what: str) -> None:
        if res != 0:
            raise CudaUnavailable(f"NVRTC {what}: {lib.nvrtcGetErrorString(res).decode()}")

    prog = ctypes.c_void_p()
    check(
        lib.nvrtcCreateProgram(
            ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None
        ),
        "create",
    )
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", b"-default-device"]
        res = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        if res != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CudaUnavailable(f"NVRTC compile of {name} for {arch}:\n{log.value.decode()}")
        size = ctypes.c_size_t()
        check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
        cubin = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetCUBIN(prog, cubin), "cubin")
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


# CUlaunchAttribute: an id, padding to 8 bytes, a 64-byte union
class _LaunchAttribute(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(_LaunchAttribute)),
        ("num_attrs", ctypes.c_uint),
    ]


PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


class Kernel:
    """A loaded kernel: kernel(grid, block, args, shared=0, pdl=False) launches on the current stream with
    `shared` bytes of dynamic shared memory; args are tensors (their pointers), None (a null pointer), ints (C
    int), floats (C float). pdl: with programmatic dependent launch (aha._triton's docstring; the kernel must
    run griddepcontrol.wait before it touches what the previous kernel writes)."""

    def __init__(self, func: ctypes.c_void_p, module: ctypes.c_void_p, name: str):
        self.func, self.module, self.name = func, module, name
        attr = ctypes.c_int()
        cu = _driver()
        cu.cuFuncGetAttribute(ctypes.byref(attr), 4, func)  # CU_FUNC_ATTRIBUTE_NUM_REGS
        self.registers = attr.value
        cu.cuFuncGetAttribute(ctypes.byref(attr), 3, func)  # CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
        self.local_bytes = attr.value
        self.shared = 0  # the dynamic shared memory allowed so far (bytes)

    def __call__(
        self, grid: tuple, block: tuple, args: list, shared: int = 0, pdl: bool = False
    ) -> None:
        cargs = []
        for a in args:
            if isinstance(a, torch.Tensor):
                cargs.append(ctypes.c_void_p(a.data_ptr()))
            elif a is None:  # a null pointer
                cargs.append(ctypes.c_void_p(None))
            elif isinstance(a, bool) or not isinstance(a, (int, float)):
                raise TypeError(f"{self.name}: unsupported argument {type(a).__name__}")
            elif isinstance(a, int):
                cargs.append(ctypes.c_int(a))
            else:
                cargs.append(ctypes.c_float(a))
        params = (ctypes.c_void_p * len(cargs))(*[ctypes.addressof(c) for c in cargs])
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        # dynamic shared memory past the default 48 KiB must be allowed first
        if shared > self.shared:
            _check(
                _driver().cuFuncSetAttribute(self.func, 8, shared),  # MAX_DYNAMIC_SHARED_SIZE_BYTES
                f"{shared} bytes of shared memory for {self.name}",
            )
            self.shared = shared
        if pdl:
            attr = _LaunchAttribute(id=PROGRAMMATIC_STREAM_SERIALIZATION)
            attr.value[0] = 1
            cfg = _LaunchConfig(grid, block, shared, stream, ctypes.pointer(attr), 1)
            res = _driver().cuLaunchKernelEx(ctypes.byref(cfg), self.func, params, None)
        else:
            res = _driver().cuLaunchKernel(self.func, *grid, *block, shared, stream, params, None)
        _check(res, f"launch of {self.name}")


def compile(source: str, name: str, defines: dict | None = None) -> Kernel:  # noqa: A001
    """The extern "C" kernel `name` of `source` with `#define K V` lines for defines, for the current device.
    Raises CudaUnavailable (the reason in the message), also on a compile error."""
    if not enabled():
        raise CudaUnavailable("CUDA kernels are off (no CUDA device, or AHA_CUDA_KERNELS=0)")
    dev = torch.cuda.current_device()
    head = _head(defines)
    key = (dev, name, head, source)
    hit = _cache.get(key)
    if isinstance(hit, CudaUnavailable):
        raise hit
    if hit is not None:
        return hit
    try:
        major, minor = torch.cuda.get_device_capability(dev)
        cubin = _to_cubin(head + source, name, f"sm_{major}{minor}")
        torch.cuda.init()  # the primary context exists (no stream work: this may run inside a graph capture)
        cu = _driver()
        ctx = ctypes.c_void_p()
        cu.cuCtxGetCurrent(ctypes.byref(ctx))
        if not ctx.value:
            cu_dev = ctypes.c_int()
            _check(cu.cuDeviceGet(ctypes.byref(cu_dev), dev), "cuDeviceGet")
            _check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), cu_dev), "primary context")
            _check(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        module, func = ctypes.c_void_p(), ctypes.c_void_p()
        _check(cu.cuModuleLoadData(ctypes.byref(module), cubin), f"loading {name}")
        _check(cu.cuModuleGetFunction(ctypes.byref(func), module, name.encode()), name)
        hit = Kernel(func, module, name)
    except CudaUnavailable as e:
        hit = e
    _cache[key] = hit
    if isinstance(hit, CudaUnavailable):
        raise hit
    return hit


def check_source(source: str, name: str, defines: dict | None = None, arch: str = "sm_90") -> bytes:
    """Compile without a GPU (tests, when NVRTC is installed): the cubin, or CudaUnavailable with the log."""
    return _to_cubin(_head(defines) + source, name, arch)


def _head(defines: dict | None) -> str:
    """`#define K V` lines (integer values) that go before the source."""
    return "".join(f"#define {k} {int(v)}\n" for k, v in sorted((defines or {}).items()))
