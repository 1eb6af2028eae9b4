"""The reference backend: runs any call, on any device, in plain PyTorch."""
from ..noise import sample_noise
from ..precision import accumulation_dtype
from ..sweep import Sweep
from .g2 import g2_lstm
from .lstm import lstm
from .mogrifier import mogrifier_lstm


class ReferenceBackend:
    name = "reference"
    device_type = None

    def unavailable(self):
        return None

    def unsupported(self, sweep: Sweep, explicit: bool):
        return None

    def run(self, sweep: Sweep):
        # SPEC §6: half-precision calls compute in float32 and return their own dtype.
        compute = accumulation_dtype(sweep.dtype)

        def up(tensor):
            return None if tensor is None else tensor.to(compute)

        args = (up(sweep.x), up(sweep.h0), up(sweep.c0), up(sweep.weight_ih), up(sweep.weight_hh),
                up(sweep.bias_ih), up(sweep.bias_hh))
        if sweep.cell == "lstm":
            out = lstm(*args, sweep.lengths, sweep.reverse)
        elif sweep.cell == "mogrifier":
            biases = None if sweep.mogrify_biases is None else [up(b) for b in sweep.mogrify_biases]
            out = mogrifier_lstm(*args, [up(w) for w in sweep.mogrify_weights], biases,
                                 sweep.lengths, sweep.reverse)
        else:
            noise = sweep.noise
            if sweep.noisy and noise is None:
                noise = sample_noise(sweep.seq_len, sweep.batch_size, sweep.hidden_size,
                                     sweep.noise_prob, device=sweep.device)
            out = g2_lstm(*args, sweep.lengths, sweep.reverse, sweep.temperature, sweep.gate_mode, noise)
        return tuple(tensor.to(sweep.dtype) for tensor in out)


backend = ReferenceBackend()
