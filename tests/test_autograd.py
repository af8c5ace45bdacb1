"""The closed-form backward Functions of ``segloss_registry._autograd`` against autograd of the plain formulas.

Each Function is checked twice: ``torch.autograd.gradcheck`` in float64 (its backward against
finite differences of its own forward), and its value and gradient against autograd of the
plain formula written here (``torch.sigmoid``, ``F.logsigmoid``, ``F.binary_cross_entropy_with_logits``,
``torch.minimum``), with masks, ignore_index, soft targets and extreme logits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segloss_registry import _autograd as ag
from segloss_registry import build_loss
from segloss_registry._inputs import InputOptions, normalise


def _x(shape=(2, 1, 5, 6), scale=3.0, seed=0, extreme=False):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(*shape, dtype=torch.float64, generator=g)
    if extreme:  # saturated logits, where naive formulas give inf/nan
        x.view(-1)[:4] = torch.tensor([60.0, -60.0, 700.0, -700.0], dtype=torch.float64)
    return x.requires_grad_(True)


def _t(shape=(2, 1, 5, 6), soft=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(*shape, dtype=torch.float64, generator=g)
    return t if soft else (t > 0.6).double()


def _grad(f, x):
    x.grad = None
    f(x).backward()
    return x.grad.clone()


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _sig(x):
    """(p, lse) of a fresh call, and the call's (anchor, logits) for the other Functions."""
    lg = ag.EagerLogits(x)
    al = (lg.anchor(), lg)
    return (*ag.Sigmoid.apply(*al), al)


# -- gradcheck of every Function ------------------------------------------------------------------
def test_sigmoid_gradcheck_and_value():
    x = _x()
    assert torch.autograd.gradcheck(lambda z: _sig(z)[0], (x,))
    p, lse, _ = _sig(x)
    _close(p, torch.sigmoid(x))
    _close(lse, torch.log1p(torch.exp(-x.abs())))
    assert not lse.requires_grad


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("extreme", [False, True])
def test_log_sigmoid(sign, extreme):
    x = _x(extreme=extreme)

    def ours(z):
        p, lse, al = _sig(z)
        return ag.LogSigmoid.apply(*al, p.detach(), lse, sign)

    plain = (lambda z: F.logsigmoid(z)) if sign > 0 else (lambda z: F.logsigmoid(-z))
    _close(ours(x), plain(x))
    _close(_grad(lambda z: (ours(z) * torch.arange(60.0, dtype=z.dtype).view_as(z)).sum(), x),
           _grad(lambda z: (plain(z) * torch.arange(60.0, dtype=z.dtype).view_as(z)).sum(), x))
    assert torch.autograd.gradcheck(ours, (_x(),))


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("extreme", [False, True])
def test_bce_elements(soft, extreme):
    x, t = _x(extreme=extreme), _t(soft=soft)

    def ours(z):
        p, lse, al = _sig(z)
        return ag.BCEElements.apply(*al, t, p.detach(), lse)

    def plain(z):
        return F.binary_cross_entropy_with_logits(z, t, reduction="none")

    _close(ours(x), plain(x))
    w = torch.rand(x.shape, dtype=x.dtype)
    _close(_grad(lambda z: (ours(z) * w).sum(), x), _grad(lambda z: (plain(z) * w).sum(), x))
    assert torch.isfinite(_grad(lambda z: ours(z).sum(), x)).all()
    assert torch.autograd.gradcheck(ours, (_x(),))


def _plain_focal(z, t, gamma, alpha):
    p = torch.sigmoid(z)
    bce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    u = p * (1 - t) + (1 - p) * t  # 1 - p_t
    lo = 1e-12 if gamma < 1 else 0.0
    loss = bce * (u * u if gamma == 2 else u.clamp_min(lo) ** gamma)
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25, "per-channel"])
@pytest.mark.parametrize("soft", [False, True])
def test_focal_elements(gamma, alpha, soft):
    shape = (2, 3, 4, 5)
    x, t = _x(shape), _t(shape, soft=soft)
    a = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).view(1, 3, 1, 1) if alpha == "per-channel" else alpha

    def ours(z):
        p, lse, al = _sig(z)
        return ag.FocalElements.apply(*al, t, p.detach(), lse, gamma, a)

    _close(ours(x), _plain_focal(x, t, gamma, a))
    w = torch.rand(shape, dtype=x.dtype)
    _close(_grad(lambda z: (ours(z) * w).sum(), x), _grad(lambda z: (_plain_focal(z, t, gamma, a) * w).sum(), x))
    assert torch.autograd.gradcheck(ours, (_x(shape),))


def test_focal_elements_extreme_logits_finite():
    x, t = _x(extreme=True), _t()
    p, lse, al = _sig(x)
    out = ag.FocalElements.apply(*al, t, p.detach(), lse, 2.0, 0.25)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    x2 = x.detach().clone().requires_grad_(True)
    _close(out, _plain_focal(x2, t, 2.0, 0.25))


def _plain_region(p, t, w, dims, soft, weigh_t):
    pw = p if w is None else p * w
    tw = t * w if weigh_t and w is not None else t
    inter = torch.minimum(pw, tw) if soft else pw * t
    return inter.sum(dims), pw.sum(dims), tw.sum(dims)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weights", [None, "binary", "float"])
@pytest.mark.parametrize("dims", [(0, 2, 3), (2, 3)])
@pytest.mark.parametrize("to", ["p", "logits"])
def test_region_sums(soft, weights, dims, to):
    shape = (2, 3, 4, 5)
    x, t = _x(shape), _t(shape, soft=True)
    g = torch.Generator().manual_seed(5)
    w = None
    if weights == "binary":
        w = (torch.rand(2, 1, 4, 5, generator=g) > 0.3).double()
        t = t * w  # the core zeroes the target where the 0/1 mask is 0
    elif weights == "float":
        w = 2 * torch.rand(2, 1, 4, 5, generator=g, dtype=torch.float64)
    weigh_t = weights == "float"

    def ours(z):
        if to == "p":  # the gradient to p, and from there by autograd
            return ag.RegionSums.apply(torch.sigmoid(z), t, w, dims, soft, weigh_t)
        p, _, al = _sig(z)  # the gradient to the logits, through the call's one buffer
        return ag.RegionSums.apply(p.detach(), t, w, dims, soft, weigh_t, *al)

    def plain(z):
        return _plain_region(torch.sigmoid(z), t, w, dims, soft, weigh_t)

    for a, b in zip(ours(x), plain(x)):
        _close(a, b)
    c1, c2 = torch.rand(ours(x)[0].shape, dtype=x.dtype), torch.rand(ours(x)[0].shape, dtype=x.dtype)

    def scal(f):
        return lambda z: ((f(z)[0] * c1).sum() + (f(z)[1] * c2).sum() + f(z)[0].sum() / (1 + f(z)[1].sum()))

    _close(_grad(scal(ours), x), _grad(scal(plain), x))
    assert torch.autograd.gradcheck(lambda z: ours(z)[:2], (_x(shape),))


@pytest.mark.parametrize("rows", [6, 513 * 2])  # one dot per row; past _MAX_DOT_ROWS (512) one bmm
def test_hard_region_sums_by_rows_equal_the_plain_sums(rows):
    """Hard targets: ``sum(p t)`` per sample and class as dot products of rows, both ways."""
    n, c = (2, rows // 2)
    g = torch.Generator().manual_seed(11)
    p = torch.rand(n, c, 3, 7, generator=g, dtype=torch.float64)
    t = (torch.rand(n, c, 3, 7, generator=g) > 0.6).double()
    assert (n * c > ag._MAX_DOT_ROWS) == (rows > 512)
    for dims in ((0, 2, 3), (2, 3)):
        inter, P, T = ag.RegionSums.apply(p, t, None, dims, False, False)
        torch.testing.assert_close(inter, (p * t).sum(dims), rtol=1e-12, atol=0)
        torch.testing.assert_close(P, p.sum(dims), rtol=1e-12, atol=0)
        torch.testing.assert_close(T, t.sum(dims), rtol=1e-12, atol=0)


def test_region_sums_only_p_used():
    x, t = _x(), _t()
    (_, P, _) = ag.RegionSums.apply(torch.sigmoid(x), t, None, (0, 2, 3), True, False)
    P.sum().backward()
    _close(x.grad, (torch.sigmoid(x) * (1 - torch.sigmoid(x))).detach())


def test_one_buffer_per_backward_pass_and_no_reference_cycle():
    """The call's gradient buffer (``EagerLogits``) serves one backward pass: a second one
    (``retain_graph=True``) gives the same gradient, not twice it; and the call's objects are
    freed by reference counting alone (no cycle through the autograd graph keeps the logits)."""
    import gc
    import weakref

    crit = build_loss("bce+dice+focal", compile=False)
    x, t = _x((2, 1, 6, 6)), _t((2, 1, 6, 6))
    loss = crit(x, t)
    g1 = torch.autograd.grad(loss, x, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, x)[0]
    assert torch.equal(g1, g2)
    _close(g1, _with_plain_formulas(crit, x, t)[1])
    made = []
    real_init = ag.EagerLogits.__init__

    def spy(self, z):
        real_init(self, z)
        made.append(weakref.ref(self))

    gc.disable()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ag.EagerLogits, "__init__", spy)
            crit(x, t).backward()  # after a backward pass
            loss = crit(x, t)  # and without one
            del loss
        assert len(made) == 2 and all(r() is None for r in made)
    finally:
        gc.enable()


def test_double_backward_is_refused_clearly():
    x, t = _x(), _t()
    p, lse, al = _sig(x)
    loss = ag.BCEElements.apply(*al, t, p.detach(), lse).sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, x, create_graph=True)


# -- through Inputs and whole losses: eager (the Functions) == the plain formulas ----------------------
@pytest.mark.parametrize("ignore", [False, True])
def test_focal_elements_through_inputs(ignore):
    x = _x((2, 1, 6, 6), extreme=True)
    t = _t((2, 1, 6, 6))
    opts = InputOptions("binary", True, 2 if ignore else None)
    tt = t.clone()
    if ignore:
        tt.view(-1)[::5] = 2
    inp = normalise(x, tt, opts)
    got = inp.pixel_mean(inp.focal_elements(2.0, 0.25))
    valid = (tt != 2).double()
    want = (_plain_focal(x, tt * valid, 2.0, 0.25) * valid).sum() / valid.sum()
    _close(got, want)
    _close(_grad(lambda z: inp_mean(z, tt, opts), x), _grad(lambda z: (_plain_focal(z, tt * valid, 2.0, 0.25)
                                                                        * valid).sum() / valid.sum(), x))


def inp_mean(z, t, opts):
    inp = normalise(z, t, opts)
    return inp.pixel_mean(inp.focal_elements(2.0, 0.25))


@pytest.mark.parametrize("spec", ["bce+dice+focal", "iou+tversky", "focal(gamma=0.5, alpha=None)+dice(per_image=True)"])
@pytest.mark.parametrize("masking", [None, "ignore", "bool", "float"])
def test_eager_losses_gradcheck(spec, masking):
    x = _x((2, 1, 5, 6), extreme=False)
    t = _t((2, 1, 5, 6))
    kw = {}
    mask = None
    if masking == "ignore":
        t = t.clone()
        t.view(-1)[::4] = 255
        kw["ignore_index"] = 255
    elif masking == "bool":
        mask = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(3)) > 0.3
    elif masking == "float":
        mask = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    crit = build_loss(spec, compile=False, **kw)
    assert torch.autograd.gradcheck(lambda z: crit(z, t, mask=mask), (x,))


def _with_plain_formulas(crit, x, t):
    """The criterion's value and gradient through the plain formulas (the compiled path's code, run
    eagerly with ``is_compiling`` forced), not the eager Functions."""
    import segloss_registry._inputs as inputs_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inputs_mod, "is_compiling", lambda: True)
        v = crit(x, t)
        return v, torch.autograd.grad(v, x)[0]


@pytest.mark.parametrize("spec", ["bce+dice+focal", "focal+iou"])
def test_eager_equals_plain_autograd_at_extreme_logits(spec):
    """The eager Functions against the same losses traced as plain formulas (the compiled path's
    code, run eagerly with ``is_compiling`` forced)."""
    x = _x((2, 1, 6, 6), extreme=True)
    t = _t((2, 1, 6, 6))
    crit = build_loss(spec, compile=False)
    v1 = crit(x, t)
    g1 = torch.autograd.grad(v1, x)[0]
    v2, g2 = _with_plain_formulas(crit, x, t)
    _close(v1, v2)
    _close(g1, g2)
    assert torch.isfinite(g1).all()


def test_soft_minimum_equals_torch_minimum_with_the_same_gradient():
    """The compiled graphs' ``min(a, b)`` (``(a + b - |a - b|) / 2``): within an ulp of the larger
    argument of ``torch.minimum`` in float32 on [0, 1], exact at ties, and the same gradient (1 to
    the smaller, 1/2 each at a tie)."""
    from segloss_registry._inputs import soft_minimum

    g = torch.Generator().manual_seed(3)
    a = torch.rand(10_000, generator=g)
    b = torch.rand(10_000, generator=g)
    b[:1000] = a[:1000]  # ties
    b[1000:1100] = 0.0
    b[1100:1200] = 1.0
    ref = torch.minimum(a, b)
    got = soft_minimum(a, b)
    ulp = torch.finfo(torch.float32).eps
    assert ((got - ref).abs() <= ulp * torch.maximum(a, b)).all()
    assert torch.equal(got[:1000], a[:1000])  # a tie gives the value exactly
    a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
    ga, gb = torch.autograd.grad(soft_minimum(a64, b64).sum(), (a64, b64))
    ra, rb = a.double().requires_grad_(), b.double().requires_grad_()
    ea, eb = torch.autograd.grad(torch.minimum(ra, rb).sum(), (ra, rb))
    assert torch.equal(ga, ea) and torch.equal(gb, eb)
    assert (ga[:1000] == 0.5).all()


@pytest.mark.parametrize("spec", ["bce+dice+focal", "focal(gamma=1.5, alpha=0.25)+dice", "focal(gamma=0.5)+iou",
                                  "bce+tversky"])
def test_chunked_eager_passes_equal_the_plain_formulas(spec):
    """Inputs larger than two slices (``_autograd.CHUNK``) and not a multiple of one take the
    chunked CPU passes; they must give the values and gradients of the plain formulas (the
    compiled path's code, run eagerly with ``is_compiling`` forced) in float64."""
    n = 2 * ag.CHUNK + 1234
    g = torch.Generator().manual_seed(5)
    x = (4 * torch.randn(1, 1, n, generator=g, dtype=torch.float64)).requires_grad_()
    t = (torch.rand(1, 1, n, generator=g) > 0.7).double()
    t[0, 0, :100] = torch.rand(100, generator=g, dtype=torch.float64)  # soft values and ties
    t[0, 0, 100:110] = 0.5
    with torch.no_grad():
        x[0, 0, 100:110] = 0.0  # p == t == 0.5: the tie of the soft intersection
    crit = build_loss(spec, compile=False)
    calls = []
    real = ag.chunked

    def spy(fn, outputs, like, *args):
        calls.append(like.numel())
        return real(fn, outputs, like, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ag, "chunked", spy)
        v1 = crit(x, t)
        g1 = torch.autograd.grad(v1, x)[0]
    assert calls and all(c == n for c in calls)  # the chunked passes ran
    v2, g2 = _with_plain_formulas(crit, x, t)
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-15)


# -- multiclass: the eager softmax (``_autograd.Softmax``) and the one buffer --------------------------
def _multiclass(shape=(2, 4, 5, 6), soft=False, seed=7):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(*shape, dtype=torch.float64, generator=g)).requires_grad_(True)
    if soft:
        t = torch.softmax(2 * torch.randn(*shape, dtype=torch.float64, generator=g), 1)
    else:
        t = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return x, t


def test_softmax_function_value_and_gradcheck():
    x, _ = _multiclass()

    def ours(z):
        lg = ag.EagerLogits(z)
        p, log_p = ag.Softmax.apply(lg.anchor(), lg)
        return p, log_p

    p, log_p = ours(x)
    _close(p, torch.softmax(x, 1))
    _close(log_p, torch.log_softmax(x, 1))
    c1 = torch.rand(x.shape, dtype=x.dtype)
    c2 = torch.rand(x.shape, dtype=x.dtype)

    def scal(f):
        return lambda z: (f(z)[0] * c1).sum() + (f(z)[1] * c2).sum() + f(z)[0][:, 1].sum() ** 2

    _close(_grad(scal(ours), x), _grad(scal(lambda z: (torch.softmax(z, 1), torch.log_softmax(z, 1))), x))
    assert torch.autograd.gradcheck(ours, (x,))


@pytest.mark.parametrize("spec", ["ce+dice", "ce(label_smoothing=0.1)+dice(per_image=True)", "focal+iou",
                                  "ce(class_weights=[1, 2, 0.5, 1])+tversky", "dice(include_background=False)"])
@pytest.mark.parametrize("target", ["ids", "ignore", "soft"])
def test_eager_multiclass_equals_plain_autograd(spec, target):
    """Eager multiclass (``Softmax`` and ``RegionSums`` adding into one buffer) against the same
    losses as plain formulas (``is_compiling`` forced), values and gradients in float64, and
    gradcheck."""
    x, t = _multiclass(soft=target == "soft")
    kw = {"mode": "multiclass"}
    if target == "ignore":
        t = t.clone()
        t.view(-1)[::5] = 255
        kw["ignore_index"] = 255
    crit = build_loss(spec, compile=False, **kw)
    v1 = crit(x, t)
    g1 = torch.autograd.grad(v1, x)[0]
    v2, g2 = _with_plain_formulas(crit, x, t)
    _close(v1, v2)
    _close(g1, g2)
    assert torch.autograd.gradcheck(lambda z: crit(z, t), (x,))


def test_eager_multiclass_against_torch_cross_entropy_large():
    """Past two slices, the eager ce+dice equals ``F.cross_entropy`` plus a Dice written here."""
    g = torch.Generator().manual_seed(2)
    n = 2 * ag.CHUNK + 321
    x = torch.randn(1, 3, n, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randint(0, 3, (1, n), generator=g)
    crit = build_loss("ce+dice", compile=False, mode="multiclass")
    v = crit(x, t)
    gx = torch.autograd.grad(v, x)[0]
    z = x.detach().clone().requires_grad_()
    p = torch.softmax(z, 1)
    oh = F.one_hot(t, 3).permute(0, 2, 1).double()
    inter, ps, ts = (p * oh).sum((0, 2)), p.sum((0, 2)), oh.sum((0, 2))
    want = F.cross_entropy(z, t) + (1 - (2 * inter + 1.0) / (ps + ts + 1.0)).mean()  # smooth = 1
    want.backward()
    _close(v, want)
    _close(gx, z.grad)


# -- ElementSum: the means of bce and focal without a per-element tensor --------------------------------
@pytest.mark.parametrize("kind", ["bce", "focal"])
@pytest.mark.parametrize("mask", [None, "same", "broadcast"])
@pytest.mark.parametrize("alpha", [0.25, "per-channel"])
def test_element_sum_against_plain_formulas(kind, mask, alpha):
    """``sum(f m)`` equals the plain formula's masked sum, values and gradients, and passes gradcheck."""
    shape = (2, 3, 4, 5)
    x, t = _x(shape, extreme=True), _t(shape, soft=True)
    g = torch.Generator().manual_seed(9)
    m = None
    if mask == "same":
        m = torch.rand(shape, generator=g, dtype=torch.float64)
    elif mask == "broadcast":
        m = (torch.rand(2, 1, 4, 5, generator=g) > 0.3).double()
    a = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64).view(1, 3, 1, 1) if alpha == "per-channel" else alpha

    def ours(z):
        p, lse, al = _sig(z)
        formula = ag.BCE_ELEMENTS if kind == "bce" else ag.FOCAL_ELEMENTS
        return ag.ElementSum.apply(*al, formula, t, p.detach(), lse, m, 1.5, a)

    def plain(z):
        f = (F.binary_cross_entropy_with_logits(z, t, reduction="none") if kind == "bce"
             else _plain_focal(z, t, 1.5, a))
        return (f if m is None else f * m).sum()

    _close(ours(x), plain(x))
    _close(_grad(ours, x), _grad(plain, x))
    assert torch.autograd.gradcheck(ours, (_x(shape),))


@pytest.mark.parametrize("spec", ["bce", "focal", "focal(alpha=None, gamma=0.5)"])
def test_element_means_past_two_slices_equal_the_plain_formulas(spec):
    """``Inputs.bce_mean``/``focal_mean`` by slices (more than two, not a multiple) with a mask:
    the value and gradient of the plain formulas (``is_compiling`` forced) in float64."""
    n = 2 * ag.CHUNK + 999
    g = torch.Generator().manual_seed(4)
    x = (5 * torch.randn(1, 1, n, generator=g, dtype=torch.float64)).requires_grad_()
    t = (torch.rand(1, 1, n, generator=g) > 0.6).double()
    mask = torch.rand(1, n, generator=g) > 0.2
    crit = build_loss(spec, compile=False)
    v1 = crit(x, t, mask=mask)
    g1 = torch.autograd.grad(v1, x)[0]
    import segloss_registry._inputs as inputs_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inputs_mod, "is_compiling", lambda: True)
        v2 = crit(x, t, mask=mask)
        g2 = torch.autograd.grad(v2, x)[0]
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-15)
    assert (g1[0, 0][~mask[0]] == 0).all()


def test_log_prob_sum_against_plain_formula():
    """``LogProbSum``: ``sum(w log softmax(x))`` by one dot product; value, gradient, gradcheck."""
    x, _ = _multiclass()
    w = torch.rand(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(3))

    def ours(z):
        lg = ag.EagerLogits(z)
        al = (lg.anchor(), lg)
        _, log_p = ag.Softmax.apply(*al)
        return ag.LogProbSum.apply(*al, log_p.detach(), w) + log_p[:, 0].sum()  # and another use of log p

    def plain(z):
        return (w * torch.log_softmax(z, 1)).sum() + torch.log_softmax(z, 1)[:, 0].sum()

    _close(ours(x), plain(x))
    _close(_grad(ours, x), _grad(plain, x))
    assert torch.autograd.gradcheck(ours, (x,))
