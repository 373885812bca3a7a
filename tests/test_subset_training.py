"""Training on a subset of the classes: objects of other classes ignored or images dropped, one
summary line per dataset, and a dataset with no usable box is an error."""

from __future__ import annotations

import logging
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ssd.data import COCODetection, UnknownClassError, VOCDetection
from ssd.data.summary import NoUsableBoxError, report_datasets
from ssd.training import main

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"
COCO = REPO / "data" / "samples" / "coco_mini"
SUBSET = ("cat", "dog")
MIXED = "2007_001340"  # a dog, a chair and two people


def _objects(image_id: str) -> list[tuple[str, bool]]:
    root = ET.parse(VOC / "VOC2007" / "Annotations" / f"{image_id}.xml").getroot()
    return [(o.findtext("name").strip(), o.findtext("difficult", "0").strip() == "1")
            for o in root.iter("object")]


@pytest.fixture(scope="module")
def oracle():
    """Counts straight from the XML files, for the subset (difficult objects skipped)."""
    ids = (VOC / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    per_image = {}
    for i in ids:
        objs = [name for name, difficult in _objects(i) if not difficult]
        per_image[i] = (sum(n in SUBSET for n in objs), sum(n not in SUBSET for n in objs))
    return per_image


def test_ignore_keeps_mixed_images_and_their_subset_boxes(oracle):
    ds = VOCDetection(VOC, "2007:trainval", classes=SUBSET, other_classes="ignore")
    assert len(ds) == len(oracle)  # every image kept, objects of other classes ignored
    i = [img_id for _, img_id in ds.ids].index(MIXED)
    _, target, _, _ = ds.pull_item(i)
    assert target[:, 4].tolist() == [1.0]  # the dog (label 1) only
    s = ds.summary()
    assert s.objects == sum(k for k, _ in oracle.values())
    assert sum(s.other.values()) == sum(o for _, o in oracle.values())
    assert s.images_without_boxes == sum(k == 0 for k, _ in oracle.values())
    assert s.dropped_images == 0 and s.other["person"] >= 2


def test_drop_empty_leaves_out_images_without_a_box(oracle):
    ds = VOCDetection(VOC, "2007:trainval", classes=SUBSET, other_classes="ignore",
                      drop_empty=True)
    want = sorted(i for i, (k, _) in oracle.items() if k > 0)
    assert sorted(img_id for _, img_id in ds.ids) == want and MIXED in want
    s = ds.summary()
    assert s.kept_images == len(want) and s.images == len(oracle)
    assert s.dropped["no box of the classes"] == len(oracle) - len(want)


def test_drop_and_error_lose_the_mixed_images(oracle):
    ds = VOCDetection(VOC, "2007:trainval", classes=SUBSET, other_classes="drop")
    want = sorted(i for i, (_, o) in oracle.items() if o == 0)
    assert sorted(img_id for _, img_id in ds.ids) == want and MIXED not in want
    line = ds.summary().line()
    assert f"{len(oracle) - len(want)} with objects of other classes" in line
    assert "--other_classes ignore" in line
    strict = VOCDetection(VOC, "2007:trainval", classes=SUBSET)
    with pytest.raises(UnknownClassError, match=f"{MIXED}.*'chair'"):
        strict.pull_item([img_id for _, img_id in strict.ids].index(MIXED))
    assert strict.summary().dropped["objects of other classes"] == len(oracle) - len(want)


def test_summary_of_full_datasets_voc_and_coco(caplog):
    voc = VOCDetection(VOC, "2007:trainval")
    coco = COCODetection(COCO, "val2017")
    with caplog.at_level(logging.INFO, logger="ssd.data"):
        summaries = report_datasets([voc, coco], require_boxes=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "ssd.data"]
    assert len(lines) == 2
    assert lines[0].startswith(f"dataset VOC0712 (root {VOC}, sets 2007:trainval, classes "
                               "aeroplane, ")
    n_voc = sum(not d for i in voc.ids for _, d in _objects(i[1]))
    assert summaries[0].objects == n_voc and f"objects: {n_voc} kept" in lines[0]
    anns = coco.coco.dataset["annotations"]
    assert summaries[1].objects + summaries[1].crowd + summaries[1].no_area == len(anns)
    assert summaries[1].crowd == sum(bool(a.get("iscrowd")) for a in anns)


def test_eval_of_a_subset_model_keeps_every_image():
    from ssd.evaluation.cli import build_eval_dataset

    ds = build_eval_dataset("VOC", str(VOC), "2007:trainval", 300, classes=SUBSET)
    i = [img_id for _, img_id in ds.ids].index(MIXED)
    _, target, _, _ = ds.pull_item(i)  # no UnknownClassError for the chair and the people
    assert np.asarray(target)[:, 4].tolist() == [1.0]


def _voc_copy(root: Path, ids: list[str]) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        shutil.copy(VOC / "VOC2007" / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(VOC / "VOC2007" / "Annotations" / f"{i}.xml", voc / "Annotations")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root / "VOCdevkit"


def _train(root: Path, folder: Path, *extra: str) -> int:
    argv = ["--dataset_root", str(root), "--train_sets", "2007:trainval", "--basenet", "none",
            "--batch_size", "1", "--num_workers", "0", "--device", "cpu", "--no_progress",
            "--seed", "0", "--save_folder", str(folder), *extra]
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


@pytest.mark.parametrize("mode", ["ignore", "drop"])
def test_no_usable_box_is_an_error_naming_the_dataset(tmp_path, capsys, mode):
    root = _voc_copy(tmp_path, ["2007_000027", "2007_000032"])  # people, planes
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    code = _train(root, tmp_path / "w", "--classes", str(classes), "--other_classes", mode,
                  "--max_iter", "1")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no usable box" in err and str(root) in err and "2007:trainval" in err
    assert "classes cat, dog" in err
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").glob("*.pth"))


def test_train_flags_build_the_subset_and_log_one_line(tmp_path, caplog):
    from ssd.training.args import parse_args
    from ssd.training.cli import build_dataset

    root = _voc_copy(tmp_path, [MIXED, "2007_000027"])  # dog + others; people only
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    args = parse_args(["--dataset_root", str(root), "--train_sets", "2007:trainval",
                       "--eval_sets", "2007:trainval", "--classes", str(classes),
                       "--other_classes", "ignore"])
    with caplog.at_level(logging.INFO, logger="ssd.data"):
        train = build_dataset(args, 300)
        val = build_dataset(args, 300, train=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "ssd.data"]
    assert len(lines) == 2
    assert ("2 images: 1 kept (1 with boxes, 0 without), 1 dropped (1 with no box of the "
            "classes); objects: 1 kept, 3 of other classes ignored") in lines[0]
    assert [i for _, i in train.ids] == [MIXED]
    assert len(val) == 2 and "0 dropped" in lines[1]  # validation keeps every image
    _, target = train[0]
    assert target[:, 4].tolist() == [1.0]
    with pytest.raises(NoUsableBoxError):
        report_datasets([VOCDetection(root, "2007:trainval", classes=["cat"],
                                      other_classes="drop")], require_boxes=True)
