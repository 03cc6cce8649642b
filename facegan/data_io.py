"""Image I/O shared by the scripts: finding images in zips and folders, decoding and cropping faces, checked
image arrays, dataset sets with fingerprints, atomic writes, PNG grids, and faces from a saved generator."""
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
import zlib

import cv2
import numpy as np

from facegan import cli

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# CelebA's aligned images are 178x218; the crop several DCGAN repos use is the central 108x108.
TIGHT_CROP_FRACTION = 108 / 178
# The most bytes read for one image: far more than any photo worth shrinking to a face needs, and a bound on
# what a damaged or malicious archive member (a decompression bomb) can make a worker hold.
MAX_IMAGE_BYTES = 32 << 20
# The most pixels one image may decode to, read from its header before decoding: a small file can declare a
# huge picture (a PNG of one colour compresses about 1000:1), and this bounds what decoding it can allocate.
MAX_IMAGE_PIXELS = 64 << 20


class DataError(cli.UserError):
    """Bad input the user can fix (missing path, unknown layout, wrong array): reported in one line."""


class NotHeldOut(DataError):
    """Images given as held-out real faces that cannot serve as such: some are training images of the run,
    or they are of another size than the run's."""


class PreparedDifferently(NotHeldOut):
    """Held-out images prepared otherwise than the training data (another crop, size or resampling, per their
    preprocess.py JSONs): every metric against them would measure the preparation as well as the run."""


class ImageTooLarge(Exception):
    """An image file or archive member over MAX_IMAGE_BYTES; it is skipped, not read."""


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


# What Python's zipfile can decompress (bz2 and lzma ship with CPython).
READABLE_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                        zipfile.ZIP_LZMA: "lzma"}


def unreadable_member(info):
    """Why zipfile cannot read a zip member, in a few words, or None when it can."""
    if info.flag_bits & 0x1:
        return "password-protected (encrypted)"
    if info.compress_type not in READABLE_COMPRESSION:
        return (f"compressed with method {info.compress_type}, which Python's zipfile cannot read (it reads "
                f"{', '.join(READABLE_COMPRESSION.values())})")
    return None


def find_images(source):
    """Locate the images of a dataset as users download it.

    Returns (zip_path or None, folder, sorted image names). Names are zip members or paths relative to
    `folder`. Accepts a zip (images anywhere inside, e.g. the official img_align_celeba.zip), a folder
    of images (the extracted img_align_celeba/), or a folder holding img_align_celeba/ one or two levels
    down (the Kaggle layout img_align_celeba/img_align_celeba/).
    """
    if not os.path.exists(source):
        raise DataError(f"no such file or folder: {source}")
    if os.path.isfile(source):
        if not zipfile.is_zipfile(source):
            raise DataError(f"{source} is neither a folder nor a zip archive")
        try:
            with zipfile.ZipFile(source) as archive:
                images = [info for info in archive.infolist() if is_image_name(info.filename)]
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise DataError(f"cannot read zip {source}: {error}") from None
        if not images:
            raise DataError(f"no .jpg/.png images inside {source}")
        if all(unreadable_member(info) for info in images):  # some only: each is skipped with its reason
            raise DataError(f"cannot read the images inside {source}: they are {unreadable_member(images[0])}; "
                            "extract them (e.g. with unzip, giving the password) and pass the folder")
        names = sorted({info.filename for info in images})
        if len(names) < len(images):
            print(f"note: {len(images) - len(names)} image names appear twice in {source}; the last of each is read")
        return source, None, names
    folder = source
    for _ in range(3):  # the folder itself, then img_align_celeba/ (Kaggle nests it twice)
        names = sorted(n for n in os.listdir(folder) if is_image_name(n) and os.path.isfile(os.path.join(folder, n)))
        if names:
            return None, folder, names
        nested = os.path.join(folder, "img_align_celeba")
        if not os.path.isdir(nested):
            break
        folder = nested
    raise DataError(f"no .jpg/.png images in {source} (expected a zip, a folder of images, "
                    "or a folder containing img_align_celeba/)")


def find_partition_file(source):
    """CelebA's list_eval_partition.txt (official) or .csv (Kaggle) beside or inside the source, or None."""
    base = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    for folder in (base, os.path.dirname(os.path.abspath(base))):
        for name in ("list_eval_partition.txt", "list_eval_partition.csv"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def read_partition_file(path):
    """{file name: partition} with 0 = train, 1 = validation, 2 = test."""
    partition = {}
    with open(path) as f:
        for line in f:
            parts = line.replace(",", " ").split()
            if len(parts) == 2 and parts[1].isdigit():
                partition[parts[0]] = int(parts[1])
    return partition


def decode_image(data):
    """Encoded bytes -> BGR uint8 (H, W, 3), or None if OpenCV cannot decode them.

    IMREAD_COLOR turns grayscale into 3 channels, drops alpha and converts CMYK JPEGs.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    if array.size == 0:
        return None
    return cv2.imdecode(array, cv2.IMREAD_COLOR)


_decoder_messages = None  # a per-process file that receives libjpeg/libpng warnings while decoding


def decode_image_checked(data):
    """decode_image, and the warnings the decoder printed for these bytes ("" if none).

    libjpeg decodes damaged entropy-coded data into a garbled picture and only prints a warning such as
    "Corrupt JPEG data: premature end of data segment" to stderr; OpenCV passes neither on. The warning is
    caught by pointing file descriptor 2 at a scratch file for the length of the call: one in memory where the
    system has them (a full disk would swallow the warning, and the garbled picture would pass).
    """
    global _decoder_messages
    if _decoder_messages is None:
        try:
            _decoder_messages = os.fdopen(os.memfd_create("facegan-decoder-messages"), "w+b")
        except (AttributeError, OSError):
            _decoder_messages = tempfile.TemporaryFile()
    fd = _decoder_messages.fileno()
    saved_stderr = os.dup(2)
    os.dup2(fd, 2)
    try:
        image = decode_image(data)
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
    warning = ""
    if os.lseek(fd, 0, os.SEEK_CUR):
        os.lseek(fd, 0, os.SEEK_SET)
        warning = os.read(fd, 4096).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
    return image, warning


def is_truncated_jpeg(data):
    """A JPEG whose end-of-image marker is missing: OpenCV would decode it with a grey bottom part."""
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]


def declared_pixels(data):
    """Width x height that an encoded image's header declares (read by Pillow without decoding), or None
    when Pillow does not recognise the bytes as an image. Raises ImageTooLarge over MAX_IMAGE_PIXELS."""
    import warnings
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own warning for big images: the limit below decides
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:  # far over Pillow's own limit, which is above ours
        raise ImageTooLarge(f"{str(error).split(' exceeds')[0]}, over the {MAX_IMAGE_PIXELS:,}-pixel limit for "
                            "one image") from None
    except Exception:  # noqa: BLE001  Pillow raises many types for bytes it cannot identify
        return None
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"{width}x{height} = {width * height:,} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel "
                            "limit for one image")
    return width * height


def read_image(zip_path, folder, name, open_zip=None):
    """(BGR uint8 image, None), or (None, why it was skipped), for one image file of a folder or zip. The
    file is read with the MAX_IMAGE_BYTES limit, its header checked against MAX_IMAGE_PIXELS before it is
    decoded (bytes Pillow does not recognise as an image are not decoded), and truncated or damaged data
    (any decoder warning) is refused rather than decoded garbled."""
    try:
        data = read_bytes(zip_path, folder, name, open_zip, limit=MAX_IMAGE_BYTES)
        pixels = None if is_truncated_jpeg(data) else declared_pixels(data)
    except ImageTooLarge as error:  # e.g. a decompression bomb
        return None, f"too large: {error}"
    except (OSError, zipfile.BadZipFile, KeyError, EOFError, ValueError) as error:  # e.g. a truncated zip member
        return None, f"unreadable: {error}"
    if is_truncated_jpeg(data):
        return None, "truncated JPEG (no end-of-image marker)"
    image, warning = decode_image_checked(data) if pixels is not None else (None, "")
    if image is None:
        return None, "not a decodable image"
    if warning:  # decoded, but from damaged data: a garbled picture
        return None, f"corrupt image data (decoder: {' / '.join(warning.splitlines())})"
    return image, None


def crop_and_resize(image_bgr, size, crop="center"):
    """Square crop, resize to size x size with area interpolation, return RGB uint8.

    crop="center": the central square of full width (row offset (h - w) // 2), the project default.
    crop="tight": the central 108/178 of the width, the crop several DCGAN repos use on CelebA.
    """
    h, w = image_bgr.shape[:2]
    side = min(h, w) if crop == "center" else max(1, round(min(h, w) * TIGHT_CROP_FRACTION))
    top, left = (h - side) // 2, (w - side) // 2
    square = image_bgr[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    resized = cv2.resize(square, (size, size), interpolation=interpolation)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def read_bytes(zip_or_none, folder, name, open_zip=None, limit=None):
    """One image file's bytes, from the open zip or the folder. With `limit`, raises ImageTooLarge instead of
    reading more than `limit` bytes: the declared size (zip header or file size) is checked first, and the
    read itself stops after limit + 1 bytes whatever was declared."""
    if zip_or_none is not None:
        info = open_zip.getinfo(name)
        if unreadable_member(info):
            raise OSError(unreadable_member(info))
        declared = info.file_size
        opener = lambda: open_zip.open(info)  # noqa: E731
    else:
        path = os.path.join(folder, name)
        declared = os.path.getsize(path)
        opener = lambda: open(path, "rb")  # noqa: E731
    if limit is not None and declared > limit:
        raise ImageTooLarge(f"{declared:,} bytes, over the {limit:,}-byte limit for one image")
    with opener() as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ImageTooLarge(f"more than the {limit:,}-byte limit for one image")
    return data


def available_memory():
    """Bytes of memory this process can still take without swapping: the system's MemAvailable, or less where a
    cgroup limits the process (containers); None where neither says."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                found.append(int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def check_memory(needed, what, hint):
    """Refuse, before any of it is taken, work that needs more memory (`needed` bytes, an estimate from the
    sizes asked for) than this machine has available: one line (DataError) instead of swapping or being killed
    when the memory runs out."""
    available = available_memory()
    if available is not None and needed > available:
        raise DataError(f"{what} needs about {_bytes_text(needed)} of memory; this machine has "
                        f"{_bytes_text(available)} available: {hint}")


def _bytes_text(count):
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def check_free_space(folder, needed, what, hint):
    """Refuse to start writing `needed` bytes into `folder` when its disk has less room."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DataError(f"{what} needs about {needed / 1e9:.2f} GB in {folder}, which has {free / 1e9:.2f} GB "
                        f"free; {hint}")


def _temp_path_beside(path, suffix):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file ordinary permissions
    return tmp


def atomic_write(path, write, suffix=".tmp"):
    """Call write(tmp_path), then rename onto path: readers never see a half-written file."""
    tmp = _temp_path_beside(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def replace_folder(new, path):
    """Put the finished folder `new` (on the same filesystem) in place of the folder `path`: the old one is moved
    aside first and removed after, so `path` is always either the old folder whole or the new one."""
    aside = None
    if os.path.lexists(path):
        aside = f"{path}.old-{os.getpid()}"
        os.rename(path, aside)
    try:
        os.rename(new, path)
    except BaseException:
        if aside:
            os.rename(aside, path)
        raise
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


def array_fingerprint(images, chunk_bytes=64 << 20):
    """"sha1:<hex>" of an array's dtype, shape and bytes, read in chunks so that a memory-mapped .npy is hashed
    without loading it whole. Equal for equal arrays, different after any change to a pixel."""
    images = np.asarray(images) if not isinstance(images, np.ndarray) else images
    digest = hashlib.sha1(f"{images.dtype.str} {tuple(images.shape)}".encode())
    flat = images.reshape(-1) if images.flags.c_contiguous else np.ascontiguousarray(images).reshape(-1)
    step = max(1, chunk_bytes // max(1, images.itemsize))
    for start in range(0, flat.size, step):
        digest.update(np.ascontiguousarray(flat[start:start + step]).view(np.uint8))
    return "sha1:" + digest.hexdigest()


def file_digest(path, chunk_bytes=1 << 20):
    """"sha1:<hex>" of a file's bytes: a cache key that changes whenever the file's content does."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return "sha1:" + digest.hexdigest()


def load_json_cache(path):
    """A cache the scripts keep as a JSON object of entries (save_json): {} when there is none yet. One that
    is cut off or damaged (not a JSON object of objects) is ignored with a note: the caller rebuilds it."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            cache = json.load(f)
        if isinstance(cache, dict) and all(isinstance(entry, dict) for entry in cache.values()):
            return cache
        problem = "not a JSON object of entries"
    except (OSError, ValueError) as error:  # ValueError: cut off, or not JSON (UnicodeDecodeError too)
        problem = str(error)
    print(f"note: ignoring the damaged cache {path} ({problem}); its entries are computed again")
    return {}


def dataset_paths(prefix):
    """The three files of a preprocess.py dataset: {"train": ..._train.npy, "holdout": ..._holdout.npy,
    "meta": <prefix>.json}."""
    return {"train": prefix + "_train.npy", "holdout": prefix + "_holdout.npy", "meta": prefix + ".json"}


def save_dataset(prefix, train, holdout, meta):
    """Write a dataset's arrays and its JSON as one unit: all three go to temporary files in the output folder
    first (a failure there, e.g. a full disk, leaves the previous set untouched and no temporaries), then are
    renamed, the JSON last. The JSON records each array's shape and fingerprint, so a set mixed by a crash
    during the renames is caught by verify_dataset. Returns the metadata written."""
    paths = dataset_paths(prefix)
    meta = dict(meta, arrays={role: {"file": os.path.basename(paths[role]), "shape": list(array.shape),
                                     "dtype": str(array.dtype), "fingerprint": array_fingerprint(array)}
                              for role, array in (("train", train), ("holdout", holdout))})
    temporaries = {}
    try:
        for role, array in (("train", train), ("holdout", holdout)):
            temporaries[role] = _temp_path_beside(paths[role], ".npy")
            write_npy(temporaries[role], array)
        temporaries["meta"] = _temp_path_beside(paths["meta"], ".json")
        with open(temporaries["meta"], "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        for role in ("train", "holdout", "meta"):
            os.replace(temporaries.pop(role), paths[role])
    finally:
        for tmp in temporaries.values():
            if os.path.exists(tmp):
                os.remove(tmp)
    return meta


def verify_dataset(path):
    """Check a preprocess.py array (PREFIX_train.npy or PREFIX_holdout.npy) against PREFIX.json: same shape
    and fingerprint. Returns the JSON's record of this array ({"file", "shape", "dtype", "fingerprint"}), or
    None for an array without such a JSON beside it (demo data, arrays made by hand). Raises DataError in one
    line when the array is missing, unreadable, or not the one the JSON describes (another run replaced it,
    or a write was interrupted)."""
    meta_path = dataset_meta_path(path)
    if meta_path is None:
        return None
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path) as f:
            record = json.load(f)["arrays"]["train" if path.endswith("_train.npy") else "holdout"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"cannot read the description of {path} in {meta_path}: {error}") from None
    images = load_npy(path, mmap=True)
    if list(images.shape) != record["shape"] or array_fingerprint(images) != record["fingerprint"]:
        raise DataError(f"{path} ({images.dtype} {images.shape}) is not the array {meta_path} describes "
                        f"({record['dtype']} {tuple(record['shape'])}); run preprocess.py again")
    return record


def write_npy(path, array):
    """np.save to a path. numpy reports a full disk as a bare OSError ("N requested and M written"); it is
    raised as ENOSPC when the folder has no room left for the array, so that the message can say so."""
    try:
        with open(path, "wb") as f:
            np.save(f, array)
    except OSError as error:
        if error.errno is None and shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < array.nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
        raise


def save_npy(path, array):
    atomic_write(path, lambda tmp: write_npy(tmp, array))


def save_npz(path, arrays):
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


def save_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def save_text(path, text):
    """A text file (markdown reports), written atomically: a full disk leaves the previous one or none."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write, suffix=".tmp")


def save_figure(path, figure, **savefig_options):
    """A matplotlib figure as PNG, written atomically."""
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", **savefig_options), suffix=".png")


def make_grid(images, columns=8, padding=2):
    """(N, S, S, 3) uint8 -> one RGB uint8 picture of the images in rows of `columns`."""
    images = np.asarray(images)
    n, s = len(images), images.shape[1]
    rows = max(1, -(-n // columns))
    columns = min(columns, n) if n else 1
    grid = np.full((rows * (s + padding) + padding, columns * (s + padding) + padding, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = padding + r * (s + padding), padding + c * (s + padding)
        grid[y:y + s, x:x + s] = image
    return grid


def save_png(path, rgb, scale=1):
    """Write an RGB uint8 picture as PNG (atomically); scale > 1 enlarges it with nearest neighbour."""
    if scale != 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(encoded.tobytes())
    atomic_write(path, write, suffix=".png")


def save_grid(path, images, columns=8, scale=1):
    save_png(path, make_grid(images, columns), scale=scale)


def to_uint8(images):
    """Generator output in [-1, 1] -> uint8 in [0, 255]."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def load_image_array(path, size=None, limit=None, resize=True):
    """An image set to score: a .npy of uint8 (N, S, S, 3) (or float in [-1, 1] / [0, 1]), a folder or a zip
    of images. Images are cropped to squares and resized to `size` when given, with a note; resize=False
    refuses (NotHeldOut) images of any other size than `size` instead (held-out reals are compared as they
    are). `limit`: only the first `limit` images are read. Image files are read as preprocess.py reads them
    (read_image: size limits, damaged files skipped with a note)."""
    if not os.path.exists(path):
        raise DataError(f"no such file or folder: {path}")
    if path.endswith(".npy"):
        images = load_npy_images(path, uint8_only=False, mmap=True)
        if size is not None and images.shape[1] != size and not resize:
            raise NotHeldOut(f"{path} holds {images.shape[1]} px images, not {size} px like the run's (they are "
                             f"not resized: make them at {size} px, e.g. with preprocess.py --size {size})")
        images = np.array(images[:limit])
        if images.dtype != np.uint8:
            images = images.astype(np.float32)
            if images.size and not (np.isfinite(images).all() and -1 <= images.min() and images.max() <= 1):
                raise DataError(f"{path} holds {images.dtype} values outside [-1, 1] (or NaN/inf); expected "
                                "uint8 images, or floats in [-1, 1] or [0, 1]")
            images = to_uint8(images if images.min() < 0 else images * 2 - 1)
    else:
        zip_path, folder, names = find_images(path)
        decoded, skipped, reshaped = [], [], 0
        with (zipfile.ZipFile(zip_path) if zip_path else contextlib.nullcontext()) as archive:
            for name in names:
                if limit is not None and len(decoded) >= limit:
                    break
                image, reason = read_image(zip_path, folder, name, archive)
                if image is None:
                    skipped.append(f"{name} ({reason})")
                    continue
                side = size or (decoded[0].shape[0] if decoded else min(image.shape[:2]))
                if image.shape[:2] != (side, side):
                    if not resize:
                        raise NotHeldOut(f"{os.path.join(path, name)} is {image.shape[1]}x{image.shape[0]} px, "
                                         f"not {side}x{side} like the run's images (held-out images are not "
                                         f"cropped or resized: make them with preprocess.py --size {side})")
                    reshaped += 1
                decoded.append(crop_and_resize(image, side))  # one image at a time: the decoded photo is freed
        if skipped:
            print(f"note: skipped {len(skipped)} of the files in {path}: {'; '.join(skipped[:3])}"
                  + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""))
        if not decoded:
            raise DataError(f"no decodable images in {path}")
        if reshaped:
            print(f"note: {reshaped} of the {len(decoded)} images in {path} were cropped to squares and resized to "
                  f"{decoded[0].shape[0]} px")
        images = np.stack(decoded)
    if size is not None and images.shape[1] != size:
        print(f"note: the {images.shape[1]} px images of {path} were resized to {size} px")
        interpolation = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_CUBIC
        images = np.stack([cv2.resize(i, (size, size), interpolation=interpolation) for i in images])
    return images


def image_digests(images, chunk=4096):
    """A 64-bit digest of each uint8 image's pixels, read chunk by chunk (a memory-mapped array is not loaded
    whole): the image's bytes as 64-bit words, dotted with fixed odd random weights modulo 2**64 (one integer
    matrix-vector product per chunk). Equal images get equal digests and different ones almost never do, so
    the images two sets share are found by comparing digests (and then confirmed pixel by pixel)."""
    row = int(np.prod(images.shape[1:], dtype=np.int64))
    words = -(-row // 8)
    weights = np.random.default_rng(0).integers(0, 2**63, words, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    digests = np.empty(len(images), np.uint64)
    for start in range(0, len(images), chunk):
        block = np.ascontiguousarray(images[start:start + chunk]).reshape(-1, row).view(np.uint8)
        if row % 8:
            block = np.pad(block, ((0, 0), (0, words * 8 - row)))
        digests[start:start + len(block)] = block.view(np.uint64) @ weights
    return digests


def training_images_among(images, train_images):
    """[(i, j), ...]: images[i] is train_images[j], pixel for pixel (one pair per such i), for two uint8 sets of
    one image size; fast for hundreds of thousands of training images (image_digests)."""
    train_digests = image_digests(train_images)
    digests = image_digests(images)
    order = np.argsort(train_digests, kind="stable")
    sorted_digests = train_digests[order]
    pairs = []
    for i in np.flatnonzero(np.isin(digests, train_digests)):
        low, high = np.searchsorted(sorted_digests, digests[i], "left"), np.searchsorted(sorted_digests, digests[i],
                                                                                        "right")
        match = next((j for j in order[low:high] if np.array_equal(images[i], train_images[j])), None)
        if match is not None:
            pairs.append((int(i), int(match)))
    return pairs


# Held-out faces are also compared with the training faces as small colour thumbnails, so that the same photos
# prepared another way (preprocess.py's other --crop, another resampling or encoder) are caught, not only copies.
# A --crop center image holds the --crop tight one at the scale TIGHT_CROP_FRACTION: each side is compared whole
# and at that central crop. The nearest training thumbnail (THUMB_SEARCH px) of each held-out one is the
# candidate, confirmed at THUMB_CHECK px blurred by THUMB_BLUR px (what resampling changes): one photo under
# both crops differs from itself by less than SAME_PHOTO_DIFFERENCE (mean |difference| of 0-255 values) nearly
# always, two CelebA photos by far more (docs/method.md has the measurements).
THUMB_SEARCH, THUMB_CHECK, THUMB_BLUR = 8, 16, 1.0
SAME_PHOTO_DIFFERENCE = 5.0
# CelebA holds some photos twice under two names (and the demo faces some near-identical drawings), so a few
# matches between its test and train partitions are the data's own; a held-out set with more than this share of
# its images among the training photos is refused.
SAME_PHOTO_SHARE = 0.01
PAIRINGS = (("prepared the same way", 1.0, 1.0), ("cropped tighter", 1.0, TIGHT_CROP_FRACTION),
            ("cropped wider", TIGHT_CROP_FRACTION, 1.0))  # (how, held-out framing, training framing)


def thumbnails(images, fraction, side, blur=0.0, chunk=2048):
    """float32 (N, side * side * 3): the central `fraction` of each uint8 image's side (sub-pixel exact: a
    linear warp to 4 x side first), area-resized to side x side, then blurred by `blur` px; read chunk by chunk
    (a memory-mapped set is not loaded whole)."""
    size = images.shape[1]
    if fraction != 1:
        warped, length = 4 * side, size * fraction
        scale, offset = length / (4 * side), (size - length) / 2
        to_source = np.array([[scale, 0, offset + scale / 2 - 0.5], [0, scale, offset + scale / 2 - 0.5]], np.float32)
    out = np.empty((len(images), side * side * 3), np.float32)
    for start in range(0, len(images), chunk):
        for i, image in enumerate(np.asarray(images[start:start + chunk]), start):
            if fraction != 1:
                image = cv2.warpAffine(image, to_source, (warped, warped),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            thumbnail = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
            out[i] = (cv2.GaussianBlur(thumbnail, (0, 0), blur) if blur else thumbnail).reshape(-1)
    return out


def same_photos_among(images, train_images, chunk=4096):
    """[(i, j, how)]: images[i] is the photo of train_images[j], prepared as it was or cropped tighter or wider
    (PAIRINGS), one per i; for two uint8 sets of one image size. The training set is read chunk by chunk: memory
    stays that of a chunk and of the held-out set's thumbnails."""
    if not len(images) or not len(train_images):
        return []
    framings = sorted({framing for _, held, trained in PAIRINGS for framing in (held, trained)})
    queries = {framing: thumbnails(images, framing, THUMB_SEARCH) for framing in framings}
    best_c = {how: np.full(len(images), -np.inf, np.float32) for how, _, _ in PAIRINGS}  # closeness, below
    best_j = {how: np.zeros(len(images), np.int64) for how, _, _ in PAIRINGS}
    for start in range(0, len(train_images), chunk):
        block = np.asarray(train_images[start:start + chunk])
        keys = {framing: thumbnails(block, framing, THUMB_SEARCH) for framing in framings}
        for how, held, trained in PAIRINGS:
            half_norms = (keys[trained] * keys[trained]).sum(1) / 2
            for first in range(0, len(images), chunk):  # a chunk x chunk block at a time
                rows = slice(first, first + chunk)
                # q.k - |k|^2 / 2 is largest for the k nearest to q (|q - k|^2 = |q|^2 - 2 (q.k - |k|^2 / 2))
                closeness = queries[held][rows] @ keys[trained].T
                closeness -= half_norms
                nearest = closeness.argmax(1)
                nearest_c = closeness[np.arange(len(nearest)), nearest]
                closer = nearest_c > best_c[how][rows]
                best_c[how][rows][closer] = nearest_c[closer]
                best_j[how][rows][closer] = nearest[closer] + start
    found = {}
    for how, held, trained in PAIRINGS:
        for first in range(0, len(images), chunk):  # each one's nearest, compared closely
            rows = slice(first, first + chunk)
            close = np.abs(thumbnails(images[rows], held, THUMB_CHECK, THUMB_BLUR) - thumbnails(
                np.asarray(train_images[best_j[how][rows]]), trained, THUMB_CHECK, THUMB_BLUR)).mean(1)
            for i in np.flatnonzero(close < SAME_PHOTO_DIFFERENCE) + first:
                found.setdefault(int(i), (int(i), int(best_j[how][i]), how))
    return sorted(found.values())


def dataset_meta_path(path):
    """The PREFIX.json preprocess.py wrote beside PREFIX_train.npy / PREFIX_holdout.npy at `path`, or None for a
    path not named so."""
    for role in ("train", "holdout"):
        if path.endswith(f"_{role}.npy"):
            return dataset_paths(path[:-len(f"_{role}.npy")])["meta"]
    return None


def dataset_preparation(path):
    """How preprocess.py made the array at `path` (its PREFIX.json: crop, image_size, resize, source), or None
    for an array without that JSON, a folder or a zip."""
    meta_path = dataset_meta_path(path)
    if meta_path is None:
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        return {key: meta[key] for key in ("crop", "image_size", "resize", "source")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compare_preparation(path, train_path, run):
    """Raise PreparedDifferently when the held-out array and the training array were made by preprocess.py with
    another crop, size or resampling; return a note (for the report) when they come from other sources, or when
    only one of them says how it was made; else None."""
    held, trained = dataset_preparation(path), dataset_preparation(train_path)
    if held is None and trained is None:
        return None
    if held is None or trained is None:
        unknown = path if held is None else train_path
        return (f"{unknown} has no preprocess.py description, so whether {path} was prepared like the training "
                f"data of {run} is unknown")
    differ = [key for key in ("crop", "image_size", "resize") if held[key] != trained[key]]
    if differ:
        said = "; ".join(f"{key} {held[key]!r} (the training data: {trained[key]!r})" for key in differ)
        raise PreparedDifferently(
            f"{path} was prepared otherwise than the training data of {run} ({said}): every metric would measure "
            f"the preparation too; make the held-out images as the training data was made (preprocess.py "
            f"--crop {trained['crop']} --size {trained['image_size']})")
    if held["source"] != trained["source"]:
        return (f"{path} was made from {held['source']}, the training data of {run} from {trained['source']}: a "
                "held-out set from another source measures that difference too")
    return None


def check_held_out(images, path, size, train_path, train_fingerprint=None, run="the run"):
    """Refuse (NotHeldOut) held-out real faces that cannot measure a run: images of another size than its
    `size` px, a set prepared otherwise than its training data (compare_preparation), any image that is one of
    its training images (train_path), compared image by image, so that a shuffled subset of the training set is
    caught as well as a copy, or more than SAME_PHOTO_SHARE of them training photos prepared another way
    (same_photos_among). Returns a note for the report when the check cannot be complete (the training file is
    gone, or is not the one the run trained on, per `train_fingerprint`), when the sources differ, or when a
    few images are training photos, else None."""
    if images.shape[1:3] != (size, size):
        raise NotHeldOut(f"{path} holds {images.shape[1]} px images, not {size} px like {run}'s")
    if not os.path.isfile(train_path):
        return f"{path} was not checked for training images of {run}: its training data {train_path} is gone"
    if os.path.exists(path) and os.path.samefile(path, train_path):
        raise NotHeldOut(f"{path} is the training data of {run} (its training file), not held-out faces")
    notes = [compare_preparation(path, train_path, run)]
    train = load_npy_images(train_path, "training data", mmap=True)
    if train_fingerprint and array_fingerprint(train) != train_fingerprint:
        notes.append(f"{train_path} is no longer the data {run} trained on (another fingerprint): {path} was "
                     "checked for training images against the file as it is now")
    if train.shape[1:] != images.shape[1:]:
        notes.append(f"{path} was not checked for training images: {train_path} holds images of another size")
        return "; ".join(note for note in notes if note) or None
    pairs = training_images_among(images, train)
    if pairs:
        (i, j), k = pairs[0], len(pairs)
        raise NotHeldOut(f"{path} is not held out: {k} of its {len(images)} images {'is' if k == 1 else 'are'} in "
                         f"the training data of {run} ({train_path}; e.g. its image {i} is training image {j})")
    same = same_photos_among(images, train)
    if same:
        (i, j, how), k = same[0], len(same)
        if k > SAME_PHOTO_SHARE * len(images):
            raise NotHeldOut(f"{path} is not held out: {k} of its {len(images)} images are photos of the training "
                             f"data of {run} ({train_path}) prepared another way (e.g. its image {i} is training "
                             f"image {j} {how})")
        notes.append(f"{k} of the {len(images)} images of {path} are near-copies of training images of {run} (e.g. "
                     f"its image {i} and training image {j}): too few to refuse the set (the data itself holds some "
                     "photos twice); they stay in it")
    return "; ".join(note for note in notes if note) or None


def npy_header(f, available, where):
    """(shape, dtype) of the .npy array at file object f's position, read from its header alone, checked before
    any memory is taken for it: a real array's dtype (no pickled objects) whose data fits in the `available`
    bytes from the start of the header. Raises DataError naming `where`."""
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:  # 3.0: structured dtypes with non-Latin-1 names, never an image array
            raise ValueError(f"no .npy format version {version[0]}.{version[1]} is read here (cut off, or not a "
                             ".npy file)")
        shape, _, dtype = readers[version](f, max_header_size=1 << 16)
    except (ValueError, OSError, EOFError, KeyError, SyntaxError, TypeError) as error:
        raise DataError(f"{where} is not a readable .npy array: {error}") from None
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (a pickle), not numbers; it is not read")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > available - (f.tell() - start):
        raise DataError(f"{where} declares a {dtype} array of shape {tuple(shape)} ({declared:,} bytes) but holds "
                        f"{max(0, available - (f.tell() - start)):,} bytes of data: it is cut off or damaged")
    return tuple(shape), dtype


def load_npy(path, what="array", hint="", mmap=False):
    """A .npy file's array (memory-mapped with mmap), its header checked first (npy_header): a damaged file cannot
    make numpy allocate what it merely declares. An .npz (or any zip) given for a .npy, a missing file or one
    that is no array is a one-line DataError."""
    if not os.path.isfile(path):
        raise DataError(f"no {what} at {path}" + (f"; {hint}" if hint else ""))
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise DataError(f"{path} is an .npz archive (arrays zipped together), not a .npy array")
            f.seek(0)
            npy_header(f, os.path.getsize(path), path)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # EOFError: an empty file
        raise DataError(f"{path} is not a readable .npy array: {error}") from None


def load_npz(path, keys=None, optional=()):
    """{key: array} of an .npz file: `keys` (all when None) and those of `optional` it holds. Each member is
    checked before it is read: readable by zipfile, and an array whose header declares no more data than the
    member holds. Anything wrong is a one-line DataError."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
            wanted = list(members) if keys is None else [*keys, *[key for key in optional if key in members]]
            arrays = {}
            for key in wanted:
                if key not in members:
                    raise DataError(f"{path} holds no {key!r} (it holds {', '.join(sorted(members)) or 'nothing'})")
                info = members[key]
                if unreadable_member(info):
                    raise DataError(f"cannot read {key!r} in {path}: it is {unreadable_member(info)}")
                with archive.open(info) as member:
                    npy_header(member, info.file_size, f"{key!r} in {path}")
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"cannot read {path}: {error}") from None


def load_npy_images(path, what="images", hint="", mmap=False, uint8_only=True):
    """A .npy image array, checked to be (N, S, S, 3) and, unless uint8_only=False, uint8 (what preprocess.py
    and generate.py write). mmap: memory-mapped, read on demand. `hint` follows the missing-file message."""
    images = load_npy(path, what, hint, mmap)
    if (images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]
            or (uint8_only and images.dtype != np.uint8)):
        raise DataError(f"{path} holds {images.dtype} {images.shape}; expected {'uint8 ' if uint8_only else ''}"
                        "(N, S, S, 3) as written by preprocess.py")
    return images


def sample_z(n, latent_dim, seed):
    """n noise vectors z ~ N(0, I). The first m rows are the same for any n >= m, so seeds name faces."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


def sample_z_chunks(n, latent_dim, seed, chunk):
    """sample_z(n, latent_dim, seed) in blocks of up to `chunk` rows, for n too large to hold at once (numpy's
    generator gives the same numbers drawn in pieces as drawn together)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        yield rng.standard_normal((min(chunk, n - start), latent_dim)).astype(np.float32)


def generate_images(generator, z, batch_size=256):
    """Noise (N, latent_dim) -> uint8 faces (N, S, S, 3); batch norm uses its moving averages."""
    z = np.asarray(z, np.float32)
    return np.concatenate([to_uint8(generator.predict_on_batch(z[i:i + batch_size]))
                           for i in range(0, len(z), batch_size)])


def sample_faces(generator, n, seed=0):
    """n uint8 faces from z = sample_z(n, ..., seed): the same faces in generate.py and evaluate.py."""
    return generate_images(generator, sample_z(n, generator.input_shape[-1], seed))


# The member of a .keras file (a zip) in which train.py records what the model is: its epoch and global step.
MODEL_RECORD = "facegan.json"


def load_model_snapshot(path, what="model"):
    """(model, about) of a .keras file, both from one copy of its bytes taken first: a file replaced while it
    is read (a run training on) gives the model and the record of one version, never a mix. about: "sha1" of
    the bytes, and "epoch" and "step" as train.py recorded them in the file (None in a file saved without a
    record). A missing file, or one that is not a model, is a one-line DataError."""
    if not os.path.isfile(path):
        raise DataError(f"no {what} at {path} (has the run finished an epoch?)")
    import keras
    import models  # noqa: F401  registers models.SpectralNormConv2D, for discriminators trained with it
    with tempfile.TemporaryDirectory(prefix="facegan-model-") as folder:
        copy = os.path.join(folder, "model.keras")
        digest = hashlib.sha1()
        with open(path, "rb") as source, open(copy, "wb") as target:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                target.write(block)
        about = {"sha1": "sha1:" + digest.hexdigest(), **read_model_record(copy)}
        check_model_archive(copy, path)
        try:
            return keras.models.load_model(copy, compile=False), about
        except Exception as error:  # keras raises many types for a file that is not a model
            first_line = (str(error).strip().splitlines() or [""])[0][:160]
            raise DataError(f"{path} is not a Keras model ({type(error).__name__}: {first_line})") from None


def check_model_archive(copy, path):
    """Refuse a .keras file (a zip) that declares far more bytes than it holds, before Keras unpacks it: Keras
    stores its members uncompressed, so such a file is not a saved model but a decompression bomb."""
    try:
        with zipfile.ZipFile(copy) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # Keras says what it is not
    size = os.path.getsize(copy)
    if declared > 16 * size + (64 << 20):
        raise DataError(f"{path} declares {declared:,} bytes inside its {size:,}: not a Keras model (a "
                        "decompression bomb?); it is not unpacked")


def model_file_about(path):
    """What load_model_snapshot's about says of a .keras file, without loading the model: the sha1 of its bytes
    and its record, both from one read of the file."""
    with open(path, "rb") as f:
        data = f.read()
    return {"sha1": "sha1:" + hashlib.sha1(data).hexdigest(), **read_model_record(io.BytesIO(data))}


def read_model_record(path):
    """{"epoch": ..., "step": ...} that train.py recorded in a .keras file (a path or a binary file object; None
    each when it has no record, or one that is not two non-negative integers)."""
    record = {}
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(MODEL_RECORD)
            if info.file_size <= 4096:
                record = json.loads(archive.read(info).decode())
    except (KeyError, OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile, RuntimeError,
            NotImplementedError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    return {key: record[key] if type(record.get(key)) is int and record[key] >= 0 else None
            for key in ("epoch", "step")}


def load_keras_model(path, what="model"):
    """keras.models.load_model (of a copy: load_model_snapshot) with a one-line DataError for a missing file or
    one that is not a model."""
    return load_model_snapshot(path, what)[0]


def load_generator_snapshot(path):
    """(generator, about) of a generator .keras file (load_model_snapshot), checked to map (latent_dim,) noise
    to (S, S, 3) images."""
    generator, about = load_model_snapshot(path, "generator")
    if len(generator.input_shape) != 2 or len(generator.output_shape) != 4 or generator.output_shape[-1] != 3:
        raise DataError(f"{path} is not a generator: it maps {generator.input_shape} to {generator.output_shape}, "
                        "not noise (latent_dim,) to images (S, S, 3)")
    return generator, about


def load_generator_file(path):
    """A generator .keras file, checked to map (latent_dim,) noise to (S, S, 3) images."""
    return load_generator_snapshot(path)[0]


def fixed_pipeline_options():
    """tf.data options with the autotuner off. Its background thread sleeps between tuning rounds (10 ms,
    doubling up to 60 s), and destroying the iterator waits for that thread to wake: with one iterator per
    epoch, an epoch could end with up to a minute of idle waiting."""
    import tensorflow as tf
    options = tf.data.Options()
    options.autotune.enabled = False
    return options
