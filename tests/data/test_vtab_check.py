"""VTAB-1k folder validation, copy identification and FGVC splits, on folders the tests write."""
import json
import shutil

import numpy as np
import pytest
from tests.conftest import assert_words
from PIL import Image

from vpt_explore.data import vtab_check as V
from vpt_explore.errors import ConfigError, DataError, MissingFileError

TASK, CLASSES, N_TEST = "kitti", 4, 40  # a real VTAB-1k task name with few classes


def write_image(path, seed, size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def write_vtab_task(folder, n_test=N_TEST):
    """A complete fake VTAB-1k task: images/{train800,val200,train800val200,test} + the four lists."""
    lines = {}
    for split, n, offset in (("train800", 800, 0), ("val200", 200, 800), ("test", n_test, 5000)):
        lines[split] = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            write_image(folder / rel, offset + i)
            lines[split].append(f"{rel} {(offset + i) % CLASSES}")
    lines["train800val200"] = []
    (folder / "images/train800val200").mkdir()
    for i, line in enumerate(lines["train800"] + lines["val200"]):  # a copy of each image, renamed
        rel, label = line.split()
        new = f"images/train800val200/{i:06d}.jpg"
        shutil.copyfile(folder / rel, folder / new)
        lines["train800val200"].append(f"{new} {label}")
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vtab")
    write_vtab_task(root / TASK)
    return root


@pytest.fixture
def root(clean_root, tmp_path):
    """A private copy of the clean folder that a test may break."""
    shutil.copytree(clean_root, tmp_path / "vtab")
    return tmp_path / "vtab"


def edit_line(path, lineno, new):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- validation
def test_clean_folder_passes(clean_root):
    report = V.validate_vtab_folder(clean_root, TASK, images="all")
    assert report.ok and report.problems == ()
    t = report[TASK]
    assert dict(t.counts) == {"train800": 800, "val200": 200, "train800val200": 1000, "test": N_TEST}
    assert t.num_classes == CLASSES and t.classes_seen["train800"] == CLASSES
    assert t.images_checked == 2000 + N_TEST and dict(t.image_sizes) == {"8x6": 2000 + N_TEST}
    assert "OK" in str(report)
    assert V.validate_vtab_folder(clean_root).ok  # every task folder under the root
    assert V.validate_vtab_folder(clean_root / TASK)[TASK].images_checked == 4 * 16  # a task folder; sampled


def test_the_table_has_the_19_tasks():
    assert len(V.VTAB_CLASSES) == 19
    assert V.VTAB_CLASSES["cifar"] == 100 and V.VTAB_CLASSES["sun397"] == 397
    assert V.VTAB_CLASSES["smallnorb_ele"] == 9 and V.VTAB_CLASSES["patch_camelyon"] == 2


def test_missing_image_names_list_line_and_fix(root):
    (root / TASK / "images/val200/000007.jpg").unlink()
    with pytest.raises(DataError) as e:
        V.validate_vtab_folder(root, TASK)
    assert_words(e.value, ["val200.txt:8", "images/val200/000007.jpg", "do not exist", "fix:"])


def test_extra_file_is_reported(root):
    write_image(root / TASK / "images/train800/stray.jpg", 1)
    with pytest.raises(DataError) as e:
        V.validate_vtab_folder(root, TASK)
    assert_words(e.value, ["images/train800/stray.jpg", "in no list", "delete them"])


def test_class_id_outside_the_task_names_file_line(root):
    edit_line(root / TASK / "train800.txt", 3, f"images/train800/000002.jpg {CLASSES}")
    with pytest.raises(DataError) as e:
        V.validate_vtab_folder(root, TASK, images=0)
    assert_words(e.value, ["train800.txt:3", f"label {CLASSES}", f"[0, {CLASSES})", "'kitti'", "4 classes"])


def test_wrong_split_size_and_union(root):
    path = root / TASK / "val200.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    report = V.validate_vtab_folder(root, TASK, images=0, strict=False)
    assert not report.ok
    text = "\n".join(report.problems)
    assert_words(text, ["val200.txt", "199 images listed", "has 200", "train800val200.txt",
                        "1 (image, label) pairs are not in train800.txt + val200.txt"])
    assert_words(text, ["images/val200/000199.jpg", "in no list"])  # its file is now unlisted


def test_union_with_a_changed_image_is_caught(root):
    write_image(root / TASK / "images/train800val200/000010.jpg", 99999)
    with pytest.raises(DataError) as e:
        V.validate_vtab_folder(root, TASK, images=0)
    assert_words(e.value, ["train800val200.txt", "not in train800.txt + val200.txt", "rebuild"])


def test_unreadable_image_and_bad_line(root):
    (root / TASK / "images/test/000003.jpg").write_bytes(b"not a jpeg")
    edit_line(root / TASK / "test.txt", 10, "images/test/000009.jpg nine")
    with pytest.raises(DataError) as e:
        V.validate_vtab_folder(root, TASK, images="all")
    assert_words(e.value, ["test.txt:4", "images/test/000003.jpg", "cannot be read",
                           "test.txt:10", "'<relative image path> <integer label>'"])


def test_missing_list_and_missing_folders(root, tmp_path):
    (root / TASK / "test.txt").unlink()
    with pytest.raises(DataError) as e:
        V.validate_vtab_folder(root, TASK, images=0)
    assert_words(e.value, ["test.txt: missing", "images/test/000000.jpg", "in no list"])
    with pytest.raises(MissingFileError) as e:
        V.validate_vtab_folder(tmp_path / "nowhere")
    assert_words(e.value, ["nowhere", "VPT_VTAB_ROOT"])
    with pytest.raises(MissingFileError) as e:
        V.validate_vtab_folder(root, "cifar")
    assert_words(e.value, ["cifar", "'kitti'"])
    with pytest.raises(MissingFileError):
        V.validate_vtab_folder(tmp_path)  # a folder without task folders


def test_unknown_task_needs_num_classes(root):
    (root / TASK).rename(root / "kiti")
    with pytest.raises(ConfigError) as e:
        V.validate_vtab_folder(root, "kiti")
    assert_words(e.value, ["task", "'kiti'", "did you mean 'kitti'", "num_classes="])
    assert V.validate_vtab_folder(root, "kiti", num_classes=CLASSES, images=0).ok


# --------------------------------------------------------------------------- which copy
def test_manifest_and_identify_copy(root, tmp_path):
    m = V.manifest(root, TASK)
    assert m["task"] == TASK and set(m["splits"]) == set(V.VTAB_SPLITS)
    assert len(m["files"]) == 4 + 2000 + N_TEST and len(m["files"]["test.txt"]) == 64
    assert m == V.manifest(root, TASK)  # deterministic
    other = {k: "0" * 64 for k in m["splits"]}
    known = {"format": V.MANIFEST_FORMAT, "copies": {"copy-b": {TASK: {"splits": other}},
                                                      "copy-a": {TASK: {"splits": m["splits"]}},
                                                      "files-only": {"cifar": {"files": {"x": "y"}}}}}
    assert V.identify_copy(root, TASK, known) == "copy-a"
    path = tmp_path / "known.json"
    path.write_text(json.dumps({"copies": {"by-files": {TASK: {"files": m["files"]}}}}))
    assert V.identify_copy(root, TASK, path) == "by-files"
    assert V.identify_copy(root, TASK) is None  # the shipped list has no copies yet
    assert V.load_known_manifests()["copies"] == {}
    write_image(root / TASK / "images/test/000000.jpg", 12345)
    assert V.identify_copy(root, TASK, known) is None
    assert V.identify_copy(root, TASK, path) is None


# --------------------------------------------------------------------------- FGVC splits
COUNTS = {0: 10, 1: 20, 2: 5, 3: 1}


def fgvc_lists(root):
    """Images for 4 classes (10, 20, 5 and 1 train images, 2 test each) and plain list files."""
    train, test, k = [], [], 0
    for label, n in COUNTS.items():
        for split, count, rows in (("train", n, train), ("test", 2, test)):
            for i in range(count):
                rel = f"{split}/c{label}/{i:03d}.jpg"
                write_image(root / rel, k)
                k += 1
                rows.append(f"{rel} {label}")
    (root / "train_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root / "train_list.txt", root / "test_list.txt"


def read_json(path):
    return json.loads(path.read_text())


def split_bytes(*args, **kw):
    paths = V.fgvc_split(*args, overwrite=True, **kw)
    return {s: p.read_bytes() for s, p in paths.items()}


def test_fgvc_split_is_stratified_and_deterministic(tmp_path):
    train_list, test_list = fgvc_lists(tmp_path)
    paths = V.fgvc_split(train_list, test_list, tmp_path, 0.1, seed=0)
    assert paths == {s: tmp_path / f"{s}.json" for s in ("train", "val", "test")}
    train, val, test = (read_json(paths[s]) for s in ("train", "val", "test"))
    listed = dict(line.rsplit(" ", 1) for line in train_list.read_text().splitlines())
    assert set(train) | set(val) == set(listed) and not set(train) & set(val)
    assert all(str(label) == listed[p] for p, label in {**train, **val}.items())
    per_class = {c: sum(1 for v in val.values() if v == c) for c in COUNTS}
    assert per_class == {0: 1, 1: 2, 2: 1, 3: 0}  # round(0.1 n), a single image stays in train
    assert len(test) == 8
    first = {s: p.read_bytes() for s, p in paths.items()}
    assert split_bytes(train_list, test_list, tmp_path, 0.1, seed=0) == first
    shuffled = tmp_path / "shuffled.txt"  # the input order does not matter
    shuffled.write_text("\n".join(reversed(train_list.read_text().splitlines())) + "\n")
    assert split_bytes(shuffled, test_list, tmp_path, 0.1, seed=0) == first
    assert any(split_bytes(train_list, test_list, tmp_path, 0.1, seed=s)["val"] != first["val"]
               for s in (1, 2, 3))
    from vpt_explore.data.formats import load_fgvc_json  # the loader reads what we wrote
    V.fgvc_split(train_list, test_list, tmp_path, 0.1, seed=0, overwrite=True)
    assert len(load_fgvc_json(tmp_path, "val", image_size=8)) == 4


def test_fgvc_split_out_dir_above_root(tmp_path):
    data = tmp_path / "data"
    train_list, test_list = fgvc_lists(data)
    paths = V.fgvc_split(train_list, test_list, data, out_dir=tmp_path)
    assert all(k.startswith("data/train/") for k in read_json(paths["train"]))
    from vpt_explore.data.formats import load_fgvc_json
    assert len(load_fgvc_json(tmp_path, "test", image_size=8)) == 8
    with pytest.raises(ConfigError) as e:
        V.fgvc_split(train_list, test_list, data, out_dir=tmp_path / "elsewhere")
    assert_words(e.value, ["out_dir=", "elsewhere", "a folder above it"])


def test_fgvc_split_names_missing_files(tmp_path):
    train_list, test_list = fgvc_lists(tmp_path)
    (tmp_path / "test/c2/001.jpg").unlink()
    with pytest.raises(MissingFileError) as e:
        V.fgvc_split(train_list, test_list, tmp_path)
    assert_words(e.value, ["test_list.txt:6", "test/c2/001.jpg", "do not exist", "root"])
    assert not (tmp_path / "train.json").exists()


def test_fgvc_split_bad_input(tmp_path):
    train_list, test_list = fgvc_lists(tmp_path)
    V.fgvc_split(train_list, test_list, tmp_path)
    with pytest.raises(ConfigError) as e:
        V.fgvc_split(train_list, test_list, tmp_path)
    assert_words(e.value, ["train.json", "val.json", "already exist", "overwrite=True"])
    V.fgvc_split(train_list, test_list, tmp_path, overwrite=True)
    with pytest.raises(ConfigError) as e:
        V.fgvc_split(train_list, test_list, tmp_path, val_fraction=1.5, overwrite=True)
    assert_words(e.value, ["val_fraction=1.5", "[0, 1)"])
    with pytest.raises(DataError) as e:
        V.fgvc_split(train_list, train_list, tmp_path, overwrite=True)
    assert_words(e.value, ["both the train and the test list"])
    edit_line(train_list, 2, "train/c0/001.jpg")
    with pytest.raises(DataError) as e:
        V.fgvc_split(train_list, test_list, tmp_path, overwrite=True)
    assert_words(e.value, ["train_list.txt:2", "<integer label>"])
    with pytest.raises(MissingFileError):
        V.fgvc_split(tmp_path / "none.txt", test_list, tmp_path)
    pairs = V.fgvc_split([("train/c0/000.jpg", 0), ("train/c0/002.jpg", 0)], [("test/c0/000.jpg", 0)],
                         tmp_path, 0.5, overwrite=True)
    assert len(read_json(pairs["val"])) == 1 and len(read_json(pairs["train"])) == 1


def test_fgvc_split_cub_format(tmp_path):
    cub = tmp_path / "CUB_200_2011"
    images, split, labels = [], [], []
    for i in range(1, 13):
        cls = 1 + (i - 1) % 2
        rel = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{i:04d}.jpg"
        write_image(cub / "images" / rel, i)
        images.append(f"{i} {rel}")
        split.append(f"{i} {int(i <= 8)}")
        labels.append(f"{i} {cls}")
    for name, rows in (("images.txt", images), ("train_test_split.txt", split),
                       ("image_class_labels.txt", labels)):
        (cub / name).write_text("\n".join(rows) + "\n")
    paths = V.fgvc_split_cub(cub, 0.25, seed=0)
    train, val, test = (read_json(paths[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 2, 4)
    assert set(val.values()) == {0, 1} and paths["train"].parent == cub
    assert all(k.startswith(("001.Bird_1/", "002.Bird_2/")) for k in train)
    (cub / "images" / "002.Bird_2/Bird_2_0012.jpg").unlink()
    with pytest.raises(MissingFileError) as e:
        V.fgvc_split_cub(cub, overwrite=True)
    assert_words(e.value, ["images.txt:12", "Bird_2_0012.jpg"])
