"""``torch.nn.Module``s with ``torch.nn.LSTM``'s constructor, call signature, shapes and
parameter names: layers, directions, dropout, ``batch_first`` and packing live here,
once, for the three cells.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import cells, dispatch, functional
from .native import backend as native
from .precision import autocast_enabled, autocast_off
from .sweep import device_type_of, same_device


def _cast(tensor, dtype):
    # Skipping a no-op .to() matters at T = 1, where the host time is the cost.
    return tensor if tensor is None or tensor.dtype == dtype else tensor.to(dtype)


def _stacked(states):
    # One layer and direction (decoding's usual case): a view, not a copy, saves a few µs a call.
    return states[0].unsqueeze(0) if len(states) == 1 else torch.stack(states)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


class _RecurrentBase(nn.Module):
    """Layers and directions of one cell (``cell``, a :class:`fusedrnn.cells.Cell`, names the
    parameters); subclasses set it and run one layer and direction."""

    cell: cells.Cell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ):
        super().__init__()
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if proj_size:
            raise ValueError(f"proj_size is not supported by fusedrnn yet (got proj_size={proj_size}); use 0")
        if dtype is not None and dtype not in functional.FLOATING_DTYPES:
            raise TypeError(f"dtype must be float16, bfloat16, float32 or float64 (or None), got {dtype}")
        if dropout and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        self.backend = backend  # checked by the property below
        structure = {option.name: getattr(self, option.name) for option in self.cell.structure}
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                shapes = self.cell.parameter_shapes(layer_input_size, hidden_size, bias, **structure)
                for name, shape in shapes.items():
                    parameter = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
                    self.register_parameter(name.format(tag=f"l{layer}{suffix}"), parameter)

    @property
    def backend(self) -> str:
        """The backend every call runs on: ``"auto"`` or a name of ``fusedrnn.BACKENDS``."""
        return self._backend

    @backend.setter
    def backend(self, name: str):
        dispatch.check_name(name)
        self._backend = name

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self):
        """``Uniform(-1/√H, 1/√H)`` for every LSTM weight and bias, as ``nn.LSTM``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, parameter in self.named_parameters():
            if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                nn.init.uniform_(parameter, -bound, bound)

    def _lstm_weights(self, tag, dtype):
        """The LSTM parameters of layer-direction ``tag`` in ``dtype`` (they differ under autocast)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(_cast(self._parameter(f"{name}_{tag}"), dtype) for name in names)

    def _parameter(self, name):
        """Parameter ``name``, or ``None``. From ``_parameters`` first: ``nn.Module.__getattr__``
        costs about a µs a name, and at T = 1 the host time is the cost. A DataParallel replica
        keeps its parameters as plain attributes instead (its ``_parameters`` is empty)."""
        found = self._parameters.get(name)
        return found if found is not None else getattr(self, name, None)

    def _autocast_dtype(self, device_type, weight):
        """The dtype ``torch.autocast`` runs this module (``weight``, its first parameter) in, as
        it runs ``nn.LSTM``, or ``None``."""
        if weight.dtype == torch.float32 and autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None

    def _run_direction(self, x, h0, c0, lengths, tag, reverse):
        """Runs layer-direction ``tag`` over ``x (T, B, ·)``; returns ``output, (h_n, c_n)``."""
        raise NotImplementedError

    def _check_hx(self, hx, batch_size, batched, input):
        if hx is None:
            shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
            zeros = input.new_zeros(shape)
            return zeros, zeros
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h_0, c_0)")
        expected = (self.num_layers * self.num_directions,) + ((batch_size,) if batched else ()) + (self.hidden_size,)
        states = []
        for name, state in zip(("h_0", "c_0"), hx):
            if not isinstance(state, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(state).__name__}")
            if state.shape != expected:
                raise ValueError(f"{name} must have shape {expected} (num_layers * num_directions, "
                                 f"{'batch, ' if batched else ''}hidden_size), got {tuple(state.shape)}")
            if state.dtype != input.dtype:
                raise TypeError(f"{name} must have the input's dtype {input.dtype}, got {state.dtype}")
            if not same_device(state, input):
                raise ValueError(f"{name} must be on the input's device {input.device}, got {state.device}")
            states.append(state if batched else state.unsqueeze(1))
        return tuple(states)

    def forward(self, input, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, lengths=None):
        """Runs all layers and directions.

        Args:
            input: ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, ``(T, I)`` unbatched,
                or a ``PackedSequence``.
            hx: ``(h_0, c_0)``, each ``(num_layers * num_directions, B, H)``; zeros if omitted.
            lengths: optional ``(B,)`` valid lengths of a padded ``input`` (SPEC §5);
                a ``PackedSequence`` carries its own.
        Returns:
            ``output, (h_n, c_n)`` as ``torch.nn.LSTM``: output ``(T, B, D·H)`` (or packed),
            ``h_n``, ``c_n`` ``(num_layers * D, B, H)``. Under ``torch.autocast`` a float32
            module computes and returns the autocast dtype, as ``nn.LSTM`` does.
        """
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths must not be given with a PackedSequence input (it carries its own)")
            packed_input = input
            input, lengths = pad_packed_sequence(packed_input)
            batched = True
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a torch.Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"input must have 3 dimensions (or 2 unbatched), got shape {tuple(input.shape)}")
            batched = input.dim() == 3
            if not batched:
                input = input.unsqueeze(1)
            elif self.batch_first:
                input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size), got {input.shape[-1]}")
        functional._check_steps(input)
        weight = self._parameter("weight_hh_l0")  # read once: T = 1 is host time
        autocast = self._autocast_dtype(device_type_of(input), weight)
        if autocast is not None and input.is_floating_point():
            # As nn.LSTM under autocast: input, states and weights in the autocast dtype.
            input = input.to(autocast)
            if isinstance(hx, (tuple, list)):  # floating states only: _check_hx refuses the others
                hx = tuple(_cast(state, autocast) if isinstance(state, torch.Tensor) and state.is_floating_point()
                           else state for state in hx)
        elif input.dtype != weight.dtype:
            raise TypeError(f"input must have the module's dtype {weight.dtype}, got {input.dtype}")
        if not same_device(input, weight):
            raise ValueError(f"input must be on the module's device {weight.device}, got {input.device}")
        h0, c0 = self._check_hx(hx, input.shape[1], batched, input)
        # Checked and moved to the device once, not per layer and direction.
        device_lengths = functional._check_lengths(lengths, input)
        with autocast_off(input):  # the sweeps compute in input.dtype
            output, h_n, c_n = self._layers(input, h0, c0, device_lengths)

        if packed:
            order = packed_input.sorted_indices
            sorted_output = output if order is None else output.index_select(1, order)
            sorted_lengths = lengths if order is None else lengths[order.cpu()]
            data = pack_padded_sequence(sorted_output, sorted_lengths, enforce_sorted=True).data
            output = PackedSequence(data, packed_input.batch_sizes, packed_input.sorted_indices,
                                    packed_input.unsorted_indices)
        elif not batched:
            output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    def _layers(self, input, h0, c0, lengths):
        """Every layer and direction over ``input (T, B, I)``; returns ``output, h_n, c_n``."""
        layer_input, h_n, c_n = input, [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes()):
                index = layer * self.num_directions + direction
                output, (h, c) = self._run_direction(layer_input, h0[index], c0[index], lengths,
                                             f"l{layer}{suffix}", reverse=direction == 1)
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, _stacked(h_n), _stacked(c_n)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text + f", backend={self.backend!r}"

    def _config(self):
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
                    bidirectional=self.bidirectional)


class LSTM(_RecurrentBase):
    """Drop-in ``torch.nn.LSTM`` (SPEC §2) running on a fused backend.

    Same constructor, call, shapes and ``state_dict`` as ``torch.nn.LSTM``, plus
    ``backend`` (``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"``, ``"cpu"``, ``"reference"``).
    ``proj_size`` is not supported.
    """

    cell = cells.LSTM

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_parameters()
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias else ("weight_ih", "weight_hh")
        #: Every layer and direction's parameter names, in nn.LSTM's order (its ``_flat_weights_names``).
        self._stack_weight_names = [f"{kind}_l{layer}{suffix}" for layer in range(self.num_layers)
                                    for suffix in self._suffixes() for kind in kinds]

    def _run_direction(self, x, h0, c0, lengths, tag, reverse):
        return functional.lstm(x, *self._lstm_weights(tag, x.dtype), h0, c0, lengths=lengths, reverse=reverse,
                               backend=self.backend)

    def _layers(self, input, h0, c0, lengths):
        # Where PyTorch's kernel runs the first layer (the layers differ only in the input size,
        # which no rule weighs), every layer and direction take one call of it, as nn.LSTM makes:
        # no validation, dispatch, reversal or concatenation per layer, which at T = 1 cost more
        # than the kernel (a one-layer bfloat16 decoding step: 1.6× nn.LSTM's time through them).
        if lengths is None:
            grad = torch.is_grad_enabled()
            weights = self._stack_weights(input.dtype) if grad else None  # whether they require grad counts
            needs_backward = grad and any(t.requires_grad for t in (input, h0, c0, *weights))
            first_layer = native.Call(device_type_of(input), input.dtype, input.shape[0], input.shape[1],
                                      self.hidden_size, needs_backward)
            if native.runs_whole_stack(self.backend, first_layer):
                weights = self._stack_weights(input.dtype) if weights is None else weights
                dropout = self.dropout if self.training else 0.0
                return native.stacked_lstm(input, h0, c0, weights, self.num_layers, self.bidirectional, dropout,
                                           train=needs_backward or bool(dropout))
        return super()._layers(input, h0, c0, lengths)

    def _stack_weights(self, dtype):
        """Every layer and direction's weights in ``nn.LSTM``'s order."""
        return [_cast(self._parameter(name), dtype) for name in self._stack_weight_names]

    @classmethod
    def from_torch(cls, module: nn.LSTM, backend: str = "auto") -> "LSTM":
        """A ``fusedrnn.LSTM`` with ``module``'s configuration, weights, device and dtype."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"module must be a torch.nn.LSTM, got {type(module).__name__}")
        if module.proj_size:
            raise ValueError("proj_size is not supported by fusedrnn yet")
        weight = module.weight_hh_l0
        config = dict(input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers,
                      bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
                      bidirectional=module.bidirectional)
        fused = cls(**config, device=weight.device, dtype=weight.dtype, backend=backend)
        fused.load_state_dict(module.state_dict())
        return fused

    def to_torch(self) -> nn.LSTM:
        """A ``torch.nn.LSTM`` with this module's configuration and weights."""
        weight = self.weight_hh_l0
        module = nn.LSTM(**self._config(), device=weight.device, dtype=weight.dtype)
        module.load_state_dict(self.state_dict())
        return module


class MogrifierLSTM(_RecurrentBase):
    """Mogrifier LSTM (SPEC §3; Melis, Kočiský and Blunsom, ICLR 2020).

    ``nn.LSTM``'s arguments plus ``mogrify_steps`` (rounds ``r``, 0 is a plain LSTM),
    ``mogrify_rank`` (``None`` for full-rank round matrices, else ``k`` with
    ``1 ≤ k ≤ min(input_size, hidden_size)``) and ``mogrify_bias`` (round biases).
    Round ``j`` of layer ``l`` is ``mogrify_weight_l{l}_r{j}`` (full rank) or
    ``mogrify_weight_left_…`` / ``mogrify_weight_right_…`` (low rank), bias
    ``mogrify_bias_l{l}_r{j}``; ``_reverse`` follows ``l{l}`` for direction 1.
    """

    cell = cells.MOGRIFIER

    def __init__(self, *args, mogrify_steps: int = cells.MOGRIFY_STEPS.default,
                 mogrify_rank: Optional[int] = cells.MOGRIFY_RANK.default,
                 mogrify_bias: bool = cells.MOGRIFY_BIAS.default, **kwargs):
        self.mogrify_steps = cells.MOGRIFY_STEPS.check(mogrify_steps)
        self.mogrify_rank = cells.MOGRIFY_RANK.check(mogrify_rank)
        self.mogrify_bias = cells.MOGRIFY_BIAS.check(mogrify_bias)
        super().__init__(*args, **kwargs)
        limit = min(self.input_size, self.hidden_size)
        if mogrify_rank is not None and mogrify_rank > limit:
            raise ValueError(f"mogrify_rank must be at most min(input_size, hidden_size) = {limit}, got {mogrify_rank}")
        self.reset_parameters()

    def reset_parameters(self):
        """LSTM weights as ``nn.LSTM``; round matrices with std ``1/√fan_in`` (low rank:
        each factor ``(1/(fan_in·k))^¼``, so the product has variance ``1/fan_in``); round
        biases zero."""
        super().reset_parameters()
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.startswith("mogrify_bias"):
                    parameter.zero_()
                elif name.startswith("mogrify_weight_left"):
                    # (rows, k) left factor; its product maps fan_in = the right factor's columns
                    right = getattr(self, name.replace("_left_", "_right_"))
                    std = (1.0 / (right.shape[1] * self.mogrify_rank)) ** 0.25
                    parameter.normal_(0.0, std)
                    right.normal_(0.0, std)
                elif name.startswith("mogrify_weight_l"):
                    parameter.normal_(0.0, 1.0 / math.sqrt(parameter.shape[1]))

    def _mogrify_parameters(self, tag, dtype):
        weights, biases = [], []
        for j in range(1, self.mogrify_steps + 1):
            if self.mogrify_rank is None:
                weights.append(_cast(self._parameter(f"mogrify_weight_{tag}_r{j}"), dtype))
            else:
                weights.append((_cast(self._parameter(f"mogrify_weight_left_{tag}_r{j}"), dtype),
                                _cast(self._parameter(f"mogrify_weight_right_{tag}_r{j}"), dtype)))
            if self.mogrify_bias:
                biases.append(_cast(self._parameter(f"mogrify_bias_{tag}_r{j}"), dtype))
        return weights, (biases if self.mogrify_bias else None)

    def _run_direction(self, x, h0, c0, lengths, tag, reverse):
        weights, biases = self._mogrify_parameters(tag, x.dtype)
        return functional.mogrifier_lstm(x, *self._lstm_weights(tag, x.dtype), h0, c0, mogrify_weights=weights,
                                         mogrify_biases=biases, lengths=lengths, reverse=reverse,
                                         backend=self.backend)

    def extra_repr(self):
        return super().extra_repr() + (f", mogrify_steps={self.mogrify_steps}, mogrify_rank={self.mogrify_rank}, "
                                       f"mogrify_bias={self.mogrify_bias}")


class G2LSTM(_RecurrentBase):
    """G2-LSTM, the Gumbel-gate LSTM (SPEC §4; Li et al., ICML 2018).

    ``nn.LSTM``'s arguments and parameters plus ``temperature`` (``τ ≥ 2**-126``, finite),
    ``noise_prob`` (in ``(0, 1]``) and ``eval_gate_mode`` (``"soft"``, ``"hard"`` or
    ``"noisy"``). Training mode always adds noise; evaluation mode uses
    ``eval_gate_mode``.
    """

    cell = cells.G2

    def __init__(self, *args, temperature: float = cells.TEMPERATURE.default,
                 noise_prob: float = cells.NOISE_PROB.default, eval_gate_mode: str = "soft", **kwargs):
        options = cells.G2.check_options(temperature=temperature, noise_prob=noise_prob,
                                         gate_mode=cells.GATE_MODE.check(eval_gate_mode, "eval_gate_mode"))
        super().__init__(*args, **kwargs)
        self.temperature = options["temperature"]
        self.noise_prob = options["noise_prob"]
        self.eval_gate_mode = eval_gate_mode
        self.reset_parameters()

    def _run_direction(self, x, h0, c0, lengths, tag, reverse):
        return functional.g2_lstm(x, *self._lstm_weights(tag, x.dtype), h0, c0, temperature=self.temperature,
                                  noise_prob=self.noise_prob,
                                  gate_mode="noisy" if self.training else self.eval_gate_mode,
                                  lengths=lengths, reverse=reverse, backend=self.backend)

    def extra_repr(self):
        return super().extra_repr() + (f", temperature={self.temperature}, noise_prob={self.noise_prob}, "
                                       f"eval_gate_mode={self.eval_gate_mode!r}")
