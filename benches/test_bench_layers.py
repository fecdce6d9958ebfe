"""Time layers and single-step cells: forward and forward+backward, float32, over the shape table
of fastrnn.bench (rnn / lstm / gru = reset_after=True / gru_classic = reset_after=False), for
fastrnn, fastrnn.reference and torch (when importable; no torch equivalent of the classic GRU)."""

import numpy as np
import pytest

from fastrnn import bench

IMPLS = ("fastrnn", "reference", "torch")
OPS = ("fwd", "fwdbwd")


def _need_torch():
    """torch, or skip (any ImportError: a broken install counts as absent)."""
    try:
        import torch
    except ImportError as exc:
        pytest.skip(f"torch not importable: {exc}")
    return torch


def _need(impl, case):
    if impl == "torch":
        _need_torch()
    if not bench.supports(impl, case):
        pytest.skip(f"{impl} has no equivalent of {case.cell}")


def _run(benchmark, fn, group):
    benchmark.group = group
    fn()  # warm: first call allocates caches
    benchmark(fn)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", bench.DEFAULT_CASES, ids=lambda c: c.name.replace(" ", "_"))
def test_time_layer(benchmark, case, impl, op):
    _need(impl, case)
    runner = bench.make_layer_runner(impl, case)
    _run(benchmark, getattr(runner, op), f"layer {case.name} {op}")


# ---- single-step cells -----------------------------------------------------------------------

CELL_CASES = tuple(
    bench.Case.parse(s)
    for s in (
        "lstm 20 1 100 100",
        "lstm 64 1 256 256",
        "lstm 1 1 128 128",
        "lstm 4 1 650 650",
        "lstm 20 1 650 650",
        "gru 20 1 100 100",
        "gru_classic 20 1 100 100",
        "gru 64 1 256 256",
        "rnn 20 1 100 100",
        "rnn 64 1 256 256",
    )
)


class _CellRunner:
    """One step of RNN/LSTM/GRU: fwd() = forward, fwdbwd() = forward then backward."""

    def __init__(self, impl, case):
        Wx, Wh, b, xs, dhs = bench.make_weights(case)
        N, H = case.N, case.H
        self.x, self.dh = xs[:, 0], dhs[:, 0]
        self.h = np.zeros((N, H), np.float32)
        self.c = np.zeros((N, H), np.float32)
        self.dc = np.ones((N, H), np.float32)
        self.cell = case.cell
        if impl == "torch":
            import torch

            self.torch = torch
            self.net = bench.torch_rnn_from_weights(case.cell, Wx, Wh, b, single_step=True)
            self.tx = torch.from_numpy(self.x).requires_grad_(True)
            self.th = torch.from_numpy(self.h).requires_grad_(True)
            self.tc = torch.from_numpy(self.c).requires_grad_(True)
            self.tdh = torch.from_numpy(self.dh)
            self.tdc = torch.from_numpy(self.dc)
            self.fwd, self.fwdbwd = self._torch_fwd, self._torch_fwdbwd
            return
        if impl == "fastrnn":
            import fastrnn as mod
        else:
            from fastrnn import reference as mod
        if case.cell == "lstm":
            self.layer = mod.LSTM(Wx, Wh, b)
        elif case.cell == "rnn":
            self.layer = mod.RNN(Wx, Wh, b)
        else:
            self.layer = mod.GRU(Wx, Wh, b, reset_after=(case.cell == "gru"))

    def fwd(self):
        if self.cell == "lstm":
            return self.layer.forward(self.x, self.h, self.c)
        return self.layer.forward(self.x, self.h)

    def fwdbwd(self):
        self.fwd()
        if self.cell == "lstm":
            return self.layer.backward(self.dh, self.dc)
        return self.layer.backward(self.dh)

    def _torch_fwd(self):
        if self.cell == "lstm":
            return self.net(self.tx, (self.th, self.tc))
        return self.net(self.tx, self.th)

    def _torch_fwdbwd(self):
        self.net.zero_grad(set_to_none=True)
        for t in (self.tx, self.th, self.tc):
            t.grad = None
        out = self._torch_fwd()
        if self.cell == "lstm":
            self.torch.autograd.backward(out, (self.tdh, self.tdc))
        else:
            out.backward(self.tdh)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CELL_CASES, ids=lambda c: f"{c.cell}_cell_N{c.N}_D{c.D}_H{c.H}")
def test_cell(benchmark, case, impl, op):
    _need(impl, case)
    runner = _CellRunner(impl, case)
    _run(benchmark, getattr(runner, op), f"cell {case.cell} N{case.N} D{case.D} H{case.H} {op}")


# ---- one generation step ------------------------------------------------------------------------
# Text generation feeds one token at a time: a (1, 1, D) forward.  A call this small must not pay
# for preparing a long sequence (packing Wh once cost 2x the NumPy layer at H650 before the
# kernels learned to skip it for one step or one row).

STEP_CASES = tuple(bench.Case.parse(s) for s in ("lstm 1 1 100 100", "lstm 1 1 650 650"))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c.cell}_step_N1_H{c.H}")
def test_generation_step(benchmark, case, impl):
    _need(impl, case)
    runner = bench.make_layer_runner(impl, case)
    _run(benchmark, runner.fwd, f"generation step {case.cell} H{case.H} fwd")
