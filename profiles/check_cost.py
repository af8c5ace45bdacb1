"""What the every-call value checks cost: one training step with check_inputs="auto" and "never".

    python profiles/check_cost.py [--shape 8 1 512 512] [--rounds 20]

The two criteria are timed interleaved (one step of each per round), so a shared machine slows
both alike; the ratio is the median of the per-round ratios (auto / never). CPU only here:
on an accelerator "auto" reads the counts one call late and adds no host sync.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segloss_registry import build_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="bce+dice+focal")
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 1, 512, 512])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(*args.shape, requires_grad=True)
    t = (torch.rand(*args.shape) > 0.5).float()
    print(f"{args.spec}, logits {'x'.join(map(str, args.shape))} float32, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    for compiled in (True, False):
        crits = {k: build_loss(args.spec, compile=compiled, check_inputs=k) for k in ("auto", "never")}
        for c in crits.values():
            for _ in range(3):
                c(x, t).backward()
        times: dict[str, list[float]] = {k: [] for k in crits}
        for _ in range(args.rounds):
            for k, c in crits.items():
                t0 = time.perf_counter()
                c(x, t).backward()
                times[k].append(time.perf_counter() - t0)
        ratio = statistics.median(a / b for a, b in zip(times["auto"], times["never"]))
        kind = "compiled" if compiled else "eager   "
        print(f"  {kind}: checks on {statistics.median(times['auto']) * 1e3:7.2f} ms, "
              f"off {statistics.median(times['never']) * 1e3:7.2f} ms, per-round ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
