"""Weight files: whole-SSD checkpoints, the VGG base net and the torchvision VGG16 conversion."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ssd import weights as W
from ssd.model import SSD, build_ssd, vgg

REPO = Path(__file__).resolve().parents[1]


def _build(num_classes: int = 21, seed: int = 0) -> SSD:
    torch.manual_seed(seed)
    return build_ssd("train", 300, num_classes).eval()


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def trained_state() -> OrderedDict[str, torch.Tensor]:
    """An ssd.pytorch-layout SSD300 state dict unlike any fresh model (incl. L2Norm)."""
    m = _build(seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return OrderedDict((k, v.clone()) for k, v in m.state_dict().items())


@pytest.fixture(scope="module")
def trained_file(trained_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "ssd300_test.pth"
    torch.save(trained_state, path)
    return path


@pytest.fixture(scope="module")
def fresh() -> SSD:
    return _build(seed=3)


# ----------------------------------------------------------------------------- whole SSD

def test_strict_load_of_ssd_pytorch_layout_gives_same_outputs(trained_state, trained_file):
    src = _build(seed=5)
    src.load_state_dict(trained_state)  # the "original" model holding the weights
    dst = _build(seed=6)
    assert not torch.equal(dst.L2Norm.weight, src.L2Norm.weight)
    result = W.load_ssd_weights(dst, trained_file)
    assert result == W.LoadResult([], [], [])
    _assert_same_state(dst, src)
    x = torch.randn(1, 3, 300, 300) * 50
    with torch.inference_mode():
        for a, b in zip(src(x), dst(x)):
            assert torch.equal(a, b)


def test_ssd_load_weights_method(trained_state, trained_file, fresh, tmp_path):
    fresh.load_weights(trained_file)
    assert torch.equal(fresh.conf[3].weight, trained_state["conf.3.weight"])
    other = tmp_path / "weights.txt"
    other.write_bytes(trained_file.read_bytes())
    with pytest.raises(ValueError, match=r"\.txt"):
        fresh.load_weights(other)


@pytest.mark.parametrize("wrap", ["module", "orig_mod", "checkpoint", "ddp_checkpoint"])
def test_wrapped_state_dicts_load(trained_state, fresh, tmp_path, wrap):
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in trained_state.items()}
    elif wrap == "orig_mod":
        obj = {f"_orig_mod.{k}": v for k, v in trained_state.items()}
    elif wrap == "checkpoint":
        obj = {"model": trained_state, "optimizer": {"state": {}}, "iteration": 7}
    else:
        obj = {"model": {f"module.{k}": v for k, v in trained_state.items()}, "epoch": 1}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert list(W.load_state_dict_file(path)) == list(trained_state)
    W.load_ssd_weights(fresh, path)
    for k, v in trained_state.items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_load_into_a_data_parallel_model(trained_state, fresh):
    W.load_ssd_weights(nn.DataParallel(fresh), trained_state)
    assert torch.equal(fresh.vgg[31].weight, trained_state["vgg.31.weight"])


def test_missing_and_unexpected_keys_are_listed(trained_state, fresh):
    state = OrderedDict(trained_state)
    del state["extras.3.bias"]
    state["foo.weight"] = torch.zeros(3)
    with pytest.raises(W.WeightsMismatchError) as err:
        W.load_ssd_weights(fresh, state)
    msg = str(err.value)
    assert "missing keys" in msg and "extras.3.bias" in msg
    assert "unexpected keys" in msg and "foo.weight" in msg


def test_class_count_mismatch_names_shapes_and_suggests_num_classes(trained_state):
    m81 = _build(81)
    before = m81.vgg[0].weight.clone()
    with pytest.raises(W.WeightsMismatchError) as err:
        W.load_ssd_weights(m81, trained_state)
    msg = str(err.value)
    assert "conf.0.weight: [324, 512, 3, 3] -> [84, 512, 3, 3]" in msg
    assert "conf.5.bias" in msg and "loc." not in msg
    assert "num_classes=21" in msg
    assert torch.equal(m81.vgg[0].weight, before)  # nothing loaded by a failed strict load


def test_non_strict_load_skips_mismatched_heads(trained_state):
    m3 = _build(3)
    conf_before = m3.conf[0].weight.clone()
    result = W.load_ssd_weights(m3, trained_state, strict=False)
    assert [k for k, _, _ in result.mismatched] == [
        f"conf.{i}.{p}" for i in range(6) for p in ("weight", "bias")]
    assert not result.missing and not result.unexpected
    assert torch.equal(m3.vgg[31].weight, trained_state["vgg.31.weight"])
    assert torch.equal(m3.loc[2].weight, trained_state["loc.2.weight"])
    assert torch.equal(m3.conf[0].weight, conf_before)


def test_base_net_file_is_not_a_whole_ssd(fresh):
    base = OrderedDict((k, v) for k, v in fresh.vgg.state_dict().items())
    with pytest.raises(W.WeightsMismatchError, match="base net"):
        W.load_ssd_weights(fresh, base, strict=False)


def test_missing_file_says_where_to_get_weights(fresh, tmp_path):
    path = tmp_path / "nope" / "ssd300_mAP_77.43_v2.pth"
    with pytest.raises(FileNotFoundError) as err:
        W.load_ssd_weights(fresh, path)
    assert str(path) in str(err.value)
    assert W.SSD300_URL in str(err.value)


class _NotATensor:
    pass


@pytest.mark.parametrize("content, says", [
    ("text", "not a PyTorch weights file"), ("list", "holds a list, not a state dict"),
    ("truncated", "corrupt"), ("object", "_NotATensor")])
def test_unreadable_files_are_named(fresh, tmp_path, trained_file, content, says):
    path = tmp_path / "bad.pth"
    if content == "text":
        path.write_text("not a checkpoint")
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "object":
        torch.save({"model": _NotATensor()}, path)
    else:
        path.write_bytes(trained_file.read_bytes()[:5000])
    with pytest.raises(W.WeightsFileError, match="bad.pth") as err:
        W.load_ssd_weights(fresh, path)
    assert says in str(err.value)


# ----------------------------------------------------------------------------- base net

def test_base_net_file_loads_into_vgg(tmp_path, fresh):
    torch.manual_seed(11)
    base = nn.ModuleList(vgg()).state_dict()
    assert list(base)[0] == "0.weight" and list(base)[-1] == "33.bias" and len(base) == 30
    path = tmp_path / "vgg16_reducedfc.pth"
    torch.save(base, path)
    head_before = fresh.conf[0].weight.clone()
    W.load_base_weights(fresh, path)
    for k, v in base.items():
        assert torch.equal(fresh.vgg.state_dict()[k], v), k
    assert torch.equal(fresh.conf[0].weight, head_before)
    # A `vgg.`-prefixed dict (or a whole SSD checkpoint) gives the same result.
    other = _build(seed=12)
    W.load_base_weights(other, {f"vgg.{k}": v for k, v in base.items()})
    assert torch.equal(other.vgg[33].weight, base["33.weight"])


def test_base_net_mismatch_and_missing_file(tmp_path, fresh):
    base = OrderedDict(fresh.vgg.state_dict())
    del base["33.bias"]
    base["0.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(W.WeightsMismatchError) as err:
        W.load_base_weights(fresh, base)
    assert "missing keys" in str(err.value) and "33.bias" in str(err.value)
    assert "0.weight: [64, 3, 3, 3] -> [64, 3, 5, 5]" in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        W.load_base_weights(fresh, tmp_path / "vgg16_reducedfc.pth")
    msg = str(err.value)
    assert "vgg16_reducedfc.pth" in msg and W.BASENET_URL in msg and "convert-vgg16" in msg


# ----------------------------------------------------------------------------- torchvision VGG16

@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(21)
    return torchvision.models.vgg16(weights=None).state_dict()


def test_convert_vgg16_subsamples_fc6_fc7(tv_state, fresh):
    out = W.convert_vgg16(tv_state)
    assert list(out) == list(nn.ModuleList(vgg()).state_dict())
    assert out["31.weight"].shape == (1024, 512, 3, 3) and out["31.bias"].shape == (1024,)
    assert out["33.weight"].shape == (1024, 1024, 1, 1) and out["33.bias"].shape == (1024,)
    fc6 = tv_state["classifier.0.weight"].view(4096, 512, 7, 7)
    fc7 = tv_state["classifier.3.weight"]
    for o, c, i, j in [(0, 0, 0, 0), (1, 5, 2, 1), (1023, 511, 2, 2), (300, 17, 0, 2)]:
        assert out["31.weight"][o, c, i, j] == fc6[4 * o, c, 3 * i, 3 * j]
    rows, taps = torch.arange(0, 4096, 4), torch.tensor([0, 3, 6])
    expected6 = fc6.index_select(0, rows).index_select(2, taps).index_select(3, taps)
    assert torch.equal(out["31.weight"], expected6)
    assert torch.equal(out["31.bias"], tv_state["classifier.0.bias"][rows])
    assert torch.equal(out["33.weight"][:, :, 0, 0], fc7[rows][:, rows])
    assert out["33.weight"][7, 9, 0, 0] == fc7[28, 36]
    assert torch.equal(out["33.bias"], tv_state["classifier.3.bias"][rows])
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28):
        assert torch.equal(out[f"{i}.weight"], tv_state[f"features.{i}.weight"])
    # Every tensor owns compact memory, so saving it does not write all of fc6.
    for v in out.values():
        assert v.untyped_storage().nbytes() == v.numel() * v.element_size()
    fresh.vgg.load_state_dict(out, strict=True)
    assert torch.equal(fresh.vgg[31].weight, expected6)


def test_convert_vgg16_rejects_other_dicts(tv_state):
    bad = {k: v for k, v in tv_state.items() if not k.startswith("classifier.3")}
    with pytest.raises(W.WeightsFileError, match="classifier.3.weight"):
        W.convert_vgg16(bad)


def _compact_tv_file(tv_state, path: Path) -> dict[str, torch.Tensor]:
    """torchvision VGG16 keys and shapes backed by tiny storages (kB instead of 528 MB)."""
    g = torch.Generator().manual_seed(5)
    small = {}
    for k, v in tv_state.items():
        storage = torch.randn(sum(s - 1 for s in v.shape) + 1, generator=g)
        small[k] = storage.as_strided(v.shape, (1,) * v.dim())  # x[a, b, ...] = s[a + b + ...]
    torch.save(small, path)
    return small


def test_cli_convert_vgg16(tv_state, tmp_path):
    src, dst = tmp_path / "vgg16-397923af.pth", tmp_path / "out" / "vgg16_reducedfc.pth"
    small = _compact_tv_file(tv_state, src)
    proc = subprocess.run([sys.executable, "-m", "ssd.weights", "convert-vgg16", str(src),
                           str(dst)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(dst) in proc.stdout and "[1024, 512, 3, 3]" in proc.stdout
    got = torch.load(dst, map_location="cpu", weights_only=True)
    want = W.convert_vgg16(small)
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert got["31.weight"][5, 7, 1, 2] == small["classifier.0.weight"][20, 7 * 49 + 3 * 7 + 6]
    nn.ModuleList(vgg()).load_state_dict(got, strict=True)
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]  # no temp file left


def test_cli_errors_and_info(tmp_path, trained_file, capsys):
    missing = tmp_path / "missing.pth"
    out = tmp_path / "out.pth"
    assert W.main(["convert-vgg16", str(missing), str(out)]) == 1
    err = capsys.readouterr().err
    assert "missing.pth" in err and "not found" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        W.main(["convert-vgg16", str(missing)])
    assert exc.value.code == 2
    capsys.readouterr()
    assert W.main(["info", str(trained_file)]) == 0
    text = capsys.readouterr().out
    assert "whole SSD300 (21 classes" in text and "conf.5.bias" in text


def test_torchvision_download_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="download=False"):
        W.torchvision_vgg16_base(download=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as err:
        W.torchvision_vgg16_base(download=True)
    msg = str(err.value)
    assert "no network" in msg and W.TORCHVISION_VGG16_URL in msg and "convert-vgg16" in msg


def test_torchvision_cached_file_is_converted(tv_state, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    small = _compact_tv_file(tv_state, cached)
    out = W.torchvision_vgg16_base(download=False)
    assert torch.equal(out["33.weight"], W.convert_vgg16(small)["33.weight"])


def test_weights_file_carries_config_and_class_names(tmp_path):
    from ssd import build_ssd
    from ssd.detector import Detector
    from ssd.weights import load_state_dict_file, read_weights_file, save_weights_file

    torch.manual_seed(0)
    net = build_ssd("test", cfg="voc300", num_classes=4)
    path = save_weights_file(tmp_path / "custom.pth", net.state_dict(), config=net.cfg,
                             class_names=["cat", "dog", "bird"], source="unit test")
    found = read_weights_file(path)
    assert found.class_names == ("cat", "dog", "bird")
    assert found.config["num_classes"] == 4 and found.config["min_dim"] == 300
    assert found.meta["source"] == "unit test"
    plain = load_state_dict_file(path)
    assert all(torch.equal(plain[k], v) for k, v in net.state_dict().items())
    det = Detector.from_checkpoint(path, device="cpu")
    assert det.class_names == ["cat", "dog", "bird"]
    assert det.model.num_classes == 4
