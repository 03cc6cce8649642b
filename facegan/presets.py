"""The training recipes' settings: the presets, the paper's model and optimizer, the DiffAugment ops.

Plain data with no Keras import, so that `train.py --help` and the tools that only read settings start fast.
What a recipe computes is in gan_step.py.
"""

# "dcgan" is the 2015 paper, unchanged; "best" adds the changes that won docs/ablation.md's ablation,
# docs/training_length.md's long-run study and docs/recipe_study.md. A flag given on the command line overrides
# its preset.
PRESETS = {
    "dcgan": {"ema": 0.0, "diffaug": "", "loss": "bce", "r1": 0.0, "r1_every": 1, "spectral_norm": False,
              "minibatch_std": False, "minibatch_std_group": 4, "label_smoothing": 0.0, "mode_seeking": 0.0,
              "lecam": 0.0, "bcr": 0.0, "g_lr": None, "d_lr": None, "ada_target": 0.0, "ada_kimg": 100,
              "ada_ops": "", "upsample": "transposed", "r2": 0.0, "g_norm": "batch", "arch": "dcgan",
              "batch_size": 128, "beta2": 0.999},
    # EMA of G, translation-only DiffAugment, G's learning rate doubled, one-sided label smoothing, a
    # mode-seeking term for diversity (at 6, since batch 32's extra updates make samples alike), G upsampling by
    # resize + convolution (no checkerboard streaks), and batch 32: four times the updates per image seen, at
    # about the same cost per image on a CPU.
    "best": {"ema": 0.999, "diffaug": "translation", "loss": "bce", "r1": 0.0, "r1_every": 1, "spectral_norm": False,
             "minibatch_std": False, "minibatch_std_group": 4, "label_smoothing": 0.1, "mode_seeking": 6.0,
             "lecam": 0.0, "bcr": 0.0, "g_lr": 4e-4, "d_lr": None, "ada_target": 0.0, "ada_kimg": 100,
             "ada_ops": "", "upsample": "resize", "r2": 0.0, "g_norm": "batch", "arch": "dcgan",
             "batch_size": 32, "beta2": 0.999},
}
RECIPE_KEYS = tuple(PRESETS["dcgan"])  # the settings a preset fills and a resumed run must keep
# The paper's model and optimizer, with the dcgan recipe: every key build_models and build_train_step read.
PAPER = {"latent_dim": 100, "image_size": 64, "g_width": 64, "d_width": 64, "lr": 2e-4, "beta1": 0.5,
         "seed": 0, "precision": "fp32", **PRESETS["dcgan"]}
DIFFAUG_OPS = ("color", "translation", "cutout", "flip")


def recipe(preset="dcgan", **changes):
    """A complete recipe: the paper's model with a preset's settings and `changes` (e.g. latent_dim=16)."""
    return {**PAPER, **PRESETS[preset], **changes}


def preset_flags(preset):
    """train.py flags that turn the paper's recipe into `preset` (e.g. ["--ema", "0.999", ...]): the recipe
    written out, for --help and for reaching a preset's recipe after the preset itself changes."""
    flags = []
    for key, value in PRESETS[preset].items():
        if value == PRESETS["dcgan"][key]:
            continue
        flag = "--ada" if key == "ada_target" else "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags
