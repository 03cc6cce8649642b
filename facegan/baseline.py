"""The random-image benchmark every GAN must beat: images of independent random pixels."""
import numpy as np


def make_random_images(n, size=64, kind="uniform", reference=None, seed=0):
    """n uint8 images of independent pixels: uniform on 0..255, or Gaussian with the per-channel mean and
    std of `reference` (uint8 images), clipped to 0..255."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    if kind == "gaussian":
        if reference is None:
            raise ValueError("the gaussian baseline needs reference images for its mean and std")
        pixels = np.asarray(reference[:5000], np.float32).reshape(-1, 3)
        mean, std = pixels.mean(axis=0), pixels.std(axis=0)
        noise = rng.standard_normal((n, size, size, 3), dtype=np.float32) * std + mean
        return np.clip(np.rint(noise), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown kind {kind!r}: use 'uniform' or 'gaussian'")
