"""The training recipe: what one GAN step computes, and the compiled step that runs it.

A recipe is one dict (a run's config: presets.PAPER with a preset and flags applied). The recipe's math -- the
losses, DiffAugment, the mode-seeking term, the R1/R2, LeCam and consistency penalties, the EMA of G's weights --
is written in keras.ops,
so it means the same on every Keras backend. The compiled step is written once per backend, both calling
those functions: build_train_step (TensorFlow: gradient tapes, tf.function, tf.distribute replicas) and
build_jax_train_step (JAX: Keras' stateless API under jax.jit).

Each step: one discriminator update on a real batch (label 1) and a fake batch (label 0) in separate
batch-norm passes, then one generator update through the updated discriminator with the non-saturating
loss -log D(G(z)).
"""
import keras
from keras import ops

import models
from facegan import hardware

ADA_INTERVAL = 4  # D updates between adjustments of the adaptive augmentation probability (Karras et al. 2020)
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def auto_precision(cpuinfo=None, accelerators=None):
    """(precision, reason) for --precision auto: bf16 mixed precision where the hardware computes in bf16
    natively (TPUs, NVIDIA GPUs of compute capability 8.0 on, x86 CPUs with AVX512_BF16 or AMX_BF16, Arm CPUs
    with BF16), else fp32. cpuinfo: /proc/cpuinfo's text; accelerators: [(kind "gpu"/"tpu", compute capability
    (major, minor) or None)]; both read from this machine and the Keras backend's devices when None."""
    accelerators = backend_accelerators() if accelerators is None else accelerators
    for kind, capability in accelerators:  # the step runs on the accelerator when there is one
        if kind == "tpu":
            return "bf16", "TPU"
        if capability is not None and tuple(capability) >= (8, 0):
            return "bf16", f"GPU of compute capability {capability[0]}.{capability[1]}"
    if accelerators:
        return "fp32", "GPU without native bf16 (compute capability below 8.0)"
    features = hardware.cpu_flags(cpuinfo)
    if features is None:
        return "fp32", "CPU features unknown (no /proc/cpuinfo)"
    for flag in ("amx_bf16", "avx512_bf16", "bf16"):
        if flag in features:
            return "bf16", f"CPU has {flag.upper()}"
    return "fp32", "CPU without native bf16 (no AVX512_BF16, AMX_BF16 or Arm BF16)"


def backend_accelerators():
    """[(kind, compute capability or None)] of the GPUs and TPUs the Keras backend sees."""
    if keras.backend.backend() == "jax":
        import jax
        found = []
        for device in jax.devices():
            capability = getattr(device, "compute_capability", None)  # "8.0" on NVIDIA GPUs
            if device.platform == "gpu" or device.platform == "tpu":
                found.append((device.platform, tuple(int(n) for n in capability.split(".")) if capability else None))
        return found
    import tensorflow as tf
    return ([("tpu", None) for _ in tf.config.list_physical_devices("TPU")]
            + [("gpu", tf.config.experimental.get_device_details(gpu).get("compute_capability"))
               for gpu in tf.config.list_physical_devices("GPU")])


# ----- the recipe's math (keras.ops) ---------------------------------------------------------------------

def to_model_range(real_uint8, dtype):
    """uint8 images -> [-1, 1], the range of G's tanh output."""
    return ops.cast(real_uint8, dtype) / 127.5 - 1.0


def bce(labels, logits):
    """Mean sigmoid cross-entropy. Not keras.losses: under tf.distribute those divide by the replica count."""
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True))


def d_loss(real_logits, fake_logits, recipe):
    """D's loss. bce: real target 1 - label_smoothing (one-sided smoothing, Salimans et al. 2016), fake 0.
    lsgan: least squares to targets 1 and 0 (Mao et al. 2017). rpgan: the relativistic pairing loss, each real
    against the fake at its place in the batch (Jolicoeur-Martineau 2019; Huang et al. 2024)."""
    if recipe["loss"] == "hinge":
        return ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))
    if recipe["loss"] == "lsgan":
        return 0.5 * (ops.mean(ops.square(real_logits - 1.0)) + ops.mean(ops.square(fake_logits)))
    if recipe["loss"] == "rpgan":
        return ops.mean(ops.softplus(fake_logits - real_logits))
    return (bce(ops.full_like(real_logits, 1.0 - recipe["label_smoothing"]), real_logits)
            + bce(ops.zeros_like(fake_logits), fake_logits))


def g_loss(fake_logits, recipe, real_logits=None):
    """G's adversarial loss; bce: the non-saturating loss, maximising log D(G(z)) by labelling fakes real.
    rpgan needs D's logits of the real batch (constants here): G pushes each fake above its paired real."""
    if recipe["loss"] == "hinge":
        return -ops.mean(fake_logits)
    if recipe["loss"] == "lsgan":
        return 0.5 * ops.mean(ops.square(fake_logits - 1.0))
    if recipe["loss"] == "rpgan":
        return ops.mean(ops.softplus(real_logits - fake_logits))
    return bce(ops.ones_like(fake_logits), fake_logits)


def gradient_penalty(grads, gamma):
    """R1 on reals or R2 on fakes (Mescheder et al. 2018): gamma/2 * E|grad D|^2 over the batch."""
    grads = ops.cast(grads, "float32")
    return gamma / 2 * ops.mean(ops.sum(ops.square(grads), axis=[1, 2, 3]))


def mode_seeking_penalty(fake, z, weight):
    """MSGAN (Mao et al. 2019): pair the batch's first half with its second; the mean image distance per
    unit of noise distance is the ratio G keeps up, so nearby noise may not collapse onto one face."""
    half = ops.shape(z)[0] // 2
    fake = ops.cast(fake, "float32")
    ratio = (ops.mean(ops.abs(fake[:half] - fake[half:2 * half]))
             / ops.mean(ops.abs(z[:half] - z[half:2 * half])))
    return weight / (ratio + 1e-5)


def penalties_due(d_iterations, recipe):
    """Whether the D update after `d_iterations` updates takes the R1 / R2 penalties: every update, or lazily
    (StyleGAN2, Karras et al. 2020) every r1_every-th, then with gamma scaled by r1_every (penalty_gamma) so
    that the penalty's average weight is unchanged."""
    return bool(recipe["r1"] or recipe["r2"]) and d_iterations % recipe["r1_every"] == 0


def penalty_gamma(recipe, key):
    """The gamma of the "r1" or "r2" penalty when it is taken."""
    return recipe[key] * recipe["r1_every"]


def lecam_penalty(real_logits, fake_logits, anchors, weight):
    """LeCam regularisation (Tseng et al. 2021): D's real logits are pulled down towards the running mean of
    its fake logits, and its fake logits up towards the running mean of its real ones, but only where they
    have moved past them; this bounds how far D can separate the two on a small training set.
    anchors: (running mean of real logits, running mean of fake logits)."""
    anchors = ops.stop_gradient(anchors)
    return weight * (ops.mean(ops.square(ops.relu(real_logits - anchors[1])))
                     + ops.mean(ops.square(ops.relu(anchors[0] - fake_logits))))


def update_lecam_anchors(anchors, real_logits, fake_logits, d_iterations):
    """anchors <- the running means of D's real and fake logits (decay 0.99 with the EMA warm-up)."""
    decay = ema_decay(d_iterations, 0.99)
    means = ops.stop_gradient(ops.stack([ops.mean(real_logits), ops.mean(fake_logits)]))
    anchors.assign(decay * anchors + (1.0 - decay) * means)


def consistency_transform(x, seed):
    """bCR's augmentation T (Zhao et al. 2020, Improved Consistency Regularization): a random horizontal flip
    and a translation of up to 1/8 of the size, drawn per image."""
    flip = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=seed) < 0.5
    return diff_augment(ops.where(flip, ops.flip(x, axis=2), x), "translation", seed)


def consistency_penalty(logits, transformed_logits, weight):
    """bCR: weight * E (D(x) - D(T(x)))^2, for the real batch and the fake batch alike."""
    return weight * ops.mean(ops.square(logits - transformed_logits))


def d_regularisers(real_in, fake_in, real_logits, fake_logits, logits_of, recipe, nets, d_state=None):
    """(the LeCam and bCR terms of D's loss, D's state after them): 0 when the recipe has neither. real_in /
    fake_in: the batches D saw, with their logits; logits_of(images, d_state) -> (logits, d_state): D's float32
    logits in training mode, for bCR's extra passes, threading D's batch-norm state (None where D's variables
    hold it)."""
    penalty = 0.0
    if recipe["lecam"]:
        penalty += lecam_penalty(real_logits, fake_logits, nets["lecam_anchors"], recipe["lecam"])
    if recipe["bcr"]:
        for images, logits in ((real_in, real_logits), (fake_in, fake_logits)):
            transformed, d_state = logits_of(consistency_transform(images, nets["aug_seed"]), d_state)
            penalty += consistency_penalty(logits, transformed, recipe["bcr"])
    return penalty, d_state


def ada_probability(nets):
    """The augmentation probability p after this step (0 without ADA), a float32 scalar."""
    return nets["ada_state"][0] if nets["ada_state"] is not None else ops.zeros((), "float32")


def sample_noise(batch_size, recipe, nets):
    """The step's z ~ N(0, I), drawn from the run's noise seed."""
    return keras.random.normal((batch_size, recipe["latent_dim"]), seed=nets["noise_seed"])


def ema_decay(step, decay):
    """The EMA decay after `step` G updates, with warm-up (as TF's ExponentialMovingAverage with
    num_updates): early on the average follows G closely instead of dragging the random initial weights."""
    step = ops.cast(step, "float32")
    return ops.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(averages, weights, decay):
    """averages <- decay * averages + (1 - decay) * weights, variable by variable."""
    with keras.name_scope("ema"):  # named, so that profiles attribute its ops (benchmark.py --profile)
        for average, weight in zip(averages, weights):
            average.assign(decay * average + (1.0 - decay) * weight)


def diff_augment(x, ops_text, seed, p=None, gated=None):
    """DiffAugment (Zhao et al. 2020) on images in [-1, 1]: random colour (brightness, saturation, contrast),
    translation by up to 1/8 of the size (zero-filled), cutout of a half-size square and a horizontal flip
    (of half the images), each drawn per image. Differentiable, so G learns through it. p: None, every op on
    every image; else a scalar tensor, each op in `gated` (a comma-separated subset of ops_text; None: all of
    them) applied to each image with probability p (ADA), the others to every image."""
    batch, size = ops.shape(x)[0], x.shape[1]

    def uniform(low, high):
        return ops.cast(keras.random.uniform((batch, 1, 1, 1), low, high, seed=seed), x.dtype)

    gated_ops = set((gated or ops_text).split(","))

    def maybe(augmented, original, op):  # ADA: keep each image's original with probability 1 - p
        if p is None or op not in gated_ops:
            return augmented
        return ops.where(keras.random.uniform((batch, 1, 1, 1), seed=seed) < p, augmented, original)

    if "color" in ops_text:
        y = x + uniform(-0.5, 0.5)
        # the channel mean as a sum of slices: XLA on CPU (JAX) computed NaN gradients from ops.mean over
        # the 3-wide channel axis when the mode-seeking term also took G's gradient
        mean = (y[..., 0:1] + y[..., 1:2] + y[..., 2:3]) / 3.0
        y = (y - mean) * uniform(0.0, 2.0) + mean
        mean = ops.mean(y, axis=(1, 2, 3), keepdims=True)
        x = maybe((y - mean) * uniform(0.5, 1.5) + mean, x, "color")
    positions = ops.arange(size)[None, :]
    if "translation" in ops_text:
        shift = size // 8
        offsets = keras.random.randint((2, batch, 1), -shift, shift + 1, seed=seed)
        # Output row i is input row i + offset (zeros past the edge), written as a product with a one-hot matrix
        # per image (one_hot of an index outside [0, size) is all zeros), and the same for columns: exactly
        # the shifted image, and on CPU several times faster than gathers and their scatter-add gradients.
        rows = ops.one_hot(positions + offsets[0], size, dtype=x.dtype)  # (batch, output row, input row)
        columns = ops.one_hot(positions + offsets[1], size, dtype=x.dtype)
        y = ops.einsum("bij,bjkc->bikc", rows, x)
        x = maybe(ops.einsum("bkl,bilc->bikc", columns, y), x, "translation")
    if "cutout" in ops_text:
        centres = keras.random.randint((2, batch, 1), 0, size, seed=seed)
        inside = [ops.abs(positions - centres[i]) < size // 4 for i in range(2)]
        keep = ops.logical_not(ops.logical_and(inside[0][:, :, None], inside[1][:, None, :]))
        x = maybe(x * ops.cast(keep, x.dtype)[..., None], x, "cutout")
    if "flip" in ops_text:
        x = maybe(ops.where(uniform(0.0, 1.0) < 0.5, ops.flip(x, axis=2), x), x, "flip")
    return x


def augment(images, recipe, nets):
    if not recipe["diffaug"]:
        return images
    p = nets["ada_state"][0] if recipe["ada_target"] else None
    with keras.name_scope("diffaugment"):  # named for profiles, as ema_update
        return diff_augment(images, recipe["diffaug"], nets["aug_seed"], p, recipe["ada_ops"] or None)


def update_ada(state, real_logits, d_iterations, recipe):
    """Adaptive augmentation (ADA, Karras et al. 2020). state: [p, sum of sign(D(x)), reals counted]. Every
    ADA_INTERVAL D updates, r = E[sign(D(x))] over the reals D saw since the last adjustment (augmented as
    D sees them) moves p towards keeping r at ada_target: up when D is too sure of the training reals (it is
    memorising them), down when it is not, by the images counted / (ada_kimg * 1000), within [0, 1]. On data
    D does not overfit, p stays near 0."""
    signs = ops.sum(ops.sign(real_logits))
    p, total, seen = state[0], state[1] + signs, state[2] + ops.cast(ops.shape(real_logits)[0], "float32")
    adjusted = ops.clip(p + ops.sign(total / seen - recipe["ada_target"]) * seen / (recipe["ada_kimg"] * 1000.0),
                        0.0, 1.0)
    due = (d_iterations + 1) % ADA_INTERVAL == 0
    state.assign(ops.where(due, ops.stack([adjusted, 0.0, 0.0]), ops.stack([p, total, seen])))


# ----- the networks a recipe trains ----------------------------------------------------------------------

def build_models(recipe, distributed=False):
    """{generator, discriminator, g_optimizer, d_optimizer, noise_seed, ema_generator, aug_seed, lecam_anchors}
    for a recipe (ema_generator / aug_seed / lecam_anchors None when the recipe has no EMA / DiffAugment or
    bCR / LeCam). `distributed`: under a
    multi-replica strategy (call inside its scope), with batch norm synchronized across replicas."""
    keras.mixed_precision.set_global_policy(POLICIES[recipe["precision"]])
    keras.utils.set_random_seed(recipe["seed"])
    generator = models.build_generator(recipe["latent_dim"], recipe["image_size"], recipe["g_width"], distributed,
                                       recipe["upsample"], recipe["g_norm"], recipe["arch"])
    discriminator = models.build_discriminator(recipe["image_size"], recipe["d_width"], distributed,
                                               recipe["spectral_norm"], recipe["minibatch_std"],
                                               recipe["minibatch_std_group"], recipe["arch"])
    nets = {"generator": generator, "discriminator": discriminator}
    for name, model, lr in (("g_optimizer", generator, recipe["g_lr"]), ("d_optimizer", discriminator,
                                                                         recipe["d_lr"])):
        optimizer = keras.optimizers.Adam(lr or recipe["lr"], beta_1=recipe["beta1"], beta_2=recipe["beta2"])
        if recipe["precision"] == "fp16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_weights)
        nets[name] = optimizer
    nets["noise_seed"] = keras.random.SeedGenerator(recipe["seed"])
    nets["ema_generator"] = nets["aug_seed"] = nets["lecam_anchors"] = nets["ada_state"] = None
    if recipe["ema"]:
        nets["ema_generator"] = keras.models.clone_model(generator)
        nets["ema_generator"].set_weights(generator.get_weights())
    if recipe["diffaug"] or recipe["bcr"]:
        nets["aug_seed"] = keras.random.SeedGenerator(recipe["seed"] + 1)
    if recipe["lecam"]:
        # replicas each assign their own batch's means; the mirrored variable keeps their average
        nets["lecam_anchors"] = keras.Variable(ops.zeros((2,)), dtype="float32", trainable=False,
                                               aggregation="mean", name="lecam_anchors")
    if recipe["ada_target"]:  # [p, sum of sign(D(x)), reals counted]: p starts at 0, no augmentation
        nets["ada_state"] = keras.Variable(ops.zeros((3,)), dtype="float32", trainable=False, name="ada_state")
    return nets


def step_logs(d_value, g_value, real_logits, fake_logits, nets, replicas=1):
    """What a step reports, by name (history.STEP_KEYS): both losses, mean D(x) and D(G(z)), ADA's p; divided by
    the replica count where replicas' values are summed."""
    return {"d_loss": d_value / replicas, "g_loss": g_value / replicas,
            "d_real": ops.mean(ops.sigmoid(real_logits)) / replicas,
            "d_fake": ops.mean(ops.sigmoid(fake_logits)) / replicas, "ada_p": ada_probability(nets) / replicas}


# ----- the TensorFlow step -------------------------------------------------------------------------------

def build_train_step(nets, recipe, strategy=None, mode="graph"):
    """The step for real uint8 batches: D update, then G update, then the EMA; returns its logs (step_logs),
    d_loss with D's penalties (R1, R2, LeCam, bCR). nets: from build_models. mode: "graph"
    (tf.function), "xla" (with jit_compile) or "eager". strategy: a tf.distribute strategy; each replica takes
    its slice of the global batch and of the noise."""
    import tensorflow as tf
    generator, discriminator = nets["generator"], nets["discriminator"]
    g_optimizer, d_optimizer = nets["g_optimizer"], nets["d_optimizer"]
    # With fp16 the optimizers are LossScaleOptimizers: scale the loss, they unscale the gradients.
    scale = {opt: getattr(opt, "scale_loss", lambda loss: loss) for opt in (g_optimizer, d_optimizer)}

    def logits_of(images):
        return ops.cast(discriminator(images, training=True), "float32")  # the losses stay float32

    def gan_update(real_uint8, z, with_penalties, replicas=1):
        # Each replica's losses are divided by the replica count: the optimizers sum gradients over
        # replicas, so the update is that of the global batch's mean loss.
        real = to_model_range(real_uint8, generator.compute_dtype)
        d_iterations = d_optimizer.iterations + 0  # a value: the variable moves on with apply_gradients
        # One generator forward serves both updates, as in the PyTorch reference: the D step sees it
        # detached, the G step differentiates through it.
        with tf.GradientTape() as g_tape:
            fake = generator(z, training=True)
            with tf.GradientTape() as d_tape:
                real_in = augment(real, recipe, nets)
                with tf.GradientTape(watch_accessed_variables=False) as r1_tape:
                    r1_tape.watch(real_in)
                    real_logits = logits_of(real_in)  # real and fake in separate batch-norm passes
                    real_logit_sum = ops.sum(real_logits)  # taken inside the tape, for R1
                fake_in = augment(tf.stop_gradient(fake), recipe, nets)
                with tf.GradientTape(watch_accessed_variables=False) as r2_tape:
                    r2_tape.watch(fake_in)
                    fake_logits = logits_of(fake_in)
                    fake_logit_sum = ops.sum(fake_logits)
                d_value = d_loss(real_logits, fake_logits, recipe)
                if with_penalties and recipe["r1"]:
                    d_value += gradient_penalty(r1_tape.gradient(real_logit_sum, real_in), penalty_gamma(recipe, "r1"))
                if with_penalties and recipe["r2"]:
                    d_value += gradient_penalty(r2_tape.gradient(fake_logit_sum, fake_in), penalty_gamma(recipe, "r2"))
                d_value += d_regularisers(real_in, fake_in, real_logits, fake_logits,
                                          lambda images, d_state: (logits_of(images), d_state), recipe, nets)[0]
                scaled_d_loss = scale[d_optimizer](d_value / replicas)
            d_grads = d_tape.gradient(scaled_d_loss, discriminator.trainable_weights)
            d_optimizer.apply_gradients(zip(d_grads, discriminator.trainable_weights))
            if recipe["lecam"]:
                update_lecam_anchors(nets["lecam_anchors"], real_logits, fake_logits, d_iterations)
            if recipe["ada_target"]:
                update_ada(nets["ada_state"], real_logits, d_iterations, recipe)
            # G differentiates through the updated D (the combined model of models.build_gan, D's BN in
            # training mode). The logged g_loss is the adversarial loss alone, comparable across recipes.
            # rpgan pairs each fake with a real: D's logits of the real batch, as constants
            real_logits_now = tf.stop_gradient(logits_of(real_in)) if recipe["loss"] == "rpgan" else None
            g_value = g_loss(logits_of(augment(fake, recipe, nets)), recipe, real_logits_now)
            g_objective = g_value
            if recipe["mode_seeking"]:
                g_objective += mode_seeking_penalty(fake, z, recipe["mode_seeking"])
            scaled_g_loss = scale[g_optimizer](g_objective / replicas)
        g_grads = g_tape.gradient(scaled_g_loss, generator.trainable_weights)
        g_optimizer.apply_gradients(zip(g_grads, generator.trainable_weights))
        return step_logs(d_value, g_value, real_logits, fake_logits, nets, replicas)

    def replica_update(real_uint8, z, with_penalties):
        context = tf.distribute.get_replica_context()
        local = tf.shape(real_uint8)[0] // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * local
        return gan_update(real_uint8[start:start + local], z[start:start + local], with_penalties,
                          context.num_replicas_in_sync)

    def train_step(real_uint8, with_penalties):
        # The noise is drawn for the whole global batch, so a distributed run sees the same z as one device.
        z = sample_noise(tf.shape(real_uint8)[0], recipe, nets)
        if strategy is None:
            logs = gan_update(real_uint8, z, with_penalties)
        else:
            logs = {key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                    for key, value in strategy.run(replica_update, args=(real_uint8, z, with_penalties)).items()}
        if nets["ema_generator"] is not None:
            ema_update(nets["ema_generator"].trainable_weights, generator.trainable_weights,
                       ema_decay(g_optimizer.iterations, recipe["ema"]))
        return logs

    # with_penalties is a Python bool: tf.function traces one graph with the R1/R2 penalties and one without
    compiled = train_step if mode == "eager" else tf.function(train_step, jit_compile=(mode == "xla"))

    lazy = bool(recipe["r1"] or recipe["r2"]) and recipe["r1_every"] > 1

    def step(real_uint8):
        if lazy:  # .value.numpy(): the count also reads from a tf.distribute mirrored variable
            return compiled(real_uint8, penalties_due(int(d_optimizer.iterations.value.numpy()), recipe))
        return compiled(real_uint8, bool(recipe["r1"] or recipe["r2"]))
    return step


# ----- the JAX step --------------------------------------------------------------------------------------

def build_jax_train_step(nets, recipe, images):
    """The step of build_train_step on JAX, as Keras' stateless API writes one: step(state, batch_indices) ->
    (state, logs) trains on images[batch_indices], gathered on the device inside the compiled step; logs as
    step_logs, on the host. images: the uint8 training images, on the device. The state (jax_state: weights,
    optimizers, batch-norm statistics, EMA, seeds, and D's update count on the host) stays on the device between
    steps; write_jax_state puts it into the Keras variables (before checkpointing or sampling), and jax_state
    reads it back after anything else changed them."""
    import functools

    import jax

    generator, discriminator = nets["generator"], nets["discriminator"]
    g_optimizer, d_optimizer = nets["g_optimizer"], nets["d_optimizer"]
    scale = {opt: getattr(opt, "scale_loss", lambda loss: loss) for opt in (g_optimizer, d_optimizer)}
    state_variables = jax_state_variables(nets)

    # Inside the step every state variable is read from, and assigned to, one keras.StatelessScope: the
    # recipe functions (SeedGenerator draws, ema_update's assigns, loss scaling) work unchanged on it.
    def current(variables):
        return [variable.value for variable in variables]

    def assign(variables, values):
        for variable, value in zip(variables, values):
            variable.assign(value)

    def d_logits(d_weights, d_state, images):
        """D in training mode on one batch: (float32 logits, D's updated batch-norm / power-iteration state)."""
        logits, d_state = discriminator.stateless_call(d_weights, d_state, images, training=True)
        return ops.cast(logits, "float32"), d_state

    def logit_sum(images, d_weights, d_state):
        logits, d_state = d_logits(d_weights, d_state, images)
        return ops.sum(logits), (logits, d_state)

    def d_pass(d_weights, d_state, images, with_grads):
        """D on one batch: (logits, state, the logits' gradient with respect to the images or None)."""
        if not with_grads:
            return (*d_logits(d_weights, d_state, images), None)
        (_, (logits, d_state)), grads = jax.value_and_grad(logit_sum, has_aux=True)(images, d_weights, d_state)
        return logits, d_state, grads

    def gan_update(real_uint8, with_penalties):
        real = to_model_range(real_uint8, generator.compute_dtype)
        z = sample_noise(real_uint8.shape[0], recipe, nets)
        d_iterations = d_optimizer.iterations.value
        # One generator forward serves both updates: the D step takes it detached, the G step pulls its
        # gradient back through the saved VJP.
        fake, g_backward, g_state = jax.vjp(
            lambda g_weights: generator.stateless_call(g_weights, current(generator.non_trainable_variables), z,
                                                       training=True),
            current(generator.trainable_variables), has_aux=True)
        assign(generator.non_trainable_variables, g_state)
        real_in = augment(real, recipe, nets)
        fake_in = augment(jax.lax.stop_gradient(fake), recipe, nets)

        def d_objective(d_weights):
            d_state = current(discriminator.non_trainable_variables)
            # real and fake in separate batch-norm passes
            real_logits, d_state, real_grads = d_pass(d_weights, d_state, real_in, with_penalties and recipe["r1"])
            fake_logits, d_state, fake_grads = d_pass(d_weights, d_state, fake_in, with_penalties and recipe["r2"])
            value = d_loss(real_logits, fake_logits, recipe)
            if real_grads is not None:
                value += gradient_penalty(real_grads, penalty_gamma(recipe, "r1"))
            if fake_grads is not None:
                value += gradient_penalty(fake_grads, penalty_gamma(recipe, "r2"))
            penalty, d_state = d_regularisers(real_in, fake_in, real_logits, fake_logits,
                                              lambda images, d_state: d_logits(d_weights, d_state, images), recipe,
                                              nets, d_state)
            value += penalty
            return scale[d_optimizer](value), (value, real_logits, fake_logits, d_state)

        (_, (d_value, real_logits, fake_logits, d_state)), d_grads = jax.value_and_grad(
            d_objective, has_aux=True)(current(discriminator.trainable_variables))
        d_weights, d_optimizer_state = d_optimizer.stateless_apply(
            current(d_optimizer.variables), d_grads, current(discriminator.trainable_variables))
        assign(discriminator.trainable_variables, d_weights)
        assign(discriminator.non_trainable_variables, d_state)
        assign(d_optimizer.variables, d_optimizer_state)
        if recipe["lecam"]:
            update_lecam_anchors(nets["lecam_anchors"], real_logits, fake_logits, d_iterations)
        if recipe["ada_target"]:
            update_ada(nets["ada_state"], real_logits, d_iterations, recipe)

        def g_objective(fake):
            # G through the updated D (D's batch norm in training mode); g_loss logs the adversarial loss alone
            d_weights, d_state = current(discriminator.trainable_variables), current(discriminator.non_trainable_variables)
            real_logits_now = None
            if recipe["loss"] == "rpgan":  # each fake paired with a real: D's real logits, as constants
                real_logits_now, d_state = d_logits(d_weights, d_state, jax.lax.stop_gradient(real_in))
                real_logits_now = jax.lax.stop_gradient(real_logits_now)
            logits, d_state = d_logits(d_weights, d_state, augment(fake, recipe, nets))
            value = g_loss(logits, recipe, real_logits_now)
            objective = value
            if recipe["mode_seeking"]:
                objective += mode_seeking_penalty(fake, z, recipe["mode_seeking"])
            return scale[g_optimizer](objective), (value, d_state)

        (_, (g_value, d_state)), fake_grads = jax.value_and_grad(g_objective, has_aux=True)(fake)
        (g_grads,) = g_backward(fake_grads)
        assign(discriminator.non_trainable_variables, d_state)
        g_weights, g_optimizer_state = g_optimizer.stateless_apply(
            current(g_optimizer.variables), g_grads, current(generator.trainable_variables))
        assign(generator.trainable_variables, g_weights)
        assign(g_optimizer.variables, g_optimizer_state)
        if nets["ema_generator"] is not None:
            ema_update(nets["ema_generator"].trainable_weights, generator.trainable_weights,
                       ema_decay(g_optimizer.iterations, recipe["ema"]))
        return step_logs(d_value, g_value, real_logits, fake_logits, nets)

    # with_penalties is static: one compiled step with the R1/R2 penalties and one without
    @functools.partial(jax.jit, static_argnums=3)
    def compiled_step(values, images, batch_indices, with_penalties):
        with keras.StatelessScope(state_mapping=list(zip(state_variables, values))) as scope:
            logs = gan_update(images[batch_indices], with_penalties)
            return [scope.get_current_value(variable) for variable in state_variables], logs

    def step(state, batch_indices):
        # D's update count is kept on the host, so that choosing the lazy-R1 step needs no device read
        values, logs = compiled_step(state["values"], images, batch_indices, penalties_due(state["d_updates"], recipe))
        return {"values": values, "d_updates": state["d_updates"] + 1}, jax.device_get(logs)
    return step


def jax_state_variables(nets):
    """The Keras variables the JAX step carries as its state, in a fixed order."""
    from facegan import run_state
    return list(run_state.state_variables(nets).values())


def jax_state(nets):
    """The JAX step's state, read from the Keras variables."""
    return {"values": [variable.value for variable in jax_state_variables(nets)],
            "d_updates": int(nets["d_optimizer"].iterations.value)}


def write_jax_state(nets, state):
    """Write the JAX step's state into the Keras variables (for checkpoints, samples and saved models)."""
    for variable, value in zip(jax_state_variables(nets), state["values"]):
        variable.assign(value)
