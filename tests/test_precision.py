"""bf16 autocast: run-time detection of native bf16, the fp32 fallback with a warning, and the
Detector / run_inference hooks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from export_helpers import sample_images, scored_ssd

import ssd.precision as precision
from ssd.precision import PrecisionWarning, autocast, resolve_precision


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": value)
    return set_native


def test_fp32_is_always_fp32_and_unchanged(native):
    native(True)
    assert resolve_precision("fp32") == "fp32"
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_without_native_support_warns_and_runs_fp32(native):
    native(False)
    with pytest.warns(PrecisionWarning, match="no native bf16"):
        assert resolve_precision("bf16") == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto") == "fp32"  # auto stays quiet


def test_bf16_with_native_support(native):
    native(True)
    assert resolve_precision("bf16") == "bf16" and resolve_precision("auto") == "bf16"
    with autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp16")


def test_cpu_flags_reads_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    assert precision.native_bf16("cpu") == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) \
        or precision.native_bf16("cpu")  # macOS arm64 has no /proc/cpuinfo


@pytest.fixture(scope="module")
def small_model():
    return scored_ssd(300, 21)


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.images = torch.randn(n, 3, 300, 300, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def pull_item(self, i):
        return self.images[i] * 50, None, 200, 300


class _Stop(Exception):
    pass


def _autocast_probe(model) -> list[tuple[bool, torch.dtype]]:
    """Record the autocast state at the first conv and stop the forward there (a bf16
    forward of the whole network is slow on CPUs without native bf16)."""
    seen: list[tuple[bool, torch.dtype]] = []

    def probe(module, args):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        raise _Stop

    model.vgg[0].register_forward_pre_hook(probe)
    return seen


def test_detector_and_run_inference_use_bf16_autocast(native, small_model):
    from ssd import Detector
    from ssd.evaluation.inference import run_inference

    native(True)
    model = copy.deepcopy(small_model)
    seen = _autocast_probe(model)
    names = [f"c{i}" for i in range(20)]
    with pytest.raises(_Stop):
        Detector(model, names, "cpu", precision="bf16").predict(sample_images(1)[0])
    with pytest.raises(_Stop):
        run_inference(model, _Images(1), device="cpu", batch_size=1, progress=False,
                      precision="bf16")
    with pytest.raises(_Stop):
        Detector(model, names, "cpu").predict(sample_images(1)[0])
    with pytest.raises(_Stop):
        run_inference(model, _Images(1), device="cpu", batch_size=1, progress=False)
    assert seen[:2] == [(True, torch.bfloat16)] * 2
    assert [enabled for enabled, _ in seen[2:]] == [False, False]  # fp32: no autocast
    native(False)
    with pytest.warns(PrecisionWarning):
        assert Detector(model, names, "cpu", precision="bf16").precision == "fp32"


def test_eval_and_test_clis_take_precision():
    from ssd.evaluation.cli import eval_parser, test_parser

    assert eval_parser().parse_args(["--precision", "bf16"]).precision == "bf16"
    assert test_parser().parse_args([]).precision == "fp32"
    with pytest.raises(SystemExit):
        test_parser().parse_args(["--precision", "int8"])
