"""The cheap every-call checks (``value_flags``) are bad exactly when the counts are.

Each case builds a clean batch, plants one defect (or none) at a pixel that counts or at an
ignored one, and states in the test whether the batch is bad; the flags (eager and inside the
criterion's compiled graph) and the counts must both agree with that statement.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest
import torch

from segloss_registry import CompileWarning, InputError, build_loss
from segloss_registry._checks import flags_bad, ids_form, value_counts, value_flags

C = 3
IGNORE = 255

# (mode, target kind, from_logits)
LAYOUTS = [
    ("binary", "float", True),
    ("binary", "uint8", True),
    ("binary", "float", False),
    ("multilabel", "float", True),
    ("multiclass", "int64", True),
    ("multiclass", "int32", True),
    ("multiclass", "float_ids", True),
    ("multiclass", "onehot", True),
    ("multiclass", "int64", False),
]

# defect -> (where it goes, whether it makes the batch bad when it lands on a pixel that counts)
DEFECTS: dict[str, tuple[str, bool]] = {
    "none": ("", False),
    "nan_logit": ("logits", True),
    "pos_inf_logit": ("logits", True),
    "neg_inf_logit": ("logits", True),
    "big_finite_logit": ("logits", False),  # 3e38 is a valid logit
    "target_above_one": ("target", True),  # 1 + 2**-23, the next float32 after 1
    "target_below_zero": ("target", True),  # -1e-45, the smallest negative float32
    "target_minus_zero": ("target", False),
    "target_nan": ("target", True),
    "target_inf": ("target", True),
    "target_255": ("target", True),
    "id_equal_to_C": ("target", True),
    "id_minus_one": ("target", True),
    "id_fraction": ("target", True),
    "onehot_off": ("target", True),
    "prob_above_one": ("logits", True),
    "prob_sum_off": ("logits", True),
    "mask_negative": ("mask", True),
    "mask_nan": ("mask", True),
    "mask_inf": ("mask", True),
}


def _clean(mode: str, kind: str, from_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ch = 1 if mode == "binary" else C
    x = torch.randn(2, ch, 5, 6, generator=g)
    if not from_logits:
        x = x.softmax(1) if mode == "multiclass" else x.sigmoid()
    if mode == "multiclass" and kind != "onehot":
        ids = torch.randint(0, C, (2, 5, 6), generator=g)
        t = {"int64": ids, "int32": ids.int(), "float_ids": ids.float()}[kind]
    elif mode == "multiclass":
        t = torch.nn.functional.one_hot(torch.randint(0, C, (2, 5, 6), generator=g), C).permute(0, 3, 1, 2).float()
    else:
        t = (torch.rand(x.shape, generator=g) > 0.5).float()
        if kind == "uint8":
            t = t.to(torch.uint8)
    return x, t


def _applies(defect: str, mode: str, kind: str, from_logits: bool, mask: str) -> bool:
    """Whether the defect can be planted in this layout at all."""
    ids = mode == "multiclass" and kind != "onehot"
    need = {
        "target_above_one": (not ids and kind == "float") or kind == "onehot",
        "target_below_zero": not ids and kind != "uint8",
        "target_minus_zero": kind == "float",
        "target_nan": kind in ("float", "float_ids", "onehot"),
        "target_inf": kind in ("float", "float_ids", "onehot"),
        "target_255": not ids or kind != "float_ids",
        "id_equal_to_C": ids,
        "id_minus_one": ids and kind != "uint8",
        "id_fraction": kind == "float_ids",
        "onehot_off": kind == "onehot",
        "prob_above_one": not from_logits,
        "prob_sum_off": not from_logits and mode == "multiclass",
        "big_finite_logit": from_logits,
        "mask_negative": mask in ("float", "int"),
        "mask_nan": mask == "float",
        "mask_inf": mask == "float",
    }
    return need.get(defect, True)


def _plant(defect: str, x: torch.Tensor, t: torch.Tensor, m: torch.Tensor | None, at: tuple[int, int, int],
           kind: str) -> None:
    """Write one defect at pixel ``at`` (in place)."""
    n, h, w = at
    if defect == "none":
        return
    if defect == "nan_logit":
        x[n, 0, h, w] = float("nan")
    elif defect == "pos_inf_logit":
        x[n, 0, h, w] = float("inf")
    elif defect == "neg_inf_logit":
        x[n, 0, h, w] = float("-inf")
    elif defect == "big_finite_logit":
        x[n, 0, h, w] = 3e38
    elif defect == "prob_above_one":
        x[n, 0, h, w] = 1.0 + 2**-23
    elif defect == "prob_sum_off":
        x[n, 0, h, w] += 0.01
    elif defect.startswith("mask_"):
        assert m is not None
        m[n, h, w] = {"mask_negative": -1, "mask_nan": float("nan"), "mask_inf": float("inf")}[defect]
    else:
        idx = (n, h, w) if t.dim() == 3 else (n, 0, h, w)
        value = {
            "target_above_one": 1.0 + 2**-23, "target_below_zero": -1e-45, "target_minus_zero": -0.0,
            "target_nan": float("nan"), "target_inf": float("inf"), "target_255": 255, "id_equal_to_C": C,
            "id_minus_one": -1, "id_fraction": 1.5, "onehot_off": 0.5,
        }[defect]
        if defect == "onehot_off":
            t[n, :, h, w] = 0.5  # sums to 1.5 over the classes
        else:
            t[idx] = value


def _cases() -> list[tuple[Any, ...]]:
    out = []
    for (mode, kind, fl), defect, ignored, mask in itertools.product(
        LAYOUTS, DEFECTS, (False, True), ("none", "bool", "float", "int")
    ):
        if not _applies(defect, mode, kind, fl, mask):
            continue
        if ignored and kind == "onehot":
            continue  # ignore_index applies to ids and 0/1 maps, not to one-hot targets (refused)
        out.append((mode, kind, fl, defect, ignored, mask))
    return out


CASES = _cases()


def _batch(case: tuple[Any, ...]) -> tuple[Any, ...]:
    mode, kind, fl, defect, ignored, mask = case
    x, t = _clean(mode, kind, fl)
    m: torch.Tensor | None = None
    if mask == "bool":
        m = torch.ones(2, 5, 6, dtype=torch.bool)
    elif mask == "float":
        m = torch.full((2, 5, 6), 0.5)
    elif mask == "int":
        m = torch.ones(2, 5, 6, dtype=torch.int32)
    ii = IGNORE if ignored else None
    if ignored:  # another pixel holds the ignore label: it must not count as out of range
        t[(0, 0, 0) if t.dim() == 3 else (0, 0, 0, 0)] = IGNORE
    _plant(defect, x, t, m, (1, 2, 3), kind)
    bad = DEFECTS[defect][1] and not (ignored and defect == "target_255")  # 255 is then the ignore label
    return mode, fl, x, t, m, ii, bad


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_flags_are_bad_exactly_when_a_defect_counts(case: tuple[Any, ...]) -> None:
    mode, fl, x, t, m, ii, bad = _batch(case)
    counts = value_counts(x, t, m, mode, fl, ii).tolist()
    flags = value_flags(x, t, m, mode, fl, ii).tolist()
    assert any(counts) == bad, counts
    assert flags_bad(flags, mode, x.shape[1], fl, ids_form(x, t, mode)) == bad, flags


def test_the_case_list_covers_every_defect() -> None:
    assert {c[3] for c in CASES} == set(DEFECTS)


# one case per defect through a compiled criterion, planted in the third call (the first two are clean)
_COMPILED = {c[3]: c for c in CASES if not c[4] and c[5] == ("float" if c[3].startswith("mask_") else "none")}


@pytest.mark.parametrize("defect", sorted(_COMPILED))
def test_a_compiled_criterion_reports_a_defect_in_a_later_call(defect: str) -> None:
    mode, fl, x, t, m, ii, bad = _batch(_COMPILED[defect])
    spec = "ce+dice" if mode == "multiclass" else "bce+dice"
    if not fl:
        spec = "dice+tversky"
    crit = build_loss(spec, mode=mode, from_logits=fl, ignore_index=ii, compile=True)
    clean = _batch((*_COMPILED[defect][:3], "none", False, _COMPILED[defect][5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # a fallback to eager would hide what is under test
        for _ in range(2):
            crit(clean[2], clean[3], mask=clean[4])
        if bad:
            with pytest.raises(InputError):
                crit(x, t, mask=m)
        else:
            assert torch.isfinite(crit(x, t, mask=m))
    assert crit.uses_compile(x.device)
