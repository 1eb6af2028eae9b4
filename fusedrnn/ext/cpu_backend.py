"""The ``"cpu"`` backend: the C++ sweeps of csrc/cpu on CPU tensors.

float16 and bfloat16 are computed in float32 (SPEC §6 asks for float32 accumulation,
cell state and nonlinearities; CPUs have no faster half-precision path for these).
"""
import torch

from .backend import ExtensionBackend

backend = ExtensionBackend("cpu", {
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float16: torch.float32,
})
