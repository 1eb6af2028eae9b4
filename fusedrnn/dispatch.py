"""The one place that picks a backend for a call, and falls back.

A backend is a module that exports ``backend``, an object with:

- ``name``: its name in ``BACKENDS``;
- ``unavailable() -> str | None``: why this machine cannot run it at all
  (no CUDA, no compiler, a failed build), or ``None``;
- ``unsupported(sweep, explicit) -> str | None``: why it cannot run this call (device,
  dtype, shape), or ``None``. ``explicit`` is true when the user named the backend,
  so a backend may accept calls there that ``"auto"`` should not pick (e.g. Triton's
  CPU interpreter);
- ``run(sweep) -> (output (T, B, H), h_n (B, H), c_n (B, H))``, differentiable.
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Optional

from .sweep import Sweep

#: Every backend, in the order ``"auto"`` tries them.
BACKENDS = ("triton", "cuda", "cpu", "reference")

_MODULES = {
    "triton": "fusedrnn.triton_kernels.backend",
    "cuda": "fusedrnn.ext.cuda_backend",
    "cpu": "fusedrnn.ext.cpu_backend",
    "reference": "fusedrnn.reference.backend",
}

_loaded: Dict[str, object] = {}
_missing: Dict[str, str] = {}


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


def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run on this machine, or ``None`` if it can."""
    if name not in _MODULES:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")
    backend = _load(name)
    if backend is None:
        return _missing[name]
    return backend.unavailable()


def available_backends() -> List[str]:
    """The backends this machine can run, in ``"auto"``'s order of preference.

    Which of them a call gets also depends on the call: ``"auto"`` takes the first that
    accepts its device, dtype and shape. ``"triton"`` is listed under ``TRITON_INTERPRET=1``
    without a GPU, but ``"auto"`` never picks the Triton interpreter: it runs only calls
    that name ``"triton"``.
    """
    return [name for name in BACKENDS if unavailable_reason(name) is None]


def select(name: str, sweep: Sweep):
    """The backend object that runs ``sweep``: ``name``, or the first that can under ``"auto"``."""
    if name == "auto":
        for candidate in BACKENDS:
            if unavailable_reason(candidate) is None:
                backend = _loaded[candidate]
                if backend.unsupported(sweep, explicit=False) is None:
                    return backend
        raise BackendUnavailableError(f"no backend can run this {sweep.cell} call")
    reason = unavailable_reason(name)
    if reason is None:
        backend = _loaded[name]
        reason = backend.unsupported(sweep, explicit=True)
        if reason is None:
            return backend
    raise BackendUnavailableError(f"backend {name!r} cannot run this {sweep.cell} call: {reason}")


def run(name: str, sweep: Sweep):
    """Runs ``sweep`` on backend ``name`` (or ``"auto"``); returns ``output, h_n, c_n``."""
    return select(name, sweep).run(sweep)
