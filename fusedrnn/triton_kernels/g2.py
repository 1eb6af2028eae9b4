"""The G2-LSTM cell (SPEC §4): the LSTM sweep of :mod:`.lstm` with its gate flags."""
from __future__ import annotations

from ..noise import draw_seed
from ..sweep import Sweep
from . import lstm

unsupported = lstm.unsupported


def run(sweep: Sweep):
    """Noise from ``sweep.noise``, or drawn in the kernel from a seed of the device's generator."""
    noise = seed = None
    if sweep.noisy:
        noise = sweep.noise
        if noise is None:
            seed = draw_seed(sweep.device)
    return lstm.run(sweep, noise=noise, seed=seed, inv_temperature=1.0 / sweep.temperature,
                    noise_prob=sweep.noise_prob, hard_gates=sweep.gate_mode == "hard")
