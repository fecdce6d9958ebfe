"""Language models (fastrnn.models.lm) and stacked layers (fastrnn.layers.stack).

- the book's Rnnlm and BetterRnnlm against the plain NumPy book-style models of
  fastrnn.reference.models (same seed, same weights: losses and gradients equal to float32
  rounding, also through several updates);
- the calls the book's RnnlmTrainer and eval_perplexity make, reimplemented here in short, run on
  both models unchanged (remove_duplicate finds the tied pair, training lowers the loss, the
  fastrnn and NumPy models follow the same perplexities);
- float64 central finite differences of whole models (tied, projected, residual, dense, GRU/RNN
  cells, every dropout kind with its masks fixed by rebuilding from the same seed) and of Stack;
- a 6-layer stack that learns a synthetic task with residual connections and not without;
- persistence (get_config/from_config, save_params/load_params), state, train_flg, dtypes;
- bad configurations and inputs: clear errors;
- no activation-sized allocations after the first iterations (tracemalloc).
"""

import inspect
import json
import tracemalloc

import numpy as np
import pytest
from conftest import central_difference

import fastrnn
from fastrnn import reference as ref
from fastrnn.layers import Stack, TimeGRU, TimeLSTM, TimeRNN
from fastrnn.models import BetterRnnlm, LanguageModel, Rnnlm
from fastrnn.reference import models as ref_models
from fastrnn.train import SGD

H_MASK = "h_mask" in inspect.signature(TimeLSTM.forward).parameters
needs_h_mask = pytest.mark.skipif(not H_MASK, reason="recurrent layers without h_mask (vd)")


def word_ids(rng, V, N, T):
    return rng.integers(0, V, (N, T)).astype(np.int32)


# ---- the book's trainer, reduced to the calls it makes --------------------------------------


def book_remove_duplicate(params, grads):
    """The book's remove_duplicate (common/trainer.py): shared arrays, or transposes with equal
    values, merged into one entry with summed gradients."""
    params, grads = params[:], grads[:]
    while True:
        found = False
        for i in range(len(params) - 1):
            for j in range(i + 1, len(params)):
                if params[i] is params[j]:
                    grads[i] += grads[j]
                    found = True
                elif (
                    params[i].ndim == 2
                    and params[j].ndim == 2
                    and params[i].T.shape == params[j].shape
                    and np.all(params[i].T == params[j])
                ):
                    grads[i] += grads[j].T
                    found = True
                if found:
                    params.pop(j)
                    grads.pop(j)
                    break
            if found:
                break
        if not found:
            return params, grads


def book_clip_grads(grads, max_norm):
    total = sum(np.sum(g**2) for g in grads)
    rate = max_norm / (np.sqrt(total) + 1e-6)
    if rate < 1:
        for g in grads:
            g *= rate


def book_fit(model, optimizer, corpus, batch_size, time_size, max_grad, iters):
    """RnnlmTrainer.fit's calls: get_batch's layout, forward, backward, remove_duplicate,
    clip_grads, optimizer.update.  Returns the losses."""
    xs, ts = corpus[:-1], corpus[1:]
    jump = len(xs) // batch_size
    offsets = [i * jump for i in range(batch_size)]
    time_idx, losses = 0, []
    for _ in range(iters):
        bx = np.empty((batch_size, time_size), dtype="i")
        bt = np.empty((batch_size, time_size), dtype="i")
        for t in range(time_size):
            for i, off in enumerate(offsets):
                bx[i, t] = xs[(off + time_idx) % len(xs)]
                bt[i, t] = ts[(off + time_idx) % len(xs)]
            time_idx += 1
        loss = model.forward(bx, bt)
        model.backward()
        params, grads = book_remove_duplicate(model.params, model.grads)
        book_clip_grads(grads, max_grad)
        optimizer.update(params, grads)
        losses.append(float(loss))
    return losses


def book_eval_perplexity(model, corpus, batch_size=4, time_size=5):
    """eval_perplexity's calls: forward(xs, ts, train_flg=False), TypeError fallback."""
    max_iters = (len(corpus) - 1) // (batch_size * time_size)
    jump = (len(corpus) - 1) // batch_size
    total = 0.0
    for it in range(max_iters):
        xs = np.zeros((batch_size, time_size), dtype=np.int32)
        ts = np.zeros((batch_size, time_size), dtype=np.int32)
        offsets = [it * time_size + i * jump for i in range(batch_size)]
        for t in range(time_size):
            for i, off in enumerate(offsets):
                xs[i, t] = corpus[(off + t) % len(corpus)]
                ts[i, t] = corpus[(off + t + 1) % len(corpus)]
        try:
            loss = model.forward(xs, ts, train_flg=False)
        except TypeError:
            loss = model.forward(xs, ts)
        total += loss
    return float(np.exp(total / max_iters))


def toy_corpus(V, n, seed=0):
    """A corpus with structure to learn: mostly w -> (3w + 1) mod V, sometimes random."""
    rng = np.random.default_rng(seed)
    out = [0]
    for _ in range(n - 1):
        out.append((3 * out[-1] + 1) % V if rng.random() < 0.8 else int(rng.integers(V)))
    return np.array(out, dtype=np.int32)


@pytest.mark.parametrize("book", ["Rnnlm", "BetterRnnlm"])
def test_book_trainer_runs_fastrnn_and_numpy_models_alike(book):
    V, D = 23, 10
    corpus = toy_corpus(V, 600)
    runs = {}
    for name, module in (("fastrnn", fastrnn.models), ("numpy", ref_models)):
        if book == "Rnnlm":
            model = getattr(module, book)(V, D, 12, seed=5)
        else:  # dropout 0: the two models' masks are not the same draws
            model = getattr(module, book)(V, D, D, 0.0, seed=5)
        losses = book_fit(
            model, SGD(lr=10.0), corpus, batch_size=4, time_size=5, max_grad=0.25, iters=100
        )
        model.reset_state()
        runs[name] = (losses, book_eval_perplexity(model, corpus), model)
    (lf, pf, mf), (ln, pn, _) = runs["fastrnn"], runs["numpy"]
    assert lf[0] == pytest.approx(np.log(V), rel=0.02)  # starts uniform
    assert np.mean(lf[-10:]) < 0.8 * np.mean(lf[:10])  # and learns
    np.testing.assert_allclose(lf, ln, rtol=2e-4)
    assert pf == pytest.approx(pn, rel=2e-4)
    if book == "BetterRnnlm":
        # remove_duplicate merged the tied pair; the view still shares the embedding's memory
        params, _ = book_remove_duplicate(mf.params, mf.grads)
        assert len(params) == len(mf.params) - 1
        assert np.shares_memory(mf.params[7], mf.params[0])
        np.testing.assert_array_equal(mf.params[7], mf.params[0].T)


def test_book_model_params_lists_as_the_book():
    m = Rnnlm(30, 6, 7, seed=0)
    assert [p.shape for p in m.params] == [(30, 6), (6, 28), (7, 28), (28,), (7, 30), (30,)]
    b = BetterRnnlm(30, 8, 8, seed=0)
    assert [p.shape for p in b.params] == [
        (30, 8),
        (8, 32),
        (8, 32),
        (32,),
        (8, 32),
        (8, 32),
        (32,),
        (8, 30),
        (30,),
    ]
    assert b.params[7].base is b.params[0] or np.shares_memory(b.params[7], b.params[0])
    assert [g.shape for g in b.grads] == [p.shape for p in b.params]
    assert all(p.dtype == np.float32 for p in m.params + b.params)
    for model in (m, b):  # the book's initialisation: same seed, same arrays
        twin = (
            ref_models.Rnnlm(30, 6, 7, seed=0)
            if model is m
            else ref_models.BetterRnnlm(30, 8, 8, seed=0)
        )
        for p, q in zip(model.params, twin.params):
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_book_models_equal_reference_models(dtype):
    rng = np.random.default_rng(1)
    V, D, H, N, T = 40, 8, 8, 3, 6
    for fast, slow in (
        (Rnnlm(V, D, H, seed=2, dtype=dtype), ref_models.Rnnlm(V, D, H, seed=2, dtype=dtype)),
        (
            BetterRnnlm(V, D, H, 0.0, seed=2, dtype=dtype),
            ref_models.BetterRnnlm(V, D, H, 0.0, seed=2, dtype=dtype),
        ),
    ):
        tol = 2e-6 if dtype == np.float32 else 1e-12
        for _ in range(3):  # stateful: the carried state must match too
            xs, ts = word_ids(rng, V, N, T), word_ids(rng, V, N, T)
            assert fast.forward(xs, ts) == pytest.approx(slow.forward(xs, ts), rel=tol)
            fast.backward()
            slow.backward()
            for g, h in zip(fast.grads, slow.grads):
                np.testing.assert_allclose(g, h, rtol=50 * tol, atol=50 * tol * np.abs(h).max())
        # eval mode with dropout configured: no masks, the same scores
        b1 = BetterRnnlm(V, D, H, 0.5, seed=3, dtype=dtype)
        b2 = ref_models.BetterRnnlm(V, D, H, 0.5, seed=3, dtype=dtype)
        xs = word_ids(rng, V, N, T)
        np.testing.assert_allclose(b1.predict(xs), b2.predict(xs), rtol=50 * tol, atol=1e-5)


def test_tied_language_model_sums_the_gradient_the_book_way():
    """LanguageModel(tie_weights) lists W once; its gradient is what remove_duplicate makes of
    BetterRnnlm's pair (same seed: same weights)."""
    rng = np.random.default_rng(0)
    V, D, N, T = 30, 8, 2, 5
    lm = LanguageModel(V, D, [D, D], tie_weights=True, init="normal", seed=4)
    book = BetterRnnlm(V, D, D, 0.0, seed=4)
    assert len(lm.params) == len(book.params) - 1
    xs, ts = word_ids(rng, V, N, T), word_ids(rng, V, N, T)
    assert lm.forward(xs, ts) == pytest.approx(book.forward(xs, ts), rel=1e-6)
    lm.backward()
    book.backward()
    _, grads = book_remove_duplicate(book.params, book.grads)
    for g, h in zip(lm.grads, grads):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-7)


def test_language_model_equals_reference_rnnlm():
    """LanguageModel(V, D, [H], init='normal') is the book's Rnnlm."""
    rng = np.random.default_rng(0)
    lm = LanguageModel(25, 6, 9, init="normal", seed=8)
    book = ref_models.Rnnlm(25, 6, 9, seed=8)
    for _ in range(2):
        xs, ts = word_ids(rng, 25, 2, 4), word_ids(rng, 25, 2, 4)
        assert lm.forward(xs, ts) == pytest.approx(book.forward(xs, ts), rel=1e-6)


# ---- finite differences ----------------------------------------------------------------------

EPS = 1e-6


def fd_check_model(config, cls=LanguageModel, seed=0, samples=12, N=2, T=3):
    """Central differences of the loss against backward's grads, on `samples` entries of every
    parameter.  Every evaluation rebuilds the model from (config, params): fresh state and the
    same seeded dropout masks, so masks are fixed across evaluations."""
    config = json.loads(json.dumps(config))  # also checks it is JSON
    rng = np.random.default_rng(seed)
    base = cls(**{**config, "dtype": np.float64})
    params = [p.copy() for p in base.params]
    cfg = base.get_config()
    V = base.vocab_size
    xs, ts = word_ids(rng, V, N, T), word_ids(rng, V, N, T)
    ts[0, 0] = -1  # an ignored target

    def loss():
        return cls.from_config(cfg, params).forward(xs, ts)

    model = cls.from_config(cfg, params)
    model.forward(xs, ts)
    model.backward()
    largest = 0.0
    for k, (p, g) in enumerate(zip(params, model.grads)):
        flat = p.reshape(-1)
        picks = rng.choice(flat.size, min(samples, flat.size), replace=False)
        for i in picks:
            num = central_difference(loss, flat, i, EPS)
            ana = g.reshape(-1)[i]
            largest = max(largest, abs(num))
            assert abs(ana - num) <= 1e-6 * max(1e-2, abs(num)) + 1e-9, (
                f"param {k} entry {i}: backward {ana:.8g}, finite differences {num:.8g}"
            )
    assert largest > 1e-3, "the finite differences are all ~0: nothing was checked"


BASE = {"vocab_size": 13, "embed_size": 5, "hidden_sizes": [5, 5]}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"tie_weights": True},
        {"tie_weights": True, "hidden_sizes": [5, 4], "projection": True},
        {"connection": "residual", "hidden_sizes": [5, 5, 5]},
        {"connection": "dense", "hidden_sizes": [4, 3, 5]},
        {"cell": "gru"},
        {"cell": "rnn", "connection": "residual", "init": "orthogonal"},
        {"dropout": 0.4, "tie_weights": True},
        {
            "variational": {"embedding": 0.3, "input": 0.3, "hidden": 0.3, "output": 0.3},
            "connection": "residual",
            "tie_weights": True,
        },
    ],
    ids=[
        "plain",
        "tied",
        "tied-projection",
        "residual",
        "dense",
        "gru",
        "rnn-residual-orth",
        "dropout",
        "variational",
    ],
)
def test_language_model_gradients(extra):
    fd_check_model({**BASE, "init_scale": 0.5, "seed": 3, **extra})


@needs_h_mask
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_language_model_gradients_recurrent_masks(cell):
    fd_check_model(
        {
            **BASE,
            "cell": cell,
            "init_scale": 0.5,
            "seed": 3,
            "tie_weights": True,
            "variational": {"recurrent": 0.4, "hidden": 0.2},
        }
    )


def test_book_model_gradients():
    fd_check_model({"vocab_size": 11, "wordvec_size": 4, "hidden_size": 5, "seed": 1}, Rnnlm)


def make_stack(cells, D, Hs, rng, dtype=np.float64, **kw):
    layers = []
    for k, (cell, H) in enumerate(zip(cells, Hs)):
        G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
        Din = D + sum(Hs[:k]) if kw.get("connection") == "dense" else (D if k == 0 else Hs[k - 1])
        cls = {"rnn": TimeRNN, "lstm": TimeLSTM, "gru": TimeGRU}[cell]
        layers.append(
            cls(
                *(
                    0.5 * rng.standard_normal(s).astype(dtype)
                    for s in ((Din, G * H), (H, G * H), (G * H,))
                )
            )
        )
    return Stack(layers, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"connection": "residual"},
        {"connection": "dense"},
        {"dropout": 0.3, "seed": 1},
        {"dropout": 0.3, "variational": True, "seed": 1, "connection": "residual"},
        pytest.param({"recurrent_dropout": 0.3, "seed": 1}, marks=needs_h_mask),
    ],
    ids=["plain", "residual", "dense", "dropout", "variational", "recurrent"],
)
def test_stack_gradients(kw):
    rng = np.random.default_rng(2)
    N, T, D = 2, 3, 4
    Hs = [4, 4, 4]
    stack = make_stack(["lstm", "gru", "rnn"], D, Hs, rng, **kw)
    config, params = stack.get_config(), [p.copy() for p in stack.params]
    xs = rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, Hs[-1]))

    def run(ps, x):
        s = Stack.from_config(config, ps)
        return s, float(np.sum(s.forward(x) * R))

    s, _ = run(params, xs)
    dxs = s.backward(R)
    for arr, grad in [(xs, dxs)] + list(zip(params, s.grads)):
        flat, gflat = arr.reshape(-1), grad.reshape(-1)
        for i in rng.choice(flat.size, min(10, flat.size), replace=False):
            num = central_difference(lambda: run(params, xs)[1], flat, i, EPS)
            assert abs(gflat[i] - num) <= 1e-6 * max(1e-2, abs(num)), (i, gflat[i], num)


# ---- depth: residual connections ----------------------------------------------------------------


def test_six_layer_stack_learns_with_residual_connections_only():
    """6 LSTM layers, weights U(+-0.1), plain SGD on w -> (3w + 1) mod 16: without residual
    connections nothing reaches the bottom layers and the loss stays at log(16) = 2.77; with
    them the task is learned (measured: plain 2.77, residual 0.002 at 400 steps)."""
    V, H, N, T = 16, 16, 16, 8

    def train(connection):
        model = LanguageModel(V, H, [H] * 6, connection=connection, init_scale=0.1, seed=0)
        rng = np.random.default_rng(100)
        opt = SGD(lr=2.0)
        for _ in range(400):
            xs = word_ids(rng, V, N, T)
            model.reset_state()
            loss = model.forward(xs, (3 * xs + 1) % V)
            model.backward()
            fastrnn.clip_grads(model.grads, 5.0)
            opt.update(model.params, model.grads)
        return loss

    plain, residual = train(None), train("residual")
    assert plain > 2.5
    assert residual < 0.2
    assert plain - residual > 2.0


# ---- state, modes, dtypes, dropout kinds --------------------------------------------------------


def test_stateful_language_model_carries_state():
    rng = np.random.default_rng(0)
    m = LanguageModel(20, 6, [7, 7], connection="residual", seed=1, dtype=np.float64)
    xs = word_ids(rng, 20, 3, 8)
    whole = m.predict(xs)
    m.reset_state()
    halves = np.concatenate([m.predict(xs[:, :4]), m.predict(xs[:, 4:])], axis=1)
    np.testing.assert_allclose(halves, whole, rtol=1e-12, atol=1e-14)
    m.reset_state()
    np.testing.assert_allclose(m.predict(xs), whole, rtol=1e-12, atol=1e-14)


def test_stack_state_and_flags_propagate():
    rng = np.random.default_rng(0)
    s = make_stack(["lstm", "lstm"], 3, [4, 4], rng, dropout=0.5, seed=0)
    assert not s.stateful
    s.stateful = True
    assert all(layer.stateful for layer in s.layers)
    xs = rng.standard_normal((2, 5, 3))
    s.train_flg = False
    assert all(not d.train_flg for d in s.drops)
    whole = s.forward(xs)
    s.reset_state()
    assert all(layer.h is None for layer in s.layers)
    parts = np.concatenate([s.forward(xs[:, :2]), s.forward(xs[:, 2:])], axis=1)
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-14)
    s.train_flg = True
    s.reset_state()
    assert not np.allclose(s.forward(xs), whole)  # masks drawn in training
    assert len(s.params) == len(s.grads) == 6
    assert s.params[3] is s.layers[1].params[0] and s.grads[4] is s.layers[1].grads[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes(dtype):
    rng = np.random.default_rng(0)
    m = LanguageModel(20, 6, [6, 6], tie_weights=True, dropout=0.2, dtype=dtype, seed=0)
    assert all(p.dtype == dtype for p in m.params) and all(g.dtype == dtype for g in m.grads)
    xs = word_ids(rng, 20, 2, 3)
    assert m.predict(xs).dtype == dtype
    loss = m.forward(xs, xs)
    m.backward()
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in m.grads)


def test_train_flg_and_seeds():
    rng = np.random.default_rng(0)
    cfg = {"vocab_size": 20, "embed_size": 6, "hidden_sizes": [6, 6], "dropout": 0.5, "seed": 7}
    xs = word_ids(rng, 20, 2, 5)
    a, b = LanguageModel(**cfg), LanguageModel(**cfg)
    assert a.forward(xs, xs) == b.forward(xs, xs)  # same seed: same masks
    a.reset_state()
    b.reset_state()
    assert a.forward(xs, xs) != b.forward(xs, xs, train_flg=False)
    a.reset_state()
    b.reset_state()
    np.testing.assert_array_equal(a.predict(xs), b.predict(xs, train_flg=False))
    a.reset_state()
    first = a.forward(xs, xs)
    a.reset_state()
    assert a.forward(xs, xs) != first  # fresh masks per forward


def test_embedding_dropout_drops_word_types():
    m = LanguageModel(8, 5, [5], variational={"embedding": 0.5}, seed=3, dtype=np.float64)
    xs = np.array([[1, 2, 1, 3, 2, 1]] * 4)
    for _ in range(5):
        h = m.word_dropout.forward(xs, m.embedding.forward(xs))
        mask = m.word_dropout.vocab_mask
        assert set(np.unique(mask)) <= {0.0, 2.0}
        for w in (1, 2, 3):  # every occurrence of a word: the same fate
            rows = h[xs == w]
            np.testing.assert_allclose(rows, np.broadcast_to(m.params[0][w] * mask[w], rows.shape))


def test_variational_masks_shared_over_time():
    m = LanguageModel(8, 5, [5, 5], variational={"input": 0.5}, seed=0, dtype=np.float64)
    xs = np.zeros((3, 6), dtype=int)  # the same word at every step
    out = m.input_dropout.forward(m.embedding.forward(xs))
    np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1], out.shape))
    assert (out == 0).any()


# ---- persistence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Rnnlm(30, 5, 6, seed=1),
        lambda: BetterRnnlm(30, 6, 6, 0.3, seed=1),
        lambda: LanguageModel(
            30, 6, [6, 6], tie_weights=True, dropout=0.2, seed=1, connection="residual"
        ),
        lambda: LanguageModel(
            30,
            6,
            [4, 5],
            tie_weights=True,
            projection=True,
            cell="gru",
            variational={"input": 0.2, "embedding": 0.1},
            dtype=np.float64,
        ),
    ],
    ids=["Rnnlm", "BetterRnnlm", "LanguageModel", "LanguageModel-gru-proj"],
)
def test_persistence(make, tmp_path):
    rng = np.random.default_rng(0)
    model = make()
    xs = word_ids(rng, 30, 2, 4)
    config = json.loads(json.dumps(model.get_config()))
    twin = type(model).from_config(config, model.params)
    np.testing.assert_array_equal(twin.predict(xs), model.predict(xs))
    for p, q in zip(twin.params, model.params):
        assert p.shape == q.shape
    path = tmp_path / "weights.npz"
    model.save_params(path)
    other = make()
    for p in other.params:
        p[...] = 0
    other.load_params(path)
    model.reset_state()
    np.testing.assert_array_equal(other.predict(xs), model.predict(xs))
    with np.load(path, allow_pickle=False) as f:
        assert len(f.files) == len(model.params)
    with pytest.raises(ValueError, match="params must hold"):
        type(model).from_config(config, model.params[:-1])
    bad = [p.copy() for p in model.params]
    bad[1] = np.zeros((3, 3), model.params[1].dtype)
    with pytest.raises(ValueError, match=r"params\[1\]"):
        type(model).from_config(config, bad)


def test_load_params_checks_before_writing(tmp_path):
    a, b = Rnnlm(30, 5, 6, seed=1), Rnnlm(31, 5, 6, seed=2)
    a.save_params(tmp_path / "a.npz")
    before = [p.copy() for p in b.params]
    with pytest.raises(ValueError, match="shape"):
        b.load_params(tmp_path / "a.npz")
    for p, q in zip(b.params, before):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(FileNotFoundError):
        a.load_params(tmp_path / "missing.npz")
    assert [f.name for f in tmp_path.iterdir()] == ["a.npz"]  # no temporary files left


def test_load_params_names_a_damaged_file_and_keeps_the_weights(tmp_path):
    a = Rnnlm(30, 5, 6, seed=1)
    a.save_params(tmp_path / "a.npz")
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "one.npy", a.params[0])
    bad = [p.copy() for p in a.params]
    bad[2][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **{f"p{i}": p for i, p in enumerate(bad)})
    before = [p.copy() for p in a.params]
    for name, match in [
        ("cut.npz", "cut.npz: unreadable parameters file"),
        ("empty.npz", "empty.npz: unreadable parameters file"),
        ("one.npy", "one.npy: unreadable parameters file .*one .npy array"),
        ("nan.npz", r"nan.npz: array 2 holds NaN or Inf"),
    ]:
        with pytest.raises(ValueError, match=match):
            a.load_params(tmp_path / name)
        for p, q in zip(a.params, before):
            np.testing.assert_array_equal(p, q)


def test_stack_config_round_trip():
    rng = np.random.default_rng(0)
    s = make_stack(["gru", "lstm"], 3, [4, 5], rng, connection="dense", dropout=0.1, seed=2)
    config = json.loads(json.dumps(s.get_config()))
    t = Stack.from_config(config, s.params)
    xs = rng.standard_normal((2, 3, 3))
    s.train_flg = t.train_flg = False
    np.testing.assert_array_equal(s.forward(xs), t.forward(xs))
    with pytest.raises(ValueError, match="shape"):
        Stack.from_config(config, [p.T for p in s.params])


# ---- bad configurations and inputs --------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"tie_weights": True, "hidden_sizes": [6, 7]}, ValueError, "tie_weights needs"),
        ({"projection": True}, ValueError, "projection"),
        ({"connection": "residual", "hidden_sizes": [6, 7]}, ValueError, "residual"),
        ({"connection": "skip"}, ValueError, "connection must be"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"dropout": "0.5"}, TypeError, "dropout"),
        ({"variational": {"inputs": 0.2}}, ValueError, "unknown keys"),
        ({"variational": {"input": 0.2}, "dropout": 0.2}, ValueError, "not both"),
        ({"variational": [0.2]}, TypeError, "variational"),
        ({"cell": "transformer"}, ValueError, "cell must be"),
        ({"init": "xavier"}, ValueError, "init must be"),
        ({"init_scale": 0}, ValueError, "init_scale"),
        ({"hidden_sizes": []}, ValueError, "hidden_sizes"),
        ({"vocab_size": 0}, ValueError, "vocab_size"),
        ({"dtype": np.int32}, TypeError, "dtype"),
        ({"seed": -1}, TypeError, "seed"),
    ],
)
def test_bad_language_model_configs(kw, err, match):
    with pytest.raises(err, match=match):
        LanguageModel(**{"vocab_size": 10, "embed_size": 6, "hidden_sizes": [6, 6], **kw})


def test_bad_inputs():
    m = LanguageModel(10, 4, [4])
    with pytest.raises(ValueError, match=r"xs must hold word ids in \[0, 10\)"):
        m.predict(np.array([[1, 10]]))
    with pytest.raises(TypeError, match="integer"):
        m.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(N, T\)"):
        m.predict(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="ts must have the shape"):
        m.forward(np.zeros((2, 3), int), np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="ts must hold"):
        m.forward(np.zeros((2, 3), int), np.full((2, 3), -2))
    with pytest.raises(RuntimeError, match="before forward"):
        LanguageModel(10, 4, [4]).backward()


def test_bad_stacks():
    rng = np.random.default_rng(0)

    def lstm(D, H):
        return TimeLSTM(*(rng.standard_normal(s) for s in ((D, 4 * H), (H, 4 * H), (4 * H,))))

    with pytest.raises(ValueError, match=r"layers\[1\] takes inputs of size 5"):
        Stack([lstm(3, 4), lstm(5, 4)])
    with pytest.raises(ValueError, match="residual connections need equal"):
        Stack([lstm(3, 4), lstm(4, 6)], connection="residual")
    with pytest.raises(ValueError, match="plus every earlier"):
        Stack([lstm(3, 4), lstm(4, 4)], connection="dense")
    with pytest.raises(TypeError, match="non-empty list"):
        Stack([])
    with pytest.raises(TypeError, match=r"layers\[0\]"):
        Stack([object()])
    with pytest.raises(ValueError, match="connection must be"):
        Stack([lstm(3, 4)], connection="skip")
    with pytest.raises(TypeError, match="same dtype"):
        Stack([lstm(3, 4), TimeLSTM(*(p.astype(np.float32) for p in lstm(4, 4).params))])

    class NoMask:  # a time layer whose forward takes no h_mask
        def __init__(self, layer):
            self.params, self.grads, self.backward = layer.params, layer.grads, layer.backward

        def forward(self, xs):
            return xs

    with pytest.raises(ValueError, match="h_mask"):
        Stack([NoMask(lstm(3, 4))], recurrent_dropout=0.2)
    ref_layer = ref.TimeLSTM(*(p.copy() for p in lstm(3, 4).params))
    s = Stack([lstm(3, 4), lstm(4, 4)], connection="residual")
    with pytest.raises(RuntimeError, match="before forward"):
        s.backward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"xs must have shape \(N, T, 3\)"):
        s.forward(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="only"):
        Stack([ref_layer]).get_config()


# ---- memory ------------------------------------------------------------------------------------


def _iteration_peak(exclude_loss_forward):
    """Bytes allocated at the peak of an iteration (forward, backward, clip_grads, SGD) after two
    warm-up iterations, and the growth over three.  With exclude_loss_forward, the temporaries
    inside TimeSoftmaxWithLoss.forward (the lm layers' business) are left out."""
    V, N, T = 3000, 16, 10
    model = LanguageModel(V, 32, [32, 32], tie_weights=True, dropout=0.3, seed=0)
    rng = np.random.default_rng(0)
    opt = SGD(0.1)
    peaks = []
    if exclude_loss_forward:
        inner = model.loss_layer.forward

        def loss_forward(*args):
            peaks.append(tracemalloc.get_traced_memory()[1])
            out = inner(*args)
            tracemalloc.reset_peak()
            return out

        model.loss_layer.forward = loss_forward

    def iteration():
        xs = word_ids(rng, V, N, T)
        model.forward(xs, xs)
        model.backward()
        fastrnn.clip_grads(model.grads, 1.0)
        opt.update(model.params, model.grads)

    iteration()
    iteration()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        peaks.clear()
        for _ in range(3):
            iteration()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(peaks + [peak]) - start, end - start, N * T * V * 4


def test_no_activation_sized_allocations_after_warm_up():
    """After two iterations the model allocates far less than one (N, T, V) array per iteration:
    the embeddings, dropout outputs, scores and their gradients live in reused buffers (the
    scores turn into their gradient in place), and memory does not grow.  (tracemalloc sees
    NumPy's buffers.  The recurrent layers still return fresh (N, T, H) arrays, by contract.)"""
    peak, growth, activation = _iteration_peak(exclude_loss_forward=True)
    assert peak < 0.5 * activation, f"peak {peak} bytes in an iteration"
    assert growth < 0.05 * activation, "memory grows from one iteration to the next"


def test_no_activation_sized_allocations_in_the_whole_iteration():
    """The same with the softmax cross-entropy's own work counted: fused, it allocates no
    (N*T, V) temporaries either."""
    peak, _, activation = _iteration_peak(exclude_loss_forward=False)
    assert peak < 0.5 * activation, f"peak {peak} bytes in an iteration"
