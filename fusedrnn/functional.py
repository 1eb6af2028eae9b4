"""One whole-sequence function per cell, weights passed in: validation, then dispatch.

Each function runs one layer in one direction (the modules stack layers and
directions). Shapes: ``input (T, B, I)``, ``weight_ih (4H, I)``, ``weight_hh (4H, H)``,
``bias_ih``/``bias_hh (4H,)``, ``h0``/``c0 (B, H)``, ``lengths (B,)``. Each returns
``output (T, B, H), (h_n (B, H), c_n (B, H))``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from . import dispatch
from .cells import G2, GATE_MODE, NOISE_PROB, TEMPERATURE, mogrify_round_shape
from .precision import autocast_off
from .sweep import RoundWeight, Sweep, same_device

Tensor = torch.Tensor
#: The dtypes every call and module may have (each backend runs some of them).
FLOATING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name, tensor, shape, like, *index):
    """``tensor`` has ``shape`` (a tuple) and ``like``'s dtype and device; ``name[index]`` in the
    messages (formatted only for one: at T = 1 the host time is the cost)."""
    if isinstance(tensor, Tensor) and tensor.shape == shape and tensor.dtype == like.dtype \
            and same_device(tensor, like):
        return
    name += "".join(f"[{i}]" for i in index)
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if tensor.dtype != like.dtype:
        raise TypeError(f"{name} must have the input's dtype {like.dtype}, got {tensor.dtype}")
    raise ValueError(f"{name} must be on the input's device {like.device}, got {tensor.device}")


def _check_lengths(lengths, input: Tensor):
    """``lengths`` of ``input (T, B, ·)``'s rows, checked and on its device as int64, or ``None``
    (no ``input.device`` built then: at T = 1 the host time is the cost)."""
    if lengths is None:
        return None
    seq_len, batch_size, device = input.shape[0], input.shape[1], input.device
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:  # None entries, strings, ints beyond int64
            raise TypeError(f"lengths must be an integer tensor or a sequence of int64 values, "
                            f"got {lengths!r}") from error
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if tuple(lengths.shape) != (batch_size,):
        raise ValueError(f"lengths must have shape ({batch_size},) (one per batch row), got {tuple(lengths.shape)}")
    if lengths.device.type != "cpu" and lengths.device != device:
        raise ValueError(f"lengths must be on the CPU or on the input's device {device}, got {lengths.device}")
    compiling = torch.compiler.is_compiling()
    if lengths.device.type == "cpu" and batch_size > 0 and not compiling:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0 or high > seq_len:
            raise ValueError(f"lengths must lie in [0, {seq_len}] (the sequence length), got [{low}, {high}]")
    elif compiling or (lengths.is_cuda and not torch.cuda.is_current_stream_capturing()):
        # Reading device lengths on the host would wait for the GPU, and a traced graph has no
        # values to read: the check runs in the graph or on the device instead (a device-side
        # assert fails the stream), never computes garbage.
        torch._assert_async(((lengths >= 0) & (lengths <= seq_len)).all(),
                            f"lengths must lie in [0, {seq_len}] (the sequence length)")
    return lengths.to(device=device, dtype=torch.int64, non_blocking=True)


def _check_steps(input: Tensor, name: str = "input") -> None:
    """``input (T, B, I)`` has a step: the modules check it too, before a call of PyTorch's kernel
    (which raises a RuntimeError without one)."""
    if input.shape[0] == 0:
        raise ValueError(f"{name} must have at least one time step (T >= 1, as torch.nn.LSTM requires), got T = 0")


def _validated_call(cell, input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, *,
                    input_name="input", rounds=None, **options):
    """The checked call as a :class:`Sweep` (``input_name``: what the caller calls ``input``;
    ``rounds``: the Mogrifier's ``(mogrify_weights, mogrify_biases)``)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{input_name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 3:
        raise ValueError(f"{input_name} must have 3 dimensions (T, B, I), got shape {tuple(input.shape)}")
    _check_steps(input, input_name)
    if input.dtype not in FLOATING_DTYPES:
        raise TypeError(f"{input_name} must be float16, bfloat16, float32 or float64, got {input.dtype}")
    seq_len, batch_size, input_size = input.shape
    if input_size == 0:  # as torch.nn.LSTM's input_size
        raise ValueError(f"{input_name} must have at least one feature (I >= 1), got shape {tuple(input.shape)}")
    if not isinstance(weight_hh, Tensor):
        raise TypeError(f"weight_hh must be a torch.Tensor, got {type(weight_hh).__name__}")
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 4 * weight_hh.shape[1] or weight_hh.shape[1] == 0:
        raise ValueError(f"weight_hh must have shape (4 * hidden_size, hidden_size) with hidden_size >= 1, "
                         f"got {tuple(weight_hh.shape)}")
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    hidden_size = weight_hh.shape[1]
    _check_tensor("weight_hh", weight_hh, (4 * hidden_size, hidden_size), input)
    _check_tensor("weight_ih", weight_ih, (4 * hidden_size, input_size), input)
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be given or both be None")
    if bias_ih is not None:
        _check_tensor("bias_ih", bias_ih, (4 * hidden_size,), input)
        _check_tensor("bias_hh", bias_hh, (4 * hidden_size,), input)
    state_shape = (batch_size, hidden_size)
    h0 = input.new_zeros(state_shape) if h0 is None else h0
    c0 = input.new_zeros(state_shape) if c0 is None else c0
    _check_tensor("h0", h0, state_shape, input)
    _check_tensor("c0", c0, state_shape, input)
    lengths = _check_lengths(lengths, input)
    if rounds is not None:
        options["mogrify_weights"], options["mogrify_biases"] = _validated_rounds(*rounds, input, hidden_size)
    return Sweep(cell, input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, **options)


def _run(sweep: Sweep, backend: str):
    # Every backend computes in the inputs' dtype, autocast or not: PyTorch's own LSTM kernel
    # (the torch backend) would follow autocast and the others not. The modules cast their
    # inputs to the autocast dtype first, as nn.LSTM does.
    with autocast_off(sweep.x):
        output, h_n, c_n = dispatch.run(backend, sweep)
    return output, (h_n, c_n)


def lstm(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    h0: Optional[Tensor] = None,
    c0: Optional[Tensor] = None,
    *,
    lengths: Optional[Tensor] = None,
    reverse: bool = False,
    backend: str = "auto",
):
    """LSTM (SPEC §2) over a whole sequence.

    Example:
        >>> x = torch.randn(50, 8, 32)                     # (T, B, I)
        >>> w_ih, w_hh = torch.randn(256, 32), torch.randn(256, 64)
        >>> out, (h_n, c_n) = fusedrnn.functional.lstm(x, w_ih, w_hh)
        >>> out.shape, h_n.shape
        (torch.Size([50, 8, 64]), torch.Size([8, 64]))
    """
    sweep = _validated_call("lstm", input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse)
    return _run(sweep, backend)


def mogrifier_lstm(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    h0: Optional[Tensor] = None,
    c0: Optional[Tensor] = None,
    *,
    mogrify_weights: Sequence[RoundWeight] = (),
    mogrify_biases: Optional[Sequence[Tensor]] = None,
    lengths: Optional[Tensor] = None,
    reverse: bool = False,
    backend: str = "auto",
):
    """Mogrifier LSTM (SPEC §3) over a whole sequence.

    Args:
        mogrify_weights: one entry per round ``j = 1..r``: ``Q_j (I, H)`` for odd
            ``j``, ``R_j (H, I)`` for even ``j``; or a low-rank pair ``(left (m, k),
            right (k, n))`` whose product has that shape. A pair is never multiplied out:
            every backend applies it as two thin products and differentiates the factors.
        mogrify_biases: ``r`` round biases, ``(I,)`` for odd ``j`` and ``(H,)`` for even
            ``j``, or ``None``.
    Other arguments and the return value as :func:`lstm`.
    """
    sweep = _validated_call("mogrifier", input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse,
                            rounds=(mogrify_weights, mogrify_biases))
    return _run(sweep, backend)


def _validated_rounds(mogrify_weights, mogrify_biases, input, hidden_size):
    """The Mogrifier's rounds checked against ``input (T, B, I)`` and ``hidden_size``: the
    weights and the biases (or ``None``) as tuples."""
    if not isinstance(mogrify_weights, (list, tuple)):
        raise TypeError(f"mogrify_weights must be a list of tensors, got {type(mogrify_weights).__name__}")
    input_size = input.shape[2]
    weights = []
    for j, weight in enumerate(mogrify_weights, start=1):
        shape = mogrify_round_shape(j, input_size, hidden_size)
        if isinstance(weight, (tuple, list)):
            if len(weight) != 2:
                raise ValueError(f"mogrify_weights[{j - 1}] must be a tensor or a (left, right) pair")
            left, right = weight
            if not isinstance(left, Tensor):
                raise TypeError(f"mogrify_weights[{j - 1}][0] must be a torch.Tensor, got {type(left).__name__}")
            if left.dim() != 2 or left.shape[1] == 0:
                raise ValueError(f"mogrify_weights[{j - 1}][0] must have shape ({shape[0]}, rank) with rank >= 1, "
                                 f"got {tuple(left.shape)}")
            _check_tensor("mogrify_weights", left, (shape[0], left.shape[1]), input, j - 1, 0)
            _check_tensor("mogrify_weights", right, (left.shape[1], shape[1]), input, j - 1, 1)
            weights.append((left, right))
        else:
            _check_tensor("mogrify_weights", weight, shape, input, j - 1)
            weights.append(weight)
    if mogrify_biases is not None:
        if not isinstance(mogrify_biases, (list, tuple)):
            raise TypeError(f"mogrify_biases must be a list of tensors or None, got {type(mogrify_biases).__name__}")
        if len(mogrify_biases) != len(weights):
            raise ValueError(f"mogrify_biases must have one bias per round ({len(weights)}), got {len(mogrify_biases)}")
        for j, bias in enumerate(mogrify_biases, start=1):
            _check_tensor("mogrify_biases", bias, mogrify_round_shape(j, input_size, hidden_size)[:1], input, j - 1)
        mogrify_biases = tuple(mogrify_biases)
    return tuple(weights), mogrify_biases


def g2_lstm(
    input: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    h0: Optional[Tensor] = None,
    c0: Optional[Tensor] = None,
    *,
    temperature: float = TEMPERATURE.default,
    noise_prob: float = NOISE_PROB.default,
    gate_mode: str = GATE_MODE.default,
    noise: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    reverse: bool = False,
    backend: str = "auto",
):
    """G2-LSTM (SPEC §4) over a whole sequence.

    Args:
        temperature: ``τ ≥ 2**-126`` (finite) dividing the input and forget gate pre-activations.
        noise_prob: probability in ``(0, 1]`` that an element gets noise.
        gate_mode: ``"noisy"`` (training), ``"soft"`` ``σ(z/τ)`` or ``"hard"`` ``1[z ≥ 0]``.
        noise: ``(T, B, 2, H)`` float32 ``m ⊙ ℓ`` for the i and f gates (see
            :func:`fusedrnn.sample_noise`); ``None`` lets the backend draw it from a seed
            of the device's torch generator, the same noise on every backend. A constant:
            it must not require grad.
    Other arguments and the return value as :func:`lstm`.
    """
    options = G2.check_options(temperature=temperature, noise_prob=noise_prob, gate_mode=gate_mode)
    sweep = _validated_call("g2", input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse, **options)
    if noise is not None:
        if gate_mode != "noisy":
            raise ValueError(f"noise is only used with gate_mode='noisy', got gate_mode={gate_mode!r}")
        shape = (sweep.seq_len, sweep.batch_size, 2, sweep.hidden_size)
        if not isinstance(noise, Tensor) or not noise.dtype.is_floating_point:
            got = noise.dtype if isinstance(noise, Tensor) else type(noise).__name__
            raise TypeError(f"noise must be a floating-point torch.Tensor, got {got}")
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape} (T, B, 2, H), got {tuple(noise.shape)}")
        if not same_device(noise, input):
            raise ValueError(f"noise must be on the input's device {input.device}, got {noise.device}")
        if noise.requires_grad:  # a sample, not a parameter: no backend but the reference would differentiate it
            raise ValueError("noise must not require grad (no gradient flows to the G2 noise); pass noise.detach()")
        sweep = dataclasses.replace(sweep, noise=noise.float())
    return _run(sweep, backend)


#: The whole-sequence function of each cell, by the name ``Sweep.cell`` uses.
FUNCTIONS = {"lstm": lstm, "mogrifier": mogrifier_lstm, "g2": g2_lstm}
