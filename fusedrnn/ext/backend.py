"""The dispatch protocol (fusedrnn/dispatch.py) over the compiled sweeps, for one device type."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..noise import sample_noise
from ..precision import summed_bias
from ..sweep import Sweep, split_round_weights
from . import build, ops


class ExtensionBackend:
    """Runs whole sweeps in the compiled library ``fusedrnn_<device_type>``.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``; also the backend's name.
        compute_dtypes: for each supported input dtype, the dtype the library computes in.
    """

    def __init__(self, device_type: str, compute_dtypes: Dict[torch.dtype, torch.dtype]):
        self.name = device_type
        self.device_type = device_type
        self.compute_dtypes = compute_dtypes

    def unavailable(self) -> Optional[str]:
        if self.device_type == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        reason = build.load_error(self.device_type)
        if reason is not None:
            build.warn_unavailable(self.name, reason)
        return reason

    def unsupported(self, sweep: Sweep, explicit: bool) -> Optional[str]:
        if sweep.device_type != self.device_type:
            return f"it runs {self.device_type} tensors, got {sweep.device_type}"
        if sweep.dtype not in self.compute_dtypes:
            return f"it does not run {sweep.dtype}"
        return None

    def run(self, sweep: Sweep):
        compute = self.compute_dtypes[sweep.dtype]

        def prepare(tensor):
            if tensor is None or (tensor.dtype == compute and tensor.is_contiguous()):
                return tensor
            return tensor.to(compute).contiguous()

        x, h0, c0, weight_ih, weight_hh = map(prepare, (sweep.x, sweep.h0, sweep.c0, sweep.weight_ih,
                                                        sweep.weight_hh))
        bias = summed_bias(sweep.bias_ih, sweep.bias_hh)
        lengths = None if sweep.lengths is None else sweep.lengths.contiguous()
        if sweep.cell == "mogrifier":
            matrices, low_rank, right_factors = split_round_weights(sweep.mogrify_weights)
            out = ops.mogrifier_sweep(x, h0, c0, weight_ih, weight_hh, bias, [prepare(w) for w in matrices],
                                      list(low_rank), [prepare(r) for r in right_factors],
                                      [prepare(b) for b in sweep.mogrify_biases or ()], lengths, sweep.reverse,
                                      sweep.needs_backward)
        else:
            g2 = sweep.cell == "g2"
            noise = sweep.noise
            if sweep.noisy and noise is None:
                arguments = (sweep.seq_len, sweep.batch_size, sweep.hidden_size, sweep.noise_prob)
                on_cpu = sweep.device_type == "cpu"
                noise = ops.g2_noise(*arguments) if on_cpu else sample_noise(*arguments, device=sweep.device)
            noise = noise.contiguous() if sweep.noisy else None
            out = ops.lstm_sweep(x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, sweep.reverse,
                                 sweep.temperature if g2 else 1.0, sweep.gate_mode if g2 else "soft",
                                 sweep.needs_backward)
        return out if compute == sweep.dtype else tuple(tensor.to(sweep.dtype) for tensor in out)
