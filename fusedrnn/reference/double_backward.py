"""Second-order gradients for the fused backends, through the reference cells.

The fused backward kernels are not themselves differentiable. When a backward must be
(``create_graph=True``, e.g. a gradient penalty), a fused backend recomputes the forward
with the reference cell from the same inputs and differentiates that instead: the
gradients agree with the fused backward to SPEC tolerance and, unlike it, carry a graph.
"""
from typing import Callable, Optional, Sequence

import torch

from ..precision import accumulation_dtype

def recomputed_gradients(run: Callable, inputs: Sequence[Optional[torch.Tensor]], grads):
    """``∂run(*inputs)/∂inputs · grads`` with a graph (one entry per input, ``None`` where an
    input is ``None`` or needs no gradient). ``run`` returns the cell's ``output, h_n, c_n``
    from the reference; half-precision inputs enter it in float32 (SPEC §6)."""
    upcast = [t if t is None else t.to(accumulation_dtype(t.dtype)) for t in inputs]
    outputs = run(*upcast)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    found = iter(torch.autograd.grad(outputs, wanted, grads, create_graph=True, allow_unused=True))
    return [next(found) if t is not None and t.requires_grad else None for t in inputs]
