"""bench/throughput.py end to end at a toy size: every mode gives a row, and the
fraction of the matmul peak is the row's GFLOP/s over the best measured sgemm rate;
bench/profile_ops.py's per-op table of a training step."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_script(name="throughput"):
    """Imports bench/<name>.py by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_script", os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_rows_for_every_mode(tmp_path):
    out = tmp_path / "rows.json"
    rows = bench_script().main(["--models", "unet", "--sizes", "64",
                                "--batch-size", "2", "--steps", "2", "--repeats", "2",
                                "--input-images", "16", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["machine"]["cpu"]
    assert sorted(r["mode"] for r in rows) == ["evaluate", "input", "predict", "train"]
    for peak in saved["peaks"]:  # numpy's sgemm with its own kernel, and tf.matmul
        assert peak["float32"] == max(peak["numpy"], peak["tf_float32"]) > 0
        assert peak["kernel"]  # the BLAS kernel threadpoolctl names
    for r in rows:
        assert r["images_per_second"] > 0 and r["peak_gflops_per_second"] > 0
        # timed at the start and after the one model and size; the best is the peak
        assert len(r["peak_runs"]) == 2
        assert r["peak_gflops_per_second"] == max(r["peak_runs"])
        if r["mode"] == "input":  # no network runs: no FLOPs
            assert r["gflops_per_second"] is None
            continue
        assert r["flops_source"] in ("profiler", "analytic")
        factor = 3 if r["mode"] == "train" else 1
        assert r["gflops_per_second"] == pytest.approx(
            factor * r["forward_gflops_per_image"] * r["images_per_second"])
        assert r["fraction_of_peak"] == pytest.approx(
            r["gflops_per_second"] / r["peak_gflops_per_second"])
    train = next(r for r in rows if r["mode"] == "train")
    # each repeat a fresh process; the row is their median, with the spread
    assert len(train["runs"]) == 2
    assert train["min_images_per_second"] <= train["images_per_second"] \
        <= train["max_images_per_second"]


def test_throughput_rejects_a_size_the_model_cannot_take():
    with pytest.raises(SystemExit):  # argparse's usage error, before any timing
        bench_script().main(["--models", "unet", "--sizes", "100"])


def test_profile_ops_tables_the_training_step(capsys):
    bench_script("profile_ops").main(["--model", "unet", "--size", "64",
                                      "--batch-size", "2", "--steps", "1", "--top", "50"])
    out = capsys.readouterr().out
    op_types, layers = out.split("| layer |")
    shares = [float(line.rsplit("|", 2)[1].strip(" %"))
              for line in op_types.splitlines() if line.startswith("| ") and "%" in line]
    assert shares == sorted(shares, reverse=True)
    assert 50 < sum(shares) <= 100 + 0.05 * len(shares)  # each rounded to 0.1%
    assert "Conv2DBackpropFilter" in op_types  # the weights' gradient: a training step
    assert "| compile_loss |" in layers or "| sgd |" in layers  # outside the model
    assert "| bottom_2_conv |" in layers  # the model's own layer names
