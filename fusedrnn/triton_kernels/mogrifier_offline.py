"""Compiles the Mogrifier sweep kernels for an NVIDIA GPU without one, as
:mod:`.offline` does for the LSTM sweep (same reasons: the interpreter accepts code
the GPU compiler rejects, and the compiler reports registers and spills).

Example (``TRITON_INTERPRET`` unset)::

    python -m fusedrnn.triton_kernels.mogrifier_offline --dtype bfloat16 --rounds 5 \\
        --config '{"programs": 64, "block_b": 64, "block_n": 32, "block_k": 32, "num_warps": 8}'
"""
from __future__ import annotations

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import common
from .mogrifier import MogrifierConfig, _mogrifier_bwd_kernel, _mogrifier_fwd_kernel
from .offline import _TYPES, Resources, _registers_and_stack


def _signatures(dtype):
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
    return ((_mogrifier_fwd_kernel, forward, forward_flags), (_mogrifier_bwd_kernel, backward, backward_flags))


def _jit_function(kernel):
    """The ``JITFunction`` under ``@triton.heuristics``."""
    while not isinstance(kernel, triton.runtime.JITFunction):
        kernel = kernel.fn
    return kernel


def compile_mogrifier(config: MogrifierConfig, dtype: torch.dtype, rounds: int, arch: int = 90):
    """Compiles the forward and backward kernels with ``rounds`` rounds for ``sm_{arch}``.

    Returns ``{"forward": Resources, "backward": Resources}``; raises Triton's
    ``CompilationError`` where the GPU compiler rejects a kernel.
    """
    resources = {}
    constexprs = dict(**config.constexprs(), ROUNDS=rounds, REVERSE=False,
                      INPUT_PRECISION="tf32" if dtype == torch.float32 else "ieee", UPCAST_DOT=False)
    for name, (kernel, signature, flags) in zip(("forward", "backward"), _signatures(dtype)):
        values = {**flags, **constexprs}
        signature = {**signature, **{key: "constexpr" for key in values}}
        compiled = triton.compile(ASTSource(_jit_function(kernel), signature, values),
                                  target=GPUTarget("cuda", arch, 32), options=config.launch_options())
        registers, stack = _registers_and_stack(compiled.asm["cubin"])
        resources[name] = Resources(compiled.metadata.shared, registers, stack)
    return resources


def main(argv=None):
    """Prints the resources of each kernel as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=[str(d).replace("torch.", "") for d in _TYPES], required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--config", required=True, help="MogrifierConfig fields as a JSON object")
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    if common.interpreting():
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    config = MogrifierConfig(**json.loads(args.config))
    resources = compile_mogrifier(config, getattr(torch, args.dtype), args.rounds, args.arch)
    print(json.dumps({name: vars(used) for name, used in resources.items()}))


if __name__ == "__main__":
    main()
