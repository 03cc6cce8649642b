import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from facegan import data_io
import preprocess
from conftest import ROOT, jpeg_bytes


def _names(n):
    return [f"{i:06d}.jpg" for i in range(1, n + 1)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _run(tmp_path, source, *extra):
    out = str(tmp_path / "out" / "faces")
    code = preprocess.main(["--source", str(source), "--out", out, "--workers", "2", *extra])
    return code, out


def _check_outputs(out, n_train, n_holdout, size=64):
    train, holdout = np.load(out + "_train.npy"), np.load(out + "_holdout.npy")
    assert train.shape == (n_train, size, size, 3) and train.dtype == np.uint8
    assert holdout.shape == (n_holdout, size, size, 3)
    with open(out + ".json") as f:
        meta = json.load(f)
    assert meta["train_count"] == n_train and meta["holdout_count"] == n_holdout
    return meta


def test_official_zip_read_without_extraction(tmp_path, rng):
    source = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for name in _names(12):
            archive.writestr(f"img_align_celeba/{name}", jpeg_bytes(seed=int(rng.integers(1 << 30))))
    code, out = _run(tmp_path, source, "--holdout", "2", "--limit", "8")
    assert code == 0
    meta = _check_outputs(out, 8, 2)
    assert meta["first_train_file"].endswith("000001.jpg") and meta["last_train_file"].endswith("000008.jpg")
    assert not os.path.exists(tmp_path / "img_align_celeba")  # nothing extracted


def test_extracted_folder_with_a_corrupt_file_is_skipped_and_reported(tmp_path, rng):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for name in _names(10):
        (folder / name).write_bytes(jpeg_bytes(seed=int(rng.integers(1 << 30))))
    (folder / "000003.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored")
    code, out = _run(tmp_path, folder, "--holdout", "2")
    assert code == 0
    meta = _check_outputs(out, 7, 2)
    assert [s["file"] for s in meta["skipped"]] == ["000003.jpg"]


def test_kaggle_layout_and_partition_file(tmp_path, rng):
    root = tmp_path / "celeba-dataset"
    folder = root / "img_align_celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    names = _names(10)
    for name in names:
        (folder / name).write_bytes(jpeg_bytes(seed=int(rng.integers(1 << 30))))
    # Kaggle ships the partition as CSV: images 1-6 train, 7 validation, 8-10 test
    rows = ["image_id,partition"] + [f"{n},{0 if i < 6 else 1 if i == 6 else 2}" for i, n in enumerate(names)]
    (root / "list_eval_partition.csv").write_text("\n".join(rows) + "\n")
    code, out = _run(tmp_path, root, "--holdout", "2")
    assert code == 0
    meta = _check_outputs(out, 6, 2)
    assert meta["holdout_from"] == "celeba test partition"


def test_default_crop_is_central_square_of_full_width(tmp_path):
    # a 40x60 image: rows 10..49 (the central 40x40 square) are green, the rest red
    image = np.zeros((60, 40, 3), np.uint8)
    image[:, :] = (0, 0, 255)
    image[10:50] = (0, 255, 0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in _names(3):
        cv2.imwrite(str(folder / name.replace(".jpg", ".png")), image)
    code, out = _run(tmp_path, folder, "--holdout", "1", "--size", "32")
    assert code == 0
    train = np.load(out + "_train.npy")
    assert train.shape == (2, 32, 32, 3)
    assert (train[..., 1] == 255).all() and (train[..., 0] == 0).all()  # all green, RGB order


def test_tight_crop_keeps_the_central_108_of_178(tmp_path):
    # CelebA's 178x218 layout: the central 108x108 square is green, everything around it red
    image = np.zeros((218, 178, 3), np.uint8)
    image[:, :] = (0, 0, 255)
    image[55:163, 35:143] = (0, 255, 0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in _names(3):
        cv2.imwrite(str(folder / name.replace(".jpg", ".png")), image)
    code, out = _run(tmp_path, folder, "--holdout", "1", "--size", "32", "--crop", "tight")
    assert code == 0
    tight = np.load(out + "_train.npy")
    assert (tight[..., 1] == 255).all() and (tight[..., 0] == 0).all()  # the green square alone
    code, out = _run(tmp_path, folder, "--holdout", "1", "--size", "32")
    assert code == 0 and (np.load(out + "_train.npy")[..., 0] > 128).any()  # the default crop shows red


@pytest.mark.parametrize("make_source, message", [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no .jpg/.png images"),
    (lambda p: (p / "a.zip").write_bytes(b"PK\x03\x04 truncated") and p / "a.zip", "neither a folder nor a zip"),
])
def test_bad_sources_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, make_source, message):
    code, out = _run(tmp_path, make_source(tmp_path))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_all_images_corrupt_is_an_error(tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in _names(4):
        (folder / name).write_bytes(b"garbage")
    code, _ = _run(tmp_path, folder, "--holdout", "1")
    assert code == 2 and "could be decoded" in capsys.readouterr().err


def test_real_celeba_zip(tmp_path, celeba_zip):
    code, out = _run(tmp_path, celeba_zip, "--limit", "64", "--holdout", "16")
    assert code == 0
    meta = _check_outputs(out, 64, 16)
    assert meta["last_train_file"].endswith("000064.jpg")
    first = np.load(out + "_train.npy")[0]
    with zipfile.ZipFile(celeba_zip) as archive:
        raw = cv2.imdecode(np.frombuffer(archive.read("img_align_celeba/000001.jpg"), np.uint8), cv2.IMREAD_COLOR)
    top = (raw.shape[0] - raw.shape[1]) // 2
    expected = cv2.resize(raw[top:top + raw.shape[1]], (64, 64), interpolation=cv2.INTER_AREA)[..., ::-1]
    assert np.array_equal(first, expected)


# ----- the three files as one set ---------------------------------------------------------------------------

def _folder(tmp_path, rng, n=8):
    folder = tmp_path / "faces"
    folder.mkdir(exist_ok=True)
    for name in _names(n):
        (folder / name).write_bytes(jpeg_bytes(seed=int(rng.integers(1 << 30))))
    return folder


def _snapshot(out):
    return {path: open(path, "rb").read() for path in data_io.dataset_paths(out).values()}


@pytest.mark.parametrize("failure, code", [
    (lambda: OSError(errno.ENOSPC, "No space left on device"), 2),
    (lambda: OSError("98304 requested and 73600 written"), 2),  # how numpy reports a full disk
    (KeyboardInterrupt, 130)])
def test_a_failed_write_keeps_the_previous_set_whole(tmp_path, rng, capsys, monkeypatch, failure, code):
    folder = _folder(tmp_path, rng)
    assert _run(tmp_path, folder, "--holdout", "2", "--limit", "4")[0] == 0
    out = str(tmp_path / "out" / "faces")
    before = _snapshot(out)
    real_save, calls = np.save, []

    def fails_on_the_holdout(f, array, *args, **kwargs):
        calls.append(1)
        real_save(f, array[:1], *args, **kwargs)  # part of it gets written, then it fails
        if len(calls) == 2:
            raise failure()
    monkeypatch.setattr(np, "save", fails_on_the_holdout)
    monkeypatch.setattr(data_io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 20, 10 << 20, 0))
    assert _run(tmp_path, folder, "--holdout", "1", "--limit", "6")[0] == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("disk full" in err if code == 2 else "interrupted" in err)
    assert _snapshot(out) == before  # the old train, holdout and JSON, untouched and still a matching set
    assert sorted(os.listdir(tmp_path / "out")) == ["faces.json", "faces_holdout.npy", "faces_train.npy"]


def test_json_describes_the_arrays_and_verify_dataset_catches_a_foreign_array(tmp_path, rng):
    code, out = _run(tmp_path, _folder(tmp_path, rng), "--holdout", "2")
    assert code == 0
    record = data_io.verify_dataset(out + "_train.npy")
    assert record["shape"] == [6, 64, 64, 3] and record["fingerprint"].startswith("sha1:")
    assert data_io.verify_dataset(out + "_holdout.npy")["shape"] == [2, 64, 64, 3]
    train = np.load(out + "_train.npy")
    train[3, 10, 10, 0] ^= 1  # one changed pixel is another dataset
    np.save(out + "_train.npy", train)
    with pytest.raises(data_io.DataError, match="is not the array .*faces.json describes"):
        data_io.verify_dataset(out + "_train.npy")
    assert data_io.verify_dataset(str(tmp_path / "made_by_hand.npy")) is None


def test_fingerprint_reads_memory_maps_in_chunks_and_sees_every_pixel(tmp_path, rng):
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert data_io.array_fingerprint(mapped, chunk_bytes=100) == data_io.array_fingerprint(images)
    changed = images.copy()
    changed[-1, -1, -1, -1] ^= 1
    assert data_io.array_fingerprint(changed) != data_io.array_fingerprint(images)
    assert data_io.array_fingerprint(images.reshape(10, 4, 8, 3)) != data_io.array_fingerprint(images)


# ----- damaged, hostile and degenerate inputs ---------------------------------------------------------------

def _smooth_jpeg(w=89, h=109):
    y, x = np.mgrid[0:h, 0:w]
    return cv2.imencode(".jpg", np.stack([x * 2, y * 2, x + y], -1).astype(np.uint8))[1].tobytes()


def test_jpeg_with_bytes_overwritten_mid_stream_is_skipped_and_counted(tmp_path, rng, capsys):
    folder = _folder(tmp_path, rng, 6)
    data = bytearray(_smooth_jpeg())
    middle = (data.index(b"\xff\xda") + len(data)) // 2
    data[middle:middle + 50] = bytes(50)  # start and end markers intact
    (folder / "000003.jpg").write_bytes(bytes(data))
    code, out = _run(tmp_path, folder, "--holdout", "1")
    assert code == 0
    meta = _check_outputs(out, 4, 1)
    assert [s["file"] for s in meta["skipped"]] == ["000003.jpg"]
    assert "Corrupt JPEG data" in meta["skipped"][0]["reason"]
    assert "skipped 1 file(s)" in capsys.readouterr().out


def test_zip_member_over_the_size_limit_is_skipped_without_being_read(tmp_path, rng, monkeypatch):
    source = tmp_path / "faces.zip"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in _names(4):
            archive.writestr(name, jpeg_bytes(seed=int(rng.integers(1 << 30))))
        archive.writestr("000000.jpg", jpeg_bytes(seed=int(rng.integers(1 << 30))) + bytes(data_io.MAX_IMAGE_BYTES))  # compresses to little
    assert source.stat().st_size < 1 << 20
    reads = []
    real_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: reads.append(n) or real_read(self, n))
    code, out = preprocess.main(["--source", str(source), "--out", str(tmp_path / "out" / "x"), "--holdout", "1",
                                 "--workers", "1"]), str(tmp_path / "out" / "x")
    assert code == 0
    meta = _check_outputs(out, 3, 1)
    assert [s["file"] for s in meta["skipped"]] == ["000000.jpg"] and "limit" in meta["skipped"][0]["reason"]
    assert len(reads) == 4 and all(0 < n <= data_io.MAX_IMAGE_BYTES + 1 for n in reads)  # bounded reads only


def test_partition_file_without_test_entries_is_refused(tmp_path, rng, capsys):
    folder = _folder(tmp_path, rng, 6)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} 0\n" for n in _names(6)))
    code, _ = _run(tmp_path, folder, "--holdout", "2")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no test-partition (2) entries" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


@pytest.mark.parametrize("out, message", [("", "--out must not be empty"),
                                          ("{tmp}/dir/", "is a folder; --out is a file prefix")])
def test_out_that_is_no_prefix_is_refused(tmp_path, rng, capsys, out, message):
    (tmp_path / "dir").mkdir()
    code = preprocess.main(["--source", str(_folder(tmp_path, rng)), "--out", out.format(tmp=tmp_path)])
    assert code == 2 and message in capsys.readouterr().err
    assert os.listdir(tmp_path / "dir") == []


def test_ctrl_c_while_decoding_exits_130_with_no_traceback_and_no_files(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    names = _names(600)  # three chunks of 256: decoded by the worker pool
    for name in names:
        (folder / name).write_bytes(jpeg_bytes())
    # The worker that reaches the last image reports it and blocks there, so Ctrl-C always lands mid-decoding,
    # however fast the machine.
    code = f"""
import sys, threading
from facegan import data_io
import preprocess
real_read_bytes = data_io.read_bytes
def read_bytes(zip_or_none, folder, name, *args, **kwargs):
    if name == {names[-1]!r}:
        print("blocked on the last image", file=sys.stderr, flush=True)
        threading.Event().wait()
    return real_read_bytes(zip_or_none, folder, name, *args, **kwargs)
data_io.read_bytes = read_bytes
sys.exit(preprocess.main(["--source", {str(folder)!r}, "--out", {str(tmp_path / "out" / "x")!r}, "--holdout", "10",
                          "--workers", "2"]))
"""
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               # a child inherits an ignored SIGINT; Ctrl-C in a terminal is never ignored
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    try:
        while b"blocked on the last image" not in seen and process.poll() is None:
            seen += process.stderr.read1(100)
        assert process.poll() is None, seen.decode()
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group, workers too
        _, err = process.communicate(timeout=120)
    finally:  # never leave a blocked worker behind
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    err = (seen + err).decode()
    assert process.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
