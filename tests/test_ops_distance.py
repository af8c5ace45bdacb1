"""segloss_registry.ops: the exact distance transforms equal scipy's, on every shape, spacing and edge case.

scipy.ndimage.distance_transform_edt measures the distance of each non-zero element to the
nearest zero; ours measures the distance to the nearest True element, so the reference for
``distance_transform_edt(mask)`` is scipy's transform of ``~mask``, sample by sample. The
signed map is checked against Kervadec's ``one_hot2dist`` (transcribed below, with scipy)
and against MONAI's ``BoundaryLoss.compute_distance_map``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloss_registry import InputError
from segloss_registry.ops import (
    _distance,
    distance_transform_edt,
    signed_distance,
    squared_distance_transform,
)

ndimage = pytest.importorskip("scipy.ndimage")

SHAPES = {1: (3, 37), 2: (3, 23, 31), 3: (2, 9, 12, 14)}
SPACINGS = {1: (0.7,), 2: (0.5, 2.25), 3: (1.5, 0.4, 2.0)}


def scipy_edt(mask: np.ndarray, sampling=None) -> np.ndarray:
    """Distance to the nearest True element per sample, by scipy (0 for a sample with no True)."""
    out = np.zeros(mask.shape)
    for i in range(mask.shape[0]):
        if mask[i].any():
            out[i] = ndimage.distance_transform_edt(~mask[i], sampling=sampling)
    return out


def one_hot2dist(posmask: np.ndarray, resolution=None) -> np.ndarray:
    """Kervadec et al.'s signed map of one class (LIVIAETS/boundary-loss utils.one_hot2dist), with
    MONAI's treatment of a full mask (0: no interface; one_hot2dist itself would read scipy's
    artefact for an input without zeros)."""
    res = np.zeros(posmask.shape)
    if posmask.any() and not posmask.all():
        negmask = ~posmask
        res = ndimage.distance_transform_edt(negmask, sampling=resolution) * negmask - (
            ndimage.distance_transform_edt(posmask, sampling=resolution) - 1
        ) * posmask
    return res


def random_mask(shape, p: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < p


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("p", [0.02, 0.3, 0.85])
def test_edt_equals_scipy_on_random_masks(dim: int, spaced: bool, p: float) -> None:
    mask = random_mask(SHAPES[dim], p, seed=dim * 10 + int(100 * p))
    mask[0].flat[0] = True  # at least one sample is never empty
    sampling = SPACINGS[dim] if spaced else None
    ours = distance_transform_edt(torch.from_numpy(mask), spacing=sampling)
    assert ours.dtype == torch.float32 and ours.shape == mask.shape
    np.testing.assert_allclose(ours.numpy(), scipy_edt(mask, sampling), rtol=0, atol=1e-4)


def test_edt_on_smooth_blobs_with_large_distances() -> None:
    # far-reaching distances (up to the image diagonal) along both axes, as in real masks
    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.random((3, 96, 80)), (0, 6, 6))
    mask = field > np.quantile(field, 0.97)
    mask[2] = False
    mask[2, 95, 0] = True  # one corner pixel: the distances reach the far corner
    ours = distance_transform_edt(torch.from_numpy(mask), spacing=(1.0, 0.75)).numpy()
    np.testing.assert_allclose(ours, scipy_edt(mask, (1.0, 0.75)), atol=1e-4)
    assert ours[2, 0, 79] == pytest.approx(np.hypot(95, 79 * 0.75), abs=1e-4)


def test_scipys_convention_is_the_transform_of_the_zeros() -> None:
    x = np.random.default_rng(1).integers(0, 3, (2, 15, 17))  # scipy: distance of non-zeros to the nearest zero
    ref = np.stack([ndimage.distance_transform_edt(x[i], sampling=(2.0, 1.0)) for i in range(2)])
    ours = distance_transform_edt(torch.from_numpy(x) == 0, spacing=[2.0, 1.0])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_one_true_element_gives_the_euclidean_formula(dim: int) -> None:
    shape = SHAPES[dim][1:]
    centre = tuple(s // 3 for s in shape)
    mask = torch.zeros(1, *shape, dtype=torch.bool)
    mask[(0, *centre)] = True
    sp = SPACINGS[dim]
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    expected = torch.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, sp)))
    torch.testing.assert_close(distance_transform_edt(mask, sp)[0].double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(squared_distance_transform(mask, sp)[0].double(), expected**2, atol=1e-3, rtol=1e-6)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_empty_and_full_masks_give_zero_and_samples_are_independent(dim: int) -> None:
    shape = SHAPES[dim]
    mask = torch.from_numpy(random_mask(shape, 0.2, seed=5))
    mask[0] = False  # empty: no True element to measure to
    mask[1] = True  # full: every element is True
    out = distance_transform_edt(mask, spacing=SPACINGS[dim])
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (out[1] == 0).all()
    if shape[0] > 2:  # the third sample is unaffected by its empty and full neighbours
        np.testing.assert_allclose(out[2:].numpy(), scipy_edt(mask[2:].numpy(), SPACINGS[dim]), atol=1e-4)
    sd = signed_distance(mask)
    assert (sd[0] == 0).all() and (sd[1] == 0).all()


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("spaced", [False, True])
def test_signed_distance_is_kervadecs_one_hot2dist(dim: int, spaced: bool) -> None:
    mask = random_mask(SHAPES[dim], 0.35, seed=7 + dim)
    sampling = SPACINGS[dim] if spaced else None
    ours = signed_distance(torch.from_numpy(mask), sampling).numpy()
    ref = np.stack([one_hot2dist(mask[i], sampling) for i in range(mask.shape[0])])
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert (ours[~mask] > 0).all()  # positive outside
    if not spaced:  # on the unit grid: 0 on the inner contour, negative deeper inside
        assert (ours[mask] <= 0).all()


@pytest.mark.parametrize("spatial", [(13, 17), (5, 7, 9)])
def test_signed_distance_equals_monais_boundary_loss_map(spatial) -> None:
    losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(11)
    target = (torch.rand(2, 3, *spatial, generator=g) < 0.3).float()
    target[0, 1] = 0  # an empty class
    target[1, 2] = 1  # a full class
    ref = losses.BoundaryLoss().compute_distance_map(target)
    ours = signed_distance(target.flatten(0, 1) > 0.5).view_as(target)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("spaced", [False, True])
def test_long_lines_take_the_two_level_pass_and_equal_scipy(spaced: bool) -> None:
    # lines of >= 384 elements along the min-plus axis go through the two-level (Monge) pass
    n = _distance._TWO_LEVEL_FROM + 77  # not a multiple of the block
    rng = np.random.default_rng(23)
    mask = rng.random((3, 12, n)) < 0.01
    mask[1] = False
    mask[1, 5, n - 1] = True  # one site at the end: minimisers far from most rows
    mask[2] = ndimage.gaussian_filter(rng.random((12, n)), 4) > 0.56  # blobs and long empty stretches
    sampling = (1.7, 0.45) if spaced else None
    ours = distance_transform_edt(torch.from_numpy(mask), spacing=sampling)
    np.testing.assert_allclose(ours.numpy(), scipy_edt(mask, sampling), atol=1e-4)


@pytest.mark.parametrize("s", [1.0, 0.37])
def test_two_level_pass_equals_the_full_min_plus(s: float) -> None:
    # adversarial lines for the monotone-minimiser argument: inf columns, all-inf lines, ties
    g = torch.Generator().manual_seed(29)
    n = 421
    lines = torch.randint(0, 60, (40, n), generator=g).float() ** 2
    lines[torch.rand(40, n, generator=g) < 0.7] = float("inf")  # columns without sites
    lines[3] = float("inf")
    lines[4] = float("inf")
    lines[4, 0] = 0.0  # one site at the start
    lines[5] = 7.0  # every column ties
    lines[6, :] = float("inf")
    lines[6, n - 1] = 4.0
    full = _distance._minplus_brute(lines, s)
    for block in (8, 32, 57):
        for integer, bound in ((False, None), (True, None), (True, 60**2 + n**2)) if s == 1.0 else ((False, None),):
            got = _distance._minplus_two_level(lines, s, block, integer=integer, bound=bound)
            torch.testing.assert_close(got, full, rtol=1e-6, atol=0)


def test_chunked_and_unchunked_passes_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = torch.from_numpy(random_mask((4, 19, 21, 10), 0.1, seed=13))
    whole = distance_transform_edt(mask, spacing=(1.0, 2.0, 0.5))
    long = torch.from_numpy(random_mask((2, 5, 400), 0.02, seed=14))
    long_whole = distance_transform_edt(long)
    monkeypatch.setitem(_distance._CHUNK_ELEMENTS, "cpu", 1)  # one line per chunk
    torch.testing.assert_close(distance_transform_edt(mask, spacing=(1.0, 2.0, 0.5)), whole, rtol=0, atol=0)
    torch.testing.assert_close(distance_transform_edt(long), long_whole, rtol=0, atol=0)


def test_runs_on_the_meta_device_so_it_reads_no_values_on_the_host() -> None:
    # every step is a tensor op: on 'meta' tensors (shapes only) any host read of a value would raise
    mask = torch.empty(2, 6, 7, 8, dtype=torch.bool, device="meta")
    out = distance_transform_edt(mask, spacing=(1.0, 2.0, 3.0))
    assert out.device.type == "meta" and out.shape == mask.shape and out.dtype == torch.float32
    assert signed_distance(mask).shape == mask.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stays_on_the_device_without_a_sync() -> None:
    mask = random_mask((4, 64, 48), 0.05, seed=17)
    x = torch.from_numpy(mask).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = distance_transform_edt(x, spacing=(1.0, 0.5))
        sd = signed_distance(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == x.device and sd.device == x.device
    np.testing.assert_allclose(out.cpu().numpy(), scipy_edt(mask, (1.0, 0.5)), atol=1e-4)


@pytest.mark.compile
def test_compiled_fullgraph_equals_eager() -> None:
    mask = torch.from_numpy(random_mask((3, 6, 9, 11), 0.15, seed=19))
    mask[1] = False
    fn = torch.compile(lambda m: (signed_distance(m, (1.0, 2.0, 0.5)), distance_transform_edt(m)), fullgraph=True)
    sd, d = fn(mask)
    torch.testing.assert_close(sd, signed_distance(mask, (1.0, 2.0, 0.5)), rtol=0, atol=1e-5)
    np.testing.assert_allclose(d.numpy(), scipy_edt(mask.numpy()), atol=1e-4)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InputError, match=r"bool tensor.*target > 0\.5"):
        distance_transform_edt(torch.zeros(2, 4, 4))
    with pytest.raises(InputError, match=r"\(N, \*S\).*mask\[None\]"):
        distance_transform_edt(torch.zeros(4, dtype=torch.bool))
    with pytest.raises(InputError, match="1 to 3 spatial axes"):
        signed_distance(torch.zeros(1, 2, 2, 2, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="spacing has 3 entries but the mask has 2 spatial axes"):
        distance_transform_edt(torch.zeros(1, 4, 4, dtype=torch.bool), spacing=(1, 2, 3))
    with pytest.raises(InputError, match="finite and > 0"):
        distance_transform_edt(torch.zeros(1, 4, 4, dtype=torch.bool), spacing=(1.0, 0.0))
    with pytest.raises(InputError, match=r"torch\.Tensor"):
        distance_transform_edt(np.zeros((1, 4), bool))  # type: ignore[arg-type]
