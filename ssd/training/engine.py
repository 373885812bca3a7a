"""The training loop: iteration-based across epochs, resumable bit for bit.

:class:`Trainer` knows nothing about SSD or files: it takes a model whose output goes to a
``criterion(output, targets) -> (loss_l, loss_c)``, an optimizer, an :class:`EpochLoader`
and a schedule, and calls back a checkpoint writer, a metrics log, a visdom logger and an
evaluation function. One iteration = one optimizer step (or one skipped step when the loss
is not finite); ``iteration`` always counts the iterations already done.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .checkpoint import capture_rng, restore_rng
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, unwrap
from .sampler import EpochLoader
from .schedule import MultiStepWarmup, set_lr

log = logging.getLogger(__name__)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}

EvalFn = Callable[[nn.Module, int], Mapping[str, Any]]
SaveFn = Callable[[Mapping[str, Any], int, bool], Any]


class NonFiniteLossError(RuntimeError):
    """The loss was NaN/inf for ``max_nonfinite`` iterations in a row."""


# ----------------------------------------------------------------------------- stop requests

class StopSignal:
    """Turns SIGINT/SIGTERM into a request to stop after the current iteration.

    A second Ctrl-C aborts at once (KeyboardInterrupt, no checkpoint). A SIGTERM after the
    first signal is ignored: torchrun sends one to its workers right after the user's Ctrl-C.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = name
            log.warning("%s received: finishing this iteration, saving a checkpoint and "
                        "stopping (Ctrl-C again aborts without saving)", name)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Install the handlers for the duration (only possible in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, h in self._previous.items():
                signal.signal(s, h)
            self._previous.clear()


# ----------------------------------------------------------------------------- one step

@dataclass
class StepResult:
    loss_l: float  # mean over processes
    loss_c: float
    finite: bool  # loss (and, without a GradScaler, gradient) finite
    stepped: bool  # the optimizer changed the weights
    grad_norm: float
    stop: bool  # some process asked to stop


def _to_float32(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_float32(o) for o in obj)
    return obj


def _grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Run ``max_iter`` iterations of SSD training (see the module docstring).

    Args:
        model: the network (possibly DDP-wrapped), already on ``device``.
        criterion: ``criterion(model_output, targets) -> (loss_l, loss_c)``.
        optimizer: built on the model's parameters.
        data: endless batches of ``(images [B,3,H,W], targets list)``.
        schedule: learning rate as a function of the iteration.
        max_iter: iterations to reach.
        device: where batches go.
        amp: ``'off'``, ``'bf16'`` or ``'fp16'`` (autocast; the loss is computed in float32).
        scaler: a ``torch.amp.GradScaler`` for fp16.
        clip_grad: max global gradient L2 norm (None: no clipping).
        max_nonfinite: stop after this many non-finite iterations in a row.
        dist: this process's rank / world size.
        log_every: iterations per metrics record / visdom point.
        checkpoint_every: save every N iterations (0: only at the end).
        save_fn: ``save_fn(state, iteration, final)``, called on rank 0 only.
        eval_every, eval_fn: ``eval_fn(unwrapped_model, iteration) -> metrics`` on rank 0.
        metrics: a :class:`~ssd.training.metrics.MetricsLog` (rank 0) or None.
        visdom: a :class:`~ssd.training.visdom_logger.VisdomLogger` (rank 0) or None.
        progress: show a tqdm bar (rank 0).
        stop: a :class:`StopSignal` whose request ends the run after a checkpoint.
        channels_last: feed images in channels-last memory format.
    """

    def __init__(self, model: nn.Module, criterion: Callable[..., Any],
                 optimizer: torch.optim.Optimizer, data: EpochLoader,
                 schedule: MultiStepWarmup, *, max_iter: int, device: torch.device,
                 amp: str = "off", scaler: Any = None, clip_grad: float | None = None,
                 max_nonfinite: int = 10, dist: DistInfo = DistInfo(), log_every: int = 10,
                 checkpoint_every: int = 0, save_fn: SaveFn | None = None, eval_every: int = 0,
                 eval_fn: EvalFn | None = None, metrics: Any = None, visdom: Any = None,
                 progress: bool = True, stop: StopSignal | None = None,
                 channels_last: bool = False) -> None:
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
        if max_iter < 0 or max_nonfinite < 1 or log_every < 1:
            raise ValueError("max_iter >= 0, max_nonfinite >= 1 and log_every >= 1 required")
        self.model, self.criterion, self.optimizer = model, criterion, optimizer
        self.data, self.schedule = data, schedule
        self.max_iter, self.device = int(max_iter), torch.device(device)
        self.amp, self.amp_dtype, self.scaler = amp, AMP_DTYPES[amp], scaler
        self.clip_grad, self.max_nonfinite = clip_grad, int(max_nonfinite)
        self.dist, self.log_every = dist, int(log_every)
        self.checkpoint_every, self.save_fn = int(checkpoint_every), save_fn
        self.eval_every, self.eval_fn = int(eval_every), eval_fn
        self.metrics, self.visdom = metrics, visdom
        self.progress, self.stop = progress, stop or StopSignal()
        self.channels_last = channels_last
        self.params = [p for p in unwrap(model).parameters() if p.requires_grad]

        self.iteration = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.nonfinite_streak = 0
        self.epoch_sums = [0.0, 0.0, 0]  # loc sum, conf sum, finite iterations this epoch
        self.last_eval: dict[str, Any] | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._bar_on = False

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (collective: call on every process)."""
        rng = all_gather_objects({"global": capture_rng(self.device),
                                  "data": self.data.rng_state()})
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": self.schedule.state_dict(),
            "iteration": self.iteration,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batches_per_epoch": self.data.batches_per_epoch,
            "batch_size": self.data.batch_size,
            "world_size": self.dist.world_size,
            "seed": self.data.seed,
            "rng": rng,
            "trainer": {"nonfinite_streak": self.nonfinite_streak,
                        "epoch_sums": list(self.epoch_sums)},
        }

    def load_state_dict(self, state: Mapping[str, Any], load_model: bool = True) -> None:
        """Continue from :meth:`state_dict`'s output (a training checkpoint)."""
        if load_model:
            unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        trainer = state.get("trainer", {})
        self.nonfinite_streak = int(trainer.get("nonfinite_streak", 0))
        same_data = (int(state["batches_per_epoch"]) == self.data.batches_per_epoch
                     and int(state.get("batch_size", self.data.batch_size)) == self.data.batch_size
                     and int(state["world_size"]) == self.dist.world_size
                     and int(state.get("seed", self.data.seed)) == self.data.seed)
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        if same_data:
            self.epoch, self.batch_in_epoch = epoch, batch
            self.epoch_sums = list(trainer.get("epoch_sums", [0.0, 0.0, 0]))
            rng = state.get("rng") or []
            if len(rng) == self.dist.world_size:
                self._pending_rng = rng[self.dist.rank]
        else:
            # Another batch size / dataset / process count: the saved position means nothing.
            log.warning("data, batch size, seed or process count differ from the checkpoint's: "
                        "continuing at the start of the next epoch (not an exact resume)")
            self.epoch, self.batch_in_epoch = epoch + (1 if batch else 0), 0
            self.epoch_sums = [0.0, 0.0, 0]
        theirs = state.get("schedule")
        if theirs and MultiStepWarmup.from_state_dict(theirs) != self.schedule:
            log.warning("the learning-rate schedule differs from the checkpoint's (%s); using "
                        "this run's (%s)", theirs, self.schedule.state_dict())

    def set_position(self, iteration: int) -> None:
        """Start at ``iteration`` with fresh optimizer state (weights-only resume)."""
        self.iteration = int(iteration)
        bpe = self.data.batches_per_epoch
        self.epoch, self.batch_in_epoch = divmod(self.iteration, bpe)

    # ------------------------------------------------------------------ one iteration

    def train_step(self, images: torch.Tensor, targets: Sequence[torch.Tensor]) -> StepResult:
        """Forward, backward and (unless something is not finite) an optimizer step."""
        dev = self.device
        images = images.to(dev, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = [t.to(dev, non_blocking=True) for t in targets]
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast(dev.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            output = self.model(images)
        if self.amp_dtype is not None:
            output = _to_float32(output)
        loss_l, loss_c = self.criterion(output, targets)
        loss = loss_l + loss_c

        # One collective per iteration: mean losses over processes and any stop request.
        stats = torch.stack([loss_l.detach().float(), loss_c.detach().float(),
                             torch.tensor(float(self.stop.requested is not None), device=dev)])
        s_l, s_c, s_stop = all_reduce_sum(stats).tolist()
        ws = self.dist.world_size
        mean_l, mean_c, stop = s_l / ws, s_c / ws, s_stop > 0
        finite = math.isfinite(mean_l) and math.isfinite(mean_c)

        # Backward even when not finite: under DDP every process must join the gradient
        # all-reduce; the (identical) decision to skip the step comes after.
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(mean_l, mean_c, False, False, float("nan"), stop)

        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(_grad_norm(self.params, self.clip_grad))
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skips the step itself on inf/NaN gradients
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale
            return StepResult(mean_l, mean_c, True, stepped, grad_norm, stop)

        grad_norm = float(_grad_norm(self.params, self.clip_grad))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(mean_l, mean_c, False, False, grad_norm, stop)
        self.optimizer.step()
        return StepResult(mean_l, mean_c, True, True, grad_norm, stop)

    # ------------------------------------------------------------------ the loop

    def run(self) -> str:
        """Train until ``max_iter``; returns ``'finished'`` or ``'interrupted'``.

        Raises :class:`NonFiniteLossError` after ``max_nonfinite`` bad iterations in a row.
        """
        main = self.dist.is_main
        if self.iteration >= self.max_iter:
            log.info("iteration %d >= max_iter %d: nothing to train", self.iteration,
                     self.max_iter)
            return "finished"
        from tqdm.auto import tqdm

        # Off a terminal (logs, CI) the log lines every --log_every iterations replace the bar.
        self._bar_on = main and self.progress and sys.stderr.isatty()
        bar = tqdm(total=self.max_iter, initial=self.iteration, unit="it", dynamic_ncols=True,
                   disable=not self._bar_on, desc="train", file=sys.stderr, mininterval=0.5)
        stream = self.data.batches(self.epoch, self.batch_in_epoch)
        # Restored after everything else is built and right before the first batch is read,
        # which is where the uninterrupted run captured it.
        if self._pending_rng is not None:
            restore_rng(self._pending_rng["global"], self.device)
            self.data.load_rng_state(self._pending_rng["data"])
            self._pending_rng = None
        window = _Window()
        self.model.train()
        ips = 0.0
        try:
            while self.iteration < self.max_iter:
                t0 = time.perf_counter()
                try:
                    epoch, batch_index, (images, targets) = next(stream)
                except Exception:
                    if self.stop.requested is None:
                        raise
                    # A signal can also reach data workers; the state is still consistent.
                    log.warning("data loading stopped by %s", self.stop.requested)
                    self._save(final=False)
                    return "interrupted"
                lr = self.schedule(self.iteration)
                set_lr(self.optimizer, lr)
                res = self.train_step(images, targets)
                self.iteration += 1
                self.epoch, self.batch_in_epoch = epoch, batch_index + 1
                n_images = int(images.shape[0]) * self.dist.world_size
                dt = time.perf_counter() - t0
                ips = n_images / dt if dt > 0 else 0.0
                window.add(res, lr, n_images, dt)

                if res.finite:
                    self.nonfinite_streak = 0
                    self.epoch_sums[0] += res.loss_l
                    self.epoch_sums[1] += res.loss_c
                    self.epoch_sums[2] += 1
                else:
                    self._nonfinite(res, lr)

                bar.update(1)
                if self._bar_on:
                    bar.set_postfix_str(
                        f"loss {res.loss_l + res.loss_c:.3f} (loc {res.loss_l:.3f} conf "
                        f"{res.loss_c:.3f}) lr {lr:.2e} {ips:.1f} img/s", refresh=False)
                if self.iteration % self.log_every == 0 or self.iteration == self.max_iter:
                    self._log_window(window, epoch)
                    window = _Window()
                if self.batch_in_epoch >= self.data.batches_per_epoch:
                    self._end_epoch()
                if self.eval_every and (self.iteration % self.eval_every == 0
                                        or self.iteration == self.max_iter):
                    self._evaluate()
                final = self.iteration == self.max_iter
                if (final or res.stop or (self.checkpoint_every
                                          and self.iteration % self.checkpoint_every == 0)):
                    self._save(final=final)
                if res.stop and not final:
                    self._record({"type": "interrupted", "iter": self.iteration,
                                  "signal": self.stop.requested or "remote"})
                    return "interrupted"
            return "finished"
        finally:
            # Closing the stream drops its DataLoader iterator now, which stops the workers;
            # left to the garbage collector, a live iterator makes the exit wait on them forever.
            stream.close()
            bar.close()

    # ------------------------------------------------------------------ helpers

    def _record(self, rec: Mapping[str, Any]) -> None:
        if self.metrics is not None and self.dist.is_main:
            self.metrics.write(rec)

    def _nonfinite(self, res: StepResult, lr: float) -> None:
        self.nonfinite_streak += 1
        what = "loss" if not (math.isfinite(res.loss_l) and math.isfinite(res.loss_c)) \
            else "gradient"
        if self.dist.is_main:
            log.warning("iteration %d: non-finite %s (loc %s, conf %s, grad norm %s, lr %.3g): "
                        "step skipped (%d in a row)", self.iteration, what, res.loss_l,
                        res.loss_c, res.grad_norm, lr, self.nonfinite_streak)
        self._record({"type": "nonfinite", "iter": self.iteration, "what": what,
                      "loss_l": res.loss_l, "loss_c": res.loss_c, "grad_norm": res.grad_norm,
                      "lr": lr, "streak": self.nonfinite_streak})
        if self.nonfinite_streak >= self.max_nonfinite:
            first = self.iteration - self.nonfinite_streak + 1
            raise NonFiniteLossError(
                f"the {what} was NaN/inf for {self.nonfinite_streak} iterations in a row "
                f"(iterations {first}..{self.iteration}); stopping without saving. Lower --lr, "
                f"add --warmup_iters or --clip_grad, or check the data; the last good "
                f"checkpoint is the newest .ckpt in the save folder")

    def _end_epoch(self) -> None:
        loc, conf, n = self.epoch_sums
        if n:
            mean_l, mean_c = loc / n, conf / n
            self._record({"type": "epoch", "epoch": self.epoch, "iter": self.iteration,
                          "loss": mean_l + mean_c, "loss_l": mean_l, "loss_c": mean_c,
                          "iterations": n})
            if self.visdom is not None and self.dist.is_main:
                self.visdom.epoch(self.epoch, mean_l, mean_c)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_sums = [0.0, 0.0, 0]

    def _log_window(self, w: _Window, epoch: int) -> None:
        if not self.dist.is_main:
            return
        rec: dict[str, Any] = {"type": "train", "iter": self.iteration, "epoch": epoch,
                               "lr": w.lr, "img_per_s": w.images_per_s, "skipped": w.skipped}
        if w.n:
            rec.update(loss=(w.loc + w.conf) / w.n, loss_l=w.loc / w.n, loss_c=w.conf / w.n,
                       grad_norm=w.grad_norm)
            if self.visdom is not None:
                self.visdom.iteration(self.iteration, w.loc / w.n, w.conf / w.n)
        self._record(rec)
        if not self._bar_on and w.n:
            log.info("iter %d/%d epoch %d: loss %.4f (loc %.4f conf %.4f) lr %.3g %.1f img/s",
                     self.iteration, self.max_iter, epoch, rec["loss"], rec["loss_l"],
                     rec["loss_c"], w.lr, w.images_per_s)

    def _evaluate(self) -> None:
        # Only rank 0 evaluates (eval_fn may be None elsewhere); every rank meets at the barrier.
        if self.dist.is_main and self.eval_fn is not None:
            rng = capture_rng(self.device)  # evaluation must not shift training randomness
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    result = dict(self.eval_fn(unwrap(self.model), self.iteration))
            except Exception:
                log.exception("evaluation at iteration %d failed; training goes on",
                              self.iteration)
                result = None
            finally:
                restore_rng(rng, self.device)
                self.model.train()
            if result is not None:
                self.last_eval = result
                self._record({"type": "eval", "iter": self.iteration,
                              "seconds": time.perf_counter() - t0, **result})
                numeric = {k: float(v) for k, v in result.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)}
                if self.visdom is not None and "mAP" in numeric:
                    self.visdom.metrics(self.iteration, {"mAP": numeric["mAP"]})
                log.info("evaluation at iteration %d: %s", self.iteration,
                         ", ".join(f"{k} {v:.4f}" for k, v in numeric.items()))
        barrier()

    def _save(self, final: bool) -> None:
        state = self.state_dict()  # every process: the RNG states are gathered
        if self.dist.is_main and self.save_fn is not None:
            self.save_fn(state, self.iteration, final)
        del state


class _Window:
    """Sums over the iterations between two metrics records."""

    def __init__(self) -> None:
        self.n = self.skipped = self.images = 0
        self.loc = self.conf = self.seconds = 0.0
        self.lr = 0.0
        self.grad_norm = float("nan")

    def add(self, res: StepResult, lr: float, images: int, seconds: float) -> None:
        self.lr = lr
        self.images += images
        self.seconds += seconds
        if res.finite:
            self.n += 1
            self.loc += res.loss_l
            self.conf += res.loss_c
            self.grad_norm = res.grad_norm
        else:
            self.skipped += 1

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0
