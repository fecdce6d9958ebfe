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
    assert r["models"] == [] and r["model_checks"] == []  # models only when asked
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


# ---- whole language models ----------------------------------------------------------------------

TINY_MODEL = bench.ModelCase("tiny", 50, 8, (8,), 2, 3)  # the book's Rnnlm structure
TINY_MODELS = (
    TINY_MODEL,
    bench.ModelCase("tiny2", 50, 8, (8, 8), 2, 3),
    bench.ModelCase("tiny-tied", 50, 8, (6, 8), 2, 3, tied=True),
    bench.ModelCase("tiny-rnn", 50, 8, (8, 8), 2, 3, cell="rnn"),
    bench.ModelCase("tiny-gru", 50, 8, (8,), 2, 3, cell="gru"),
)


def _param_arrays(runner):
    if hasattr(runner.model, "parameters"):  # torch
        return [p.detach().numpy().copy() for p in runner.model.parameters()]
    return [np.array(p) for p in runner.params]


@pytest.mark.parametrize("case", TINY_MODELS, ids=lambda c: c.name)
@pytest.mark.parametrize("impl", bench.MODEL_IMPLS)
def test_model_runner_trains(impl, case):
    """One iteration of every implementation's model gives a finite loss near ln V (a fresh
    model) and changes every parameter (the SGD update ran on clipped gradients)."""
    if impl == "torch":
        _need_torch()
    if not bench.supports_model(impl, case):
        with pytest.raises(ValueError, match="torch"):
            bench.torch_lm_from_params(case, bench.fastrnn_model(case).params)
        return
    r = bench.make_model_runner(impl, case)
    before = _param_arrays(r)
    r.iteration()
    after = _param_arrays(r)
    assert np.isfinite(float(r.loss)) and abs(float(r.loss) - np.log(case.V)) < 0.5
    assert len(before) == len(after)
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert all(changed), changed
    # the update is lr * clipped gradient: no parameter moved further than MODEL_MAX_GRAD
    step = np.sqrt(
        sum(float(np.sum((a - b).astype(np.float64) ** 2)) for a, b in zip(after, before))
    )
    assert 0 < step <= bench.MODEL_LR * bench.MODEL_MAX_GRAD * (2.01 if impl == "torch" else 1.01)


@pytest.mark.parametrize("case", TINY_MODELS, ids=lambda c: c.name)
def test_model_runners_same_weights_same_losses(case):
    """fastrnn's model and the book's NumPy model start from the same weights and see the same
    batches: the same losses, iteration after iteration (state carried, weights updated); torch
    the same first loss (afterwards its second LSTM bias vector makes it drift slightly)."""
    fr = bench.make_model_runner("fastrnn", case).losses(4)
    ref = bench.make_model_runner("reference", case).losses(4)
    np.testing.assert_allclose(ref, fr, rtol=1e-5)
    assert len(set(np.round(fr, 6))) > 1  # the batches and the state do change the loss
    bf16 = bench.make_model_runner("fastrnn_bf16", case)
    assert bf16.model.affine.matmul_precision == "medium"
    assert all(layer.matmul_precision == "medium" for layer in bf16.model.stack.layers)
    np.testing.assert_allclose(bf16.losses(4), fr, rtol=1e-2)  # bfloat16 read-out products
    if case.is_book_rnnlm:
        from fastrnn.models import Rnnlm
        from fastrnn.reference.models import Rnnlm as BookRnnlm

        assert isinstance(bench.make_model_runner("fastrnn", case).model, Rnnlm)
        assert isinstance(bench.make_model_runner("reference", case).model, BookRnnlm)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    if bench.supports_model("torch", case):
        th = bench.make_model_runner("torch", case).losses(4)
        assert th[0] == pytest.approx(fr[0], rel=1e-5)
        np.testing.assert_allclose(th, fr, rtol=0.05)


def test_model_case():
    c = bench.ModelCase("x", 100, 16, [32, 32], 4, 5)
    assert c.hidden == (32, 32) and c.layers == "2x32"
    assert c.label == "x (lstm V100 E16 2x32 N4 T5)" and not c.is_book_rnnlm
    # each LSTM 3 x 2 N T 4H (D + H), the read-out 3 x 2 N T H V
    assert c.flops == 3 * 2 * 20 * (4 * 32 * (16 + 32) + 4 * 32 * 64 + 32 * 100)
    assert bench.ModelCase("r", 100, 16, 24, 4, 5, cell="rnn").flops == 3 * 2 * 20 * (
        24 * 40 + 24 * 100
    )
    assert bench.ModelCase("b", 10, 4, (4,), 1, 1).is_book_rnnlm
    p = bench.ModelCase.parse("lstm 100 16 16,24 4 5")
    assert (p.name, p.hidden, p.tied) == ("16+24", (16, 24), False)
    assert bench.ModelCase.parse("lstm 100 16 16,16 4 5 tied").tied
    assert bench.ModelCase(*p.spec) == p  # what a worker rebuilds
    with pytest.raises(ValueError, match="model spec"):
        bench.ModelCase.parse("lstm 100 16 4 5")
    with pytest.raises(ValueError, match="cell"):
        bench.ModelCase("x", 10, 4, (4,), 1, 1, cell="gru_classic")
    with pytest.raises(ValueError, match="tied"):
        bench.ModelCase("x", 10, 4, (5,), 1, 1, tied=True)
    with pytest.raises(ValueError, match=">= 1"):
        bench.ModelCase("x", 10, 0, (5,), 1, 1)
    xs, ts = bench.model_batches(c)[0]
    assert xs.shape == ts.shape == (4, 5) and xs.dtype == np.int32
    np.testing.assert_array_equal(xs[:, 1:], ts[:, :-1])
    assert [x.tolist() for x, _ in bench.model_batches(c)] == [
        x.tolist() for x, _ in bench.model_batches(c)
    ]
    # the defaults: the book's Rnnlm at its own shape, 2x200 and 2x650; quick: the first two
    assert [m.name for m in bench.MODEL_CASES] == ["rnnlm", "2x200", "2x650"]
    assert bench.MODEL_CASES[0].shape == "lstm V10000 E100 1x100 N20 T35"
    assert bench.QUICK_MODEL_CASES == bench.MODEL_CASES[:2]


@pytest.fixture(scope="module")
def model_results():
    return _run_models(TINY_MODELS[:2], ("fastrnn", "reference"))


def _run_models(model_cases, impls):
    """run_bench's model rows only, 2 quick samples each, 1 thread."""
    cfg = bench.BenchConfig(
        cases=(),
        clip_cases=(),
        model_cases=model_cases,
        threads=(1,),
        repeats=2,
        min_time=0.0,
        model_min_time=0.0,
        impls=impls,
        memory=False,
        progress=False,
        command="test",
    )
    return bench.run_bench(cfg)


def test_bf16_model_rows_run_where_the_cpu_has_bf16():
    """--impls fastrnn,fastrnn_bf16: model rows of both and their ratio, or, on a CPU without
    AVX512-BF16, a note and no bf16 row (it would time float32 under the bfloat16 label)."""
    import fastrnn

    r = _run_models(TINY_MODELS[:1], ("fastrnn", "fastrnn_bf16"))
    impls = {m["impl"] for m in r["models"]}
    if fastrnn.bf16_supported():
        assert impls == {"fastrnn", "fastrnn_bf16"}
        assert all(c["ok"] for c in r["model_checks"])
        assert any("fastrnn_bf16/fastrnn" in row for row in r["ratios"])
        assert "fastrnn bf16" in "\n".join(bench.format_model_table(r))
        assert "bfloat16 precision" in bench.format_report(r)
        assert "fastrnn's bfloat16 kernel" in bench.format_machine(r)
    else:
        assert impls == {"fastrnn"}
        assert any("no AVX512-BF16" in n for n in r["meta"]["notes"])
        assert "bfloat16 kernel" not in bench.format_machine(r)
    assert r["layers"] == []  # a model-only implementation adds no layer rows


def test_model_results(model_results):
    r = model_results
    assert {(m["case"], m["impl"]) for m in r["models"]} == {
        (c.label, i) for c in TINY_MODELS[:2] for i in ("fastrnn", "reference")
    }
    peak = r["meta"]["peak"]["gflops"]
    for row in r["models"]:
        assert row["op"] == bench.MODEL_OP and row["median_ms"] > 0 and len(row["samples_ms"]) == 2
        case = next(c for c in TINY_MODELS if c.label == row["case"])
        assert row["flops"] == case.flops and row["hidden"] == list(case.hidden)
        assert row["gflops"] == pytest.approx(case.flops / (row["median_ms"] * 1e-3) / 1e9)
        assert row["pct_peak"] == pytest.approx(100 * row["gflops"] / peak)
    ratios = [x for x in r["ratios"] if x["op"] == bench.MODEL_OP]
    assert len(ratios) == 2 and all(
        x["reference/fastrnn"] > 0 and "fastrnn GF/s" in x and "fastrnn %peak" in x for x in ratios
    )
    assert len(r["model_checks"]) == 2 and all(c["ok"] for c in r["model_checks"])
    assert r["meta"]["config"]["model_impls"] == ["fastrnn", "reference"]
    assert r["layers"] == [] and r["clip"] == []
    json.loads(json.dumps(r))  # what --json writes


def test_model_report(model_results):
    for markdown in (False, True):
        text = bench.format_report(model_results, markdown=markdown)
        assert "whole training iteration" in text
        for c in TINY_MODELS[:2]:
            assert c.label in text
        for col in ("fastrnn ms", "book NumPy ms", "book NumPy/fastrnn", "fastrnn GF/s"):
            assert col in text
        assert "2/2 agree" in text
    md = "\n".join(bench.format_model_table(model_results, markdown=True))
    assert "| model | fastrnn ms | book NumPy ms |" in md and "|---|---:|" in md
    assert bench.format_model_table({"models": []}) == []


def test_model_report_with_torch_and_targets():
    """The table with a torch column (from a results dict), and the issue 18 targets."""
    rnnlm, small = bench.MODEL_CASES[:2]
    rows, ratios = [], []
    for threads in (1, 2):
        for case, ms in (
            (rnnlm, {"fastrnn": 40.0, "reference": 100.0, "torch": 80.0}),
            (small, {"fastrnn": 50.0, "reference": 90.0, "torch": 70.0}),
        ):
            for impl, t in ms.items():
                rows.append(
                    {
                        "threads": threads,
                        "case": case.label,
                        "op": bench.MODEL_OP,
                        "impl": impl,
                        "median_ms": t / threads,
                        "iqr_ms": 0.0,
                        "flops": case.flops,
                    }
                )
            ratios.append(
                {
                    "threads": threads,
                    "case": case.label,
                    "op": bench.MODEL_OP,
                    "reference/fastrnn": ms["reference"] / ms["fastrnn"],
                    "torch/fastrnn": ms["torch"] / ms["fastrnn"],
                }
            )
    results = {
        "meta": {"peak": {"gflops": 100.0}, "config": {"model_impls": list(bench.MODEL_IMPLS)}},
        "models": rows,
        "ratios": ratios,
    }
    bench.add_model_rates(results)
    text = "\n".join(bench.format_model_table(results))
    assert "torch ms" in text and "torch/fastrnn" in text and "torch %peak" in text
    assert "2.50x" in text and "1.40x" in text  # rnnlm vs book; 2x200 vs torch
    assert f"{rnnlm.flops / 0.04 / 1e9:.1f}" in text  # fastrnn's GF/s at 1 thread
    got = {(t["target"], t["threads"]): t for t in bench.evaluate_targets(results)}
    book = "model: book NumPy/fastrnn >= 2.5, book Rnnlm V10000 1x100 N20 T35"
    vs_torch = "model: torch/fastrnn >= 1.5, 2x200 LSTM LM V10000 N20 T20"
    assert got[book, 1]["met"] is True and got[book, 2]["value"] == pytest.approx(2.5)
    assert got[vs_torch, 1]["met"] is False and got[vs_torch, 1]["case"] == small.label
    assert len(got) == 4  # only the default shapes count (rnnlm's torch ratio is no target)


def test_model_command_line_options():
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))

    def cfg(*argv):
        return bench.config_from_args(parser.parse_args(["bench", *argv]))

    assert cfg().model_cases == bench.MODEL_CASES and cfg().model_min_time == 0.5
    quick = cfg("--quick")
    assert quick.model_cases == bench.QUICK_MODEL_CASES and quick.model_min_time == 0.25
    assert [c.name for c in cfg("--models", "rnnlm,2x650").model_cases] == ["rnnlm", "2x650"]
    assert cfg("--quick", "--models", "all").model_cases == bench.MODEL_CASES
    assert cfg("--no-models").model_cases == ()
    custom = cfg("--model", "lstm 50 8 8,8 2 3", "--model-min-time", "0.1", "--no-layers")
    assert custom.model_cases == (bench.ModelCase("2x8", 50, 8, (8, 8), 2, 3),)
    assert custom.model_min_time == 0.1 and custom.cases == ()
    with pytest.raises(SystemExit, match="unknown model"):
        cfg("--models", "rnnlm,3x300")
    with pytest.raises(SystemExit, match="model spec"):
        cfg("--model", "lstm 50 8")


def test_bad_options_stop_before_the_benchmark(tmp_path, capsys):
    from fastrnn.cli import main

    for argv, flag in [
        (["--repeats", "0"], "--repeats"),
        (["--min-time", "-1"], "--min-time"),
        (["--model-min-time", "nan"], "--model-min-time"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["bench", *argv])
        assert exit_.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--shape: .*lstm 1 2 3"):
        main(["bench", "--shape", "lstm 1 2 3"])
    # an unwritable output is found before minutes of measuring, not after
    for flag, path, match in [
        ("--json", tmp_path, "is a directory"),
        ("--markdown", tmp_path / "no" / "x.md", "does not exist"),
        ("--plot", tmp_path / "no" / "x.png", "does not exist"),
    ]:
        with pytest.raises(SystemExit, match=f"{flag} .*{match}"):
            main(["bench", "--shape", "rnn 1 2 3 4", "--no-clip", "--no-models", flag, str(path)])
        assert "layer shapes" not in capsys.readouterr().out
