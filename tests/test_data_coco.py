"""COCO datasets: the sample data through pycocotools, label map, crowd boxes, layouts, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssd.data import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    BadSampleError,
    BaseTransform,
    COCOAnnotationTransform,
    COCODetection,
    DataWarning,
    MissingFileError,
    SSDAugmentation,
)

COCO_MINI = Path(__file__).resolve().parents[1] / "data" / "samples" / "coco_mini"


def test_class_names_and_ids_are_the_official_80():
    assert len(COCO_CLASSES) == 80 == len(set(COCO_CLASSES)) == len(COCO_CATEGORY_IDS)
    ds = COCODetection(COCO_MINI, "val2017")
    assert ds.classes == COCO_CLASSES and ds.cat_ids == list(COCO_CATEGORY_IDS)
    assert ds.num_classes == 81
    names = {c["id"]: c["name"] for c in ds.coco.loadCats(ds.coco.getCatIds())}
    for cat_id, name in [(1, "person"), (11, "fire hydrant"), (13, "stop sign"),
                         (14, "parking meter"), (37, "sports ball"), (64, "potted plant"),
                         (67, "dining table"), (77, "cell phone"), (88, "teddy bear"),
                         (89, "hair drier"), (90, "toothbrush")]:
        assert names[cat_id] == name
        label = ds.cat_id_to_label[cat_id]
        assert ds.classes[label] == name and ds.label_to_cat_id[label] == cat_id
    assert ds.cat_id_to_label[1] == 0 and ds.cat_id_to_label[90] == 79


def test_sample_loads_with_pycocotools_targets():
    ds = COCODetection(COCO_MINI, "val2017")
    assert ds.name == "MS COCO" and len(ds) == 20
    n_crowd = 0
    for i in range(len(ds)):
        img_id = ds.ids[i]
        info = ds.coco.loadImgs(img_id)[0]
        img, target = ds[i]
        assert img.shape == (3, info["height"], info["width"]) and img.dtype == torch.uint8
        assert ds.image_size(i) == (info["width"], info["height"]) and ds.image_id(i) == img_id
        anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=img_id))
        assert ds.pull_anno(i) == anns
        n_crowd += sum(a["iscrowd"] for a in anns)
        # reference: xywh -> corners / size, category id -> index in the sorted id list
        w, h = info["width"], info["height"]
        ref = [[a["bbox"][0] / w, a["bbox"][1] / h, (a["bbox"][0] + a["bbox"][2]) / w,
                (a["bbox"][1] + a["bbox"][3]) / h, COCO_CATEGORY_IDS.index(a["category_id"])]
               for a in anns if not a["iscrowd"]]
        np.testing.assert_allclose(target, np.array(ref, np.float32).reshape(-1, 5), atol=1e-6)
    assert n_crowd == 1  # SOURCE.md: one iscrowd annotation, skipped above


def test_sample_with_transforms():
    for transform in (SSDAugmentation(300, seed=0), BaseTransform(300)):
        ds = COCODetection(COCO_MINI, "val2017", transform)
        for i in range(len(ds)):
            img, target = ds[i]
            assert img.shape == (3, 300, 300) and img.dtype == torch.float32
            assert ((target[:, :4] >= 0) & (target[:, :4] <= 1)).all()
            assert ((target[:, 4] >= 0) & (target[:, 4] < 80)).all()
    ds = COCODetection(COCO_MINI, "val2017")
    img = ds.pull_image(0)
    info = ds.coco.loadImgs(ds.ids[0])[0]
    np.testing.assert_array_equal(
        img, cv2.imread(str(COCO_MINI / "images" / "val2017" / info["file_name"])))
    assert ds.pull_tensor(0).shape == (1, *img.shape)


def make_coco(root: Path, images: list[dict], annotations: list[dict], layout: str = "images",
              categories=None, write_images: bool = True) -> Path:
    img_dir = root / "images" / "val" if layout == "images" else root / "val"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for im in images:
        if write_images:
            arr = rng.integers(0, 256, (im["height"], im["width"], 3), dtype=np.uint8)
            cv2.imwrite(str(img_dir / im["file_name"]), arr)
    cats = categories or [{"id": 7, "name": "b-thing"}, {"id": 3, "name": "a-thing"}]
    data = {"images": images, "annotations": annotations, "categories": cats}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return root


def ann(i, img, cat, bbox, crowd=0):
    return {"id": i, "image_id": img, "category_id": cat, "bbox": bbox, "iscrowd": crowd,
            "area": bbox[2] * bbox[3]}


@pytest.mark.parametrize("layout", ["images", "flat"])
def test_custom_coco_label_map_layouts_crowd_and_empty_images(tmp_path, layout):
    images = [{"id": 5, "file_name": "a.png", "width": 40, "height": 20},
              {"id": 9, "file_name": "b.png", "width": 30, "height": 30}]
    anns = [ann(1, 5, 7, [4, 2, 10, 8]), ann(2, 5, 3, [0, 0, 40, 20], crowd=1),
            ann(3, 5, 3, [30, 10, 20, 20])]  # reaches outside: clipped to 40x20
    root = make_coco(tmp_path, images, anns, layout=layout)
    ds = COCODetection(root, "val")
    assert ds.cat_ids == [3, 7] and ds.classes == ("a-thing", "b-thing")
    assert ds.num_classes == 3 and ds.ids == [5, 9]
    np.testing.assert_allclose(ds[0][1], [[4 / 40, 2 / 20, 14 / 40, 10 / 20, 1],
                                          [30 / 40, 10 / 20, 1, 1, 0]], atol=1e-7)
    img, target = ds[1]  # no annotations: a valid, empty sample
    assert img.shape == (3, 30, 30) and target.shape == (0, 5)


def test_degenerate_coco_boxes_dropped_with_warning(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}]
    anns = [ann(1, 1, 3, [5, 5, 0, 4]), ann(2, 1, 3, [50, 5, 3, 3]), ann(3, 1, 7, [1, 1, 2, 2])]
    ds = COCODetection(make_coco(tmp_path, images, anns), "val")
    with pytest.warns(DataWarning, match=r"a\.png \(id 1\).*dropped 2 box"):
        target = ds[0][1]
    np.testing.assert_allclose(target, [[1 / 40, 1 / 20, 3 / 40, 3 / 20, 1]], atol=1e-7)


def test_coco_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_val\.json"):
        COCODetection(tmp_path, "val")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"instances_val\.json.*not valid JSON"):
        COCODetection(tmp_path, "val")
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 20},
              {"id": 2, "file_name": "gone.png", "width": 40, "height": 20},
              {"id": 3, "file_name": "c.png", "width": 40, "height": 20}]
    root = make_coco(tmp_path / "x", images, [ann(1, 1, 99, [1, 1, 5, 5])])
    (root / "images" / "val" / "gone.png").unlink()
    shutil.copyfile(root / "images" / "val" / "a.png", root / "images" / "val" / "c.png")
    data = json.loads((root / "annotations" / "instances_val.json").read_text())
    data["images"][2]["width"] = 21  # c.png is 40x20 on disk
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    ds = COCODetection(root, "val")
    with pytest.raises(BadSampleError, match=r"a\.png \(id 1\).*unknown category id 99"):
        ds[0]
    with pytest.raises(MissingFileError, match=r"gone\.png \(id 2\)"):
        ds[1]
    with pytest.raises(BadSampleError, match=r"c\.png \(id 3\).*40x20.*records 21x20"):
        ds[2]
    skipping = COCODetection(root, "val", skip_bad=True)
    with pytest.raises(BadSampleError, match="every one of its 3 samples is bad"):
        skipping[0]
    assert skipping.num_skipped == 3
    no_images = make_coco(tmp_path / "y", images[:1], [], write_images=False)
    shutil.rmtree(no_images / "images")
    with pytest.raises(FileNotFoundError, match=r"neither .*images/val nor .*y/val"):
        COCODetection(no_images, "val")


def test_coco_annotation_transform_default_map_is_official():
    t = COCOAnnotationTransform()
    rows = t([ann(1, 1, 90, [10, 20, 30, 40]), ann(2, 1, 1, [0, 0, 5, 5], crowd=1)], 100, 200)
    assert rows == [[0.1, 0.1, 0.4, 0.3, 79]]
