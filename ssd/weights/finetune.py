"""Starting a model from a trained SSD made for other classes or another prior layout.

Every tensor of the file whose name and shape fit the model is loaded, except the heads
whose meaning changed: the confidence heads when the classes differ (count or names), both
heads when the priors differ (each head channel belongs to one prior shape). Whatever is not
loaded keeps the model's fresh initialisation, and :class:`FinetuneReport` says which is which.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .loading import WeightsMismatchError, unwrap_model

__all__ = ["FinetuneReport", "file_num_classes", "load_for_finetuning", "same_priors"]


@dataclass
class FinetuneReport:
    """What :func:`load_for_finetuning` did.

    Attributes:
        loaded: model tensors taken from the file.
        reinitialised: model tensors left at their fresh initialisation, with ``reasons``.
        unused: file tensors the model has no place for.
        reasons: why each group of heads was re-initialised (plain sentences).
    """

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Several lines for a log."""
        lines = [f"loaded {len(self.loaded)} tensors: {_groups(self.loaded)}"]
        if self.reinitialised:
            lines.append(f"re-initialised {len(self.reinitialised)} tensors: "
                         f"{_groups(self.reinitialised)}")
        lines += [f"  because {r}" for r in self.reasons]
        if self.unused:
            lines.append(f"not used from the file: {_groups(self.unused)}")
        return "\n".join(lines)


def _groups(keys: Sequence[str]) -> str:
    """``conf.0.weight, conf.0.bias, conf.1.weight`` -> ``conf.{0,1}.{bias,weight}``-ish."""
    by_module: OrderedDict[str, list[str]] = OrderedDict()
    for k in keys:
        m = re.match(r"^([A-Za-z_]+)\.(\d+)\.(.+)$", k)
        head = m.group(1) if m else k
        by_module.setdefault(head, []).append(k)
    parts = []
    for head, ks in by_module.items():
        if len(ks) == 1:
            parts.append(ks[0])
        else:
            idx = sorted({int(k.split(".")[1]) for k in ks})
            parts.append(f"{head}.{idx[0]}-{idx[-1]} ({len(ks)})")
    return ", ".join(parts) if parts else "none"


def same_priors(cfg_a: Mapping[str, Any], cfg_b: Mapping[str, Any]) -> bool:
    """Whether two configs give the same priors (to 1e-6), in the same order."""
    from ..priors import PriorBox

    a, b = PriorBox(dict(cfg_a)).forward(), PriorBox(dict(cfg_b)).forward()
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-6, rtol=0))


def file_num_classes(state: Mapping[str, torch.Tensor], mbox0: int) -> int | None:
    """Classes (background included) of an SSD state dict, from its first confidence head."""
    conf0 = state.get("conf.0.weight")
    if conf0 is None or mbox0 <= 0 or conf0.shape[0] % mbox0:
        return None
    return conf0.shape[0] // mbox0


def load_for_finetuning(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                        config: Mapping[str, Any] | None = None,
                        class_names: Sequence[str] | None = None,
                        model_class_names: Sequence[str] | None = None) -> FinetuneReport:
    """Load what fits of a trained SSD's ``state`` into ``model`` (see the module docstring).

    Args:
        model: an SSD (wrappers allowed) with its fresh initialisation.
        state: the trained SSD's state dict (our layout).
        config: the file's config, when known: the heads are kept only if it gives the same
            priors as the model's.
        class_names, model_class_names: the file's and the model's foreground names, when
            known: the confidence heads are kept only if both lists are equal.

    Raises:
        WeightsMismatchError: nothing of ``state`` fits the model.
    """
    target = unwrap_model(model)
    own = target.state_dict()
    model_cfg = getattr(target, "cfg", {})
    drop: list[str] = []
    mbox = model_cfg.get("mbox") or [0]
    if config is not None and "mbox" in config:
        n_file = file_num_classes(state, int(config["mbox"][0]))
    else:
        n_file = file_num_classes(state, int(mbox[0]))
    n_model = int(getattr(target, "num_classes", 0))
    reasons = []
    if config is not None and model_cfg and not same_priors(config, model_cfg):
        drop += ["loc.", "conf."]
        reasons.append("the file's priors differ from this config's (its heads predict for "
                       "other prior shapes)")
    elif n_file is not None and n_file != n_model:
        drop.append("conf.")
        reasons.append(f"the file has {n_file - 1} classes and this model {n_model - 1}")
    elif (class_names is not None and model_class_names is not None
          and list(class_names) != list(model_class_names)):
        drop.append("conf.")
        reasons.append("the file's class names differ from this model's")
    loadable: OrderedDict[str, torch.Tensor] = OrderedDict()
    report = FinetuneReport(reasons=reasons)
    for key, value in own.items():
        got = state.get(key)
        if got is not None and got.shape == value.shape and not key.startswith(tuple(drop)):
            loadable[key] = got
            report.loaded.append(key)
        else:
            report.reinitialised.append(key)
            if got is not None and not key.startswith(tuple(drop)):
                report.reasons.append(f"{key} has shape {list(got.shape)} in the file, "
                                      f"{list(value.shape)} here")
    report.unused = [k for k in state if k not in own]
    if not loadable:
        raise WeightsMismatchError("none of the file's tensors fits the model (is it a whole "
                                   "SSD of the same size?)")
    target.load_state_dict(loadable, strict=False)
    return report
