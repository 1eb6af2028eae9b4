"""The pytest-benchmark suite runs the command's own grid (``fusedrnn.bench.grid``):

    pytest bench/ --benchmark-only                       # the grid that fits this machine
    pytest bench/ --benchmark-only --bench-preset quick  # or a named one
"""
import pytest
import torch

from fusedrnn.bench import grid
from fusedrnn.bench.implementations import implementations

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_addoption(parser):
    parser.addoption("--bench-preset", choices=sorted(grid.PRESETS), default=grid.default_preset(DEVICE),
                     help="which of the benchmark command's grids to run")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    preset = grid.PRESETS[metafunc.config.getoption("--bench-preset")]
    if DEVICE.type == "cpu" and preset.cpu_threads:
        torch.set_num_threads(preset.cpu_threads)
    cases = [(config, implementation, direction)
             for config in grid.configs(grid.CELLS, preset.shapes, preset.dtypes)
             for implementation in implementations() for direction in grid.DIRECTIONS]
    ids = [f"{c.cell}-B{c.batch_size}-T{c.seq_len}-I{c.input_size}-H{c.hidden_size}-{c.dtype}-{d}-{i.name}"
           for c, i, d in cases]
    metafunc.parametrize("case", cases, ids=ids)


@pytest.fixture
def device():
    return DEVICE
