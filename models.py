"""DCGAN generator, discriminator and combined model (Radford, Metz & Chintala 2015).

Same architecture as pytorch/examples dcgan/main.py:
  G: z (latent_dim) -> 4x4x(8*width) -> [ConvTranspose k4 s2, BN, ReLU] x3 -> ConvTranspose k4 s2 -> tanh
  D: [Conv k4 s2, (BN), LeakyReLU 0.2] x4 (no BN on the first) -> Conv k4 valid -> 1 logit
Weights ~ N(0, 0.02), BN gamma ~ N(1, 0.02), beta = 0, convolutions without bias.
At 64 px, width 64, latent 100: G has 3,576,704 and D 2,765,568 trainable parameters.

Usage:  python models.py [--image-size 64 --width 64 --latent-dim 100]   (prints both summaries)
"""
import argparse
import math

if __name__ == "__main__":  # run as a command: TensorFlow's C++ log lines stay off the terminal, as in the others
    from facegan import cli
    cli.quiet_start()
import keras
import numpy as np
from keras import layers, ops

from facegan import hardware

SUPPORTED_SIZES = (32, 64, 128)


def _n_doublings(image_size):
    """Number of stride-2 (de)convolutions between 4x4 and image_size."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size // 4))


def _conv_init():
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


@keras.saving.register_keras_serializable(package="facegan")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, computed while training on the TensorFlow backend by TensorFlow's fused kernel
    (FusedBatchNormV3; oneDNN's on CPU): the same batch statistics (in float32, also for bfloat16 inputs), the
    same output and the same moving averages, in two passes over the activations forward and two backward,
    where Keras' ops take a dozen, with casts to float32 and back around them under mixed precision. Inference,
    other backends, synchronized statistics and masks take Keras' own call. Saved files hold Keras' layer
    (keras_layers_only)."""

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.synchronized or self.renorm
                or keras.backend.backend() != "tensorflow" or len(inputs.shape) != 4 or self.axis not in (-1, 3)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf
        channels = inputs.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,), "float32")
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,), "float32")
        # tf.raw_ops: tf.nn.fused_batch_norm raises epsilon to at least 1.001e-5 (a cuDNN limit); this keeps 1e-5.
        outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=tf.zeros((0,)), variance=tf.zeros((0,)), epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # The kernel's variance has Bessel's correction; Keras averages the biased one.
        count = ops.cast(ops.prod(ops.shape(inputs)[:3]), "float32")
        variance = unbiased_variance * ((count - 1.0) / count)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


# Outputs of at most this many pixels a side take MatmulGradientConv2D's kernel gradient (docs/performance.md).
MATMUL_GRADIENT_MAX_OUTPUT = 4


@keras.saving.register_keras_serializable(package="facegan")
class MatmulGradientConv2D(layers.Conv2D):
    """Keras' Conv2D. On the TensorFlow backend, where the output is at most MATMUL_GRADIENT_MAX_OUTPUT pixels a
    side, the kernel's gradient is computed as one matrix product, the input's patches (im2col) by the output's
    gradient: oneDNN's convolution kernel for it reaches a small share of the machine's matrix rate at those
    sizes (the discriminator's last layers). The output and the input's gradient are the convolution's own; the
    result is the same sum in another order. Saved files hold Keras' Conv2D (keras_layers_only)."""

    def convolution_op(self, inputs, kernel):
        if (keras.backend.backend() != "tensorflow" or self.data_format != "channels_last"
                or tuple(self.dilation_rate) != (1, 1) or self.groups != 1 or None in inputs.shape[1:3]
                or max(self.compute_output_shape(inputs.shape)[1:3]) > MATMUL_GRADIENT_MAX_OUTPUT):
            return super().convolution_op(inputs, kernel)
        return _conv_with_matmul_kernel_gradient(inputs, kernel, tuple(self.strides), self.padding.upper())


def _patch_product(images, gradient, kernel_shape, strides4, padding):
    """The kernel gradient extract_patches(images)^T @ gradient, reshaped to kernel_shape (rows, columns, the
    images' channels, the gradient's channels)."""
    import tensorflow as tf
    rows, columns, channels, filters = kernel_shape
    with tf.name_scope("conv_kernel_gradient"):  # named for benchmark.py --profile
        # patches in (row, column, channel) order: the kernel's layout flattened
        patches = tf.image.extract_patches(images, [1, rows, columns, 1], strides4, [1, 1, 1, 1], padding)
        product = tf.matmul(tf.reshape(patches, (-1, rows * columns * channels)),
                            tf.reshape(gradient, (-1, filters)), transpose_a=True)
    return tf.reshape(product, kernel_shape)


def _conv_with_matmul_kernel_gradient(inputs, kernel, strides, padding):
    """tf.nn.conv2d(inputs, kernel) whose kernel gradient is extract_patches(inputs)^T @ (output gradient)."""
    import tensorflow as tf
    strides4 = [1, *strides, 1]

    @tf.custom_gradient
    def convolve(x, k):
        def gradient(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=k, out_backprop=dy,
                                                strides=strides4, padding=padding)
            return dx, _patch_product(x, dy, k.shape, strides4, padding)
        return tf.nn.conv2d(x, k, strides4, padding), gradient
    # read a variable kernel here, outside: custom_gradient would otherwise differentiate the variable itself
    return convolve(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


# Inputs of at most this many pixels a side take MatmulGradientConv2DTranspose's kernel gradient, in bf16 on CPUs
# without AMX (docs/performance.md).
MATMUL_GRADIENT_MAX_TRANSPOSED_INPUT = 4


def _cpu_has_amx():
    return "amx_bf16" in (hardware.cpu_flags() or ())


def _matmul_transposed_kernel_gradient(layer, inputs):
    """Whether `layer` (a k4 stride-2 "same" transposed convolution) takes the matrix-product kernel gradient: in
    bf16 only (in float32 the two measure the same)."""
    return (keras.backend.backend() == "tensorflow" and layer.compute_dtype == "bfloat16"
            and layer.data_format == "channels_last"
            and None not in inputs.shape[1:3] and max(inputs.shape[1:3]) <= MATMUL_GRADIENT_MAX_TRANSPOSED_INPUT
            and not _cpu_has_amx())


@keras.saving.register_keras_serializable(package="facegan")
class MatmulGradientConv2DTranspose(layers.Conv2DTranspose):
    """Keras' Conv2DTranspose. On the TensorFlow backend, for a k4 stride-2 "same" layer without bias or activation
    whose input is at most MATMUL_GRADIENT_MAX_TRANSPOSED_INPUT pixels a side, in bf16 on CPUs without AMX, the
    kernel's gradient is one matrix product, the output gradient's patches by the input: oneDNN's kernel for it
    runs at a small share of the machine's matrix rate there (G's 4x4 -> 8x8 layer). The output and the input's
    gradient are the convolution's own. Saved files hold Keras' Conv2DTranspose (keras_layers_only)."""

    def call(self, inputs):
        if (tuple(self.kernel_size) != (4, 4) or tuple(self.strides) != (2, 2) or self.padding != "same"
                or self.output_padding is not None or tuple(self.dilation_rate) != (1, 1) or self.use_bias
                or self.activation not in (None, keras.activations.linear)
                or not _matmul_transposed_kernel_gradient(self, inputs)):
            return super().call(inputs)
        return _conv_transpose_with_matmul_kernel_gradient(inputs, self.kernel)


def _conv_transpose_with_matmul_kernel_gradient(inputs, kernel):
    """ops.conv_transpose(inputs, kernel, strides=2, padding="same") (kernel: rows, columns, out, in) whose kernel
    gradient is extract_patches(output gradient)^T @ inputs: the transposed convolution is the input gradient of
    the stride-2 convolution with the same kernel, so the roles of input and output gradient swap."""
    import tensorflow as tf
    strides4 = [1, 2, 2, 1]

    @tf.custom_gradient
    def convolve(x, k):
        def gradient(dy):
            return tf.nn.conv2d(dy, k, strides4, "SAME"), _patch_product(dy, x, k.shape, strides4, "SAME")
        output_shape = tf.stack([tf.shape(x)[0], 2 * x.shape[1], 2 * x.shape[2], k.shape[2]])
        return tf.nn.conv2d_transpose(x, k, output_shape, strides4, "SAME"), gradient
    return convolve(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


# The k4 taps of a stride-2 transposed convolution that equals a 2x nearest-neighbour resize followed by a k3
# "same" convolution, per axis: row a of the k4 kernel is the sum of the k3 rows marked 1. Each output pixel of
# the resize + k3 reads only 2 distinct input pixels per axis, so the k3 taps that land on one pixel add up.
RESIZE_CONV_TAPS = ((0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0))


def resize_conv_transposed_dtypes():
    """The compute dtypes in which ResizeConv2D runs as that transposed convolution on TensorFlow, where it
    measures faster (docs/performance.md): float32; bfloat16 too except on CPUs with AMX, whose oneDNN kernels
    run the transposed form at G's first sizes far below their rate. On JAX (XLA on the CPU) the resize form is
    the faster one."""
    return ("float32",) if _cpu_has_amx() else ("float32", "bfloat16")


@keras.saving.register_keras_serializable(package="facegan")
class ResizeConv2D(layers.Conv2D):
    """A 2x nearest-neighbour resize of its input, then this k3 convolution with "same" padding. On TensorFlow
    in the compute dtypes of resize_conv_transposed_dtypes() it runs as one stride-2 transposed convolution of
    the small input whose k4 kernel is summed from the k3 kernel (RESIZE_CONV_TAPS): the same function with 4/9
    of the multiply-adds; otherwise as the resize and the k3 convolution. Portable Keras ops either way; the
    variables are the k3 convolution's. Saved files hold UpSampling2D + Conv2D (keras_layers_only)."""

    def build(self, input_shape):
        if (tuple(self.kernel_size) != (3, 3) or tuple(self.strides) != (1, 1) or self.padding != "same"
                or tuple(self.dilation_rate) != (1, 1) or self.groups != 1 or self.data_format != "channels_last"):
            raise ValueError("ResizeConv2D is a k3, stride 1, 'same', channels_last convolution")
        super().build(input_shape)

    def transposed(self):
        """Whether this layer runs as the stride-2 transposed convolution (else as resize + k3)."""
        return keras.backend.backend() == "tensorflow" and self.compute_dtype in resize_conv_transposed_dtypes()

    def convolution_op(self, inputs, kernel):
        if not self.transposed():
            with keras.name_scope(f"{self.name}_resize"):  # named for benchmark.py --profile
                inputs = ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2)  # UpSampling2D's nearest resize
            return super().convolution_op(inputs, kernel)
        # k4 tap (a, b) = sum of k3 taps (p, q) with RESIZE_CONV_TAPS[a][p] * RESIZE_CONV_TAPS[b][q] = 1, as one
        # (16, 9) by (9, channels) matrix product (a three-operand einsum runs far slower), summed in float32
        # (under mixed precision the k3 taps arrive in the compute dtype) and cast once
        taps = ops.convert_to_tensor(np.kron(RESIZE_CONV_TAPS, RESIZE_CONV_TAPS), dtype="float32")
        kernel4 = ops.matmul(taps, ops.reshape(ops.cast(kernel, "float32"), (9, -1)))
        kernel4 = ops.reshape(kernel4, (4, 4, kernel.shape[2], kernel.shape[3]))
        kernel4 = ops.transpose(kernel4, (0, 1, 3, 2))  # conv_transpose's (rows, columns, out, in) layout
        kernel4 = ops.cast(kernel4, inputs.dtype)
        if _matmul_transposed_kernel_gradient(self, inputs):
            return _conv_transpose_with_matmul_kernel_gradient(inputs, kernel4)
        return ops.conv_transpose(inputs, kernel4, strides=2, padding="same")

    def compute_output_shape(self, input_shape):
        batch, rows, columns, _ = super().compute_output_shape(input_shape)
        return batch, None if rows is None else 2 * rows, None if columns is None else 2 * columns, self.filters


def keras_layers_only(model):
    """`model` with Keras' own layers in place of the fused ones (same config and weights, so the same
    function): BatchNormalization for FusedBatchNormalization, Conv2D for MatmulGradientConv2D, Conv2DTranspose
    for MatmulGradientConv2DTranspose, and UpSampling2D + Conv2D for ResizeConv2D. A file of it loads with
    keras.models.load_model alone. `model` itself when it has none of them."""
    fused = (FusedBatchNormalization, MatmulGradientConv2D, MatmulGradientConv2DTranspose, ResizeConv2D)
    if not any(type(layer) in fused for layer in model.layers):
        return model

    def clone(layer):
        if isinstance(layer, FusedBatchNormalization):
            return layers.BatchNormalization.from_config(layer.get_config())
        if type(layer) in (MatmulGradientConv2D, ResizeConv2D):
            return layers.Conv2D.from_config({**layer.get_config(), "name": layer.name})
        if type(layer) is MatmulGradientConv2DTranspose:
            return layers.Conv2DTranspose.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())
    resize_convs = {layer.name for layer in model.layers if type(layer) is ResizeConv2D}

    def call(layer, inputs, *args, **kwargs):
        if layer.name in resize_convs:
            inputs = layers.UpSampling2D(2, interpolation="nearest", name=f"{layer.name}_resize")(inputs)
        return layer(inputs, *args, **kwargs)
    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    copy.set_weights(model.get_weights())
    return copy


def _batch_norm(name, synchronized=False):
    # PyTorch BatchNorm2d defaults: momentum 0.1 (Keras' 0.9), eps 1e-5. synchronized: statistics over the
    # global batch when it is split across replicas (tf.distribute), so BN sees the same batch as on one device.
    return FusedBatchNormalization(
        momentum=0.9,
        epsilon=1e-5,
        gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
        synchronized=synchronized,
        name=name,
    )


def _upsample(x, channels, name, upsample):
    """A 2x upsampling convolution: the paper's transposed convolution (k4 s2), or "resize": nearest-neighbour
    resize then a k3 convolution, whose kernel overlaps evenly and so draws no checkerboard (Odena et al. 2016)."""
    if upsample == "resize":
        return ResizeConv2D(channels, 3, padding="same", use_bias=False, kernel_initializer=_conv_init(),
                            name=name)(x)
    return MatmulGradientConv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=_conv_init(), name=name)(x)


def _normalise(x, z, name, norm, synchronized):
    """G's normalisation after a convolution: batch norm (the paper), or "selfmod": batch norm without its own
    scale and shift, which instead come from z through a small MLP (self-modulation, Chen et al. 2019), so each
    sample's noise sets its features' gains."""
    if norm == "batch":
        return _batch_norm(name, synchronized)(x)
    channels = x.shape[-1]
    x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, center=False, scale=False, synchronized=synchronized,
                                name=name)(x)
    hidden = layers.Dense(32, activation="relu", kernel_initializer=_conv_init(), name=f"{name}_mlp")(z)
    gain = layers.Dense(channels, kernel_initializer=_conv_init(), name=f"{name}_gain")(hidden)
    shift = layers.Dense(channels, kernel_initializer=_conv_init(), name=f"{name}_shift")(hidden)
    # x * (1 + gain) + shift: at the start (gain and shift near 0) plain batch norm
    gain, shift = layers.Reshape((1, 1, channels))(gain), layers.Reshape((1, 1, channels))(shift)
    return layers.Add(name=f"{name}_modulated")([layers.Multiply()([x, gain]), x, shift])


def _conv(channels, kernel, name, initializer, strides=1):
    return MatmulGradientConv2D(channels, kernel, strides=strides, padding="same", use_bias=False,
                                kernel_initializer=initializer, name=name)


# Without batch norm to rescale them, the residual networks keep their activations' scale by initialisation:
# He-normal convolutions, and each residual branch's last convolution at zero, so that every block starts as
# its shortcut (as Fixup, Zhang et al. 2019, and R3GAN do).
_RESIDUAL_INIT = "he_normal"


def _residual_up(x, channels, name):
    """G's residual block without batch norm: 2x nearest-neighbour resize, two k3 convolutions, and a k1
    convolution on the shortcut (pre-activation, as SNGAN's ResNet G)."""
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)
    shortcut = _conv(channels, 1, f"{name}_shortcut", _RESIDUAL_INIT)(x)
    y = _conv(channels, 3, f"{name}_conv1", _RESIDUAL_INIT)(layers.LeakyReLU(negative_slope=0.2)(x))
    y = _conv(channels, 3, f"{name}_conv2", "zeros")(layers.LeakyReLU(negative_slope=0.2)(y))
    return layers.Add(name=name)([shortcut, y])


def build_generator(latent_dim=100, image_size=64, width=64, synchronized_bn=False, upsample="transposed",
                    norm="batch", arch="dcgan"):
    """z of shape (latent_dim,) -> image (image_size, image_size, 3) in [-1, 1]. upsample: "transposed" (the
    paper) or "resize" (see _upsample). norm: "batch" (the paper) or "selfmod" (see _normalise). arch: "dcgan"
    or "resnet": residual blocks (_residual_up) without normalisation, which ignore upsample and norm."""
    if upsample not in ("transposed", "resize"):
        raise ValueError(f"upsample must be 'transposed' or 'resize', got {upsample!r}")
    if norm not in ("batch", "selfmod") or arch not in ("dcgan", "resnet"):
        raise ValueError(f"norm must be 'batch' or 'selfmod' and arch 'dcgan' or 'resnet', got {norm!r}, {arch!r}")
    n = _n_doublings(image_size)
    channels = width * 2 ** (n - 1)  # 512 at 64 px / width 64
    z = keras.Input(shape=(latent_dim,), name="z")
    x = layers.Reshape((1, 1, latent_dim))(z)
    # The "project and reshape" step: a 4x4 transposed convolution of the 1x1 input.
    x = layers.Conv2DTranspose(channels, 4, strides=1, padding="valid", use_bias=False,
                               kernel_initializer=_conv_init(), name="project")(x)
    if arch == "resnet":
        for i in range(n - 1):
            channels //= 2
            x = _residual_up(x, channels, f"up{i + 1}")
        x = layers.LeakyReLU(negative_slope=0.2)(x)
        x = layers.UpSampling2D(2, interpolation="nearest", name="to_rgb_resize")(x)
        x = _conv(3, 3, "to_rgb", _conv_init())(x)
        image = layers.Activation("tanh", dtype="float32", name="tanh")(x)
        return keras.Model(z, image, name="generator")
    x = _normalise(x, z, "project_bn", norm, synchronized_bn)
    x = layers.ReLU()(x)
    for i in range(n - 1):
        channels //= 2
        x = _upsample(x, channels, f"up{i + 1}", upsample)
        x = _normalise(x, z, f"up{i + 1}_bn", norm, synchronized_bn)
        x = layers.ReLU()(x)
    x = _upsample(x, 3, "to_rgb", upsample)
    # tanh in float32 even under a mixed-precision policy.
    image = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(z, image, name="generator")


@keras.saving.register_keras_serializable(package="facegan")
class SpectralNormConv2D(MatmulGradientConv2D):
    """Conv2D with its kernel divided by the kernel's largest singular value sigma (Miyato et al. 2018).

    sigma comes from one power-iteration step per training call (the estimate `u` is a non-trainable weight),
    and gradients flow through sigma, as in the paper and torch.nn.utils.spectral_norm. (Keras'
    SpectralNormalization wrapper instead writes W / sigma back into the kernel: a projection, not this.)
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.u = self.add_weight(shape=(1, self.filters), initializer=keras.initializers.RandomNormal(),
                                 trainable=False, name="sn_u")

    # Conv2D saves only its kernel (and bias): keep the power-iteration state with them.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["sn_u"] = self.u

    def load_own_variables(self, store):
        for i, variable in enumerate([self._kernel, self.bias] if self.use_bias else [self._kernel]):
            variable.assign(store[str(i)])
        self.u.assign(store["sn_u"])

    def call(self, inputs, training=False):
        w = ops.reshape(ops.cast(self.kernel, "float32"), (-1, self.filters))
        u = ops.cast(self.u.value, "float32")  # a mixed-precision policy reads it in the compute dtype
        v = _l2_normalize(ops.matmul(u, ops.transpose(w)))
        if training:
            u = ops.stop_gradient(_l2_normalize(ops.matmul(v, w)))
            self.u.assign(u)
        v = ops.stop_gradient(v)
        sigma = ops.sum(ops.matmul(v, w) * u)
        kernel = ops.cast(ops.cast(self.kernel, "float32") / sigma, self.compute_dtype)
        return self.convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="facegan")
class MinibatchStd(layers.Layer):
    """Appends one feature map: the standard deviation of each feature across a group of images, averaged over
    all features and positions (Karras et al. 2018, "minibatch standard deviation").

    D sees real and fake images in separate batches, so a generator that makes too-similar images gives D a
    tell; this pushes G towards the variety of the real batch. group_size 4 (StyleGAN's choice): image i is
    grouped with images i + m, i + 2m, ... (m = ceil(batch / 4) groups), so each image gets its own group's
    number and any batch size works. group_size 0: one number for the whole batch (a far weaker signal at
    batch 128).
    """

    def __init__(self, group_size=0, **kwargs):
        super().__init__(**kwargs)
        self.group_size = group_size

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if not self.group_size:
            std = ops.mean(ops.sqrt(ops.var(x, axis=0) + 1e-8))
            feature = std * ops.ones_like(x[..., :1])
        else:
            n = ops.shape(x)[0]
            groups = (n + self.group_size - 1) // self.group_size
            group_of = ops.arange(n) % groups

            def group_mean(values):
                total = ops.segment_sum(values, group_of, num_segments=groups)
                count = ops.segment_sum(ops.ones_like(values[:, :1, :1, :1]), group_of, num_segments=groups)
                return total / count
            mean = group_mean(x)
            var = ops.maximum(group_mean(ops.square(x)) - ops.square(mean), 0.0)
            std = ops.mean(ops.sqrt(var + 1e-8), axis=(1, 2, 3))  # one number per group
            feature = ops.reshape(ops.take(std, group_of), (-1, 1, 1, 1)) * ops.ones_like(x[..., :1])
        return ops.concatenate([inputs, ops.cast(feature, inputs.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size}


def _l2_normalize(x):
    return x / (ops.sqrt(ops.sum(ops.square(x))) + 1e-12)


def build_discriminator(image_size=64, width=64, synchronized_bn=False, spectral_norm=False, minibatch_std=False,
                        minibatch_std_group=0, arch="dcgan"):
    """image (image_size, image_size, 3) in [-1, 1] -> one logit (real > 0).
    spectral_norm: not the paper; every convolution is a SpectralNormConv2D, and D has no batch norm, as in
    Miyato et al.'s DCGAN-style discriminator (batch norm after a normalised convolution undoes its scale).
    minibatch_std: not the paper; a MinibatchStd feature map before the logit convolution (Karras et al. 2018),
    over groups of minibatch_std_group images (0 = the whole batch).
    arch "resnet": after the first convolution, residual blocks (_residual_down) without batch norm."""
    if arch not in ("dcgan", "resnet"):
        raise ValueError(f"arch must be 'dcgan' or 'resnet', got {arch!r}")
    n = _n_doublings(image_size)

    def conv(filters, strides, padding, name, initializer=None):
        return (SpectralNormConv2D if spectral_norm else MatmulGradientConv2D)(
            filters, 4, strides=strides, padding=padding, use_bias=False,
            kernel_initializer=initializer or _conv_init(), name=name)
    image = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = image
    channels = width
    for i in range(n):
        if arch == "resnet" and i > 0:
            x = _residual_down(x, channels, f"down{i + 1}", conv)
            channels *= 2
            continue
        x = conv(channels, 2, "same", f"down{i + 1}", _RESIDUAL_INIT if arch == "resnet" else None)(x)
        if i > 0 and not spectral_norm:  # the paper: no batch norm on the discriminator's input layer
            x = _batch_norm(f"down{i + 1}_bn", synchronized_bn)(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
        channels *= 2
    if minibatch_std:
        x = MinibatchStd(minibatch_std_group, name="minibatch_std")(x)
    x = conv(1, 1, "valid", "to_logit")(x)
    logit = layers.Flatten(dtype="float32", name="logit")(x)
    return keras.Model(image, logit, name="discriminator")


def _residual_down(x, channels, name, conv):
    """D's residual block without batch norm: a k3 convolution, then the paper's k4 stride-2 one (pre-activation),
    beside a shortcut of 2x average pooling and a k1 convolution; ends activated, as the paper's layers do."""
    shortcut = _conv(channels, 1, f"{name}_shortcut", _RESIDUAL_INIT)(layers.AveragePooling2D(2)(x))
    y = _conv(x.shape[-1], 3, f"{name}_conv1", _RESIDUAL_INIT)(x)
    y = conv(channels, 2, "same", name, "zeros")(layers.LeakyReLU(negative_slope=0.2)(y))
    return layers.LeakyReLU(negative_slope=0.2)(layers.Add(name=f"{name}_sum")([shortcut, y]))


def build_gan(generator, discriminator):
    """The combined model z -> G -> D, with D frozen inside it: training it moves only G.

    Note: this sets discriminator.trainable = False. In Keras 3 a frozen BatchNormalization runs in
    inference mode, so train.py mirrors this model in its generator step with D's layers in training
    mode (batch statistics), as the PyTorch reference does.
    """
    discriminator.trainable = False
    z = keras.Input(shape=generator.input_shape[1:], name="z")
    logit = discriminator(generator(z))
    return keras.Model(z, logit, name="gan")


def recalibrate_batchnorm(generator, batches=16, batch_size=128, seed=0):
    """Set G's batch-norm moving statistics to the average batch statistics of `batches` fresh noise batches.

    During training they are an exponential average over the last ~10 steps, while G changes fast: samples
    drawn in inference mode (the grids, generate.py, evaluate.py, anyone's load_model) then come out worse
    than G really is. A cumulative average over fresh batches with the current weights fixes that
    ("precise BN", Wu & Johnson 2021). Training itself uses batch statistics and is unaffected.
    """
    bn_layers = [layer for layer in generator.layers if isinstance(layer, layers.BatchNormalization)]
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


def discriminator_logits(discriminator, images, batch_size=128):
    """D's logits for uint8 images, with D run as it trains: batch norm on each batch's own statistics, every
    batch from one set only. A stateless call, so D's moving averages (and spectral norm's vectors) are left as
    they were: a training run's result does not depend on being probed. D's inference mode uses moving averages
    that mix real and fake batches, and is miscalibrated for a DCGAN discriminator."""
    trainable = [v.value for v in discriminator.trainable_variables]
    non_trainable = [v.value for v in discriminator.non_trainable_variables]
    logits = [np.asarray(discriminator.stateless_call(trainable, non_trainable,
                                                      images[i:i + batch_size].astype(np.float32) / 127.5 - 1.0,
                                                      training=True)[0], np.float32).reshape(-1)
              for i in range(0, len(images), batch_size)]
    return np.concatenate(logits)


def count_trainable(model):
    return sum(int(math.prod(w.shape)) for w in model.trainable_weights)


def main():
    parser = argparse.ArgumentParser(description="Print the DCGAN generator and discriminator summaries.")
    parser.add_argument("--image-size", type=int, default=64, choices=SUPPORTED_SIZES, help="image side in pixels (default 64)")
    parser.add_argument("--width", type=int, default=64, help="base channel count, ngf/ndf (default 64)")
    parser.add_argument("--latent-dim", type=int, default=100, help="size of the noise vector z (default 100)")
    args = parser.parse_args()
    generator = build_generator(args.latent_dim, args.image_size, args.width)
    discriminator = build_discriminator(args.image_size, args.width)
    generator.summary()
    discriminator.summary()
    print(f"trainable parameters: G = {count_trainable(generator):,}  D = {count_trainable(discriminator):,}")


if __name__ == "__main__":
    main()
