import json

import pytest

import benchmark


def test_tensorflow_benchmark_times_train_step_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--batches", "8", "--warmup", "1",
                           "--steps", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["mode"], row["precision"], row["batch"]) == ("graph", "fp32", 8)
    assert row["images_per_second"] > 0
    assert row["gflops"] == pytest.approx(row["images_per_second"] * benchmark.GFLOP_PER_IMAGE, rel=1e-2)
    assert "percent_of_peak" not in row  # no peak given: no column
    assert "| tensorflow | graph | fp32 | 8 |" in capsys.readouterr().out


def test_percent_of_peak_appears_only_with_a_given_peak():
    row = {"backend": "tensorflow", "mode": "graph", "precision": "fp32", "batch": 100, "seconds_per_step": 1.0}
    assert "% of" not in benchmark.format_row(dict(row))
    text = benchmark.format_row(row, peak=1000.0)  # 100 images/s at 2.48 GFLOP each: 248 of 1000 GFLOP/s
    assert row["percent_of_peak"] == 24.8 and "24.8% of 1000" in text


def test_measured_peak_is_a_gemm_rate_and_fills_the_percent_column(tmp_path, monkeypatch):
    gflops = benchmark.gemm_gflops("fp32", size=256, repeats=2)
    assert 0.1 < gflops < 1e6
    monkeypatch.setattr(benchmark, "gemm_gflops", lambda precision: 1000.0)
    out = tmp_path / "bench.json"
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--batches", "8", "--warmup", "1",
                           "--steps", "1", "--measure-peak", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["peak_gflops"] == {"fp32": 1000.0} and result["measured_peak"]
    assert result["rows"][0]["percent_of_peak"] == pytest.approx(result["rows"][0]["gflops"] / 10, abs=0.1)


def test_tf32_is_refused_for_tensorflow(capsys):
    with pytest.raises(SystemExit) as error:
        benchmark.main(["--precisions", "tf32"])
    assert error.value.code == 2
    assert "tf32 is for --backend jax" in capsys.readouterr().err
