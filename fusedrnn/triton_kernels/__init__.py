"""Triton persistent-kernel sweeps: shared machinery in common.py, one file per cell."""
