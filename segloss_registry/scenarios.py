"""Benchmark and profiling scenarios: small TOML files in ``profiles/``.

A scenario names a loss spec and the inputs it runs on::

    name = "binary_bce_dice_2d"          # optional; the file name without .toml
    description = "binary segmentation, BCE + Dice, 2D"
    spec = "bce+dice"
    mode = "binary"                      # binary | multiclass | multilabel
    shape = [8, 1, 256, 256]             # the logits' shape (N, C, *S)
    dtype = "float32"                    # float32 | float64 | bfloat16 | float16
    device = "cpu"                       # "cuda" when there is one
    steps = 20                           # timed steps per candidate (segloss bench)
    warmup = 3                           # untimed steps first
    [loss]                               # extra build_loss keywords (ignore_index, ...)
    ignore_index = 255
    [profile]                            # torch.profiler schedule (segloss profile)
    wait = 1
    warmup = 1
    active = 3

``segloss bench`` and ``segloss profile`` take a scenario (a path, or a name found in
``./profiles/`` or the repository's ``profiles/``) wherever they take a spec.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ._errors import SeglossError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["Scenario", "load_scenario", "find_scenario", "scenario_dirs", "parse_shape", "DTYPES"]

DTYPES = ("float32", "float64", "bfloat16", "float16")
_TOP_KEYS = ("name", "description", "spec", "mode", "shape", "dtype", "device", "steps", "warmup", "loss", "profile")
_PROFILE_KEYS = ("wait", "warmup", "active")


@dataclass(frozen=True)
class Scenario:
    """One workload: a loss spec and the inputs it runs on (see the module docstring)."""

    name: str
    spec: str
    mode: str = "binary"
    shape: tuple[int, ...] = (8, 1, 256, 256)
    dtype: str = "float32"
    device: str = "cpu"
    steps: int = 20
    warmup: int = 3
    description: str = ""
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    profile_wait: int = 1
    profile_warmup: int = 1
    profile_active: int = 3
    path: Path | None = None

    def with_overrides(self, **changes: Any) -> Scenario:
        """A copy with every change that is not None applied."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None and k in names})


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up: ``./profiles`` then the repository's ``profiles/``."""
    dirs = [Path.cwd() / "profiles", Path(__file__).resolve().parents[1] / "profiles"]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_scenario(name_or_path: str) -> Path | None:
    """The TOML file that ``name_or_path`` names, or None when it is not a scenario (a spec)."""
    p = Path(name_or_path)
    if name_or_path.endswith(".toml"):
        if not p.is_file():
            raise SeglossError(f"scenario file {name_or_path} does not exist")
        return p
    if "/" in name_or_path or not name_or_path.replace("_", "").replace("-", "").isalnum():
        return None
    for d in scenario_dirs():
        candidate = d / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    return None


def parse_shape(text: str | Any) -> tuple[int, ...]:
    """``"8x1x512x512"``, ``"8,1,512,512"`` or a list -> ``(8, 1, 512, 512)``."""
    items = text if isinstance(text, (list, tuple)) else str(text).replace(",", "x").split("x")
    try:
        shape = tuple(int(s) for s in items)
    except (TypeError, ValueError):
        raise SeglossError(f"shape {text!r} is not a list of integers; write it like 8x1x512x512") from None
    if len(shape) < 3 or len(shape) > 5 or any(s < 1 for s in shape):
        raise SeglossError(f"shape {text!r} must be (N, C, *S) with 1 to 3 spatial axes, every size >= 1")
    return shape


def load_scenario(path: str | Path) -> Scenario:
    """Read and check one scenario file; a ``SeglossError`` names the file and the bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SeglossError(f"scenario {path}: cannot read it ({exc})") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise SeglossError(f"scenario {path}: unknown key '{key}'{did_you_mean(key, _TOP_KEYS)}; "
                               f"keys: {', '.join(_TOP_KEYS)}")
    if not isinstance(data.get("spec"), str):
        raise SeglossError(f"scenario {path}: 'spec' (a loss spec string, as build_loss takes) is required")
    prof = data.get("profile", {})
    for key in prof:
        if key not in _PROFILE_KEYS:
            raise SeglossError(f"scenario {path}: unknown key 'profile.{key}'{did_you_mean(key, _PROFILE_KEYS)}")
    dtype = data.get("dtype", "float32")
    if dtype not in DTYPES:
        raise SeglossError(f"scenario {path}: dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    ints: dict[str, Any] = {k: data[k] for k in ("steps", "warmup") if k in data}
    ints.update({f"profile_{k}": v for k, v in prof.items()})
    for k, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k in ("steps", "profile_active") else 0):
            raise SeglossError(f"scenario {path}: {k.replace('profile_', 'profile.')} must be a non-negative "
                               f"integer (>= 1 for steps and active), got {v!r}")
    return Scenario(
        name=str(data.get("name", path.stem)),
        spec=data["spec"],
        mode=str(data.get("mode", "binary")),
        shape=parse_shape(data.get("shape", [8, 1, 256, 256])),
        dtype=dtype,
        device=str(data.get("device", "cpu")),
        description=str(data.get("description", "")),
        loss_kwargs=dict(data.get("loss", {})),
        path=path,
        **ints,
    )
