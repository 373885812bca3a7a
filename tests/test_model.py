"""The SSD network: checkpoint layout, forward maths and shapes, init, AMP, channels_last."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ssd.config import get_config
from ssd.detection import detect
from ssd.l2norm import L2Norm
from ssd.model import BASE_CFG, SSD, add_extras, build_ssd, multibox, vgg
from ssd.priors import prior_boxes

# The state dict layout of ssd.pytorch's SSD300 (keys and shapes in order), read off its model.
SPECS = [Path(__file__).resolve().parent / "data" / "ssd300_voc_state_dict.json",
         Path("/work/shared/spec/ssd300_voc_state_dict.json")]


@pytest.fixture(scope="module")
def model300() -> SSD:
    torch.manual_seed(0)
    return build_ssd("train", 300, 21).eval()


@pytest.fixture(scope="module")
def x300() -> torch.Tensor:
    return torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(1)) * 50


@pytest.fixture(scope="module")
def out300(model300: SSD, x300: torch.Tensor):
    with torch.inference_mode():
        return model300(x300)


def reference_forward(m: SSD, x: torch.Tensor):
    """ssd.pytorch's forward written out step by step, with L2Norm done by hand."""
    sources = []
    h = x
    for i in range(23):  # up to and including conv4_3's ReLU
        h = m.vgg[i](h)
    norm = h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
    sources.append(m.L2Norm.weight.view(1, -1, 1, 1) * (h / norm))
    for i in range(23, len(m.vgg)):
        h = m.vgg[i](h)
    sources.append(h)
    for k, layer in enumerate(m.extras):
        h = torch.relu(layer(h))
        if k % 2 == 1:
            sources.append(h)
    locs, confs, raw_conf = [], [], []
    for src, lh, ch in zip(sources, m.loc, m.conf):
        locs.append(lh(src).permute(0, 2, 3, 1).contiguous().view(x.shape[0], -1))
        c = ch(src)
        raw_conf.append(c)
        confs.append(c.permute(0, 2, 3, 1).contiguous().view(x.shape[0], -1))
    loc = torch.cat(locs, 1).view(x.shape[0], -1, 4)
    conf = torch.cat(confs, 1).view(x.shape[0], -1, m.num_classes)
    return loc, conf, sources, raw_conf


# ----------------------------------------------------------------------------- layout

def test_state_dict_keys_order_and_shapes_match_ssd_pytorch(model300: SSD) -> None:
    state = model300.state_dict()
    # Spot checks that hold even where the spec file is absent.
    assert len(state) == 71
    assert list(state)[:2] == ["vgg.0.weight", "vgg.0.bias"]
    assert list(state)[30:33] == ["L2Norm.weight", "extras.0.weight", "extras.0.bias"]
    assert list(state)[-1] == "conf.5.bias"
    assert state["vgg.31.weight"].shape == (1024, 512, 3, 3)
    assert state["loc.1.weight"].shape == (24, 1024, 3, 3)
    assert state["conf.0.weight"].shape == (84, 512, 3, 3)
    spec_path = next((p for p in SPECS if p.exists()), None)
    if spec_path is None:
        pytest.skip("ssd300_voc_state_dict.json not available")
    spec = json.loads(spec_path.read_text())
    assert [[k, list(v.shape)] for k, v in state.items()] == spec


def test_priors_are_a_non_persistent_buffer(model300: SSD) -> None:
    assert "priors" in dict(model300.named_buffers())
    assert not any("prior" in k for k in model300.state_dict())
    torch.testing.assert_close(model300.priors, prior_boxes(get_config("voc300")),
                               rtol=0, atol=0)


def test_vgg_layer_indices_follow_torchvision_make_layers() -> None:
    layers = vgg(BASE_CFG, 3)
    assert len(layers) == 35
    conv_idx = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert conv_idx == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33]
    assert all(isinstance(layers[i + 1], nn.ReLU) and layers[i + 1].inplace for i in conv_idx)
    pools = {i: m for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)}
    assert sorted(pools) == [4, 9, 16, 23, 30]
    assert [pools[i].ceil_mode for i in (4, 9, 16, 23)] == [False, False, True, False]
    assert (pools[30].kernel_size, pools[30].stride, pools[30].padding) == (3, 1, 1)
    conv6, conv7 = layers[31], layers[33]
    assert (conv6.in_channels, conv6.out_channels, conv6.kernel_size) == (512, 1024, (3, 3))
    assert conv6.dilation == (6, 6) and conv6.padding == (6, 6)
    assert (conv7.in_channels, conv7.out_channels, conv7.kernel_size) == (1024, 1024, (1, 1))
    assert layers[21].out_channels == 512


# ----------------------------------------------------------------------------- forward

def test_train_forward_matches_reference_forward(model300: SSD, x300, out300) -> None:
    loc, conf, priors = out300
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 21)
    assert priors.shape == (8732, 4)
    with torch.inference_mode():
        ref_loc, ref_conf, sources, raw_conf = reference_forward(model300, x300)
    assert [tuple(s.shape[1:]) for s in sources] == [
        (512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    torch.testing.assert_close(loc, ref_loc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-5)
    # Prior p of source 0 is cell (i, j), box a at p = (i * 38 + j) * 4 + a; its class-c score
    # is channel a * 21 + c of that head.
    for b, i, j, a, c in [(0, 0, 0, 0, 0), (1, 5, 17, 3, 20), (0, 37, 2, 1, 7)]:
        p = (i * 38 + j) * 4 + a
        assert conf[b, p, c] == pytest.approx(raw_conf[0][b, a * 21 + c, i, j].item(), abs=1e-5)
    # The last prior belongs to the 1x1 source, box 3.
    assert conf[1, -1, 4] == pytest.approx(raw_conf[5][1, 3 * 21 + 4, 0, 0].item(), abs=1e-5)


def test_test_phase_returns_detect_of_softmax(model300: SSD, x300, out300) -> None:
    loc, conf, priors = out300
    model300.set_phase("test")
    try:
        with torch.inference_mode():
            dets = model300(x300)
    finally:
        model300.set_phase("train")
    assert dets.shape == (2, 21, 200, 5)
    expected = detect(loc, torch.softmax(conf, dim=-1), priors, 21, 0, 200, 0.01, 0.45)
    torch.testing.assert_close(dets, expected)
    assert (dets[:, 0] == 0).all()
    assert (dets[:, 1:, :, 0] > 0).any()


def test_detection_settings_are_configurable() -> None:
    m = build_ssd("test", 300, 21, top_k=50, conf_thresh=0.2, nms_thresh=0.3, max_per_image=100)
    assert (m.top_k, m.conf_thresh, m.nms_thresh, m.max_per_image) == (50, 0.2, 0.3, 100)
    assert m.phase == "test"
    with pytest.raises(ValueError, match="'eval'"):
        m.set_phase("eval")


def test_ssd512_forward_shapes() -> None:
    torch.manual_seed(0)
    m = build_ssd("train", 512).eval()
    assert m.size == 512 and m.cfg["name"] == "VOC512"
    assert len(m.extras) == 10 and len(m.loc) == len(m.conf) == 7
    keys = m.state_dict().keys()
    assert "extras.9.weight" in keys and "conf.6.weight" in keys and "loc.7.weight" not in keys
    with torch.inference_mode():
        loc, conf, priors = m(torch.randn(1, 3, 512, 512))
    assert loc.shape == (1, 24564, 4) and conf.shape == (1, 24564, 21)
    torch.testing.assert_close(priors, prior_boxes(get_config("voc512")), rtol=0, atol=0)


@pytest.mark.parametrize("num_classes", [81, 3])
def test_other_class_counts(num_classes: int) -> None:
    m = build_ssd("train", 300, num_classes).eval()
    assert m.num_classes == num_classes
    assert m.conf[0].out_channels == 4 * num_classes and m.conf[1].out_channels == 6 * num_classes
    with torch.inference_mode():
        loc, conf, _ = m(torch.randn(1, 3, 300, 300))
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, num_classes)


def test_config_is_never_guessed_from_num_classes() -> None:
    # ssd.pytorch switched to COCO geometry whenever num_classes != 21.
    m = build_ssd("train", 300, 81)
    assert m.cfg["name"] == "VOC"
    torch.testing.assert_close(m.priors, prior_boxes(get_config("voc300")), rtol=0, atol=0)
    coco = build_ssd("train", cfg="coco300")
    assert coco.num_classes == 81 and coco.conf[0].out_channels == 4 * 81
    torch.testing.assert_close(coco.priors, prior_boxes(get_config("coco300")), rtol=0, atol=0)
    assert build_ssd("train", cfg="coco512", num_classes=5).size == 512


@pytest.mark.parametrize("kwargs, match", [
    ({"phase": "eval"}, "'eval'"),
    ({"phase": "train", "size": 400}, "400"),
    ({"phase": "train", "size": 300, "cfg": "voc512"}, "512"),
    ({"phase": "train", "cfg": "nope"}, "nope"),
    ({"phase": "train", "num_classes": 1}, "num_classes"),
])
def test_build_ssd_rejects_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_ssd(**kwargs)


def test_forward_rejects_wrong_input_size(model300: SSD) -> None:
    with pytest.raises(ValueError, match="300"):
        model300(torch.zeros(1, 3, 320, 320))


def test_ssd_pytorch_style_construction() -> None:
    # ssd.pytorch: SSD(phase, size, vgg(base, 3), add_extras(extras, 1024), head, num_classes)
    # with its extras written as [256, 'S', 512, ...] (1x1/3x3 alternating, 'S' = stride 2).
    legacy = add_extras([256, "S", 512, 128, "S", 256, 128, 256, 128, 256], 1024)
    specs = [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in legacy]
    assert specs == [tuple(e) for e in get_config("voc300")["extras"]]
    base, extras, head = multibox(vgg(BASE_CFG, 3), legacy, [4, 6, 6, 6, 4, 4], 21)
    m = SSD("test", 300, base, extras, head, 21)
    assert m.cfg["name"] == "VOC" and m.phase == "test"
    assert [[k, v.shape] for k, v in m.state_dict().items()] == [
        [k, v.shape] for k, v in build_ssd("test", 300, 21).state_dict().items()]


def test_builders_validate_their_configs() -> None:
    with pytest.raises(ValueError, match="pairs"):
        add_extras([(256, 1, 1, 0)])
    with pytest.raises(ValueError, match="mbox"):
        multibox(vgg(), add_extras(get_config("voc300")["extras"]), [4, 6, 6], 21)
    with pytest.raises(ValueError, match="'X'"):
        vgg([64, "X"])


# ----------------------------------------------------------------------------- L2Norm, init

def test_l2norm_maths_on_a_small_tensor() -> None:
    layer = L2Norm(3, 20)
    assert layer.weight.tolist() == [20.0, 20.0, 20.0]
    x = torch.zeros(1, 3, 1, 2)
    x[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # norm 5
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 10.0]))
        out = layer(x)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.6, 1.6, 0.0]))
    assert out[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0]  # eps keeps 0/0 out
    assert list(dict(L2Norm(512, 20).named_parameters())) == ["weight"]


def test_l2norm_half_precision_does_not_overflow() -> None:
    # sum of squares: 512 * 300^2 = 4.6e7, far above float16's 65504.
    x = torch.full((1, 512, 2, 2), 300.0, dtype=torch.float16)
    out = L2Norm(512, 20)(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.full((1, 512, 2, 2), 20 / math.sqrt(512)),
                               rtol=2e-3, atol=0)


def test_new_layers_are_xavier_uniform_with_zero_biases(model300: SSD) -> None:
    convs = list(model300.extras) + list(model300.loc) + list(model300.conf)
    for conv in convs:
        w = conv.weight
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert conv.bias.abs().max().item() == 0
        assert w.abs().max().item() <= bound
        # A uniform(-b, b) sample has std b / sqrt(3); PyTorch's default init is far smaller.
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert (model300.L2Norm.weight == 20).all()


# ----------------------------------------------------------------------------- AMP, layouts

def test_bf16_autocast_forward_on_cpu(model300: SSD, x300, out300) -> None:
    from ssd.precision import native_bf16

    if not native_bf16():
        # Emulated bf16 makes the whole SSD300 forward take minutes on such CPUs: check the
        # first VGG block (convolutions, ReLU, pooling under autocast) against float32 there.
        block = torch.nn.Sequential(*model300.vgg[:5])
        with torch.inference_mode():
            ref = block(x300[:1])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = block(x300[:1])
        assert low.dtype == torch.bfloat16 and low.shape == ref.shape
        corr = torch.corrcoef(torch.stack([low.float().flatten(), ref.flatten()]))[0, 1]
        assert corr > 0.99
        return
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        loc, conf, priors = model300(x300[:1])
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    assert torch.isfinite(loc.float()).all() and torch.isfinite(conf.float()).all()
    assert priors.dtype == torch.float32
    # bf16 keeps ~3 significant digits: the outputs must still track the float32 ones.
    ref = out300[1][:1].flatten()
    corr = torch.corrcoef(torch.stack([conf.float().flatten(), ref]))[0, 1]
    assert corr > 0.95


def test_channels_last_forward_equals_default(model300: SSD, x300, out300) -> None:
    m = copy.deepcopy(model300).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        loc, conf, _ = m(x300[1:].contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(loc, out300[0][1:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conf, out300[1][1:], rtol=1e-4, atol=1e-4)
