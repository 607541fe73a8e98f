#!/usr/bin/env python3
"""gen_golden.py: writes tests/data/golden_ops.bin, the PyTorch reference values that
tests/test_golden_ops.c (every op) and the network test ("cnn/*") compare against, so CI needs no
PyTorch. The format and every record name are documented in docs/golden-format.md.

Run it through scripts/golden.sh (needs python3-torch; Debian's is /usr/bin/python3). Output is
deterministic: float32, one thread, a fixed seed per record group, so two runs give byte-identical
files (scripts/golden.sh --check verifies that against the committed file).
"""

import argparse
import hashlib
import os
import struct
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import FmnistCNN  # noqa: E402  (the engine's model twins, same state_dict names)

MAGIC = b"SDGOLD\0\0"
VERSION = 1
DTYPE_F32, DTYPE_I32 = 0, 1
MAX_NDIM, MAX_NAME = 8, 255


class GoldenWriter:
    """Collects named tensors in insertion order and serialises them (docs/golden-format.md)."""

    def __init__(self):
        self.records = []
        self.names = set()

    def add(self, name, t, dtype=None):
        if not isinstance(t, torch.Tensor):
            t = torch.tensor(t)
        # A copy: parameters and state_dict() views change under later optimizer steps.
        t = t.detach().cpu().clone().contiguous()
        if dtype is None:
            dtype = DTYPE_I32 if not t.is_floating_point() else DTYPE_F32
        if dtype == DTYPE_F32:
            t = t.to(torch.float32)
        else:
            t = t.to(torch.int32)
        nb = name.encode("ascii")
        assert 0 < len(nb) <= MAX_NAME and b"\0" not in nb, name
        assert name not in self.names, "duplicate record " + name
        assert t.dim() <= MAX_NDIM, name
        self.names.add(name)
        self.records.append((name, dtype, tuple(t.shape), t))

    def f32(self, name, t):
        self.add(name, t, DTYPE_F32)

    def i32(self, name, values):
        self.add(name, torch.tensor(values, dtype=torch.int32), DTYPE_I32)

    def tobytes(self):
        out = [MAGIC, struct.pack("<II", VERSION, len(self.records))]
        for name, dtype, shape, t in self.records:
            nb = name.encode("ascii")
            out.append(struct.pack("<I", len(nb)))
            out.append(nb)
            out.append(struct.pack("<II", dtype, len(shape)))
            out.append(struct.pack("<%dI" % len(shape), *shape))
            fmt = "<f4" if dtype == DTYPE_F32 else "<i4"
            out.append(t.numpy().astype(fmt, copy=False).tobytes())
        return b"".join(out)


def seed(group):
    """A fixed seed per record group, so adding a group never changes the others."""
    torch.manual_seed(zlib.crc32(group.encode("ascii")))


def upstream(y):
    """A random upstream gradient dy; the op's gradients are those of sum(y * dy)."""
    return torch.randn_like(y)


# ---- ops --------------------------------------------------------------------------------------

def conv_case(g, name, n, c, h, w, k, kh, kw, sh, sw, ph, pw, has_bias):
    seed(name)
    x = torch.randn(n, c, h, w, requires_grad=True)
    wt = (torch.randn(k, c, kh, kw) / (c * kh * kw) ** 0.5).requires_grad_()
    b = (torch.randn(k) * 0.1).requires_grad_() if has_bias else None
    y = F.conv2d(x, wt, b, stride=(sh, sw), padding=(ph, pw))
    dy = upstream(y)
    (y * dy).sum().backward()
    g.i32(name + "/meta", [n, c, h, w, k, kh, kw, sh, sw, ph, pw, int(has_bias)])
    g.f32(name + "/x", x)
    g.f32(name + "/w", wt)
    if has_bias:
        g.f32(name + "/b", b)
    g.f32(name + "/y", y)
    g.f32(name + "/dy", dy)
    g.f32(name + "/dx", x.grad)
    g.f32(name + "/dw", wt.grad)
    if has_bias:
        g.f32(name + "/db", b.grad)


def bn_train_case(g, name, n, c, h, w, eps=1e-5, momentum=0.1):
    seed(name)
    x = (torch.randn(n, c, h, w) * 2.0 + 0.5).requires_grad_()
    gamma = torch.empty(c).uniform_(0.5, 1.5).requires_grad_()
    beta = (torch.randn(c) * 0.2).requires_grad_()
    rm0 = torch.randn(c) * 0.1
    rv0 = torch.empty(c).uniform_(0.5, 1.5)
    rm, rv = rm0.clone(), rv0.clone()
    # native_batch_norm also returns the saved batch mean and 1/sqrt(biased var + eps).
    y, save_mean, save_invstd = torch.native_batch_norm(x, gamma, beta, rm, rv, True, momentum, eps)
    # The public API must agree with the native call (and is what the autograd below uses).
    rm_chk, rv_chk = rm0.clone(), rv0.clone()
    y_chk = F.batch_norm(x, rm_chk, rv_chk, gamma, beta, training=True, momentum=momentum, eps=eps)
    assert torch.equal(y, y_chk) and torch.equal(rm, rm_chk) and torch.equal(rv, rv_chk)
    dy = upstream(y)
    (y_chk * dy).sum().backward()
    g.i32(name + "/meta", [n, c, h, w])
    g.f32(name + "/hparams", [eps, momentum])
    g.f32(name + "/x", x)
    g.f32(name + "/gamma", gamma)
    g.f32(name + "/beta", beta)
    g.f32(name + "/running_mean0", rm0)
    g.f32(name + "/running_var0", rv0)
    g.f32(name + "/y", y)
    g.f32(name + "/running_mean", rm)
    g.f32(name + "/running_var", rv)
    g.f32(name + "/save_mean", save_mean)
    g.f32(name + "/save_invstd", save_invstd)
    g.f32(name + "/dy", dy)
    g.f32(name + "/dx", x.grad)
    g.f32(name + "/dgamma", gamma.grad)
    g.f32(name + "/dbeta", beta.grad)


def bn_eval_case(g, name, n, c, h, w, eps=1e-5):
    seed(name)
    x = torch.randn(n, c, h, w) * 2.0 + 0.5
    gamma = torch.empty(c).uniform_(0.5, 1.5)
    beta = torch.randn(c) * 0.2
    rm = torch.randn(c) * 0.5
    rv = torch.empty(c).uniform_(0.5, 4.0)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=eps)
    g.i32(name + "/meta", [n, c, h, w])
    g.f32(name + "/hparams", [eps, 0.1])
    g.f32(name + "/x", x)
    g.f32(name + "/gamma", gamma)
    g.f32(name + "/beta", beta)
    g.f32(name + "/running_mean", rm)
    g.f32(name + "/running_var", rv)
    g.f32(name + "/y", y)


def relu_case(g, name, n, c, h, w):
    seed(name)
    x = torch.randn(n, c, h, w, requires_grad=True)
    y = F.relu(x)
    dy = upstream(y)
    (y * dy).sum().backward()
    g.i32(name + "/meta", [n, c, h, w])
    for k, v in (("x", x), ("y", y), ("dy", dy), ("dx", x.grad)):
        g.f32(name + "/" + k, v)


def pool_case(g, name, kind, n, c, h, w, kh, kw, sh, sw, ph, pw):
    seed(name)
    x = torch.randn(n, c, h, w, requires_grad=True)
    if kind == "max":
        y, idx = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), return_indices=True)
    else:
        y = F.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode=False, count_include_pad=True)
    dy = upstream(y)
    (y * dy).sum().backward()
    g.i32(name + "/meta", [n, c, h, w, kh, kw, sh, sw, ph, pw])
    for k, v in (("x", x), ("y", y), ("dy", dy), ("dx", x.grad)):
        g.f32(name + "/" + k, v)
    if kind == "max":
        g.add(name + "/indices", idx, DTYPE_I32)  # PyTorch's: flat index within the h*w plane


def gap_case(g, name, n, c, h, w):
    seed(name)
    x = torch.randn(n, c, h, w, requires_grad=True)
    y = F.adaptive_avg_pool2d(x, 1).reshape(n, c)
    dy = upstream(y)
    (y * dy).sum().backward()
    g.i32(name + "/meta", [n, c, h, w])
    for k, v in (("x", x), ("y", y), ("dy", dy), ("dx", x.grad)):
        g.f32(name + "/" + k, v)


def linear_case(g, name, n, fin, fout, has_bias):
    seed(name)
    x = torch.randn(n, fin, requires_grad=True)
    w = (torch.randn(fout, fin) / fin ** 0.5).requires_grad_()
    b = (torch.randn(fout) * 0.1).requires_grad_() if has_bias else None
    y = F.linear(x, w, b)
    dy = upstream(y)
    (y * dy).sum().backward()
    g.i32(name + "/meta", [n, fin, fout, int(has_bias)])
    g.f32(name + "/x", x)
    g.f32(name + "/w", w)
    if has_bias:
        g.f32(name + "/b", b)
    g.f32(name + "/y", y)
    g.f32(name + "/dy", dy)
    g.f32(name + "/dx", x.grad)
    g.f32(name + "/dw", w.grad)
    if has_bias:
        g.f32(name + "/db", b.grad)


def xent_case(g, name, n, classes, scale, shift):
    seed(name)
    logits = (torch.randn(n, classes) * scale + shift).requires_grad_()
    labels = torch.randint(0, classes, (n,))
    loss = F.cross_entropy(logits, labels)  # mean over the batch
    loss.backward()
    g.i32(name + "/meta", [n, classes])
    g.f32(name + "/logits", logits)
    g.add(name + "/labels", labels, DTYPE_I32)
    g.f32(name + "/probs", F.softmax(logits.detach(), dim=1))
    g.f32(name + "/loss", loss.reshape(1))
    g.f32(name + "/dlogits", logits.grad)


def sgd_case(g, name, shape, lr, momentum, dampening, weight_decay, nesterov, steps=3):
    seed(name)
    w = torch.randn(*shape)
    grads = [torch.randn(*shape) for _ in range(steps)]
    p = nn.Parameter(w.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening,
                          weight_decay=weight_decay, nesterov=nesterov)
    count = p.numel()
    g.i32(name + "/meta", [count, int(nesterov), steps])
    g.f32(name + "/hparams", [lr, momentum, dampening, weight_decay])
    g.f32(name + "/w0", w)
    for t in range(1, steps + 1):
        p.grad = grads[t - 1].clone()
        opt.step()
        g.f32(name + "/g%d" % t, grads[t - 1])
        g.f32(name + "/w%d" % t, p.detach())


# ---- the Fashion-MNIST CNN (tests/golden/models.py) --------------------------------------------

def cnn_features(model, x):
    """The two pooled activations (recorded to help localise a mismatch in the C network)."""
    p1 = F.max_pool2d(F.relu(model.conv1(x)), 2)
    p2 = F.max_pool2d(F.relu(model.conv2(p1)), 2)
    return p1, p2


def cnn_case(g, batch=4):
    torch.manual_seed(0)
    model = FmnistCNN()  # tests/golden/models.py; PyTorch's default init, drawn first after the seed
    x = torch.rand(batch, 1, 28, 28)
    labels = torch.randint(0, 10, (batch,))
    g.i32("cnn/meta", [batch, 1, 28, 28, 10])
    g.f32("cnn/hparams", [0.1, 0.9, 0.0, 5e-4])
    g.f32("cnn/x", x)
    g.add("cnn/labels", labels, DTYPE_I32)
    for k, v in model.state_dict().items():
        g.f32("cnn/" + k, v)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    with torch.no_grad():
        pool1, pool2 = cnn_features(model, x)
    g.f32("cnn/act/pool1", pool1)
    g.f32("cnn/act/pool2", pool2)
    g.f32("cnn/logits", logits)
    g.f32("cnn/loss", loss.reshape(1))
    for k, p in model.named_parameters():
        g.f32("cnn/grad/" + k, p.grad)
    opt.step()
    for k, p in model.named_parameters():
        g.f32("cnn/step1/" + k, p)


def build():
    g = GoldenWriter()
    # conv2d: name, n, c, h, w, k, kh, kw, sh, sw, ph, pw, bias
    conv_case(g, "conv_a", 2, 3, 8, 10, 4, 3, 3, 1, 1, 1, 1, True)
    conv_case(g, "conv_b", 2, 4, 10, 10, 6, 5, 5, 1, 1, 2, 2, False)
    conv_case(g, "conv_c", 3, 5, 9, 9, 8, 3, 3, 2, 2, 1, 1, True)
    conv_case(g, "conv_d", 2, 6, 11, 12, 4, 1, 1, 2, 2, 0, 0, False)
    # batch norm: training (two shapes) and eval
    bn_train_case(g, "bn_a", 4, 5, 8, 8)
    bn_train_case(g, "bn_b", 2, 3, 9, 11)
    bn_eval_case(g, "bn_eval_a", 3, 4, 8, 9)
    relu_case(g, "relu_a", 2, 3, 8, 9)
    # pooling: name, kind, n, c, h, w, kh, kw, sh, sw, ph, pw (floor mode; odd sizes on purpose)
    pool_case(g, "maxpool_a", "max", 2, 3, 9, 8, 2, 2, 2, 2, 0, 0)
    pool_case(g, "maxpool_b", "max", 2, 4, 10, 11, 3, 3, 2, 2, 1, 1)
    pool_case(g, "avgpool_a", "avg", 2, 3, 8, 10, 2, 2, 2, 2, 0, 0)
    pool_case(g, "avgpool_b", "avg", 2, 4, 9, 9, 3, 3, 1, 1, 1, 1)
    gap_case(g, "gap_a", 3, 8, 7, 7)
    linear_case(g, "linear_a", 4, 20, 10, True)
    linear_case(g, "linear_b", 3, 7, 5, False)
    # cross-entropy: ordinary logits, and large shifted logits (needs the max-subtraction)
    xent_case(g, "xent_a", 4, 10, 3.0, 0.0)
    xent_case(g, "xent_b", 3, 7, 20.0, 100.0)
    # SGD: name, shape, lr, momentum, dampening, weight decay, nesterov
    sgd_case(g, "sgd_a", (5, 7), 0.1, 0.9, 0.0, 5e-4, False)
    sgd_case(g, "sgd_b", (5, 7), 0.1, 0.9, 0.0, 1e-4, True)
    sgd_case(g, "sgd_c", (5, 7), 0.1, 0.0, 0.0, 0.0, False)
    sgd_case(g, "sgd_d", (5, 7), 0.1, 0.9, 0.1, 0.0, False)
    cnn_case(g)
    return g


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "data", "golden_ops.bin"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out, help="output file (default: %(default)s)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    g = build()
    data = g.tobytes()
    if len(data) >= 1 << 20:
        sys.exit("gen_golden.py: %d bytes, over the 1 MiB budget; shrink the shapes" % len(data))
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)

    groups = {}
    for name, dtype, shape, _ in g.records:
        groups.setdefault(name.split("/")[0], []).append((name, dtype, shape))
    print("gen_golden.py: torch %s, %d records, %d bytes -> %s" % (torch.__version__, len(g.records),
                                                                 len(data), args.out))
    for grp, recs in groups.items():
        parts = ["%s%s%s" % (n.split("/", 1)[1], "" if d == DTYPE_F32 else ":i32", list(s)) for n, d, s in recs]
        print("  %-10s %s" % (grp, " ".join(parts)))
    print("sha256 %s" % hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    main()
