"""Steady-state training speed of the paper DCGAN step, per setting, as a table and JSON.

    python benchmark.py                                   # TF: graph/xla/eager x fp32/bf16 x batch 64/128/256
    python benchmark.py --modes graph --precisions fp32 bf16 --batches 128
    python benchmark.py --modes graph --batches 128 --presets dcgan best    # the paper's recipe vs --preset best
    python benchmark.py --backend jax --precisions fp32 bf16 --batches 128 512 --epoch-images 50000
    python benchmark.py --convolutions --precisions bf16 --batches 128 --presets dcgan best --measure-peak
    python benchmark.py --modes graph --batches 128 --presets best --train-flags "--arch resnet" "--d-width 96"
    git worktree add ../base 15e96f4 && python benchmark.py --modes graph --precisions bf16 --batches 128 \
        --presets best --baseline ../base       # this checkout's step against another's, step by step in turn

Both backends time exactly train.py's step on synthetic uint8 batches, after warm-up: gan_step.build_train_step
on TensorFlow, gan_step.build_jax_train_step with `--backend jax` (run with KERAS_BACKEND=jax, or it is set
here). With --epoch-images the JAX path also times one whole epoch of that many uint8 images held on the
device, each batch gathered in a shuffled order inside the compiled step, with a host read of the losses
every step as train.py's progress bar does.
--train-flags times the recipe train.py builds from those flags (e.g. a candidate of a recipe study).
Cost model: 2.48 GFLOP per trained image at 64 px (G forward, D forward and backward on real and fake,
G backward through D) for the paper's model; rows of another model (resize upsampling, other widths, the
residual architecture) have no GFLOP/s figure. --measure-peak times a large matrix multiply per precision
first, so that each row says what share of the machine's measured ceiling the step reaches.
"""
import argparse
import importlib
import math
import os
import re
import shlex
import statistics
import sys
import time

import numpy as np

from facegan import cli
from facegan import data_io
from facegan import presets
from facegan import settings

GFLOP_PER_IMAGE = 2.48
# JAX's float32 matrix products: fp32 = true float32; tf32 = float32 storage with TensorFloat-32 matrix units
# (JAX's own default on such GPUs). The other precisions keep JAX's default.
JAX_MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32"}


def time_steps(run_step, warmup, steps):
    for _ in range(warmup):
        run_step()
    start = time.perf_counter()
    for _ in range(steps):
        run_step()
    return (time.perf_counter() - start) / steps


def time_interleaved(run_steps, warmup, steps):
    """Seconds per step of each of `run_steps`, run in turn one step at a time (the order reversed every other
    round), so that other load on the machine slows each alike: [the median of each one's step times], and the
    median over rounds of each one's speed relative to the first."""
    for run_step in run_steps:
        for _ in range(warmup):
            run_step()
    times = [[] for _ in run_steps]
    for i in range(steps):
        for k in (range(len(run_steps)) if i % 2 == 0 else reversed(range(len(run_steps)))):
            start = time.perf_counter()
            run_steps[k]()
            times[k].append(time.perf_counter() - start)
    speedups = [statistics.median(first / own for first, own in zip(times[0], own_times)) for own_times in times]
    return [statistics.median(own_times) for own_times in times], speedups


def read_logs(logs):
    """The step's logs on the host (as train.py's progress bar reads them): a dict, or older checkouts' tuple."""
    return [float(value) for value in (logs.values() if isinstance(logs, dict) else logs)]


def checkout_step_builders(path):
    """(presets, gan_step) modules of another checkout of this project at `path` (its own modules, imported
    beside this one's; older checkouts kept them at the top level). Keras' registry of serializable classes is
    put back afterwards too, so models saved by this checkout still load as this checkout's classes."""
    own = {name: module for name, module in sys.modules.items()
           if name == "models" or name.split(".")[0] in ("facegan", "presets", "gan_step", "cli", "data_io",
                                                          "run_state", "metrics", "demo_faces")}
    import keras
    registry = keras.saving.get_custom_objects()  # the baseline's models.py re-registers the same names
    own_registry = dict(registry)
    for name in own:
        del sys.modules[name]
    sys.path.insert(0, path)
    try:
        if os.path.isfile(os.path.join(path, "facegan", "gan_step.py")):
            return importlib.import_module("facegan.presets"), importlib.import_module("facegan.gan_step")
        return importlib.import_module("presets"), importlib.import_module("gan_step")
    finally:
        sys.path.remove(path)
        for name in [name for name, module in sys.modules.items()
                     if os.path.abspath(getattr(module, "__file__", None) or "/").startswith(os.path.abspath(path))]:
            del sys.modules[name]
        sys.modules.update(own)
        registry.clear()
        registry.update(own_registry)


# Op classes of a profile, in the order they are printed; op_class says which class an op is in.
OP_CLASSES = ("convolution forward", "convolution backward (data)", "convolution backward (filter)", "batch norm",
              "casts", "activations", "resize (upsampling)", "optimizer (Adam)", "DiffAugment", "EMA",
              "other (losses, penalties, gradient sums, ...)")
ACTIVATION_OPS = {"Relu", "ReluGrad", "LeakyRelu", "LeakyReluGrad", "Tanh", "TanhGrad", "Sigmoid", "SigmoidGrad"}


def op_class(name, op_type):
    """The class (one of OP_CLASSES) of a TensorFlow op by its graph name and type; oneDNN's ops are typed
    _MklNative<Op>. A transposed convolution's forward is a Conv2DBackpropInput outside the gradient tape."""
    op_type = op_type.removeprefix("_MklNative").removeprefix("_Mkl")
    scopes = [re.sub(r"_\d+$", "", scope) for scope in name.lower().split("/")]  # "up1_bn_1": a second call's
    gradient = scopes[0] == "gradient_tape"
    if op_type == "Conv2DBackpropFilter" or "conv_kernel_gradient" in scopes:  # models.MatmulGradientConv2D's
        return "convolution backward (filter)"
    if op_type in ("Conv2D", "Conv2DBackpropInput"):
        return "convolution backward (data)" if gradient else "convolution forward"
    if op_type == "Cast":
        return "casts"
    if "BatchNorm" in op_type or any(scope.endswith("_bn") for scope in scopes):
        return "batch norm"
    if op_type in ACTIVATION_OPS:
        return "activations"
    if any(scope.endswith("_resize") for scope in scopes):  # models.py's upsampling layers
        return "resize (upsampling)"
    if "adam" in scopes:
        return "optimizer (Adam)"
    if "diffaugment" in scopes:
        return "DiffAugment"
    if "ema" in scopes:
        return "EMA"
    return OP_CLASSES[-1]


def profile_steps(run_step, steps, logdir):
    """Trace `steps` steps with TensorFlow's profiler into logdir, and read the trace back: {class: seconds of
    op time per step} (op_class; time summed over the threads that run ops, so it exceeds the wall time when ops
    run side by side) and the wall seconds per step."""
    import glob
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(steps):
        run_step()
    wall = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(max(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")), key=os.path.getmtime),
              "rb") as f:
        space.ParseFromString(f.read())
    seconds = dict.fromkeys(OP_CLASSES, 0.0)
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                # op events are named "<op name>:<op type>"; the executor's own are "Class::Method"
                name, _, op_type = plane.event_metadata[event.metadata_id].name.rpartition(":")
                if name and op_type and " " not in name and not name.endswith(":") and op_type.isidentifier():
                    seconds[op_class(name, op_type)] += event.duration_ps / 1e12 / steps
    return seconds, wall


def format_profile(row):
    """The profile of a row as text: each class's share of the op time and its milliseconds per step."""
    total = sum(row["op_seconds"].values())
    lines = [f"  op time {1000 * total:.0f} ms per step over {1000 * row['profiled_wall_seconds']:.0f} ms wall "
             f"({row['preset']}, {row['precision']}, batch {row['batch']}):"]
    for name, seconds in sorted(row["op_seconds"].items(), key=lambda item: -item[1]):
        lines.append(f"    {name:<46} {100 * seconds / total:5.1f}%  {1000 * seconds:8.1f} ms")
    return "\n".join(lines)


# train.py flags that benchmark.py sets itself, per row
STEP_FLAGS_GIVEN_HERE = {"batch_size": "--batches", "precision": "--precisions"}


def recipes_to_time(preset_names=("dcgan",), train_flags=()):
    """[(label, recipe without its precision)]: each preset at the paper's size, then the recipe train.py builds
    from each string of train.py flags (on --preset best unless the string names another)."""
    chosen = [(dict(preset=name), presets.recipe(name)) for name in preset_names]
    for text in train_flags:
        try:
            args = settings.parse_args(shlex.split(text))
        except SystemExit:  # train.py's parser has said what is wrong
            raise cli.UserError(f"--train-flags {text!r}: not usable train.py flags") from None
        for key in args.given_flags:
            if key in STEP_FLAGS_GIVEN_HERE:
                raise cli.UserError(f"--train-flags {text!r}: give {settings.flag(key)} as benchmark.py's "
                                    f"{STEP_FLAGS_GIVEN_HERE[key]}")
        config = settings.settings(args, demo=False)
        config["image_size"] = presets.PAPER["image_size"]  # a run takes it from its data: the paper's here
        chosen.append((dict(preset=config["preset"], train_flags=text), config))
    return chosen


def paper_model(recipe):
    """Whether a recipe's networks are the paper's, whose FLOPs GFLOP_PER_IMAGE counts."""
    return all(recipe[key] == presets.PAPER[key]
               for key in ("image_size", "latent_dim", "g_width", "d_width", "upsample", "arch", "g_norm"))


def row_label(row):
    return row.get("train_flags") or row["preset"]


def tf_rows(modes, precisions, batches, warmup, steps, recipes, baseline=None, profile=None):
    import keras
    import tensorflow as tf
    from facegan import gan_step
    builders = [(presets, gan_step)] + ([checkout_step_builders(baseline)] if baseline else [])
    rows = []
    for precision in precisions:
        for mode in modes:
            for batch in batches:
                for label, base_recipe in recipes:  # side by side, so that their ratio holds on a busy machine too
                    size = base_recipe["image_size"]
                    real = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8))
                    run_steps = []
                    for own_presets, own_gan_step in builders:
                        recipe = ({**base_recipe, "precision": precision} if own_presets is presets
                                  else own_presets.recipe(label["preset"], precision=precision))
                        nets = own_gan_step.build_models(recipe)
                        if not run_steps:  # this checkout's step: refused where it cannot fit in memory
                            check_step_memory(nets, batch, recipe["precision"],
                                              [device.name for device in tf.config.list_logical_devices()])
                        step = own_gan_step.build_train_step(nets, recipe, mode=mode)
                        run_steps.append(lambda step=step: read_logs(step(real)))
                    warm, timed = (warmup, steps) if mode != "eager" else (1, 2)
                    if baseline:
                        (seconds, baseline_seconds), (_, baseline_speed) = time_interleaved(run_steps, warm, timed)
                        compared = dict(baseline=baseline, baseline_seconds_per_step=baseline_seconds,
                                        speedup=round(1 / baseline_speed, 3))
                    else:
                        seconds, compared = time_steps(run_steps[0], warm, timed), {}
                    rows.append(dict(backend="tensorflow", mode=mode, precision=precision, batch=batch, **label,
                                     paper_model=paper_model(base_recipe), seconds_per_step=seconds, **compared))
                    print(format_row(rows[-1]), flush=True)
                    if profile:
                        name = re.sub(r"[^A-Za-z0-9.]+", "_", row_label(label)).strip("_")
                        logdir = os.path.join(profile, f"{mode}_{precision}_{batch}_{name}")
                        rows[-1]["op_seconds"], rows[-1]["profiled_wall_seconds"] = profile_steps(
                            run_steps[0], timed, logdir)
                        print(format_profile(rows[-1]), flush=True)
        keras.mixed_precision.set_global_policy("float32")
    return rows


def check_step_memory(nets, batch, precision, devices):
    """Refuse a batch whose step cannot fit in this machine's memory, when the step runs on the CPU."""
    from facegan import training_loop
    if training_loop.on_cpu(devices):
        data_io.check_memory(training_loop.step_memory(nets, batch, precision), f"a step of batch {batch}",
                             "give smaller --batches")


CONVOLUTION_PASSES = ("forward", "input gradient", "kernel gradient")


def convolution_rows(precisions, batches, warmup, steps, recipes):
    """Each convolution of the presets' G and D timed alone as the step runs it (its layer's own call and
    gradients, so models.MatmulGradientConv2D's matrix-product kernel gradient where it applies), forward,
    input gradient and kernel gradient: one row per layer with the GFLOP/s of each. The passes of all layers
    are timed in turn, `steps` rounds, and each row keeps the medians."""
    import keras
    import tensorflow as tf
    import models
    from facegan import gan_step
    rows = []
    for precision in precisions:
        for label, base_recipe in recipes:
            nets = gan_step.build_models({**base_recipe, "precision": precision})
            for batch in batches:
                timed = []  # (row, {pass: tf.function})
                for model in (nets["generator"], nets["discriminator"]):
                    for layer in model.layers:
                        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
                            continue
                        in_shape, out_shape = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
                        x = tf.cast(tf.random.normal((batch, *in_shape)), layer.compute_dtype)
                        dy = tf.cast(tf.random.normal((batch, *out_shape)), layer.compute_dtype)
                        # multiply-adds per image: kernel size x channels at each position of the small side
                        # (a resize convolution that runs as a stride-2 transposed one has a k4 kernel)
                        transposed = isinstance(layer, models.ResizeConv2D) and layer.transposed()
                        small_side = isinstance(layer, keras.layers.Conv2DTranspose) or transposed
                        positions = math.prod((in_shape if small_side else out_shape)[:2])
                        taps = 16 / 9 if transposed else 1
                        flops = 2 * batch * positions * math.prod(layer.kernel.shape) * taps

                        def gradient(wrt, layer=layer, x=x, dy=dy):
                            with tf.GradientTape() as tape:
                                tape.watch(x)
                                y = layer(x)
                            return tape.gradient(y, x if wrt == "input" else layer.kernel, output_gradients=dy)
                        passes = {"forward": tf.function(lambda layer=layer, x=x: layer(x)),
                                  "input gradient": tf.function(lambda gradient=gradient: gradient("input")),
                                  "kernel gradient": tf.function(lambda gradient=gradient: gradient("kernel"))}
                        row = dict(backend="tensorflow", precision=precision, **label, batch=batch,
                                   network=model.name, layer=layer.name, input=list(in_shape),
                                   output=list(out_shape), gflop=flops / 1e9)
                        timed.append((row, passes))
                seconds = {(i, name): [] for i in range(len(timed)) for name in CONVOLUTION_PASSES}
                for round_ in range(warmup + steps):
                    for i, (_, passes) in enumerate(timed):
                        for name, run in passes.items():
                            start = time.perf_counter()
                            keras.ops.convert_to_numpy(run()[..., :1])  # waits for the result
                            if round_ >= warmup:
                                seconds[i, name].append(time.perf_counter() - start)
                for i, (row, _) in enumerate(timed):
                    for name in CONVOLUTION_PASSES:
                        row[f"{name} GFLOP/s"] = row["gflop"] / statistics.median(seconds[i, name])
                    rows.append(row)
            keras.mixed_precision.set_global_policy("float32")
    return rows


def print_convolution_table(rows, peaks):
    """The rows of convolution_rows as a markdown table, each rate with its share of the measured peak."""
    print("\n| precision | recipe | layer | input -> output | GFLOP | " + " | ".join(CONVOLUTION_PASSES) + " |\n"
          + "|---" * (5 + len(CONVOLUTION_PASSES)) + "|")
    for row in rows:
        peak = peaks[row["precision"]]
        cells = [f"{row[f'{name} GFLOP/s']:.0f}" + (f" ({100 * row[f'{name} GFLOP/s'] / peak:.0f}%)" if peak else "")
                 for name in CONVOLUTION_PASSES]
        shapes = "x".join(map(str, row["input"])) + " -> " + "x".join(map(str, row["output"]))
        print(f"| {row['precision']} | {row_label(row)} | {row['network'][0].upper()} {row['layer']} | {shapes} | "
              f"{row['gflop']:.2f} | " + " | ".join(cells) + " |")


def jax_rows(precisions, batches, warmup, steps, epoch_images, recipes):
    import jax
    import jax.numpy as jnp
    import keras
    rows = []
    # One epoch's worth of uint8 images on the device, shared by every row.
    images = order = None
    if epoch_images:
        from facegan import training_loop
        if training_loop.on_cpu([str(d) for d in jax.devices()]):  # made on the host, then put on the device
            data_io.check_memory(2 * epoch_images * 64 * 64 * 3, f"--epoch-images {epoch_images}",
                                 "give a smaller --epoch-images")
        images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (epoch_images, 64, 64, 3), np.uint8))
        order = np.random.default_rng(2).permutation(epoch_images)
    for precision in precisions:
        jax.config.update("jax_default_matmul_precision", JAX_MATMUL_PRECISION.get(precision))
        policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(precision, "float32")
        keras.mixed_precision.set_global_policy(policy)
        for batch in batches:
            for label, base_recipe in recipes:
                try:
                    rows.append(jax_row(precision, batch, warmup, steps, images, order, label, base_recipe))
                    print(format_row(rows[-1]), flush=True)
                except Exception as error:  # one failing setting must not cost the others (device time is scarce)
                    print(f"jax {precision} batch {batch} {row_label(label)} failed: {type(error).__name__}: "
                          f"{error}", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return rows


def jax_row(precision, batch, warmup, steps, images, order, label, base_recipe):
    """Time one setting of train.py's JAX step (gan_step.build_jax_train_step)."""
    import jax
    import jax.numpy as jnp
    import keras
    from facegan import gan_step
    recipe = {**base_recipe, "precision": "fp32" if precision == "tf32" else precision}
    nets = gan_step.build_models(recipe)
    check_step_memory(nets, batch, recipe["precision"], [str(d) for d in jax.devices()])
    epoch = images is not None
    if not epoch:
        size = recipe["image_size"]
        images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8))
        order = np.arange(batch)
    step = gan_step.build_jax_train_step(nets, recipe, images)
    first_batch = order[:batch]
    state = {"now": gan_step.jax_state(nets)}  # the step's state, carried from step to step

    def run_step(indices=first_batch):  # steady state: the first batch every step (one compilation)
        state["now"], logs = step(state["now"], indices)  # the logs on the host, as train.py's progress bar reads them
        return logs
    compile_start = time.perf_counter()
    run_step()
    compile_seconds = time.perf_counter() - compile_start
    seconds = time_steps(run_step, warmup, steps)
    row = dict(backend="jax", mode="jit", precision=precision, batch=batch, **label,
               paper_model=paper_model(base_recipe), seconds_per_step=seconds,
               first_step_seconds=round(compile_seconds, 2), device=str(jax.devices()[0]),
               jax=jax.__version__, keras=keras.__version__)
    if epoch:
        n_steps = images.shape[0] // batch
        start = time.perf_counter()
        for i in range(n_steps):
            last_logs = run_step(order[i * batch:(i + 1) * batch])
        row["epoch_seconds"] = time.perf_counter() - start
        row["epoch_images"] = n_steps * batch
        row["epoch_final_losses"] = [round(float(last_logs[key]), 4) for key in ("d_loss", "g_loss")]
    if recipe["precision"] == "fp16":
        gan_step.write_jax_state(nets, state["now"])
        row["final_loss_scale"] = float(nets["g_optimizer"].dynamic_scale.numpy())
    return row


def gemm_gflops(precision, size=2048, repeats=20):
    """The machine's measured matrix-multiply ceiling in one precision: GFLOP/s of a size x size x size GEMM
    on the Keras backend (the best of `repeats`, after one untimed run)."""
    import keras
    from keras import ops
    dtype = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    if keras.backend.backend() == "jax":  # the matrix units the JAX rows of this precision use
        import jax
        jax.config.update("jax_default_matmul_precision", JAX_MATMUL_PRECISION.get(precision))
    a, b = (ops.cast(keras.random.normal((size, size), seed=seed), dtype) for seed in (1, 2))
    best = float("inf")
    for i in range(repeats + 1):
        start = time.perf_counter()
        product = ops.matmul(a, b)
        ops.convert_to_numpy(product[:1, :1])  # waits for the device
        if i:
            best = min(best, time.perf_counter() - start)
    return round(2 * size ** 3 / best / 1e9, 1)


def use_backend(backend):
    """Make `backend` Keras' backend for this process (KERAS_BACKEND, read when Keras is imported): the rows
    are labelled with it. Refused when Keras already runs on another."""
    os.environ["KERAS_BACKEND"] = backend
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        raise cli.UserError(f"--backend {backend}: Keras already runs on {keras.backend.backend()} in this process")


def format_row(row, peak=None):
    images_per_second = row["batch"] / row["seconds_per_step"]
    row["images_per_second"] = round(images_per_second, 1)
    counted = row["paper_model"]  # the cost model's FLOPs are the paper's networks'
    row["gflops"] = round(images_per_second * GFLOP_PER_IMAGE, 1) if counted else None
    text = (f"{row['backend']:>10} {row['mode']:>5} {row['precision']:>4} batch {row['batch']:>3} "
            f"{row_label(row):>5}: {images_per_second:8.1f} images/s"
            + (f"  {row['gflops']:8.1f} GFLOP/s" if counted else ""))
    if peak and counted:
        row["percent_of_peak"] = round(100 * row["gflops"] / peak, 1)
        text += f"  {row['percent_of_peak']:5.1f}% of {peak:.0f}"
    if "speedup" in row:
        row["baseline_images_per_second"] = round(row["batch"] / row["baseline_seconds_per_step"], 1)
        text += f"  baseline {row['baseline_images_per_second']:8.1f} images/s: {row['speedup']:.2f}x"
    if "epoch_seconds" in row:
        text += f"  epoch of {row['epoch_images']:,} images: {row['epoch_seconds']:.2f} s"
    return text


@cli.main_wrapper
def main(argv=None):
    args = parse_args(argv)
    use_backend(args.backend)
    if os.path.isdir(args.out):
        raise cli.UserError(f"--out {args.out} is a folder; give the JSON file to write")
    cli.check_output_folder(os.path.dirname(args.out))  # before minutes of timing
    peaks = {precision: args.peak_gflops for precision in args.precisions}
    if args.measure_peak:
        peaks = {precision: gemm_gflops(precision) for precision in args.precisions}
        for precision, gflops in peaks.items():
            print(f"measured peak, {precision} 2048^3 matrix multiply: {gflops:.1f} GFLOP/s", flush=True)
    recipes = recipes_to_time(args.presets, args.train_flags)
    if args.convolutions:
        rows = convolution_rows(args.precisions, args.batches, args.warmup, args.steps, recipes)
        print_convolution_table(rows, peaks)
        data_io.save_json(args.out, {"argv": sys.argv[1:], "peak_gflops": peaks, "measured_peak": args.measure_peak,
                                     "convolutions": rows})
        print(f"wrote {args.out}")
        return 0
    if args.backend == "jax":
        rows = jax_rows(args.precisions, args.batches, args.warmup, args.steps, args.epoch_images, recipes)
    else:
        rows = tf_rows(args.modes, args.precisions, args.batches, args.warmup, args.steps, recipes, args.baseline,
                       args.profile)
    for row in rows:
        format_row(row, peaks[row["precision"]])
    print_table(rows, with_peak=any(peaks.values()), with_baseline=bool(args.baseline))
    data_io.save_json(args.out, {"argv": sys.argv[1:], "peak_gflops": peaks, "measured_peak": args.measure_peak,
                                 "rows": rows})
    print(f"wrote {args.out}")
    return 0


def print_table(rows, with_peak, with_baseline):
    columns = ["backend", "mode", "precision", "batch", "recipe", "images/s", "GFLOP/s"]
    columns += ["% of peak"] * with_peak + ["baseline images/s", "speedup"] * with_baseline
    print("\n| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for row in rows:
        cells = [row["backend"], row["mode"], row["precision"], row["batch"], row_label(row), row["images_per_second"],
                 row["gflops"] or "–"] + [row.get("percent_of_peak", "–")] * with_peak
        if with_baseline:
            cells += [row["baseline_images_per_second"], f"{row['speedup']:.2f}x"]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


def parse_args(argv=None):
    """The flags, each checked when parsed and their combinations after (a usage error, exit 2)."""
    parser = argparse.ArgumentParser(usage="python benchmark.py [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--backend", default="tensorflow", choices=("tensorflow", "jax"),
                        help="the Keras backend whose train.py step is timed")
    parser.add_argument("--modes", nargs="+", default=None, choices=("graph", "xla", "eager"), metavar="MODE",
                        help="TensorFlow: graph, xla and/or eager (default all three; JAX: always jax.jit)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=("fp32", "tf32", "bf16", "fp16"), metavar="PRECISION",
                        help="fp32, bf16, fp16 (mixed precision) and/or tf32 (jax, GPU)")
    parser.add_argument("--batches", nargs="+", type=cli.positive_int, default=[64, 128, 256], metavar="N",
                        help="batch sizes")
    parser.add_argument("--presets", nargs="+", default=None, choices=sorted(presets.PRESETS),
                        metavar="PRESET", help="train.py presets to time: dcgan and/or best (default dcgan; none "
                        "with --train-flags)")
    parser.add_argument("--train-flags", nargs="+", default=None, metavar="FLAGS",
                        help="train.py flags, a quoted string per recipe timed after the presets: '--arch resnet'")
    parser.add_argument("--warmup", type=cli.non_negative_int, default=3, metavar="N",
                        help="untimed steps first (compilation)")
    parser.add_argument("--steps", type=cli.positive_int, default=10, metavar="N", help="timed steps per setting")
    parser.add_argument("--peak-gflops", type=cli.positive_float, default=None, metavar="X",
                        help="the machine's peak GFLOP/s for the one precision timed: adds a %% of peak column")
    parser.add_argument("--measure-peak", action="store_true",
                        help="first time a 2048^3 matmul per precision as its peak, for the %% of peak column")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="another checkout (git worktree) timed in turn with this one: each row's speedup")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="trace --steps more steps per row with TensorFlow's profiler; op time by class")
    parser.add_argument("--convolutions", action="store_true",
                        help="instead of steps, time each convolution of G and D alone: GFLOP/s, %% of peak")
    parser.add_argument("--epoch-images", type=cli.non_negative_int, default=0, metavar="N",
                        help="jax only: also time one epoch of N images (0 = no)")
    parser.add_argument("--out", default=os.path.join("outputs", "benchmark.json"), metavar="JSON",
                        help="JSON output file")
    args = parser.parse_args(argv)
    if args.backend == "tensorflow" and "tf32" in args.precisions:
        parser.error("--precisions tf32 is for --backend jax (TensorFlow's GPU default already uses TF32)")
    if args.backend == "jax" and args.modes:
        parser.error("--modes are TensorFlow's; the JAX step is always jax.jit")
    if args.backend == "tensorflow" and args.epoch_images:
        parser.error("--epoch-images is for --backend jax")
    if 0 < args.epoch_images < max(args.batches):
        parser.error(f"--epoch-images {args.epoch_images} is less than one batch of {max(args.batches)}")
    if (args.baseline or args.profile or args.convolutions) and args.backend == "jax":
        parser.error("--baseline, --profile and --convolutions time TensorFlow's step")
    if args.baseline and args.train_flags:
        parser.error("--baseline times presets only: another checkout may not know --train-flags' settings")
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "models.py")):
        raise cli.UserError(f"--baseline {args.baseline}: not a checkout of this project (no models.py)")
    if args.peak_gflops and args.measure_peak:
        parser.error("give --peak-gflops or --measure-peak, not both")
    if args.peak_gflops and len(set(args.precisions)) > 1:
        parser.error("--peak-gflops is one precision's peak; give one --precisions (or --measure-peak for each)")
    args.modes = args.modes or ["graph", "xla", "eager"]
    args.train_flags = args.train_flags or []
    args.presets = args.presets if args.presets is not None else [] if args.train_flags else ["dcgan"]
    return args


if __name__ == "__main__":
    sys.exit(main())
