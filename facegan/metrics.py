"""Sample-quality metrics for 64x64 face GANs.

Every function takes images as uint8 numpy arrays of shape (N, H, W, 3), RGB,
and every function that draws random numbers takes a `seed`, so that repeated
calls give identical results.

  sliced_wasserstein   SWD on Laplacian-pyramid patches (Karras et al. 2018, ProGAN).
  ms_ssim              multi-scale SSIM of image pairs (Wang et al. 2003).
  ms_ssim_diversity    mean MS-SSIM of random pairs within one set (Odena et al. 2017).
  frechet_distance     FID from feature statistics (Heusel et al. 2017, TTUR).
  kid                  kernel inception distance (Binkowski et al. 2018).
  load_inception       the 2015 Inception graph used by TTUR / pytorch-fid (downloaded);
                       inception.load_fid_inception is its Keras port (no download).
  inception_features   2048-d pool_3 features of that graph.
  fid_kid_from_features  FID and KID from two sets of those features.
  face_detection_rate  fraction of images where OpenCV's Haar cascade finds a face.
  colour_stats         per-channel mean and std.
"""
import functools
import hashlib
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.request

import cv2
import numpy as np
import scipy.ndimage
import tensorflow as tf


def _check_images(images, name="images"):
    """Raise ValueError unless `images` is a uint8 array of shape (N, H, W, 3)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{name} must be uint8 of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    return images


# ---------------------------------------------------------------------------
# Sliced Wasserstein distance (ProGAN, metrics/sliced_wasserstein.py)
# ---------------------------------------------------------------------------

# 5-tap binomial kernel; the 2-D kernel is its outer product (same as cv2.pyrDown).
_GAUSS_5 = np.float32([1, 4, 6, 4, 1]) / 16.0


def _blur(x, kernel):
    """Separable 5x5 blur over the H and W axes of (N, H, W, C), mirrored borders."""
    x = scipy.ndimage.convolve1d(x, kernel, axis=1, mode="mirror")
    return scipy.ndimage.convolve1d(x, kernel, axis=2, mode="mirror")


def _pyr_down(x):
    """Gaussian blur then drop every other row and column (cv2.pyrDown)."""
    return _blur(x, _GAUSS_5)[:, ::2, ::2]


def _pyr_up(x):
    """Insert zeros between pixels then blur with 4x the kernel (cv2.pyrUp)."""
    n, h, w, c = x.shape
    up = np.zeros((n, 2 * h, 2 * w, c), dtype=x.dtype)
    up[:, ::2, ::2] = x
    return _blur(up, 2.0 * _GAUSS_5)


def _patch_descriptors(level, patches_per_image, patch_size, rng):
    """Random patch_size^2 x 3 patches of every image, normalised over the set.

    As ProGAN's `get_descriptors_for_minibatch` + `finalize_descriptors`:
    subtract the per-channel mean and divide by the per-channel std over all
    patches of the set. Returns float32 (N * patches_per_image, 3 * patch_size^2).
    """
    n, h, w, _ = level.shape
    r = patch_size // 2
    count = n * patches_per_image
    image = np.repeat(np.arange(n), patches_per_image)
    y = rng.integers(0, h - 2 * r, size=count)  # top-left corners; ProGAN draws centres
    x = rng.integers(0, w - 2 * r, size=count)
    windows = np.lib.stride_tricks.sliding_window_view(level, (patch_size, patch_size), axis=(1, 2))
    desc = windows[image, y, x]  # (count, 3, k, k), a copy
    # float64 statistics: a float32 sum over millions of 0-255 values (n=10,000 images) loses its precision
    desc -= desc.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
    desc /= desc.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64).astype(np.float32) + 1e-8
    return desc.reshape(count, -1)


def _sliced_wasserstein_1d(a, b, rng, dirs_per_repeat, dir_repeats):
    """Mean 1-D Wasserstein-1 distance of `a` and `b` along random unit directions."""
    results = []
    for _ in range(dir_repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        # Projections as contiguous (direction, descriptor) rows: fastest to sort.
        proj_a = dirs.T @ a.T
        proj_b = dirs.T @ b.T
        proj_a.sort(axis=1)
        proj_b.sort(axis=1)
        results.append(np.mean(np.abs(proj_a - proj_b)))  # sorted = matched quantiles
    return float(np.mean(results))


def sliced_wasserstein(real, fake, seed=0, patches_per_image=128, patch_size=7,
                       dirs_per_repeat=128, dir_repeats=4, min_resolution=16):
    """Sliced Wasserstein distance between two image sets, x1e3 per pyramid level.

    Follows ProGAN's metric: a Laplacian pyramid of each set (64, 32 and 16 px
    for 64 px input; the coarsest level is the Gaussian low-pass), 128 random
    7x7x3 patches per image and level, per-set normalisation of the patches,
    then the 1-D Wasserstein distance along random directions, averaged over
    `dir_repeats` x `dirs_per_repeat` directions. The defaults are ProGAN's
    code (4 repeats x 128 = 512 directions in all); dirs_per_repeat=512 gives
    4 x 512 at 4x the cost (sorting dominates) with the same expected value.
    The two sets draw patches at the same positions (same seed), so
    SWD(x, x) == 0. If the sets differ in size, the larger set's patches are
    subsampled to the smaller count.

    Returns {"swd_64": .., "swd_32": .., "swd_16": .., "swd_avg": ..}.
    Lower is better; real-vs-real is the floor to compare against.
    """
    real = _check_images(real, "real")
    fake = _check_images(fake, "fake")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"image shapes differ: {real.shape[1:]} vs {fake.shape[1:]}")
    resolutions = []
    res = real.shape[1]
    while res >= min_resolution:
        resolutions.append(res)
        res //= 2
    dirs_rng = np.random.default_rng([seed, 1])
    count = min(len(real), len(fake)) * patches_per_image

    result = {}
    gauss = [real.astype(np.float32), fake.astype(np.float32)]  # current Gaussian level
    for i, res in enumerate(resolutions):
        if i + 1 < len(resolutions):
            lower = [_pyr_down(g) for g in gauss]
            levels = [g - _pyr_up(lo) for g, lo in zip(gauss, lower)]  # band-pass
        else:
            lower, levels = None, gauss  # coarsest level: low-pass residual
        descs = []
        for level in levels:
            patch_rng = np.random.default_rng([seed, 2, i])  # same positions for both sets
            desc = _patch_descriptors(level, patches_per_image, patch_size, patch_rng)
            if len(desc) > count:
                keep = np.random.default_rng([seed, 3, i]).choice(len(desc), count, replace=False)
                desc = desc[keep]
            descs.append(desc)
        swd = _sliced_wasserstein_1d(*descs, dirs_rng, dirs_per_repeat, dir_repeats)
        result[f"swd_{res}"] = swd * 1e3
        del descs, levels
        gauss = lower
    result["swd_avg"] = float(np.mean(list(result.values())))
    return result


# ---------------------------------------------------------------------------
# MS-SSIM
# ---------------------------------------------------------------------------

# Wang, Simoncelli & Bovik 2003, weights of scales 1 (finest) to 5.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _ms_ssim_weights(size, filter_size=11):
    """Weights for as many scales as fit (each scale >= filter size), renormalised."""
    n_scales = 0
    while n_scales < len(MS_SSIM_WEIGHTS) and size // 2**n_scales >= filter_size:
        n_scales += 1
    weights = np.asarray(MS_SSIM_WEIGHTS[:n_scales])
    return tuple(weights / weights.sum())


def ms_ssim(a, b, batch_size=256):
    """Multi-scale SSIM of each pair (a[i], b[i]), as a float64 array of shape (N,).

    Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03 (tf.image.ssim_multiscale).
    At 64 px three scales fit (64, 32, 16), weighted by Wang et al.'s first
    three weights renormalised to sum to 1. 1 means identical images.
    """
    a = _check_images(a, "a")
    b = _check_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    weights = _ms_ssim_weights(min(a.shape[1:3]))
    scores = []
    for start in range(0, len(a), batch_size):
        x = tf.constant(a[start:start + batch_size], tf.float32)
        y = tf.constant(b[start:start + batch_size], tf.float32)
        score = tf.image.ssim_multiscale(x, y, max_val=255.0, power_factors=weights,
                                         filter_size=11, filter_sigma=1.5)
        scores.append(score.numpy())
    return np.concatenate(scores).astype(np.float64)


def ms_ssim_diversity(images, n_pairs=1000, seed=0):
    """Mean MS-SSIM over `n_pairs` random pairs of distinct images of one set (a float).

    Lower means a more diverse set; a collapsed generator tends to 1. The
    sample count is `n_pairs` (pairs i != j drawn uniformly, with replacement);
    use `ms_ssim` on your own pairs for the per-pair spread.
    """
    images = _check_images(images)
    n = len(images)
    if n < 2:
        raise ValueError("need at least 2 images")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # uniform over j != i
    return float(ms_ssim(images[i], images[j]).mean())


# ---------------------------------------------------------------------------
# FID and KID from features
# ---------------------------------------------------------------------------

def feature_statistics(features):
    """Mean and covariance (float64) of features of shape (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), as TTUR / pytorch-fid define it.
    Tr sqrt(sigma1 sigma2) is the sum of the square roots of the eigenvalues of
    sigma1^1/2 sigma2 sigma1^1/2 (same spectrum, symmetric), from two symmetric eigen-decompositions:
    several times faster than scipy's sqrtm on 2048 x 2048, and exact for the rank-deficient
    covariances of fewer images than dimensions, where sqrtm warns (round-off eigenvalues below 0 are 0).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("mean vectors and covariances must have matching shapes")
    diff = mu1 - mu2
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    root1 = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ sigma2 @ root1), 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def _polynomial_kernel(x, y):
    """k(x, y) = (x . y / d + 1)^3, the KID kernel."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(k_xx, k_yy, k_xy):
    """Unbiased MMD^2 estimate from the three m x m kernel matrices."""
    m = len(k_xx)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return (sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m)


def kid(feats1, feats2, n_subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over random subsets.

    Each subset draws subset_size features of each set without replacement
    (capped at the smaller set size). Returns (mean, std) over the subsets.
    The estimate is unbiased, so it can be slightly negative for equal
    distributions. Compare disjoint samples: KID(x, x) is a little below 0
    because the subsets of x and of x then share points.
    """
    x = np.asarray(feats1, dtype=np.float64)
    y = np.asarray(feats2, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("need at least 2 features per set")
    rng = np.random.default_rng(seed)
    # For moderate set sizes compute each Gram matrix once and index into it.
    precompute = max(len(x), len(y)) <= 5000
    if precompute:
        k_xx_all, k_yy_all = _polynomial_kernel(x, x), _polynomial_kernel(y, y)
        k_xy_all = _polynomial_kernel(x, y)
    values = []
    for _ in range(n_subsets):
        ix = rng.choice(len(x), m, replace=False)
        iy = rng.choice(len(y), m, replace=False)
        if precompute:
            k_xx, k_yy = k_xx_all[np.ix_(ix, ix)], k_yy_all[np.ix_(iy, iy)]
            k_xy = k_xy_all[np.ix_(ix, iy)]
        else:
            a, b = x[ix], y[iy]
            k_xx, k_yy, k_xy = _polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b)
        values.append(_mmd2_unbiased(k_xx, k_yy, k_xy))
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------------
# Inception graph (TTUR's classify_image_graph_def.pb)
# ---------------------------------------------------------------------------

INCEPTION_URL = "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
INCEPTION_PB = "classify_image_graph_def.pb"
# No hash of inception-2015-12-05.tgz is published, so the download is not checksummed; where the Keras port's
# checksummed weights (inception.py) are also present, evaluate.py reports how far the two networks' features
# differ.
INCEPTION_INPUT = "ExpandDims:0"  # float 0-255 images (N, H, W, 3), as TTUR feeds
INCEPTION_OUTPUT = "pool_3:0"     # (N, 1, 1, 2048)
DEFAULT_CACHE_DIR = "~/.cache/facegan"


class InceptionUnavailable(RuntimeError):
    """The Inception graph could not be loaded, so FID/KID cannot be computed."""


def _unavailable(reason, cache_dir=DEFAULT_CACHE_DIR):
    return InceptionUnavailable(
        f"Inception graph unavailable ({reason}); FID/KID were skipped. To get them, "
        f"download {INCEPTION_URL}, extract {INCEPTION_PB} and pass "
        f"--inception /path/to/{INCEPTION_PB}, or run once with internet access "
        f"so that it is cached in {cache_dir}."
    )


def _download_inception(cache_dir, timeout=15):
    """Download INCEPTION_URL, check it, extract the .pb into cache_dir."""
    url = INCEPTION_URL
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {url} ...")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        archive = pathlib.Path(tmp) / "inception.tgz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as err:  # URLError, timeouts, refused connections
            raise _unavailable(f"download of {url} failed: {err}", cache_dir) from err
        try:
            with tarfile.open(archive, "r:gz") as tar:
                member = tar.extractfile(INCEPTION_PB)  # KeyError if absent
                if member is None:
                    raise KeyError(f"{INCEPTION_PB} is not a regular file")
                partial = pathlib.Path(tmp) / INCEPTION_PB
                with open(partial, "wb") as f:
                    shutil.copyfileobj(member, f)
        except (tarfile.TarError, KeyError, OSError) as err:
            raise _unavailable(f"bad archive from {url}: {err}", cache_dir) from err
        os.replace(partial, cache_dir / INCEPTION_PB)  # atomic: no half-written cache
    return cache_dir / INCEPTION_PB


def _graph_function(pb_path):
    """Import a GraphDef into a TF2 function: float images (N,H,W,3) -> pool_3."""
    graph_def = tf.compat.v1.GraphDef()
    pb_bytes = pathlib.Path(pb_path).read_bytes()
    try:
        graph_def.ParseFromString(pb_bytes)
    except Exception as err:  # protobuf DecodeError
        raise _unavailable(f"cannot parse {pb_path}: {err}") from err

    def import_graph(images):
        (pool3,) = tf.graph_util.import_graph_def(
            graph_def, input_map={INCEPTION_INPUT: images},
            return_elements=[INCEPTION_OUTPUT], name="inception")
        return pool3

    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    try:
        wrapped = tf.compat.v1.wrap_function(import_graph, [spec])
    except (ValueError, KeyError) as err:
        raise _unavailable(f"{pb_path} lacks {INCEPTION_INPUT} / {INCEPTION_OUTPUT}: {err}") from err
    # Keep only the ops between the input and pool_3 (drops the JPEG decoder etc.).
    pruned = wrapped.prune(wrapped.inputs[0], wrapped.outputs[0])
    pruned.checksum = "sha1:" + hashlib.sha1(pb_bytes).hexdigest()  # what cached scores are keyed on
    return pruned


def load_inception(path=None, cache_dir=DEFAULT_CACHE_DIR, timeout=15):
    """Load the 2015 Inception graph (TTUR's) as a callable for inception_features.

    `path`: a classify_image_graph_def.pb to use. Otherwise the copy in
    `cache_dir` is used, or the inception-2015-12-05.tgz archive is downloaded
    once into it. Raises InceptionUnavailable (with instructions) when the
    graph cannot be found, downloaded or parsed.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise _unavailable(f"--inception {path} does not exist", cache_dir)
        return _graph_function(path)
    cached = pathlib.Path(cache_dir).expanduser() / INCEPTION_PB
    if cached.is_file():
        try:
            return _graph_function(cached)
        except InceptionUnavailable as error:  # e.g. cut off: download it again
            print(f"note: ignoring the damaged {cached} ({str(error).split('; ')[0]}); downloading it again")
            cached.unlink()
    _download_inception(cached.parent, timeout=timeout)
    return _graph_function(cached)


def inception_features(images, graph, batch_size=50):
    """pool_3 features (float64, (N, 2048)) of uint8 images, as TTUR computes them.

    The images are fed as 0-255 floats to the graph's ExpandDims:0 input; the
    graph itself resizes them bilinearly to 299x299 (its ResizeBilinear node)
    and scales them to [-1, 1], exactly as in TTUR's fid.py. `graph` may also be
    inception.load_fid_inception()'s Keras port, which does the same.
    """
    images = _check_images(images)
    features = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start:start + batch_size], tf.float32)
        features.append(np.asarray(graph(batch)).reshape(len(batch), -1))
    return np.concatenate(features).astype(np.float64)


def fid_kid_from_features(real_features, fake_features, kid_subsets=100,
                          kid_subset_size=1000, seed=0):
    """{"fid", "kid", "kid_std"} from two feature arrays of shape (N, D)."""
    fid = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
    kid_mean, kid_std = kid(real_features, fake_features, kid_subsets, kid_subset_size, seed)
    return {"fid": fid, "kid": kid_mean, "kid_std": kid_std}


# ---------------------------------------------------------------------------
# Face detection (OpenCV Haar cascade)
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _face_cascade():
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load {path}")
    return cascade


def detect_faces(images, upscale=128, scale_factor=1.1, min_neighbors=8, min_size=0.3):
    """Boolean array: does OpenCV's frontal-face Haar cascade find a face in each image?

    Each image is resized to `upscale` px (the cascade's 24 px window needs
    room), converted to grey, and searched for faces at least
    `min_size` x upscale px wide.
    """
    images = _check_images(images)
    cascade = _face_cascade()
    min_px = int(min_size * upscale)
    found = np.zeros(len(images), dtype=bool)
    for k, image in enumerate(images):
        big = cv2.resize(image, (upscale, upscale), interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(big, cv2.COLOR_RGB2GRAY)
        faces = cascade.detectMultiScale(grey, scaleFactor=scale_factor,
                                         minNeighbors=min_neighbors, minSize=(min_px, min_px))
        found[k] = len(faces) > 0
    return found


def face_detection_rate(images, upscale=128, **kwargs):
    """Fraction of images in which at least one face is detected (see detect_faces)."""
    return float(detect_faces(images, upscale=upscale, **kwargs).mean())


# ---------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------

def colour_stats(images):
    """Per-channel (R, G, B) mean and std over all pixels, in 0-255 units."""
    pixels = _check_images(images).reshape(-1, 3).astype(np.float64)
    return {"mean": pixels.mean(axis=0).tolist(), "std": pixels.std(axis=0).tolist()}
