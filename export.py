"""Take a trained generator elsewhere: export it as ONNX, TF SavedModel and LiteRT (each run in its own runtime
and checked against Keras before anything is written), and build a web page that runs it in the browser.

    python export.py RUN_DIR              # RUN_DIR/export/ and the page in RUN_DIR/web/
    python export.py RUN_DIR --serve      # serves RUN_DIR/web/ at http://127.0.0.1:8000/

RUN_DIR/export/ holds generator.onnx, generator_savedmodel/, generator.tflite and generator.json (latent size,
image size, recipe, epoch, FID if evaluate.py measured one, and how each file was checked). Every file maps
z, float32 (N, latent_dim) with any N, to images, float32 (N, S, S, 3) in [-1, 1]; ONNX names them "z" and
"image". A run trained in bf16 or fp16 mixed precision is exported computing in float32.

RUN_DIR/web/ is a page that needs no network: the ONNX file, onnxruntime-web (copied from its npm package,
fetched once into the cache with npm) and the page itself. It shows faces from random seeds; a click shows a
face's seed and keeps it; two faces give a spherical latent walk with a slider (generate.py interpolate's
slerp); three give face arithmetic A - B + C; any face saves as PNG. Any static server can serve the folder;
--serve sends the headers that let onnxruntime-web use several threads.

A page seed s names the face of z = seed_z(s): numbers from the mulberry32 generator seeded with s, turned
into N(0, 1) pairs by Box-Muller (web/facegan.js computes the same z). Page seeds are not generate.py's
--seed: that one draws from numpy.
"""
import argparse
import functools
import hashlib
import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import warnings

import numpy as np

from facegan import cli
from facegan import data_io
from facegan import inception
from facegan import presets
from facegan import run_lock
from facegan import run_state
from facegan.data_io import DataError

FORMATS = ("onnx", "savedmodel", "litert")
FILES = {"onnx": "generator.onnx", "savedmodel": "generator_savedmodel", "litert": "generator.tflite"}
RUNTIMES = {"onnx": "ONNX Runtime", "savedmodel": "TensorFlow", "litert": "LiteRT"}
# Largest allowed |export - Keras| on the output's -1..1 scale: 1e-3 is an eighth of one 8-bit level.
TOLERANCE = 1e-3
CHECK_N, CHECK_SEED = 64, 0  # the check's noise: generate.py sample's first 64 faces
EXIT_MISMATCH = 3
WEB_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
WEB_FILES = ("index.html", "facegan.js")
ORT_WEB, ORT_WEB_VERSION = "onnxruntime-web", "1.30.0"
# The single-file WASM build and the threaded SIMD module it loads, with the SHA-256 of each in the npm package
# of ORT_WEB_VERSION: the page gets these bytes or none (a cut-off or replaced copy in the cache is fetched again).
ORT_WEB_FILES = {
    "ort.wasm.min.js": "faece07e84faa9001f5104bbe4e5c70861d06cb2376a0dea1fa0ad33a67adc81",
    "ort-wasm-simd-threaded.mjs": "e13f7f94fc51b4ca72b12faeb1ee95f4ace6dfbc8939bc718aabdc0a27c4299b",
    "ort-wasm-simd-threaded.wasm": "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2",
}
SEED_TO_Z = ("z of page seed s (0 <= s < 2**32): u1, u2, ... from mulberry32(s); each pair gives two N(0, 1) "
             "numbers by Box-Muller, r cos(2 pi u2) and r sin(2 pi u2) with r = sqrt(-2 ln(1 - u1)); the first "
             "latent_dim of them, rounded to float32 (export.seed_z, web/facegan.js seedZ)")


class ExportMismatch(cli.UserError):
    """An exported file computes other images than Keras: nothing is written, exit 3."""


# ----- page seeds -> z --------------------------------------------------------------------------------------

def mulberry32(seed):
    """Uniform numbers in [0, 1) from Tommy Ettinger's mulberry32, with JavaScript's 32-bit integer arithmetic
    (Math.imul and the bit operators) done on Python ints masked to 32 bits."""
    mask = 0xFFFFFFFF
    state = seed & mask
    while True:
        state = (state + 0x6D2B79F5) & mask
        t = ((state ^ (state >> 15)) * (state | 1)) & mask
        t ^= (t + ((t ^ (t >> 7)) * (t | 61))) & mask
        yield ((t ^ (t >> 14)) & mask) / 4294967296


def seed_z(seeds, latent_dim):
    """z, float32 (len(seeds), latent_dim), of page seeds (see SEED_TO_Z): what web/facegan.js draws."""
    rows = []
    for seed in seeds:
        uniforms, row = mulberry32(int(seed)), []
        while len(row) < latent_dim:
            r = math.sqrt(-2.0 * math.log(1.0 - next(uniforms)))
            angle = 2.0 * math.pi * next(uniforms)
            row += [r * math.cos(angle), r * math.sin(angle)]
        rows.append(row[:latent_dim])
    return np.array(rows, np.float64).astype(np.float32).reshape(len(rows), latent_dim)


# ----- the generator in float32, and the three formats -------------------------------------------------------

def export_copy(generator, resize_op=False):
    """The generator as an exported file computes it: every layer in float32, and with resize_op (for LiteRT)
    `--upsample resize`'s nearest-neighbour upsampling as a resize op. A mixed-precision run saves its layers
    with a bf16 (or fp16) policy; ONNX Runtime has no bf16 transposed convolution and LiteRT would need
    TensorFlow's Flex ops for one. Keras' UpSampling2D repeats pixels through reshapes that hide the channel
    count from the LiteRT converter, which then leaves the next convolution to Flex ops too; a nearest-neighbour
    Resizing to the same size picks the same pixels in one builtin op (the ONNX file keeps the repeat: tf2onnx's
    Resize of it disagrees with TensorFlow in ONNX Runtime). The weights are float32 under every policy, so the
    copy is the same function, computed with more precision."""
    import keras

    def clone(layer):
        config = {**layer.get_config(), "dtype": "float32"}
        if resize_op and isinstance(layer, keras.layers.UpSampling2D):
            height, width = layer.output.shape[1:3]
            return keras.layers.Resizing(height, width, interpolation="nearest", name=config["name"],
                                         dtype="float32")
        return layer.__class__.from_config(config)
    if all(layer.dtype_policy.name == "float32" and not (resize_op and isinstance(layer, keras.layers.UpSampling2D))
           for layer in generator.layers):
        return generator
    copy = keras.models.clone_model(generator, clone_function=clone)
    copy.set_weights(generator.get_weights())
    return copy


def write_onnx(model, path):
    """Keras' own ONNX export (tf2onnx on the TensorFlow backend), then the output named "image" and the batch
    dimension "batch" (tf2onnx calls them "Identity:0" and "unk__N")."""
    import onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' numpy 2 patch of tf2onnx defines np.object
        model.export(path, format="onnx", verbose=False)
    graph_model = onnx.load(path)
    graph = graph_model.graph
    old_name = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["image" if name == old_name else name for name in node.output]
        node.input[:] = ["image" if name == old_name else name for name in node.input]
    graph.output[0].name = "image"
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, path)


def write_savedmodel(model, path):
    model.export(path, format="tf_saved_model", verbose=False)


def write_litert(model, path):
    model.export(path, format="litert", verbose=False)


def run_onnx(path):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda z: session.run(["image"], {"z": z})[0]


def run_savedmodel(path):
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    return lambda z: loaded.serve(tf.constant(z)).numpy()


def run_litert(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise DataError("checking the LiteRT file needs ai-edge-litert (pip install -r requirements.txt), or "
                        "leave litert out of --formats") from None
    runner = Interpreter(model_path=path).get_signature_runner()
    return lambda z: next(iter(runner(z=z).values()))


WRITERS = {"onnx": write_onnx, "savedmodel": write_savedmodel, "litert": write_litert}
RUNNERS = {"onnx": run_onnx, "savedmodel": run_savedmodel, "litert": run_litert}


def check_export(fmt, path, z, expected, tolerance):
    """The export's largest |difference| from Keras on z (as one batch, and its first vector alone: the batch
    size is free); ExportMismatch when over the tolerance."""
    try:
        run = RUNNERS[fmt](path)
        got = np.concatenate([run(z[:1]), run(z)])
    except DataError:
        raise
    except Exception as error:  # the file does not load or run in its runtime: one line, as for a mismatch
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportMismatch(f"{os.path.basename(path)} does not run in {RUNTIMES[fmt]}: {message[:300]}; "
                             "nothing written") from None
    difference = float(np.max(np.abs(got - np.concatenate([expected[:1], expected]))))
    if not difference <= tolerance:  # NaN fails too
        raise ExportMismatch(f"{os.path.basename(path)} disagrees with Keras: {RUNTIMES[fmt]} gives images up to "
                             f"{difference:.3g} away on {len(z)} noise vectors (tolerance {tolerance:g} on the "
                             "-1..1 scale); nothing written")
    return difference


# ----- what the export records --------------------------------------------------------------------------------

def measured_fid(run, about):
    """The FID evaluate.py measured (eval/metrics.json) of the exported generator, with its n and epoch: only
    when it scored these very bytes (the digest it recorded is `about`'s), else None. A metrics.json from
    before the digest was recorded counts when it names the same epoch."""
    try:
        with open(os.path.join(run, "eval", "metrics.json")) as f:
            metrics = json.load(f)
        name = os.path.basename(os.path.normpath(run))
        row = next(r for r in metrics["systems"] if r.get("system") == name and r.get("fid") is not None)
        scored = row.get("generator_sha1")
        if not (scored == about["sha1"] if scored else metrics.get("epochs_trained") == about["epoch"]):
            return None
        if not (isinstance(row["fid"], (int, float)) and math.isfinite(row["fid"])):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return None
    return {"fid": row["fid"], "kid": row.get("kid"), "n": row.get("fid_n"), "epoch": metrics.get("epochs_trained")}


def trained_epochs(run, about):
    """The epoch of the exported generator: as recorded in its file; for a file saved without a record, the
    epochs in d_losses.npy (the run is locked meanwhile, so no epoch closes while it is read)."""
    if about["epoch"] is not None:
        return about["epoch"]
    try:
        return int(len(data_io.load_npy(os.path.join(run, "d_losses.npy"))))
    except (DataError, TypeError):
        return None


def describe(run, config, generator, about, checks, tolerance, as_trained, out):
    import keras
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    latent_dim, size = int(generator.input_shape[-1]), int(generator.output_shape[1])
    return {
        "generator": os.path.join(os.path.basename(os.path.normpath(run)), "generator.keras"),
        "generator_sha1": about["sha1"], "step": about["step"],
        "latent_dim": latent_dim, "image_size": size, "epoch": trained_epochs(run, about),
        "fid": measured_fid(run, about),
        "recipe": {"preset": config.get("preset"), **{k: config[k] for k in presets.RECIPE_KEYS if k in config},
                   "g_width": config.get("g_width"), "demo": config.get("demo")},
        "precision_trained": config.get("precision"), "precision_exported": "fp32",
        "files": {fmt: FILES[fmt] for fmt in checks},
        "sha256": {FILES[fmt]: sha256_of(os.path.join(out, FILES[fmt])) for fmt in checks if fmt != "savedmodel"},
        "input": {"name": "z", "dtype": "float32", "shape": ["batch", latent_dim], "distribution": "N(0, I)"},
        "output": {"name": "image", "dtype": "float32", "shape": ["batch", size, size, 3], "layout": "NHWC, RGB",
                   "range": [-1, 1], "to_uint8": "round((x + 1) * 127.5), clipped to 0..255"},
        "check": {"z": f"data_io.sample_z({CHECK_N}, {latent_dim}, seed={CHECK_SEED}), as one batch and its "
                       "first row alone", "tolerance": tolerance,
                  "max_abs_difference": {RUNTIMES[fmt]: value for fmt, value in checks.items()},
                  "keras_as_trained_vs_fp32": as_trained},
        "seed_to_z": SEED_TO_Z,
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, ORT_WEB: ORT_WEB_VERSION},
        "runtime_sha256": dict(ORT_WEB_FILES),
    }


# ----- the web page ------------------------------------------------------------------------------------------

def web_runtime(install=True):
    """The dist/ folder of onnxruntime-web ORT_WEB_VERSION in the cache ($FACEGAN_CACHE/npm), installed there
    with npm the first time (with install; DataError when it is not there)."""
    prefix = inception.cache_dir() / "npm"
    package = prefix / "node_modules" / ORT_WEB
    command = ["npm", "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
               f"{ORT_WEB}@{ORT_WEB_VERSION}"]

    def installed():
        try:
            version = json.loads((package / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return version == ORT_WEB_VERSION and all(sha256_of(package / "dist" / name) == digest
                                                  for name, digest in ORT_WEB_FILES.items())

    if not installed():
        if not install or shutil.which("npm") is None:
            raise DataError(f"the web page needs {ORT_WEB} {ORT_WEB_VERSION} in {package} (with the files it was "
                            f"released with): run `{' '.join(command)}` (npm comes with Node.js), or export with "
                            "--no-web")
        print(f"fetching {ORT_WEB} {ORT_WEB_VERSION} with npm into {prefix} ...", flush=True)
        shutil.rmtree(package, ignore_errors=True)  # npm keeps a damaged copy of the same version as it is
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not installed():
            last_line = (result.stderr.strip().splitlines() or ["no package"])[-1]
            raise DataError(f"`{' '.join(command)}` failed: {last_line}")
    return package / "dist"


def sha256_of(path):
    """The SHA-256 (hex) of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def build_web(folder, onnx_path, info, runtime):
    """The page's folder: web/index.html and web/facegan.js, the ONNX file, its description, onnxruntime-web
    (each runtime file checked, as copied, against ORT_WEB_FILES' digest)."""
    os.makedirs(folder)
    for name in WEB_FILES:
        shutil.copyfile(os.path.join(WEB_SOURCE, name), os.path.join(folder, name))
    for name, digest in ORT_WEB_FILES.items():
        shutil.copyfile(runtime / name, os.path.join(folder, name))
        if sha256_of(os.path.join(folder, name)) != digest:
            raise DataError(f"{runtime / name} changed while it was copied: not the file of {ORT_WEB} "
                            f"{ORT_WEB_VERSION}; export again")
    shutil.copyfile(onnx_path, os.path.join(folder, FILES["onnx"]))
    data_io.save_json(os.path.join(folder, "generator.json"), info)


# Everything the page's folder serves: its own files, by name. Any other path, a folder listing, a symbolic link
# or a request for another host is answered 404 or 403.
PAGE_FILES = (*WEB_FILES, *ORT_WEB_FILES, FILES["onnx"], "generator.json")


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """The page's own files (PAGE_FILES) and nothing else, with the MIME types onnxruntime-web needs and
    cross-origin isolation (which gives the page SharedArrayBuffer, and so onnxruntime-web its threads). Requests
    naming another host than the server's own are refused: a web page elsewhere cannot reach it through a
    name that resolves to 127.0.0.1."""
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def do_GET(self):
        if self._allowed():
            super().do_GET()

    def do_HEAD(self):
        if self._allowed():
            super().do_HEAD()

    def _allowed(self):
        """Point self.path at one of the page's files and say yes, or answer the request and say no."""
        port = self.server.server_address[1]
        host = self.headers.get("Host")
        if host is not None and host.lower() not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            self.send_error(403, "this server answers only requests for 127.0.0.1")
            return False
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/") or "index.html"
        path = os.path.join(self.directory, name)
        if name not in PAGE_FILES or os.path.islink(path) or not os.path.isfile(path):
            self.send_error(404, "not one of the page's files")
            return False
        self.path = "/" + name
        return True

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args):
        pass


def make_server(folder, port=8000):
    """A threaded static server of `folder` on 127.0.0.1 only (port 0: any free port)."""
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                               functools.partial(PageHandler, directory=folder))
    except OSError as error:
        raise DataError(f"cannot serve on 127.0.0.1:{port}: {error.strerror or error}; pick another --port") \
            from None


def page_is_behind(run, folder):
    """Whether the run's generator.keras is another file than the one the page in `folder` was exported from
    (the digest in its generator.json; for a page without one, a generator.keras newer than its ONNX file)."""
    keras_file = os.path.join(run, "generator.keras")
    if not os.path.isfile(keras_file):
        return False
    try:
        with open(os.path.join(folder, "generator.json")) as f:
            exported = json.load(f).get("generator_sha1")
    except (OSError, ValueError, AttributeError):
        exported = None
    if isinstance(exported, str):
        return data_io.file_digest(keras_file) != exported
    onnx_file = os.path.join(folder, FILES["onnx"])
    return not os.path.isfile(onnx_file) or os.path.getmtime(keras_file) > os.path.getmtime(onnx_file)


def serve(run, port=8000):
    folder = os.path.join(run, "web")
    if not os.path.isfile(os.path.join(folder, "index.html")):
        raise DataError(f"no web page in {folder}: make it with `python export.py {run}` first")
    if page_is_behind(run, folder):
        print(f"export.py: warning: {os.path.join(run, 'generator.keras')} is not the generator the page shows (more "
              f"training?): run `python export.py {run}` again to show it", file=sys.stderr)
    server = make_server(folder, port)
    print(f"serving {folder} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    with server:
        server.serve_forever()


# ----- export ------------------------------------------------------------------------------------------------

def export(run, formats=FORMATS, web=True, tolerance=TOLERANCE):
    """Write RUN/export/ (and RUN/web/ with web): every format is written into a temporary folder and checked in
    its runtime first; only when all agree with Keras are the folders put in place. Returns generator.json's
    content."""
    import keras
    run_state.load_config(run)  # a run directory, before its lock is taken
    if keras.backend.backend() != "tensorflow":
        raise DataError(f"export.py runs on Keras' TensorFlow backend (this is {keras.backend.backend()}): run it "
                        "with KERAS_BACKEND=tensorflow; the .keras file is the same on every backend")
    if web and "onnx" not in formats:
        raise DataError("the web page runs the ONNX file: add onnx to --formats, or give --no-web")
    cli.check_output_folder(run)
    with run_lock.hold(run, "export.py"):  # one process at a time writes into the run
        return _export(run, formats, web, tolerance)


def _export(run, formats, web, tolerance):
    config = run_state.load_config(run)
    runtime = web_runtime() if web else None  # before any work: the page cannot be made without it
    # the generator and what generator.json says of it (epoch, digest) come from one copy of its bytes
    generator, about = data_io.load_generator_snapshot(os.path.join(run, "generator.keras"))
    model = export_copy(generator)
    z = data_io.sample_z(CHECK_N, generator.input_shape[-1], CHECK_SEED)
    expected = np.asarray(model.predict_on_batch(z), np.float32)
    # what the float32 export changes in a mixed-precision run's images: the rounding of its bf16/fp16 compute
    as_trained = float(np.max(np.abs(np.asarray(generator.predict_on_batch(z), np.float32) - expected)))
    stage = tempfile.mkdtemp(prefix=".export-", dir=run)
    try:
        out = os.path.join(stage, "export")
        os.makedirs(out)
        checks = {}
        for fmt in formats:
            path = os.path.join(out, FILES[fmt])
            WRITERS[fmt](export_copy(generator, resize_op=True) if fmt == "litert" else model, path)
            checks[fmt] = check_export(fmt, path, z, expected, tolerance)
        info = describe(run, config, generator, about, checks, tolerance, as_trained, out)
        data_io.save_json(os.path.join(out, "generator.json"), info)
        if web:
            build_web(os.path.join(stage, "web"), os.path.join(out, FILES["onnx"]), info, runtime)
        for name in ("export", "web") if web else ("export",):
            data_io.replace_folder(os.path.join(stage, name), os.path.join(run, name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print_summary(run, info, checks, web)
    return info


def folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def print_summary(run, info, checks, web):
    out = os.path.join(run, "export")
    print(f"exported {info['generator']} (epoch {info['epoch']}, {info['image_size']} px, {info['latent_dim']}-d z, "
          f"trained in {info['precision_trained'] or 'fp32'}, exported in fp32):")
    for fmt, difference in checks.items():
        path = os.path.join(out, FILES[fmt])
        print(f"  {path:<{len(out) + 24}} {folder_bytes(path):>12,} bytes   {RUNTIMES[fmt]} vs Keras: "
              f"max |difference| {difference:.2g}")
    print(f"  {os.path.join(out, 'generator.json')}\n  (each checked on {CHECK_N} noise vectors and on a batch of "
          f"1; tolerance {info['check']['tolerance']:g} on the -1..1 scale)")
    if info["precision_trained"] not in (None, "fp32"):
        print(f"  Keras in {info['precision_trained']}, as trained, differs from the fp32 export by up to "
              f"{info['check']['keras_as_trained_vs_fp32']:.2g} (its rounding)")
    if web:
        print(f"web page: {os.path.join(run, 'web')}/ ({', '.join(WEB_FILES)}, {FILES['onnx']}, {ORT_WEB} "
              f"{ORT_WEB_VERSION})\n  python export.py {run} --serve")


# ----- command line ----------------------------------------------------------------------------------------

def formats_list(text):
    formats = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def build_parser():
    parser = argparse.ArgumentParser(usage="python export.py RUN_DIR [options]", description=__doc__,
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("run", metavar="RUN_DIR", help="run directory made by train.py")
    parser.add_argument("--formats", type=formats_list, default=FORMATS, metavar="LIST",
                        help=f"what to export, comma-separated (default {','.join(FORMATS)})")
    parser.add_argument("--no-web", dest="web", action="store_false",
                        help="export only, without the web page in RUN_DIR/web/ (which needs onnx and npm)")
    parser.add_argument("--tolerance", type=cli.float_in(0, low_inclusive=False), default=TOLERANCE, metavar="X",
                        help=f"largest |export - Keras| on the -1..1 scale; over it, exit {EXIT_MISMATCH} "
                             f"(default {TOLERANCE:g})")
    parser.add_argument("--serve", action="store_true", help="serve RUN_DIR/web/ on 127.0.0.1 and print its URL")
    parser.add_argument("--port", type=cli.int_in(0, 65535), default=8000, metavar="N",
                        help="port for --serve (default 8000; 0 picks a free one)")
    return parser


@cli.main_wrapper
def main(argv=None):
    args = build_parser().parse_args(argv)
    run_state.load_config(args.run)
    if args.serve:
        serve(args.run, args.port)
        return 0
    try:
        export(args.run, args.formats, args.web, args.tolerance)
    except ExportMismatch as error:
        print(f"export.py: error: {error}", file=sys.stderr)
        return EXIT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
