"""Tests for metrics.py. Fast (seconds); never touch the network."""
import hashlib
import io
import pathlib
import sys
import tarfile
import urllib.error
import zipfile

import cv2
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from facegan import metrics  # noqa: E402

CELEBA_ZIP = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "celeba-8k" / "img_align_celeba.zip"


def smooth_images(n, seed, size=64):
    """Random smooth colour images: blurred noise plus a random colour cast."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, size=(n, size, size, 3)).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(x, (0, 0), 4.0) for x in noise])
    blurred /= blurred.std()
    cast = rng.uniform(60, 190, size=(n, 1, 1, 3))
    return np.clip(cast + 40 * blurred, 0, 255).astype(np.uint8)


def uniform_noise(n, seed, size=64):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def celeba_crops(n):
    """n aligned CelebA faces, central 89x89 crop resized to 64x64 RGB (as preprocess does)."""
    if not CELEBA_ZIP.is_file():
        pytest.skip(f"{CELEBA_ZIP} not present")
    images = []
    with zipfile.ZipFile(CELEBA_ZIP) as archive:
        names = sorted(name for name in archive.namelist() if name.endswith(".jpg"))[:n]
        for name in names:
            bgr = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR)
            top = (bgr.shape[0] - bgr.shape[1]) // 2
            square = bgr[top:top + bgr.shape[1]]
            small = cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA)
            images.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    return np.stack(images)


# --- Frechet distance and KID ------------------------------------------------

def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    var1, var2 = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_ttur_sqrtm_formula_for_full_covariances():
    import scipy.linalg
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 10, 10))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(10), b @ b.T + 0.1 * np.eye(10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
    assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-7)


def test_fid_of_a_feature_set_with_itself_is_zero_even_when_singular():
    # 20 samples in 32 dimensions: rank-deficient covariance, as with few images.
    features = np.random.default_rng(2).normal(size=(20, 32))
    stats = metrics.feature_statistics(features)
    assert abs(metrics.frechet_distance(*stats, *stats)) < 1e-4


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 600, 64))
    same, same_std = metrics.kid(x, y, n_subsets=50, subset_size=200)
    shifted, shifted_std = metrics.kid(x, y + 0.5, n_subsets=50, subset_size=200)
    assert abs(same) < 0.02
    assert shifted > 0.2 and shifted > 10 * shifted_std
    assert shifted > 10 * abs(same)
    self_kid, _ = metrics.kid(x, x, n_subsets=50, subset_size=200)
    assert abs(self_kid) < 0.05 * shifted


def test_kid_is_unbiased_at_small_n_where_fid_is_not():
    # 40 pairs of independent 12-sample sets from one distribution: KID averages to 0, FID stays well above 0
    rng = np.random.default_rng(5)
    kids, fids = [], []
    for _ in range(40):
        x, y = rng.normal(size=(2, 12, 16))
        kids.append(metrics.kid(x, y, n_subsets=1, subset_size=12)[0])
        fids.append(metrics.frechet_distance(*metrics.feature_statistics(x), *metrics.feature_statistics(y)))
    assert abs(np.mean(kids)) < 3 * np.std(kids) / np.sqrt(len(kids))
    assert np.mean(fids) > 10 * np.std(fids) / np.sqrt(len(fids))


def test_kid_is_reproducible_and_caps_subset_size():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 1.0
    first = metrics.kid(x, y, n_subsets=5, subset_size=1000, seed=7)
    assert first == metrics.kid(x, y, n_subsets=5, subset_size=1000, seed=7)
    assert first[0] > 0


# --- Sliced Wasserstein distance ----------------------------------------------

def test_pyramid_helpers_match_opencv():
    images = smooth_images(3, seed=5).astype(np.float32)
    down = metrics._pyr_down(images)
    np.testing.assert_allclose(down, np.stack([cv2.pyrDown(x) for x in images]), atol=1e-3)
    np.testing.assert_allclose(metrics._pyr_up(down), np.stack([cv2.pyrUp(x) for x in down]), atol=1e-3)


def test_swd_same_distribution_much_lower_than_noise():
    images = smooth_images(240, seed=6)
    half_a, half_b = images[:120], images[120:]
    same = metrics.sliced_wasserstein(half_a, half_b, seed=0)
    noise = metrics.sliced_wasserstein(half_a, uniform_noise(120, seed=7), seed=0)
    assert set(same) == {"swd_64", "swd_32", "swd_16", "swd_avg"}
    # Few images per set make the coarsest level noisy; the finer levels and the average separate well.
    for key in same:
        assert same[key] < 0.4 * noise[key], key
    assert same["swd_avg"] < 0.25 * noise["swd_avg"]
    assert same["swd_avg"] == pytest.approx(np.mean([same["swd_64"], same["swd_32"], same["swd_16"]]))


def test_swd_of_a_set_with_itself_is_zero_and_seeded():
    images = smooth_images(40, seed=8)
    assert metrics.sliced_wasserstein(images, images)["swd_avg"] == pytest.approx(0.0, abs=1e-9)
    other = smooth_images(30, seed=9)  # different sizes: larger set is subsampled
    assert metrics.sliced_wasserstein(images, other, seed=3) == metrics.sliced_wasserstein(images, other, seed=3)


# --- MS-SSIM ------------------------------------------------------------------

def test_ms_ssim_identity_noise_and_weights():
    images = smooth_images(4, seed=10)
    np.testing.assert_allclose(metrics.ms_ssim(images, images), 1.0, atol=1e-5)
    assert np.all(metrics.ms_ssim(images, uniform_noise(4, seed=11)) < 0.2)
    weights = metrics._ms_ssim_weights(64)
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)


def test_ms_ssim_diversity():
    identical = np.repeat(smooth_images(1, seed=12), 10, axis=0)
    assert metrics.ms_ssim_diversity(identical, n_pairs=20) == pytest.approx(1.0, abs=1e-5)
    varied = metrics.ms_ssim_diversity(uniform_noise(10, seed=13), n_pairs=20)
    assert isinstance(varied, float) and varied < 0.1
    assert varied == metrics.ms_ssim_diversity(uniform_noise(10, seed=13), n_pairs=20)


# --- Face detection -------------------------------------------------------------

def test_face_detection_rate_is_zero_on_noise():
    assert metrics.face_detection_rate(uniform_noise(100, seed=14)) <= 0.02


def test_face_detection_rate_is_high_on_real_celeba_crops():
    assert metrics.face_detection_rate(celeba_crops(200)) > 0.8


# --- Colour ---------------------------------------------------------------------

def test_colour_stats_are_per_channel_mean_and_std():
    red = np.zeros((2, 8, 8, 3), np.uint8)
    red[..., 0] = 200
    stats = metrics.colour_stats(red)
    assert stats["mean"] == pytest.approx([200, 0, 0]) and stats["std"] == pytest.approx([0, 0, 0])


# --- Inception loading (on a stand-in graph) -------------------------------------

STAND_IN_DIMS = 16


def stand_in_graph_def():
    """A tiny GraphDef with Inception's tensor names: Cast -> ExpandDims -> ... -> pool_3.

    Like the real classify_image_graph_def.pb it has an op upstream of
    ExpandDims (here a placeholder that is never fed), a ResizeBilinear, and a
    batch-1 reshape after pool_3 that must not run.
    """
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf.compat.v1.placeholder(tf.float32, [None, None, 3], name="Cast")
        x = tf.expand_dims(decoded, 0, name="ExpandDims")
        x = tf.raw_ops.ResizeBilinear(images=x, size=[24, 24], name="ResizeBilinear")
        x = (x - 128.0) / 128.0
        kernel = np.random.default_rng(0).normal(size=(3, 3, 3, STAND_IN_DIMS)).astype(np.float32)
        x = tf.nn.relu(tf.nn.conv2d(x, tf.constant(kernel), 1, "SAME"))
        pool = tf.nn.avg_pool2d(x, 24, 1, "VALID", name="pool_3")
        tf.reshape(pool, [1, STAND_IN_DIMS], name="pool_3/_reshape")
    return graph


@pytest.fixture
def stand_in_pb(tmp_path):
    path = tmp_path / metrics.INCEPTION_PB
    path.write_bytes(stand_in_graph_def().as_graph_def().SerializeToString())
    return path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(metrics.urllib.request, "urlopen", refuse)


def test_load_inception_from_path_gives_batched_pool3_features(stand_in_pb):
    graph = metrics.load_inception(str(stand_in_pb))
    images = uniform_noise(7, seed=16)
    features = metrics.inception_features(images, graph, batch_size=3)
    assert features.shape == (7, STAND_IN_DIMS)
    # Same numbers as feeding one image at a time to the original graph (TF1 session).
    with tf.compat.v1.Session(graph=stand_in_graph_def()) as session:
        reference = np.stack([session.run("pool_3:0", {"Cast:0": x.astype(np.float32)}).ravel()
                              for x in images])
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5)


def test_fid_kid_with_stand_in_graph(stand_in_pb):
    graph = metrics.load_inception(str(stand_in_pb))
    images = smooth_images(40, seed=17)
    features = metrics.inception_features(images, graph)
    same = metrics.fid_kid_from_features(features, features, kid_subsets=10, kid_subset_size=20)
    assert set(same) == {"fid", "kid", "kid_std"}
    assert abs(same["fid"]) < 1e-3
    different = metrics.fid_kid_from_features(features, metrics.inception_features(uniform_noise(40, seed=18), graph),
                                              kid_subsets=10, kid_subset_size=20)
    assert different["fid"] > 1.0 and different["kid"] > 0


def test_load_inception_without_network_or_cache_raises_helpful_error(tmp_path, no_network):
    with pytest.raises(metrics.InceptionUnavailable) as info:
        metrics.load_inception(cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "FID/KID were skipped" in message
    assert "--inception" in message and metrics.INCEPTION_PB in message
    assert not (tmp_path / "cache" / metrics.INCEPTION_PB).exists()


def test_load_inception_missing_path_raises(tmp_path):
    with pytest.raises(metrics.InceptionUnavailable, match="does not exist"):
        metrics.load_inception(str(tmp_path / "missing.pb"))


def test_load_inception_rejects_a_graph_without_the_inception_tensors(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        tf.identity(tf.compat.v1.placeholder(tf.float32, [None, None, None, 3]), name="ExpandDims")
    path = tmp_path / "other.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(metrics.InceptionUnavailable, match="pool_3"):
        metrics.load_inception(str(path))


def _stand_in_tgz(tmp_path, stand_in_pb):
    archive = tmp_path / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stand_in_pb, arcname=metrics.INCEPTION_PB)
        tar.addfile(tarfile.TarInfo("LICENSE"), io.BytesIO(b""))
    return archive


def test_load_inception_downloads_once_then_uses_cache(tmp_path, stand_in_pb, monkeypatch):
    archive = _stand_in_tgz(tmp_path, stand_in_pb)
    monkeypatch.setattr(metrics, "INCEPTION_URL", archive.as_uri())  # file:// "download"
    cache = tmp_path / "cache"
    metrics.load_inception(cache_dir=str(cache))
    assert (cache / metrics.INCEPTION_PB).read_bytes() == stand_in_pb.read_bytes()
    assert [p.name for p in cache.iterdir()] == [metrics.INCEPTION_PB]  # no temporary files left
    monkeypatch.setattr(metrics.urllib.request, "urlopen", None)  # a second download would fail
    graph = metrics.load_inception(cache_dir=str(cache))
    assert metrics.inception_features(uniform_noise(2, seed=19), graph).shape == (2, STAND_IN_DIMS)


def test_a_cut_off_cached_graph_is_downloaded_again(tmp_path, stand_in_pb, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "INCEPTION_URL", _stand_in_tgz(tmp_path, stand_in_pb).as_uri())
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / metrics.INCEPTION_PB).write_bytes(stand_in_pb.read_bytes()[:1000])
    graph = metrics.load_inception(cache_dir=str(cache))
    assert "ignoring the damaged" in capsys.readouterr().out
    assert (cache / metrics.INCEPTION_PB).read_bytes() == stand_in_pb.read_bytes()
    assert graph.checksum == "sha1:" + hashlib.sha1(stand_in_pb.read_bytes()).hexdigest()  # what caches key on


def test_patch_normalisation_stays_exact_on_large_sets():
    # 256,000 patches of values near 200: a float32 sum drifts (it gave a mean of 228.6), which broke SWD at
    # n = 10,000 images; the descriptors must come out with mean 0 and std 1 per channel.
    level = (200 + np.random.default_rng(0).standard_normal((2000, 16, 16, 3))).astype(np.float32)
    desc = metrics._patch_descriptors(level, 128, 7, np.random.default_rng(1)).reshape(-1, 3, 49)
    np.testing.assert_allclose(desc.mean(axis=(0, 2), dtype=np.float64), 0, atol=1e-3)
    np.testing.assert_allclose(desc.std(axis=(0, 2), dtype=np.float64), 1, atol=1e-3)
