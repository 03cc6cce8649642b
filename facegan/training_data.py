"""The training images of a run: loading and checking them, the held-out set recorded beside them, the demo
faces, and the order of each epoch's batches (fixed by the seed and the epoch, so a resumed run sees exactly
the batches an uninterrupted one would)."""
import os

import numpy as np

from facegan import data_io
from facegan.settings import DEFAULT_DATA

DEMO_SIZE = 8000


def load_data(args):
    """(train uint8 array, config updates). Falls back to the demo faces when no dataset is prepared."""
    use_demo = args.demo or (args.data is None and not os.path.exists(DEFAULT_DATA))
    if use_demo:
        data_path, holdout_path = draw_demo_faces()
    else:
        data_path = args.data or DEFAULT_DATA
        holdout_path = args.holdout or default_holdout(data_path)
    images, fingerprint = load_training_images(data_path)
    return images, {
        "data": os.path.abspath(data_path), "demo": use_demo,
        "holdout": check_holdout(holdout_path, data_path, images.shape, fingerprint, given=bool(args.holdout)),
        "train_count": int(len(images)), "data_fingerprint": fingerprint, "image_size": int(images.shape[1]),
    }



def default_holdout(data_path):
    """preprocess.py's PREFIX_holdout.npy beside PREFIX_train.npy; None for a file of any other name."""
    return data_path[:-len("_train.npy")] + "_holdout.npy" if data_path.endswith("_train.npy") else None



def check_holdout(path, data_path, data_shape, data_fingerprint, given):
    """The held-out set to record for evaluate.py (absolute path), or None with a note. Never the training
    data: not its file, nor any of its images, nor its photos prepared another way (data_io.check_held_out,
    image by image), prepared as the training data was and at its size. A --holdout (`given`) that is missing
    or is not held out is an error; a default one is dropped."""
    reason = None
    if path is None:
        reason = f"no _holdout.npy goes with {data_path} (not named PREFIX_train.npy)"
    elif not os.path.exists(path):
        if given:
            raise data_io.DataError(f"no held-out images at {path}")
        reason = f"{path} does not exist"
    else:
        try:
            holdout = data_io.load_image_array(path, data_shape[1], resize=False)
            if not len(holdout):
                if given:
                    raise data_io.DataError(f"--holdout {path} holds no images")
                reason = f"{path} holds no images"
            else:
                note = data_io.check_held_out(holdout, path, data_shape[1], data_path, run="this run")
                if note:  # evaluate.py checks again and puts it in its report
                    print(f"note: {note}")
        except data_io.NotHeldOut as error:
            if given:
                raise data_io.NotHeldOut(f"--holdout {error}: evaluate.py would score the run against faces it "
                                         "trained on or resized ones; give held-out images, or none") from None
            reason = str(error)
    if reason:
        print(f"note: no held-out images recorded ({reason}); evaluate.py will need --real PATH")
        return None
    data_io.verify_dataset(path)
    return os.path.abspath(path)



def draw_demo_faces():
    """(train, holdout) paths of the procedurally drawn demo faces, drawn on first use."""
    from facegan import demo_faces
    data_path = os.path.join("data", "demo64_train.npy")
    holdout_path = os.path.join("data", "demo64_holdout.npy")
    if not (os.path.exists(data_path) and os.path.exists(holdout_path)):
        print(f"drawing {DEMO_SIZE:,} demo faces into {data_path} ...")
        data_io.save_npy(data_path, demo_faces.make_demo_faces(DEMO_SIZE, 64, seed=1))
        data_io.save_npy(holdout_path, demo_faces.make_demo_faces(1000, 64, seed=2))
    print("=" * 78)
    print("DEMO MODE: no CelebA prepared, training on procedurally drawn cartoon faces, with the DCGAN at")
    print("half width (32), batch 64 and --preset best so that faces appear within minutes on a CPU.")
    print("For real faces: python preprocess.py --source img_align_celeba.zip  (see README.md)")
    print("=" * 78)
    return data_path, holdout_path



def load_training_images(path):
    """(images, fingerprint) of a preprocess.py array, checked: uint8 (N, S, S, 3) with S in 32/64/128, and
    the array its JSON describes when it has one."""
    images = data_io.load_npy_images(path, "training data", hint="run preprocess.py first (or use --demo)")
    if images.shape[1] not in (32, 64, 128):
        raise data_io.DataError(f"{path} has {images.shape[1]} px images; 32, 64 or 128 are supported")
    record = data_io.verify_dataset(path)
    return images, record["fingerprint"] if record else data_io.array_fingerprint(images)



def epoch_order(count, batch_size, seed, epoch, steps, skip_steps=0):
    """The image indices of batches `skip_steps`..`steps` of one epoch, one row per batch, in an order fixed
    by (seed, epoch): a resumed run sees exactly the batches an uninterrupted one would. The last partial
    batch is dropped (one static shape)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[skip_steps * batch_size: steps * batch_size].reshape(-1, batch_size)



def make_dataset(images_tensor, batch_size, seed, epoch, steps, skip_steps=0):
    """TensorFlow: the uint8 batches of epoch_order as a tf.data pipeline."""
    import tensorflow as tf
    order = epoch_order(int(images_tensor.shape[0]), batch_size, seed, epoch, steps, skip_steps)
    return (tf.data.Dataset.from_tensor_slices(order)
            .map(lambda idx: tf.gather(images_tensor, idx))  # a small copy per batch: no parallelism needed
            .prefetch(2)
            .with_options(data_io.fixed_pipeline_options()))
