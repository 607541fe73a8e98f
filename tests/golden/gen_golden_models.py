#!/usr/bin/env python3
"""gen_golden_models.py: writes tests/data/golden_models.bin, one PyTorch training step of
ResNet-20 and VGG-11 (CIFAR forms, tests/golden/models.py) for tests/test_golden_models.c.

The full weights would make the file tens of MiB, so both sides build the starting point from a
formula (no stored weights) and the file keeps, per tensor after the step, its sum, its sum of
squares and 64 values at fixed positions; plus the logits and the loss. The formula, evaluated in
float64 and rounded to float32 (the C test does the same with libm):
    tensor t (state_dict order, buffers included, num_batches_tracked skipped), element i:
      conv/linear weight and bias:  b * sin(0.7 i + 1.3 t), b = 1/sqrt(fan_in)
      BN weight: 1 + 0.1 sin(0.7 i + 1.3 t)   BN bias: 0.1 cos(0.7 i + 1.3 t)
      running_mean: 0.1 sin(0.3 i + t)        running_var: 1 + 0.2 |sin(0.5 i + t)|
    input x (flat index j): sin(0.01 j) + 0.5 cos(0.003 j);  label of sample n: (3 n + 1) mod 10
    step: train mode, mean cross-entropy, SGD lr 0.1 momentum 0.9 weight decay 5e-4.
Record names: "<model>/logits", "<model>/loss", "<model>/meta" = [batch, c, h, w, classes, samples],
"<model>/sum/<tensor>", "<model>/sumsq/<tensor>", "<model>/pick/<tensor>" (after the step).
Run through scripts/golden.sh (needs python3-torch).
"""
import hashlib
import math
import os
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import models  # noqa: E402
from gen_golden import GoldenWriter  # noqa: E402

SAMPLES = 64
BATCH = 4


def formula_init(net):
    sd = net.state_dict()
    t = 0
    new = {}
    for name, v in sd.items():
        if name.endswith("num_batches_tracked"):
            new[name] = v
            continue
        i = np.arange(v.numel(), dtype=np.float64)
        leaf = name.rsplit(".", 1)[1]
        owner = net.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(owner, torch.nn.BatchNorm2d):
            if leaf == "weight":
                a = 1 + 0.1 * np.sin(0.7 * i + 1.3 * t)
            elif leaf == "bias":
                a = 0.1 * np.cos(0.7 * i + 1.3 * t)
            elif leaf == "running_mean":
                a = 0.1 * np.sin(0.3 * i + t)
            else:
                a = 1 + 0.2 * np.abs(np.sin(0.5 * i + t))
        else:
            w = owner.weight
            fan_in = w[0].numel()
            a = np.sin(0.7 * i + 1.3 * t) / math.sqrt(fan_in)
        new[name] = torch.from_numpy(a.astype(np.float32)).reshape(v.shape)
        t += 1
    net.load_state_dict(new)


def one(g, name):
    torch.manual_seed(0)
    net, shape = models.build(name)
    formula_init(net)
    n = BATCH
    j = np.arange(n * int(np.prod(shape)), dtype=np.float64)
    x = torch.from_numpy((np.sin(0.01 * j) + 0.5 * np.cos(0.003 * j)).astype(np.float32)).reshape(n, *shape)
    y = torch.tensor([(3 * k + 1) % 10 for k in range(n)])
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    net.train()
    logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    g.i32(f"{name}/meta", [n, shape[0], shape[1], shape[2], 10, SAMPLES])
    g.f32(f"{name}/logits", logits.detach())
    g.f32(f"{name}/loss", loss.detach().reshape(1))
    for tname, v in net.state_dict().items():
        if tname.endswith("num_batches_tracked"):
            continue
        flat = v.detach().reshape(-1).to(torch.float64)
        g.f32(f"{name}/sum/{tname}", flat.sum().reshape(1))
        g.f32(f"{name}/sumsq/{tname}", (flat * flat).sum().reshape(1))
        idx = [(k * 7919) % flat.numel() for k in range(SAMPLES)]
        g.f32(f"{name}/pick/{tname}", flat[idx])


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    g = GoldenWriter()
    for m in ("resnet20", "vgg11"):
        one(g, m)
    out = os.path.normpath(os.path.join(here, "..", "data", "golden_models.bin"))
    data = g.tobytes()
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(out + ".tmp", out)
    print("gen_golden_models.py: %d records, %d bytes -> %s\nsha256 %s" % (len(g.records), len(data), out,
                                                                           hashlib.sha256(data).hexdigest()))


if __name__ == "__main__":
    main()
