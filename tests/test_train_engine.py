"""The training loop on a toy model (fast): exact resumption, non-finite losses, stop requests,
visdom failures."""

from __future__ import annotations

import io
import logging
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from ssd.training.checkpoint import CheckpointWriter, NonFiniteWeightsError
from ssd.training.engine import NonFiniteLossError, StopSignal, Trainer
from ssd.training.metrics import MetricsLog, read_metrics
from ssd.training.sampler import EpochLoader, ResumableSampler
from ssd.training.schedule import MultiStepWarmup
from ssd.training.visdom_logger import VisdomLogger


class _Augment:
    """A random transform with its own generator and state_dict, like SSDAugmentation; it also
    draws from the global numpy and torch RNGs, which the trainer must restore too."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * self.rng.uniform(0.5, 1.5) + np.random.normal() * 0.1 + float(torch.rand(()))

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


class _Toy(torch.utils.data.Dataset):
    def __init__(self, n: int = 5, seed: int = 0) -> None:
        g = np.random.default_rng(100)
        self.x = g.normal(size=(n, 3)).astype(np.float32)
        self.y = g.normal(size=(n, 2)).astype(np.float32)
        self.transform = _Augment(seed)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(self.transform(self.x[i]).astype(np.float32)), self.y[i]


def _collate(batch):
    return torch.stack([b[0] for b in batch]), [torch.from_numpy(b[1])[None] for b in batch]


def _criterion(out, targets):
    t = torch.cat(targets)
    return ((out[:, 0] - t[:, 0]) ** 2).mean(), ((out[:, 1] - t[:, 1]) ** 2).mean()


def _trainer(max_iter, *, seed=0, save_fn=None, criterion=_criterion, checkpoint_every=0,
             metrics=None, **kw):
    torch.manual_seed(seed)  # as train.py seeds a run
    np.random.seed(seed)
    ds = _Toy(seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=ResumableSampler(ds, seed=seed),
                                         collate_fn=_collate, generator=torch.Generator())
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = MultiStepWarmup(0.1, (4,), 0.1, warmup_iters=2, warmup_factor=0.5)
    return Trainer(model, criterion, opt, EpochLoader(loader, seed=seed), sched,
                   max_iter=max_iter, device=torch.device("cpu"), save_fn=save_fn,
                   checkpoint_every=checkpoint_every, progress=False, metrics=metrics, **kw)


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("stop_at", [1, 3, 4, 5])  # mid-epoch, epoch end, after a decay
def test_resumed_run_is_bit_identical(stop_at):
    ref = _trainer(8)
    assert ref.run() == "finished"

    saved = {}
    first = _trainer(stop_at, save_fn=lambda st, it, final: saved.update({it: _roundtrip(st)}),
                     checkpoint_every=1)
    first.run()
    assert sorted(saved) == list(range(1, stop_at + 1))
    resumed = _trainer(8)
    # "Killed" after checkpoint `stop_at`: a new process is in another random state.
    np.random.seed(12345)
    torch.manual_seed(999)
    resumed.data.loader.dataset.transform.rng.random(7)
    resumed.load_state_dict(saved[stop_at])
    assert resumed.iteration == stop_at
    assert resumed.run() == "finished"

    for a, b in zip(ref.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ref.optimizer.state.values(), resumed.optimizer.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert (resumed.epoch, resumed.batch_in_epoch) == (ref.epoch, ref.batch_in_epoch)


def test_without_rng_restore_the_run_differs():
    # Guards the test above: the data randomness really matters to the result.
    ref = _trainer(6)
    ref.run()
    saved = {}
    _trainer(3, save_fn=lambda st, it, final: saved.update({it: _roundtrip(st)}),
             checkpoint_every=3).run()
    state = dict(saved[3])
    state["rng"] = []  # no RNG states: only weights/optimizer/position restored
    resumed = _trainer(6)
    resumed.load_state_dict(state)
    resumed.run()
    assert not torch.equal(ref.model.weight, resumed.model.weight)


class _NanAt:
    """The toy criterion, but non-finite on the given (1-based) calls."""

    def __init__(self, bad_calls):
        self.bad, self.calls = set(bad_calls), 0

    def __call__(self, out, targets):
        self.calls += 1
        loss_l, loss_c = _criterion(out, targets)
        if self.calls in self.bad:
            loss_c = loss_c * float("nan")
        return loss_l, loss_c


def test_nonfinite_loss_skips_the_step_and_is_logged(tmp_path):
    weights = {}
    metrics = MetricsLog(tmp_path / "m.jsonl")
    tr = _trainer(6, criterion=_NanAt({3, 4}), checkpoint_every=1, metrics=metrics,
                  save_fn=lambda st, it, final: weights.update(
                      {it: {k: v.clone() for k, v in st["model"].items()}}))
    assert tr.run() == "finished"
    metrics.close()
    # Iterations 3 and 4 changed nothing; the others did.
    assert all(torch.equal(weights[2][k], weights[4][k]) for k in weights[2])
    assert not torch.equal(weights[4]["weight"], weights[5]["weight"])
    assert all(torch.isfinite(v).all() for w in weights.values() for v in w.values())
    bad = [r for r in read_metrics(tmp_path / "m.jsonl") if r["type"] == "nonfinite"]
    assert [(r["iter"], r["streak"]) for r in bad] == [(3, 1), (4, 2)]
    assert tr.nonfinite_streak == 0


def test_k_nonfinite_losses_in_a_row_stop_with_a_clear_message():
    saves = []
    tr = _trainer(20, criterion=_NanAt(range(3, 100)), max_nonfinite=4, checkpoint_every=1,
                  save_fn=lambda st, it, final: saves.append(it))
    with pytest.raises(NonFiniteLossError, match="4 iterations in a row.*3..6"):
        tr.run()
    assert tr.iteration == 6
    assert saves == [1, 2, 3, 4, 5]  # no checkpoint for the iteration that stopped the run


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_nonfinite_gradient_with_finite_loss_is_skipped():
    def crit(out, targets):
        return _criterion(_InfGrad.apply(out), targets)

    tr = _trainer(2, criterion=crit, max_nonfinite=5)
    before = tr.model.weight.detach().clone()
    tr.run()
    assert torch.equal(before, tr.model.weight) and tr.nonfinite_streak == 2


def test_checkpoint_writer_never_writes_nan_weights(tmp_path):
    writer = CheckpointWriter(tmp_path, "toy", "VOC", 300)
    tr = _trainer(2, save_fn=writer, checkpoint_every=1)
    with torch.no_grad():
        tr.model.bias.fill_(float("nan"))  # weights broken behind the loop's back
    with pytest.raises(NonFiniteWeightsError, match="bias"):
        tr.run()
    assert not list(tmp_path.glob("*.ckpt"))


def test_sigint_saves_a_checkpoint_and_stops():
    saves = []
    stop = StopSignal()

    class _SignalOnCall3:
        calls = 0

        def __call__(self, out, targets):
            self.calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C mid-iteration
            return _criterion(out, targets)

    tr = _trainer(50, criterion=_SignalOnCall3(), stop=stop,
                  save_fn=lambda st, it, final: saves.append((it, final)))
    previous = signal.getsignal(signal.SIGINT)
    with stop.installed():
        assert tr.run() == "interrupted"
    assert signal.getsignal(signal.SIGINT) is previous
    assert saves == [(3, False)] and tr.iteration == 3 and stop.requested == "SIGINT"


class _BrokenClient:
    def __init__(self):
        self.calls = 0

    def win_exists(self, win, env=None):
        self.calls += 1
        raise ConnectionError("server went away")

    def line(self, **kw):
        self.calls += 1
        raise ConnectionError("server went away")


def test_visdom_failure_is_one_warning_and_training_goes_on(caplog):
    client = _BrokenClient()
    vis = VisdomLogger(client=client, prefix="toy")
    with caplog.at_level(logging.WARNING, logger="ssd.training.visdom_logger"):
        tr = _trainer(4, visdom=vis, log_every=1)
        assert tr.run() == "finished"
    warnings = [r for r in caplog.records if "visdom" in r.getMessage()]
    assert len(warnings) == 1 and "server went away" in warnings[0].getMessage()
    assert client.calls == 1 and not vis.enabled


def test_bf16_autocast_trains_on_cpu():
    tr = _trainer(3, amp="bf16")
    before = tr.model.weight.detach().clone()
    seen = []
    model_forward = tr.model.forward
    tr.model.forward = lambda x: seen.append(model_forward(x).dtype) or model_forward(x)
    assert tr.run() == "finished"
    assert seen and all(d == torch.bfloat16 for d in seen)  # autocast was on
    assert tr.model.weight.dtype == torch.float32 and not torch.equal(before, tr.model.weight)
    assert torch.isfinite(tr.model.weight).all()
