"""Compiles the LSTM sweep kernels for an NVIDIA GPU without one (Triton ships ``ptxas``).

The interpreter accepts code that the GPU compiler rejects (e.g. non-constexpr
globals), so CPU-only CI compiles the kernels here too; and the resources it reports
(registers, spills, shared memory) are what the launch heuristic in ``common.py`` is
calibrated against.

Example:
    >>> config = common.SweepConfig(block_b=16, block_h=16, hidden_pad=256, programs_h=16, programs_b=1)
    >>> compile_lstm(config, torch.bfloat16)["forward"]
    Resources(shared_bytes=40960, registers=..., spill_bytes=0)
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..reference.g2 import EPS
from . import common, lstm

_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Resources:
    """What one compiled kernel takes per program."""

    shared_bytes: int
    registers: int
    spill_bytes: int


def _signatures(dtype):
    t = _TYPES[dtype]
    forward = dict(gx=f"*{t}", w_hh=f"*{t}", h0=f"*{t}", c0=f"*{t}", lengths="*i64", noise="constexpr", seed="*i64",
                   states=f"*{t}", out=f"*{t}", cells="*fp32", gates="*fp32", h_n=f"*{t}", c_n=f"*{t}",
                   counters="*i32", T="i32", B="i32", H="i32", inv_temperature="fp32", noise_prob="fp32")
    backward = dict(w_hh=f"*{t}", gates="*fp32", cells="*fp32", c0="*fp32", lengths="*i64", d_out=f"*{t}",
                    d_h_n=f"*{t}", d_c_n=f"*{t}", dz=f"*{t}", d_h0="*fp32", d_c0="*fp32", counters="*i32",
                    T="i32", B="i32", H="i32", inv_temperature="fp32")
    # The variants with the most work: lengths, saved gates, Philox noise.
    forward_flags = dict(noise=None, REVERSE=False, HARD_GATES=False, HAS_LENGTHS=True, SAVE=True,
                         NOISE=lstm.NOISE_PHILOX.value, EPS=EPS)
    backward_flags = dict(REVERSE=False, HAS_LENGTHS=True)
    return ((lstm._lstm_fwd_kernel, forward, forward_flags), (lstm._lstm_bwd_kernel, backward, backward_flags))


def _cuobjdump():
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _registers_and_stack(cubin: bytes):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run([_cuobjdump(), "--dump-resource-usage", file.name], check=True,
                                capture_output=True, text=True).stdout
    fields = dict(item.split(":") for item in report.split("Resource usage:")[-1].split() if ":" in item)
    return int(fields["REG"]), int(fields["STACK"])


def compile_lstm(config: common.SweepConfig, dtype: torch.dtype, arch: int = 90):
    """Compiles the forward and backward kernels of ``config`` for ``sm_{arch}``.

    Returns ``{"forward": Resources, "backward": Resources}``; raises Triton's
    ``CompilationError`` where the GPU compiler rejects a kernel.
    """
    resources = {}
    constexprs = dict(**config.constexprs(), INPUT_PRECISION="tf32" if dtype == torch.float32 else "ieee",
                      UPCAST_DOT=False)
    for name, (kernel, signature, flags) in zip(("forward", "backward"), _signatures(dtype)):
        values = {**flags, **constexprs}
        signature = {**signature, **{key: "constexpr" for key in values if key not in signature}}
        compiled = triton.compile(ASTSource(kernel.fn, signature, values), target=GPUTarget("cuda", arch, 32),
                                  options=config.launch_options())
        registers, stack = _registers_and_stack(compiled.asm["cubin"])
        resources[name] = Resources(compiled.metadata.shared, registers, stack)
    return resources


def main(argv=None):
    """``python -m fusedrnn.triton_kernels.offline --dtype bfloat16 --config '{"block_b": 16, ...}'``
    prints the resources of each kernel as JSON (run with ``TRITON_INTERPRET`` unset)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dtype", choices=[str(d).replace("torch.", "") for d in _TYPES], required=True)
    parser.add_argument("--config", required=True, help="SweepConfig fields as a JSON object")
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    if common.interpreting():
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    config = common.SweepConfig(**json.loads(args.config))
    resources = compile_lstm(config, getattr(torch, args.dtype), args.arch)
    print(json.dumps({name: vars(used) for name, used in resources.items()}))


if __name__ == "__main__":
    main()
