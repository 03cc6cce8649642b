"""Train the DCGAN (Radford, Metz & Chintala 2015) on 64x64 faces.

    python train.py                                   # CelebA if prepared (data/celeba64_train.npy), else a demo
    python train.py --epochs 10 --batch-size 128
    python train.py --resume outputs/<run>            # continue a run where its last checkpoint left it

Each step: one discriminator update on a real batch (label 1) and a fake batch (label 0) in separate
batch-norm passes, then one generator update with the non-saturating loss -log D(G(z)).
Everything a run makes lands in outputs/<run>/ (see README.md).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import data_io

DEFAULT_DATA = os.path.join("data", "celeba64_train.npy")
DEMO_EPOCHS = 6
DEMO_SIZE = 8000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help=f"training images, uint8 (N, S, S, 3) .npy from preprocess.py (default {DEFAULT_DATA}; "
                        "when it does not exist, the embedded demo faces are used)")
    p.add_argument("--holdout", default=None,
                   help="held-out images for evaluate.py (default: the _holdout.npy beside --data)")
    p.add_argument("--demo", action="store_true", help="train on the embedded procedurally drawn demo faces")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training set (default 25 on real data, {DEMO_EPOCHS} on the demo)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (the paper: 128)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate for both networks (the paper: 2e-4)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta_1 (the paper: 0.5)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta_2")
    p.add_argument("--latent-dim", type=int, default=100, help="size of the noise vector z ~ N(0, I)")
    p.add_argument("--g-width", type=int, default=64, help="generator base channels (ngf)")
    p.add_argument("--d-width", type=int, default=64, help="discriminator base channels (ndf)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, noise and data order")
    p.add_argument("--sample-every", type=int, default=1, help="save a fixed-noise sample grid every N epochs")
    p.add_argument("--n-samples", type=int, default=64, help="faces in each fixed-noise grid (8 per row)")
    p.add_argument("--out", default="outputs", help="folder that holds the run directories")
    p.add_argument("--name", default=None, help="run directory name (default: <time>_<dataset>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint, with its saved settings "
                        "(--epochs may be raised)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="how many epoch checkpoints to keep")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps per epoch (0 = all; for tests)")
    args = p.parse_args(argv)
    for name in ("batch_size", "latent_dim", "g_width", "d_width", "sample_every", "n_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
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
        print("DEMO MODE: no CelebA prepared, training on procedurally drawn cartoon faces.")
        print("For real faces: python preprocess.py --source img_align_celeba.zip  (see README.md)")
        print("=" * 78)
    else:
        data_path = args.data or DEFAULT_DATA
        holdout_path = args.holdout or data_path.replace("_train.npy", "_holdout.npy")
    images = np.load(data_path, mmap_mode="r")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise data_io.DataError(f"{data_path} holds {images.dtype} {images.shape}; expected uint8 (N, S, S, 3) "
                                "as written by preprocess.py")
    if images.shape[1] not in (32, 64, 128):
        raise data_io.DataError(f"{data_path} has {images.shape[1]} px images; 32, 64 or 128 are supported")
    return np.ascontiguousarray(images), {
        "data": os.path.abspath(data_path), "demo": use_demo,
        "holdout": os.path.abspath(holdout_path) if os.path.exists(holdout_path) else None,
        "train_count": int(len(images)), "image_size": int(images.shape[1]),
    }


def make_dataset(images_tensor, batch_size, seed, epoch, skip_steps=0):
    """One epoch of uint8 batches in an order fixed by (seed, epoch), so a resumed run sees the same order."""
    import tensorflow as tf
    n = int(images_tensor.shape[0])
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // batch_size  # drop the last partial batch: one static shape, one compiled step
    order = order[skip_steps * batch_size: steps * batch_size]
    return (tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size, drop_remainder=True)
            .map(lambda idx: tf.gather(images_tensor, idx), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def build_train_step(generator, discriminator, g_optimizer, d_optimizer, latent_dim, noise_seed):
    """The compiled GAN step: D update, then G update; returns (d_loss, g_loss, D(x), D(G(z)))."""
    import keras
    import tensorflow as tf
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def train_step(real_uint8):
        real = tf.cast(real_uint8, tf.float32) / 127.5 - 1.0
        batch = tf.shape(real)[0]
        z = keras.random.normal((batch, latent_dim), seed=noise_seed)
        ones, zeros = tf.ones((batch, 1)), tf.zeros((batch, 1))
        # One generator forward serves both updates, as in the PyTorch reference: the D step sees it
        # detached, the G step differentiates through it.
        with tf.GradientTape() as g_tape:
            fake = generator(z, training=True)
            with tf.GradientTape() as d_tape:
                real_logits = discriminator(real, training=True)  # separate BN passes for real and fake
                fake_logits = discriminator(tf.stop_gradient(fake), training=True)
                d_loss = bce(ones, real_logits) + bce(zeros, fake_logits)
            d_grads = d_tape.gradient(d_loss, discriminator.trainable_weights)
            d_optimizer.apply_gradients(zip(d_grads, discriminator.trainable_weights))
            # Non-saturating G loss: maximise log D(G(z)) by labelling fakes as real, through the updated D
            # (this is the combined model of models.build_gan, with D's BN in training mode).
            g_loss = bce(ones, discriminator(fake, training=True))
        g_grads = g_tape.gradient(g_loss, generator.trainable_weights)
        g_optimizer.apply_gradients(zip(g_grads, generator.trainable_weights))
        return d_loss, g_loss, tf.reduce_mean(tf.sigmoid(real_logits)), tf.reduce_mean(tf.sigmoid(fake_logits))

    return train_step


# ----- checkpoints ---------------------------------------------------------------------------------------

def _state_variables(generator, discriminator, g_optimizer, d_optimizer, noise_seed):
    """Every variable a run's future depends on, under stable names."""
    groups = {"g": generator.variables, "d": discriminator.variables,
              "g_opt": g_optimizer.variables, "d_opt": d_optimizer.variables, "noise": [noise_seed.state]}
    return {f"{group}/{i:04d}": v for group, variables in groups.items() for i, v in enumerate(variables)}


def save_checkpoint(run_dir, epoch, variables, history, keep):
    """checkpoints/epoch_XXX.npz (atomic), keeping the newest `keep`."""
    folder = os.path.join(run_dir, "checkpoints")
    arrays = {name: np.asarray(v.numpy()) for name, v in variables.items()}
    arrays["history"] = np.frombuffer(json.dumps(history).encode(), np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    data_io.atomic_write(os.path.join(folder, f"epoch_{epoch:03d}.npz"), write)
    for old in sorted(f for f in os.listdir(folder) if f.startswith("epoch_") and f.endswith(".npz"))[:-keep]:
        os.remove(os.path.join(folder, old))


def latest_checkpoint(run_dir):
    folder = os.path.join(run_dir, "checkpoints")
    names = sorted(f for f in os.listdir(folder) if f.startswith("epoch_") and f.endswith(".npz")) \
        if os.path.isdir(folder) else []
    return os.path.join(folder, names[-1]) if names else None


def load_checkpoint(path, variables):
    """Assign the saved arrays to the variables; returns the saved history."""
    with np.load(path) as saved:
        missing = sorted(set(variables) - set(saved.files))
        if missing:
            raise data_io.DataError(f"{path} does not match this model ({len(missing)} variables missing)")
        for name, variable in variables.items():
            if tuple(saved[name].shape) != tuple(variable.shape):
                raise data_io.DataError(f"{path} does not match this model: {name} is {saved[name].shape}, "
                                        f"expected {tuple(variable.shape)}")
            variable.assign(saved[name])
        return json.loads(saved["history"].tobytes().decode())


def save_model(path, model):
    data_io.atomic_write(path, model.save, suffix=".keras")


# ----- the run -------------------------------------------------------------------------------------------

def train(args):
    """Train per args (from parse_args); returns the run directory."""
    if args.resume:
        config_path = os.path.join(args.resume, "config.json")
        if not os.path.exists(config_path):
            raise data_io.DataError(f"{args.resume} is not a run directory (no config.json)")
        with open(config_path) as f:
            config = json.load(f)
        if args.epochs is not None:
            config["epochs"] = args.epochs
        run_dir = args.resume
        images = np.load(config["data"])
        if images.shape[1] != config["image_size"]:
            raise data_io.DataError(f"{config['data']} has {images.shape[1]} px images but the run was "
                                    f"trained at {config['image_size']} px")
    else:
        images, data_config = load_data(args)
        config = {k: v for k, v in vars(args).items() if k not in ("resume", "data", "holdout")}
        config.update(data_config)
        if config["epochs"] is None:
            config["epochs"] = DEMO_EPOCHS if config["demo"] else 25
        dataset_name = "demo" if config["demo"] else os.path.basename(config["data"]).replace("_train.npy", "")
        run_dir = os.path.join(args.out, args.name or time.strftime("%Y%m%d-%H%M%S_") + dataset_name)
        if os.path.exists(os.path.join(run_dir, "config.json")):
            raise data_io.DataError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)

    import keras
    import tensorflow as tf
    import models
    keras.utils.set_random_seed(config["seed"])
    size, latent_dim, batch_size = config["image_size"], config["latent_dim"], config["batch_size"]
    if len(images) < batch_size:
        raise data_io.DataError(f"only {len(images)} training images, fewer than one batch of {batch_size}")
    generator = models.build_generator(latent_dim, size, config["g_width"])
    discriminator = models.build_discriminator(size, config["d_width"])
    g_optimizer = keras.optimizers.Adam(config["lr"], beta_1=config["beta1"], beta_2=config["beta2"])
    d_optimizer = keras.optimizers.Adam(config["lr"], beta_1=config["beta1"], beta_2=config["beta2"])
    g_optimizer.build(generator.trainable_weights)
    d_optimizer.build(discriminator.trainable_weights)
    noise_seed = keras.random.SeedGenerator(config["seed"])
    variables = _state_variables(generator, discriminator, g_optimizer, d_optimizer, noise_seed)
    steps_per_epoch = len(images) // batch_size
    if config.get("max_steps"):
        steps_per_epoch = min(steps_per_epoch, config["max_steps"])
    config.update(steps_per_epoch=steps_per_epoch,
                  devices=[d.name for d in tf.config.list_logical_devices()],
                  tensorflow=tf.__version__, keras=keras.__version__)

    history = {"epoch": 0, "d_losses": [], "g_losses": [], "d_real": [], "d_fake": [],
               "step_d_loss": [], "step_g_loss": [], "step_d_real": [], "step_d_fake": [],
               "epoch_seconds": [], "images_per_second": []}
    fixed_noise_path = os.path.join(run_dir, "fixed_noise.npy")
    checkpoint = latest_checkpoint(run_dir) if args.resume else None
    if checkpoint:
        history = load_checkpoint(checkpoint, variables)
        fixed_noise = np.load(fixed_noise_path)
        print(f"resuming {run_dir} from {os.path.basename(checkpoint)} (epoch {history['epoch']} done)")
    else:
        if args.resume:
            print(f"{run_dir} has no checkpoint yet: starting it from epoch 1")
        fixed_noise = np.random.default_rng(config["seed"] + 1).standard_normal(
            (config["n_samples"], latent_dim)).astype(np.float32)
        data_io.save_npy(fixed_noise_path, fixed_noise)
    data_io.save_json(os.path.join(run_dir, "config.json"), config)

    train_step = build_train_step(generator, discriminator, g_optimizer, d_optimizer, latent_dim, noise_seed)
    images_tensor = tf.constant(images)
    from tqdm import tqdm
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"run directory: {run_dir}\ntraining on {len(images):,} images of {size}x{size} ({device}), "
          f"batch {batch_size}, {steps_per_epoch} steps/epoch, epochs {history['epoch'] + 1}..{config['epochs']}")

    for epoch in range(history["epoch"] + 1, config["epochs"] + 1):
        dataset = make_dataset(images_tensor, batch_size, config["seed"], epoch).take(steps_per_epoch)
        sums = np.zeros(4)
        start = time.perf_counter()
        bar = tqdm(dataset, total=steps_per_epoch, desc=f"epoch {epoch}/{config['epochs']}", unit="step",
                   dynamic_ncols=True, mininterval=1.0)
        for step, real in enumerate(bar, 1):
            values = [float(v) for v in train_step(real)]
            sums += values
            for key, value in zip(("step_d_loss", "step_g_loss", "step_d_real", "step_d_fake"), values):
                history[key].append(value)
            if step % 5 == 0 or step == steps_per_epoch:
                bar.set_postfix(d_loss=f"{values[0]:.3f}", g_loss=f"{values[1]:.3f}", D_x=f"{values[2]:.2f}",
                                D_Gz=f"{values[3]:.2f}",
                                img_s=f"{step * batch_size / (time.perf_counter() - start):.0f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        means = sums / steps_per_epoch
        for key, value in zip(("d_losses", "g_losses", "d_real", "d_fake"), means):
            history[key].append(float(value))
        history["epoch"] = epoch
        history["epoch_seconds"].append(round(seconds, 3))
        history["images_per_second"].append(round(steps_per_epoch * batch_size / seconds, 1))
        # The seed's per-epoch metric files, rewritten whole after every epoch.
        data_io.save_npy(os.path.join(run_dir, "d_losses.npy"), np.array(history["d_losses"], np.float32))
        data_io.save_npy(os.path.join(run_dir, "g_losses.npy"), np.array(history["g_losses"], np.float32))
        np.savez(os.path.join(run_dir, "steps.npz"), **{k[5:]: np.array(history[k], np.float32)
                                                         for k in history if k.startswith("step_")})
        if epoch % config["sample_every"] == 0 or epoch == config["epochs"]:
            grid = data_io.to_uint8(generator(fixed_noise, training=False))
            data_io.save_grid(os.path.join(run_dir, "samples", f"epoch_{epoch:03d}.png"), grid, scale=2)
        save_model(os.path.join(run_dir, "generator.keras"), generator)
        save_model(os.path.join(run_dir, "discriminator.keras"), discriminator)
        save_checkpoint(run_dir, epoch, variables, history, config["keep_checkpoints"])
        data_io.save_json(os.path.join(run_dir, "history.json"),
                          {k: v for k, v in history.items() if not k.startswith("step_")})
        print(f"epoch {epoch}: d_loss {means[0]:.4f}  g_loss {means[1]:.4f}  D(x) {means[2]:.3f}  "
              f"D(G(z)) {means[3]:.3f}  {seconds:.1f} s  {history['images_per_second'][-1]:.0f} images/s")
    print(f"done: {run_dir} (generator.keras, samples/, d_losses.npy, g_losses.npy)")
    return run_dir


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except data_io.DataError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
