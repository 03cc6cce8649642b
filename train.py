"""Train the DCGAN (Radford, Metz & Chintala 2015) on 64x64 faces.

    python train.py                                   # CelebA if prepared (data/celeba64_train.npy), else a demo
    python train.py --epochs 10 --batch-size 128
    python train.py --resume outputs/<run>            # continue a run where its last checkpoint left it
    python train.py --dry-run                         # one step of everything, to check a setup

Each step: one discriminator update on a real batch (label 1) and a fake batch (label 0) in separate
batch-norm passes, then one generator update with the non-saturating loss -log D(G(z)).
Everything a run makes lands in outputs/<run>/ (see README.md). Ctrl-C or SIGTERM saves a checkpoint
and exits; --resume continues exactly where it stopped.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import zipfile

import numpy as np

import data_io

DEFAULT_DATA = os.path.join("data", "celeba64_train.npy")
DEMO_SIZE = 8000
# The demo must show faces within ~10 minutes on 2 CPU cores: the same DCGAN at half width (4x fewer FLOPs)
# and batch 64 makes ~8x more updates per minute than the paper's width 64 / batch 128.
DEMO_DEFAULTS = {"epochs": 7, "batch_size": 64, "g_width": 32, "d_width": 32}
PAPER_DEFAULTS = {"epochs": 25, "batch_size": 128, "g_width": 64, "d_width": 64}
# Training recipes. "dcgan" is the 2015 paper, unchanged; "best" adds what measured best in the ablation
# of README.md (10 epochs over 7,500 CelebA faces). A flag given on the command line overrides its preset.
PRESETS = {
    "dcgan": {"ema": 0.0, "diffaug": "", "loss": "bce", "r1": 0.0, "spectral_norm": False, "minibatch_std": False,
              "minibatch_std_group": 4, "label_smoothing": 0.0, "mode_seeking": 0.0, "g_lr": None, "d_lr": None},
    # EMA, translation-only DiffAugment, G's learning rate doubled, one-sided label smoothing and a mode-seeking
    # term: average SWD 26.2 / 24.8 against the paper's 86.4 / 75.6 (seeds 0 / 1), MS-SSIM diversity 0.253 / 0.272
    # (real pairs 0.247); without mode seeking 31.4 / 28.7 and 0.397 / 0.358 (README.md, "Better faces").
    "best": {"ema": 0.999, "diffaug": "translation", "loss": "bce", "r1": 0.0, "spectral_norm": False,
             "minibatch_std": False, "minibatch_std_group": 4, "label_smoothing": 0.1, "mode_seeking": 3.0,
             "g_lr": 4e-4, "d_lr": None},
}
RECIPE_KEYS = tuple(PRESETS["dcgan"])  # the settings a preset fills and a resumed run must keep
DIFFAUG_OPS = ("color", "translation", "cutout")
EXIT_INTERRUPTED, EXIT_DIVERGED = 130, 3
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")


class Diverged(Exception):
    """Training produced NaN/inf losses or a collapsed discriminator."""

    def __init__(self, message, run_dir):
        super().__init__(message)
        self.run_dir = run_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help=f"training images, uint8 (N, S, S, 3) .npy from preprocess.py (default {DEFAULT_DATA}; "
                        "when it does not exist, the embedded demo faces are used)")
    p.add_argument("--holdout", default=None,
                   help="held-out images for evaluate.py (default: the _holdout.npy beside --data)")
    p.add_argument("--demo", action="store_true", help="train on the embedded procedurally drawn demo faces")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training set (default 25; 7 on the demo)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 128, the paper; 64 on "
                                                               "the demo)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate for both networks (the paper: 2e-4)")
    p.add_argument("--preset", default="dcgan", choices=sorted(PRESETS),
                   help="dcgan: the 2015 paper, unchanged (default); best: the paper plus what measured best in "
                        "README.md's ablation (--ema 0.999 --diffaug translation --g-lr 4e-4 --label-smoothing "
                        "0.1 --mode-seeking 3). The flags below override the preset one by one")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of G's weights with this decay (e.g. 0.999; 0 = off). "
                        "generator.keras and the grids then use the averaged G; the trained G is saved as "
                        "generator_raw.keras")
    p.add_argument("--diffaug", default=None, metavar="OPS",
                   help="DiffAugment (Zhao et al. 2020): comma-separated subset of color,translation,cutout, "
                        "applied to real and fake images before D in both updates ('' = off)")
    p.add_argument("--loss", default=None, choices=("bce", "hinge"),
                   help="bce: the paper's cross-entropy with the non-saturating G loss; hinge: hinge loss "
                        "(Lim & Ye 2017; Miyato et al. 2018)")
    p.add_argument("--r1", type=float, default=None, metavar="GAMMA",
                   help="R1 gradient penalty on reals, gamma/2 * E|grad D(x)|^2 (Mescheder et al. 2018; 0 = off)")
    p.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="spectral normalisation of D's convolutions, with D's batch norm removed (Miyato et al. "
                        "2018)")
    p.add_argument("--minibatch-std", action=argparse.BooleanOptionalAction, default=None,
                   help="give D the batch's feature standard deviation as an extra feature map before its logit, "
                        "so that too-similar fakes are easy to tell apart (Karras et al. 2018)")
    p.add_argument("--minibatch-std-group", type=int, default=None, metavar="N",
                   help="--minibatch-std over groups of N images, each image getting its group's number (default "
                        "4, as in StyleGAN; 0 = one number for the whole batch)")
    p.add_argument("--label-smoothing", type=float, default=None, metavar="EPS",
                   help="one-sided label smoothing: D's target for real images is 1 - EPS instead of 1, fakes "
                        "stay 0 (Salimans et al. 2016; 0 = off; bce loss only)")
    p.add_argument("--mode-seeking", type=float, default=None, metavar="LAMBDA",
                   help="mode-seeking term in G's loss (Mao et al. 2019): LAMBDA / (|G(z1) - G(z2)| / |z1 - z2|) "
                        "over the batch's two halves, so that different noise must give different faces (0 = off)")
    p.add_argument("--g-lr", type=float, default=None, help="G learning rate (default --lr); TTUR sets G and D apart")
    p.add_argument("--d-lr", type=float, default=None, help="D learning rate (default --lr)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta_1 (the paper: 0.5)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta_2")
    p.add_argument("--latent-dim", type=int, default=100, help="size of the noise vector z ~ N(0, I)")
    p.add_argument("--g-width", type=int, default=None, help="generator base channels, ngf (default 64, the "
                                                             "paper; 32 on the demo)")
    p.add_argument("--d-width", type=int, default=None, help="discriminator base channels, ndf (default 64, the "
                                                             "paper; 32 on the demo)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="fp32, or mixed precision: bf16 (CPUs with AVX512_BF16, TPUs, recent GPUs) or fp16 "
                        "with loss scaling (GPUs); the discriminator's logit and the losses stay float32")
    p.add_argument("--strategy", default="none", choices=("none", "mirrored", "multiworker"),
                   help="tf.distribute scale-out: mirrored = every local GPU (or the logical CPUs of "
                        "--logical-cpus); multiworker = several machines, each run with the same command and its "
                        "own TF_CONFIG (see README). The global --batch-size is split across replicas; batch norm "
                        "uses the global batch's statistics")
    p.add_argument("--logical-cpus", type=int, default=0, metavar="N",
                   help="split the CPU into N logical devices, to try --strategy mirrored without GPUs")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, noise and data order")
    p.add_argument("--sample-every", type=int, default=1, help="save a fixed-noise sample grid every N epochs")
    p.add_argument("--n-samples", type=int, default=64, help="faces in each fixed-noise grid (8 per row)")
    p.add_argument("--out", default="outputs", help="folder that holds the run directories")
    p.add_argument("--name", default=None, help="run directory name (default: <time>_<dataset>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint with its saved settings "
                        "(--epochs may be raised)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps (0 = only at the end of each epoch)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="how many checkpoints to keep")
    p.add_argument("--collapse-steps", type=int, default=2000,
                   help="stop when D(x) > 0.99 and D(G(z)) < 0.01 for this many steps in a row (0 = never)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log losses, D outputs, images/s and the sample grid to RUN/tensorboard "
                        "(view with: tensorboard --logdir outputs)")
    p.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (0 = all)")
    p.add_argument("--dry-run", action="store_true",
                   help="one step of everything (data, D and G steps, grid, checkpoint, resume) in a temporary "
                        "folder, then report and delete it")
    args = p.parse_args(argv)
    for name in ("batch_size", "latent_dim", "g_width", "d_width", "sample_every", "n_samples", "keep_checkpoints"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.ema is not None and not 0 <= args.ema < 1:
        p.error("--ema must be in [0, 1)")
    if args.diffaug:
        unknown = set(args.diffaug.split(",")) - set(DIFFAUG_OPS)
        if unknown:
            p.error(f"--diffaug: unknown {', '.join(sorted(unknown))}; choose from {','.join(DIFFAUG_OPS)}")
    if args.label_smoothing is not None and not 0 <= args.label_smoothing < 0.5:
        p.error("--label-smoothing must be in [0, 0.5)")
    if args.label_smoothing and args.loss == "hinge":
        p.error("--label-smoothing applies to the bce loss only")
    if args.r1 is not None and args.r1 < 0:
        p.error("--r1 must be >= 0")
    if args.minibatch_std_group is not None and (args.minibatch_std_group < 0 or args.minibatch_std_group == 1):
        p.error("--minibatch-std-group must be 0 (whole batch) or >= 2")
    if args.mode_seeking is not None and args.mode_seeking < 0:
        p.error("--mode-seeking must be >= 0")
    if args.spectral_norm and args.strategy != "none":
        p.error("--spectral-norm is single-device only (its power-iteration state is not synchronised across "
                "replicas)")
    return args


def load_data(args):
    """(train uint8 array, config updates). Falls back to the demo faces when no dataset is prepared."""
    use_demo = args.demo or (args.data is None and not os.path.exists(DEFAULT_DATA))
    if use_demo:
        import demo_faces
        data_path = os.path.join("data", "demo64_train.npy")
        holdout_path = os.path.join("data", "demo64_holdout.npy")
        if not (os.path.exists(data_path) and os.path.exists(holdout_path)):
            print(f"drawing {DEMO_SIZE:,} demo faces into {data_path} ...")
            data_io.save_npy(data_path, demo_faces.make_demo_faces(DEMO_SIZE, 64, seed=1))
            data_io.save_npy(holdout_path, demo_faces.make_demo_faces(1000, 64, seed=2))
        print("=" * 78)
        print("DEMO MODE: no CelebA prepared, training on procedurally drawn cartoon faces, with the DCGAN at")
        print("half width (32) and batch 64 so that faces appear within minutes on a CPU.")
        print("For real faces: python preprocess.py --source img_align_celeba.zip  (see README.md)")
        print("=" * 78)
    else:
        data_path = args.data or DEFAULT_DATA
        holdout_path = args.holdout or data_path.replace("_train.npy", "_holdout.npy")
    images = load_image_file(data_path)
    return images, {
        "data": os.path.abspath(data_path), "demo": use_demo,
        "holdout": os.path.abspath(holdout_path) if os.path.exists(holdout_path) else None,
        "train_count": int(len(images)), "image_size": int(images.shape[1]),
    }


def load_image_file(path):
    """A preprocess.py array, checked: uint8 (N, S, S, 3) with S in 32/64/128."""
    if not os.path.exists(path):
        raise data_io.DataError(f"no training data at {path}; run preprocess.py first (or use --demo)")
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise data_io.DataError(f"{path} is not a readable .npy array: {error}") from None
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise data_io.DataError(f"{path} holds {images.dtype} {images.shape}; expected uint8 (N, S, S, 3) "
                                "as written by preprocess.py")
    if images.shape[1] not in (32, 64, 128):
        raise data_io.DataError(f"{path} has {images.shape[1]} px images; 32, 64 or 128 are supported")
    return images


def make_dataset(images_tensor, batch_size, seed, epoch, steps, skip_steps=0):
    """Batches `skip_steps`..`steps` of one epoch, in an order fixed by (seed, epoch): a resumed run sees
    exactly the batches an uninterrupted one would. The last partial batch is dropped (one static shape)."""
    import tensorflow as tf
    order = np.random.default_rng([seed, epoch]).permutation(int(images_tensor.shape[0]))
    order = order[skip_steps * batch_size: steps * batch_size]
    return (tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size, drop_remainder=True)
            .map(lambda idx: tf.gather(images_tensor, idx))  # a 1.5 MB copy: no parallelism needed
            .prefetch(2)
            .with_options(data_io.fixed_pipeline_options()))


def diff_augment(x, ops_text, seed):
    """DiffAugment (Zhao et al. 2020) on images in [-1, 1]: random colour (brightness, saturation, contrast),
    translation by up to 1/8 of the size (zero-filled) and cutout of a half-size square, each drawn per
    image. Differentiable, so G learns through it; D never sees an unaugmented image."""
    import keras
    import tensorflow as tf
    from keras import ops
    batch, size = ops.shape(x)[0], x.shape[1]

    def uniform(low, high):
        return ops.cast(keras.random.uniform((batch, 1, 1, 1), low, high, seed=seed), x.dtype)

    if "color" in ops_text:
        x = x + uniform(-0.5, 0.5)
        mean = ops.mean(x, axis=-1, keepdims=True)
        x = (x - mean) * uniform(0.0, 2.0) + mean
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * uniform(0.5, 1.5) + mean
    positions = ops.arange(size)[None, :]
    if "translation" in ops_text:
        shift = size // 8
        offsets = keras.random.randint((2, batch, 1), -shift, shift + 1, seed=seed)
        padded = ops.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        x = tf.gather(padded, positions + shift + offsets[0], axis=1, batch_dims=1)
        x = tf.gather(x, positions + shift + offsets[1], axis=2, batch_dims=1)
    if "cutout" in ops_text:
        centres = keras.random.randint((2, batch, 1), 0, size, seed=seed)
        inside = [ops.abs(positions - centres[i]) < size // 4 for i in range(2)]
        keep = ops.logical_not(ops.logical_and(inside[0][:, :, None], inside[1][:, None, :]))
        x = x * ops.cast(keep, x.dtype)[..., None]
    return x


def build_train_step(generator, discriminator, g_optimizer, d_optimizer, latent_dim, noise_seed, mode="graph",
                     loss="bce", diffaug="", r1=0.0, aug_seed=None, ema_generator=None, ema_decay=0.0,
                     strategy=None, label_smoothing=0.0, mode_seeking=0.0):
    """The GAN step: D update, then G update; returns (d_loss, g_loss, D(x), D(G(z))).
    mode: "graph" (tf.function), "xla" (tf.function with jit_compile) or "eager" (no compilation).
    The defaults are the paper; loss/diffaug/r1/ema_*/label_smoothing/mode_seeking are the options of
    --preset best and the ablation.
    strategy: a tf.distribute strategy; each replica takes its slice of the global batch and of the noise."""
    import keras
    import tensorflow as tf

    def bce(labels, logits):
        # not keras.losses: under tf.distribute those divide by the replica count themselves
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
    # With fp16 the optimizers are LossScaleOptimizers: scale the loss, they unscale the gradients.
    scale = {opt: getattr(opt, "scale_loss", lambda loss: loss) for opt in (g_optimizer, d_optimizer)}

    def augment(images):
        return diff_augment(images, diffaug, aug_seed) if diffaug else images

    def d_loss_fn(real_logits, fake_logits):
        if loss == "hinge":
            return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))
        # one-sided label smoothing: D's target for reals is 1 - label_smoothing, for fakes still 0
        return (bce(tf.fill(tf.shape(real_logits), 1.0 - label_smoothing), real_logits)
                + bce(tf.zeros_like(fake_logits), fake_logits))

    def g_loss_fn(fake_logits):
        if loss == "hinge":
            return -tf.reduce_mean(fake_logits)
        # Non-saturating G loss: maximise log D(G(z)) by labelling fakes as real.
        return bce(tf.ones_like(fake_logits), fake_logits)

    def mode_seeking_ratio(fake, z):
        # MSGAN: pair the batch's first half with its second; the mean image distance per unit of noise
        # distance. G minimises its inverse, so nearby noise may not collapse onto one face. The logged
        # g_loss stays the adversarial loss alone, comparable across runs.
        half = tf.shape(z)[0] // 2
        fake = tf.cast(fake, tf.float32)
        image_gap = tf.reduce_mean(tf.abs(fake[:half] - fake[half:2 * half]))
        return image_gap / tf.reduce_mean(tf.abs(z[:half] - z[half:2 * half]))

    def gan_update(real_uint8, z, replicas=1):
        # Each replica's losses are divided by the replica count: the optimizers sum gradients over
        # replicas, so the update is that of the global batch's mean loss.
        real = tf.cast(real_uint8, generator.compute_dtype) / 127.5 - 1.0
        # One generator forward serves both updates, as in the PyTorch reference: the D step sees it
        # detached, the G step differentiates through it.
        with tf.GradientTape() as g_tape:
            fake = generator(z, training=True)
            with tf.GradientTape() as d_tape:
                real_in = augment(real)
                with tf.GradientTape(watch_accessed_variables=False) as r1_tape:
                    r1_tape.watch(real_in)
                    real_logits = tf.cast(discriminator(real_in, training=True), tf.float32)  # separate BN passes
                    real_logit_sum = tf.reduce_sum(real_logits)  # taken inside the tape, for R1
                fake_logits = tf.cast(discriminator(augment(tf.stop_gradient(fake)), training=True), tf.float32)
                d_loss = d_loss_fn(real_logits, fake_logits)
                if r1:
                    grads = tf.cast(r1_tape.gradient(real_logit_sum, real_in), tf.float32)
                    d_loss += r1 / 2 * tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
                scaled_d_loss = scale[d_optimizer](d_loss / replicas)
            d_grads = d_tape.gradient(scaled_d_loss, discriminator.trainable_weights)
            d_optimizer.apply_gradients(zip(d_grads, discriminator.trainable_weights))
            # G differentiates through the updated D (the combined model of models.build_gan, D's BN in
            # training mode).
            g_loss = g_loss_fn(tf.cast(discriminator(augment(fake), training=True), tf.float32))
            g_objective = g_loss
            if mode_seeking:
                g_objective += mode_seeking / (mode_seeking_ratio(fake, z) + 1e-5)
            scaled_g_loss = scale[g_optimizer](g_objective / replicas)
        g_grads = g_tape.gradient(scaled_g_loss, generator.trainable_weights)
        g_optimizer.apply_gradients(zip(g_grads, generator.trainable_weights))
        return (d_loss / replicas, g_loss / replicas, tf.reduce_mean(tf.sigmoid(real_logits)) / replicas,
                tf.reduce_mean(tf.sigmoid(fake_logits)) / replicas)

    def replica_update(real_uint8, z):
        context = tf.distribute.get_replica_context()
        local = tf.shape(real_uint8)[0] // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * local
        return gan_update(real_uint8[start:start + local], z[start:start + local], context.num_replicas_in_sync)

    def train_step(real_uint8):
        # The noise is drawn for the whole global batch, so a distributed run sees the same z as one device.
        z = keras.random.normal((tf.shape(real_uint8)[0], latent_dim), seed=noise_seed)
        if strategy is None:
            values = gan_update(real_uint8, z)
        else:
            values = [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                      for v in strategy.run(replica_update, args=(real_uint8, z))]
        if ema_generator is not None:
            # warm-up (as in TF's ExponentialMovingAverage with num_updates): early on the average follows G
            # closely instead of dragging the random initial weights along
            t = tf.cast(g_optimizer.iterations, tf.float32)
            decay = tf.minimum(ema_decay, (1.0 + t) / (10.0 + t))
            for average, weight in zip(ema_generator.trainable_weights, generator.trainable_weights):
                average.assign(decay * average + (1.0 - decay) * weight)
        return tuple(values)

    if mode == "eager":
        return train_step
    return tf.function(train_step, jit_compile=(mode == "xla"))


# ----- checkpoints ---------------------------------------------------------------------------------------

def state_variables(generator, discriminator, g_optimizer, d_optimizer, noise_seed, ema_generator=None,
                    aug_seed=None):
    """Every variable a run's future depends on, under stable names."""
    groups = {"g": generator.variables, "d": discriminator.variables,
              "g_opt": g_optimizer.variables, "d_opt": d_optimizer.variables, "noise": [noise_seed.state]}
    if ema_generator is not None:
        groups["g_ema"] = ema_generator.variables
    if aug_seed is not None:
        groups["aug"] = [aug_seed.state]
    return {f"{group}/{i:04d}": v for group, variables in groups.items() for i, v in enumerate(variables)}


def _checkpoint_names(run_dir):
    folder = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.startswith("step_") and f.endswith(".npz"))


def save_checkpoint(run_dir, variables, history, keep):
    """checkpoints/step_<global step>.npz, written atomically; keeps the newest `keep`."""
    arrays = {name: np.asarray(v.numpy()) for name, v in variables.items()}
    arrays["history"] = np.frombuffer(json.dumps(history).encode(), np.uint8)
    path = os.path.join(run_dir, "checkpoints", f"step_{len(history['d_loss']):09d}.npz")
    data_io.save_npz(path, arrays)
    for old in _checkpoint_names(run_dir)[:-keep]:
        os.remove(os.path.join(run_dir, "checkpoints", old))
    return path


def latest_checkpoint(run_dir):
    names = _checkpoint_names(run_dir)
    return os.path.join(run_dir, "checkpoints", names[-1]) if names else None


def load_checkpoint(path, variables):
    """Assign the saved arrays to the variables; returns the saved history."""
    try:
        saved = np.load(path)
        saved["history"]  # a truncated file fails here
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise data_io.DataError(f"cannot read checkpoint {path}: {error}") from None
    with saved:
        missing = sorted(set(variables) - set(saved.files))
        if missing:
            raise data_io.DataError(f"{path} does not match this model ({len(missing)} variables missing)")
        for name, variable in variables.items():
            if tuple(saved[name].shape) != tuple(variable.shape):
                raise data_io.DataError(f"{path} does not match this model: {name} is {saved[name].shape}, "
                                        f"expected {tuple(variable.shape)}")
            variable.assign(saved[name])
        return json.loads(saved["history"].tobytes().decode())


def load_latest_checkpoint(run_dir, variables):
    """(path, history) of the newest readable checkpoint, falling back to older ones; None if there is none."""
    names = _checkpoint_names(run_dir)
    for i, name in enumerate(reversed(names)):
        path = os.path.join(run_dir, "checkpoints", name)
        try:
            return path, load_checkpoint(path, variables)
        except data_io.DataError as error:
            if "does not match" in str(error) or i == len(names) - 1:
                raise
            print(f"warning: {error}; falling back to the previous checkpoint", file=sys.stderr)
    return None


def save_model(path, model):
    data_io.atomic_write(path, model.save, suffix=".keras")


def new_history():
    # per-step values (d_loss, g_loss, d_real = mean D(x), d_fake = mean D(G(z))) and per-epoch means
    history = {key: [] for key in STEP_KEYS}
    history.update(epoch=0, d_losses=[], g_losses=[], d_real_epoch=[], d_fake_epoch=[],
                   epoch_seconds=[], images_per_second=[])
    return history


# ----- the run -------------------------------------------------------------------------------------------

def prepare_run(args, new_run_check=True):
    """(run_dir, config, images) for a new run or a resumed one."""
    if args.resume:
        config_path = os.path.join(args.resume, "config.json")
        if not os.path.exists(config_path):
            raise data_io.DataError(f"{args.resume} is not a run directory (no config.json)")
        with open(config_path) as f:
            config = json.load(f)
        if args.epochs is not None:
            config["epochs"] = args.epochs
        defaults = parse_args([])
        for key in ("latent_dim", "g_width", "d_width", "batch_size", "lr", "beta1", "beta2", "seed", "precision",
                    "preset", *RECIPE_KEYS):
            given = getattr(args, key)
            if given is not None and given != getattr(defaults, key) and given != config.get(key, given):
                raise data_io.DataError(f"--{key.replace('_', '-')} {given} differs from the run's {config.get(key)}; "
                                        "a resumed run keeps its settings (start a new run to change them)")
        images = load_image_file(config["data"])
        if images.shape[1] != config["image_size"]:
            raise data_io.DataError(f"{config['data']} has {images.shape[1]} px images but the run was "
                                    f"trained at {config['image_size']} px")
        return args.resume, config, images
    images, data_config = load_data(args)
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "data", "holdout", "dry_run")}
    config.update(data_config)
    for key, value in {**(DEMO_DEFAULTS if config["demo"] else PAPER_DEFAULTS), **PRESETS[args.preset]}.items():
        if config[key] is None:
            config[key] = value
    config["g_lr"], config["d_lr"] = config["g_lr"] or config["lr"], config["d_lr"] or config["lr"]
    if config["loss"] == "hinge":
        config["label_smoothing"] = 0.0  # a bce-only option (a preset may bring it): record what runs
    dataset_name = "demo" if config["demo"] else os.path.basename(config["data"]).replace("_train.npy", "")
    run_dir = os.path.join(args.out, args.name or time.strftime("%Y%m%d-%H%M%S_") + dataset_name)
    if new_run_check and os.path.exists(os.path.join(run_dir, "config.json")):
        raise data_io.DataError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    if len(images) < config["batch_size"]:
        raise data_io.DataError(f"only {len(images)} training images, fewer than one batch of {config['batch_size']}")
    return run_dir, config, images


def make_strategy(name, logical_cpus=0):
    """The tf.distribute strategy for --strategy (None for "none"), after splitting the CPU if asked."""
    import tensorflow as tf
    if logical_cpus > 1:
        try:
            tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                       [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
        except RuntimeError as error:  # TensorFlow already running in this process
            raise data_io.DataError(f"--logical-cpus must be set before TensorFlow starts: {error}") from None
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def is_chief(strategy):
    """Whether this process writes the run's files: always, except on the non-chief workers of a
    multi-worker run (TF_CONFIG task 'chief', or 'worker' 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:  # no strategy, or a single machine
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief)


def build_models(config, distributed=False):
    """G, D and their optimizers; `distributed`: under a multi-replica strategy (call inside its scope),
    with batch norm synchronized across replicas."""
    import keras
    import models
    keras.mixed_precision.set_global_policy(
        {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[config.get("precision", "fp32")])
    keras.utils.set_random_seed(config["seed"])
    generator = models.build_generator(config["latent_dim"], config["image_size"], config["g_width"], distributed)
    discriminator = models.build_discriminator(config["image_size"], config["d_width"], distributed,
                                               config.get("spectral_norm", False),
                                               config.get("minibatch_std", False),
                                               config.get("minibatch_std_group", 0))  # runs before it: whole batch
    optimizers = []
    for model, lr in ((generator, config.get("g_lr") or config["lr"]),
                      (discriminator, config.get("d_lr") or config["lr"])):
        optimizer = keras.optimizers.Adam(lr, beta_1=config["beta1"], beta_2=config["beta2"])
        if config.get("precision") == "fp16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_weights)
        optimizers.append(optimizer)
    return generator, discriminator, optimizers[0], optimizers[1]


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can checkpoint first."""

    def __init__(self):
        self.signal = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint ...",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(args):
    """Train per args (from parse_args). Returns (run_dir, exit code)."""
    import contextlib
    strategy = make_strategy(args.strategy, args.logical_cpus)
    chief = is_chief(strategy)
    run_dir, config, images = prepare_run(args, new_run_check=chief)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if config["batch_size"] % replicas:
        raise data_io.DataError(f"--batch-size {config['batch_size']} does not split evenly over {replicas} replicas")
    # Every worker of a multi-worker run reads the run directory (a shared folder, for --resume); only the
    # chief writes to it, the others write to a scratch folder.
    out_dir = run_dir if chief else tempfile.mkdtemp(prefix="facegan-worker-")
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    import keras
    import tensorflow as tf
    with strategy.scope() if strategy else contextlib.nullcontext():
        generator, discriminator, g_optimizer, d_optimizer = build_models(config, replicas > 1)
        noise_seed = keras.random.SeedGenerator(config["seed"])
        ema_generator, aug_seed = None, None
        if config.get("ema"):
            ema_generator = keras.models.clone_model(generator)
            ema_generator.set_weights(generator.get_weights())
        if config.get("diffaug"):
            aug_seed = keras.random.SeedGenerator(config["seed"] + 1)
    variables = state_variables(generator, discriminator, g_optimizer, d_optimizer, noise_seed, ema_generator,
                                aug_seed)
    batch_size, latent_dim = config["batch_size"], config["latent_dim"]
    steps_per_epoch = len(images) // batch_size
    if config.get("max_steps"):
        steps_per_epoch = min(steps_per_epoch, config["max_steps"])
    config.update(steps_per_epoch=steps_per_epoch, devices=[d.name for d in tf.config.list_logical_devices()],
                  replicas=replicas, tensorflow=tf.__version__, keras=keras.__version__)

    history = new_history()
    fixed_noise_path = os.path.join(run_dir, "fixed_noise.npy")
    checkpoint = load_latest_checkpoint(run_dir, variables) if args.resume else None
    if checkpoint:
        checkpoint, history = checkpoint
        fixed_noise = np.load(fixed_noise_path)
        print(f"resuming {run_dir} from {os.path.basename(checkpoint)} (epoch {history['epoch']} done, "
              f"{len(history['d_loss']) - history['epoch'] * steps_per_epoch} steps into the next)")
    else:
        if args.resume:
            print(f"{run_dir} has no checkpoint yet: starting it from epoch 1")
        fixed_noise = np.random.default_rng(config["seed"] + 1).standard_normal(
            (config["n_samples"], latent_dim)).astype(np.float32)
        data_io.save_npy(os.path.join(out_dir, "fixed_noise.npy"), fixed_noise)
    data_io.save_json(os.path.join(out_dir, "config.json"), config)

    train_step = build_train_step(generator, discriminator, g_optimizer, d_optimizer, latent_dim, noise_seed,
                                  loss=config.get("loss", "bce"), diffaug=config.get("diffaug", ""),
                                  r1=config.get("r1", 0.0), aug_seed=aug_seed, ema_generator=ema_generator,
                                  ema_decay=config.get("ema", 0.0), strategy=strategy,
                                  label_smoothing=config.get("label_smoothing", 0.0),
                                  mode_seeking=config.get("mode_seeking", 0.0))
    images_tensor = tf.constant(images)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard")) if config.get("tensorboard") else None
    from tqdm import tqdm
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"run directory: {run_dir}\ntraining on {len(images):,} images of {config['image_size']}px ({device}, "
          f"{config.get('precision', 'fp32')}), batch {batch_size}, {steps_per_epoch} steps/epoch, "
          f"epochs {history['epoch'] + 1}..{config['epochs']}")

    collapsed_for = 0
    with _StopRequest() as stop:
        for epoch in range(history["epoch"] + 1, config["epochs"] + 1):
            done = len(history["d_loss"]) - (epoch - 1) * steps_per_epoch  # steps of this epoch already done
            dataset = make_dataset(images_tensor, batch_size, config["seed"], epoch, steps_per_epoch, done)
            start = time.perf_counter()
            bar = tqdm(dataset, total=steps_per_epoch, initial=done, desc=f"epoch {epoch}/{config['epochs']}",
                       unit="step", dynamic_ncols=True, mininterval=1.0)
            for step, real in enumerate(bar, done + 1):
                values = [float(v) for v in train_step(real)]
                if not np.all(np.isfinite(values)):
                    raise Diverged(f"non-finite loss at epoch {epoch} step {step}: d_loss={values[0]}, "
                                   f"g_loss={values[1]}", run_dir)
                collapsed_for = collapsed_for + 1 if values[2] > 0.99 and values[3] < 0.01 else 0
                if config.get("collapse_steps") and collapsed_for >= config["collapse_steps"]:
                    raise Diverged(f"discriminator collapse: D(x) > 0.99 and D(G(z)) < 0.01 for {collapsed_for} "
                                   f"steps (epoch {epoch} step {step})", run_dir)
                for key, value in zip(STEP_KEYS, values):
                    history[key].append(value)
                if step % 5 == 0 or step == steps_per_epoch:
                    bar.set_postfix(d_loss=f"{values[0]:.3f}", g_loss=f"{values[1]:.3f}", D_x=f"{values[2]:.2f}",
                                    D_Gz=f"{values[3]:.2f}", refresh=False,
                                    img_s=f"{(step - done) * batch_size / (time.perf_counter() - start):.0f}")
                if stop.signal is not None or (config.get("checkpoint_every") and
                                               len(history["d_loss"]) % config["checkpoint_every"] == 0):
                    save_checkpoint(out_dir, variables, history, config["keep_checkpoints"])
                if stop.signal is not None:
                    bar.close()
                    print(f"stopped at epoch {epoch} step {step}; checkpoint saved. Resume with:\n"
                          f"  python train.py --resume {run_dir}")
                    return run_dir, EXIT_INTERRUPTED
            bar.close()
            seconds = time.perf_counter() - start
            finish_epoch(out_dir, config, history, epoch, steps_per_epoch, steps_per_epoch - done, seconds,
                         generator, discriminator, fixed_noise, writer, ema_generator)
            save_checkpoint(out_dir, variables, history, config["keep_checkpoints"])
    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(f"done: {run_dir} (generator.keras, samples/, d_losses.npy, g_losses.npy)")
    return run_dir, 0


def recalibrate_batchnorm(generator, batches=16, batch_size=128, seed=0):
    """Set G's batch-norm moving statistics to the average batch statistics of `batches` fresh noise batches.

    During training they are an exponential average over the last ~10 steps, while G changes fast: samples
    drawn in inference mode (the grids, generate.py, evaluate.py, anyone's load_model) then come out worse
    than G really is. A cumulative average over fresh batches with the current weights fixes that
    ("precise BN", Wu & Johnson 2021). Training itself uses batch statistics and is unaffected.
    """
    import keras
    bn_layers = [layer for layer in generator.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in bn_layers]
    rng = np.random.default_rng([seed, 7])
    try:
        for i in range(batches):
            for layer in bn_layers:
                layer.momentum = i / (i + 1)  # moving = running mean of the batch statistics so far
            generator(rng.standard_normal((batch_size, generator.input_shape[-1])).astype(np.float32),
                      training=True)
    finally:
        for layer, momentum in zip(bn_layers, momenta):
            layer.momentum = momentum


def finish_epoch(run_dir, config, history, epoch, steps_per_epoch, steps_run, seconds, generator,
                 discriminator, fixed_noise, writer, ema_generator=None):
    """Per-epoch means, the seed's .npy loss files, the fixed-noise grid, the models and the log.
    With EMA the averaged G is the one sampled and saved as generator.keras (the trained one as
    generator_raw.keras)."""
    means = [float(np.mean(history[key][-steps_per_epoch:])) for key in STEP_KEYS]
    for key, value in zip(("d_losses", "g_losses", "d_real_epoch", "d_fake_epoch"), means):
        history[key].append(value)
    history["epoch"] = epoch
    history["epoch_seconds"].append(round(seconds, 3))
    history["images_per_second"].append(round(steps_run * config["batch_size"] / seconds, 1))
    data_io.save_npy(os.path.join(run_dir, "d_losses.npy"), np.array(history["d_losses"], np.float32))
    data_io.save_npy(os.path.join(run_dir, "g_losses.npy"), np.array(history["g_losses"], np.float32))
    data_io.save_npz(os.path.join(run_dir, "steps.npz"),
                     {key: np.array(history[key], np.float32) for key in STEP_KEYS})
    recalibrate_batchnorm(generator, seed=epoch)
    sampler = generator
    if ema_generator is not None:
        recalibrate_batchnorm(ema_generator, seed=epoch)
        save_model(os.path.join(run_dir, "generator_raw.keras"), generator)
        sampler = ema_generator
    grid = None
    if epoch % config["sample_every"] == 0 or epoch == config["epochs"]:
        grid = data_io.make_grid(data_io.to_uint8(sampler(fixed_noise, training=False)))
        data_io.save_png(os.path.join(run_dir, "samples", f"epoch_{epoch:03d}.png"), grid, scale=2)
    save_model(os.path.join(run_dir, "generator.keras"), sampler)
    save_model(os.path.join(run_dir, "discriminator.keras"), discriminator)
    data_io.save_json(os.path.join(run_dir, "history.json"),
                      {k: v for k, v in history.items() if k not in STEP_KEYS})
    if writer is not None:
        import tensorflow as tf
        with writer.as_default(step=epoch):
            for name, value in zip(("d_loss", "g_loss", "D(x)", "D(G(z))"), means):
                tf.summary.scalar(f"epoch/{name}", value)
            tf.summary.scalar("epoch/images_per_second", history["images_per_second"][-1])
            if grid is not None:
                tf.summary.image("fixed_noise_samples", grid[None])
            first = len(history["d_loss"]) - steps_per_epoch
            for name, key in zip(("d_loss", "g_loss", "D(x)", "D(G(z))"), STEP_KEYS):
                for i, value in enumerate(history[key][first:], first + 1):
                    tf.summary.scalar(f"step/{name}", value, step=i)
        writer.flush()
    print(f"epoch {epoch}: d_loss {means[0]:.4f}  g_loss {means[1]:.4f}  D(x) {means[2]:.3f}  "
          f"D(G(z)) {means[3]:.3f}  {seconds:.1f} s  {history['images_per_second'][-1]:.0f} images/s")


def dry_run(args):
    """One step of everything in a temporary folder; returns an exit code."""
    start = time.time()
    folder = tempfile.mkdtemp(prefix="facegan-dry-run-")
    try:
        common = ["--max-steps", "1", "--out", folder, "--name", "dry-run", "--n-samples", "16"]
        passthrough = [(f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k}={v}"
                       for k, v in ((k.replace("_", "-"), v) for k, v in vars(args).items()
                                    if k in ("data", "holdout", "batch_size", "latent_dim", "g_width", "d_width",
                                             "precision", "preset", *RECIPE_KEYS) and v is not None)]
        passthrough += ["--demo"] if args.demo else []
        _, code = train(parse_args(common + passthrough + ["--epochs", "1"]))
        if code == 0:
            _, code = train(parse_args(["--resume", os.path.join(folder, "dry-run"), "--epochs", "2"]))
        if code != 0:
            return code
        run = os.path.join(folder, "dry-run")
        if len(np.load(os.path.join(run, "d_losses.npy"))) != 2 or not latest_checkpoint(run):
            print("train.py: error: dry run: the resumed run did not continue to epoch 2", file=sys.stderr)
            return 1
        print(f"dry run OK in {time.time() - start:.0f} s: data, D step, G step, sample grid, checkpoint and "
              "resume all work")
        return code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.dry_run:
            return dry_run(args)
        _, code = train(args)
        return code
    except data_io.DataError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except Diverged as error:
        print(f"train.py: training diverged: {error}. The last good checkpoint is intact: resume with "
              f"--resume {error.run_dir}, or start again with another --seed or a lower --lr.", file=sys.stderr)
        return EXIT_DIVERGED
    except OSError as error:  # disk full, unwritable output folder, ...
        print(f"train.py: error: cannot write {getattr(error, 'filename', '') or 'output'}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
