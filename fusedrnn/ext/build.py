"""Building and loading the compiled extensions (``fusedrnn/csrc/``), once per process.

Two libraries register the ``torch.ops.fusedrnn`` operators: ``fusedrnn_cpu`` (the
schemas and the CPU kernels; needs a C++ compiler) and ``fusedrnn_cuda`` (the CUDA
kernels; needs nvcc and a CUDA build of torch, and loads after the CPU one). Each is
taken from an ahead-of-time build next to this file (``FUSEDRNN_BUILD_EXT=1 pip install
...``, see setup.py) or compiled on first use with ``torch.utils.cpp_extension.load``
and ninja into ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), where
later processes find it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

#: The C++/CUDA sources, package data of ``fusedrnn``: every install can build the extension.
SOURCE_DIR = Path(__file__).resolve().parents[1] / "csrc"

#: Every source of each library, relative to ``SOURCE_DIR``.
SOURCES: Dict[str, List[str]] = {
    "cpu": ["fusedrnn.cpp", "checks.cpp", "sweep.cpp", "step_product.cpp", "cpu/kernels.cpp", "cpu/isa_baseline.cpp",
            "cpu/isa_avx2.cpp", "cpu/isa_avx512.cpp", "cpu/noise.cpp"],
    "cuda": ["fusedrnn.cpp", "checks.cpp", "sweep.cpp", "step_product.cpp", "cuda/lstm.cu", "cuda/mogrifier.cu"],
}
#: ``-fno-trapping-math`` lets GCC if-convert the clamp in cell.h's exp, without which it
#: leaves the gate loops scalar ("control flow in loop"); nothing here reads FP exceptions.
CXX_FLAGS = ["-O3", "-fno-trapping-math"]
#: The CPU library's ``at::parallel_for`` loops (the cell kernels, the per-step products) run on
#: torch's OpenMP threads only when compiled with OpenMP; without it they run on one thread. On
#: Linux the library then links the ``libgomp.so.1`` that torch has already loaded: one pool,
#: sized by ``torch.set_num_threads``.
OPENMP_FLAGS = ["-fopenmp"] if sys.platform.startswith("linux") else []
#: ``FUSEDRNN_CUDA`` makes fusedrnn.cpp register the CUDA kernels instead of the schemas.
CUDA_DEFINES = ["-DFUSEDRNN_CUDA"]
NVCC_FLAGS = ["-O3"]


def cxx_flags(kind: str) -> List[str]:
    """The C++ compiler's flags for library ``kind`` (first-use and ahead-of-time builds alike),
    a new list: ``torch.utils.cpp_extension.load`` appends to the lists it is given."""
    return CXX_FLAGS + (CUDA_DEFINES if kind == "cuda" else OPENMP_FLAGS)


def link_flags(kind: str) -> List[str]:
    """The linker's flags for library ``kind``, a new list, as :func:`cxx_flags`."""
    return [] if kind == "cuda" else list(OPENMP_FLAGS)


#: A load that takes longer than this is a build, and says so.
BUILD_NOTICE_AFTER_S = 2.0
#: torch's ``load()`` waits with no time limit on the lock file of a build in progress; a build
#: that was killed (out of memory, a CI time limit) leaves it behind, and every later process
#: would wait forever. A lock under which nothing in the build directory has changed for this
#: long is such a leftover: a live build writes its object files as it goes, and its slowest
#: step, nvcc on one ``.cu`` file, takes about a minute.
STALE_LOCK_S = 300.0
LOCK_POLL_S = 1.0


def _wait_for_build_lock(name: str) -> None:
    """Waits while another process builds library ``name``; removes its lock, with a warning,
    if that build is dead (see :data:`STALE_LOCK_S`)."""
    from torch.utils.cpp_extension import _get_build_directory  # where load() builds, as it computes it

    directory = Path(_get_build_directory(name, verbose=False))
    lock = directory / "lock"
    while lock.exists():
        with contextlib.suppress(FileNotFoundError):  # a live build adds and removes files
            idle_s = time.time() - max(entry.stat().st_mtime for entry in os.scandir(directory))
            if idle_s > STALE_LOCK_S:
                warnings.warn(f"fusedrnn: removing {lock}, left by a build of {name} that stopped {idle_s:.0f} s "
                              "ago (nothing in its directory changed since); building again", RuntimeWarning,
                              stacklevel=2)
                lock.unlink(missing_ok=True)
                return
        time.sleep(LOCK_POLL_S)


class ExtensionBuildError(RuntimeError):
    """The compiled extension cannot be built or loaded on this machine."""


def library_name(kind: str) -> str:
    return f"fusedrnn_{kind}"


def _prebuilt(kind: str) -> Optional[Path]:
    """The library built ahead of time by setup.py, if any."""
    found = sorted(Path(__file__).parent.glob(f"_{kind}*.so"))
    return found[0] if found else None


def _missing_tools(kind: str) -> Optional[str]:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler found ({compiler!r} is not on PATH; set CXX)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return "this torch has no CUDA support"
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None:
            return "nvcc not found (set CUDA_HOME)"
    if not SOURCE_DIR.is_dir():
        return f"the C++ sources are missing (no {SOURCE_DIR}): reinstall fusedrnn"
    return None


def _compile(kind: str) -> None:
    from torch.utils.cpp_extension import load

    cuda = kind == "cuda"
    # A build takes tens of seconds: say so rather than look hung, but stay quiet when a
    # cached build loads in a moment.
    start, announced = time.perf_counter(), threading.Event()

    def announce():
        print(f"fusedrnn: building the {kind} extension (first use; later processes load it from "
              f"TORCH_EXTENSIONS_DIR)...", file=sys.stderr, flush=True)
        announced.set()

    notice = threading.Timer(BUILD_NOTICE_AFTER_S, announce)
    notice.start()
    try:
        _wait_for_build_lock(library_name(kind))
        load(
            name=library_name(kind),
            sources=[str(SOURCE_DIR / source) for source in SOURCES[kind]],
            extra_cflags=cxx_flags(kind),
            extra_ldflags=link_flags(kind),
            extra_cuda_cflags=NVCC_FLAGS + CUDA_DEFINES,
            with_cuda=cuda,
            is_python_module=False,
            verbose=os.environ.get("FUSEDRNN_VERBOSE_BUILD") == "1",
        )
    finally:
        notice.cancel()
    if announced.is_set():
        print(f"fusedrnn: built the {kind} extension in {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)


#: First loads from several threads take turns: one builds and registers the operators, then the
#: others load its build and find them registered (registering twice raises). Reentrant: the
#: CUDA library loads the CPU one first.
_LOAD_LOCK = threading.RLock()


@functools.lru_cache(maxsize=None)
def load_error(kind: str) -> Optional[str]:
    """Loads library ``kind`` (``"cpu"`` or ``"cuda"``), building it if needed.

    Returns why it cannot be loaded, or ``None`` once its operators are registered.
    """
    with _LOAD_LOCK:
        return _load(kind)


def _load(kind: str) -> Optional[str]:
    if kind == "cuda":
        error = load_error("cpu")  # the CPU library defines the operator schemas
        if error is not None:
            return f"the CPU library it builds on is unavailable: {error}"
    prebuilt = _prebuilt(kind)
    try:
        if prebuilt is not None:
            torch.ops.load_library(str(prebuilt))
        else:
            missing = _missing_tools(kind)
            if missing is not None:
                return missing
            _compile(kind)
    except Exception as error:  # any failure of the toolchain becomes the backend's reason
        return f"building the {kind} extension failed: {_summary(error)}"
    from . import ops  # here, not at the top: setup.py loads this file alone, outside the package

    ops.register()  # the operators' fake implementations and autograd, with the library
    return None


def _summary(error: Exception) -> str:
    """The compiler's first error line, else the exception's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() and line != lines[0]]
    detail = errors[0] if errors else (lines[0] if lines else type(error).__name__)
    return f"{detail} (FUSEDRNN_VERBOSE_BUILD=1 shows the whole log)"


@functools.lru_cache(maxsize=None)
def warn_unavailable(kind: str, reason: str) -> None:
    """Warns once per process that ``"auto"`` skips backend ``kind`` because of ``reason``."""
    from ..dispatch import warn_caller  # here: setup.py loads this file alone, outside the package

    warn_caller(f"fusedrnn: the {kind!r} backend is unavailable and 'auto' skips it: {reason}")
