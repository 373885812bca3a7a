"""Live loss plots on a visdom server, as ssd.pytorch's ``--visdom`` drew them (minus its crash).

Windows: iteration loss and epoch loss (loc, conf, total), and one per evaluation metric.
Points are added with ``update='append'``; a window left by an earlier run of the same
``prefix``/env is continued (resumed runs extend their plots). Any failure (visdom not
installed, server unreachable, server gone mid-run) is reported once as a warning and
plotting stops; training is never interrupted by it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

LOSS_LEGEND = ["Loc Loss", "Conf Loss", "Total Loss"]


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    # The visdom client logs its own connection errors (through the deprecated Logger.warn);
    # ours is the one warning users see.
    logger = logging.getLogger(logger_name)
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(old)


class VisdomLogger:
    """Append loss points to visdom windows ``<prefix>_iteration_loss``/``<prefix>_epoch_loss``.

    Args:
        server, port, env: where to plot (``--visdom_server``, ``--visdom_port``,
            ``--visdom_env``).
        prefix: window id stem, e.g. ``ssd300_VOC``.
        client: an existing ``visdom.Visdom``-like object (tests); default connects.
    """

    def __init__(self, server: str = "http://localhost", port: int = 8097, env: str = "main",
                 prefix: str = "ssd", client: Any = None) -> None:
        self.server, self.port, self.env = server, int(port), env
        self.iteration_window = f"{prefix}_iteration_loss"
        self.epoch_window = f"{prefix}_epoch_loss"
        self.prefix = prefix
        self._known: set[str] = set()
        self._failed = False
        self._vis = client
        if self._vis is None:
            try:
                import visdom
            except ImportError as e:
                self._fail(e, "the visdom package is not installed (pip install visdom)")
                return
            try:
                with _quiet("visdom"):
                    self._vis = visdom.Visdom(server=server, port=self.port, env=env,
                                              use_incoming_socket=False, raise_exceptions=True)
            except Exception as e:
                self._fail(e)

    @property
    def enabled(self) -> bool:
        return self._vis is not None and not self._failed

    def _fail(self, error: BaseException, why: str | None = None) -> None:
        if not self._failed:
            reason = why or f"cannot reach {self.server}:{self.port} ({type(error).__name__}: " \
                            f"{error})"
            log.warning("visdom: %s; training goes on without live plots", reason)
        self._failed = True
        self._vis = None

    def _append(self, win: str, x: float, ys: Sequence[float], opts: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        y = np.asarray([list(ys)], dtype=np.float64)
        xs = np.full_like(y, float(x))
        try:
            with _quiet("visdom"):
                if win not in self._known:
                    self._known.add(win)
                    if not self._vis.win_exists(win, env=self.env):
                        self._vis.line(X=xs, Y=y, win=win, env=self.env, opts=dict(opts))
                        return
                self._vis.line(X=xs, Y=y, win=win, env=self.env, update="append")
        except Exception as e:
            self._fail(e)

    def iteration(self, iteration: int, loss_l: float, loss_c: float) -> None:
        self._append(self.iteration_window, iteration, [loss_l, loss_c, loss_l + loss_c],
                     {"xlabel": "Iteration", "ylabel": "Loss", "legend": LOSS_LEGEND,
                      "title": f"{self.prefix}: training loss per iteration"})

    def epoch(self, epoch: int, loss_l: float, loss_c: float) -> None:
        self._append(self.epoch_window, epoch, [loss_l, loss_c, loss_l + loss_c],
                     {"xlabel": "Epoch", "ylabel": "Loss", "legend": LOSS_LEGEND,
                      "title": f"{self.prefix}: mean training loss per epoch"})

    def metrics(self, iteration: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._append(f"{self.prefix}_{name}", iteration, [float(value)],
                             {"xlabel": "Iteration", "ylabel": name, "legend": [name],
                              "title": f"{self.prefix}: {name}"})
