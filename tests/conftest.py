import os
import struct
import sys
import time
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CELEBA_ZIP = os.path.join(ROOT, "..", "shared", "data", "celeba-8k", "img_align_celeba.zip")


def pytest_addoption(parser):
    parser.addoption("--auto-precision", choices=("bf16", "fp32"), default=os.environ.get("FACEGAN_AUTO_PRECISION"),
                     help="run every test as if --precision auto had found hardware with (bf16) or without (fp32) "
                          "native bf16, whatever this machine has (also: FACEGAN_AUTO_PRECISION=bf16|fp32)")


@pytest.fixture(autouse=True)
def forced_auto_precision(request, monkeypatch):
    """With --auto-precision, gan_step.auto_precision() answers as on the other kind of machine (asked about
    given hardware, it still reads what it is given), so one machine checks both kinds' paths."""
    forced = request.config.getoption("--auto-precision")
    if forced and "keras" in sys.modules:  # the HyperGAN tests run in a virtualenv without Keras
        from facegan import gan_step
        real = gan_step.auto_precision

        def auto_precision(cpuinfo=None, accelerators=None):
            if cpuinfo is None and accelerators is None:
                return forced, f"forced by the tests' --auto-precision {forced}"
            return real(cpuinfo, accelerators)
        monkeypatch.setattr(gan_step, "auto_precision", auto_precision)
    yield


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """gan_step.build_models sets Keras' global dtype policy (bf16/fp16 runs): don't let it leak into later tests."""
    yield
    if "keras" in sys.modules:  # the HyperGAN tests run in a virtualenv without Keras
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


def colour_layout_features(images):
    """4x4 mean colours, 48-d: a cheap image feature for stand-ins of the FID network and the judge."""
    images = np.asarray(images)
    n, size = len(images), images.shape[1]
    return images.reshape(n, 4, size // 4, 4, size // 4, 3).mean(axis=(2, 4)).reshape(n, -1) / 255


def colour_centroid_judge(real, fake, seed=0, steps=400):
    """scoring.judge_accuracy's contract (train on half, accuracy on the unseen half, test count) with a
    nearest-centroid classifier on colour_layout_features in place of the CNN: instant, and still a real judge."""
    m = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    real, fake = real[rng.permutation(len(real))[:m]], fake[rng.permutation(len(fake))[:m]]
    half = m // 2
    real_centre = colour_layout_features(real[:half]).mean(0)
    fake_centre = colour_layout_features(fake[:half]).mean(0)
    test = colour_layout_features(np.concatenate([real[half:], fake[half:]]))
    said_real = ((test - real_centre) ** 2).sum(1) < ((test - fake_centre) ** 2).sum(1)
    is_real = np.arange(len(test)) < m - half
    return float(np.mean(said_real == is_real)), int(len(test))


@pytest.fixture
def quick_judge(monkeypatch):
    """The judge CNN has a test of its own (it catches noise, not real faces); the tests of evaluate.py's and
    ablation.py's outputs only need a judge's numbers in their tables."""
    from facegan import scoring
    monkeypatch.setattr(scoring, "judge_accuracy", colour_centroid_judge)


@pytest.fixture
def celeba_zip():
    if not os.path.exists(CELEBA_ZIP):
        pytest.skip("../shared/data/celeba-8k/img_align_celeba.zip is not here")
    return CELEBA_ZIP


@pytest.fixture(scope="session")
def tiny_faces():
    """Demo faces at 32 px: a small real-looking-enough dataset for fast training tests."""
    from facegan import demo_faces
    return demo_faces.make_demo_faces(96, size=32, seed=3)


@pytest.fixture
def tiny_dataset(tmp_path, tiny_faces):
    train_path = tmp_path / "tiny_train.npy"
    np.save(train_path, tiny_faces[:64])
    np.save(tmp_path / "tiny_holdout.npy", tiny_faces[64:])
    return str(train_path)


TINY_TRAIN_FLAGS = ["--g-width", "8", "--d-width", "8", "--batch-size", "16", "--max-steps", "2",
                    "--n-samples", "16"]
# The paper's recipe, the cheapest to train: for tests of the loop's mechanics (signals, checkpoints), which no
# recipe option changes. The default recipe's own resume, EMA, DiffAugment and seeds are tested by name.
PAPER_RECIPE = ["--preset", "dcgan"]


def jpeg_bytes(h=109, w=89, seed=0):
    """A JPEG of random pixels, CelebA-aligned size by default."""
    import cv2
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def usage_error(parse, argv, capsys):
    """The message of the argparse usage error `parse(argv)` exits with (fails if it does not exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def flip_a_byte_inside(checkpoint, member="g/0000.npy"):
    """Flip one byte in the middle of one array of a checkpoint (past the zip's and the .npy's headers)."""
    with zipfile.ZipFile(checkpoint) as archive:
        info = archive.getinfo(member)
    raw = bytearray(open(checkpoint, "rb").read())
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0xFF
    open(checkpoint, "wb").write(bytes(raw))


def wait_for_checkpoint(run_dir, at_least, process, timeout=600):
    """Return once `process` has written a checkpoint of step `at_least` or later into run_dir."""
    from facegan import run_state
    deadline = time.time() + timeout  # a guard against a hung child, far above any machine's start-up
    while time.time() < deadline:
        names = run_state.checkpoint_names(str(run_dir))
        if names and int(names[-1][5:14]) >= at_least:
            return
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.stdout.read()}")
        time.sleep(0.2)
    pytest.fail("no checkpoint appeared")
