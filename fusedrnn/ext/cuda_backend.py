"""The ``"cuda"`` backend: cuBLAS products and the fused step kernels of csrc/cuda.

Half types run in their own type with float32 accumulation, cell state and gate math.
"""
import torch

from .backend import ExtensionBackend

backend = ExtensionBackend("cuda", {dtype: dtype for dtype in (torch.float64, torch.float32, torch.bfloat16,
                                                               torch.float16)})
