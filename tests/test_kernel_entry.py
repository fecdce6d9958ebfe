"""fastrnn._recurrent's entry points: one signature for every cell, and a wrong call into them is
an exception naming the argument (the layers validate everything first; this guards the kernel)."""

import numpy as np
import pytest

from fastrnn import TimeGRU, TimeLSTM, _recurrent


def _gru_call(rng, N=2, T=3, D=4, H=5):
    layer = TimeGRU(
        rng.standard_normal((D, 3 * H)), rng.standard_normal((H, 3 * H)), np.zeros(3 * H)
    )
    xs = rng.standard_normal((N, T, D))
    layer.forward(xs)  # makes the caches and the packing scratch
    Wx, Wh, b = layer.params
    return layer, xs, Wx, Wh, b, np.zeros((N, H)), np.empty((N, T, H))


@pytest.mark.parametrize("cell", [-1, 5])
def test_unknown_cell_is_a_value_error(cell):
    layer, xs, Wx, Wh, b, h0, hs = _gru_call(np.random.default_rng(0))
    with pytest.raises(ValueError, match="cell: expected 0 .* got"):
        _recurrent.forward(cell, layer._cache, xs, Wx, Wh, b, h0, hs, layer._wp)


def test_wrong_cache_array_names_it():
    layer, xs, Wx, Wh, b, h0, hs = _gru_call(np.random.default_rng(1))
    cache = dict(layer._cache, AUX=np.empty(3))
    with pytest.raises(ValueError, match="kernel argument AUX"):
        _recurrent.forward(3, cache, xs, Wx, Wh, b, h0, hs, layer._wp)


def test_cell_kind_must_match_the_caches():
    # the GRU's caches lack the LSTM's C and TC: asked to run an LSTM on them, the kernel refuses
    layer, xs, Wx, Wh, b, h0, hs = _gru_call(np.random.default_rng(2))
    with pytest.raises((KeyError, ValueError)):
        _recurrent.forward(2, layer._cache, xs, Wx, Wh, b, h0, hs, layer._wp)


def test_every_layer_calls_the_one_driver(monkeypatch):
    # the layers reach their kernel through the one driver, naming their cell (2: LSTM)
    rng = np.random.default_rng(3)
    seen = []
    forward = _recurrent.forward
    monkeypatch.setattr(
        _recurrent, "forward", lambda cell, *a, **k: seen.append(cell) or forward(cell, *a, **k)
    )
    H = 4
    TimeLSTM(
        rng.standard_normal((3, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H)
    ).forward(rng.standard_normal((2, 5, 3)))
    assert seen == [2]


def test_lstm_by_units_with_more_threads_than_packed_rows():
    # the kernel's own choice, whatever the layer's plan: two rows (packed weights) on three
    # threads go by units from the packed copies; the same hs as the layer's one thread
    rng = np.random.default_rng(4)
    N, T, D, H = 2, 3, 5, 400
    layer = TimeLSTM(
        0.1 * rng.standard_normal((D, 4 * H)),
        0.1 * rng.standard_normal((H, 4 * H)),
        np.zeros(4 * H),
    )
    layer.threads = 1
    xs = rng.standard_normal((N, T, D))
    want = layer.forward(xs)
    Wx, Wh, b = layer.params
    hs = np.empty((N, T, H))
    _recurrent.forward(2, layer._cache, xs, Wx, Wh, b, np.zeros((N, H)), hs, layer._wp, 3)
    np.testing.assert_allclose(hs, want, rtol=1e-13, atol=1e-13)
