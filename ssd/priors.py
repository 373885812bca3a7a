"""Prior (default) boxes of SSD, as ``[P, 4]`` ``(cx, cy, w, h)`` in [0, 1]-relative units.

The values match ssd.pytorch bit for bit: it built them from Python floats (double precision)
and then made a float32 tensor, so the maths here runs in float64 with the same operations in
the same order and is cast at the end.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import torch

__all__ = ["CLIP_RULES", "PriorBox", "clip_rule", "prior_boxes", "validate_prior_config"]

_GEOMETRY_KEYS = ("feature_maps", "min_dim", "steps", "min_sizes", "max_sizes", "aspect_ratios")


def _clip_all(priors: torch.Tensor) -> torch.Tensor:
    return priors.clamp(min=0.0, max=1.0)


def _clip_wh(priors: torch.Tensor) -> torch.Tensor:
    return torch.cat((priors[:, :2], priors[:, 2:].clamp(min=0.0, max=1.0)), dim=1)


def _no_clip(priors: torch.Tensor) -> torch.Tensor:
    return priors


# A config's ``clip``: ssd.pytorch clamps all four (cx, cy, w, h) columns to [0, 1], which moves
# the centres of the outer cells of maps whose step does not divide the image (SSD300's 10x10
# map); torchvision's DefaultBoxGenerator clamps only the widths and heights. ``True`` and
# ``False`` are the old spellings of "all" and "none".
CLIP_RULES = {"all": _clip_all, "wh": _clip_wh, "none": _no_clip}
_CLIP_ALIASES = {True: "all", False: "none"}


def clip_rule(cfg: Mapping[str, Any]) -> str:
    """The name in :data:`CLIP_RULES` of ``cfg["clip"]`` (default ``"all"``)."""
    value = cfg.get("clip", True)
    rule = _CLIP_ALIASES.get(value, value) if isinstance(value, bool) else value
    if rule not in CLIP_RULES:
        raise ValueError(f"prior config {cfg.get('name', '?')!r}: clip must be true, false or "
                         f"one of {sorted(CLIP_RULES)}, got {value!r}")
    return rule


def validate_prior_config(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the problem when ``cfg`` cannot describe a prior layout."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"prior config must be a dict, not {type(cfg).__name__}")
    name = cfg.get("name", "?")
    missing = [k for k in _GEOMETRY_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"prior config {name!r} lacks the keys {missing}")
    min_dim = cfg["min_dim"]
    if not isinstance(min_dim, (int, float)) or min_dim <= 0:
        raise ValueError(
            f"prior config {name!r}: min_dim must be a positive number, got {min_dim!r}")
    n = len(cfg["feature_maps"])
    if n == 0:
        raise ValueError(f"prior config {name!r}: feature_maps is empty")
    for key in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
        if len(cfg[key]) != n:
            raise ValueError(
                f"prior config {name!r}: {key} has {len(cfg[key])} entries but feature_maps has "
                f"{n}; there must be one per source")
    for key in ("feature_maps", "steps", "min_sizes", "max_sizes"):
        bad = [v for v in cfg[key] if not isinstance(v, (int, float)) or v <= 0]
        if bad:
            raise ValueError(f"prior config {name!r}: {key} must be positive numbers, got {bad}")
    if any(int(f) != f for f in cfg["feature_maps"]):
        raise ValueError(f"prior config {name!r}: feature_maps must be whole numbers")
    for k, ars in enumerate(cfg["aspect_ratios"]):
        if any(not isinstance(a, (int, float)) or a <= 0 for a in ars):
            raise ValueError(
                f"prior config {name!r}: aspect_ratios[{k}] must be positive numbers, got {ars!r}")
    clip_rule(cfg)
    variance = cfg.get("variance")
    if variance is not None and any(v <= 0 for v in variance):
        raise ValueError(f"prior config {name!r}: variances must be > 0, got {variance!r}")


def _geometry_key(cfg: Mapping[str, Any]) -> tuple:
    """A hashable view of everything the priors depend on."""
    return (
        tuple(int(f) for f in cfg["feature_maps"]),
        cfg["min_dim"],
        tuple(cfg["steps"]),
        tuple(cfg["min_sizes"]),
        tuple(cfg["max_sizes"]),
        tuple(tuple(a) for a in cfg["aspect_ratios"]),
        clip_rule(cfg),
    )


def _compute(feature_maps: Sequence[int], min_dim: float, steps: Sequence[float],
             min_sizes: Sequence[float], max_sizes: Sequence[float],
             aspect_ratios: Sequence[Sequence[float]], clip: str) -> torch.Tensor:
    """The float64 ``[P, 4]`` priors (see the module docstring for the precision story)."""
    blocks = []
    for k, f in enumerate(feature_maps):
        f_k = min_dim / steps[k]
        centres = (torch.arange(f, dtype=torch.float64) + 0.5) / f_k
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # row-major cells
        s_k = min_sizes[k] / min_dim
        s_k_prime = math.sqrt(s_k * (max_sizes[k] / min_dim))
        sizes = [(s_k, s_k), (s_k_prime, s_k_prime)]
        for ar in aspect_ratios[k]:
            r = math.sqrt(ar)
            sizes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
        wh = torch.tensor(sizes, dtype=torch.float64)  # [A, 2]
        n_cells, n_boxes = f * f, len(sizes)
        centre = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)  # [f*f, 2]
        block = torch.cat([centre[:, None, :].expand(n_cells, n_boxes, 2),
                           wh[None].expand(n_cells, n_boxes, 2)], dim=2)
        blocks.append(block.reshape(-1, 4))
    return CLIP_RULES[clip](torch.cat(blocks, dim=0))


@functools.lru_cache(maxsize=32)
def _cached(key: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _compute(*key).to(dtype=dtype).to(device)


def prior_boxes(cfg: Mapping[str, Any], device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The priors of ``cfg`` as a ``[P, 4]`` ``(cx, cy, w, h)`` tensor on ``device``.

    Computed once per (geometry, device, dtype) and cached; every call returns a fresh copy of
    the cached tensor, so callers may modify the result freely.
    """
    validate_prior_config(cfg)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return _cached(_geometry_key(cfg), dev, dtype).clone()


class PriorBox:
    """ssd.pytorch's ``PriorBox``: ``PriorBox(cfg).forward()`` -> float32 CPU ``[P, 4]``.

    ``P`` is 8732 for SSD300 and 24564 for SSD512.
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        validate_prior_config(cfg)
        self.cfg = dict(cfg)
        self.image_size = cfg["min_dim"]
        self.feature_maps = list(cfg["feature_maps"])
        self.steps = list(cfg["steps"])
        self.min_sizes = list(cfg["min_sizes"])
        self.max_sizes = list(cfg["max_sizes"])
        self.aspect_ratios = [list(a) for a in cfg["aspect_ratios"]]
        self.variance = list(cfg.get("variance") or [0.1, 0.2])
        self.clip = clip_rule(cfg) != "none"
        self.version = cfg.get("name", "")

    def forward(self) -> torch.Tensor:
        """Return the ``[P, 4]`` float32 CPU priors."""
        return prior_boxes(self.cfg)

    __call__ = forward
