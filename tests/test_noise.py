"""The G2 noise (SPEC §4.5): one counter-based generator, the same on every backend.

:func:`fusedrnn.noise.sample_noise` (plain PyTorch) draws bit for bit what the Triton
kernels draw in registers, and the CPU library (``torch.ops.fusedrnn.g2_noise``) draws it too;
its values have the logistic law and the Bernoulli mask; and
one seed gives one result on every backend, which the reference reproduces when fed the
regenerated noise tensor.
"""
import dataclasses
import math

import pytest
import torch

from fusedrnn.noise import EPS, draw_seed, philox, sample_noise, uniform
from fusedrnn.testing import assert_same_noise, compare, ground_truth, random_problem

from conftest import assert_close, skip_unless_available, tolerance

CUDA = torch.cuda.is_available()
WORD = 0xFFFFFFFF
SEEDS = [0, 1234567, 2 ** 32 + 5, 2 ** 62 - 3, 0x0F0A_9F11_D00D_BEEF]


def device_for(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and CUDA) else "cpu"


# The CPU library's draw (the cpu backend's), against noise.py --------------------------


@pytest.fixture(scope="module")
def cpu_library():
    skip_unless_available("cpu")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, noise_prob", [((3, 5, 7), 1.0), ((2, 9, 37), 0.3), ((1, 1, 1), 0.6),
                                               ((4, 16, 32), 0.85), ((0, 3, 4), 0.5)])
def test_cpu_library_draws_the_torch_noise(cpu_library, seed, shape, noise_prob):
    drawn = torch.ops.fusedrnn.g2_noise(*shape, noise_prob, torch.tensor([seed]))
    assert drawn.shape == (shape[0], shape[1], 2, shape[2]) and drawn.dtype == torch.float32, drawn.shape
    assert_same_noise(drawn, sample_noise(*shape, noise_prob, seed=seed))


@pytest.mark.parametrize("arguments, error, message", [
    ((-1, 2, 3, 0.5, torch.tensor([1])), ValueError, "must be >= 0"),
    ((2, 2, 3, 1.5, torch.tensor([1])), ValueError, "noise_prob must be in"),
    ((2, 2, 3, 0.5, torch.tensor([1, 2])), ValueError, "seed must be a CPU tensor of one element"),
    ((2, 2, 3, 0.5, torch.tensor([1.0])), TypeError, "seed must be torch.int64"),
    ((2 ** 40, 2 ** 40, 1, 0.5, torch.tensor([1])), ValueError, "has more elements than int64 can count"),
], ids=["negative-size", "noise_prob-above-1", "two-seeds", "float-seed", "beyond-int64"])
def test_cpu_library_noise_refuses_bad_arguments(cpu_library, arguments, error, message):
    with pytest.raises(error, match=message):
        torch.ops.fusedrnn.g2_noise(*arguments)


def test_cpu_library_noise_passes_opcheck(cpu_library):
    torch.library.opcheck(torch.ops.fusedrnn.g2_noise, (3, 4, 5, 0.5, torch.tensor([7])))


# The Triton kernels' draw, bit for bit ---------------------------------------------------

triton = pytest.importorskip("triton")
tl = triton.language

from fusedrnn.triton_kernels.noise import logistic_noise, philox_words  # noqa: E402


@triton.jit
def _noise_kernel(seed, words, uniforms, noise, B, H, noise_prob, EPS: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_H: tl.constexpr):
    """What the sweeps draw at step ``i_t``: the four Philox words (as int32 bits) and their
    uniforms into ``(T, B, 4, H)``, ``m ⊙ ℓ`` of the two gates into ``(T, B, 2, H)``."""
    i_t, i_b, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_j = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m_bj = (o_b < B)[:, None] & (o_j < H)[None, :]
    b_seed = tl.load(seed)
    o_row = (i_t * B + o_b).to(tl.int64)[:, None]
    r_ui, r_mi, r_uf, r_mf = philox_words(b_seed, i_t, o_b, o_j, H)
    o_words = o_row * (4 * H) + o_j[None, :]
    tl.store(words + o_words, r_ui.to(tl.int32, bitcast=True), mask=m_bj)
    tl.store(words + o_words + H, r_mi.to(tl.int32, bitcast=True), mask=m_bj)
    tl.store(words + o_words + 2 * H, r_uf.to(tl.int32, bitcast=True), mask=m_bj)
    tl.store(words + o_words + 3 * H, r_mf.to(tl.int32, bitcast=True), mask=m_bj)
    tl.store(uniforms + o_words, tl.uint_to_uniform_float(r_ui), mask=m_bj)
    tl.store(uniforms + o_words + H, tl.uint_to_uniform_float(r_mi), mask=m_bj)
    tl.store(uniforms + o_words + 2 * H, tl.uint_to_uniform_float(r_uf), mask=m_bj)
    tl.store(uniforms + o_words + 3 * H, tl.uint_to_uniform_float(r_mf), mask=m_bj)
    n_i, n_f = logistic_noise(b_seed, i_t, o_b, o_j, H, noise_prob, EPS)
    o_noise = o_row * (2 * H) + o_j[None, :]
    tl.store(noise + o_noise, n_i, mask=m_bj)
    tl.store(noise + o_noise + H, n_f, mask=m_bj)


def triton_draw(seed, seq_len, batch_size, hidden_size, noise_prob, device):
    """The Triton kernels' words ``(T, B, 4, H)`` int64, uniforms ``(T, B, 4, H)`` and noise
    ``(T, B, 2, H)``, from blocks smaller than B and H where they are large enough."""
    words = torch.full((seq_len, batch_size, 4, hidden_size), -1, dtype=torch.int32, device=device)
    uniforms = torch.full(words.shape, math.nan, dtype=torch.float32, device=device)
    noise = torch.full((seq_len, batch_size, 2, hidden_size), math.nan, dtype=torch.float32, device=device)
    block_b, block_h = 4, 16
    grid = (seq_len, triton.cdiv(batch_size, block_b), triton.cdiv(hidden_size, block_h))
    seed = torch.tensor([seed], dtype=torch.int64, device=device)
    _noise_kernel[grid](seed, words, uniforms, noise, batch_size, hidden_size, float(noise_prob), EPS=EPS,
                        BLOCK_B=block_b, BLOCK_H=block_h)
    return words.long() & WORD, uniforms, noise


def torch_words(seed, seq_len, batch_size, hidden_size):
    """:func:`fusedrnn.noise.philox` on the sweeps' counters ``(b·H + j, t, 0, 0)``: ``(T, B, 4, H)``."""
    step = torch.arange(seq_len).view(-1, 1, 1)
    counter = torch.arange(batch_size).view(1, -1, 1) * hidden_size + torch.arange(hidden_size)
    counter, step = torch.broadcast_tensors(counter, step)
    zero = torch.zeros_like(counter)
    return torch.stack(philox(seed, counter, step, zero, zero), dim=2)


@pytest.mark.parametrize("seed", SEEDS,
                         ids=["seed0", "seed-small", "seed-high-word-1", "seed-max", "seed-both-words"])
@pytest.mark.parametrize("shape, noise_prob", [((3, 5, 7), 1.0), ((2, 9, 37), 0.3), ((1, 1, 1), 0.6),
                                               ((4, 16, 32), 0.85)],
                         ids=["T3-B5-H7", "T2-B9-H37-p0.3", "T1-B1-H1-p0.6", "T4-B16-H32-p0.85"])
def test_torch_philox_is_the_triton_draw_bit_for_bit(seed, shape, noise_prob):
    check_against_triton(seed, shape, noise_prob, device_for("triton"))  # without a GPU, the interpreter


@pytest.mark.gpu
@pytest.mark.parametrize("shape, noise_prob", [((3, 5, 7), 1.0), ((17, 33, 300), 0.3)], ids=["small", "large"])
def test_torch_philox_is_the_compiled_triton_draw(shape, noise_prob):
    check_against_triton(2 ** 40 + 12345, shape, noise_prob, "cuda")


def check_against_triton(seed, shape, noise_prob, device):
    words, uniforms, noise = triton_draw(seed, *shape, noise_prob, device)
    expected_words = torch_words(seed, *shape).to(device)
    mismatched = (words != expected_words).sum().item()
    assert mismatched == 0, f"{mismatched} of {words.numel()} Philox words differ from tl.philox"
    expected_uniforms = uniform(expected_words)
    assert torch.equal(uniforms, expected_uniforms), "uniforms differ from tl.uint_to_uniform_float"
    assert_same_noise(noise, sample_noise(*shape, noise_prob, seed=seed, device=device))



def test_both_seed_words_key_the_noise():
    low = sample_noise(2, 3, 8, seed=5)
    assert not torch.equal(low, sample_noise(2, 3, 8, seed=5 + 2 ** 32)), "the high word of the seed is ignored"
    assert not torch.equal(low, sample_noise(2, 3, 8, seed=6)), "the low word of the seed is ignored"
    assert torch.equal(low, sample_noise(2, 3, 8, seed=torch.tensor([5]))), "an int and a tensor seed differ"


# Its law ---------------------------------------------------------------------------

def test_noise_is_logistic_and_independent():
    drawn = sample_noise(48, 16, 128, seed=draw_seed()).double()  # (T, B, 2, H)
    samples = drawn.flatten()
    n = samples.numel()
    assert abs(samples.mean().item()) < 5 * math.sqrt(math.pi ** 2 / 3 / n), "mean is not 0"
    assert samples.var().item() == pytest.approx(math.pi ** 2 / 3, rel=0.03), "variance is not π²/3"
    # Kolmogorov-Smirnov against the logistic CDF σ; 1.95/√n is the 0.1% critical value.
    ordered = samples.sort().values
    cdf = torch.sigmoid(ordered)
    ecdf_hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    statistic = torch.maximum(ecdf_hi - cdf, cdf - (ecdf_hi - 1 / n)).max().item()
    assert statistic < 1.95 / math.sqrt(n), f"Kolmogorov-Smirnov statistic {statistic:.4f} rejects the logistic law"
    # Independent across steps, gates, rows and units: correlations within 5 standard errors.
    pairs = {"steps": (drawn[1:], drawn[:-1]), "gates": (drawn[:, :, 0], drawn[:, :, 1]),
             "rows": (drawn[:, 1:], drawn[:, :-1]), "units": (drawn[..., 1:], drawn[..., :-1])}
    for name, (a, b) in pairs.items():
        correlation = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(correlation) < 5 / math.sqrt(a.numel()), f"{name}: correlation {correlation:.4f}"


@pytest.mark.parametrize("noise_prob", [0.2, 0.7])
def test_noise_prob_keeps_that_fraction_independently_of_the_values(noise_prob):
    drawn = sample_noise(32, 16, 128, noise_prob, seed=draw_seed())
    n = drawn.numel()
    kept = (drawn != 0).double().mean().item()
    assert abs(kept - noise_prob) < 5 * math.sqrt(noise_prob * (1 - noise_prob) / n), f"kept fraction {kept:.4f}"
    # The mask uses its own words: the kept values are still logistic.
    values = drawn[drawn != 0].double()
    assert values.var().item() == pytest.approx(math.pi ** 2 / 3, rel=0.05), "the kept values are not logistic"


def test_different_seeds_draw_different_noise():
    first, second = draw_seed(), draw_seed()
    assert first.item() != second.item(), "the generator gave one seed twice"
    a, b = sample_noise(4, 8, 16, seed=first), sample_noise(4, 8, 16, seed=second)
    assert (a != b).double().mean().item() > 0.99, "two seeds share most of their noise"


def test_sample_noise_draws_its_seed_as_a_sweep_does():
    state = torch.get_rng_state()
    seed = draw_seed("cpu")
    torch.set_rng_state(state)
    assert torch.equal(sample_noise(3, 4, 5, 0.5), sample_noise(3, 4, 5, 0.5, seed=seed))
    generator = torch.Generator().manual_seed(3)
    expected = sample_noise(3, 4, 5, seed=draw_seed(generator=torch.Generator().manual_seed(3)))
    assert torch.equal(sample_noise(3, 4, 5, generator=generator), expected)


# One seed, one result on every backend --------------------------------------------------

SEED, NOISE_PROB = 20240611, 0.6


def drawing_its_own_noise(backend, seed):
    """A run of ``backend`` on a noisy G2 problem that ignores the problem's noise and draws its
    own after ``manual_seed(seed)`` on its device's generator."""
    def run(problem):
        generator = torch.cuda if problem.x.is_cuda else torch
        generator.manual_seed(seed)
        options = {**problem.options, "noise": None, "noise_prob": NOISE_PROB}
        return dataclasses.replace(problem, options=options).call(backend), problem.leaves()
    return run


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton", "cuda"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_one_seed_gives_one_result_on_every_backend(backend, reverse):
    """``torch.manual_seed(s)`` then a noisy G2 call that draws its own noise: outputs, final
    states, gradients and second-order gradients (``create_graph``, where the Triton sweeps
    regenerate the noise from the seed) match the float64 reference fed the regenerated noise."""
    skip_unless_available(backend)
    device = device_for(backend)
    shape = (6, 3, 8, 24)  # (T, B, I, H)
    problem = random_problem("g2", shape, lengths=True, reverse=reverse, gate_mode="noisy", temperature=0.8)
    (torch.cuda if device == "cuda" else torch).manual_seed(SEED)
    problem.options["noise"] = sample_noise(shape[0], shape[1], shape[3], NOISE_PROB, device=device)
    assert problem.noise.any(), "the regenerated noise is all zero"
    truth = ground_truth(problem, torch.float32, device, second_order=True)
    pairs = compare(drawing_its_own_noise(backend, SEED), truth)
    for name, actual, expected in pairs:
        assert_close(f"{backend} {name}", actual, expected, tolerance(torch.float32, device))
    # Another seed is another result: the noise was not ignored.
    (_, other, _), *_ = compare(drawing_its_own_noise(backend, SEED + 1), truth.forward_only())
    assert relative_change(other, pairs[0][1]) > 1e-2, "a new seed left the output unchanged"


def relative_change(a, b):
    return ((a - b).norm() / b.norm()).item()
