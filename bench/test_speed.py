"""Each case of the benchmark command's grid, checked against the float64 reference and
timed exactly as the command does it (``fusedrnn.bench.measure.measure``: ``do_bench`` on
CUDA, ``torch.utils.benchmark`` on CPU). The figures to read are in each benchmark's
``extra_info`` (``median_ms``, ``error``, ...); pytest-benchmark's own statistics time the
whole measurement, one round."""
import functools

import pytest

from fusedrnn.bench.measure import measure, truth_for


@functools.lru_cache(maxsize=1)
def _truth(config, device):
    return truth_for(config, device)  # cases arrive configuration by configuration


def test_speed(benchmark, case, device):
    config, direction, impl = case
    row = benchmark.pedantic(measure, (impl, config, _truth(config, device), direction), rounds=1, iterations=1)
    benchmark.extra_info.update(row)
    if row["status"] == "n/a":
        pytest.skip(row["reason"])
    assert row["status"] == "ok", row["reason"]
