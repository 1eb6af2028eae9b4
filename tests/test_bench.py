"""The benchmark command (``python -m fusedrnn.bench``) on tiny configurations: its table,
JSON, chart and exit status, and the correctness check that keeps wrong answers out of it."""
import contextlib
import io
import json

import pytest
import torch

from fusedrnn import BackendUnavailableError
from fusedrnn.bench import grid, main
from fusedrnn.bench.check import check, ground_truth
from fusedrnn.bench.implementations import BASELINES, Implementation, fusedrnn_backend, implementations
from fusedrnn.bench.runner import run_config
from fusedrnn.bench.timing import MAX_ROTATION, measure, rotation_count

TINY = grid.Timing(warmup_s=0.0, budget_s=0.0, min_reps=2, max_reps=2)
CPU = torch.device("cpu")
TINY_ARGS = ["--quick", "--shapes", "3x5x4x6", "2x5x4x6", "--no-progress",
             "--backends", "reference", "nn.LSTM", "eager"]
RESULT_KEYS = {"cell", "batch_size", "seq_len", "input_size", "hidden_size", "dtype", "direction",
               "implementation", "kind", "status", "reason", "median_ms", "us_per_step", "repetitions",
               "peak_memory_bytes", "check_error", "check_tolerance", "speedup"}


@pytest.fixture(scope="module")
def command_run(tmp_path_factory):
    """One run of the command on a tiny grid, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "results.json", "plot": out / "chart.png", "markdown": out / "table.md"}
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(TINY_ARGS + [f"--{key}={path}" for key, path in paths.items()])
    return status, stdout.getvalue(), paths


def test_command_succeeds_and_prints_a_table(command_run):
    status, stdout, _ = command_run
    assert status == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("# fusedrnn benchmark on CPU")
    assert lines[1].split()[:8] == ["cell", "B", "T", "I", "H", "dtype", "dir", "implementation"]
    assert all(f"x {baseline}" in lines[1] for baseline in BASELINES)
    rows = [line.split() for line in lines[2:] if line.strip()]
    assert len(rows) == 36
    assert sum(row[-2] == "ok" for row in rows) == 28  # nn.LSTM has no mogrifier or g2 cell: 8 n/a
    assert rows[0][:8] == ["lstm", "3", "5", "4", "6", "float32", "fwd", "reference"]


def test_json_has_every_row_with_checked_timings(command_run):
    _, _, paths = command_run
    document = json.loads(paths["json"].read_text())
    assert document["schema"] == "fusedrnn-bench/1"
    assert document["command"].startswith("python -m fusedrnn.bench --quick")
    assert document["machine"]["torch"] == torch.__version__
    assert document["settings"]["implementations"] == ["reference", "nn.LSTM", "eager"]
    rows = document["results"]
    # 3 cells x 2 shapes x 1 dtype x 3 implementations x 2 directions
    assert len(rows) == 36
    for row in rows:
        assert set(row) == RESULT_KEYS
        if row["implementation"] == "nn.LSTM" and row["cell"] != "lstm":
            assert row["status"] == "n/a" and "no " + row["cell"] in row["reason"]
            continue
        assert row["status"] == "ok", row
        assert row["check_error"] <= row["check_tolerance"] == 1e-5
        assert row["median_ms"] > 0 and row["repetitions"] >= 3
        assert row["us_per_step"] == pytest.approx(row["median_ms"] * 1e3 / row["seq_len"])
        assert row["peak_memory_bytes"] is None  # no honest per-call figure on CPU
        assert row["speedup"]["reference"] > 0


def test_speedups_are_baseline_time_over_time(command_run):
    _, _, paths = command_run
    rows = json.loads(paths["json"].read_text())["results"]
    timed = {(r["cell"], r["batch_size"], r["direction"], r["implementation"]): r["median_ms"]
             for r in rows if r["status"] == "ok"}
    for row in rows:
        key = (row["cell"], row["batch_size"], row["direction"])
        for baseline, ratio in row["speedup"].items():
            assert baseline in BASELINES
            assert ratio == pytest.approx(timed[key + (baseline,)] / row["median_ms"])
        if row["implementation"] in BASELINES and row["status"] == "ok":
            assert row["speedup"][row["implementation"]] == pytest.approx(1.0)


def test_markdown_table_and_chart_are_written(command_run):
    _, _, paths = command_run
    lines = paths["markdown"].read_text().splitlines()
    assert lines[0].startswith("| cell | B | T | I | H | dtype | dir | implementation | median ms")
    assert len(lines) == 2 + 36
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny_config(cell="lstm", dtype="float32"):
    return grid.Config(cell, batch_size=3, seq_len=6, input_size=5, hidden_size=4, dtype=dtype)


def _perturbed_reference(perturb):
    """The reference backend with ``perturb(outputs)`` applied to its outputs."""
    reference = fusedrnn_backend("reference")

    def prepare(problem):
        forward, leaves = reference.prepare(problem)
        return (lambda: perturb(forward())), leaves

    return Implementation("broken", "fusedrnn", prepare)


@pytest.mark.parametrize("cell", grid.CELLS)
def test_check_rejects_a_wrong_output(cell):
    wrong = _perturbed_reference(lambda outputs: (outputs[0] * 1.001,) + tuple(outputs[1:]))
    results = run_config(_tiny_config(cell), [wrong, fusedrnn_backend("reference")], grid.DIRECTIONS, TINY, CPU)
    broken = [r for r in results if r.implementation == "broken"]
    assert [r.status for r in broken] == ["wrong", "wrong"]
    assert all(r.failed and r.median_ms is None and "relative error" in r.reason for r in broken)
    assert all(r.status == "ok" for r in results if r.implementation == "reference")


def test_check_rejects_a_wrong_gradient():
    def scale_output_gradient(outputs):
        output = outputs[0]
        if output.requires_grad:
            output.register_hook(lambda grad: grad * 1.01)
        return outputs

    wrong = _perturbed_reference(scale_output_gradient)
    forward_only = run_config(_tiny_config(), [wrong], ["fwd"], TINY, CPU)
    assert [r.status for r in forward_only] == ["ok"]  # the forward alone is right
    with_backward = run_config(_tiny_config(), [wrong], grid.DIRECTIONS, TINY, CPU)
    assert [r.status for r in with_backward] == ["wrong", "wrong"]
    assert "grad" in with_backward[0].reason


def test_declined_and_crashing_backends_are_reported_not_raised():
    def declines(problem):
        raise BackendUnavailableError("backend 'declines' cannot run this lstm call: too small")

    def crashes(problem):
        raise RuntimeError("kernel exploded")

    implementations_ = [Implementation("declines", "fusedrnn", declines),
                        Implementation("crashes", "fusedrnn", crashes),
                        Implementation("limited", "baseline", crashes)]
    results = run_config(_tiny_config(), implementations_, ["fwd"], TINY, CPU)
    by_name = {r.implementation: r for r in results}
    assert (by_name["declines"].status, by_name["declines"].failed) == ("n/a", False)
    assert "too small" in by_name["declines"].reason
    assert (by_name["crashes"].status, by_name["crashes"].failed) == ("error", True)
    assert "kernel exploded" in by_name["crashes"].reason
    assert (by_name["limited"].status, by_name["limited"].failed) == ("n/a", False)


def test_command_exits_nonzero_when_a_backend_is_wrong(monkeypatch, capsys):
    import fusedrnn.bench.cli as cli

    wrong = _perturbed_reference(lambda outputs: (outputs[0] + 0.1,) + tuple(outputs[1:]))
    monkeypatch.setattr(cli, "implementations", lambda names: [wrong])
    status = main(["--quick", "--shapes", "2x3x4x4", "--cells", "lstm", "--no-progress"])
    assert status == 1
    assert "FAILED" in capsys.readouterr().err


@pytest.mark.parametrize("cell", grid.CELLS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_baselines_meet_the_half_precision_tolerance(cell, dtype):
    config = _tiny_config(cell, dtype)
    truth = ground_truth(config, CPU, with_grads=True)
    baselines = [impl for impl in implementations(["nn.LSTM", "eager"]) if impl.unsupported(config, CPU) is None]
    assert baselines
    for implementation in baselines:
        verdict = check(implementation, truth)
        assert verdict.passed, (implementation.name, verdict)


@pytest.mark.parametrize("text", ["1x2x3", "0x2x3x4", "axbxcxd", "1x2x3x4x5", "-1x2x3x4"])
def test_bad_shapes_are_rejected(text, capsys):
    with pytest.raises(ValueError, match="BxTxIxH"):
        grid.parse_shape(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["--shapes", text])
    assert exit_info.value.code == 2
    assert "BxTxIxH" in capsys.readouterr().err


def test_bad_options_are_rejected(capsys):
    for argv in (["--shapes", "1x2x3x4", "--batch-sizes", "2"], ["--shapes", "1x2x3x4", "--input-size", "2"],
                 ["--backends", "nope"],
                 ["--cells", "gru"], ["--quick", "--preset", "gpu"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
    with pytest.raises(ValueError, match="cells"):
        grid.configs(["gru"], [(1, 1, 1, 1)], ["float32"])
    with pytest.raises(ValueError, match="dtypes"):
        grid.configs(["lstm"], [(1, 1, 1, 1)], ["float64"])
    with pytest.raises(ValueError, match="backends"):
        implementations(["nope"])


def test_product_grid_sets_input_size_to_hidden_size_unless_given():
    assert grid.cartesian_shapes([1, 2], [7], [3, 5]) == ((1, 7, 3, 3), (1, 7, 5, 5), (2, 7, 3, 3), (2, 7, 5, 5))
    assert grid.cartesian_shapes([1], [7], [3], input_size=9) == ((1, 7, 9, 3),)


def test_size_options_make_a_product_grid(tmp_path):
    path = tmp_path / "results.json"
    argv = ["--quick", "--cells", "lstm", "--batch-sizes", "2", "3", "--seq-lens", "4", "--hidden-sizes", "5",
            "--input-size", "7", "--backends", "reference", "--directions", "fwd", "--no-progress", f"--json={path}"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    rows = json.loads(path.read_text())["results"]
    assert [(r["batch_size"], r["seq_len"], r["input_size"], r["hidden_size"], r["direction"], r["status"])
            for r in rows] == [(2, 4, 7, 5, "fwd", "ok"), (3, 4, 7, 5, "fwd", "ok")]


def test_presets_are_what_the_issues_ask_for():
    assert grid.PRESETS["gpu"].shapes == grid.LSTM_ISSUE_SHAPES
    assert set(grid.PRESETS["gpu"].dtypes) == {"float16", "bfloat16", "float32"}
    assert all(i == h for _, _, i, h in grid.LSTM_ISSUE_SHAPES)
    assert grid.default_preset(torch.device("cuda")) == "gpu"
    assert grid.default_preset(CPU) == "cpu"


def test_timing_takes_the_median_of_many_repetitions():
    calls = []
    timing = grid.Timing(warmup_s=0.0, budget_s=0.0, min_reps=7, max_reps=9)
    measured = measure(lambda: calls.append(1), timing, CPU)
    assert measured.repetitions == 7 and len(calls) == 8  # one warm-up call
    assert measured.median_ms >= 0


def test_inputs_rotate_only_when_they_would_fit_in_cache():
    assert rotation_count(1, CPU) == MAX_ROTATION
    assert rotation_count(2 ** 40, CPU) == 1


def test_flashrnn_adapter_computes_the_lstm():
    pytest.importorskip("flashrnn")
    from fusedrnn.bench import competitors

    # flashrnn's pure-PyTorch kernel runs on CPU and shares the layout of its CUDA kernels.
    vanilla = Implementation("flashrnn-vanilla", "competitor",
                             lambda problem: competitors.flashrnn_lstm(problem, kernel="vanilla"))
    verdict = check(vanilla, ground_truth(_tiny_config(), CPU, with_grads=True))
    assert verdict.passed, verdict


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_command_on_cuda_reports_peak_memory(tmp_path):
    path = tmp_path / "results.json"
    status = main(["--device", "cuda", "--shapes", "4x8x16x16", "--dtypes", "float32", "bfloat16",
                   "--no-progress", f"--json={path}"])
    assert status == 0
    rows = json.loads(path.read_text())["results"]
    timed = [row for row in rows if row["status"] == "ok"]
    assert timed and all(row["peak_memory_bytes"] > 0 for row in timed)
    assert {row["implementation"] for row in timed} >= {"reference", "nn.LSTM", "eager"}
