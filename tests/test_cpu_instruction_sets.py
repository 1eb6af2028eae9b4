"""The ``cpu`` backend's step kernels are compiled once per instruction set
(``fusedrnn/csrc/cpu/isa.h``) and the widest one the CPU has runs: every set this CPU has
matches the float64 reference, a set it lacks or a misspelled one is refused, and the wide
instructions stay inside the kernels compiled for them."""
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedrnn.ext import build

#: Widest first, with the /proc/cpuinfo flags each needs (as cpu/kernels.cpp asks the CPU).
INSTRUCTION_SETS = {
    "avx512": {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"},
    "avx2": {"avx2", "fma"},
    "baseline": set(),
}
X86_64_LINUX = platform.machine() == "x86_64" and Path("/proc/cpuinfo").exists()

#: Runs in a fresh process (the set is chosen once per process): the cells and gate modes
#: through the ``cpu`` backend with lengths, reverse and a hidden size that leaves a vector
#: tail, and the G2 noise the library draws against ``fusedrnn.sample_noise``.
CHECK_ONE_SET = """
import sys
import torch
from fusedrnn import testing
from fusedrnn.ext import build
from fusedrnn.noise import sample_noise

assert build.load_error("cpu") is None, build.load_error("cpu")
try:
    in_use = torch.ops.fusedrnn.cpu_instruction_set()
except ValueError as error:
    print(error)
    sys.exit(3)
assert in_use == sys.argv[1], in_use
torch.manual_seed(0)
failures = []
for cell, options in [("lstm", {}), ("g2", {"gate_mode": "noisy"}), ("g2", {"gate_mode": "hard"}),
                      ("g2", {"gate_mode": "soft", "temperature": 0.7}), ("mogrifier", {})]:
    for dtype in (torch.float32, torch.float64):
        for reverse in (False, True):
            problem = testing.random_problem(cell, (6, 3, 5, 21), lengths=True, reverse=reverse, **options)
            verdict = testing.check(testing.on_backend("cpu"), testing.ground_truth(problem, dtype))
            if not verdict.passed:
                failures.append(f"{cell} {options} {dtype} reverse={reverse}: {verdict}")
for shape, noise_prob in [((3, 5, 37), 1.0), ((2, 4, 21), 0.3), ((1, 1, 3), 0.8)]:
    for seed in (0, 2 ** 62 - 3):
        try:
            testing.assert_same_noise(torch.ops.fusedrnn.g2_noise(*shape, noise_prob, torch.tensor([seed])),
                                      sample_noise(*shape, noise_prob, seed=seed))
        except AssertionError as error:
            failures.append(f"g2_noise{shape} noise_prob={noise_prob} seed={seed}: {error}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def cpu_flags():
    text = Path("/proc/cpuinfo").read_text()
    return set(re.search(r"^flags\s*:(.*)$", text, re.MULTILINE).group(1).split())


def run_with_set(name):
    environment = {**os.environ, "FUSEDRNN_CPU_ISA": name}
    return subprocess.run([sys.executable, "-c", CHECK_ONE_SET, name], env=environment, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def cpu_library():
    reason = build.load_error("cpu")
    if reason is not None:
        pytest.fail(f"the cpu extension does not build here: {reason}")
    return next(Path(path) for path in torch.ops.loaded_libraries if "fusedrnn_cpu" in Path(path).name)


@pytest.mark.parametrize("name", INSTRUCTION_SETS)
def test_each_instruction_set_matches_the_reference(cpu_library, name):
    result = run_with_set(name)
    if result.returncode == 3 and X86_64_LINUX and not INSTRUCTION_SETS[name] <= cpu_flags():
        pytest.skip(f"this CPU lacks {name} ({result.stdout.strip()})")
    assert result.returncode == 0, f"FUSEDRNN_CPU_ISA={name}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


@pytest.mark.skipif(not X86_64_LINUX, reason="reads the CPU's flags from /proc/cpuinfo on x86-64 Linux")
def test_the_widest_set_the_cpu_has_runs_by_default(cpu_library):
    flags = cpu_flags()
    widest = next(name for name, needs in INSTRUCTION_SETS.items() if needs <= flags)
    assert torch.ops.fusedrnn.cpu_instruction_set() == widest


def test_an_unknown_set_is_refused_by_name(cpu_library):
    result = run_with_set("sse9")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "FUSEDRNN_CPU_ISA must be one of" in result.stdout and "'sse9'" in result.stdout, result.stdout


@pytest.mark.skipif(shutil.which("objdump") is None or platform.machine() != "x86_64",
                    reason="disassembles the x86-64 library with binutils' objdump")
def test_wide_instructions_stay_in_their_own_kernels(cpu_library):
    """A function that GCC emits in several files (ATen's inline code, cell.h's templates)
    must never be compiled with AVX: the linker keeps one copy, which the baseline calls too."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(cpu_library)], capture_output=True,
                             text=True, check=True).stdout
    wide = set()
    function = None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
        elif function and re.search(r"%[yz]mm\d", line):
            wide.add(function)
    assert wide, "no function uses AVX registers: the wide kernels were not compiled"
    strays = sorted(name for name in wide if not name.startswith(("fusedrnn::cpu::avx2::", "fusedrnn::cpu::avx512::")))
    assert not strays, f"AVX code outside the wide kernels' namespaces: {strays[:5]}"
