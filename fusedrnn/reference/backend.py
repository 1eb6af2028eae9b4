"""The reference backend: runs any call, on any device, in plain PyTorch."""
import torch

from ..cells import CELLS
from ..noise import sample_noise
from ..precision import accumulation_dtype
from ..sweep import Sweep


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

        def up(value):
            if isinstance(value, (tuple, list)):
                return [up(item) for item in value]
            return value.to(compute) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

        cell_arguments = {name: up(value) for name, value in sweep.cell_arguments().items()}
        if sweep.noisy and cell_arguments["noise"] is None:
            cell_arguments["noise"] = sample_noise(sweep.seq_len, sweep.batch_size, sweep.hidden_size,
                                                   sweep.noise_prob, device=sweep.device)
        out = CELLS[sweep.cell].reference(*map(up, sweep.lstm_arguments()), lengths=sweep.lengths,
                                          reverse=sweep.reverse, **cell_arguments)
        return tuple(tensor.to(sweep.dtype) for tensor in out)


backend = ReferenceBackend()
