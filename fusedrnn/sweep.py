"""`Sweep`: one layer, one direction, a whole sequence: what every backend computes.

Shape letters (docs/SPEC.md): T time steps, B batch, I input size, H hidden size.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from .cells import CELLS

#: A Mogrifier round's matrix ``W (m, n)`` (SPEC §3.2): the tensor itself, or a low-rank pair
#: ``(left (m, k), right (k, n))`` with ``W = left @ right``, which no backend multiplies out.
RoundWeight = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def device_type_of(tensor: torch.Tensor) -> str:
    """``tensor.device.type``, from the tensor's flags where they tell (CPU, CUDA): right after a
    kernel ran, building a ``torch.device`` costs about 2.7 µs (0.3 with warm caches), and at
    T = 1 the host time is the cost."""
    return "cpu" if tensor.is_cpu else "cuda" if tensor.is_cuda else tensor.device.type


def same_device(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a.device == b.device``, without building the devices where a tensor is on the CPU."""
    if a.is_cpu or b.is_cpu:
        return a.is_cpu and b.is_cpu
    return a.device == b.device


def split_round_weights(weights: Sequence[RoundWeight]) -> Tuple[Tuple[torch.Tensor, ...], Tuple[bool, ...],
                                                                 Tuple[torch.Tensor, ...]]:
    """The rounds as the compiled operators take them: ``(matrices, low_rank, right_factors)``,
    each round's matrix (its left factor when low rank), whether it is low rank, and the right
    factors of the low-rank rounds in round order."""
    matrices = tuple(weight[0] if isinstance(weight, tuple) else weight for weight in weights)
    low_rank = tuple(isinstance(weight, tuple) for weight in weights)
    return matrices, low_rank, tuple(weight[1] for weight in weights if isinstance(weight, tuple))


def join_round_weights(matrices: Sequence[torch.Tensor], low_rank: Sequence[bool],
                       right_factors: Sequence[torch.Tensor]) -> Tuple[RoundWeight, ...]:
    """The rounds of :func:`split_round_weights`' parts."""
    right_factors = iter(right_factors)
    return tuple((matrix, next(right_factors)) if factored else matrix for matrix, factored in zip(matrices, low_rank))


def flatten_rounds(weights: Sequence[RoundWeight], biases: Optional[Sequence[torch.Tensor]]):
    """``(tensors, low_rank)``: every tensor of the rounds in one flat tuple (the matrices or left
    factors, the right factors, the biases), as autograd takes them, and which rounds are low rank."""
    matrices, low_rank, right_factors = split_round_weights(weights)
    return (*matrices, *right_factors, *(biases or ())), low_rank


def unflatten_rounds(tensors: Sequence[Optional[torch.Tensor]], low_rank: Sequence[bool], has_biases: bool):
    """The inverse of :func:`flatten_rounds` on the front of ``tensors`` (or on gradients of
    the same layout): ``(weights, biases or None, the tensors after them)``."""
    rounds, factored = len(low_rank), sum(low_rank)
    biases_end = 2 * rounds + factored if has_biases else rounds + factored
    weights = join_round_weights(tensors[:rounds], low_rank, tensors[rounds:rounds + factored])
    biases = tuple(tensors[rounds + factored:biases_end]) if has_biases else None
    return weights, biases, tuple(tensors[biases_end:])


def call_operator(op, *arguments, save: bool):
    """``op(*arguments)``, a sweep's forward operator, its arguments validated (see
    :func:`call_validated`). Without ``save`` (no backward can follow,
    :attr:`Sweep.needs_backward`) the call skips the Python autograd layer that
    ``torch.library.register_autograd`` runs before the kernel even under ``no_grad``: about
    13 µs a layer, and at T = 1 the host time is the cost. torch.compile traces the plain call."""
    if save or torch.compiler.is_compiling():
        return call_validated(op, *arguments)
    with torch._C._AutoDispatchBelowAutograd():
        return call_validated(op, *arguments)


#: Set while fusedrnn calls an operator whose arguments it validated itself.
VALIDATED = contextvars.ContextVar("fusedrnn_validated_operator_call", default=False)


def call_validated(op, *arguments):
    """``op(*arguments)`` where fusedrnn built and validated the arguments (the functional API's
    checks, or a forward's own saved tensors): operators that check their arguments in Python
    (triton_kernels/checks.py: 9 µs a forward, 18 µs a backward on a 2-core CPU VM) skip the
    checks, as at T = 1 the host time is the cost. Direct calls, and compiled graphs, are checked."""
    if torch.compiler.is_compiling():  # dynamo does not trace ContextVar.set
        return op(*arguments)
    token = VALIDATED.set(True)
    try:
        return op(*arguments)
    finally:
        VALIDATED.reset(token)


def checking_devices(op: str, fake):
    """An operator's fake implementation ``fake`` behind a device check: a call with a meta
    tensor among others dispatches to the fake implementation, not to the kernel and its checks
    (csrc/checks.cpp, triton_kernels/checks.py), and would return uninitialised memory on x's
    device. Every tensor must be on ``x``'s."""
    signature = inspect.signature(fake)

    @functools.wraps(fake)
    def checked(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        device = arguments["x"].device
        for name, value in arguments.items():
            for tensor in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(tensor, torch.Tensor) and tensor.device != device:
                    raise ValueError(f"fusedrnn::{op}: {name} must be on x's device {device}, got {tensor.device}")
        return fake(*args, **kwargs)

    return checked


@dataclass(eq=False)
class Sweep:
    """A validated call: every tensor on one device and of one floating dtype. Backends read it
    and never assign to it (``dataclasses.replace`` makes a changed copy); it is not frozen
    because a frozen dataclass's ``__init__`` costs 1.5 µs more a call, and at T = 1 the host
    time is the cost.

    Attributes:
        cell: a key of :data:`fusedrnn.cells.CELLS`.
        x: ``(T, B, I)`` input.
        h0, c0: ``(B, H)`` initial state (zeros already filled in).
        weight_ih: ``(4H, I)``, gate order i, f, g, o.
        weight_hh: ``(4H, H)``.
        bias_ih, bias_hh: ``(4H,)`` or ``None``.
        lengths: ``(B,)`` int64 on ``x.device`` or ``None``; row ``b`` runs steps
            ``t < lengths[b]`` and is frozen (output zero) after.
        reverse: run ``t = T-1 .. 0`` (row ``b`` starts at ``lengths[b] - 1``).
        mogrify_weights: Mogrifier round matrices, round ``j = 1..r``: ``Q_j (I, H)``
            for odd ``j``, ``R_j (H, I)`` for even ``j``, each a tensor or a low-rank
            ``(left, right)`` tuple (:data:`RoundWeight`).
        mogrify_biases: round biases ``(I,)`` / ``(H,)`` or ``None``.
        temperature, noise_prob, gate_mode: G2-LSTM options (SPEC §4), checked with
            ``cells.G2.check_options``. Other cells keep the values under which G2's
            gates are the LSTM's (τ = 1, soft), so a backend may run an LSTM as a G2 sweep.
        noise: ``(T, B, 2, H)`` float32, ``m ⊙ ℓ`` for the i and f gates, or ``None``
            to let the backend draw its own (only read when ``gate_mode == "noisy"``).
    """

    cell: str
    x: torch.Tensor
    h0: torch.Tensor
    c0: torch.Tensor
    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias_ih: Optional[torch.Tensor]
    bias_hh: Optional[torch.Tensor]
    lengths: Optional[torch.Tensor] = None
    reverse: bool = False
    mogrify_weights: Tuple[RoundWeight, ...] = ()
    mogrify_biases: Optional[Tuple[torch.Tensor, ...]] = None
    temperature: float = 1.0
    noise_prob: float = 1.0
    gate_mode: str = "soft"
    noise: Optional[torch.Tensor] = None

    def lstm_arguments(self) -> Tuple[Optional[torch.Tensor], ...]:
        """``x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0``: the functional API's order."""
        return self.x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.h0, self.c0

    def cell_arguments(self) -> Dict[str, object]:
        """The fields the cell reads besides the LSTM's (``Cell.sweep_fields``), by name."""
        return {name: getattr(self, name) for name in CELLS[self.cell].sweep_fields}

    @property
    def seq_len(self) -> int:
        return self.x.shape[0]

    @property
    def batch_size(self) -> int:
        return self.x.shape[1]

    @property
    def input_size(self) -> int:
        return self.x.shape[2]

    @property
    def hidden_size(self) -> int:
        return self.weight_hh.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def device_type(self) -> str:
        """``device.type`` (:func:`device_type_of`)."""
        return device_type_of(self.x)

    @property
    def mogrify_steps(self) -> int:
        return len(self.mogrify_weights)

    @property
    def noisy(self) -> bool:
        """Whether this G2 call adds gate noise."""
        return self.cell == "g2" and self.gate_mode == "noisy"

    @property
    def needs_backward(self) -> bool:
        """Whether a backward can follow: grad mode is on and an input requires a gradient.

        Backends ask before they call their operator (its ``save`` argument): inside it grad
        mode is always off, so it cannot tell. Without a backward to come, a backend need
        not keep every step's state.
        """
        if not torch.is_grad_enabled():
            return False
        tensors = (self.x, self.h0, self.c0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if self.mogrify_weights:
            tensors += flatten_rounds(self.mogrify_weights, self.mogrify_biases)[0]
        return any(t is not None and t.requires_grad for t in tensors)
