"""A built package carries its backends: a wheel installed outside the source tree runs ``cpu``."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fusedrnn.ext import build as extension_build

ROOT = Path(__file__).resolve().parents[1]

# Run from a directory without the repository: the installed copy answers, or nothing does.
CPU_CALL = """
import torch, fusedrnn
from fusedrnn import functional
assert fusedrnn.__file__.startswith({site!r}), fusedrnn.__file__
x, w_ih, w_hh = torch.randn(5, 3, 4), torch.randn(24, 4) / 3, torch.randn(24, 6) / 3
out, (h_n, c_n) = functional.lstm(x, w_ih, w_hh, backend="cpu")
expected, _ = functional.lstm(x.double(), w_ih.double(), w_hh.double(), backend="reference")
error = ((out.double() - expected).norm() / expected.norm()).item()
assert error <= 1e-5, error
print("cpu backend ran from", fusedrnn.__file__)
"""


@pytest.mark.slow
def test_wheel_installed_elsewhere_has_the_cpu_backend(tmp_path):
    # A copy of the sources, so that the build leaves nothing behind in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks", "*.so",
        "results"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(tmp_path.glob("fusedrnn-*.whl"))
    sources = {name for name in zipfile.ZipFile(wheel).namelist() if "/csrc/" in name}
    built_from = {f"fusedrnn/csrc/{source}" for kind in ("cpu", "cuda") for source in extension_build.SOURCES[kind]}
    assert built_from | {"fusedrnn/csrc/cpu/step_kernels.h"} <= sources, sorted(sources)

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    environment = {**os.environ, "PYTHONPATH": str(site), "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    run = subprocess.run([sys.executable, "-c", CPU_CALL.format(site=str(site))], cwd=tmp_path, env=environment,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "fusedrnn: building the cpu extension" in run.stderr, "a first build is announced, not silent"
    assert "fusedrnn: built the cpu extension in" in run.stderr, run.stderr[-2000:]
