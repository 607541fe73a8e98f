"""Top-k peer for scadles-bench_topk: PyTorch's torch.topk on the CPU, same sizes, ratios and
thread count, float32 gradient-like data (normal * 1e-3). Validates each result (exactly k entries
whose magnitudes are the k largest), then times two things, median and best over --reps after
--warmup calls:
    topk_ms  torch.topk(|x|, k, sorted=False) with |x| precomputed (the selection alone)
    full_ms  the whole job the C kernel does: |x|, torch.topk, and gathering the signed values
One line per (n, ratio):
    n=<int> ratio=<float> k=<int> topk_ms=<float> topk_best_ms=<float> full_ms=<float> threads=<int> torch=<version>
Run with the interpreter that has torch (Debian's /usr/bin/python3).
"""
import argparse
import math
import statistics
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="1048576,10485760,26214400", help="comma-separated element counts")
ap.add_argument("--ratios", default="0.01,0.1")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=1)
a = ap.parse_args()

torch.set_num_threads(a.threads)
gen = torch.Generator().manual_seed(0)


def timed(fn):
    for _ in range(a.warmup):
        fn()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3, min(ts) * 1e3


for n in [int(s) for s in a.sizes.split(",")]:
    x = torch.randn(n, generator=gen) * 1e-3
    ax = x.abs()
    for r in [float(s) for s in a.ratios.split(",")]:
        t = r * n
        k = min(n, max(1, math.ceil(t - 1e-9 * t)))
        v, i = torch.topk(ax, k, sorted=False)
        thr = v.min()
        if v.numel() != k or (ax > thr).sum().item() > k or (ax >= thr).sum().item() < k:
            raise SystemExit(f"torch.topk result failed validation at n={n} k={k}")

        def only():
            return torch.topk(ax, k, sorted=False)

        def full():
            _, idx = torch.topk(x.abs(), k, sorted=False)
            return idx, x[idx]

        tm, tb = timed(only)
        fm, _ = timed(full)
        print(f"n={n} ratio={r:g} k={k} topk_ms={tm:.3f} topk_best_ms={tb:.3f} full_ms={fm:.3f} "
              f"threads={torch.get_num_threads()} torch={torch.__version__}", flush=True)
