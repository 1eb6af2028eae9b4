"""The one place that picks a backend for a call, and falls back.

Which backends implement a cell is the cell's to say (``fusedrnn.cells``). A backend is a
module that exports ``backend``, an object with:

- ``name``: its name in ``BACKENDS``;
- ``device_type``: the device type of the tensors it is built for (``"cuda"``, ``"cpu"``),
  or ``None`` for any;
- ``unavailable() -> str | None``: why this machine cannot run it at all
  (no CUDA, no compiler, a failed build), or ``None``;
- ``unsupported(sweep, explicit) -> str | None``: why it cannot run this call (device,
  dtype, shape), or ``None``. ``explicit`` is true when the user named the backend,
  so a backend may accept calls there that ``"auto"`` should not pick (e.g. Triton's
  CPU interpreter);
- ``run(sweep) -> (output (T, B, H), h_n (B, H), c_n (B, H))``, differentiable.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import warnings
from typing import Dict, List, Optional

import torch

from .cells import CELLS
from .sweep import Sweep

#: Every backend, in the order ``"auto"`` tries them. ``"torch"`` (PyTorch's own LSTM kernel)
#: comes first but takes under ``"auto"`` only the calls its table says it runs faster.
BACKENDS = ("torch", "triton", "cuda", "cpu", "reference")

_MODULES = {
    "torch": "fusedrnn.native.backend",
    "triton": "fusedrnn.triton_kernels.backend",
    "cuda": "fusedrnn.ext.cuda_backend",
    "cpu": "fusedrnn.ext.cpu_backend",
    "reference": "fusedrnn.reference.backend",
}

_loaded: Dict[str, object] = {}
_missing: Dict[str, str] = {}
_reasons: Dict[str, Optional[str]] = {}


class BackendUnavailableError(RuntimeError):
    """A backend named explicitly cannot run on this machine or for this call."""


def _load(name: str):
    if name in _loaded:
        return _loaded[name]
    if name in _missing:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as error:
        _missing[name] = f"not installed ({error})"
        return None
    _loaded[name] = module.backend
    return module.backend


def check_name(name: str) -> None:
    """Raises ``ValueError`` unless ``name`` is ``"auto"`` or a backend's name (``TypeError``
    unless it is a str)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, 'auto' or one of {BACKENDS}, got {type(name).__name__}")
    if name != "auto" and name not in _MODULES:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")


# torch.compile calls it while tracing and keeps the answer (a build or a GPU query cannot
# be traced; the answer does not change within a process).
@torch.compiler.assume_constant_result
def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run on this machine, or ``None`` if it can (asked once per
    process: every call of ``"auto"`` asks it of each backend in turn)."""
    check_name(name)
    return _unavailable(name)


@torch.compiler.assume_constant_result
def _unavailable(name: str) -> Optional[str]:
    """:func:`unavailable_reason` for a name known to be a backend's (``"auto"`` asks it of each)."""
    if name not in _reasons:
        backend = _load(name)
        _reasons[name] = _missing[name] if backend is None else backend.unavailable()
    return _reasons[name]


def available_backends() -> List[str]:
    """The backends this machine can run, in ``"auto"``'s order of preference.

    Which of them a call gets also depends on the call: ``"auto"`` takes the first that
    accepts its device, dtype and shape. ``"triton"`` is listed under ``TRITON_INTERPRET=1``
    without a GPU, but ``"auto"`` never picks the Triton interpreter: it runs only calls
    that name ``"triton"``.
    """
    return [name for name in BACKENDS if unavailable_reason(name) is None]


def select(name: str, sweep: Sweep):
    """The backend object that runs ``sweep``: ``name``, or the first that can under ``"auto"``.

    Under ``"auto"``, a backend built for the call's device that declines it (a shape,
    dtype or compile failure of a fast path) is reported once per reason with a warning;
    one built for another device is passed over in silence.
    """
    check_name(name)
    implemented_by = CELLS[sweep.cell].backends
    if name != "auto" and name not in implemented_by:
        raise BackendUnavailableError(f"backend {name!r} cannot run this {sweep.cell} call: "
                                      f"it does not implement the {sweep.cell} cell")
    if sweep.batch_size == 0:  # nothing to compute: the reference's empty result is every backend's
        reason = None if name == "auto" else unavailable_reason(name)
        if reason is None:
            return _load("reference")
        raise BackendUnavailableError(f"backend {name!r} cannot run this {sweep.cell} call: {reason}")
    if name == "auto":
        for candidate in BACKENDS:
            if candidate in implemented_by and _unavailable(candidate) is None:
                backend = _loaded[candidate]
                reason = backend.unsupported(sweep, explicit=False)
                if reason is None:
                    return backend
                if backend.device_type == sweep.device_type:
                    _warn_declined(backend.name, sweep.cell, reason)
        raise BackendUnavailableError(f"no backend can run this {sweep.cell} call")
    reason = _unavailable(name)
    if reason is None:
        backend = _loaded[name]
        reason = backend.unsupported(sweep, explicit=True)
        if reason is None:
            return backend
    raise BackendUnavailableError(f"backend {name!r} cannot run this {sweep.cell} call: {reason}")


@functools.lru_cache(maxsize=None)
def _warn_declined(name: str, cell: str, reason: str) -> None:
    """Once per process and reason (the cache), not once per call."""
    warn_caller(f"fusedrnn: 'auto' falls back from the {name!r} backend for this {cell} call: {reason}")


#: Where fusedrnn's and torch's own code lies: frames a warning skips to reach the user's line.
_LIBRARY_DIRS = tuple(os.path.dirname(path) + os.sep for path in (__file__, torch.__file__))


def warn_caller(message: str) -> None:
    """A ``RuntimeWarning`` attributed to the line that called into fusedrnn: the first frame
    outside fusedrnn and torch (whose module and autograd layers lie between), as Python 3.12's
    ``skip_file_prefixes`` does, however deep the call that warns."""
    frame, stacklevel = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def run(name: str, sweep: Sweep):
    """Runs ``sweep`` on backend ``name`` (or ``"auto"``); returns ``output, h_n, c_n``."""
    return select(name, sweep).run(sweep)


# Every backend module is imported now (they are light: nothing builds or compiles on import),
# so that code torch.compile traces only reads `_loaded`, never fills it.
for _name in BACKENDS:
    _load(_name)
