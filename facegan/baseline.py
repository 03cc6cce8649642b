"""The random-image benchmark every GAN must beat: images of independent random pixels."""
import numpy as np

CHUNK_BYTES = 64 << 20  # the most pixel bytes drawn at once (float32 for the gaussian kind)


def random_image_chunks(n, size=64, kind="uniform", reference=None, seed=0):
    """make_random_images(n, ...) in blocks of at most CHUNK_BYTES, for n too large to hold at once: the same
    images (numpy's generator draws the same numbers in pieces as at once)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        if reference is None:
            raise ValueError("the gaussian baseline needs reference images for its mean and std")
        pixels = np.asarray(reference[:5000], np.float32).reshape(-1, 3)
        mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    elif kind != "uniform":
        raise ValueError(f"unknown kind {kind!r}: use 'uniform' or 'gaussian'")
    chunk = max(1, CHUNK_BYTES // (size * size * 3 * 4))
    for start in range(0, n, chunk):
        shape = (min(chunk, n - start), size, size, 3)
        if kind == "uniform":
            yield rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            noise = rng.standard_normal(shape, dtype=np.float32) * std + mean
            yield np.clip(np.rint(noise), 0, 255).astype(np.uint8)


def make_random_images(n, size=64, kind="uniform", reference=None, seed=0):
    """n uint8 images of independent pixels: uniform on 0..255, or Gaussian with the per-channel mean and
    std of `reference` (uint8 images), clipped to 0..255."""
    chunks = list(random_image_chunks(n, size, kind, reference, seed))
    return np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)
