import keras
import numpy as np
import pytest

import models


def test_parameter_counts_match_reference_dcgan():
    generator = models.build_generator(latent_dim=100, image_size=64, width=64)
    discriminator = models.build_discriminator(image_size=64, width=64)
    assert models.count_trainable(generator) == 3_576_704
    assert models.count_trainable(discriminator) == 2_765_568


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_and_ranges(size):
    generator = models.build_generator(latent_dim=16, image_size=size, width=8)
    discriminator = models.build_discriminator(image_size=size, width=8)
    z = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32) * 10  # large z: tanh must clip
    images = np.asarray(generator(z, training=False))
    assert images.shape == (3, size, size, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert np.asarray(discriminator(images, training=False)).shape == (3, 1)


def test_weights_follow_the_paper_initialisation():
    generator = models.build_generator()
    kernel = generator.get_layer("up1").kernel.numpy()
    gamma = generator.get_layer("up1_bn").gamma.numpy()
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.001
    assert abs(gamma.mean() - 1.0) < 0.01 and 0.01 < gamma.std() < 0.03
    assert all("bias" not in w.path for w in generator.weights if "bn" not in w.path)


def test_discriminator_has_no_batchnorm_on_its_input_layer():
    discriminator = models.build_discriminator()
    bn_layers = [layer.name for layer in discriminator.layers if "bn" in layer.name]
    assert bn_layers == ["down2_bn", "down3_bn", "down4_bn"]


def test_combined_model_trains_only_the_generator():
    generator = models.build_generator(latent_dim=16, image_size=32, width=8)
    discriminator = models.build_discriminator(image_size=32, width=8)
    gan = models.build_gan(generator, discriminator)
    assert models.count_trainable(gan) == models.count_trainable(generator)
    assert gan.output_shape == (None, 1)


def test_unsupported_size_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size must be one of"):
        models.build_generator(image_size=48)


def test_spectral_norm_discriminator_divides_each_kernel_by_its_largest_singular_value():
    keras.utils.set_random_seed(0)
    discriminator = models.build_discriminator(32, 8, spectral_norm=True)
    assert not [layer for layer in discriminator.layers if isinstance(layer, keras.layers.BatchNormalization)]
    layer = discriminator.get_layer("down2")
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype("float32")
    for _ in range(200):  # power iteration converges on the top singular vector (slowly: sigma_2/sigma_1 ~ 0.95)
        layer(x, training=True)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    sigma = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), 2)
    expected = keras.ops.convert_to_numpy(keras.ops.conv(x, kernel / sigma, strides=2, padding="same"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), expected, rtol=1e-3,
                               atol=1e-5)


def test_minibatch_std_feature_tells_a_varied_batch_from_copies_of_one_image():
    keras.utils.set_random_seed(0)
    discriminator = models.build_discriminator(32, 8, minibatch_std=True)
    layer = discriminator.get_layer("minibatch_std")
    features = np.random.default_rng(0).normal(size=(4, 4, 4, 32)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(features))
    assert out.shape == (4, 4, 4, 33)
    np.testing.assert_array_equal(out[..., :32], features)  # the input passes through unchanged
    # the extra map is one number: the mean over features of the across-batch standard deviation
    assert np.allclose(out[..., 32], features.std(axis=0).mean(), rtol=1e-4)
    copies = keras.ops.convert_to_numpy(layer(np.repeat(features[:1], 4, axis=0)))
    assert copies[..., 32].max() < 1e-3 < out[..., 32].min()
    # only the logit convolution's one extra input channel is added
    plain = models.build_discriminator(32, 8)
    assert models.count_trainable(discriminator) - models.count_trainable(plain) == 4 * 4 * 1


def test_grouped_minibatch_std_gives_each_image_its_groups_std_for_any_batch_size(tmp_path):
    layer = models.MinibatchStd(group_size=4)
    rng = np.random.default_rng(0)
    for n in (8, 10, 3):  # 10 and 3 do not divide into groups of 4: groups of 3-4 and of 1
        features = rng.normal(size=(n, 2, 2, 5)).astype("float32")
        out = keras.ops.convert_to_numpy(layer(features))
        np.testing.assert_array_equal(out[..., :5], features)
        groups = -(-n // 4)
        for i in range(n):
            members = features[np.arange(n) % groups == i % groups]
            assert np.allclose(out[i, ..., 5], members.std(axis=0).mean() if len(members) > 1 else 1e-4, atol=1e-4)
    # a fake batch in which one group is four copies of one image is caught in that group only
    features = rng.normal(size=(8, 2, 2, 5)).astype("float32")
    features[1::2] = features[1]
    out = keras.ops.convert_to_numpy(layer(features))[:, 0, 0, 5]
    assert out[1::2].max() < 1e-3 < out[0::2].min()
    # the group size survives saving
    discriminator = models.build_discriminator(32, 8, minibatch_std=True, minibatch_std_group=4)
    discriminator.save(tmp_path / "d.keras")
    assert keras.models.load_model(tmp_path / "d.keras").get_layer("minibatch_std").group_size == 4


def test_resize_upsampling_generator_has_no_transposed_convolution_after_the_projection():
    generator = models.build_generator(latent_dim=16, image_size=32, width=8, upsample="resize")
    transposed = [layer.name for layer in generator.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert transposed == ["project"]
    images = np.asarray(generator(np.random.default_rng(0).standard_normal((2, 16)).astype("float32")))
    assert images.shape == (2, 32, 32, 3) and np.abs(images).max() <= 1


def test_spectral_norm_discriminator_runs_in_inference_mode_under_bf16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # conftest restores float32
    discriminator = models.build_discriminator(32, 8, spectral_norm=True)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    logits = np.asarray(discriminator(images, training=False), np.float32)
    assert logits.shape == (2, 1) and np.isfinite(logits).all()


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_discriminator_logits_use_each_batchs_statistics_and_leave_d_unchanged(spectral_norm):
    discriminator = models.build_discriminator(image_size=32, width=8, spectral_norm=spectral_norm)
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    before = [np.array(v) for v in discriminator.non_trainable_variables]
    logits = models.discriminator_logits(discriminator, images, batch_size=4)  # batches of 4, 4 and 2
    for kept, variable in zip(before, discriminator.non_trainable_variables):  # moving averages, SN vectors
        np.testing.assert_array_equal(np.array(variable), kept)
    # the same as D in training mode on each batch by itself, from the state it had (such a call updates it)
    scaled, expected = images.astype(np.float32) / 127.5 - 1.0, []
    for i in (0, 4, 8):
        for kept, variable in zip(before, discriminator.non_trainable_variables):
            variable.assign(kept)
        expected.append(np.asarray(discriminator(scaled[i:i + 4], training=True)).reshape(-1))
    expected = np.concatenate(expected)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, np.asarray(discriminator(scaled, training=False)).reshape(-1), atol=1e-3)


def test_self_modulated_generator_is_batch_norm_until_z_sets_its_gains():
    z = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    plain = models.build_generator(latent_dim=16, image_size=32, width=8)
    selfmod = models.build_generator(latent_dim=16, image_size=32, width=8, norm="selfmod")
    for layer in plain.layers:  # same convolutions; the paper's batch norm at scale 1, shift 0
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(np.ones(layer.gamma.shape, "float32"))
        elif layer.weights:
            selfmod.get_layer(layer.name).set_weights(layer.get_weights())
    modulation = [layer for layer in selfmod.layers if layer.name.endswith(("_gain", "_shift"))]
    assert len(modulation) == 2 * 3  # a gain and a shift per batch norm: the projection and 2 upsamplings
    for layer in modulation:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    same = np.asarray(plain(z, training=True)), np.asarray(selfmod(z, training=True))
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # zero gain and shift: plain batch norm
    gain = selfmod.get_layer("up1_bn_gain")
    gain.set_weights([np.full_like(w, 0.5) for w in gain.get_weights()])
    assert np.abs(np.asarray(selfmod(z, training=True)) - same[0]).max() > 1e-3


def test_residual_networks_have_no_batch_norm_and_each_block_starts_as_its_shortcut():
    generator = models.build_generator(latent_dim=16, image_size=32, width=8, arch="resnet")
    discriminator = models.build_discriminator(32, 8, arch="resnet")
    for network in (generator, discriminator):
        assert not [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]
    branch_ends = [layer for layer in generator.layers + discriminator.layers
                   if layer.name.endswith("_conv2") or layer.name in ("down2", "down3", "down4")]
    assert len(branch_ends) == 4 and all(not np.asarray(layer.kernel).any() for layer in branch_ends)
    images = np.asarray(generator(np.random.default_rng(0).standard_normal((2, 16)).astype("float32")))
    assert images.shape == (2, 32, 32, 3) and np.abs(images).max() <= 1 and images.std() > 1e-3
    assert np.asarray(discriminator(images)).shape == (2, 1)


def trained_batch_norm_results(layer, call, x, weights):
    """(output, gradients of a loss with respect to the input and the layer's weights, moving mean and variance)
    of one training call, from layer's current state."""
    import tensorflow as tf
    for variable, value in zip(layer.weights, weights):
        variable.assign(value)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.cast(call(x), tf.float32)
        # weights that vary per element: a per-channel weighting has no gradient through the normalisation
        weights = tf.constant(np.random.default_rng(1).normal(size=(2, *y.shape)), tf.float32)
        loss = tf.reduce_sum(y * weights[0]) + tf.reduce_sum(tf.square(y) * weights[1])
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights]), layer.moving_mean.value,
            layer.moving_variance.value]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the fused kernel is TensorFlow's")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("affine", [True, False])  # False: self-modulation's batch norm, without gamma and beta
def test_fused_batch_norm_trains_as_keras_batch_norm(policy, affine):
    import tensorflow as tf
    keras.mixed_precision.set_global_policy(policy)  # conftest restores float32
    layer = models.FusedBatchNormalization(momentum=0.9, epsilon=1e-5, center=affine, scale=affine)
    x = tf.constant(np.random.default_rng(0).normal(1.5, 2.0, (16, 8, 8, 6)), tf.float32)
    layer.build(x.shape)
    weights = [np.linspace(0.5, 1.5, 6).astype(np.float32), np.linspace(-1, 1, 6).astype(np.float32)][:2 * affine]
    weights += [np.full(6, 0.3, np.float32), np.full(6, 2.0, np.float32)]  # moving statistics already moved
    fused = trained_batch_norm_results(layer, tf.function(lambda x: layer(x, training=True)), x, weights)
    def keras_call(x, training):  # Keras' own call, on the input as the layer's __call__ casts it
        return keras.layers.BatchNormalization.call(layer, tf.cast(x, layer.compute_dtype), training=training)
    portable = trained_batch_norm_results(layer, tf.function(lambda x: keras_call(x, True)), x, weights)
    # bf16: the output and the input's gradient are bfloat16 on both paths (8 bits of mantissa)
    tolerance = 1e-5 if policy == "float32" else 1e-2
    for name, a, b in zip(["output", "input gradient", "gamma gradient", "beta gradient"][:2 + 2 * affine]
                          + ["moving mean", "moving variance"], fused, portable):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tolerance, atol=tolerance * np.abs(b).max(),
                                   err_msg=name)
    # inference uses the moving averages, as Keras' layer does
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), np.asarray(keras_call(x, False)))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the fused kernel is TensorFlow's")
@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_networks_with_fused_layers_match_keras_layers_and_save_as_them(tmp_path, upsample):
    import json
    import zipfile
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    generator = models.build_generator(latent_dim=16, image_size=32, width=8, upsample=upsample)
    discriminator = models.build_discriminator(image_size=32, width=8)
    z = tf.constant(np.random.default_rng(0).standard_normal((8, 16)), tf.float32)
    results = []
    for g, d in ((generator, discriminator), (models.keras_layers_only(generator), models.keras_layers_only(discriminator))):
        with tf.GradientTape() as tape:
            logits = d(g(z, training=True), training=True)
            loss = tf.reduce_sum(tf.sin(logits))
        gradients = tape.gradient(loss, g.trainable_weights + d.trainable_weights)
        results.append([logits, *gradients, *g.non_trainable_weights, *d.non_trainable_weights])
    for fused, portable in zip(*results):  # float32: equal up to the order of the sums
        np.testing.assert_allclose(np.asarray(fused), np.asarray(portable), rtol=1e-4,
                                   atol=1e-5 * np.abs(np.asarray(portable)).max())
    # saved files hold Keras' own layer: keras.models.load_model reads them without this module
    models.keras_layers_only(generator).save(tmp_path / "g.keras")
    with zipfile.ZipFile(tmp_path / "g.keras") as archive:
        config = archive.read("config.json").decode()
    assert "FusedBatchNormalization" not in config and json.loads(config)["class_name"] == "Functional"
    assert "ResizeConv2D" not in config and ("UpSampling2D" in config) == (upsample == "resize")
    loaded = keras.models.load_model(tmp_path / "g.keras")
    assert loaded.count_params() == generator.count_params()
    np.testing.assert_allclose(np.asarray(loaded(z)), np.asarray(generator(z)), atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients by TensorFlow's tape")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("transposed", [True, False])
def test_resize_convolution_is_a_nearest_resize_then_a_k3_convolution(policy, transposed, monkeypatch):
    import tensorflow as tf
    monkeypatch.setattr(models, "resize_conv_transposed_dtypes", lambda: ("float32", "bfloat16") if transposed else ())
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 6, 7, 3)), tf.float32)  # odd sizes: every border case
    weights = tf.constant(rng.normal(size=(4, 12, 14, 5)), tf.float32)
    kernel = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)

    def results(fused, policy):  # the output and the gradients of the input and of the k3 kernel
        keras.mixed_precision.set_global_policy(policy)  # conftest restores float32
        layer = (models.ResizeConv2D if fused else keras.layers.Conv2D)(5, 3, padding="same", use_bias=False)
        resize = keras.layers.UpSampling2D(2, interpolation="nearest")
        layer.build(x.shape if fused else (4, 12, 14, 3))
        layer.kernel.assign(kernel)
        if fused:
            assert layer.compute_output_shape(x.shape) == (4, 12, 14, 5) and layer.transposed() == transposed
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x) if fused else layer(resize(x)), tf.float32)
            loss = tf.reduce_sum(y * weights)
        return [np.asarray(tf.cast(v, tf.float32)) for v in [y, *tape.gradient(loss, [x, layer.kernel])]]
    truth = results(False, "float32")
    fused, reference = results(True, policy), results(False, policy)
    for name, a, b, exact in zip(["output", "input gradient", "kernel gradient"], fused, reference, truth):
        if not transposed:  # Keras' layers' own ops: a run saved before the layer existed continues bit for bit
            np.testing.assert_array_equal(a, b, err_msg=name)
        elif policy == "float32":  # the same sums in another order
            np.testing.assert_allclose(a, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max(), err_msg=name)
        else:  # bf16 (8 bits of mantissa) rounds other sums on each side: no further from float32 than Keras' own
            error, reference_error = (np.linalg.norm(v - exact) / np.linalg.norm(exact) for v in (a, b))
            assert error <= max(2 * reference_error, 2e-2), name


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the matrix-product gradient is TensorFlow's")
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("shape, kernel, strides, padding", [((8, 8, 16), 4, 2, "same"),  # D's last stride-2 layer
                                                           ((4, 4, 32), 4, 1, "valid")])  # D's logit
def test_matmul_kernel_gradient_convolution_matches_keras_conv(policy, shape, kernel, strides, padding, monkeypatch):
    import tensorflow as tf
    keras.mixed_precision.set_global_policy(policy)  # conftest restores float32
    layer = models.MatmulGradientConv2D(8, kernel, strides=strides, padding=padding, use_bias=False)
    x = tf.constant(np.random.default_rng(0).normal(size=(6, *shape)), tf.float32)
    layer.build(x.shape)
    weights = tf.constant(np.random.default_rng(1).normal(size=layer.compute_output_shape(x.shape)), tf.float32)

    def results():  # the output, both gradients, and the kernel's gradient of an R1-like input-gradient penalty
        @tf.function
        def run(x):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = tf.cast(layer(x), tf.float32)
                    loss = tf.reduce_sum(y * weights)
                dx, dk = tape.gradient(loss, [x, layer.kernel])
                penalty = tf.reduce_sum(tf.square(tf.cast(dx, tf.float32)))
            return [y, dx, dk, outer.gradient(penalty, layer.kernel)]
        patches = {op.type for op in run.get_concrete_function(x).graph.get_operations()} & {"ExtractImagePatches"}
        return run(x), bool(patches)
    matmul, im2col = results()
    monkeypatch.setattr(models, "MATMUL_GRADIENT_MAX_OUTPUT", 0)  # every output "too large": Keras' convolution
    keras_conv, no_im2col = results()
    assert im2col and not no_im2col
    # the same sums in another order; in bf16 on a CPU without native bf16, oneDNN's emulated kernel gradient
    # rounds its partial sums to bf16 where the matrix product does not (a few bf16 steps of the largest value)
    tolerance = 1e-5 if policy == "float32" else 2 ** -5
    for name, a, b in zip(["output", "input gradient", "kernel gradient", "penalty's kernel gradient"], matmul,
                          keras_conv):
        a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
        np.testing.assert_allclose(a, b, rtol=min(tolerance, 1e-2), atol=tolerance * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("flags, bf16_transposed", [({"avx512_bf16"}, True), ({"avx512_bf16", "amx_bf16"}, False),
                                                    (None, True)])
def test_resize_convolution_runs_transposed_in_bf16_except_where_amx_runs_it_slower(flags, bf16_transposed,
                                                                                     monkeypatch):
    monkeypatch.setattr(models.hardware, "cpu_flags", lambda cpuinfo=None: flags)
    assert "float32" in models.resize_conv_transposed_dtypes()
    assert ("bfloat16" in models.resize_conv_transposed_dtypes()) == bf16_transposed


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("resize", [False, True])
def test_matmul_kernel_gradient_transposed_convolution_matches_keras(policy, resize, monkeypatch):
    """G's 4x4 -> 8x8 layer (the paper's transposed convolution, or best's resize convolution in its transposed
    form) with the matrix-product kernel gradient in bf16 gives Keras' output and gradients; it is not used in
    float32 or on AMX CPUs."""
    import tensorflow as tf
    keras.mixed_precision.set_global_policy(policy)  # conftest restores float32
    monkeypatch.setattr(models, "_cpu_has_amx", lambda: False)
    monkeypatch.setattr(models, "resize_conv_transposed_dtypes", lambda: ("float32", "bfloat16"))
    if resize:
        layer = models.ResizeConv2D(6, 3, padding="same", use_bias=False)
    else:
        layer = models.MatmulGradientConv2DTranspose(6, 4, strides=2, padding="same", use_bias=False)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 4, 4, 7)), tf.float32)
    layer.build(x.shape)
    weights = tf.constant(np.random.default_rng(1).normal(size=(5, 8, 8, 6)), tf.float32)

    def results():
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.cast(layer(x), tf.float32)
                loss = tf.reduce_sum(y * weights)
            return [y, *tape.gradient(loss, [x, layer.kernel])]
        patches = {op.type for op in run.get_concrete_function(x).graph.get_operations()} & {"ExtractImagePatches"}
        return run(x), bool(patches)
    matmul, im2col = results()
    monkeypatch.setattr(models, "_cpu_has_amx", lambda: True)  # oneDNN's kernel gradient
    keras_conv, no_im2col = results()
    assert im2col == (policy == "mixed_bfloat16") and not no_im2col  # float32 keeps oneDNN's, as fast there
    tolerance = 1e-5 if policy == "float32" else 2 ** -5
    for name, a, b in zip(["output", "input gradient", "kernel gradient"], matmul, keras_conv):
        a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
        np.testing.assert_allclose(a, b, rtol=min(tolerance, 1e-2), atol=tolerance * np.abs(b).max(), err_msg=name)
