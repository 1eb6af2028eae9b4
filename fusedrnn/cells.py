"""The cells, each one object: its parameters and their shapes, its options and their
validation, its reference sweep, and the backends that implement it.

The modules, the functional API, dispatch, the benchmark and the tests read these
objects; adding a cell (README, "Adding a cell") starts here.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from . import reference

GATE_MODES = ("noisy", "soft", "hard")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's floats too


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Option:
    """A non-tensor argument of a cell: its default and what it accepts.

    Attributes:
        name: the keyword it is passed as.
        default: its value when omitted.
        type_ok: whether a value has an accepted type (else ``TypeError``).
        type_name: that type, as the error message names it.
        value_ok: whether a well-typed value is allowed (else ``ValueError``).
        allowed: the allowed values, as the error message names them.
        convert: what an allowed value is stored as (a temperature given as ``1`` is ``1.0``).
    """

    name: str
    default: Any
    type_ok: Callable[[Any], bool]
    type_name: str
    value_ok: Callable[[Any], bool]
    allowed: str
    convert: Callable[[Any], Any] = lambda value: value

    def check(self, value, name: Optional[str] = None):
        """Returns ``value`` if allowed, else raises naming the argument (``name`` when it is
        passed under another keyword, e.g. ``eval_gate_mode``)."""
        name = name or self.name
        if not self.type_ok(value):
            raise TypeError(f"{name} must be {self.type_name}, got {type(value).__name__}")
        if not self.value_ok(value):
            raise ValueError(f"{name} must be {self.allowed}, got {value!r}")
        return self.convert(value)


#: The smallest temperature: float32's smallest normal number, 2**-126. The kernels multiply
#: by 1/τ in float32, which overflows below about 2.9e-39 (inf · 0 is NaN in the gradients).
MIN_TEMPERATURE = 2.0 ** -126
TEMPERATURE = Option("temperature", 1.0, _is_number, "a number", lambda v: math.isfinite(v) and v >= MIN_TEMPERATURE,
                     "finite and >= 2**-126 (float32's smallest normal number)", float)
NOISE_PROB = Option("noise_prob", 1.0, _is_number, "a number", lambda v: 0 < v <= 1, "in (0, 1]", float)
GATE_MODE = Option("gate_mode", "noisy", lambda v: isinstance(v, str), "a str", lambda v: v in GATE_MODES,
                   f"one of {GATE_MODES}")
MOGRIFY_STEPS = Option("mogrify_steps", 5, _is_int, "an int", lambda v: v >= 0, ">= 0")
MOGRIFY_RANK = Option("mogrify_rank", None, lambda v: v is None or _is_int(v), "an int or None",
                      lambda v: v is None or v > 0, "positive")
MOGRIFY_BIAS = Option("mogrify_bias", True, lambda v: isinstance(v, bool), "a bool", lambda v: True, "a bool")


def lstm_parameter_shapes(input_size: int, hidden_size: int, bias: bool = True) -> Dict[str, Tuple[int, ...]]:
    """One layer and direction's LSTM parameters, named as ``nn.LSTM`` names them with
    ``{tag}`` for the layer and direction (``l0``, ``l0_reverse``); gate order i, f, g, o."""
    gates = 4 * hidden_size
    shapes = {"weight_ih_{tag}": (gates, input_size), "weight_hh_{tag}": (gates, hidden_size)}
    if bias:
        shapes.update({"bias_ih_{tag}": (gates,), "bias_hh_{tag}": (gates,)})
    return shapes


def mogrify_round_shape(j: int, input_size: int, hidden_size: int) -> Tuple[int, int]:
    """Round ``j``'s matrix (SPEC §3): odd rounds gate ``x`` by ``h``, ``Q_j (I, H)``;
    even rounds gate ``h`` by ``x``, ``R_j (H, I)``. Its bias has the row count."""
    return (input_size, hidden_size) if j % 2 == 1 else (hidden_size, input_size)


def mogrifier_parameter_shapes(input_size: int, hidden_size: int, bias: bool = True, mogrify_steps: int = 5,
                               mogrify_rank: Optional[int] = None, mogrify_bias: bool = True):
    """The LSTM's parameters, then round ``j``'s ``mogrify_weight_{tag}_r{j}`` (or its
    low-rank factors ``mogrify_weight_left_{tag}_r{j} (rows, k)`` and
    ``mogrify_weight_right_{tag}_r{j} (k, cols)``) and ``mogrify_bias_{tag}_r{j}``."""
    shapes = lstm_parameter_shapes(input_size, hidden_size, bias)
    for j in range(1, mogrify_steps + 1):
        rows, cols = mogrify_round_shape(j, input_size, hidden_size)
        if mogrify_rank is None:
            shapes[f"mogrify_weight_{{tag}}_r{j}"] = (rows, cols)
        else:
            shapes[f"mogrify_weight_left_{{tag}}_r{j}"] = (rows, mogrify_rank)
            shapes[f"mogrify_weight_right_{{tag}}_r{j}"] = (mogrify_rank, cols)
        if mogrify_bias:
            shapes[f"mogrify_bias_{{tag}}_r{j}"] = (rows,)
    return shapes


@dataclass(frozen=True)
class Cell:
    """A recurrent cell.

    Attributes:
        name: its key in :data:`CELLS` and ``Sweep.cell``.
        spec: where SPEC defines it.
        reference: its reference sweep in :mod:`fusedrnn.reference`, called as
            ``reference(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, *, lengths, reverse,
            **sweep_fields)``: the ground truth.
        parameter_shapes: ``(input_size, hidden_size, bias, **structure) -> {name: shape}``,
            one layer and direction's parameters, ``{tag}`` in each name for the layer and
            direction.
        structure: module options that decide the parameters (``mogrify_steps``...).
        options: call options besides tensors (G2's ``temperature``...).
        sweep_fields: the ``Sweep`` fields the cell reads besides the LSTM's.
        backends: the backends that implement it; ``"auto"`` passes over the others.
    """

    name: str
    spec: str
    reference: Callable
    parameter_shapes: Callable[..., Dict[str, Tuple[int, ...]]]
    structure: Tuple[Option, ...] = ()
    options: Tuple[Option, ...] = ()
    sweep_fields: Tuple[str, ...] = ()
    backends: Tuple[str, ...] = field(default=("triton", "cuda", "cpu", "reference"))

    def check_options(self, **values) -> Dict[str, Any]:
        """``values`` checked, with the defaults of the options not given."""
        checked = {option.name: option.check(values.pop(option.name, option.default)) for option in self.options}
        if values:
            raise TypeError(f"the {self.name} cell has no option {sorted(values)[0]!r}")
        return checked


LSTM = Cell("lstm", "SPEC §2", reference.lstm, lstm_parameter_shapes,
            backends=("torch", "triton", "cuda", "cpu", "reference"))
MOGRIFIER = Cell("mogrifier", "SPEC §3", reference.mogrifier_lstm, mogrifier_parameter_shapes,
                 structure=(MOGRIFY_STEPS, MOGRIFY_RANK, MOGRIFY_BIAS),
                 sweep_fields=("mogrify_weights", "mogrify_biases"))
G2 = Cell("g2", "SPEC §4", reference.g2_lstm, lstm_parameter_shapes,
          options=(TEMPERATURE, NOISE_PROB, GATE_MODE), sweep_fields=("temperature", "gate_mode", "noise"))

#: Every cell, by name.
CELLS: Dict[str, Cell] = {cell.name: cell for cell in (LSTM, MOGRIFIER, G2)}
