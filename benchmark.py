"""Steady-state training speed of the paper DCGAN step, per setting, as a table and JSON.

    python benchmark.py                                   # TF: graph/xla/eager x fp32/bf16 x batch 64/128/256
    python benchmark.py --modes graph --precisions fp32 bf16 --batches 128
    python benchmark.py --backend jax --precisions fp32 bf16 --batches 128 512 --epoch-images 50000

The TensorFlow path times exactly train.py's step (gan_step.build_train_step) on synthetic uint8 batches,
after warm-up. `--backend jax` times the same Keras models with an equivalent stateless step under
jax.jit (for machines with JAX but no TensorFlow); with --epoch-images it also times one whole epoch
of that many uint8 images held on the device, each batch gathered in a shuffled order inside the
compiled step, with a host read of the losses every step as train.py's progress bar does.
Cost model: 2.48 GFLOP per trained image at 64 px (G forward, D forward and backward on real and fake,
G backward through D).
"""
import argparse
import os
import sys
import time

import numpy as np

GFLOP_PER_IMAGE = 2.48


def time_steps(run_step, warmup, steps):
    for _ in range(warmup):
        run_step()
    start = time.perf_counter()
    for _ in range(steps):
        run_step()
    return (time.perf_counter() - start) / steps


def tf_rows(modes, precisions, batches, warmup, steps):
    import keras
    import tensorflow as tf
    import gan_step
    rows = []
    for precision in precisions:
        for mode in modes:
            for batch in batches:
                recipe = gan_step.recipe(precision=precision)  # the paper's model and recipe
                step = gan_step.build_train_step(gan_step.build_models(recipe), recipe, mode=mode)
                real = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 64, 64, 3), np.uint8))
                seconds = time_steps(lambda: [float(v) for v in step(real)],
                                     warmup if mode != "eager" else 1, steps if mode != "eager" else 2)
                rows.append(dict(backend="tensorflow", mode=mode, precision=precision, batch=batch,
                                 seconds_per_step=seconds))
                print(format_row(rows[-1]), flush=True)
        keras.mixed_precision.set_global_policy("float32")
    return rows


def jax_rows(precisions, batches, warmup, steps, epoch_images):
    import jax
    import jax.numpy as jnp
    import keras
    rows = []
    # One epoch's worth of uint8 images on the device, shared by every row.
    images = order = None
    if epoch_images:
        images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (epoch_images, 64, 64, 3), np.uint8))
        order = jnp.asarray(np.random.default_rng(2).permutation(epoch_images))
    for precision in precisions:
        # fp32 = true float32 convolutions; tf32 = float32 storage with TensorFloat-32 matrix units.
        jax.config.update("jax_default_matmul_precision",
                          {"fp32": "highest", "tf32": "tensorfloat32"}.get(precision))
        policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(precision, "float32")
        keras.mixed_precision.set_global_policy(policy)
        for batch in batches:
            try:
                rows.append(jax_row(precision, batch, warmup, steps, images, order))
                print(format_row(rows[-1]), flush=True)
            except Exception as error:  # one failing setting must not cost the others (device time is scarce)
                print(f"jax {precision} batch {batch} failed: {type(error).__name__}: {error}", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return rows


def jax_row(precision, batch, warmup, steps, images, order):
    """Time one setting of the jax.jit DCGAN step (train.py's step, written statelessly)."""
    import jax
    import jax.numpy as jnp
    import keras
    import models
    keras.utils.set_random_seed(0)
    generator, discriminator = models.build_generator(), models.build_discriminator()
    g_opt, d_opt = (keras.optimizers.Adam(2e-4, beta_1=0.5) for _ in range(2))
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    # float16 needs loss scaling (its range underflows small gradients); bf16 and fp32 do not.
    loss_scaling = precision == "fp16"
    epoch = images is not None

    def bce(logits, label):  # binary cross-entropy with logits, float32
        logits = logits.astype(jnp.float32)
        return jnp.mean(jnp.maximum(logits, 0) - logits * label + jnp.log1p(jnp.exp(-jnp.abs(logits))))

    def apply(opt, opt_vars, grads, tvars, scale):
        """Adam update; with loss scaling, unscale and skip the update (halving the scale) on inf/nan."""
        if not loss_scaling:
            return (*opt.stateless_apply(opt_vars, grads, tvars), scale)
        grads = [g.astype(jnp.float32) / scale for g in grads]
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in grads]))
        new_tvars, new_opt_vars = opt.stateless_apply(opt_vars, grads, tvars)
        keep = lambda new, old: [jnp.where(finite, n, o) for n, o in zip(new, old)]
        return keep(new_tvars, tvars), keep(new_opt_vars, opt_vars), jnp.where(finite, scale, scale / 2)

    @jax.jit
    def step(state, images, order, i, key):
        g_tv, g_ntv, d_tv, d_ntv, g_ov, d_ov, scale = state
        # Batch i of the shuffled epoch, gathered and normalised inside the compiled step: no per-step
        # dispatch of separate slicing ops from Python.
        real_uint8 = images[jax.lax.dynamic_slice_in_dim(order, i * batch, batch)]
        real = real_uint8.astype(jnp.float32) / 127.5 - 1.0
        z = jax.random.normal(jax.random.fold_in(key, i), (batch, 100))

        def g_forward(g_tv):
            return generator.stateless_call(g_tv, g_ntv, z, training=True)

        def d_loss_fn(d_tv, fake):
            real_logits, ntv = discriminator.stateless_call(d_tv, d_ntv, real, training=True)
            fake_logits, ntv = discriminator.stateless_call(d_tv, ntv, fake, training=True)
            loss = bce(real_logits, 1.0) + bce(fake_logits, 0.0)
            return loss * (scale if loss_scaling else 1.0), (loss, ntv)

        # One generator forward for both updates, as train.py does: keep its VJP for the G step.
        fake, g_vjp, new_g_ntv = jax.vjp(g_forward, g_tv, has_aux=True)
        (_, (d_loss, new_d_ntv)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            d_tv, jax.lax.stop_gradient(fake))
        d_tv, d_ov, _ = apply(d_opt, d_ov, d_grads, d_tv, scale)

        def g_loss_fn(fake):  # non-saturating loss through the updated D
            logits, ntv = discriminator.stateless_call(d_tv, new_d_ntv, fake, training=True)
            loss = bce(logits, 1.0)
            return loss * (scale if loss_scaling else 1.0), (loss, ntv)
        (_, (g_loss, new_d_ntv)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
        (g_grads,) = g_vjp(fake_grad)
        g_tv, g_ov, scale = apply(g_opt, g_ov, g_grads, g_tv, scale)
        return (g_tv, new_g_ntv, d_tv, new_d_ntv, g_ov, d_ov, scale), jnp.stack([d_loss, g_loss])

    state = ([v.value for v in generator.trainable_variables],
             [v.value for v in generator.non_trainable_variables],
             [v.value for v in discriminator.trainable_variables],
             [v.value for v in discriminator.non_trainable_variables],
             [v.value for v in g_opt.variables], [v.value for v in d_opt.variables],
             jnp.float32(2.0 ** 15))
    key = jax.random.PRNGKey(0)
    if images is None:
        images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 64, 64, 3), np.uint8))
        order = jnp.arange(batch)
    holder = {"state": state}

    def run_step():  # steady state: the first batch every step (same shapes as the epoch: one compilation)
        holder["state"], losses = step(holder["state"], images, order, 0, key)
        np.asarray(losses)  # host read, as train.py's progress bar does
    compile_start = time.perf_counter()
    run_step()
    compile_seconds = time.perf_counter() - compile_start
    seconds = time_steps(run_step, warmup, steps)
    row = dict(backend="jax", mode="jit", precision=precision, batch=batch, seconds_per_step=seconds,
               first_step_seconds=round(compile_seconds, 2), device=str(jax.devices()[0]),
               jax=jax.__version__, keras=keras.__version__)
    if epoch:
        n_steps = images.shape[0] // batch
        start = time.perf_counter()
        for i in range(n_steps):
            holder["state"], losses = step(holder["state"], images, order, i, key)
            last_losses = np.asarray(losses)
        row["epoch_seconds"] = time.perf_counter() - start
        row["epoch_images"] = n_steps * batch
        row["epoch_final_losses"] = [round(float(v), 4) for v in last_losses]
    if loss_scaling:
        row["final_loss_scale"] = float(holder["state"][-1])
    return row


def format_row(row, peak=None):
    images_per_second = row["batch"] / row["seconds_per_step"]
    row["images_per_second"] = round(images_per_second, 1)
    row["gflops"] = round(images_per_second * GFLOP_PER_IMAGE, 1)
    text = (f"{row['backend']:>10} {row['mode']:>5} {row['precision']:>4} batch {row['batch']:>3}: "
            f"{images_per_second:8.1f} images/s  {row['gflops']:8.1f} GFLOP/s")
    if peak:
        row["percent_of_peak"] = round(100 * row["gflops"] / peak, 1)
        text += f"  {row['percent_of_peak']:5.1f}% of {peak:.0f}"
    if "epoch_seconds" in row:
        text += f"  epoch of {row['epoch_images']:,} images: {row['epoch_seconds']:.2f} s"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax"),
                        help="tensorflow: train.py's own step; jax: the same models in a jax.jit step")
    parser.add_argument("--modes", nargs="+", default=["graph", "xla", "eager"], choices=("graph", "xla", "eager"),
                        help="TensorFlow execution: tf.function, tf.function(jit_compile=True), eager")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=("fp32", "tf32", "bf16", "fp16"),
                        help="fp32 or mixed precision (bf16, fp16 with loss scaling); tf32: jax only, "
                             "float32 with TensorFloat-32 matrix units (GPU)")
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256], help="batch sizes")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="the machine's peak GFLOP/s for the precision timed: adds a %% of peak column")
    parser.add_argument("--epoch-images", type=int, default=0, help="jax only: also time one epoch of this many")
    parser.add_argument("--out", default=os.path.join("outputs", "benchmark.json"), help="JSON output file")
    args = parser.parse_args(argv)
    if args.backend == "tensorflow" and "tf32" in args.precisions:
        parser.error("--precisions tf32 is for --backend jax (TensorFlow's GPU default already uses TF32)")
    if args.backend == "jax":
        os.environ["KERAS_BACKEND"] = "jax"
        rows = jax_rows(args.precisions, args.batches, args.warmup, args.steps, args.epoch_images)
    else:
        rows = tf_rows(args.modes, args.precisions, args.batches, args.warmup, args.steps)
    for row in rows:
        format_row(row, args.peak_gflops)
    print("\n| backend | mode | precision | batch | images/s | GFLOP/s |" + (" % of peak |" if args.peak_gflops
                                                                                 else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.peak_gflops else ""))
    for row in rows:
        print(f"| {row['backend']} | {row['mode']} | {row['precision']} | {row['batch']} | "
              f"{row['images_per_second']} | {row['gflops']} |" + (f" {row['percent_of_peak']} |"
                                                                   if "percent_of_peak" in row else ""))
    import data_io
    data_io.save_json(args.out, {"argv": sys.argv[1:], "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
