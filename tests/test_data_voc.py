"""VOC datasets: the sample data, ssd.pytorch's annotation rule, custom classes, bad input."""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssd.data import (
    VOC_CLASSES,
    BadSampleError,
    BaseTransform,
    DataWarning,
    MissingFileError,
    SSDAugmentation,
    UnknownClassError,
    VOCAnnotationTransform,
    VOCDetection,
    load_class_names,
)

VOC_MINI = Path(__file__).resolve().parents[1] / "data" / "samples" / "voc_mini" / "VOCdevkit"
TRAINVAL = [("2007", "trainval")]


# --- helpers: a synthetic VOCdevkit in tmp_path ------------------------------------------
def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[dict]) -> str:
    parts = [f"<annotation><filename>{filename}</filename>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for o in objects:
        box = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"),
                                                          o["box"]))
        parts.append(f"<object><name>{o['name']}</name>"
                     f"<difficult>{o.get('difficult', 0)}</difficult>"
                     f"<bndbox>{box}</bndbox></object>")
    parts.append("</annotation>")
    return "".join(parts)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_voc(root: Path, samples: dict, year: str = "2007", set_name: str = "trainval",
             ext: str = ".jpg") -> Path:
    """samples: id -> (image ndarray | bytes | None, xml text | None)."""
    base = root / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for sid, (image, xml) in samples.items():
        if isinstance(image, np.ndarray):
            assert cv2.imwrite(str(base / "JPEGImages" / f"{sid}{ext}"), image)
        elif isinstance(image, bytes):
            (base / "JPEGImages" / f"{sid}{ext}").write_bytes(image)
        if xml is not None:
            (base / "Annotations" / f"{sid}.xml").write_text(xml)
    (base / "ImageSets" / "Main" / f"{set_name}.txt").write_text("\n".join(samples) + "\n")
    return root


def one_sample_voc(tmp_path: Path, objects: list[dict], size=(80, 60), image=None,
                   **kwargs) -> VOCDetection:
    w, h = size
    img = random_image(h, w) if image is None else image
    root = make_voc(tmp_path, {"img0": (img, voc_xml("img0.jpg", size, objects))})
    return VOCDetection(root, TRAINVAL, **kwargs)


# --- the sample data ------------------------------------------------------------------------
def reference_voc_rows(xml_path: Path, keep_difficult: bool = False) -> np.ndarray:
    """ssd.pytorch's rule, written out: (int(coord) - 1) / size, label = alphabetical index."""
    root = ET.parse(xml_path).getroot()
    w = int(root.find("size/width").text)
    h = int(root.find("size/height").text)
    rows = []
    for obj in root.iter("object"):
        if int(obj.find("difficult").text) == 1 and not keep_difficult:
            continue
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (int(bb.find(t).text) - 1 for t in ("xmin", "ymin", "xmax", "ymax"))
        rows.append([x1 / w, y1 / h, x2 / w, y2 / h,
                     VOC_CLASSES.index(obj.find("name").text.strip().lower())])
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def test_every_sample_loads_raw_with_ssd_pytorch_targets():
    ds = VOCDetection(VOC_MINI, [("2007", "trainval"), ("2007", "test")])
    assert len(ds) == 100 and ds.num_classes == 21 and ds.classes == VOC_CLASSES
    n_objects = 0
    for i in range(len(ds)):
        rootpath, img_id = ds.ids[i]
        img, target = ds[i]
        ref_img = cv2.imread(os.path.join(rootpath, "JPEGImages", img_id + ".jpg"))
        assert img.dtype == torch.uint8 and img.shape == (3, *ref_img.shape[:2])
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), ref_img)  # raw BGR
        ref = reference_voc_rows(Path(rootpath) / "Annotations" / f"{img_id}.xml")
        assert target.dtype == np.float32
        np.testing.assert_allclose(target, ref, rtol=0, atol=1e-7)
        assert ds.image_size(i) == (ref_img.shape[1], ref_img.shape[0])
        n_objects += len(target)
    assert n_objects == 273 - 38  # SOURCE.md: 273 objects, 38 difficult


def test_every_sample_loads_with_augmentation_and_base_transform():
    for transform in (SSDAugmentation(300, seed=0), BaseTransform(300)):
        ds = VOCDetection(VOC_MINI, TRAINVAL, transform)
        for i in range(len(ds)):
            img, target = ds[i]
            assert img.shape == (3, 300, 300) and img.dtype == torch.float32
            assert img.is_contiguous() and np.isfinite(img.numpy()).all()
            assert target.dtype == np.float32 and target.shape[1] == 5
            assert np.isfinite(target).all()
            assert (target[:, :4] >= 0).all() and (target[:, :4] <= 1).all()
            assert (target[:, 2] > target[:, 0]).all() and (target[:, 3] > target[:, 1]).all()
            labels = target[:, 4]
            assert np.array_equal(labels, np.round(labels))
            assert ((labels >= 0) & (labels < 20)).all()


def test_pull_methods_match_ssd_pytorch():
    ds = VOCDetection(VOC_MINI, TRAINVAL, BaseTransform(300, (104, 117, 123)))
    rootpath, img_id = ds.ids[1]
    assert rootpath == os.path.join(str(VOC_MINI), "VOC2007") and img_id == "2007_000032"
    ref = cv2.imread(os.path.join(rootpath, "JPEGImages", img_id + ".jpg"))
    np.testing.assert_array_equal(ds.pull_image(1), ref)
    t = ds.pull_tensor(1)
    assert t.shape == (1, *ref.shape) and t.dtype == torch.float32
    np.testing.assert_array_equal(t[0].numpy(), ref.astype(np.float32))
    # pull_anno: pixel coordinates minus 1 (the transform applied with width = height = 1)
    anno_id, rows = ds.pull_anno(1)
    assert anno_id == img_id
    ref_rows = reference_voc_rows(Path(rootpath) / "Annotations" / f"{img_id}.xml")
    h, w = ref.shape[:2]
    np.testing.assert_allclose(np.array(rows, dtype=np.float64),
                               ref_rows * [w, h, w, h, 1], atol=1e-3)
    img, target, height, width = ds.pull_item(1)
    assert (height, width) == (h, w)
    # BaseTransform then BGR -> RGB, CHW
    expected = cv2.resize(ref, (300, 300)).astype(np.float32) - np.array([104, 117, 123])
    np.testing.assert_allclose(img.numpy(), expected[:, :, ::-1].transpose(2, 0, 1), atol=1e-4)
    np.testing.assert_allclose(target, ref_rows, atol=1e-7)


def test_keep_difficult():
    ds = VOCDetection(VOC_MINI, TRAINVAL, keep_difficult=True)
    n = sum(len(ds[i][1]) for i in range(len(ds)))
    assert n == 196  # SOURCE.md: trainval has 196 objects, 27 difficult
    ds = VOCDetection(VOC_MINI, TRAINVAL)
    assert sum(len(ds[i][1]) for i in range(len(ds))) == 196 - 27


def test_image_sets_errors_name_what_was_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VOC2012.*ImageSets.*VOC2007: test, trainval"):
        VOCDetection(VOC_MINI, [("2012", "trainval")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VOCDetection(tmp_path / "nowhere", TRAINVAL)
    # 'year:name' strings and a single pair are accepted
    assert len(VOCDetection(VOC_MINI, "2007:test")) == 30
    assert len(VOCDetection(VOC_MINI, ("2007", "test"))) == 30


# --- custom VOC-format datasets -------------------------------------------------------------
def test_custom_classes_tuple_and_file(tmp_path):
    objs = [{"name": "Dog", "box": (11, 21, 41, 51)}, {"name": "cat", "box": (1, 1, 80, 60)}]
    ds = one_sample_voc(tmp_path, objs, classes=("cat", "dog"))
    assert ds.num_classes == 3 and ds.classes == ("cat", "dog")
    _, target = ds[0]
    np.testing.assert_allclose(target, [[10 / 80, 20 / 60, 40 / 80, 50 / 60, 1],
                                        [0, 0, 79 / 80, 59 / 60, 0]], atol=1e-7)
    cls_file = tmp_path / "classes.txt"
    cls_file.write_text("# my classes\n\ndog\n  cat  \n")
    assert load_class_names(cls_file) == ("dog", "cat")
    ds = VOCDetection(ds.root, TRAINVAL, classes=str(cls_file))
    assert ds.num_classes == 3 and ds.classes == ("dog", "cat")
    np.testing.assert_array_equal(ds[0][1][:, 4], [0, 1])


@pytest.mark.parametrize("text, match", [
    ("", "no class names"),
    ("cat\ndog\nCat\n", "listed twice"),
    ("__background__\ncat\n", "background"),
])
def test_bad_class_list_files(tmp_path, text, match):
    f = tmp_path / "c.txt"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_class_names(f)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_class_names(tmp_path / "missing.txt")


def test_unknown_class_names_file_and_class(tmp_path):
    ds = one_sample_voc(tmp_path, [{"name": "unicorn", "box": (2, 2, 20, 20)}])
    with pytest.raises(UnknownClassError, match=r"img0\.xml.*'unicorn'"):
        ds[0]
    # unknown="ignore" trains on a subset of the annotated classes
    ds = VOCDetection(ds.root, TRAINVAL, target_transform=VOCAnnotationTransform(
        unknown="ignore"))
    assert ds[0][1].shape == (0, 5)
    # a difficult object is dropped before its name is looked up (ssd.pytorch's order)
    ds = one_sample_voc(tmp_path / "d", [{"name": "unicorn", "box": (2, 2, 20, 20),
                                         "difficult": 1}])
    assert ds[0][1].shape == (0, 5)


def test_annotation_transform_float_coordinates_and_clipping(tmp_path):
    objs = [{"name": "cat", "box": ("12.5", "3", "30.25", "40")},
            {"name": "dog", "box": (-5, 0, 200, 70)}]  # reaches outside an 80x60 image
    ds = one_sample_voc(tmp_path, objs, classes=("cat", "dog"))
    _, target = ds[0]
    np.testing.assert_allclose(target, [[11.5 / 80, 2 / 60, 29.25 / 80, 39 / 60, 0],
                                        [0, 0, 79 / 80, 59 / 60, 1]], atol=1e-7)
    # pull_anno clips in pixels with the XML size even though it divides by 1
    assert ds.pull_anno(0)[1] == [[11.5, 2, 29.25, 39, 0], [0, 0, 79, 59, 1]]


def test_degenerate_boxes_dropped_with_one_warning_per_file(tmp_path):
    objs = [{"name": "cat", "box": (10, 10, 10, 30)},  # zero width
            {"name": "cat", "box": (90, 5, 120, 30)},  # entirely right of the 80x60 image
            {"name": "dog", "box": (5, 5, 30, 30)}]
    ds = one_sample_voc(tmp_path, objs, classes=("cat", "dog"))
    with pytest.warns(DataWarning, match=r"img0\.xml.*dropped 2 box"):
        _, target = ds[0]
    np.testing.assert_allclose(target, [[4 / 80, 4 / 60, 29 / 80, 29 / 60, 1]], atol=1e-7)


def test_no_usable_objects_gives_empty_target(tmp_path):
    objs = [{"name": "cat", "box": (2, 2, 20, 20), "difficult": 1}]
    for transform in (None, SSDAugmentation(64, seed=0), BaseTransform(64)):
        ds = one_sample_voc(tmp_path, objs, transform=transform)
        img, target = ds[0]
        assert target.shape == (0, 5) and target.dtype == np.float32
        assert img.shape[0] == 3
    ds = one_sample_voc(tmp_path / "none", [], transform=SSDAugmentation(64, seed=0))
    for _ in range(20):
        img, target = ds[0]
        assert img.shape == (3, 64, 64) and target.shape == (0, 5)


# --- bad files --------------------------------------------------------------------------------
def test_missing_image_and_annotation_name_file_and_id(tmp_path):
    root = make_voc(tmp_path, {"noimg": (None, voc_xml("noimg.jpg", (10, 10), [])),
                               "noxml": (random_image(10, 10), None)})
    ds = VOCDetection(root, TRAINVAL)
    with pytest.raises(MissingFileError, match=r"noimg\.jpg \(id noimg\)"):
        ds[0]
    with pytest.raises(FileNotFoundError, match=r"noxml\.xml \(id noxml\)"):
        ds[1]


def test_corrupt_jpeg_and_xml_name_file_and_id(tmp_path):
    good = cv2.imencode(".jpg", random_image(40, 50))[1].tobytes()
    root = make_voc(tmp_path, {
        "trunc": (good[: len(good) // 2], voc_xml("trunc.jpg", (50, 40), [])),
        "junk": (b"this is not an image", voc_xml("junk.jpg", (50, 40), [])),
        "badxml": (random_image(40, 50), "<annotation><object><name>cat</name>"),
    })
    ds = VOCDetection(root, TRAINVAL)
    with pytest.raises(BadSampleError, match=r"trunc\.jpg \(id trunc\).*corrupt"):
        ds[0]
    with pytest.raises(BadSampleError, match=r"junk\.jpg \(id junk\)"):
        ds[1]
    with pytest.raises(BadSampleError, match=r"badxml\.xml \(id badxml\).*not valid XML"):
        ds[2]


def test_size_mismatch_names_the_file(tmp_path):
    ds = one_sample_voc(tmp_path, [{"name": "cat", "box": (2, 2, 20, 20)}], size=(80, 60),
                        image=random_image(50, 80))
    with pytest.raises(BadSampleError, match=r"img0\.jpg.*80x50.*records 80x60"):
        ds[0]
    # zero size in the XML (some tools write it) skips the check
    (Path(ds.root) / "VOC2007" / "Annotations" / "img0.xml").write_text(
        voc_xml("img0.jpg", (0, 0), [{"name": "cat", "box": (2, 2, 20, 20)}]))
    np.testing.assert_allclose(ds[0][1], [[1 / 80, 1 / 50, 19 / 80, 19 / 50, 7]], atol=1e-7)


def test_exif_rotated_jpeg_never_moves_pixels_away_from_boxes(tmp_path):
    from PIL import Image

    stored = random_image(40, 60)  # stored layout: 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    jpeg = tmp_path / "rot.jpg"
    Image.fromarray(stored[:, :, ::-1]).save(jpeg, exif=exif.tobytes(), quality=95)
    objs = [{"name": "cat", "box": (2, 2, 20, 20)}]
    # annotation drawn on the stored pixels: read as stored, boxes as written
    root = make_voc(tmp_path / "a", {"r": (jpeg.read_bytes(), voc_xml("r.jpg", (60, 40), objs))})
    img, target = VOCDetection(root, TRAINVAL)[0]
    assert img.shape == (3, 40, 60)
    np.testing.assert_allclose(target, [[1 / 60, 1 / 40, 19 / 60, 19 / 40, 7]], atol=1e-7)
    # annotation drawn on the rotated view (40 wide, 60 high): a clear error, not a silent turn
    root = make_voc(tmp_path / "b", {"r": (jpeg.read_bytes(), voc_xml("r.jpg", (40, 60), objs))})
    with pytest.raises(BadSampleError, match=r"r\.jpg.*60x40.*records 40x60.*EXIF orientation"):
        VOCDetection(root, TRAINVAL)[0]


def test_skip_bad_skips_counts_and_logs(tmp_path, caplog):
    good = [{"name": "cat", "box": (2, 2, 20, 20)}]
    root = make_voc(tmp_path, {
        "a": (random_image(30, 40, 1), voc_xml("a.jpg", (40, 30), good)),
        "missing": (None, voc_xml("missing.jpg", (40, 30), good)),
        "corrupt": (b"\xff\xd8junk", voc_xml("corrupt.jpg", (40, 30), good)),
        "b": (random_image(30, 40, 2), voc_xml("b.jpg", (40, 30), good)),
    })
    ds = VOCDetection(root, TRAINVAL, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="ssd.data"):
        items = [ds[i] for i in range(len(ds))]
    assert ds.num_skipped == 2 and sorted(ds.bad_samples) == [1, 2]
    # bad samples are replaced by the next good one
    for got, want in zip(items, [0, 3, 3, 3]):
        np.testing.assert_array_equal(got[0].numpy(), ds.pull_item(want)[0].numpy())
    assert "missing.jpg" in caplog.text and "corrupt.jpg" in caplog.text
    assert len(caplog.records) == 2
    ds[1]  # known bad: skipped without another log line
    assert len(caplog.records) == 2 and ds.num_skipped == 2
    with pytest.raises(IndexError):
        ds[4]
    assert len(list(iter(ds))) == 4  # the iteration protocol still stops


def test_png_dataset_with_unusual_pixel_formats(tmp_path):
    rng = np.random.default_rng(3)
    gray16 = rng.integers(0, 65536, (30, 40), dtype=np.uint16)
    bgra = rng.integers(0, 256, (30, 40, 4), dtype=np.uint8)
    objs = [{"name": "cat", "box": (2, 2, 20, 20)}]
    root = make_voc(tmp_path, {"g16": (gray16, voc_xml("g16.png", (40, 30), objs)),
                               "bgra": (bgra, voc_xml("bgra.png", (40, 30), objs))}, ext=".png")
    ds = VOCDetection(root, TRAINVAL, image_ext=".png")
    img, target = ds[0]
    assert img.shape == (3, 30, 40) and img.dtype == torch.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[c].numpy(), (gray16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(ds.pull_image(1), bgra[:, :, :3])
    img, target = VOCDetection(root, TRAINVAL, SSDAugmentation(64, seed=0),
                               image_ext=".png")[1]
    assert img.shape == (3, 64, 64) and target.shape[1] == 5


def test_annotation_transform_called_directly_like_ssd_pytorch():
    xml = voc_xml("x.jpg", None, [{"name": "dog", "box": (0, 5, 130, 50)}])  # no <size>
    t = VOCAnnotationTransform()
    root = ET.fromstring(xml)
    assert t(root, 1, 1) == [[0, 4, 129, 49, 11]]  # pixels minus 1; size unknown: no upper clip
    assert t(root, 100, 50) == [[0, 4 / 50, 99 / 100, 49 / 50, 11]]  # clipped to 100x50
    assert t(ET.ElementTree(root), 1, 1, image_size=(120, 60)) == [[0, 4, 119, 49, 11]]
