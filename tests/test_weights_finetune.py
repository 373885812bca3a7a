"""train.py --pretrained: a 91-class COCO-like SSD fine-tuned into a 4-class one; the .pth
files training writes carry their config and class names and stay plain state dicts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ssd.config import get_config
from ssd.model import build_ssd
from ssd.training import main
from ssd.weights import read_weights_file, save_weights_file
from ssd.weights.finetune import load_for_finetuning

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit" / "VOC2007"
IDS = ["2007_000027", "2007_000032"]  # person; aeroplane + person
NAMES = ["aeroplane", "person", "car"]
COCO91 = [f"coco_{i}" for i in range(1, 91)]


@pytest.fixture(scope="module")
def coco91(tmp_path_factory):
    """A saved 91-class SSD300 with COCO geometry, its config and 90 names."""
    torch.manual_seed(0)
    cfg = get_config("coco300", num_classes=91)
    state = build_ssd("train", cfg=cfg).state_dict()
    path = save_weights_file(tmp_path_factory.mktemp("zoo") / "coco91.pth", state, config=cfg,
                             class_names=COCO91)
    return path, state, cfg


def _voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i in IDS:
        shutil.copy(SAMPLE / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(SAMPLE / "Annotations" / f"{i}.xml", voc / "Annotations")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(IDS) + "\n")
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return root


@pytest.mark.slow  # one SSD300 training step at batch 2: 10-40 s on 2 shared cores
def test_finetune_91_to_4_classes_then_reload(coco91, tmp_path, capsys):
    path, state, cfg = coco91
    root, out = _voc(tmp_path / "data"), tmp_path / "weights"
    argv = ["--dataset_root", str(root), "--train_sets", "2007:trainval", "--classes",
            str(root / "classes.txt"), "--pretrained", str(path), "--batch_size", "2",
            "--max_iter", "1", "--num_workers", "0", "--device", "cpu", "--no_progress",
            "--seed", "0", "--checkpoint_every", "0", "--lr", "1e-9", "--weight_decay", "0",
            "--momentum", "0", "--save_folder", str(out)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 0, err
    # No --config: the file's COCO geometry; only the 12 confidence tensors are new.
    assert "loaded 59 tensors: vgg.0-33 (30), L2Norm.weight, extras.0-7 (16), loc.0-5 (12)" \
        in err
    assert "re-initialised 12 tensors: conf.0-5 (12)" in err
    assert "the file has 90 classes and this model 3" in err

    final = out / "VOC.pth"
    plain = torch.load(final, map_location="cpu", weights_only=True)
    net = build_ssd("test", cfg=cfg, num_classes=4)
    assert str(net.load_state_dict(plain)) == "<All keys matched successfully>"  # strict
    for k, v in plain.items():  # lr 1e-9: what was loaded is still the file's
        if not k.startswith("conf."):
            assert torch.allclose(v, state[k], atol=1e-6), k
    assert plain["conf.0.weight"].shape[0] == 4 * 4

    found = read_weights_file(final)
    assert found.class_names == tuple(NAMES)
    assert found.config["min_sizes"] == list(cfg["min_sizes"])
    assert found.config["num_classes"] == 4

    from ssd import Detector

    det = Detector.from_checkpoint(final, device="cpu")
    assert det.class_names == NAMES and det.model.num_classes == 4
    assert det.model.cfg["min_sizes"] == list(cfg["min_sizes"])
    # The training checkpoint carries them too.
    ckpt = next(out.glob("*.ckpt"))
    assert read_weights_file(ckpt).class_names == tuple(NAMES)


def test_prior_layout_or_class_names_decide_what_is_reset(coco91):
    path, state, cfg = coco91
    torch.manual_seed(1)
    voc4 = build_ssd("train", cfg="voc300", num_classes=4)
    report = load_for_finetuning(voc4, state, config=cfg, class_names=COCO91,
                                 model_class_names=NAMES)
    assert {k.split(".")[0] for k in report.reinitialised} == {"loc", "conf"}
    assert "priors differ" in report.summary()
    assert torch.equal(voc4.state_dict()["vgg.0.weight"], state["vgg.0.weight"])
    assert not torch.equal(voc4.state_dict()["loc.0.weight"], state["loc.0.weight"])

    # Same geometry and class count but other names: only the confidence heads are reset.
    coco = build_ssd("train", cfg=cfg)
    report = load_for_finetuning(coco, state, config=cfg, class_names=COCO91,
                                 model_class_names=[f"x{i}" for i in range(90)])
    assert report.reinitialised == [f"conf.{i}.{p}" for i in range(6) for p in ("weight", "bias")]
    assert "class names differ" in report.summary()
    # Same everything: all of it loads.
    report = load_for_finetuning(coco, state, config=cfg, class_names=COCO91,
                                 model_class_names=COCO91)
    assert report.reinitialised == [] and len(report.loaded) == len(state)
