"""Optional baseline: HyperGAN 1.0.6 (PyTorch) trained on the same preprocessed faces as train.py.

    python3 -m venv ../hg-venv && ../hg-venv/bin/pip install -r requirements-hypergan.txt
    ../hg-venv/bin/python hypergan_baseline.py --images-seen 75000 --name celeba8k_10ep
    python evaluate.py outputs/<dcgan run> hypergan:outputs/hypergan_celeba8k_10ep/samples.npy

HyperGAN is not in requirements.txt (it pulls in PyTorch); install it into a separate virtual environment
from requirements-hypergan.txt. Without it this script says so in one line and exits with code 2.

What it does: reads the uint8 (N, 64, 64, 3) array train.py reads (default data/celeba64_train.npy; a
folder or zip of images also works), builds a HyperGAN StandardGAN from a DCGAN-like configuration with
HyperGAN's own components (ConfigurableGenerator / ConfigurableDiscriminator layer strings, StandardLoss,
AlternatingTrainer, TruncatedNormalDistribution), trains it in this process through HyperGAN's Python API
(gan.step()) for --images-seen / --epochs real images and/or --max-minutes, then writes to
outputs/hypergan_<name>/:

    samples.npy             --n samples, uint8 (N, 64, 64, 3) RGB in [0, 255] (what evaluate.py reads)
    grid.png                the first 64 samples, 8 per row (2x)
    run.json                settings, steps, images seen, seconds, images/s, versions
    hypergan_config.json    the HyperGAN configuration used
    losses.npz              d_loss and g_loss per step
    generator.pt, discriminator.pt   the networks' state_dicts (torch.load)
    hypergan.log            everything HyperGAN printed

HyperGAN 1.0.6 as shipped does not run here; the work-arounds (none edits site-packages):
  - It declares no dependencies: requirements-hypergan.txt lists them.
  - `import hypergan` imports torchvision (its image loaders and "pretrained" layer), which is not
    installed on purpose (registry builds can fail beside a CPU torch); a stub module stands in while
    hypergan is imported. The stub raises if anything actually uses torchvision; nothing here does.
  - `import hypergan` starts a non-daemon viewer thread that polls 60 times a second and keeps the process
    alive after an error; it is stopped right after the import.
  - It calls .cuda() on tensors and modules (components, losses, distributions). Without a GPU,
    Tensor.cuda and Module.cuda are made no-ops in this process while the GAN exists, then restored.
  - Its ImageLoader calls DataLoader iterators' .next() (gone from PyTorch), also uses .cuda() and
    torchvision, and reads image folders only: the data comes from ArrayInput below instead, an object with
    the same interface (next(), batch_size(), width(), height(), channels()).
  - The CLI finds configs only in the current directory and its shipped dcgan.json names TensorFlow
    optimizers that no longer exist: the config is built here (torch.optim.Adam, lr 2e-4, betas
    (0.5, 0.999)), written to the run directory for the record, and passed to hypergan.GAN directly.
  - The CLI's -b (batch size) is required; here --batch-size (default 128) is given to ArrayInput, whose
    batch_size() HyperGAN reads for the latent batch and all reshapes.

How this HyperGAN model differs from the paper DCGAN (and from train.py):
  - Latent: HyperGAN has no plain Gaussian; its TruncatedNormalDistribution draws N(0, 1) redrawn outside
    (-2, 2) (std about 0.88), 100-d. The paper used uniform [-1, 1]; train.py uses N(0, I).
  - Biases: HyperGAN's conv/deconv layers always have biases (the paper's have none); the first linear
    layer is bias-free. Before batch norm a bias is a no-op; it matters in D's first conv, D's output conv
    and G's output deconv.
  - Initialisation: weights N(0, 0.02) as in the paper, but biases keep PyTorch's default uniform init
    and batch-norm gamma starts at 1 (the PyTorch reference draws gamma from N(1, 0.02)).
  - G's first layer is a linear 100 -> 4*4*512 (+ reshape), the paper's "project and reshape"; the same
    map as the reference's 4x4 transposed conv on a 1x1 input.
  - D ends in a 4x4 valid conv to one logit (as the reference); loss is HyperGAN's StandardLoss: BCE with
    logits, D: real->1 + fake->0 (sum of two means), G: non-saturating fake->1. Same as train.py.
  - Training step (HyperGAN's AlternatingTrainer): the D step draws fresh z; the G step draws fresh z
    again (the reference reuses the D step's fake batch) and runs the whole forward pass twice, keeping
    the second (a HyperGAN quirk: two extra G forwards and three extra D forwards, an estimated 1.4x the
    compute of a reference step; the real batch of a step is the same in all three passes here, and only
    the D step learns from it). Both Adam optimisers are built over all parameters, but each only
    updates its own network (checked: their states hold only D's, resp. G's, parameters).
  - Batch norm: PyTorch defaults (momentum 0.1, eps 1e-5) as in the reference. Samples are drawn with
    batch norm in training mode (batch statistics, batches of --batch-size), as HyperGAN's samplers and
    the PyTorch reference do; train.py samples in inference mode after its "precise BN" pass.
  - Data: real batches are a fresh permutation each epoch with the last partial batch dropped, as in
    train.py; images are scaled to [-1, 1] and fed NCHW in RGB order (as HyperGAN's ImageLoader does).
"""
import argparse
import contextlib
import importlib.machinery
import json
import os
import platform
import signal
import sys
import time
import types
import warnings

import numpy as np

from facegan import cli

INSTALL_HINT = ("install it in a separate virtualenv: python3 -m venv ../hg-venv && "
                "../hg-venv/bin/pip install -r requirements-hypergan.txt, then run this script with "
                "../hg-venv/bin/python")
IMAGE_SIZE = 64
CHANNELS = 3
DEFAULT_DATA = os.path.join("data", "celeba64_train.npy")


class MissingDependency(Exception):
    pass


def dcgan_config(latent_dim=100, lr=2e-4, beta1=0.5, beta2=0.999):
    """A HyperGAN 1.0.6 configuration as close to the paper DCGAN (64x64) as its components allow."""
    init = "initializer=(normal 0 0.02)"
    d_block = [layer for channels in (128, 256, 512)
               for layer in (f"conv {channels} stride=2 filter=4 padding=1 {init}", "batch_norm", "lrelu")]
    adam = {"class": "class:torch.optim.Adam", "lr": lr, "betas": [beta1, beta2]}
    return {
        "description": "DCGAN (Radford et al. 2015) for 64x64x3, written with HyperGAN 1.0.6 components "
                       "for facegan's hypergan_baseline.py",
        "publication": "https://arxiv.org/abs/1511.06434",
        "class": "class:hypergan.gans.standard_gan.StandardGAN",
        "hypergan_version": "~1",
        "latent": {
            "class": "class:hypergan.distributions.truncated_normal_distribution.TruncatedNormalDistribution",
            "z": latent_dim,
        },
        "generator": {
            "class": "class:hypergan.generators.configurable_generator.ConfigurableGenerator",
            "layers": [f"linear 4*4*512 bias=false {init}", "batch_norm", "relu",
                       f"deconv 256 {init}", "batch_norm", "relu",
                       f"deconv 128 {init}", "batch_norm", "relu",
                       f"deconv 64 {init}", "batch_norm", "relu",
                       f"deconv 3 {init}", "tanh"],
        },
        "discriminator": {
            "class": "class:hypergan.discriminators.configurable_discriminator.ConfigurableDiscriminator",
            "layers": [f"conv 64 stride=2 filter=4 padding=1 {init}", "lrelu"] + d_block
                      + [f"conv 1 stride=1 filter=4 padding=0 {init}", "flatten"],
        },
        "loss": {"class": "function:hypergan.losses.standard_loss.StandardLoss", "reduce": "reduce_mean"},
        "trainer": {
            "class": "class:hypergan.trainers.alternating_trainer.AlternatingTrainer",
            "d_optimizer": dict(adam),
            "g_optimizer": dict(adam),
        },
        "runtime": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "channels": CHANNELS},
    }


# ----- importing HyperGAN --------------------------------------------------------------------------------

def _torchvision_stub():
    """Modules standing in for torchvision while hypergan is imported: hypergan imports it at module level
    (and subclasses torchvision.datasets.vision.VisionDataset) but only its image loaders and the
    'pretrained' layer use it. Anything that does use it gets a clear error."""
    reason = ("torchvision is not installed (hypergan_baseline.py does not use HyperGAN's image loaders or "
              "pretrained layers)")

    def missing(name):
        def __getattr__(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise AttributeError(f"{name}.{attr}: {reason}")
        return __getattr__

    def unavailable(self, *args, **kwargs):
        raise RuntimeError(reason)

    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.datasets", "torchvision.datasets.vision")
    modules = {}
    for name in names:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        module.__getattr__ = missing(name)
        modules[name] = module
    for name in names[1:]:
        parent, child = name.rsplit(".", 1)
        setattr(modules[parent], child, modules[name])
    modules["torchvision.datasets.vision"].VisionDataset = type("VisionDataset", (), {"__init__": unavailable})
    return modules


def import_hypergan():
    """(torch, hypergan, hyperchamber), or MissingDependency with what is missing."""
    try:
        import torch
    except ImportError as error:
        raise MissingDependency(f"PyTorch is not installed ({error})") from None
    stubs = {}
    try:
        import torchvision  # noqa: F401  (used as is when a working one is installed)
    except Exception:  # missing, or broken beside this torch (e.g. "operator torchvision::nms does not exist")
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stubs = _torchvision_stub()
        sys.modules.update(stubs)
    try:
        with contextlib.redirect_stdout(None):
            import hyperchamber
            import hypergan
    except ImportError as error:
        raise MissingDependency(f"HyperGAN or one of its dependencies is not installed ({error})") from None
    finally:
        for name in stubs:
            if sys.modules.get(name) is stubs[name]:
                del sys.modules[name]
        # hypergan.viewer starts a thread that polls forever and keeps the process alive, even after a
        # failed import: stop it.
        viewer_module = sys.modules.get("hypergan.viewer")
        if viewer_module is not None:
            viewer_module.GlobalViewer.close()
            viewer_module.GlobalViewer.ui_thread.join(timeout=5)
    return torch, hypergan, hyperchamber


@contextlib.contextmanager
def cuda_calls_stay_on_cpu(torch, active):
    """Make HyperGAN's hard-coded .cuda() calls no-ops (tensors and modules stay on the CPU)."""
    if not active:
        yield
        return
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved


# ----- data ----------------------------------------------------------------------------------------------

class ArrayInput:
    """HyperGAN's input interface over a uint8 (N, H, W, 3) array: next() gives a float NCHW RGB batch in
    [-1, 1]. A new batch is drawn once per GAN step (HyperGAN's trainer calls next() three times a step),
    from a fresh permutation each epoch, last partial batch dropped, as train.py does."""

    def __init__(self, images, batch_size, device, seed, torch):
        if len(images) < batch_size:
            raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
        self.images, self._batch_size, self.device, self.torch = images, batch_size, device, torch
        self.rng = np.random.default_rng(seed)
        self.steps_per_epoch = len(images) // batch_size
        self.gan = None  # set by HyperGAN
        self.batches_drawn = 0
        self._order, self._position, self._key, self._batch = None, 0, None, None

    def batch_size(self):
        return self._batch_size

    def width(self):
        return self.images.shape[2]

    def height(self):
        return self.images.shape[1]

    def channels(self):
        return self.images.shape[3]

    def _draw(self):
        if self._order is None or self._position == self.steps_per_epoch:
            self._order, self._position = self.rng.permutation(len(self.images)), 0
        rows = np.sort(self._order[self._position * self._batch_size:(self._position + 1) * self._batch_size])
        self._position += 1
        self.batches_drawn += 1
        batch = self.torch.from_numpy(self.images[rows]).to(self.device)
        return batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()

    def next(self, index=0):
        # gan.steps is 0 while the GAN is built and k during step k: both 0 and 1 get the first batch.
        step = int(self.gan.steps.item()) if self.gan is not None else 0
        key = max(step, 1)
        if key != self._key:
            self._key, self._batch = key, self._draw()
        return self._batch


# ----- training ------------------------------------------------------------------------------------------

def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan_steps(args, n_images):
    """Steps to run (None = until --max-minutes)."""
    steps_per_epoch = n_images // args.batch_size
    limits = []
    if args.images_seen is not None:
        limits.append(max(1, args.images_seen // args.batch_size))
    if args.epochs is not None:
        limits.append(max(1, args.epochs * steps_per_epoch))
    return min(limits) if limits else None


def generate(torch, gan, n, seed):
    """n uint8 (n, 64, 64, 3) samples, z from the GAN's latent distribution, batch norm in training mode
    (batch statistics over batches of the training batch size, as HyperGAN's samplers)."""
    from facegan import data_io
    torch.manual_seed(seed)
    chunks, made = [], 0
    with torch.no_grad():
        while made < n:
            images = gan.generator(gan.latent.next()).permute(0, 2, 3, 1).float().cpu().numpy()
            chunks.append(data_io.to_uint8(images[:n - made]))
            made += len(chunks[-1])
    return np.concatenate(chunks)


def run(args):
    """Train HyperGAN on args.data and write its run directory (samples, grid, losses, networks, run.json).
    Returns the exit code: 130 when a signal or Ctrl-C stopped the training early, else 0."""
    from facegan import data_io
    torch, hypergan, hc = import_hypergan()
    # the samples are made in memory (float32 batches, kept as uint8): checked before hours of training
    data_io.check_memory(args.n * IMAGE_SIZE * IMAGE_SIZE * 3 * 2, f"--n {args.n:,} samples", "give a smaller --n")
    images = data_io.load_image_array(args.data, IMAGE_SIZE)
    if len(images) < args.batch_size:
        raise data_io.DataError(f"{args.data} has {len(images)} images, fewer than one batch of {args.batch_size}")
    device = training_device(torch, args.device)
    run_dir = new_run_dir(args.out, args.name, args.overwrite)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = dcgan_config(args.latent_dim, args.lr, args.beta1, args.beta2)
    data_io.save_json(os.path.join(run_dir, "hypergan_config.json"), config)
    total_steps = plan_steps(args, len(images))
    console = sys.stdout  # HyperGAN's own output goes to hypergan.log; this script's to the terminal

    def say(message):
        print(message, file=console, flush=True)

    inputs = ArrayInput(images, args.batch_size, device, args.seed, torch)
    say(f"hypergan_baseline: {len(images)} images from {args.data}, batch {args.batch_size}, "
        f"{inputs.steps_per_epoch} steps/epoch, {total_steps or 'unlimited'} steps"
        f"{'' if args.max_minutes is None else f' or {args.max_minutes:g} min'}, device {device}, "
        f"{args.threads} thread(s) -> {run_dir}")
    started = time.time()
    trained = train_and_sample(args, torch, lambda: hypergan.GAN(config=hc.Config(config), inputs=inputs),
                               device, run_dir, total_steps, say)
    samples = trained["samples"]
    data_io.save_npy(os.path.join(run_dir, "samples.npy"), samples)
    data_io.save_grid(os.path.join(run_dir, "grid.png"), samples[:64], scale=2)
    data_io.save_npz(os.path.join(run_dir, "losses.npz"),
                     {"d_loss": np.array(trained["d_loss"], np.float32),
                      "g_loss": np.array(trained["g_loss"], np.float32)})
    result = run_record(args, len(images), inputs.steps_per_epoch, trained, device, torch.__version__)
    result["wall_seconds"] = round(time.time() - started, 2)
    data_io.save_json(os.path.join(run_dir, "run.json"), result)
    interrupted = trained["interrupted"]
    say(f"{'stopped early (' + interrupted + '), ' if interrupted else ''}{result['steps']} steps, "
        f"{result['images_seen']} images in {result['train_seconds']:.1f} s ({result['images_per_second']} images/s, "
        f"steady {result['steady_images_per_second']}); wrote {run_dir}/samples.npy ({len(samples)} images), "
        f"grid.png, run.json")
    return 130 if interrupted else 0


def training_device(torch, requested):
    """"cuda" or "cpu" for --device (auto: cuda when PyTorch sees a GPU)."""
    from facegan import data_io
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise data_io.DataError("--device cuda: PyTorch sees no CUDA GPU")
    return requested


def new_run_dir(out, name, overwrite):
    """OUT/hypergan_NAME (NAME: the start time by default), made; refused when it holds a run, unless overwrite."""
    from facegan import data_io
    run_dir = os.path.join(out, f"hypergan_{name or time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(os.path.join(run_dir, "run.json")) and not overwrite:
        raise data_io.DataError(f"{run_dir} already holds a run (pass --overwrite or another --name)")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def train_and_sample(args, torch, make_gan, device, run_dir, total_steps, say):
    """Build the GAN, train it (train_steps), sample args.n faces and save both networks' weights, with
    everything HyperGAN prints in run_dir/hypergan.log and SIGTERM ending the training after the step in
    progress. Returns train_steps' record with the samples, the sampling time and the parameter counts."""
    from facegan import data_io
    stop = {"signal": None}

    def on_sigterm(signum, frame):
        stop["signal"] = "SIGTERM"
    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with open(os.path.join(run_dir, "hypergan.log"), "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log), cuda_calls_stay_on_cpu(torch, device == "cpu"), \
                warnings.catch_warnings():
            # HyperGAN's trainer formats its loss tensors with % every 10 steps (harmless).
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
            gan = make_gan()
            parameters = {name: sum(p.numel() for p in module.parameters())
                          for name, module in (("generator", gan.generator), ("discriminator", gan.discriminator))}
            say(f"generator {parameters['generator']:,} and discriminator {parameters['discriminator']:,} parameters")
            trained = train_steps(gan, args, total_steps, stop, say)
            if trained["steps"] == 0:
                raise data_io.DataError("no training step ran (is --max-minutes too small?)")
            sample_start = time.time()
            trained["samples"] = generate(torch, gan, args.n, args.seed + 1)
            trained["sample_seconds"] = time.time() - sample_start
            for name, module in (("generator", gan.generator), ("discriminator", gan.discriminator)):
                state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
                data_io.atomic_write(os.path.join(run_dir, f"{name}.pt"), lambda tmp, s=state: torch.save(s, tmp))
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    trained["parameters"] = parameters
    return trained


def train_steps(gan, args, total_steps, stop, say):
    """gan.step() until total_steps (None: no limit), --max-minutes, a signal recorded in stop["signal"], or
    Ctrl-C; a progress line every --log-every steps. Returns the steps taken, the losses and seconds of each,
    why the training stopped early (None: it did not) and the seconds it took."""
    deadline = None if args.max_minutes is None else args.max_minutes * 60.0
    d_losses, g_losses, step_times, interrupted = [], [], [], None
    train_start = time.time()
    step = 0
    try:
        while total_steps is None or step < total_steps:
            if deadline is not None and time.time() - train_start >= deadline:
                break
            if stop["signal"]:
                interrupted = stop["signal"]
                break
            t0 = time.time()
            gan.step()
            step += 1
            metrics = gan.metrics()
            d_losses.append(float(metrics["d_loss"]))
            g_losses.append(float(metrics["g_loss"]))
            step_times.append(time.time() - t0)
            if step % args.log_every == 0 or step == total_steps:
                elapsed = time.time() - train_start
                say(f"step {step}{'' if total_steps is None else f'/{total_steps}'}  "
                    f"images {step * args.batch_size}  d_loss {d_losses[-1]:.3f}  g_loss {g_losses[-1]:.3f}  "
                    f"{step * args.batch_size / elapsed:.1f} images/s  {elapsed:.0f} s")
    except KeyboardInterrupt:
        interrupted = "KeyboardInterrupt"
    return {"steps": step, "d_loss": d_losses, "g_loss": g_losses, "step_times": step_times,
            "interrupted": interrupted, "seconds": time.time() - train_start}


def run_record(args, n_images, steps_per_epoch, trained, device, torch_version):
    """run.json's content (less wall_seconds): the settings, what was trained, speeds, losses and versions."""
    step, step_times, train_seconds = trained["steps"], trained["step_times"], trained["seconds"]
    warm = step_times[args.warmup_steps:] if len(step_times) > args.warmup_steps else step_times
    images_seen = step * args.batch_size
    return {
        "system": "HyperGAN 1.0.6 StandardGAN, DCGAN-like config (hypergan_config.json)",
        "data": os.path.abspath(args.data), "n_train_images": int(n_images),
        "image_size": IMAGE_SIZE, "batch_size": args.batch_size, "seed": args.seed,
        "latent_dim": args.latent_dim, "lr": args.lr, "beta1": args.beta1, "beta2": args.beta2,
        "requested": {"images_seen": args.images_seen, "epochs": args.epochs, "max_minutes": args.max_minutes},
        "steps": step, "steps_per_epoch": steps_per_epoch, "images_seen": images_seen,
        "epochs_seen": round(step / steps_per_epoch, 3), "interrupted": trained["interrupted"],
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(images_seen / train_seconds, 2),
        "steady_images_per_second": round(args.batch_size * len(warm) / sum(warm), 2),
        "steady_excludes_first_steps": min(args.warmup_steps, len(step_times) - len(warm)),
        "final_d_loss": trained["d_loss"][-1], "final_g_loss": trained["g_loss"][-1],
        "n_samples": int(len(trained["samples"])), "sample_seconds": round(trained["sample_seconds"], 2),
        "generator_parameters": int(trained["parameters"]["generator"]),
        "discriminator_parameters": int(trained["parameters"]["discriminator"]),
        "device": device, "threads": args.threads,
        "versions": {"hypergan": _version("hypergan"), "torch": torch_version,
                     "python": platform.python_version()},
        "files": ["samples.npy", "grid.png", "hypergan_config.json", "losses.npz", "generator.pt",
                  "discriminator.pt", "hypergan.log"],
    }


def _version(package):
    try:
        from importlib.metadata import version
        return version(package)
    except Exception:
        return None


def build_parser():
    # --help: the summary; the rest of this docstring (what it writes, the work-arounds, the model's
    # differences from the paper) stays with the code
    summary = __doc__.split("\n\nWhat it does")[0]
    p = argparse.ArgumentParser(usage="python hypergan_baseline.py [options]", formatter_class=cli.HelpFormatter,
                                description=f"{summary}\n\nWhat it writes and how it differs from the paper's "
                                            "DCGAN: this file's docstring.")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="PATH",
                   help="training images: a uint8 .npy, a folder or a zip")
    p.add_argument("--images-seen", type=int, default=None, metavar="N",
                   help="train for N // batch-size steps (e.g. 75000 = 10 epochs of 7,500)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="train for the steps train.py --epochs N makes (with --images-seen: the fewer)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="X",
                   help="stop after X minutes (one of --images-seen, --epochs, --max-minutes is needed)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N",
                   help="images per step, HyperGAN's -b (default 128, the paper's)")
    p.add_argument("--n", type=int, default=2000, help="samples written to samples.npy after training")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of weights, noise and data order (samples: seed + 1)")
    p.add_argument("--threads", type=int, default=default_threads(), metavar="N",
                   help="PyTorch CPU threads (default all cores available)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when PyTorch sees a GPU, else cpu")
    p.add_argument("--lr", type=float, default=2e-4, metavar="X", help="Adam learning rate of both networks")
    p.add_argument("--beta1", type=float, default=0.5, metavar="X", help="Adam beta_1")
    p.add_argument("--beta2", type=float, default=0.999, metavar="X", help="Adam beta_2")
    p.add_argument("--latent-dim", type=int, default=100, metavar="N", help="size of z")
    p.add_argument("--out", default="outputs", metavar="DIR", help="folder of the run directories")
    p.add_argument("--name", default=None, metavar="NAME",
                   help="run directory OUT/hypergan_NAME (default NAME: the start time)")
    p.add_argument("--overwrite", action="store_true", help="reuse a run directory that already holds a run")
    p.add_argument("--log-every", type=int, default=10, metavar="N", help="a progress line every N steps")
    p.add_argument("--warmup-steps", type=int, default=3, metavar="N",
                   help="first steps left out of run.json's steady_images_per_second")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images_seen is None and args.epochs is None and args.max_minutes is None:
        parser.error("give --images-seen, --epochs and/or --max-minutes")
    for flag in ("images_seen", "epochs", "max_minutes"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    for flag in ("batch_size", "n", "threads", "log_every", "latent_dim"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    try:
        from facegan import data_io
    except ImportError as error:
        print(f"hypergan_baseline.py: error: {error}; {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        return run(args)
    except MissingDependency as error:
        print(f"hypergan_baseline.py: error: {error}; {INSTALL_HINT}", file=sys.stderr)
        return 2
    except data_io.DataError as error:
        print(f"hypergan_baseline.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
