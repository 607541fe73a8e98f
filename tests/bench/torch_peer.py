"""CPU training-throughput peer for scadles-bench: PyTorch eager fp32, same model, batch and
thread count, SGD momentum 0.9 + weight decay, random data. Prints one line:
    samples_per_s=<float> step_ms=<float> best_ms=<float> peak_rss_kb=<int> base_rss_kb=<int>
    threads=<int> torch=<version>
peak_rss_kb is the process's peak resident memory (VmHWM), base_rss_kb its resident memory after
importing torch and before building the model: what scadles-bench --one prints for ours.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
import torch  # noqa: E402
import models  # noqa: E402



def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--warmup", type=int, default=5)
a = ap.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(0)
base_kb = status_kb("VmRSS")
net, shape = models.build(a.model)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x = torch.randn(a.batch, *shape)
y = torch.randint(0, 10, (a.batch,))
loss_fn = torch.nn.CrossEntropyLoss()


def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    return loss


for _ in range(a.warmup):
    step()
best = float("inf")
t_all = time.perf_counter()
for _ in range(a.iters):
    t0 = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - t0)
mean = (time.perf_counter() - t_all) / a.iters
print(f"samples_per_s={a.batch / mean:.1f} step_ms={mean * 1e3:.3f} best_ms={best * 1e3:.3f} "
      f"peak_rss_kb={status_kb('VmHWM')} base_rss_kb={base_kb} threads={torch.get_num_threads()} torch={torch.__version__}")
