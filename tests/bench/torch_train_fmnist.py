"""PyTorch reference for the Fashion-MNIST CNN run of scadles-train: same model
(tests/golden/models.py), same data (Debian's dataset-fashion-mnist), normalisation, batch, SGD
settings and schedule; prints test top-1 per epoch. Usage:
    /usr/bin/python3 tests/bench/torch_train_fmnist.py [--epochs 5] [--lr 0.01] [--schedule constant|cosine]
"""
import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
import models  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=5)
ap.add_argument("--lr", type=float, default=0.01)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--schedule", default="constant")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def load(prefix):
    with gzip.open(os.path.join(a.root, prefix + "-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(a.root, prefix + "-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (torch.from_numpy(x.astype(np.float32)) / 255 - 0.2860) / 0.3530
    return x, torch.from_numpy(y.astype(np.int64))


xtr, ytr = load("train")
xte, yte = load("t10k")
net, _ = models.build("fmnist_cnn")
opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
per_epoch = len(xtr) // a.batch
total = per_epoch * a.epochs
step = 0
for epoch in range(a.epochs):
    t0 = time.time()
    net.train()
    perm = torch.randperm(len(xtr))
    for i in range(per_epoch):
        if a.schedule == "cosine":
            for gr in opt.param_groups:
                gr["lr"] = 0.5 * a.lr * (1 + math.cos(math.pi * step / total))
        idx = perm[i * a.batch:(i + 1) * a.batch]
        loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    net.eval()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    print(f"epoch {epoch + 1}: top-1 {100 * acc:.2f}%  train time {time.time() - t0:.1f} s", flush=True)
