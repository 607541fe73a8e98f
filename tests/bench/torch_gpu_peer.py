"""GPU peer for scadles-bench_gpu: PyTorch eager on the same GPU, the same work.

Models: ResNet-18 and VGG-19 in their CIFAR forms (the twins in tests/golden/models.py of
engine/models.c), 32x32x3 inputs, 10 classes, one training step = forward, cross-entropy, backward,
SGD (lr 0.05, momentum 0.9, weight decay 5e-4), at batch 64 and 128, in three modes:
    fp32  float32 NCHW, TF32 off (cudnn.allow_tf32 = matmul.allow_tf32 = False: what we run)
    cl    fp32 with channels_last memory format
    amp   torch.autocast(float16) + GradScaler, channels_last (the usual fast recipe)
Top-k: torch.topk(|x|, k, sorted=False) on 1M/10M/25M normal(0, 1e-3) floats at ratio 0.01 and 0.1
(|x| precomputed: the selection alone), validated first (k entries whose magnitudes are the k largest).
Times: CUDA events around --steps steps (models) or --reps calls (topk) after --warmup.

Output, one line each, in the format scadles-bench_gpu prints (scripts/bench_gpu.sh pairs them):
    torch model <name> batch <b> mode <fp32|cl|amp> images_per_s <float>
    torch topk n <n> r <ratio> ms <float>
Run with the interpreter that has a CUDA build of torch (e.g. /usr/bin/python3 on the GPU machine).
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
import torch  # noqa: E402
import models  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--models", default="resnet18,vgg19")
ap.add_argument("--batches", default="64,128")
ap.add_argument("--modes", default="fp32,cl,amp")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--sizes", default="1048576,10485760,26214400")
ap.add_argument("--ratios", default="0.01,0.1")
ap.add_argument("--reps", type=int, default=20)
ap.add_argument("--only", default="models,topk")
a = ap.parse_args()

if not torch.cuda.is_available():
    print("torch_gpu_peer: skipped: no CUDA device visible to torch " + torch.__version__)
    sys.exit(0)
dev = torch.device("cuda")
torch.backends.cudnn.benchmark = True
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
print(f"torch_gpu_peer: torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)


def cuda_time(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps * 1e-3  # seconds per call


def bench_model(name, batch, mode):
    torch.manual_seed(0)
    net, shape = models.build(name, 10)
    net = net.to(dev).train()
    cl = mode in ("cl", "amp")
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, *shape, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = torch.cuda.amp.GradScaler(enabled=mode == "amp")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=mode == "amp"):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    first = step().item()
    if not math.isfinite(first):
        print(f"torch_gpu_peer: VALIDATION FAILED: {name} {mode}: loss {first}")
        sys.exit(1)
    t = cuda_time(step, a.warmup, a.steps)
    print(f"torch model {name} batch {batch} mode {mode} images_per_s {batch / t:.1f}", flush=True)


def bench_topk(n, r):
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, device=dev, generator=g) * 1e-3
    ax = x.abs()
    k = max(1, math.ceil(r * n))
    vals, idx = torch.topk(ax, k, sorted=False)
    # validation: exactly k distinct indices, values |x| there, none left out larger than the smallest kept
    assert idx.numel() == k and torch.unique(idx).numel() == k, "topk: wrong count or duplicate indices"
    assert torch.equal(vals, ax[idx]), "topk: values are not |x| at the indices"
    mask = torch.ones(n, dtype=torch.bool, device=dev)
    mask[idx] = False
    if k < n:
        assert ax[mask].max() <= vals.min(), "topk: an unselected entry is larger than a selected one"
    t = cuda_time(lambda: torch.topk(ax, k, sorted=False), 3, a.reps)
    print(f"torch topk n {n} r {r:g} ms {t * 1e3:.4f}", flush=True)


if "models" in a.only:
    for name in a.models.split(","):
        for b in (int(v) for v in a.batches.split(",")):
            for mode in a.modes.split(","):
                bench_model(name, b, mode)
if "topk" in a.only:
    for n in (int(v) for v in a.sizes.split(",")):
        for r in (float(v) for v in a.ratios.split(",")):
            bench_topk(n, r)
