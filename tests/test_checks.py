"""fastrnn._checks, the fast path of the layers' argument checks: it may only say "fine as it is"
for an argument the full Python checks would also take unchanged.  Everything else must come back
False (or -1), so that the Python checks convert it or word the error."""

import numpy as np
import pytest

from fastrnn import _checks

F32, F64 = np.dtype(np.float32).num, np.dtype(np.float64).num


def misaligned(shape, dtype):
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(n + 1, np.uint8)
    a = raw[1:].view(dtype).reshape(shape)
    assert not a.flags.aligned
    return a


def bad_arrays(shape, dtype):
    """(name, array) pairs that are not usable as they are, for a good array of shape/dtype."""
    good = np.ones(shape, dtype)
    swapped = good.astype(np.dtype(dtype).newbyteorder())
    nan, inf = good.copy(), good.copy()
    nan.flat[len(nan.flat) // 2] = np.nan
    inf.flat[-1] = -np.inf
    wide = np.ones(shape[:-1] + (2 * shape[-1],), dtype)
    out = [
        ("float16", good.astype(np.float16)),
        ("int", good.astype(np.int64)),
        ("other float", good.astype(np.float64 if dtype == np.float32 else np.float32)),
        ("byte-swapped", swapped),
        ("strided", wide[..., ::2]),
        ("nan", nan),
        ("inf", inf),
        ("misaligned", misaligned(shape, dtype)),
        ("list", good.tolist()),
        ("matrix subclass", np.ma.masked_array(good)),
        ("one more dim", good[None]),
        ("wrong last size", np.ones(shape[:-1] + (shape[-1] + 1,), dtype)),
    ]
    if len(shape) == 2 and shape[0] > 1 and shape[1] > 1:
        out.append(("fortran order", np.asfortranarray(good)))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 6), (7,)])
def test_ready_takes_only_arrays_usable_as_they_are(dtype, shape):
    tn = np.dtype(dtype).num
    assert _checks.ready(np.ones(shape, dtype), tn, shape)
    assert _checks.ready(np.ones(shape, dtype), tn, (None,) * len(shape))
    for name, a in bad_arrays(shape, dtype):
        assert not _checks.ready(a, tn, shape), name
    assert not _checks.ready(np.ones(shape, dtype), tn, tuple(s + 1 for s in shape))


def test_ready_scans_large_arrays_too():
    a = np.zeros((300, 300), np.float32)  # past the size where the GIL is released
    assert _checks.ready(a, F32, (None, 300))
    a[-1, -1] = np.nan
    assert not _checks.ready(a, F32, (None, 300))


def params(kind_blocks=4, D=5, H=3, dtype=np.float32, bias_2d=False):
    G = kind_blocks * H
    b = np.zeros((2, G) if bias_2d else (G,), dtype)
    ps = [np.ones((D, G), dtype), np.ones((H, G), dtype), b]
    return ps, [np.zeros_like(p) for p in ps]


@pytest.mark.parametrize("blocks,bias_2d", [(1, False), (3, False), (3, True), (4, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_ready(blocks, bias_2d, dtype):
    ps, gs = params(blocks, dtype=dtype, bias_2d=bias_2d)
    assert _checks.params_ready(ps, gs, blocks, bias_2d) == np.dtype(dtype).num
    assert _checks.params_ready(ps, gs, blocks, not bias_2d) == -1
    assert _checks.params_ready(ps, gs, blocks + 1, bias_2d) == -1
    for which in range(3):
        for name, bad in bad_arrays(ps[which].shape, dtype):
            qs = list(ps)
            qs[which] = bad
            assert _checks.params_ready(qs, gs, blocks, bias_2d) == -1, (which, name)
    assert _checks.params_ready(ps[:2], gs, blocks, bias_2d) == -1
    assert _checks.params_ready(ps, gs[:2], blocks, bias_2d) == -1
    other = np.float64 if dtype == np.float32 else np.float32
    assert _checks.params_ready(ps, [g.astype(other) for g in gs], blocks, bias_2d) == -1
    assert _checks.params_ready(ps, [gs[0], gs[1][:, :-1], gs[2]], blocks, bias_2d) == -1


def test_grads_ready():
    ps, gs = params()
    assert _checks.grads_ready(gs, ps)
    ro = gs[1].copy()
    ro.flags.writeable = False
    for which, bad in [
        (1, ro),
        (0, np.asfortranarray(gs[0])),
        (2, gs[2].astype(np.float64)),
        (0, gs[0][:, :-1]),
        (1, gs[1].tolist()),
        (2, misaligned(gs[2].shape, np.float32)),
    ]:
        qs = list(gs)
        qs[which] = bad
        assert not _checks.grads_ready(qs, ps), which
    assert not _checks.grads_ready(gs[:2], ps)
