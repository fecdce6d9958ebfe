"""The benchmark instrument (fastrnn/bench/) in a tiny mode: structure of its results, the
torch weight mapping, the GEMM floor's products, the rates against the FMA peak and the clip
runners.  Fast: tiny shapes, 2 rounds."""

import argparse
import json

import numpy as np
import pytest

import fastrnn
from fastrnn import bench

TINY = (
    bench.Case("lstm", 2, 3, 4, 5),
    bench.Case("gru", 2, 3, 4, 5),
    bench.Case("gru_classic", 1, 3, 4, 5),
    bench.Case("rnn", 1, 3, 4, 5),
)
TINY_CLIP = (bench.ClipCase("clip tiny", ((10,), (3, 4), (7,))),)


def _need_torch():
    """torch, or skip (any ImportError: a broken install counts as absent)."""
    try:
        import torch
    except ImportError as exc:
        pytest.skip(f"torch not importable: {exc}")
    return torch


@pytest.fixture(scope="module")
def tiny_results():
    cfg = bench.BenchConfig(
        cases=TINY,
        clip_cases=TINY_CLIP,
        threads=(1,),
        repeats=2,
        min_time=0.0,
        impls=("fastrnn", "reference", "floor"),
        progress=False,
        command="test",
    )
    return bench.run_bench(cfg)


def test_results_structure(tiny_results):
    r = tiny_results
    impls = ("fastrnn", "reference", "floor")
    assert len(r["layers"]) == len(TINY) * len(bench.OPS) * len(impls)
    for row in r["layers"]:
        assert {
            "threads",
            "case",
            "op",
            "impl",
            "median_ms",
            "samples_ms",
            "calls_per_sample",
            "N",
            "T",
            "D",
            "H",
            "cell",
        } <= set(row)
        assert len(row["samples_ms"]) == 2 and row["calls_per_sample"] >= 1
        if row["impl"] != "floor":  # the floor is net of dispatch: may be ~0 when tiny
            assert row["median_ms"] > 0
    # clip: fastrnn, reference and the memory floor (torch not started here)
    assert {row["impl"] for row in r["clip"]} == {"fastrnn", "reference", "floor"}
    ratios = {(x["case"], x["op"]): x for x in r["ratios"]}
    for case in TINY:
        for op in bench.OPS:
            assert {"reference/fastrnn", "fastrnn/floor"} <= set(ratios[case.name, op])
    assert "reference/fastrnn" in ratios["clip tiny", "clip"]
    # every implementation computes what fastrnn computes
    assert r["checks"] and all(c["ok"] for c in r["checks"])
    assert {(m["case"], m["impl"]) for m in r["memory"]} == {
        (c.name, i) for c in TINY for i in ("fastrnn", "reference")
    }
    assert all(m["peak_bytes"] > 0 for m in r["memory"])
    meta = r["meta"]
    assert meta["config"]["repeats"] == 2 and meta["command"] == "test"
    assert any("openblas" == b.get("internal_api") for b in meta["blas"]) or not meta["blas"]
    json.loads(json.dumps(r))  # what --json writes


def test_report_text(tiny_results):
    text = bench.format_report(tiny_results)
    for case in TINY:
        assert case.name in text
    for col in (
        "fastrnn ms",
        "reference ms",
        "floor ms",
        "reference/fastrnn",
        "fastrnn/floor",
        "clip tiny",
        "peak B/NTH",
    ):
        assert col in text
    md = bench.format_report(tiny_results, markdown=True)
    assert "| case |" in md
    assert "CPU:" in bench.format_machine(tiny_results)


def test_rates_against_the_measured_peak(tiny_results):
    peak = tiny_results["meta"]["peak"]
    assert peak["gflops"] > 0.5 and peak["kernel"] in ("avx512", "avx2", "portable")
    for row in tiny_results["layers"]:
        case = bench.Case(row["cell"], row["N"], row["T"], row["D"], row["H"])
        if row["median_ms"] > 0:
            assert row["gflops"] == pytest.approx(
                case.flops(row["op"]) / (row["median_ms"] * 1e-3) / 1e9
            )
            assert row["pct_peak"] == pytest.approx(100 * row["gflops"] / peak["gflops"])
    text = bench.format_report(tiny_results)
    for col in ("fastrnn GF/s", "fastrnn %peak", "GF/s in float32"):
        assert col in text
    assert "FMA peak probe" in bench.format_machine(tiny_results)


def test_case_flops():
    # LSTM N2 T3 D4 H5: G = 20; forward 2 * N T G (D + H) = 2 * 6 * 20 * 9
    case = bench.Case("lstm", 2, 3, 4, 5)
    assert case.flops("fwd") == 2 * 6 * 20 * 9
    assert case.flops("fwdbwd") == 3 * case.flops("fwd")
    assert bench.Case("rnn", 2, 3, 4, 5).flops("fwd") == 2 * 6 * 5 * 9
    with pytest.raises(ValueError, match="op"):
        case.flops("clip")


def test_rates_per_thread_count():
    # at 2 threads the percent is against twice the one-core peak; torch's rate is copied too
    results = {
        "meta": {"peak": {"gflops": 100.0}},
        "layers": [
            {
                "threads": t,
                "case": "rnn N2 T3 D4 H5",
                "op": "fwd",
                "impl": impl,
                "cell": "rnn",
                "N": 2,
                "T": 3,
                "D": 4,
                "H": 5,
                "median_ms": 1e-3,
            }
            for t in (1, 2)
            for impl in ("fastrnn", "torch")
        ],
        "ratios": [{"threads": t, "case": "rnn N2 T3 D4 H5", "op": "fwd"} for t in (1, 2)],
    }
    bench.add_rates(results)
    gflops = 540 / 1e-6 / 1e9  # 540 FLOPs in 1 microsecond
    r1, r2 = results["ratios"]
    assert r1["fastrnn GF/s"] == pytest.approx(gflops) == r1["torch GF/s"]
    assert r1["fastrnn %peak"] == pytest.approx(gflops)  # of 100 GF/s
    assert r2["fastrnn %peak"] == pytest.approx(gflops / 2)
    no_peak = {"layers": [dict(results["layers"][0])], "ratios": []}
    no_peak["layers"][0].pop("gflops"), no_peak["layers"][0].pop("pct_peak")
    bench.add_rates(no_peak)
    assert "gflops" in no_peak["layers"][0] and "pct_peak" not in no_peak["layers"][0]


def test_plot(tiny_results, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    bench.plot(tiny_results, str(out))
    assert out.stat().st_size > 1000


def test_targets_evaluate():
    results = {
        "ratios": [
            {
                "threads": 1,
                "case": "lstm N20 T35 D100 H100",
                "op": "fwdbwd",
                "torch/fastrnn": 1.2,
                "reference/fastrnn": 2.0,
                "fastrnn/floor": 1.2,
            },
            {"threads": 1, "case": "clip LM 13.3M floats", "op": "clip", "fastrnn/floor": 1.1},
        ]
    }
    got = {(t["target"], t["case"]): t["met"] for t in bench.evaluate_targets(results)}
    assert (
        got[("torch/fastrnn >= 1.1, LSTM H <= 128 (incl. batch 1)", "lstm N20 T35 D100 H100")]
        is True
    )
    assert got[("reference/fastrnn >= 3, LSTM N20 T35 H100", "lstm N20 T35 D100 H100")] is False
    assert got[("fastrnn/floor <= 1.3, small and batch-1 shapes", "lstm N20 T35 D100 H100")]
    assert got[("clip: fastrnn/floor <= 1.15, LM 13.3M", "clip LM 13.3M floats")] is True


def test_command_line_options():
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "bench",
            "--quick",
            "--threads",
            "1,2",
            "--shapes",
            "lstm,rnn N20",
            "--json",
            "x.json",
            "--repeats",
            "2",
        ]
    )
    assert args.func is bench.run
    cfg = bench.config_from_args(args)
    assert cfg.threads == (1, 2) and cfg.repeats == 2 and cfg.quick
    assert cfg.cases and all(c.cell == "lstm" or c.name.startswith("rnn N20 ") for c in cfg.cases)
    args = parser.parse_args(["bench", "--shape", "gru 3 4 5 6", "--no-clip"])
    cfg = bench.config_from_args(args)
    assert cfg.cases == (bench.Case("gru", 3, 4, 5, 6),) and cfg.clip_cases == ()
    assert bench.filter_cases(bench.DEFAULT_CASES, "N1") == (bench.Case("lstm", 1, 200, 128, 128),)
    assert all(c.cell == "gru" for c in bench.filter_cases(bench.DEFAULT_CASES, "gru"))
    with pytest.raises(ValueError):
        bench.Case.parse("lstm 1 2 3")


@pytest.mark.parametrize("spec", ["lstm 3 4 5 6", "gru 1 4 5 6", "rnn 2 3 5 4"])
def test_gemm_floor_products(spec):
    """The floor computes the products it claims (incl. the batch-1 GEMV path)."""
    case = bench.Case.parse(spec)
    fl = bench.GemmFloor(case)
    out = fl.outputs()
    N, T = case.N, case.T
    X, Hs, dG, Wx, Wh = (a.astype(np.float64) for a in (fl.X, fl.Hs, fl.dG, fl.Wx, fl.Wh))
    G = X @ Wx
    for t in range(T):
        G[t * N : (t + 1) * N] += Hs[t * N : (t + 1) * N] @ Wh
    np.testing.assert_allclose(out["G"], G, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["dh"], dG[:N] @ Wh.T, rtol=1e-4, atol=1e-5)  # last: t = 0
    np.testing.assert_allclose(out["dWx"], X.T @ dG, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["dWh"], Hs.T @ dG, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["dX"], dG @ Wx.T, rtol=1e-4, atol=1e-5)
    overhead = fl.measure_call_overhead(rounds=2, calls=50)
    assert all(0 < v < 1e-3 for v in overhead.values())
    assert 0 < fl.dispatch_cost("fwd") < fl.dispatch_cost("fwdbwd")


@pytest.mark.parametrize("impl", ["fastrnn", "reference", "floor", "torch", "torch_loop"])
def test_clip_runner_really_clips(impl):
    if impl.startswith("torch"):
        _need_torch()
    r = bench.make_clip_runner(impl, TINY_CLIP[0])
    before = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in r.grads))
    r()
    r()
    after = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in r.grads))
    assert after == pytest.approx(before * bench.CLIP_DECAY**2, rel=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_weight_mapping(cell):
    """torch.nn.LSTM/GRU/RNN built from fastrnn's weights gives fastrnn's outputs and gradients."""
    torch = _need_torch()
    case = bench.Case(cell, 3, 4, 5, 6)
    Wx, Wh, b, xs, dhs = bench.make_weights(case)
    layer = bench._numpy_layer(fastrnn, case, Wx, Wh, b)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    net = bench.torch_rnn_from_weights(cell, Wx, Wh, b)
    x = torch.from_numpy(xs).requires_grad_(True)
    out, _ = net(x)
    out.backward(torch.from_numpy(dhs))
    np.testing.assert_allclose(out.detach().numpy(), hs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), dxs, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(layer.grads, bench.torch_grads_to_ours(cell, net)):
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    # and the single-step torch cell matches fastrnn's cell
    cellnet = bench.torch_rnn_from_weights(cell, Wx, Wh, b, single_step=True)
    h0 = np.zeros((3, 6), np.float32)
    if cell == "lstm":
        want = fastrnn.LSTM(Wx, Wh, b).forward(xs[:, 0], h0, h0)[0]
        got = cellnet(torch.from_numpy(xs[:, 0]))[0]
    else:
        cls = fastrnn.GRU(Wx, Wh, b, reset_after=True) if cell == "gru" else fastrnn.RNN(Wx, Wh, b)
        want = cls.forward(xs[:, 0], h0)
        got = cellnet(torch.from_numpy(xs[:, 0]))
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-4, atol=1e-5)


def test_clip_floor_threaded_scale_pass():
    """At 2 threads the memory floor splits its scale pass; the result is the same scaling."""
    big = bench.ClipCase("clip big", ((bench.PARALLEL_MIN + 5,),))
    r = bench.make_clip_runner("floor", big)
    before = r.grads[0].copy()
    r.set_threads(2)
    r()
    np.testing.assert_allclose(r.grads[0], before * np.float32(bench.CLIP_DECAY), rtol=1e-6)
    r.set_threads(1)


def test_quiesce_waits_for_a_busy_thread():
    """A thread computing in C (as an idle BLAS worker spins: no system calls) must hold up
    _quiesce until it stops, so that it never runs into the next implementation's timings."""
    import threading
    import time

    from threadpoolctl import threadpool_limits

    a = np.ones((200, 200), np.float32)
    stop = time.perf_counter() + 0.15

    def busy():
        while time.perf_counter() < stop:
            a @ a  # releases the GIL: computes beside us

    with threadpool_limits(1):
        t = threading.Thread(target=busy)
        t.start()
        time.sleep(0.01)
        waited = bench._quiesce(limit=2.0)
        alive = t.is_alive()
        t.join()
    assert not alive, f"_quiesce returned after {waited:.3f} s while the thread still ran"
    assert waited >= 0.1
