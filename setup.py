"""Package metadata lives in pyproject.toml; this file only exists so that the C++/CUDA
extension can be built ahead of time (see README, "Building the extension").

Without FUSEDRNN_BUILD_EXT=1 nothing here imports torch, so pip's isolated build
environment never pulls a second copy of torch.
"""
from setuptools import setup

setup()
