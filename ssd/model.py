"""The SSD network: VGG16 base, extra feature layers and the multibox heads.

Module and attribute names (``vgg``, ``L2Norm``, ``extras``, ``loc``, ``conf``) follow
ssd.pytorch, so its checkpoints load with ``strict=True`` and give the same outputs; the
priors are a non-persistent buffer, so they follow ``.to(device)`` without entering the
state dict.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import get_config
from .detection import detect, detect_options
from .l2norm import L2Norm
from .priors import PriorBox, prior_boxes

__all__ = ["BASE_CFG", "SSD", "add_extras", "build_ssd", "multibox", "vgg", "xavier_init_"]

# VGG16 ("D") up to conv5_3, as in torchvision's make_layers; "C" is pool3 with ceil_mode, which
# takes conv4_3 to 38x38 for 300x300 inputs (64x64 for 512).
BASE_CFG: tuple[Union[int, str], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C",
                                         512, 512, 512, "M", 512, 512, 512)

PHASES = ("train", "test")
WEIGHT_EXTENSIONS = (".pth", ".pkl", ".pt", ".ckpt")
SIZES = (300, 512)

# conv4_3 is the tenth conv of VGG16: its (ReLU'd) output is the first source.
_CONV4_3 = 10


def vgg(cfg_list: Sequence[Union[int, str]] = BASE_CFG, in_channels: int = 3,
        batch_norm: bool = False) -> list[nn.Module]:
    """SSD's VGG16 base as a flat list of layers (torchvision ``make_layers`` indices).

    ``cfg_list`` entries: an int is a 3x3 pad-1 conv with that many outputs followed by an
    in-place ReLU (conv, BatchNorm, ReLU with ``batch_norm``); ``"M"`` a 2x2 max pool; ``"C"``
    the same with ``ceil_mode``. Appended: pool5 (3x3, stride 1, pad 1), conv6 (3x3, 1024,
    dilation 6), ReLU, conv7 (1x1, 1024), ReLU. For :data:`BASE_CFG` that is 35 layers:
    conv4_3 at index 21, its ReLU at 22, conv6 at 31 and conv7 at 33, the indices of the keys
    of ``vgg16_reducedfc.pth``. Weights keep PyTorch's default init (they are normally loaded
    from the base net file).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg_list:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            channels = v
        else:
            raise ValueError(f"vgg config entries must be positive ints, 'M' or 'C', got {v!r}")
    layers += [
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
        nn.Conv2d(channels, 1024, kernel_size=3, padding=6, dilation=6),
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, kernel_size=1),
        nn.ReLU(inplace=True),
    ]
    return layers


def xavier_init_(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every conv in ``module`` (in place)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _legacy_extras(cfg_list: Sequence[Union[int, str]]) -> list[tuple[int, int, int, int]]:
    """ssd.pytorch's extras notation (``[256, 'S', 512, 128, 'S', 256, ...]``) as tuples.

    Kernels alternate 1x1, 3x3 starting with 1x1; ``'S'`` makes the next conv stride 2, pad 1.
    """
    out: list[tuple[int, int, int, int]] = []
    strided = False
    for v in cfg_list:
        if v == "S":
            strided = True
            continue
        kernel = 3 if len(out) % 2 else 1
        out.append((int(v), kernel, 2, 1) if strided else (int(v), kernel, 1, 0))
        strided = False
    return out


def add_extras(extras_cfg: Sequence[Union[Sequence[int], int, str]],
               in_channels: int = 1024) -> list[nn.Conv2d]:
    """The extra feature layers after conv7, Xavier-initialised.

    ``extras_cfg`` is a config's ``extras``: ``(out_channels, kernel, stride, padding)`` per
    conv (ssd.pytorch's ``[256, 'S', 512, ...]`` notation is accepted too). Only convs are
    returned (the ReLUs are applied in :meth:`SSD.forward`), so their checkpoint keys are
    ``extras.0`` ... ``extras.N``; every second one gives a source.
    """
    if any(isinstance(v, (int, str)) for v in extras_cfg):
        extras_cfg = _legacy_extras(extras_cfg)  # type: ignore[arg-type]
    layers: list[nn.Conv2d] = []
    channels = in_channels
    for k, spec in enumerate(extras_cfg):
        if len(spec) != 4:
            raise ValueError(f"extras[{k}] must be (out_channels, kernel, stride, padding), "
                             f"got {spec!r}")
        out, kernel, stride, padding = (int(s) for s in spec)
        layers.append(nn.Conv2d(channels, out, kernel_size=kernel, stride=stride,
                                padding=padding))
        channels = out
    if len(layers) % 2:
        raise ValueError(f"extras must come in pairs (every second conv is a source), got "
                         f"{len(layers)} layers")
    for layer in layers:
        xavier_init_(layer)
    return layers


def _conv4_3_relu_index(vgg_layers: Sequence[nn.Module]) -> int:
    """Index of the ReLU right after conv4_3 (22 for the plain base): the L2Norm tap."""
    n_conv = 0
    for i, layer in enumerate(vgg_layers):
        if isinstance(layer, nn.Conv2d):
            n_conv += 1
        elif n_conv == _CONV4_3 and isinstance(layer, nn.ReLU):
            return i
    raise ValueError(f"the VGG base needs at least {_CONV4_3} convs followed by ReLUs "
                     f"(conv4_3 is the first source)")


def _conv4_3(vgg_layers: Sequence[nn.Module]) -> nn.Conv2d:
    convs = [m for m in vgg_layers if isinstance(m, nn.Conv2d)]
    if len(convs) < _CONV4_3 + 1:
        raise ValueError(f"the VGG base has {len(convs)} convs; SSD needs conv4_3 and conv7")
    return convs[_CONV4_3 - 1]


def multibox(vgg_layers: Sequence[nn.Module], extra_layers: Sequence[nn.Module],
             mbox: Sequence[int], num_classes: int
             ) -> tuple[Sequence[nn.Module], Sequence[nn.Module],
                        tuple[list[nn.Conv2d], list[nn.Conv2d]]]:
    """Build the 3x3 pad-1 loc and conf heads, one per source (ssd.pytorch's ``multibox``).

    Sources: conv4_3, conv7 (the last conv of ``vgg_layers``), then every second extra layer;
    ``mbox[i]`` boxes per cell at source ``i``. Loc heads have ``4 * mbox[i]`` outputs, conf
    heads ``mbox[i] * num_classes``. Returns ``(vgg_layers, extra_layers, (loc, conf))``.
    """
    convs = [m for m in vgg_layers if isinstance(m, nn.Conv2d)]
    channels = [_conv4_3(vgg_layers).out_channels, convs[-1].out_channels]
    channels += [layer.out_channels for layer in list(extra_layers)[1::2]]
    if len(mbox) != len(channels):
        raise ValueError(f"mbox has {len(mbox)} entries but the network has {len(channels)} "
                         f"sources (conv4_3, conv7 and {len(channels) - 2} from the extras)")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
    loc_layers = [nn.Conv2d(c, k * 4, kernel_size=3, padding=1) for c, k in zip(channels, mbox)]
    conf_layers = [nn.Conv2d(c, k * num_classes, kernel_size=3, padding=1)
                   for c, k in zip(channels, mbox)]
    for layer in loc_layers + conf_layers:
        xavier_init_(layer)
    return vgg_layers, extra_layers, (loc_layers, conf_layers)


def _check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"phase must be 'train' or 'test', got {phase!r}")
    return phase


class SSD(nn.Module):
    """Single Shot MultiBox Detector on a VGG16 base (SSD300 or SSD512).

    Args:
        phase: ``'train'`` (forward returns ``(loc, conf, priors)``) or ``'test'`` (forward
            returns detections).
        size: input side, 300 or 512.
        base: the VGG layers (see :func:`vgg`).
        extras: the extra convs (see :func:`add_extras`).
        head: ``(loc_layers, conf_layers)`` (see :func:`multibox`).
        num_classes: number of classes including background.
        cfg: a config name or dict (see :func:`ssd.config.get_config`); ``None`` means the VOC
            config of ``size``. Its ``num_classes`` is replaced by ``num_classes``.
        top_k, conf_thresh, nms_thresh, max_per_image: test-phase detection settings (see
            :func:`ssd.detection.detect`); plain attributes, so evaluation may change them.
            ``max_per_image=None`` takes the config's.

    The config's ``detect`` entry sets the other post-processing rules (candidates per class,
    clipping, empty boxes, the decode's exponent cap; see
    :data:`ssd.detection.DETECT_OPTIONS`), kept as attributes of the same names.

    Train-phase output: ``loc [B, P, 4]``, ``conf [B, P, num_classes]`` (raw scores) and
    ``priors [P, 4]`` ``(cx, cy, w, h)``. Test-phase output: ``[B, num_classes, top_k, 5]``
    rows ``(score, x1, y1, x2, y2)``. ``P`` is 8732 for SSD300, 24564 for SSD512.
    """

    def __init__(self, phase: str, size: int, base: Iterable[nn.Module],
                 extras: Iterable[nn.Module], head: tuple[Iterable[nn.Module], Iterable[nn.Module]],
                 num_classes: int, cfg: str | Mapping[str, Any] | None = None, *,
                 top_k: int = 200, conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                 max_per_image: int | None = None) -> None:
        super().__init__()
        self.phase = _check_phase(phase)
        if size not in SIZES:
            raise ValueError(f"SSD input size must be 300 or 512, got {size!r}")
        self.cfg = get_config(cfg, size, num_classes)
        self.size = int(size)
        self.num_classes = int(num_classes)
        self.top_k = int(top_k)
        self.conf_thresh = float(conf_thresh)
        self.nms_thresh = float(nms_thresh)
        options = detect_options(self.cfg)
        self.max_per_image = max_per_image if max_per_image is not None else \
            options["max_per_image"]
        self.candidates_per_class = options["candidates_per_class"]
        self.clip_boxes = options["clip_boxes"]
        self.keep_empty_boxes = options["keep_empty_boxes"]
        self.max_log_wh = options["max_log_wh"]
        self.bkg_label = 0

        # Registration order fixes the state dict order: vgg, L2Norm, extras, loc, conf.
        self.vgg = nn.ModuleList(base)
        self._l2norm_tap = _conv4_3_relu_index(self.vgg)
        self.L2Norm = L2Norm(_conv4_3(self.vgg).out_channels, 20)
        self.extras = nn.ModuleList(extras)
        loc_layers, conf_layers = head
        self.loc = nn.ModuleList(loc_layers)
        self.conf = nn.ModuleList(conf_layers)
        n_sources = 2 + len(self.extras) // 2
        if not len(self.loc) == len(self.conf) == n_sources == len(self.cfg["mbox"]):
            raise ValueError(
                f"{len(self.loc)} loc and {len(self.conf)} conf heads for {n_sources} sources "
                f"but config {self.cfg.get('name')!r} has {len(self.cfg['mbox'])} (mbox)")
        self.softmax = nn.Softmax(dim=-1)

        self.priorbox = PriorBox(self.cfg)
        # Not persistent: ssd.pytorch's checkpoints have no priors and ours must match them.
        self.register_buffer("priors", prior_boxes(self.cfg), persistent=False)

    def set_phase(self, phase: str) -> SSD:
        """Switch between ``'train'`` and ``'test'`` outputs (does not call train()/eval())."""
        self.phase = _check_phase(phase)
        return self

    def forward(self, x: torch.Tensor
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: ``[B, 3, size, size]`` RGB minus means; see the class docstring for outputs."""
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"SSD{self.size} expects [B, 3, {self.size}, {self.size}] inputs, "
                             f"got {tuple(x.shape)}")
        sources = []
        for k, layer in enumerate(self.vgg):
            x = layer(x)
            if k == self._l2norm_tap:
                sources.append(self.L2Norm(x))
        sources.append(x)
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)

        batch = x.shape[0]
        # NHWC order puts a cell's boxes next to each other, the layout the priors follow.
        loc = torch.cat([head(s).permute(0, 2, 3, 1).reshape(batch, -1)
                         for s, head in zip(sources, self.loc)], dim=1)
        conf = torch.cat([head(s).permute(0, 2, 3, 1).reshape(batch, -1)
                          for s, head in zip(sources, self.conf)], dim=1)
        loc = loc.view(batch, -1, 4)
        conf = conf.view(batch, -1, self.num_classes)
        if self.phase == "train":
            return loc, conf, self.priors
        with torch.no_grad():  # detections are not differentiable
            return detect(loc.float(), self.softmax(conf.float()), self.priors,
                          self.num_classes, self.bkg_label, self.top_k, self.conf_thresh,
                          self.nms_thresh, variances=tuple(self.cfg["variance"]),
                          max_per_image=self.max_per_image,
                          candidates_per_class=self.candidates_per_class,
                          clip_boxes=self.clip_boxes, keep_empty_boxes=self.keep_empty_boxes,
                          max_log_wh=self.max_log_wh)

    def load_weights(self, base_file: str | os.PathLike[str], strict: bool = True) -> Any:
        """Load a whole-SSD state dict file into this model (see
        :func:`ssd.weights.load_ssd_weights`): ``.pth``/``.pkl`` as in ssd.pytorch, ``.pt``, or
        a training checkpoint ``.ckpt``."""
        from .weights import load_ssd_weights  # lazy: keeps `python -m ssd.weights` clean

        ext = os.path.splitext(os.fspath(base_file))[1].lower()
        if ext not in WEIGHT_EXTENSIONS:
            raise ValueError(f"{os.fspath(base_file)}: unsupported weights file extension "
                             f"{ext or '(none)'!r}; expected one of {', '.join(WEIGHT_EXTENSIONS)}")
        return load_ssd_weights(self, base_file, strict=strict)

    def extra_repr(self) -> str:
        return (f"phase={self.phase!r}, size={self.size}, num_classes={self.num_classes}, "
                f"cfg={self.cfg.get('name')!r}")


def build_ssd(phase: str, size: int | None = None, num_classes: int | None = None,
              cfg: str | Mapping[str, Any] | None = None, *, top_k: int = 200,
              conf_thresh: float = 0.01, nms_thresh: float = 0.45,
              max_per_image: int | None = None) -> SSD:
    """Build an SSD (``build_ssd('test', 300, 21)`` is ssd.pytorch's VOC SSD300).

    Args:
        phase: ``'train'`` or ``'test'``.
        size: 300 or 512; ``None`` takes the config's (300 when ``cfg`` is ``None``).
        num_classes: classes including background; ``None`` takes the config's (21 for VOC,
            81 for COCO). Any other count keeps the config's geometry (custom datasets).
        cfg: ``'voc300'``, ``'voc512'``, ``'coco300'``, ``'coco512'``, ``'voc'``, ``'coco'`` or
            a config dict; ``None`` means VOC. The config is never guessed from
            ``num_classes``.
        top_k, conf_thresh, nms_thresh, max_per_image: test-phase detection settings; the
            config's ``detect`` entry gives the rest (and ``max_per_image`` when this is None).
    """
    _check_phase(phase)
    if size is not None and size not in SIZES:
        raise ValueError(f"SSD input size must be 300 or 512, got {size!r}")
    config = get_config(cfg, size, num_classes)
    size = int(config["min_dim"])
    if size not in SIZES:
        raise ValueError(f"config {config.get('name')!r} has min_dim {size}: only 300 and 512 "
                         f"inputs are supported")
    base, extras, head = multibox(vgg(BASE_CFG, 3), add_extras(config["extras"], 1024),
                                  config["mbox"], config["num_classes"])
    return SSD(phase, size, base, extras, head, config["num_classes"], config, top_k=top_k,
               conf_thresh=conf_thresh, nms_thresh=nms_thresh, max_per_image=max_per_image)
