import json

import pytest

import benchmark
from conftest import usage_error


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



def test_presets_are_timed_side_by_side_and_labelled(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--batches", "8", "--warmup", "1",
                           "--steps", "1", "--presets", "dcgan", "best", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["preset"] for row in rows] == ["dcgan", "best"] and all(row["images_per_second"] > 0 for row in rows)
    for row in rows:  # the cost model counts the paper's generator: no GFLOP/s figure for another one
        assert (row["gflops"] is None) == (benchmark.presets.PRESETS[row["preset"]]["upsample"] != "transposed")
    printed = capsys.readouterr().out
    assert "| tensorflow | graph | fp32 | 8 | dcgan |" in printed
    assert "| tensorflow | graph | fp32 | 8 | best |" in printed

def test_a_baseline_checkout_is_timed_in_turn_with_this_one_and_compared(tmp_path, capsys):
    import sys
    import keras
    import models
    from conftest import ROOT
    out = tmp_path / "bench.json"
    # this checkout as its own baseline: the same step, built from a second import of the same files
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--batches", "8", "--warmup", "1",
                           "--steps", "2", "--baseline", ROOT, "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["baseline"] == ROOT and row["baseline_images_per_second"] > 0 and row["speedup"] > 0
    assert "| baseline images/s | speedup |" in capsys.readouterr().out
    assert sys.modules["models"] is models  # this checkout's modules are back in place
    # and so are Keras' registered classes: models saved by this checkout load as its own classes
    assert keras.saving.get_registered_object("facegan>SpectralNormConv2D") is models.SpectralNormConv2D
    assert benchmark.main(["--modes", "graph", "--baseline", str(tmp_path), "--out", str(out)]) == 2
    assert "not a checkout of this project" in capsys.readouterr().err


def test_ops_are_classed_by_type_and_scope():
    assert benchmark.op_class("discriminator_1/down2_1/convolution", "_MklNativeConv2D") == "convolution forward"
    assert benchmark.op_class("generator_1/up1_1/conv_transpose", "_MklNativeConv2DBackpropInput") == \
        "convolution forward"  # a transposed convolution's forward
    assert benchmark.op_class("gradient_tape/generator_1/up1_1/conv_transpose/Conv2D", "_MklNativeConv2D") == \
        "convolution backward (data)"
    assert benchmark.op_class("gradient_tape/d/down4_1/Conv2DBackpropFilter", "Conv2DBackpropFilter") == \
        "convolution backward (filter)"
    assert benchmark.op_class("conv_kernel_gradient_1/MatMul", "_MklMatMul") == "convolution backward (filter)"
    assert benchmark.op_class("generator_1/up3_bn_1/moments/mean", "Mean") == "batch norm"
    assert benchmark.op_class("adam_1/Mul_29", "Mul") == "optimizer (Adam)"
    assert benchmark.op_class("gradient_tape/diffaugment_2/GatherV2", "GatherV2") == "DiffAugment"
    assert benchmark.op_class("generator_1/up1_resize_1/Repeat/Tile", "Tile") == "resize (upsampling)"
    assert benchmark.op_class("truediv", "RealDiv") == benchmark.OP_CLASSES[-1]


def test_profile_traces_the_step_and_says_where_its_op_time_goes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--batches", "4", "--warmup", "1",
                           "--steps", "1", "--presets", "best", "--profile", str(tmp_path / "trace"),
                           "--out", str(out)]) == 0
    seconds = json.loads(out.read_text())["rows"][0]["op_seconds"]
    assert set(seconds) == set(benchmark.OP_CLASSES)
    for name in ("convolution forward", "convolution backward (filter)", "batch norm", "optimizer (Adam)",
                 "DiffAugment", "EMA"):  # --preset best has each of them
        assert seconds[name] > 0, name
    assert seconds["resize (upsampling)"] == 0  # in float32 its resize convolutions run as transposed ones
    assert "convolution backward (filter)" in capsys.readouterr().out
    assert list((tmp_path / "trace" / "graph_fp32_4_best").rglob("*.xplane.pb"))  # what TensorBoard reads


def test_each_convolution_is_timed_alone_in_each_pass(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--convolutions", "--precisions", "fp32", "--batches", "2", "--warmup", "0", "--steps",
                           "1", "--presets", "dcgan", "best", "--peak-gflops", "1000", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["convolutions"]
    best_rows, rows = rows[10:], rows[:10]
    # in float32 best's resize convolutions run as k4 stride-2 transposed ones: the paper's multiply-adds
    assert [row["gflop"] for row in best_rows[:5]] == pytest.approx([row["gflop"] for row in rows[:5]])
    assert [(row["network"], row["layer"]) for row in rows] == (
        [("generator", name) for name in ("project", "up1", "up2", "up3", "to_rgb")]
        + [("discriminator", name) for name in ("down1", "down2", "down3", "down4", "to_logit")])
    down4 = rows[8]  # 8x8x256 -> 4x4x512, k4: 2 x batch x 16 positions x 4*4*256*512
    assert (down4["input"], down4["output"]) == ([8, 8, 256], [4, 4, 512])
    assert down4["gflop"] == pytest.approx(2 * 2 * 16 * 4 * 4 * 256 * 512 / 1e9)
    assert all(row[f"{name} GFLOP/s"] > 0 for row in rows for name in benchmark.CONVOLUTION_PASSES)
    assert "| fp32 | dcgan | D down4 | 8x8x256 -> 4x4x512 |" in capsys.readouterr().out


def test_percent_of_peak_appears_only_with_a_given_peak():
    row = {"backend": "tensorflow", "mode": "graph", "precision": "fp32", "batch": 100, "seconds_per_step": 1.0,
           "preset": "dcgan", "paper_model": True}
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


TF_QUICK = ["--modes", "graph"]  # with the quick flags below: what a wrongly accepted setting then times


@pytest.mark.parametrize("argv, message", [
    ([*TF_QUICK, "--peak-gflops", "-5"], "--peak-gflops: must be > 0, got -5"),
    ([*TF_QUICK, "--peak-gflops", "0"], "--peak-gflops: must be > 0, got 0"),
    ([*TF_QUICK, "--peak-gflops", "nan"], "--peak-gflops: must be a finite number"),
    ([*TF_QUICK, "--precisions", "fp32", "bf16", "--peak-gflops", "100"], "--peak-gflops is one precision's peak"),
    ([*TF_QUICK, "--batches", "0"], "--batches: must be >= 1, got 0"),
    ([*TF_QUICK, "--steps", "0"], "--steps: must be >= 1, got 0"),
    ([*TF_QUICK, "--warmup", "-1"], "--warmup: must be >= 0, got -1"),
    ([*TF_QUICK, "--epoch-images", "1000"], "--epoch-images is for --backend jax"),
    (["--backend", "jax", "--modes", "xla"], "--modes are TensorFlow's"),
    (["--backend", "jax", "--batches", "64", "--epoch-images", "10"], "less than one batch of 64"),
])
def test_settings_that_cannot_be_timed_or_reported_are_refused(argv, message, capsys, tmp_path):
    quick = ["--precisions", "fp32", "--batches", "4", "--warmup", "0", "--steps", "1",
             "--out", str(tmp_path / "b.json")]
    assert message in usage_error(benchmark.main, [*quick, *argv], capsys)


@pytest.mark.parametrize("out, message", [("file/bench.json", "cannot write to"), (".", "is a folder")])
def test_an_unusable_out_is_refused_before_any_timing(tmp_path, capsys, monkeypatch, out, message):
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setattr(benchmark, "tf_rows", lambda *a: pytest.fail("timed before checking --out"))
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--out", str(tmp_path / out)]) == 2
    assert message in capsys.readouterr().err


def test_the_backend_asked_for_is_the_one_timed(capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # this process runs Keras on TensorFlow: the rows would be mislabelled
    assert benchmark.main(["--backend", "jax", "--precisions", "fp32", "--out", "x.json"]) == 2
    assert "--backend jax: Keras already runs on tensorflow in this process" in capsys.readouterr().err


def test_train_flags_are_timed_as_train_py_builds_their_recipe(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["--modes", "graph", "--precisions", "fp32", "--batches", "4", "--warmup", "0",
                           "--steps", "1", "--presets", "dcgan", "--train-flags", "--preset dcgan --d-width 96",
                           "--latent-dim 16 --g-width 16", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["preset"], row.get("train_flags")) for row in rows] == [
        ("dcgan", None), ("dcgan", "--preset dcgan --d-width 96"), ("best", "--latent-dim 16 --g-width 16")]
    assert rows[0]["gflops"] and rows[1]["gflops"] is None and rows[2]["gflops"] is None  # the paper's FLOPs only
    printed = capsys.readouterr().out
    assert "| fp32 | 4 | --preset dcgan --d-width 96 |" in printed and "| fp32 | 4 | dcgan |" in printed
    recipe = dict(benchmark.recipes_to_time([], ["--preset dcgan --d-width 96"])[0][1])
    assert recipe["d_width"] == 96 and recipe == {**benchmark.presets.recipe("dcgan"), **recipe}


@pytest.mark.parametrize("flags, message", [
    ("--batch-size 64", "give --batch-size as benchmark.py's --batches"),
    ("--precision bf16", "give --precision as benchmark.py's --precisions"),
    ("--arch nope", "not usable train.py flags"),
])
def test_train_flags_benchmark_py_sets_itself_or_cannot_parse_are_refused(flags, message, capsys, tmp_path):
    assert benchmark.main(["--modes", "graph", "--train-flags", flags, "--out", str(tmp_path / "b.json")]) == 2
    assert message in capsys.readouterr().err
