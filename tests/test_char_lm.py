"""The character-level language model example, ``examples/char_lm.py``: training lowers
the loss for each cell, every backend follows the float64 reference step by step, a
resumed checkpoint gives exactly the next loss of an uninterrupted run (and is saved back),
the gate histogram counts every gate value, and the command line says what it ran or why
it cannot run.

Needs the example's own dependencies: ``pip install tqdm matplotlib``.
"""
import copy
import importlib.util
import json
import math
import pathlib
import runpy
import shlex
import sys

import pytest
import torch

import fusedrnn

from conftest import CELLS, DEVICES, relative_error, skip_unless_available, supports, tolerance

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "char_lm.py"
_SPEC = importlib.util.spec_from_file_location("char_lm", _PATH)
char_lm = importlib.util.module_from_spec(_SPEC)
sys.modules["char_lm"] = char_lm  # its dataclass looks its module up by name
_SPEC.loader.exec_module(char_lm)


def tiny_config(cell, **changes):
    config = dict(cell=cell, layers=1, embedding_size=8, hidden_size=16, dropout=0.0, batch_size=4, bptt=8,
                  lr=1e-2, clip=1.0, dtype="float32", seed=0, mogrify_steps=3, mogrify_rank=None, temperature=1.0,
                  noise_prob=1.0)
    config.update(changes)
    return config


def tiny_args(cell, **changes):
    """Command-line arguments of ``tiny_config(cell, **changes)``."""
    args = []
    for key, value in tiny_config(cell, **changes).items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args + ["--backend", "reference", "--device", "cpu", "--eval-every", "0", "--eval-batch-size", "64",
                   "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are tiny: extra threads only add OpenMP hand-offs, which cost
    milliseconds per matrix product when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus():
    return char_lm.build_corpus(char_lm.load_text())


def make_trainer(model, corpus, config):
    return char_lm.Trainer(model, corpus.train, config["batch_size"], config["bptt"], config["lr"], config["clip"])


def test_corpus_is_split_by_position(corpus):
    text = char_lm.load_text()
    pieces = [corpus.train, corpus.valid, corpus.test]
    assert sum(len(piece) for piece in pieces) == len(text)
    assert [round(len(piece) / len(text), 2) for piece in pieces] == list(char_lm.SPLITS)
    decoded = "".join(corpus.vocabulary[i] for i in corpus.valid[:200].tolist())
    assert decoded == text[len(corpus.train):len(corpus.train) + 200]


@pytest.mark.parametrize("cell", CELLS)
def test_training_lowers_validation_loss(cell, corpus):
    config = tiny_config(cell)
    model = char_lm.build_model(config, len(corpus.vocabulary), backend="reference")
    held_out = corpus.valid[:2048]
    before = char_lm.bits_per_character(model, held_out, 8, 32)
    trainer = make_trainer(model, corpus, config)
    for _ in range(30):
        trainer.train_step()
    after = char_lm.bits_per_character(model, held_out, 8, 32)
    assert before > math.log2(len(corpus.vocabulary)) - 0.5, f"an untrained model should be near uniform, got {before}"
    assert after < before - 1.0, f"{cell}: 30 steps took validation from {before:.3f} to {after:.3f} bits/char"


@pytest.mark.parametrize("backend, device, cell", [
    pytest.param(backend, device, cell, id=f"{backend}-{device}-{cell}")
    for backend in fusedrnn.BACKENDS for device in DEVICES for cell in CELLS
    if supports(backend, cell, device, torch.float32)])
def test_backend_losses_follow_float64_reference(backend, device, cell, corpus):
    """Same seed, same data, same Adam steps: float32 on ``backend`` against float64 on the
    reference, loss by loss, within SPEC §6's float32 tolerance. G2 trains with its noise
    off (deterministic soft gates σ(z/τ), ``gate_noise=False``): backends draw different noise."""
    skip_unless_available(backend)
    config = tiny_config(cell, temperature=0.8)
    model = char_lm.build_model(config, len(corpus.vocabulary), backend=backend, device=device,
                                gate_noise=cell != "g2")
    reference = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    reference.recurrent.backend = "reference"
    trainers = [make_trainer(model, corpus, config), make_trainer(reference, corpus, config)]
    for step in range(4):
        loss, _ = trainers[0].train_step()
        expected, _ = trainers[1].train_step()
        error = relative_error(torch.tensor(loss), torch.tensor(expected))
        assert error <= tolerance(torch.float32, device), (
            f"{backend}/{cell} step {step}: loss {loss} vs float64 reference {expected} (relative error {error:.3g})")


@pytest.mark.parametrize("cell", CELLS)
def test_resume_gives_the_next_loss_of_an_uninterrupted_run(cell, tmp_path):
    # Two layers with dropout, and G2 with its noise: the resumed run needs the saved RNG
    # state, data position and carried (h, c), not just the weights.
    args = tiny_args(cell, layers=2, dropout=0.2)
    uninterrupted = char_lm.main(args + ["--steps", "4"])
    checkpoint = str(tmp_path / "run.pt")
    first = char_lm.main(args + ["--steps", "3", "--checkpoint", checkpoint])
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = char_lm.main(["--resume", checkpoint, "--steps", "4", "--backend", "reference", "--eval-every", "0",
                            "--eval-batch-size", "64", "--quiet"])
    assert first["losses"] == uninterrupted["losses"][:3]
    assert resumed["steps_this_run"] == 1 and resumed["steps"] == 4
    assert resumed["losses"] == uninterrupted["losses"][3:]
    assert resumed["valid_bpc"] == uninterrupted["valid_bpc"]


def test_gate_histogram_counts_every_gate_value(corpus):
    config = tiny_config("g2", layers=2)
    model = char_lm.build_model(config, len(corpus.vocabulary), backend="reference")
    text = corpus.valid[:1000]
    batch_size, bptt = 4, 16
    counts = char_lm.gate_histograms(model, text, batch_size, bptt)
    steps = len(text) // batch_size - 1  # the last character of a stream has no target: not a step
    expected = config["layers"] * steps * batch_size * config["hidden_size"]
    assert counts["input"].sum().item() == expected
    assert counts["forget"].sum().item() == expected


def test_gate_histogram_command_draws_g2_beside_lstm(tmp_path):
    baseline = str(tmp_path / "lstm.pt")
    char_lm.main(tiny_args("lstm") + ["--steps", "2", "--checkpoint", baseline])
    picture = tmp_path / "gates.png"
    results = char_lm.main(tiny_args("g2") + ["--steps", "2", "--gate-histogram", str(picture),
                                              "--histogram-baseline", baseline])
    assert picture.stat().st_size > 0
    assert sorted(results["gate_histogram"]) == ["G2-LSTM (2 steps)", "LSTM (2 steps)"]
    with pytest.raises(ValueError, match="this model.s size"):
        char_lm.main(tiny_args("g2", hidden_size=8) + ["--steps", "1", "--gate-histogram", str(picture),
                                                       "--histogram-baseline", baseline])


def resume_args(checkpoint, steps):
    return ["--resume", checkpoint, "--steps", str(steps), "--backend", "reference", "--eval-every", "0",
            "--eval-batch-size", "64", "--quiet"]


def saved_step(path):
    return torch.load(path, map_location="cpu", weights_only=True)["trainer"]["step"]


def test_resume_without_checkpoint_saves_back_to_the_resumed_file(tmp_path):
    checkpoint = str(tmp_path / "run.pt")
    char_lm.main(tiny_args("lstm") + ["--steps", "2", "--checkpoint", checkpoint])
    resumed = char_lm.main(resume_args(checkpoint, 3))
    assert resumed["steps"] == 3
    assert saved_step(checkpoint) == 3, "the steps trained after --resume without --checkpoint were not saved"


def test_resume_past_the_requested_steps_is_a_usage_error(tmp_path, capsys):
    checkpoint = str(tmp_path / "run.pt")
    char_lm.main(tiny_args("lstm") + ["--steps", "2", "--checkpoint", checkpoint])
    for steps in (1, 2):
        with pytest.raises(SystemExit) as stopped:
            char_lm.main(resume_args(checkpoint, steps))
        assert stopped.value.code == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert message.endswith(f"error: --steps {steps}: checkpoint {checkpoint!r} is already at step 2; "
                                "--steps is the total to train to, give a larger one")
    assert saved_step(checkpoint) == 2


def test_results_record_the_command_line_that_ran(tmp_path, monkeypatch):
    results = tmp_path / "results.json"
    argv = ["examples/char_lm.py"] + tiny_args("lstm") + ["--steps", "1", "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv)
    char_lm.main()
    assert json.loads(results.read_text())["command"] == shlex.join(["python"] + argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="Triton runs here: it has a CUDA device")
def test_backend_this_machine_cannot_run_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # conftest turns the CPU interpreter on
    monkeypatch.setattr(fusedrnn.dispatch, "_reasons", {})  # availability is asked once per process
    with pytest.raises(SystemExit) as stopped:
        char_lm.main(tiny_args("lstm") + ["--steps", "1", "--backend", "triton"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        ": error: --backend triton cannot run on this machine: "
        "needs a CUDA device or the Triton CPU interpreter (TRITON_INTERPRET=1)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
@pytest.mark.parametrize("device, message", [
    ("cuda", "--device cuda: this machine has no CUDA device"),
    ("gpu0", "--device must be a torch device such as cpu or cuda, got 'gpu0'")])
def test_device_this_machine_lacks_is_a_one_line_error(device, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        char_lm.main(tiny_args("lstm") + ["--steps", "1", "--device", device])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_backend_that_refuses_the_call_is_a_one_line_error(monkeypatch):
    # Triton runs here (a GPU, or conftest's interpreter) but never float64: dispatch
    # refuses the first step, and the command says so instead of a traceback.
    assert fusedrnn.dispatch.unavailable_reason("triton") is None
    monkeypatch.setattr(sys, "argv", [str(_PATH)] + tiny_args("lstm", dtype="float64")
                        + ["--steps", "1", "--backend", "triton"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(_PATH), run_name="__main__")
    assert stopped.value.code == ("char_lm.py: error: backend 'triton' cannot run this lstm call: "
                               "dtype torch.float64 is not supported (float32, bfloat16, float16)")
