"""A MONAI training loop: a UNet from monai.networks, MetaTensor images and float labels, a compiled loss.

    python examples/monai_loop.py                  # 20 steps, 2D 64x64, 3 classes
    python examples/monai_loop.py --steps 3 --size 32 --dims 3
    SEGLOSS_EXAMPLE_SMALL=1 python examples/monai_loop.py   # the sizes the test suite uses

MONAI's loaders hand over ``MetaTensor``s (a tensor subclass carrying the affine and the file
name) and labels as float class ids (N, 1, *S). The criterion takes both as they are: the
MetaTensors are unwrapped to plain tensors before its compiled graph (the loss comes back as a
plain tensor), and whole-number float ids count as class ids in multiclass mode.
``compile=True`` compiles on the CPU too (the default "auto" compiles on accelerators only).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
from monai.data import MetaTensor
from monai.networks.nets import UNet

from segloss_registry import CompileWarning, build_loss


def batch(n: int, size: int, dims: int, classes: int, g: torch.Generator) -> tuple[MetaTensor, MetaTensor]:
    """MetaTensor images (N, 1, *S) and float labels (N, 1, *S): a ball of class 1, a box of class 2."""
    axes = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij")
    labels = torch.zeros(n, 1, *[size] * dims)
    for i in range(n):
        for cls in range(1, classes):
            c = torch.randint(size // 4, 3 * size // 4, (dims,), generator=g).float()
            r = float(torch.randint(size // 8 + 1, size // 4 + 1, (1,), generator=g))
            if cls % 2:
                region = sum((a - ci) ** 2 for a, ci in zip(axes, c)) <= r * r
            else:
                region = torch.stack([(a - ci).abs() <= r for a, ci in zip(axes, c)]).all(0)
            labels[i, 0][region] = float(cls)
    images = labels / (classes - 1) + 0.3 * torch.randn(labels.shape, generator=g)
    affine = torch.diag(torch.tensor([1.5] * dims + [1.0]))  # 1.5 mm voxels, as a loader would record
    name = {"filename_or_obj": "synthetic.nii.gz"}
    return MetaTensor(images, affine=affine, meta=dict(name)), MetaTensor(labels, affine=affine, meta=dict(name))


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("SEGLOSS_EXAMPLE_SMALL") == "1"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3 if small else 20)
    ap.add_argument("--size", type=int, default=16 if small else 64)
    ap.add_argument("--dims", type=int, default=2, choices=(2, 3))
    ap.add_argument("--batch", type=int, default=2 if small else 4)
    args = ap.parse_args(argv)
    classes = 3

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = UNet(spatial_dims=args.dims, in_channels=1, out_channels=classes, channels=(8, 16, 32), strides=(2, 2),
                 num_res_units=1)
    criterion = build_loss("ce + dice", mode="multiclass", compile=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # a fallback to eager would be a bug here
        for step in range(args.steps):
            images, labels = batch(args.batch, args.size, args.dims, classes, g)
            start = time.perf_counter()
            opt.zero_grad()
            logits = model(images)  # a MetaTensor too: MONAI's layers keep the subclass
            loss = criterion(logits, labels)
            loss.backward()
            opt.step()
            terms = " ".join(f"{k}={float(v):.4f}" for k, v in criterion.last_terms.items())
            print(f"step {step}: loss={loss.item():.4f} ({terms}) {type(logits).__name__} -> "
                  f"{type(loss).__name__}, {time.perf_counter() - start:.2f} s")
    print(f"criterion {criterion.spec!r}: compiled={criterion.uses_compile(torch.device('cpu'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
