"""Numerics that do not depend on where a tensor happens to sit in memory.

A resumed run must equal the uninterrupted one bit for bit, but two things can make the same
float64 arithmetic on the same values give different bits on x86 CPUs:

1. MKL's conditional numerical reproducibility (CNR): unless asked for its strict mode, MKL
   picks code paths by the memory alignment of its inputs. Measured on an AMD EPYC machine
   (torch 2.14.1, MKL 2024.2, AVX-512): batches copied to storage offset by 1 or 3 elements, and
   trajectory states loaded from a checkpoint as rows of one stacked tensor, changed the
   hypergradients of both engines at the 1e-16 level. An Intel machine did not show it.
2. The same holds, in principle, for any kernel that vectorises differently on an aligned and an
   unaligned pointer.

fdshpo therefore does both of:

- :func:`request_strict_mkl` (run by ``import fdshpo``, which imports no torch): sets
  ``MKL_CBWR=AUTO,STRICT`` unless the caller set ``MKL_CBWR``. MKL reads it at its first call,
  so it takes effect whenever ``fdshpo`` is imported before the process's first MKL call
  (torch may already be imported), and it passes on to every child process (KFP components,
  ``torchrun`` workers).
- :func:`aligned`: every tensor the engines' numerics read from outside (batches, the parameter
  vector, tangents and states, resumed ones included) is copied to a fresh, 64-byte-aligned
  allocation when it is not aligned already. This keeps results alignment-independent even
  where MKL was used before ``fdshpo`` was imported and its mode can no longer change.

:func:`mkl_strict_mode` reports the mode MKL runs in (for tests and diagnostics).

On CUDA, reverse mode recomputes trajectory states on its backward sweep and needs them bit for
bit: :func:`deterministic_kernels` makes cuDNN pick deterministic algorithms (and stop
auto-tuning, which may pick a different one the second time) for the duration of a run, then
restores the caller's settings. Not yet measured on a device: ``tests/test_reverse.py`` holds
the check (recomputed vs stored states, bitwise), skipped without CUDA.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, MutableMapping

#: MKL's environment variable for its CNR mode, and the mode fdshpo asks for.
MKL_CNR_VARIABLE = "MKL_CBWR"
MKL_CNR_MODE = "AUTO,STRICT"
#: Bytes: torch's CPU allocator aligns every allocation to 64 (an AVX-512 register).
ALIGNMENT = 64
_MKL_CBWR_STRICT = 0x10000  # mkl_cbwr.h
_MKL_CBWR_ALL = -1


def request_strict_mkl(environ: MutableMapping[str, str] | None = None) -> str:
    """Ask MKL for strict CNR mode (``MKL_CBWR=AUTO,STRICT``) unless ``MKL_CBWR`` is set.

    Returns the value in force. Pure environment bookkeeping: no torch import.
    """
    environ = os.environ if environ is None else environ
    return environ.setdefault(MKL_CNR_VARIABLE, MKL_CNR_MODE)


def mkl_strict_mode() -> bool | None:
    """Whether torch's MKL runs in strict CNR mode now; None when torch has no MKL to ask
    (a build without it, or one that does not export ``mkl_serv_cbwr_get``)."""
    import torch

    if not torch.backends.mkl.is_available():
        return None
    try:
        library = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib",
                                           "libtorch_cpu.so"))
        get_mode = library.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get_mode.restype, get_mode.argtypes = ctypes.c_int, [ctypes.c_int]
    return bool(get_mode(_MKL_CBWR_ALL) & _MKL_CBWR_STRICT)


def aligned(tensor):
    """``tensor`` itself when its data starts on a 64-byte boundary, else a contiguous copy
    in a fresh (aligned) allocation: same values, dtype and device."""
    if tensor.data_ptr() % ALIGNMENT == 0:
        return tensor
    return tensor.new_empty(tensor.shape).copy_(tensor)


@contextlib.contextmanager
def deterministic_kernels(device) -> Iterator[None]:
    """On a CUDA ``device``: ``torch.backends.cudnn.deterministic = True`` and
    ``benchmark = False`` inside the block, the caller's values restored after; elsewhere
    nothing (CPU kernels are deterministic for a fixed alignment)."""
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        yield
        return
    import torch

    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved
