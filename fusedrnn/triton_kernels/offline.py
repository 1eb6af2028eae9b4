"""Compiles the sweep kernels (LSTM/G2, Mogrifier) for an NVIDIA GPU without one (Triton ships ``ptxas``).

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
from . import common, lstm, mogrifier

_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Resources:
    """What one compiled kernel takes per program."""

    shared_bytes: int
    registers: int
    spill_bytes: int


def _lstm_signatures(dtype):
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


def _mogrifier_signatures(dtype):
    t = _TYPES[dtype]
    shared = dict(x=f"*{t}", lengths="*i64", w_ih=f"*{t}", w_hh=f"*{t}")
    forward = dict(**shared, bias="*fp32", q=f"*{t}", r=f"*{t}", q_bias=f"*{t}", r_bias=f"*{t}", out=f"*{t}",
                   hs="*fp32", xs="*fp32", cs="*fp32", s_x="*fp32", s_h="*fp32", gates="*fp32", counter="*i32",
                   T="i32", B="i32", I="i32", H="i32", T_BUF="i32")
    backward = dict(**shared, q=f"*{t}", r=f"*{t}", d_out=f"*{t}", hs="*fp32", xs="*fp32", cs="*fp32",
                    s_x="*fp32", s_h="*fp32", gates="*fp32", dz="*fp32", da_x="*fp32", da_h="*fp32", g_x="*fp32",
                    g_h="*fp32", d_h="*fp32", d_c="*fp32", d_x=f"*{t}", counter="*i32",
                    T="i32", B="i32", I="i32", H="i32", T_BUF="i32")
    # The variants with the most work: lengths, biases, saved buffers.
    forward_flags = dict(HAS_LENGTHS=True, HAS_BIAS=True, HAS_ROUND_BIAS=True, SAVE=True)
    backward_flags = dict(HAS_LENGTHS=True)
    return ((mogrifier._mogrifier_fwd_kernel, forward, forward_flags),
            (mogrifier._mogrifier_bwd_kernel, backward, backward_flags))


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


def _jit_function(kernel):
    """The ``JITFunction`` under any ``@triton.heuristics`` wrappers."""
    while not isinstance(kernel, triton.runtime.JITFunction):
        kernel = kernel.fn
    return kernel


def _compile(kernels, constexprs, options, arch):
    """Compiles each ``(kernel, signature, flags)`` of ``kernels`` (forward, backward) for
    ``sm_{arch}`` and returns ``{"forward": Resources, "backward": Resources}``; raises
    Triton's ``CompilationError`` where the GPU compiler rejects a kernel."""
    resources = {}
    for name, (kernel, signature, flags) in zip(("forward", "backward"), kernels):
        values = {**flags, **constexprs}
        signature = {**signature, **{key: "constexpr" for key in values if key not in signature}}
        compiled = triton.compile(ASTSource(_jit_function(kernel), signature, values),
                                  target=GPUTarget("cuda", arch, 32), options=options)
        registers, stack = _registers_and_stack(compiled.asm["cubin"])
        resources[name] = Resources(compiled.metadata.shared, registers, stack)
    return resources


def _precision(dtype):
    return dict(INPUT_PRECISION="tf32" if dtype == torch.float32 else "ieee", UPCAST_DOT=False)


def compile_lstm(config: common.SweepConfig, dtype: torch.dtype, arch: int = 90):
    """The LSTM/G2 sweep kernels of ``config`` for ``sm_{arch}`` (see :func:`_compile`)."""
    return _compile(_lstm_signatures(dtype), {**config.constexprs(), **_precision(dtype)},
                    config.launch_options(), arch)


def compile_mogrifier(config: mogrifier.MogrifierConfig, dtype: torch.dtype, rounds: int, arch: int = 90):
    """The Mogrifier sweep kernels of ``config`` with ``rounds`` rounds for ``sm_{arch}``."""
    constexprs = {**config.constexprs(), **_precision(dtype), "ROUNDS": rounds, "REVERSE": False}
    return _compile(_mogrifier_signatures(dtype), constexprs, config.launch_options(), arch)


def main(argv=None):
    """``python -m fusedrnn.triton_kernels.offline --dtype bfloat16 --config '{"block_b": 16, ...}'``
    (or ``--cell mogrifier --rounds 5 --config '{"programs": 64, ...}'``) prints the resources
    of each kernel as JSON (run with ``TRITON_INTERPRET`` unset)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dtype", choices=[str(d).replace("torch.", "") for d in _TYPES], required=True)
    parser.add_argument("--cell", choices=["lstm", "mogrifier"], default="lstm", help="lstm also covers g2")
    parser.add_argument("--rounds", type=int, default=5, help="the Mogrifier's rounds")
    parser.add_argument("--config", required=True, help="SweepConfig (MogrifierConfig) fields as a JSON object")
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    if common.interpreting():
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    dtype, fields = getattr(torch, args.dtype), json.loads(args.config)
    if args.cell == "mogrifier":
        resources = compile_mogrifier(mogrifier.MogrifierConfig(**fields), dtype, args.rounds, args.arch)
    else:
        resources = compile_lstm(common.SweepConfig(**fields), dtype, args.arch)
    print(json.dumps({name: vars(used) for name, used in resources.items()}))


if __name__ == "__main__":
    main()
