"""The correctness harness of the tests and of the benchmark's gate (SPEC §6): fresh random
inputs of a cell, the float64 reference's outputs and gradients on them, and the relative
error of any implementation against those.

    problem = random_problem("g2", (T, B, I, H), gate_mode="noisy", lengths=True)
    truth = ground_truth(problem, torch.bfloat16, "cuda")
    pairs = compare(on_backend("triton"), truth)     # [(name, actual, expected)]
    verdict = check(on_backend("triton"), truth)     # the worst error against SPEC §6
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import functional
from .cells import CELLS, mogrify_round_shape
from .precision import relative_error, tolerance
from .noise import sample_noise

Tensor = torch.Tensor
#: ``(T, B, I, H)``: time steps, batch rows, input size, hidden size.
Shape = Tuple[int, int, int, int]


def map_tensors(value, fn):
    """``fn`` on every tensor inside nested lists, tuples and dicts."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {key: map_tensors(item, fn) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(item, fn) for item in value)
    return value


def flat_tensors(value) -> List[Tensor]:
    """Every tensor inside nested lists, tuples and dicts, in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in flat_tensors(item)]
    return []


def _names(prefix, value) -> List[str]:
    if isinstance(value, Tensor):
        return [prefix]
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in _names(key, item)]
    if isinstance(value, (list, tuple)):
        return [name for i, item in enumerate(value) for name in _names(f"{prefix}[{i}]", item)]
    return []


@dataclass
class Problem:
    """One call of a cell's functional API.

    Attributes:
        cell: a key of :data:`fusedrnn.cells.CELLS`.
        x: ``(T, B, I)``; h0, c0: ``(B, H)``.
        weights: the functional API's weight arguments by keyword (Mogrifier rounds are
            lists; a low-rank round is a ``(left, right)`` pair).
        options: its other keyword arguments: G2's ``gate_mode``, ``temperature`` and an
            explicit ``noise`` so that every implementation adds the same.
        lengths: ``(B,)`` int64 or ``None``; reverse: run backwards.
    """

    cell: str
    x: Tensor
    h0: Tensor
    c0: Tensor
    weights: Dict[str, object]
    options: Dict[str, object] = field(default_factory=dict)
    lengths: Optional[Tensor] = None
    reverse: bool = False

    def weight_list(self) -> List[Tensor]:
        """The weights in a fixed order, lists flattened."""
        return flat_tensors(self.weights)

    def leaves(self) -> List[Tensor]:
        """The differentiable inputs in a fixed order: x, h0, c0, then the weights."""
        return [self.x, self.h0, self.c0] + self.weight_list()

    @property
    def noise(self) -> Optional[Tensor]:
        """G2's explicit ``(T, B, 2, H)`` noise, or ``None``."""
        return self.options.get("noise")

    def leaf_names(self) -> List[str]:
        return ["x", "h0", "c0"] + _names("", self.weights)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "Problem":
        """A copy with ``fn`` applied to every leaf (noise and lengths only move device)."""
        return dataclasses.replace(self, x=fn(self.x), h0=fn(self.h0), c0=fn(self.c0),
                                   weights=map_tensors(self.weights, fn))

    def to(self, dtype: torch.dtype, device="cpu", requires_grad: bool = False) -> "Problem":
        """A copy in ``dtype`` on ``device`` whose leaves are fresh tensors (differentiable
        if asked)."""
        moved = self.map(lambda t: t.detach().to(device=device, dtype=dtype).requires_grad_(requires_grad))
        return dataclasses.replace(moved, options=map_tensors(self.options, lambda t: t.to(device)),
                                   lengths=None if self.lengths is None else self.lengths.to(device))

    def rounded_to(self, dtype: torch.dtype) -> "Problem":
        """Float64 leaves holding values representable in ``dtype``: what a run in ``dtype``
        and the float64 reference both see exactly."""
        return self.map(lambda t: t.to(dtype).double())

    def call(self, backend: str = "auto") -> Tuple[Tensor, Tensor, Tensor]:
        """``output, h_n, c_n`` of this call on ``backend``."""
        output, (h_n, c_n) = functional.FUNCTIONS[self.cell](
            self.x, h0=self.h0, c0=self.c0, **self.weights, **self.options, lengths=self.lengths,
            reverse=self.reverse, backend=backend)
        return output, h_n, c_n


def with_hard_gate_margin(x: Tensor, h0: Tensor, weights: Dict[str, object]) -> None:
    """Makes every input- and forget-gate pre-activation of the sweep at least 1/2 away from 0.

    A hard gate ``1[z ≥ 0]`` is discontinuous: where ``z`` is within rounding of 0 (about
    0.2% of the gates at T=20, B=64, H=256 with random weights) a float32/TF32 or bfloat16
    kernel and the float64 reference take different branches, and each flip moves ``c`` by
    ``g`` for the rest of the sequence. The gates still depend on the data: ``x[..., 0]``
    is ``±1`` and each i/f row reads it with weight ``±1``, while the rest of the row
    (other inputs, ``W_hh``, biases) is scaled so that it adds at most 1/2 in magnitude
    (``|h_t| < 1`` for ``t ≥ 1``). Changes ``x`` and ``weights`` in place.
    """
    hidden_size = h0.shape[-1]
    rows = slice(0, 2 * hidden_size)  # i and f (SPEC §1)
    sign = lambda shape: torch.randint(0, 2, shape, dtype=x.dtype, device=x.device) * 2 - 1  # noqa: E731
    x[..., 0] = sign(x.shape[:-1])
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    w_ih[rows, 0] = sign((2 * hidden_size,))
    biases = [weights[name] for name in ("bias_ih", "bias_hh") if weights.get(name) is not None]
    x_max = x[..., 1:].abs().max().item() if x.shape[-1] > 1 else 0.0
    rest = (w_ih[rows, 1:].abs().sum(1) * x_max
            + w_hh[rows].abs().sum(1) * max(1.0, h0.abs().max().item())
            + sum(b[rows].abs() for b in biases))
    scale = 0.5 / rest.clamp(min=0.5)
    w_ih[rows, 1:] *= scale[:, None]
    w_hh[rows] *= scale[:, None]
    for b in biases:
        b[rows] *= scale


def random_weights(cell: str, input_size: int, hidden_size: int, *, bias: bool = True, mogrify_steps: int = 5,
                   mogrify_rank: Union[None, int, Sequence[Optional[int]]] = None, mogrify_bias: bool = True,
                   device="cpu") -> Dict[str, object]:
    """Float64 weights of one layer and direction as the functional API's keyword arguments:
    LSTM weights ``U(-1/√H, 1/√H)`` as the modules initialise them, round matrices
    ``U(-1/√fan_in, 1/√fan_in)`` (low rank ``k``: factors ``U(-b, b)``, ``b = (3/(fan_in·k))^¼``,
    whose product has the same variance, as in the modules' initialisation; factors
    ``U(-0.7, 0.7)`` at ``H = 512, k = 64`` gave round pre-activations of standard deviation
    ~15, a problem so ill-conditioned that float32 rounding alone moved the outputs by 20 %),
    round biases ``U(-0.3, 0.3)``: never zeros. ``mogrify_rank`` is every round's rank (``None``: full
    rank) or one per round, to mix full-rank and low-rank rounds."""
    if not isinstance(mogrify_rank, (list, tuple)):
        mogrify_rank = [mogrify_rank] * mogrify_steps
    def uniform(*shape, bound):
        return (torch.rand(shape, dtype=torch.float64, device=device) * 2 - 1) * bound

    bound = hidden_size ** -0.5
    gates = 4 * hidden_size
    weights = dict(weight_ih=uniform(gates, input_size, bound=bound), weight_hh=uniform(gates, hidden_size, bound=bound))
    if bias:
        weights.update(bias_ih=uniform(gates, bound=bound), bias_hh=uniform(gates, bound=bound))
    if cell == "mogrifier":
        rounds, biases = [], []
        for j in range(1, mogrify_steps + 1):
            rows, cols = mogrify_round_shape(j, input_size, hidden_size)
            rank = mogrify_rank[j - 1]
            if rank is None:
                rounds.append(uniform(rows, cols, bound=cols ** -0.5))
            else:
                bound = (3 / (cols * rank)) ** 0.25
                rounds.append((uniform(rows, rank, bound=bound), uniform(rank, cols, bound=bound)))
            biases.append(uniform(rows, bound=0.3))
        weights.update(mogrify_weights=rounds, mogrify_biases=biases if mogrify_bias else None)
    return weights


def random_problem(cell: str, shape: Shape, *, lengths: bool = False, reverse: bool = False, device="cpu",
                   weight_options: Optional[dict] = None, **options) -> Problem:
    """Fresh float64 inputs of ``cell`` (from the global torch generator): ``x ~ N(0, 1)``,
    states ``~ N(0, 1/4)``, :func:`random_weights`.

    Args:
        shape: ``(T, B, I, H)``.
        lengths: draw lengths in ``[1, T]`` (the first row full).
        weight_options: keyword arguments of :func:`random_weights` (bias, Mogrifier rounds).
        options: the cell's call options (``CELLS[cell].options``); a noisy G2 call
            (``gate_mode="noisy"``, the default) gets explicit noise drawn with ``noise_prob``,
            and hard gates get inputs away from the gates' discontinuity.
    """
    seq_len, batch_size, input_size, hidden_size = shape
    weights = random_weights(cell, input_size, hidden_size, device=device, **(weight_options or {}))
    x = torch.randn(seq_len, batch_size, input_size, dtype=torch.float64, device=device)
    h0 = torch.randn(batch_size, hidden_size, dtype=torch.float64, device=device) * 0.5
    c0 = torch.randn(batch_size, hidden_size, dtype=torch.float64, device=device) * 0.5
    if CELLS[cell].options:
        noise_prob = options.pop("noise_prob", 1.0)
        options = CELLS[cell].check_options(**options)
        del options["noise_prob"]
        if options["gate_mode"] == "hard":
            with_hard_gate_margin(x, h0, weights)
        if options["gate_mode"] == "noisy":
            options["noise"] = sample_noise(seq_len, batch_size, hidden_size, noise_prob, device=device)
    row_lengths = None
    if lengths:
        row_lengths = torch.randint(1, seq_len + 1, (batch_size,), device=device)
        row_lengths[0] = seq_len
    return Problem(cell, x, h0, c0, weights, options, row_lengths, reverse)


@dataclass
class Truth:
    """The float64 reference's results on one problem, for implementations running in
    ``dtype`` on ``device``.

    Attributes:
        problem: the inputs (float64, rounded to ``dtype``: both sides see the same values).
        dtype, device: where the implementations under test run.
        grad_seeds: ``∂L/∂output, ∂L/∂h_n, ∂L/∂c_n`` (rounded to ``dtype``, on ``device``),
            or ``None`` when only the forward is checked.
        leaf_seeds: for second-order checks, one direction ``v`` per leaf (like ``grad_seeds``):
            the gradients, taken with ``create_graph``, are differentiated once more as
            ``∂⟨∇L, v⟩/∂leaf`` (what a gradient penalty backpropagates); else ``None``.
        names: what each entry of ``expected`` is.
        expected: output, h_n, c_n, then the gradient of every leaf, then (second order) the
            gradient of ``⟨∇L, v⟩`` for every leaf (float64).
    """

    problem: Problem
    dtype: torch.dtype
    device: torch.device
    grad_seeds: Optional[List[Tensor]]
    names: List[str]
    expected: List[Tensor]
    leaf_seeds: Optional[List[Tensor]] = None

    def forward_only(self) -> "Truth":
        return dataclasses.replace(self, grad_seeds=None, leaf_seeds=None, names=self.names[:3],
                                   expected=self.expected[:3])


#: ``run(problem) -> ((output, h_n, c_n), leaves)``: an implementation on a problem's inputs,
#: ``leaves`` the tensors its gradients are taken of, in the order of ``problem.leaves()``.
Run = Callable[[Problem], Tuple[Sequence[Tensor], Sequence[Tensor]]]


def on_backend(backend: str) -> Run:
    """A fusedrnn backend (or ``"auto"``) through the functional API."""
    return lambda problem: (problem.call(backend), problem.leaves())


def _evaluate(run: Run, problem: Problem, grad_seeds, leaf_seeds=None) -> List[Tensor]:
    with torch.set_grad_enabled(grad_seeds is not None):
        outputs, leaves = run(problem)
    results = [t.detach() for t in outputs]
    if grad_seeds is not None:
        grads = torch.autograd.grad(outputs, leaves, grad_seeds, allow_unused=True, create_graph=leaf_seeds is not None)
        grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
        results += [g.detach() for g in grads]
    if leaf_seeds is not None:
        penalty = sum((g * v).sum() for g, v in zip(grads, leaf_seeds) if g.requires_grad)
        second = torch.autograd.grad(penalty, leaves, allow_unused=True)
        results += [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, second)]
    return results


def _seeds(shapes, dtype, device) -> List[Tensor]:
    """Random ``N(0, 1)`` tensors, rounded to ``dtype`` (both sides see the same values), on ``device``."""
    return [torch.randn(shape, dtype=torch.float64).to(dtype).to(device) for shape in shapes]


def ground_truth(problem: Problem, dtype: torch.dtype, device="cpu", with_grads: bool = True,
                 second_order: bool = False) -> Truth:
    """Rounds ``problem`` to ``dtype``, draws gradient seeds (and, for ``second_order``, leaf
    seeds: see :class:`Truth`) and runs the float64 reference on ``device``."""
    if second_order and not with_grads:
        raise ValueError("second_order=True needs with_grads=True: second-order gradients differentiate the first")
    device = torch.device(device)
    problem = problem.rounded_to(dtype)
    grad_seeds = leaf_seeds = None
    if with_grads:
        seq_len, batch_size, hidden_size = problem.x.shape[0], problem.x.shape[1], problem.h0.shape[1]
        grad_seeds = _seeds([(seq_len, batch_size, hidden_size), (batch_size, hidden_size), (batch_size, hidden_size)],
                            dtype, device)
    if second_order:
        leaf_seeds = _seeds([leaf.shape for leaf in problem.leaves()], dtype, device)
    as_float64 = lambda seeds: None if seeds is None else [seed.double() for seed in seeds]  # noqa: E731
    expected = _evaluate(on_backend("reference"), problem.to(torch.float64, device, requires_grad=with_grads),
                         as_float64(grad_seeds), as_float64(leaf_seeds))
    leaf_names = problem.leaf_names()
    names = (["output", "h_n", "c_n"] + ([f"grad {name}" for name in leaf_names] if with_grads else [])
             + ([f"second-order grad {name}" for name in leaf_names] if second_order else []))
    return Truth(problem, dtype, device, grad_seeds, names, expected, leaf_seeds)


def compare(run: Run, truth: Truth) -> List[Tuple[str, Tensor, Tensor]]:
    """Runs ``run`` on the truth's inputs in its dtype on its device (under ``no_grad``
    without gradients); returns ``[(name, actual, expected)]`` for the outputs, final
    states and (when the truth has them) every gradient and every second-order gradient."""
    problem = truth.problem.to(truth.dtype, truth.device, requires_grad=truth.grad_seeds is not None)
    return list(zip(truth.names, _evaluate(run, problem, truth.grad_seeds, truth.leaf_seeds), truth.expected))


@dataclass(frozen=True)
class Verdict:
    """The worst relative error of a comparison, and SPEC §6's tolerance for it."""

    error: float
    tolerance: float
    worst: str

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance  # NaN and inf never pass

    def __str__(self):
        return f"{self.worst}: relative error {self.error:.3g} {'<=' if self.passed else '>'} {self.tolerance:.3g}"


def check(run: Run, truth: Truth) -> Verdict:
    """``run``'s worst relative error over :func:`compare`'s pairs. Raises what ``run`` raises."""
    errors = [(relative_error(actual, expected), name) for name, actual, expected in compare(run, truth)]
    error, worst = max(errors, key=lambda item: item[0])
    return Verdict(error, tolerance(truth.dtype, truth.device), worst)


def assert_same_noise(actual: Tensor, expected: Tensor) -> None:
    """Two draws of the G2 noise (SPEC §4.5) agree: the same Bernoulli masks, and
    ℓ = log U − log(1 − U) within a few float32 ulps of the two logarithms (log differs per
    libm, and the ``cpu`` backend's vectorised one is a polynomial of its own)."""
    assert torch.equal(actual != 0, expected != 0), "the Bernoulli masks differ"
    u = torch.sigmoid(expected.double())
    scale = u.log().abs() + (1 - u).log().abs()
    error = ((actual.double() - expected.double()).abs() / scale).amax().item() if actual.numel() else 0.0
    assert error <= 4 * torch.finfo(torch.float32).eps, f"logistic values differ by {error:.3g} of their logs"


def round_like_a_gpu_in_the_interpreter() -> None:
    """Makes Triton's CPU interpreter round float32 → bfloat16 casts to nearest even, as a GPU's
    ``cvt.rn.bf16.f32`` does (and as ``torch`` does). The interpreter (3.3 to 3.9 alike) truncates
    them instead, which shrinks every bfloat16 value a kernel stores toward zero; compounded over a
    sweep, that overstates a bfloat16 kernel's error against float64 (the Triton LSTM's saved gates
    in bfloat16 at a forget bias of 3, T = 32: 4.6e-2 truncated, 1.1e-2 rounded as on a GPU). The
    tests and the error studies call it; the kernels themselves never run differently."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder, truncating = interpreter.InterpreterBuilder, interpreter.InterpreterBuilder.cast_impl
    if getattr(truncating, "rounds_to_nearest", False):
        return

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
            return truncating(self, src, dst_type)
        bits = np.asarray(src.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
        # Adding just under half a bfloat16 unit (plus the kept bit, for ties to even) makes truncation round.
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return interpreter.TensorHandle(np.where(np.isnan(src.data), np.uint16(0x7FC0), rounded), dst_type.scalar)

    cast_impl.rounds_to_nearest = True
    builder.cast_impl = cast_impl
