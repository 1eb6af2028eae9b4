"""Each implementation on each configuration of the benchmark command's grid, checked
against the float64 reference first (SPEC §6), then timed by pytest-benchmark."""
import functools

import pytest
import torch

from fusedrnn import BackendUnavailableError
from fusedrnn.bench.check import check, ground_truth
from fusedrnn.bench.runner import timed_call


@functools.lru_cache(maxsize=1)
def _truth(config, device):
    # Cases arrive configuration by configuration: one reference run serves them all.
    return ground_truth(config, device, with_grads=True)


def test_speed(benchmark, case, device):
    config, implementation, direction = case
    reason = implementation.unsupported(config, device)
    if reason is not None:
        pytest.skip(reason)
    try:
        verdict = check(implementation, _truth(config, device))
    except BackendUnavailableError as declined:
        pytest.skip(str(declined))
    assert verdict.passed, f"{verdict.worst}: relative error {verdict.error:.3g} > {verdict.tolerance:.3g}"
    call = timed_call(implementation, config, device, direction)

    def synchronised_call():
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    benchmark.extra_info.update(cell=config.cell, batch_size=config.batch_size, seq_len=config.seq_len,
                                input_size=config.input_size, hidden_size=config.hidden_size,
                                dtype=config.dtype, direction=direction, implementation=implementation.name)
    benchmark(synchronised_call)
