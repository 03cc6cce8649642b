"""hypergan_baseline.py: the CLI without HyperGAN, and (where requirements-hypergan.txt is installed) a tiny run.

HyperGAN and PyTorch are not in requirements.txt, so in the main environment and CI the training tests skip.
Run them in the HyperGAN virtualenv:  ../hg-venv/bin/python -m pytest -q tests/test_hypergan_baseline.py
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hypergan_baseline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "hypergan_baseline.py")


def require(*modules):
    # find_spec, not importorskip: importing hypergan without its stubs fails on torchvision and leaves
    # HyperGAN's viewer thread running (the test process would never exit).
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -r requirements-hypergan.txt)")


def test_help_explains_the_flags():
    result = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for flag in ("--images-seen", "--max-minutes", "--batch-size", "--n ", "--seed", "--threads", "--data"):
        assert flag in result.stdout


def test_a_stopping_rule_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        hypergan_baseline.main(["--n", "4"])
    assert exit_info.value.code == 2
    assert "--images-seen" in capsys.readouterr().err


def test_missing_hypergan_is_a_one_line_error():
    # Block the imports as if neither were installed (they are not in the main environment anyway).
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['hypergan'] = None; "
            f"sys.argv = [{SCRIPT!r}, '--images-seen', '8']; runpy.run_path({SCRIPT!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not installed" in lines[0] and "pip install -r requirements-hypergan.txt" in lines[0]


class _FakeGAN:
    def __init__(self, torch):
        self.steps = torch.zeros([1])


def test_array_input_draws_one_batch_per_step_and_each_image_once_per_epoch():
    require("torch")
    import torch
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 4, 4, 3), np.uint8)
    inputs = hypergan_baseline.ArrayInput(images, 3, "cpu", 0, torch)
    inputs.gan = _FakeGAN(torch)
    first = inputs.next()  # while the GAN is built (step 0): the batch of step 1
    assert first.shape == (3, 3, 4, 4) and first.dtype == torch.float32
    seen = []
    for step in range(1, 7):  # two epochs of 3 steps (10 // 3), the last image of each permutation dropped
        inputs.gan.steps += 1
        batches = [inputs.next() for _ in range(3)]  # HyperGAN's trainer asks three times per step
        assert all(b is batches[0] for b in batches)
        if step == 1:
            assert batches[0] is first
        values = ((batches[0][:, 0, 0, 0] + 1) * 127.5).round().int().tolist()
        seen.append(values)
    assert inputs.batches_drawn == 6
    for epoch in (seen[:3], seen[3:]):
        flat = [v for batch in epoch for v in batch]
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert float(first.min()) >= -1.0 and float(first.max()) <= 1.0


def test_tiny_training_run_writes_samples_and_report(tmp_path):
    require("torch", "hypergan")
    import torch
    from facegan import data_io
    cuda_before = torch.Tensor.cuda, torch.nn.Module.cuda
    data = tmp_path / "tiny.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8))
    code = hypergan_baseline.main(["--data", str(data), "--images-seen", "8", "--batch-size", "4", "--n", "6",
                                   "--threads", "1", "--device", "cpu", "--out", str(tmp_path), "--name", "t",
                                   "--log-every", "1"])
    assert code == 0
    run_dir = tmp_path / "hypergan_t"
    samples = np.load(run_dir / "samples.npy")
    assert samples.shape == (6, 64, 64, 3) and samples.dtype == np.uint8
    assert samples.std() > 0
    assert data_io.load_image_array(str(run_dir / "samples.npy"), 64).shape == (6, 64, 64, 3)  # evaluate.py reads it
    assert (run_dir / "grid.png").stat().st_size > 0
    report = json.loads((run_dir / "run.json").read_text())
    assert report["steps"] == 2 and report["images_seen"] == 8 and report["batch_size"] == 4
    assert report["n_samples"] == 6 and report["threads"] == 1 and report["interrupted"] is None
    assert report["images_per_second"] > 0 and report["train_seconds"] > 0
    assert report["generator_parameters"] == 3576704 + 256 + 128 + 64 + 3  # the DCGAN's plus conv biases
    assert report["discriminator_parameters"] == 2765568 + 64 + 128 + 256 + 512 + 1
    losses = np.load(run_dir / "losses.npz")
    assert len(losses["d_loss"]) == 2 and np.isfinite(losses["g_loss"]).all()
    config = json.loads((run_dir / "hypergan_config.json").read_text())
    assert config["trainer"]["g_optimizer"] == {"class": "class:torch.optim.Adam", "lr": 2e-4, "betas": [0.5, 0.999]}
    assert (torch.Tensor.cuda, torch.nn.Module.cuda) == cuda_before  # the CPU patch is undone
    # A second run into the same directory is refused (exit 2) unless --overwrite.
    assert hypergan_baseline.main(["--data", str(data), "--images-seen", "4", "--batch-size", "4", "--n", "2",
                                   "--threads", "1", "--out", str(tmp_path), "--name", "t"]) == 2
