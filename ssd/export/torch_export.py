"""``torch.export`` of the bare network (raw ``loc`` and ``conf``) with a dynamic batch axis.

The ``.pt2`` file reloads with :func:`load_program` (``torch.export.load``) into a module that
gives the same outputs as the SSD, without the model's Python code.
"""

from __future__ import annotations

import os
import warnings
from typing import Union

import torch
from torch import nn

from ..io import atomic_write
from .graph import RawOutputs
from .onnx_export import exportable_copy, parse_batch

__all__ = ["export_program", "load_program"]

PathLike = Union[str, "os.PathLike[str]"]


def export_program(model: nn.Module, path: PathLike | None = None,
                   batch: int | str | None = "dynamic") -> torch.export.ExportedProgram:
    """Export ``model`` (an :class:`ssd.SSD`; a float32 CPU copy) as ``images [N, 3, S, S]``
    -> ``(loc [N, P, 4], conf [N, P, C])`` raw outputs, and save it to ``path`` (atomically)
    when given. ``batch``: ``'dynamic'`` or a fixed size."""
    fixed = parse_batch(batch)
    core = exportable_copy(model)
    example = torch.zeros(fixed or 2, 3, core.size, core.size)
    dynamic = None if fixed else {"images": {0: torch.export.Dim("batch", min=1, max=4096)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(RawOutputs(core).eval(), (example,),
                                      dynamic_shapes=dynamic)
    if path is not None:
        with atomic_write(path, "wb") as f:
            torch.export.save(program, f)
    return program


def load_program(path: PathLike) -> nn.Module:
    """Reload a saved ``.pt2`` as a callable module ``images -> (loc, conf)``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported program {os.fspath(path)!r} not found")
    return torch.export.load(os.fspath(path)).module()
