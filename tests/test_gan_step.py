"""The training recipe of gan_step.py, one step at a time on tiny networks."""
import keras
import numpy as np
import pytest

from facegan import gan_step
import models
from facegan import presets
from facegan import run_state


def tiny_recipe(**changes):
    return presets.recipe(latent_dim=16, image_size=32, g_width=8, d_width=8, **changes)


def real_batch(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_diff_augment_keeps_shape_and_range_and_differs_per_image():
    import tensorflow as tf
    images = tf.random.uniform((6, 32, 32, 3), -1, 1, seed=1)
    seed = keras.random.SeedGenerator(0)
    out = np.asarray(gan_step.diff_augment(images, "translation,cutout", seed))
    assert out.shape == (6, 32, 32, 3)
    # translation and cutout only move pixels or zero them: every value is an input value or 0
    assert np.isin(np.round(out, 5), np.append(np.round(np.asarray(images), 5), 0)).all()
    # cutout blanks a 16x16 square (fully inside or clipped at the border): 64..256 zero pixels per image
    zeros = (np.abs(out).sum(-1) == 0).sum(axis=(1, 2))
    assert (zeros >= 8 * 8).all() and (zeros <= 16 * 16 + 2 * 4 * 32).all()
    again = np.asarray(gan_step.diff_augment(images, "translation,cutout", seed))
    assert not np.array_equal(out, again)  # fresh draws each call

def test_translation_shifts_each_image_by_its_offsets_with_zeros_and_passes_gradients_back_the_same_way():
    import tensorflow as tf
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (5, 32, 32, 3)), tf.float32)
    weights = tf.constant(rng.normal(size=(5, 32, 32, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        out = gan_step.diff_augment(images, "translation", keras.random.SeedGenerator(0))
        loss = tf.reduce_sum(out * weights)
    gradient = np.asarray(tape.gradient(loss, images))
    # the offsets diff_augment drew: the first draw of a generator with the same seed
    rows, columns = np.asarray(keras.random.randint((2, 5, 1), -4, 5, seed=keras.random.SeedGenerator(0)))[..., 0]
    expected, expected_gradient = np.zeros((5, 32, 32, 3), np.float32), np.zeros((5, 32, 32, 3), np.float32)
    for b in range(5):  # output pixel (i, j) is input pixel (i + rows[b], j + columns[b]), zero past the edge
        for i in range(32):
            for j in range(32):
                if 0 <= i + rows[b] < 32 and 0 <= j + columns[b] < 32:
                    expected[b, i, j] = np.asarray(images)[b, i + rows[b], j + columns[b]]
                    expected_gradient[b, i + rows[b], j + columns[b]] = np.asarray(weights)[b, i, j]
    np.testing.assert_array_equal(np.asarray(out), expected)
    np.testing.assert_array_equal(gradient, expected_gradient)
    assert len(set(zip(rows, columns))) > 1


def test_diff_augment_with_ada_probability_p_augments_a_share_p_of_the_images():
    import tensorflow as tf
    images = tf.random.uniform((64, 32, 32, 3), 0.1, 1, seed=2)  # no zero pixels: cutout's zeros show
    seed = keras.random.SeedGenerator(0)
    cut = {p: (np.asarray(gan_step.diff_augment(images, "cutout", seed, tf.constant(p))) == 0).all(-1).any((1, 2))
           for p in (0.0, 0.5, 1.0)}
    assert not cut[0.0].any() and cut[1.0].all() and 16 < cut[0.5].sum() < 48
    untouched = gan_step.diff_augment(images, "color,translation,cutout,flip", seed, tf.constant(0.0))
    np.testing.assert_array_equal(np.asarray(untouched), np.asarray(images))
    # --ada-ops: only the gated ops follow p, the others apply to every image (here colour, at p = 0)
    coloured = np.asarray(gan_step.diff_augment(images, "color,cutout", seed, tf.constant(0.0), "cutout"))
    assert not (coloured == 0).all(-1).any() and (np.abs(coloured - np.asarray(images)).max(axis=(1, 2, 3)) > 0).all()
    cut_always = np.asarray(gan_step.diff_augment(images, "color,cutout", seed, tf.constant(1.0), "cutout"))
    assert (cut_always == 0).all(-1).any((1, 2)).all()
    # flip mirrors about half the images, each exactly
    flipped = np.asarray(gan_step.diff_augment(images, "flip", seed))
    mirrored = np.array([np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, np.asarray(images))])
    same = np.array([np.array_equal(f, i) for f, i in zip(flipped, np.asarray(images))])
    assert (mirrored | same).all() and 16 < mirrored.sum() < 48


def test_ada_raises_p_while_d_is_sure_of_the_reals_and_lowers_it_otherwise():
    recipe = tiny_recipe(ada_target=0.6, ada_kimg=1)  # p moves by (images counted) / 1000 per adjustment
    state = keras.Variable(np.zeros(3, np.float32), trainable=False)
    sure, unsure = np.full(16, 3.0, np.float32), np.array([1.0] * 8 + [-1.0] * 8, np.float32)  # r = 1, r = 0
    ps = []
    for d_iterations, logits in enumerate([sure] * 8 + [unsure] * 12):
        gan_step.update_ada(state, keras.ops.convert_to_tensor(logits), d_iterations, recipe)
        ps.append(float(state[0]))
    step = 4 * 16 / 1000  # every ADA_INTERVAL = 4 updates, by the 64 reals counted
    assert gan_step.ADA_INTERVAL == 4
    np.testing.assert_allclose(ps[:8], [0, 0, 0, step, step, step, step, 2 * step], atol=1e-6)
    np.testing.assert_allclose(ps[8:], [2 * step] * 3 + [step] * 4 + [0.0] * 5, atol=1e-6)  # down, never below 0


def test_label_smoothing_lowers_only_the_real_target():
    def first_step(label_smoothing):
        recipe = presets.recipe(latent_dim=16, image_size=32, g_width=8, d_width=8,
                                 label_smoothing=label_smoothing)
        nets = gan_step.build_models(recipe)
        real = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
        # D's logits on this batch before the step (batch norm in training mode: batch statistics)
        real_logits = nets["discriminator"](real.astype("float32") / 127.5 - 1.0, training=True)
        step = gan_step.build_train_step(nets, recipe, mode="eager")
        return float(step(real)["d_loss"]), float(np.mean(real_logits))

    plain, logit_mean = first_step(0.0)
    smoothed, _ = first_step(0.2)
    # BCE(1 - eps, l) - BCE(1, l) = eps * l: the fake term is unchanged
    assert smoothed - plain == pytest.approx(0.2 * logit_mean, abs=1e-5)
    assert abs(logit_mean) > 1e-3  # the check above is not trivially 0 = 0

def test_mode_seeking_pushes_samples_from_different_noise_apart():
    def spread_after_steps(mode_seeking):
        recipe = presets.recipe(latent_dim=16, image_size=32, g_width=8, d_width=8, g_lr=2e-3,
                                 mode_seeking=mode_seeking)
        nets = gan_step.build_models(recipe)
        generator = nets["generator"]
        real = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
        step = gan_step.build_train_step(nets, recipe, mode="eager")
        losses = [float(step(real)["g_loss"]) for _ in range(5)]
        z = np.random.default_rng(2).standard_normal((32, 16)).astype("float32")
        fake = np.asarray(generator(z, training=True))
        return np.mean(np.abs(fake[:16] - fake[16:])), losses

    plain_spread, plain_losses = spread_after_steps(0.0)
    spread, losses = spread_after_steps(10.0)
    assert spread > 1.2 * plain_spread
    assert losses[0] == pytest.approx(plain_losses[0], rel=1e-5)  # g_loss logs the adversarial loss alone


def test_ema_follows_the_warm_up_decay_of_a_numpy_reference():
    decay = 0.9
    recipe = tiny_recipe(ema=decay)
    nets = gan_step.build_models(recipe)
    step = gan_step.build_train_step(nets, recipe, mode="eager")
    average = [keras.ops.convert_to_numpy(w).copy() for w in nets["generator"].trainable_weights]
    for t in range(1, 5):  # after update t the decay is min(0.9, (1 + t) / (10 + t)): 0.18, 0.25, 0.31, 0.36
        step(real_batch(seed=t))
        weights = [keras.ops.convert_to_numpy(w) for w in nets["generator"].trainable_weights]
        d = min(decay, (1 + t) / (10 + t))
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    for expected, actual in zip(average, nets["ema_generator"].trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(average[0], weights[0])  # the average lags G


def first_step_d_loss(recipe, z, monkeypatch):
    """(d_loss of a fresh run's first step, D's real and fake logits on that step's batches, nets)."""
    monkeypatch.setattr(gan_step, "sample_noise", lambda batch_size, recipe, nets: z)
    nets = gan_step.build_models(recipe)
    real = real_batch(16)
    # D's logits before its update, in training mode (batch statistics), as the step computes them
    real_logits = np.asarray(nets["discriminator"](real.astype("float32") / 127.5 - 1.0, training=True))
    fake_logits = np.asarray(nets["discriminator"](nets["generator"](z, training=True), training=True))
    d_value = float(gan_step.build_train_step(nets, recipe, mode="eager")(real)["d_loss"])
    return d_value, real_logits, fake_logits, nets


def test_lecam_adds_its_penalty_and_tracks_the_logit_means(monkeypatch):
    z = np.random.default_rng(1).standard_normal((16, 16)).astype("float32")
    plain, real_logits, fake_logits, _ = first_step_d_loss(tiny_recipe(), z, monkeypatch)
    with_lecam, _, _, nets = first_step_d_loss(tiny_recipe(lecam=0.5), z, monkeypatch)
    # the anchors start at 0: the penalty is 0.5 * (E relu(D(x))^2 + E relu(-D(G(z)))^2)
    expected = 0.5 * (np.mean(np.maximum(real_logits, 0) ** 2) + np.mean(np.maximum(-fake_logits, 0) ** 2))
    assert expected > 1e-4
    assert with_lecam - plain == pytest.approx(expected, rel=1e-3, abs=1e-6)
    # after one update the anchors hold (1 - 0.1) x the logit means (the warm-up decay is 1/10 at first)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(nets["lecam_anchors"]),
                               0.9 * np.array([real_logits.mean(), fake_logits.mean()]), rtol=1e-4, atol=1e-6)


def test_lecam_penalty_pulls_only_logits_past_the_other_sides_mean():
    anchors = np.array([2.0, -1.0], "float32")  # running means: real 2, fake -1
    penalty = gan_step.lecam_penalty(np.array([3.0, -2.0], "float32"), np.array([-2.0, 3.0], "float32"),
                                     anchors, 0.5)
    # reals above -1: (3 - -1)^2 and 0; fakes below 2: (2 - -2)^2 and 0
    assert float(penalty) == pytest.approx(0.5 * (16 / 2 + 16 / 2))


def test_bcr_transform_flips_and_shifts_and_its_penalty_raises_d_loss(monkeypatch):
    images = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    out = np.asarray(gan_step.consistency_transform(images, keras.random.SeedGenerator(3)))
    # a flip and a shift only move pixels (or zero-fill the border): each image's values are a subset of its own
    for before, after in zip(images, out):
        assert np.isin(np.round(after, 5), np.append(np.round(before, 5), 0)).all()
    assert not np.array_equal(out, images)
    z = np.random.default_rng(1).standard_normal((16, 16)).astype("float32")
    plain = first_step_d_loss(tiny_recipe(), z, monkeypatch)[0]
    with_bcr = first_step_d_loss(tiny_recipe(bcr=10.0), z, monkeypatch)[0]
    assert with_bcr > plain + 1e-5


def test_lazy_r1_scales_gamma_on_its_steps_and_skips_the_others(monkeypatch):
    z = np.random.default_rng(1).standard_normal((16, 16)).astype("float32")
    plain = first_step_d_loss(tiny_recipe(), z, monkeypatch)[0]
    every_step = first_step_d_loss(tiny_recipe(r1=1.0), z, monkeypatch)[0]
    lazy, _, _, lazy_nets = first_step_d_loss(tiny_recipe(r1=1.0, r1_every=4), z, monkeypatch)
    assert every_step - plain > 1e-5
    assert lazy - plain == pytest.approx(4 * (every_step - plain), rel=1e-3)  # update 0: gamma x 4
    # update 1 takes no penalty: it equals a plain step from the same state
    plain_nets = gan_step.build_models(tiny_recipe())
    for target, source in zip(run_state.state_variables(plain_nets).values(),
                              run_state.state_variables(lazy_nets).values()):
        target.assign(source)
    second = [float(gan_step.build_train_step(nets, recipe, mode="eager")(real_batch(16, seed=5))["d_loss"])
              for nets, recipe in ((lazy_nets, tiny_recipe(r1=1.0, r1_every=4)), (plain_nets, tiny_recipe()))]
    assert second[0] == pytest.approx(second[1], rel=1e-5)


@pytest.mark.parametrize("precision, compute_dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_steps_train_with_float32_weights_and_losses(precision, compute_dtype):
    recipe = tiny_recipe(precision=precision)
    nets = gan_step.build_models(recipe)
    generator = nets["generator"]
    assert generator.compute_dtype == compute_dtype and generator.trainable_weights[0].dtype == "float32"
    if precision == "fp16":  # float16 gradients underflow without loss scaling
        assert isinstance(nets["g_optimizer"], keras.optimizers.LossScaleOptimizer)
    before = keras.ops.convert_to_numpy(generator.trainable_weights[0]).copy()
    step = gan_step.build_train_step(nets, recipe)
    values = [step(real_batch(16, seed)) for seed in range(3)]
    assert all(v.dtype == "float32" and np.isfinite(float(v)) for logs in values for v in logs.values())
    assert not np.array_equal(keras.ops.convert_to_numpy(generator.trainable_weights[0]), before)


def test_recalibrated_batchnorm_holds_the_mean_batch_statistics_of_fresh_noise():
    keras.utils.set_random_seed(0)
    generator = models.build_generator(16, 32, 8)
    momentum = generator.get_layer("project_bn").momentum
    models.recalibrate_batchnorm(generator, batches=4, batch_size=32, seed=5)
    # the first batch-norm layer's input does not depend on any batch norm: average its batch means directly
    project = keras.Model(generator.input, generator.get_layer("project").output)
    rng = np.random.default_rng([5, 7])  # the noise recalibrate_batchnorm draws
    means = [np.asarray(project(rng.standard_normal((32, 16)).astype(np.float32))).mean(axis=(0, 1, 2))
             for _ in range(4)]
    layer = generator.get_layer("project_bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), np.mean(means, axis=0), rtol=1e-4,
                               atol=1e-6)
    assert layer.momentum == momentum  # training's momentum is back
    # inference mode now gives what training mode gives on a large batch
    z = np.random.default_rng(9).standard_normal((256, 16)).astype(np.float32)
    gap = np.abs(np.asarray(generator(z, training=False)) - np.asarray(generator(z, training=True))).mean()
    assert gap < 0.05


X86_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni {extra}\n"


@pytest.mark.parametrize("cpuinfo, accelerators, precision, reason", [
    (X86_CPUINFO.format(extra=""), [], "fp32", "CPU without native bf16"),  # AVX512 alone computes bf16 slowly
    (X86_CPUINFO.format(extra="avx512_bf16"), [], "bf16", "CPU has AVX512_BF16"),
    (X86_CPUINFO.format(extra="amx_tile amx_bf16"), [], "bf16", "CPU has AMX_BF16"),
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n", [], "bf16", "CPU has BF16"),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n", [], "fp32", "CPU without native bf16"),
    # an accelerator decides, whatever the host CPU has
    (X86_CPUINFO.format(extra="avx512_bf16"), [("gpu", (7, 0))], "fp32", "GPU without native bf16"),
    (X86_CPUINFO.format(extra=""), [("gpu", (8, 0))], "bf16", "GPU of compute capability 8.0"),
    (X86_CPUINFO.format(extra=""), [("gpu", (9, 0)), ("gpu", (9, 0))], "bf16", "GPU of compute capability 9.0"),
    ("", [("tpu", None)], "bf16", "TPU"),
])
def test_auto_precision_picks_bf16_only_where_the_hardware_runs_it_natively(cpuinfo, accelerators, precision,
                                                                             reason):
    chosen, why = gan_step.auto_precision(cpuinfo, accelerators)
    assert chosen == precision and why.startswith(reason)


def test_lsgan_and_rpgan_losses_push_each_side_toward_its_target():
    real, fake = np.array([[2.0], [0.5]], "float32"), np.array([[-1.0], [1.5]], "float32")
    lsgan, rpgan = tiny_recipe(loss="lsgan"), tiny_recipe(loss="rpgan")
    # least squares to 1 (reals) and 0 (fakes); G pulls fakes to 1
    assert float(gan_step.d_loss(real, fake, lsgan)) == pytest.approx(0.5 * ((1 + 0.25) / 2 + (1 + 2.25) / 2))
    assert float(gan_step.g_loss(fake, lsgan)) == pytest.approx(0.5 * (4 + 0.25) / 2)
    # relativistic pairing: each real against the fake at its place; G's loss is D's with the pair swapped
    softplus = lambda x: np.log1p(np.exp(x))
    assert float(gan_step.d_loss(real, fake, rpgan)) == pytest.approx(np.mean(softplus(fake - real)), rel=1e-6)
    assert float(gan_step.g_loss(fake, rpgan, real_logits=real)) == pytest.approx(
        np.mean(softplus(real - fake)), rel=1e-6)


def test_r2_penalises_d_on_the_fakes_and_lazily_like_r1(monkeypatch):
    z = np.random.default_rng(1).standard_normal((16, 16)).astype("float32")
    plain = first_step_d_loss(tiny_recipe(), z, monkeypatch)[0]
    r1 = first_step_d_loss(tiny_recipe(r1=1.0), z, monkeypatch)[0]
    r2 = first_step_d_loss(tiny_recipe(r2=1.0), z, monkeypatch)[0]
    both = first_step_d_loss(tiny_recipe(r1=1.0, r2=1.0), z, monkeypatch)[0]
    lazy = first_step_d_loss(tiny_recipe(r2=1.0, r1_every=4), z, monkeypatch)[0]
    assert r2 - plain > 1e-5 and abs((r2 - plain) - (r1 - plain)) > 1e-6  # its own gradient, on other images
    assert both - plain == pytest.approx((r1 - plain) + (r2 - plain), rel=1e-3)
    assert lazy - plain == pytest.approx(4 * (r2 - plain), rel=1e-3)
