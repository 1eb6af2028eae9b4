"""The compiled backends: the CUDA sources compile, the CPU library runs its loops on torch's
threads, and a failed build is reported clearly.
(G2 noise drawn by a backend: tests/test_noise.py.)"""
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import fusedrnn
from fusedrnn import dispatch
from fusedrnn.ext import build

from conftest import random_weights

CUDA_SOURCES = sorted(build.SOURCE_DIR.glob("cuda/*.cu"))


def torch_include_flags():
    from torch.utils.cpp_extension import include_paths

    flags = [f"-I{path}" for path in include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    # A CPU build of torch ships the c10/cuda headers but not the configure-generated
    # cuda_cmake_macros.h (it only sets Windows export macros); CUDA builds have it.
    if not any((Path(path) / "c10/cuda/impl/cuda_cmake_macros.h").exists() for path in include_paths()):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return flags


def mapped_libraries():
    """The shared libraries this process has loaded (Linux)."""
    return {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if ".so" in line}


def test_the_cpu_library_runs_its_loops_on_torchs_openmp_threads():
    """Without OpenMP, at::parallel_for (a header template) compiles to a plain loop: the cell
    kernels and the panel products would run on one thread whatever torch.set_num_threads says.
    Built with it on Linux, the library calls OpenMP, and the process maps one libgomp (torch's):
    one pool of threads, sized by torch."""
    assert build.load_error("cpu") is None, "the cpu extension does not build here"
    if not sys.platform.startswith("linux"):
        assert build.OPENMP_FLAGS == []
        return
    assert build.OPENMP_FLAGS == ["-fopenmp"], f"torch's load() appended to the module's own flags: {build.OPENMP_FLAGS}"
    libraries = mapped_libraries()
    ours = [path for path in libraries if Path(path).name.startswith((build.library_name("cpu") + ".", "_cpu."))]
    assert len(ours) == 1, f"expected one loaded fusedrnn CPU library, found {ours}"
    assert b"GOMP_parallel" in Path(ours[0]).read_bytes(), f"{ours[0]} was built without OpenMP"
    runtimes = [path for path in libraries if Path(path).name.startswith("libgomp")]
    assert len(runtimes) == 1, f"two OpenMP runtimes, two thread pools: {runtimes}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda path: path.name)
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    # Same language level and defines as the JIT build (torch.utils.cpp_extension), sm_90.
    command = ["nvcc", "-c", str(source), "-o", str(tmp_path / "kernel.o"), "-std=c++20",
               "-gencode=arch=compute_90,code=sm_90", *build.NVCC_FLAGS, *build.CUDA_DEFINES, *torch_include_flags()]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed on {source.name}:\n{result.stderr[-4000:]}"


def test_cuda_sources_are_listed_for_the_build():
    listed = {build.SOURCE_DIR / source for source in build.SOURCES["cuda"] if source.endswith(".cu")}
    assert listed == set(CUDA_SOURCES)


def cuda_toolkit_include():
    """The CUDA toolkit's include directory, or None: a CPU torch does not look for one."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = shutil.which("nvcc")
    homes = [CUDA_HOME, os.environ.get("CUDA_HOME"), nvcc and str(Path(nvcc).resolve().parents[1]), "/usr/local/cuda"]
    found = [Path(home) / "include" for home in homes if home and (Path(home) / "include/cuda_runtime_api.h").exists()]
    return found[0] if found else None


CUDA_LIBRARY_CPP = [source for source in build.SOURCES["cuda"] if source.endswith(".cpp")]


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
@pytest.mark.parametrize("source", CUDA_LIBRARY_CPP)
def test_cuda_library_cpp_compiles(source):
    """The C++ sources as the CUDA library compiles them (-DFUSEDRNN_CUDA), without a CUDA torch;
    those that include c10/cuda headers need the CUDA toolkit's headers too."""
    path = build.SOURCE_DIR / source
    flags = [*build.CUDA_DEFINES, *torch_include_flags()]
    if "<c10/cuda/" in path.read_text():
        include = cuda_toolkit_include()
        if include is None:
            pytest.skip(f"{source} includes c10/cuda headers and no CUDA toolkit headers were found")
        flags.append(f"-I{include}")
    command = ["c++", "-fsyntax-only", "-std=c++20", *flags, str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_missing_compiler_is_the_reason(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-fusedrnn")
    monkeypatch.setattr(build, "_prebuilt", lambda kind: None)
    reason = build.load_error.__wrapped__("cpu")
    assert reason is not None and "no C++ compiler" in reason and "no-such-compiler-fusedrnn" in reason


def test_compiler_error_is_summarised(monkeypatch):
    def failing_compile(kind):
        raise RuntimeError("Error building extension 'fusedrnn_cpu'\nsweep.cpp:3:1: error: expected ';'\nninja: stop")

    monkeypatch.setattr(build, "_prebuilt", lambda kind: None)
    monkeypatch.setattr(build, "_missing_tools", lambda kind: None)
    monkeypatch.setattr(build, "_compile", failing_compile)
    reason = build.load_error.__wrapped__("cpu")
    assert reason.startswith("building the cpu extension failed: sweep.cpp:3:1: error: expected ';'")


def test_first_loads_from_threads_take_turns(monkeypatch):
    """Threads that call a backend first at the same time: one builds and registers the
    operators while the others wait, then load what it built."""
    assert build.load_error("cpu") is None, "the cpu extension does not build here"  # its operators exist
    building, overlaps, results = [], [], []

    def slow_compile(kind):
        building.append(kind)
        overlaps.append(len(building))
        time.sleep(0.2)
        building.pop()

    monkeypatch.setattr(build, "_prebuilt", lambda kind: None)
    monkeypatch.setattr(build, "_missing_tools", lambda kind: None)
    monkeypatch.setattr(build, "_compile", slow_compile)
    threads = [threading.Thread(target=lambda: results.append(build.load_error.__wrapped__("cpu"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [None] * 3
    assert overlaps == [1] * 3, f"builds overlapped: {overlaps}"


@pytest.fixture
def broken_cpu_build(monkeypatch):
    """The "cpu" backend as on a machine where its build failed."""
    reason = "building the cpu extension failed: test"
    original = build.load_error
    monkeypatch.setattr(build, "load_error", lambda kind: reason if kind == "cpu" else original(kind))
    monkeypatch.setattr(dispatch, "_reasons", {})  # availability is asked once per process
    build.warn_unavailable.cache_clear()
    yield reason
    build.warn_unavailable.cache_clear()


def test_auto_skips_a_failed_build_with_one_warning(broken_cpu_build):
    x = torch.randn(3, 2, 4)
    weights = {k: v.float() for k, v in random_weights("lstm", 4, 5).items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert "cpu" not in fusedrnn.available_backends()
            fusedrnn.functional.lstm(x, **weights, backend="auto")
    runtime_warnings = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime_warnings) == 1 and broken_cpu_build in str(runtime_warnings[0].message)
    assert runtime_warnings[0].filename == __file__, "the warning should name the caller's line"
    with pytest.raises(dispatch.BackendUnavailableError, match="test"):
        fusedrnn.functional.lstm(x, **weights, backend="cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_without_the_cpu_library_the_lstm_runs_on_pytorchs_kernel_not_the_reference(broken_cpu_build, dtype):
    """The rule that keeps some calls off PyTorch's kernel compares it with the cpu backend: without
    that, auto takes PyTorch's kernel (one call), not the reference's Python loop."""
    sweep = fusedrnn.functional._validated_call("lstm", torch.randn(2, 1, 4, dtype=dtype),
                                                torch.randn(16, 4, dtype=dtype), torch.randn(16, 4, dtype=dtype),
                                                None, None, None, None, None, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cpu backend's one warning
        assert dispatch.select("auto", sweep).name == "torch"


def _build_directory(tmp_path, monkeypatch, name="fusedrnn_probe"):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    directory = tmp_path / name
    directory.mkdir()
    (directory / "build.ninja").write_text("")
    return directory


def test_a_lock_left_by_a_killed_build_is_removed_not_waited_on_forever(tmp_path, monkeypatch):
    """torch's load() would wait on it without a limit: every later process would hang."""
    directory = _build_directory(tmp_path, monkeypatch)
    (directory / "lock").touch()
    long_ago = time.time() - build.STALE_LOCK_S - 60
    for entry in directory.iterdir():
        os.utime(entry, (long_ago, long_ago))
    with pytest.warns(RuntimeWarning, match="left by a build of fusedrnn_probe that stopped"):
        build._wait_for_build_lock("fusedrnn_probe")
    assert not (directory / "lock").exists()


def test_a_live_build_is_waited_for(tmp_path, monkeypatch):
    """A lock under which the build directory changes is another process building: wait, keep it."""
    directory = _build_directory(tmp_path, monkeypatch)
    (directory / "lock").touch()
    monkeypatch.setattr(build, "LOCK_POLL_S", 0.05)
    finished = threading.Timer(0.5, (directory / "lock").unlink)
    finished.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing was removed
        build._wait_for_build_lock("fusedrnn_probe")
    assert not (directory / "lock").exists(), "returned before the other build released its lock"
    finished.join()
