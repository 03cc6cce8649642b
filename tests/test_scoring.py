"""The one scoring seam: scores are cached under a hash of everything they depend on, and the cache file is
never left half-written."""
import json
import os

import numpy as np
import pytest

from facegan import data_io
from facegan import scoring
from conftest import colour_layout_features  # a stand-in FID network


def test_a_score_key_changes_with_each_thing_the_score_depends_on(tmp_path, monkeypatch):
    holdout = np.zeros((20, 8, 8, 3), np.uint8)
    fid = scoring.FidReference("stand-in", colour_layout_features, holdout[:10])
    generator = tmp_path / "generator.keras"
    generator.write_bytes(b"weights")

    def key(holdout=holdout, n=100, seed=0, fid=fid):
        return scoring.score_key(**scoring.score_depends_on(holdout, n, seed, fid),
                                 generator=data_io.file_digest(str(generator)))
    first = key()
    assert first == key() and first.startswith("sha256:")
    changed_pixel = holdout.copy()
    changed_pixel[3, 4, 5, 1] = 1
    other_network = scoring.FidReference("stand-in", lambda images: 2 * colour_layout_features(images), holdout[:10])
    others = [key(holdout=changed_pixel), key(n=101), key(seed=1), key(fid=other_network), key(fid=None)]
    generator.write_bytes(b"weightz")
    others.append(key())
    generator.write_bytes(b"weights")
    monkeypatch.setattr(scoring, "_backend", lambda: "another backend")
    others.append(key())
    assert len({first, *others}) == len(others) + 1


def test_a_score_cache_keeps_its_rows_and_a_failed_write_leaves_the_last_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "scores.json"
    cache = scoring.ScoreCache(str(path))
    assert cache.get("a", ("fid",)) is None
    cache.put("a", {"fid": 12.5, "swd_avg": 3.0})
    assert scoring.ScoreCache(str(path)).get("a", ("fid", "swd_avg")) == {"fid": 12.5, "swd_avg": 3.0}
    assert scoring.ScoreCache(str(path)).get("a", ("fid", "kid")) is None  # a row without a needed score

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(OSError):
        cache.put("b", {"fid": 1.0})
    assert json.loads(path.read_text()) == {"a": {"fid": 12.5, "swd_avg": 3.0}}
    assert os.listdir(tmp_path) == ["scores.json"]  # no temporary file left beside it


def test_reference_features_are_computed_once_and_kept_under_their_pixels(tmp_path, capsys):
    reference = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    calls = []

    def network(images):
        calls.append(len(images))
        return colour_layout_features(images)
    path = str(tmp_path / "features.npz")
    fid = scoring.FidReference("stand-in", network, reference, path)
    np.testing.assert_allclose(fid.reference_features(), colour_layout_features(reference), rtol=1e-6)
    fid.reference_features()
    again = scoring.FidReference("stand-in", network, reference, path)
    np.testing.assert_allclose(again.reference_features(), colour_layout_features(reference), rtol=1e-6)
    assert calls == [12]  # once, then from the file
    scoring.FidReference("stand-in", network, 255 - reference, path).reference_features()
    assert calls == [12, 12]  # other pixels: computed again
