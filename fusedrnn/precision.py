"""SPEC §6 in code: the type products accumulate in, and how far a result may be from the
float64 reference."""
import contextlib
from typing import Optional

import torch


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where half-precision values are summed and the cell state kept: float32; else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def summed_bias(bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``b_ih + b_hh`` (SPEC §2 adds both to every step's gates) in the accumulation dtype,
    where the gates are summed; ``None`` without biases. Every fused backend adds this one
    vector instead of two (rounded once to the input's dtype where a product takes it)."""
    if bias_ih is None:
        return None
    accumulation = accumulation_dtype(bias_ih.dtype)
    if bias_ih.dtype == accumulation:  # no casts to skip: at T = 1 the host time is the cost
        return bias_ih + bias_hh
    return bias_ih.to(accumulation) + bias_hh.to(accumulation)


def autocast_enabled(device_type: str) -> bool:
    """Whether ``torch.autocast`` is on for ``device_type`` (never for one it does not know, such
    as ``meta``, where asking raises)."""
    return (torch._C._is_any_autocast_enabled()  # first the one cheap question: T = 1 is host time
            and torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type))


def autocast_off(tensor: torch.Tensor):
    """A context in which autocast leaves the operations on ``tensor``'s device alone (a tensor,
    not its device: no ``torch.device`` is built unless autocast is on). The sweeps compute in
    their inputs' dtype (the modules cast under autocast before they call them), so the modules'
    layers and the operators' bodies and backwards run without it, whatever autocast the caller
    (or the ``backward()`` call) has on, as ``torch.amp.custom_fwd/custom_bwd`` would. No context
    to enter when autocast is off: at T = 1 the host time is the cost."""
    if torch._C._is_any_autocast_enabled() and autocast_enabled(tensor.device.type):
        return torch.autocast(tensor.device.type, enabled=False)
    return _NO_CONTEXT


#: Reusable: ``nullcontext`` keeps no state.
_NO_CONTEXT = contextlib.nullcontext()


def tolerance(dtype: torch.dtype, device="cpu") -> float:
    """The largest allowed ``‖out - ref‖ / ‖ref‖`` against the float64 reference.

    float32 on CUDA gets the TF32 bound when ``torch.backends.cudnn.allow_tf32`` allows
    TF32 (what ``nn.LSTM`` follows).
    """
    if dtype == torch.float32:
        tf32 = torch.device(device).type == "cuda" and torch.backends.cudnn.allow_tf32
        return 2e-3 if tf32 else 1e-5
    return {torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 2e-2}[dtype]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``‖actual - expected‖ / ‖expected‖`` in float64 on ``expected``'s device; ``inf`` for
    any NaN or infinity."""
    expected = expected.detach().double()
    actual = actual.detach().to(device=expected.device, dtype=torch.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if not torch.isfinite(actual).all():
        return float("inf")
    scale = expected.norm().item()
    return (actual - expected).norm().item() / (scale if scale > 0 else 1.0)
