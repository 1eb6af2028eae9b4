"""Package metadata lives in pyproject.toml; this file only exists so that the C++/CUDA
extension can be built ahead of time (see README, "The compiled backends").

Without FUSEDRNN_BUILD_EXT=1 nothing here imports torch, so pip's isolated build
environment never pulls a second copy of torch. With it, the libraries of
fusedrnn/ext/build.py are compiled into ``fusedrnn/ext/_cpu*.so`` (and ``_cuda*.so``
where torch has CUDA and nvcc is found), which ``fusedrnn.ext.build`` loads instead of
compiling on first use::

    FUSEDRNN_BUILD_EXT=1 pip install --no-build-isolation .
    FUSEDRNN_BUILD_EXT=1 python setup.py build_ext --inplace    # a source checkout
"""
import importlib.util
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def extension_build_module():
    """fusedrnn/ext/build.py by path: its source lists and flags, without importing fusedrnn."""
    spec = importlib.util.spec_from_file_location("fusedrnn_ext_build", ROOT / "fusedrnn" / "ext" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extension_options():
    if os.environ.get("FUSEDRNN_BUILD_EXT") != "1":
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    build = extension_build_module()

    def sources(kind):
        return [str((build.SOURCE_DIR / source).relative_to(ROOT)) for source in build.SOURCES[kind]]

    modules = [CppExtension("fusedrnn.ext._cpu", sources("cpu"), extra_compile_args=build.cxx_flags("cpu"),
                            extra_link_args=build.link_flags("cpu"))]
    if torch.version.cuda is not None and CUDA_HOME is not None:
        modules.append(CUDAExtension("fusedrnn.ext._cuda", sources("cuda"), extra_compile_args={
            "cxx": build.cxx_flags("cuda"), "nvcc": build.NVCC_FLAGS + build.CUDA_DEFINES}))
    return {"ext_modules": modules, "cmdclass": {"build_ext": BuildExtension}}


setup(**extension_options())
