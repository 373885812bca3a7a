"""``python -m ssd.weights``: convert and inspect weight files.

    python -m ssd.weights convert-vgg16 vgg16-397923af.pth weights/vgg16_reducedfc.pth
    python -m ssd.weights convert-vgg16 torchvision weights/vgg16_reducedfc.pth  # downloads
    python -m ssd.weights info weights/ssd300_mAP_77.43_v2.pth
    python -m ssd.weights list                 # the pretrained models, cached or not
    python -m ssd.weights download ssd300_coco # into $SSD_HOME, verified (and converted)
    python -m ssd.weights convert-torchvision-ssd ssd300_vgg16_coco-b556d3b4.pth \
        weights/ssd300_coco_torchvision.pth
"""

from __future__ import annotations

import argparse
import sys
from typing import Mapping, Sequence

from .describe import describe_state_dict
from .loading import (
    _SSD_HELP,
    TORCHVISION_VGG16_URL,
    _all_tensors,
    _read,
    load_state_dict_file,
    normalize_state_dict,
)
from .vgg16 import _CONV6, _CONV7, convert_vgg16, torchvision_vgg16_base
from .zoo_cli import add_zoo_commands

__all__ = ["main"]


def _info(path: str) -> int:
    raw = _read(path, "cpu", _SSD_HELP)
    state = normalize_state_dict(raw, repr(path))
    n_params = sum(t.numel() for t in state.values())
    print(f"{path}: {describe_state_dict(state)}")
    if isinstance(raw, Mapping) and not _all_tensors(raw):
        print(f"  checkpoint entries: {', '.join(map(str, raw))}")
    print(f"  {len(state)} tensors, {n_params:,} values")
    for key, t in state.items():
        print(f"  {key:<28} {str(list(t.shape)):<22} {str(t.dtype).replace('torch.', '')}")
    return 0


def _convert(src: str, dst: str) -> int:
    from ..io import atomic_save

    if src == "torchvision":
        base = torchvision_vgg16_base(download=True)
    else:
        base = convert_vgg16(load_state_dict_file(
            src, help_text=f"give a torchvision vgg16 state dict ({TORCHVISION_VGG16_URL}) or "
                           f"the word 'torchvision' to download it"))
    atomic_save(base, dst)
    n = sum(t.numel() for t in base.values())
    print(f"wrote {dst}: VGG16 reduced-fc base net, {len(base)} tensors ({n:,} values), "
          f"conv6 {list(base[f'{_CONV6}.weight'].shape)}, "
          f"conv7 {list(base[f'{_CONV7}.weight'].shape)}")
    return 0


def _convert_torchvision_ssd(src: str, dst: str, classes: str | None) -> int:
    from ..data.classes import load_class_names
    from .files import save_weights_file
    from .torchvision_ssd import convert_torchvision_ssd

    names = load_class_names(classes) if classes is not None else None
    state = load_state_dict_file(
        src, help_text="give a state dict of torchvision.models.detection.ssd300_vgg16, e.g. "
                       "https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth")
    wf = convert_torchvision_ssd(state, names)
    save_weights_file(dst, wf.state_dict, config=wf.config, class_names=wf.class_names,
                      **wf.meta)
    n = sum(t.numel() for t in wf.state_dict.values())
    print(f"wrote {dst}: SSD300 ({wf.config['name']} config), {len(wf.class_names)} classes "
          f"+ background, {len(wf.state_dict)} tensors ({n:,} values); load it with "
          f"ssd.Detector.from_checkpoint({dst!r}) or eval.py/test.py --trained_model {dst}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m ssd.weights -h``)."""
    parser = argparse.ArgumentParser(prog="python -m ssd.weights",
                                     description="SSD weight file tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_zoo_commands(sub)
    conv = sub.add_parser("convert-vgg16", help="make the SSD base net from torchvision's VGG16",
                          description="Convert torchvision's ImageNet VGG16 into SSD's reduced-fc "
                                      "base net (vgg16_reducedfc.pth layout).")
    conv.add_argument("input", help="torchvision vgg16 state dict file (vgg16-397923af.pth), "
                                    "or 'torchvision' to download it")
    conv.add_argument("output", help="where to write the base net, e.g. "
                                     "weights/vgg16_reducedfc.pth")
    tvc = sub.add_parser("convert-torchvision-ssd",
                         help="make our SSD300 from torchvision's ssd300_vgg16 weights",
                         description="Convert a torchvision ssd300_vgg16 state dict (any "
                                     "num_classes) into a weights file of this project that "
                                     "carries torchvision's config and the class names.")
    tvc.add_argument("input", help="torchvision state dict, e.g. ssd300_vgg16_coco-b556d3b4.pth")
    tvc.add_argument("output", help="where to write the converted file")
    tvc.add_argument("--classes", default=None,
                     help="class-list file (one foreground name per line, label order; default "
                          "COCO's 90 category slots for 91 outputs, else class_1, class_2, ...)")
    info = sub.add_parser("info", help="say what a weights file holds")
    info.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if getattr(args, "handler", None) is not None:
            return args.handler(args)
        if args.command == "convert-vgg16":
            return _convert(args.input, args.output)
        if args.command == "convert-torchvision-ssd":
            return _convert_torchvision_ssd(args.input, args.output, args.classes)
        return _info(args.file)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog} {args.command}: error: {msg}", file=sys.stderr)
        return 1
