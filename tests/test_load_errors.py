"""Load errors say what is wrong and what works: malicious pickles are refused (and never run),
foreign files get the conversion to use, class-count mismatches the fix of their entry point,
a missing model where to get one."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from ssd import Detector
from ssd.evaluation.cli import eval_main
from ssd.model import build_ssd
from ssd.weights import (
    SSD300_URL,
    WeightsFileError,
    WeightsMismatchError,
    load_ssd_weights,
    load_state_dict_file,
    read_weights_file,
)
from ssd.weights.torchvision_ssd import torchvision_ssd_key_map

VOC = Path(__file__).resolve().parents[1] / "data" / "samples" / "voc_mini" / "VOCdevkit"


class _Pwn:
    """Pickles as a call to os.system that would write ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


@pytest.fixture(scope="module")
def model21():
    torch.manual_seed(0)
    return build_ssd("test", 300, 21)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_named_and_not_run(tmp_path, kind):
    target = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    if kind == "torch.save":
        torch.save({"model": {"w": torch.ones(2)}, "extra": _Pwn(target)}, path)
    else:
        path.write_bytes(pickle.dumps(_Pwn(target), protocol=4))
    for load in (load_state_dict_file, read_weights_file,
                 lambda p: Detector.from_checkpoint(p, device="cpu")):
        with pytest.raises(WeightsFileError) as err:
            load(path)
        msg = str(err.value)
        assert "evil.pth" in msg and f"{os.system.__module__}.system" in msg
        assert "will not be executed" in msg
        assert "weights_only=False" not in msg and "will likely succeed" not in msg
    assert not target.exists()


def test_torchvision_ssd_state_dict_says_convert(model21, tmp_path):
    fake = {k: torch.zeros(1) for k in torchvision_ssd_key_map()}
    torch.save(fake, tmp_path / "ssd300_vgg16_coco.pth")
    with pytest.raises(WeightsMismatchError, match="convert-torchvision-ssd"):
        load_ssd_weights(model21, tmp_path / "ssd300_vgg16_coco.pth")


def test_torchvision_vgg16_says_convert(model21, tmp_path):
    fake = {f"features.{i}.{p}": torch.zeros(1) for i in (0, 2, 5) for p in ("weight", "bias")}
    fake |= {f"classifier.{i}.{p}": torch.zeros(1) for i in (0, 3, 6) for p in ("weight", "bias")}
    torch.save(fake, tmp_path / "vgg16-397923af.pth")
    with pytest.raises(WeightsMismatchError) as err:
        load_ssd_weights(model21, tmp_path / "vgg16-397923af.pth")
    assert "ImageNet VGG16" in str(err.value) and "convert-vgg16" in str(err.value)
    assert "--basenet" in str(err.value)


def test_class_count_hint_in_python(model21):
    state = build_ssd("train", 300, 5).state_dict()
    with pytest.raises(WeightsMismatchError, match=r"trained for 5 classes.*num_classes=5"):
        load_ssd_weights(model21, state)


def test_missing_model_says_where_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no weights/ here: eval.py's default model is missing
    assert eval_main(["--voc_root", str(VOC), "--max_images", "1", "--device", "cpu",
                      "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "ssd300_mAP_77.43_v2.pth" in err and SSD300_URL in err
    assert "ssd300_voc0712" in err and "ssd300_coco" in err
    with pytest.raises(FileNotFoundError, match="ssd300_voc0712"):
        Detector.from_checkpoint(tmp_path / "none.pth")


def test_eval_class_count_hint_works(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "four.pth"
    torch.save(build_ssd("train", 300, 5).state_dict(), ckpt)  # 4 classes + background
    # the first four test images of the sample hold exactly these classes
    classes = "bird,tvmonitor,train,aeroplane"
    common = ["--trained_model", str(ckpt), "--voc_root", str(VOC), "--max_images", "4",
              "--device", "cpu", "--batch_size", "2", "--no_progress"]
    assert eval_main(common + ["--save_folder", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "trained for 5 classes" in err and "--classes" in err
    assert "num_classes=" not in err  # the Python API's fix means nothing on the command line
    # ... and doing what it says works
    assert eval_main(common + ["--save_folder", str(tmp_path / "b"),
                               "--classes", classes]) == 0
    result = json.loads((tmp_path / "b" / "results.json").read_text())
    assert list(result["ap"]) == classes.split(",") and result["num_images"] == 4
