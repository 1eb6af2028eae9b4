"""The pytest-benchmark suite runs the command's own grid, case by case, through the
command's own code (``fusedrnn.bench.cli.cases`` and ``fusedrnn.bench.measure.measure``):

    pytest bench/ --benchmark-only                       # the grid that fits this machine
    pytest bench/ --benchmark-only --bench-preset quick  # or a named one
"""
import pytest
import torch

from fusedrnn.bench import cli
from fusedrnn.bench.implementations import DEFAULT_NAMES, unavailable

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_addoption(parser):
    parser.addoption("--bench-preset", choices=sorted(cli.PRESETS), default="gpu" if DEVICE.type == "cuda" else "cpu",
                     help="which of the benchmark command's grids to run")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    preset = metafunc.config.getoption("--bench-preset")
    torch.set_num_threads(cli.PRESET_THREADS.get(preset) or torch.get_num_threads())
    grid = cli.cases(cli.PRESETS[preset], [n for n in DEFAULT_NAMES if not unavailable(n)], DEVICE)
    cases = [(config, direction, impl) for config, pairs in grid.items() for direction, impl in pairs]
    metafunc.parametrize("case", cases, ids=[f"{c.cell}-{c.shape}-{c.dtype}-{d}-{i.name}" for c, d, i in cases])


@pytest.fixture
def device():
    return DEVICE
