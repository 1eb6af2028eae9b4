"""How much accuracy the Triton Mogrifier's bfloat16 ``hi + lo`` products buy (issue: "bf16
without the high/low split where SPEC §6 holds").

The kernels multiply float32 activations (chains, ``h``, ``dz``) by bfloat16 weights with
float32 accumulation. Today the activation enters as ``hi + lo``, two bfloat16 products;
without the split it is rounded to bfloat16 once. This script runs the float32 reference
Mogrifier with every product's operands rounded as the kernels round them, in the forward
and in the backward (``grad_a = op(g) W``, ``grad_W = round(g)ᵀ op(a)`` as ``_product`` and
``_row_product`` compute them), once with ``op`` = split and once with ``op`` = one rounding,
and reports the worst relative error over outputs, final states and every gradient against
the float64 reference (``fusedrnn.testing``), beside SPEC §6's bfloat16 bound.

``--low-rank`` instead runs the Triton sweep itself (``TRITON_INTERPRET=1`` on a CPU, rounding
to bfloat16 as a GPU does: ``testing.round_like_a_gpu_in_the_interpreter``) on problems with
low-rank rounds, as it rounds (``mogrifier.SPLIT_BELOW_K``) and with ``hi + lo`` in every product.

    python bench/bf16_mogrifier_error.py [--json PATH]
    TRITON_INTERPRET=1 python bench/bf16_mogrifier_error.py --low-rank [--json PATH]
"""
import argparse
import json
from unittest import mock

import torch
import torch.nn.functional as F

from fusedrnn import reference, testing
from fusedrnn.precision import tolerance
from fusedrnn.triton_kernels import mogrifier

#: Small problems (few terms per sum: where rounding shows most) by width, over these
#: ``(T, B)``, call variants and seeds; then benchmark-like shapes ``(T, B, I, H)``.
SMALL_WIDTHS = (4, 8, 16, 32, 64)
SMALL_STEPS_ROWS = ((1, 1), (2, 1), (3, 2), (1, 4))
VARIANTS = (dict(), dict(lengths=True), dict(reverse=True, lengths=True), dict(weight_options=dict(bias=False)),
            dict(weight_options=dict(mogrify_steps=6)))
SMALL_SEEDS = range(12)
LARGE_SHAPES = ((64, 16, 128, 128), (64, 16, 256, 256), (32, 64, 512, 512))
LARGE_SEEDS = range(3)
#: ``--low-rank``: ``(T, B, I, H)`` and every round's rank, 5 rounds, lengths drawn, 6 seeds each.
LOW_RANK_CASES = (((4, 16, 64, 64), 8), ((4, 16, 64, 64), 16), ((4, 16, 64, 64), 32), ((4, 16, 128, 128), 16),
                  ((2, 64, 128, 128), 32), ((4, 4, 32, 32), 16), ((6, 1, 64, 64), 16))
LOW_RANK_SEEDS = range(6)


def rounded(a):
    return a.to(torch.bfloat16).float()


def split(a):
    """``hi + lo`` in bfloat16 each: what two bfloat16 products see of a float32 operand."""
    hi = rounded(a)
    return hi + rounded(a - hi)


class KernelLinear(torch.autograd.Function):
    """``F.linear`` with the kernels' operand rounding, forward and backward, float32 accumulation."""

    @staticmethod
    def forward(ctx, a, weight, bias, operand):
        ctx.save_for_backward(a, weight)
        ctx.operand = operand
        out = operand(a) @ rounded(weight).t()
        return out if bias is None else out + bias

    @staticmethod
    def backward(ctx, grad):
        a, weight = ctx.saved_tensors
        grad_a = ctx.operand(grad) @ rounded(weight)
        grad_weight = rounded(grad).t() @ ctx.operand(a)
        return grad_a, grad_weight, None if ctx.needs_input_grad[2] is False else grad.sum(0), None


def emulated(operand):
    """A harness run: the reference Mogrifier in float32, its products rounded by ``operand``."""
    def run(problem):
        leaves = problem.leaves()
        plain = problem.map(lambda t: t.float())
        original = F.linear
        F.linear = lambda a, w, b=None: KernelLinear.apply(a, w, b, operand)
        try:
            w = plain.weights
            outputs = reference.mogrifier_lstm(plain.x, w["weight_ih"], w["weight_hh"], w.get("bias_ih"),
                                               w.get("bias_hh"), plain.h0, plain.c0,
                                               mogrify_weights=w["mogrify_weights"],
                                               mogrify_biases=w.get("mogrify_biases"), lengths=plain.lengths,
                                               reverse=plain.reverse)
        finally:
            F.linear = original
        return outputs, leaves
    return run


def worst_errors(cases):
    """The worst relative error of each operand rounding over ``(shape, variant, seed)`` cases."""
    worst = {"split": 0.0, "rounded": 0.0}
    for shape, variant, seed in cases:
        torch.manual_seed(seed)
        truth = testing.ground_truth(testing.random_problem("mogrifier", shape, **variant), torch.bfloat16)
        for name, operand in (("split", split), ("rounded", rounded)):
            worst[name] = max(worst[name], testing.check(emulated(operand), truth).error)
    return worst


def triton_low_rank_errors(shape, rank):
    """The worst relative error of the Triton sweep on low-rank problems, as it rounds and split everywhere."""
    worst = {}
    for name, split_below in (("split", mogrifier.SPLIT_EVERY), ("rounded", mogrifier.SPLIT_BELOW_K)):
        with mock.patch.object(mogrifier, "SPLIT_BELOW_K", split_below):
            for seed in LOW_RANK_SEEDS:
                torch.manual_seed(seed)
                problem = testing.random_problem("mogrifier", shape, lengths=True, weight_options=dict(mogrify_rank=rank))
                error = testing.check(testing.on_backend("triton"), testing.ground_truth(problem, torch.bfloat16)).error
                worst[name] = max(worst.get(name, 0.0), error)
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--low-rank", action="store_true", help="the Triton sweep on low-rank problems")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    bound = tolerance(torch.bfloat16, "cpu")
    groups = [(f"I = H = {width}, T·B ≤ 6", [((t, b, width, width), variant, seed) for t, b in SMALL_STEPS_ROWS
                                           for variant in VARIANTS for seed in SMALL_SEEDS])
              for width in SMALL_WIDTHS]
    groups += [(f"T, B, I, H = {', '.join(map(str, shape))}", [(shape, {}, seed) for seed in LARGE_SEEDS])
               for shape in LARGE_SHAPES]
    if args.low_rank:
        testing.round_like_a_gpu_in_the_interpreter()
        groups = [(f"T, B, I, H = {', '.join(map(str, shape))}, rank {rank}", (shape, rank))
                  for shape, rank in LOW_RANK_CASES]
    rows = []
    print("| problems | cases | with hi + lo | one rounding | SPEC bound |\n|---|---|---|---|---|")
    for label, cases in groups:
        worst = triton_low_rank_errors(*cases) if args.low_rank else worst_errors(cases)
        count = len(LOW_RANK_SEEDS) if args.low_rank else len(cases)
        rows.append({"problems": label, "cases": count, **worst, "tolerance": bound})
        print(f"| {label} | {count} | {worst['split']:.2e} | {worst['rounded']:.2e} | {bound:.0e} |", flush=True)
    if args.json:
        command = "python bench/bf16_mogrifier_error.py" + (" --low-rank" if args.low_rank else "")
        with open(args.json, "w") as out:
            json.dump({"command": f"{command} --json {args.json}", "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
