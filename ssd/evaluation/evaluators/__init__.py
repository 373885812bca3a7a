"""One evaluator per benchmark, behind one interface (:class:`Evaluator`).

:func:`evaluator_for` is the one place that decides which benchmark a dataset belongs to;
``eval.py``, ``eval.py --from_results`` and the training loop's validation all go through it.
"""

from __future__ import annotations

import os
from typing import Any, Union

from .base import AllBoxes, Evaluator, PRCurve, Scores
from .coco import COCOEvaluator
from .voc import VOCEvaluator

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["EVALUATORS", "AllBoxes", "COCOEvaluator", "Evaluator", "PRCurve", "Scores",
           "VOCEvaluator", "evaluator_for"]

# Asked in order; the first that accepts a dataset evaluates it. A COCO-format dataset is
# recognised by its annotation object, so it is asked before the looser VOC test.
EVALUATORS: tuple[type[Evaluator], ...] = (COCOEvaluator, VOCEvaluator)


def evaluator_for(dataset: Any, *, set_name: str | None = None,
                  use_07_metric: bool | None = None, cachedir: PathLike | None = None,
                  verbose: bool = True) -> Evaluator:
    """The evaluator of ``dataset``'s benchmark (see :meth:`Evaluator.for_dataset` for the
    options). Raises ``TypeError`` for a dataset no benchmark recognises."""
    for kind in EVALUATORS:
        if kind.accepts(dataset):
            return kind.for_dataset(dataset, set_name=set_name, use_07_metric=use_07_metric,
                                    cachedir=cachedir, verbose=verbose)
    raise TypeError(f"no evaluator for {type(dataset).__name__}: expected a COCO-format dataset "
                    f"(with a pycocotools .coco) or a VOC-format one (.ids of (VOC folder, "
                    f"image id) pairs)")
