#!/usr/bin/python3
"""checkpoint_interop.py: checkpoints cross between ScaDLES and PyTorch in both directions.

Usage: /usr/bin/python3 checkpoint_interop.py PATH/TO/ckpt_tool

For fmnist_cnn and resnet20 (the twins in tests/golden/models.py):
  (a) ours -> PyTorch: ckpt_tool builds the model (seed 7), runs two training-mode forwards so the
      BN running statistics and counters are not at their initial values, saves a checkpoint and
      writes its evaluation logits; PyTorch loads the file with load_state_dict(strict=True) and
      must give the same logits.
  (b) PyTorch -> ours: torch.manual_seed(1), BN weights, biases and running statistics perturbed to
      non-trivial values, the state_dict saved as safetensors by the writer below; ckpt_tool loads
      it (strict) and must give PyTorch's evaluation logits. A state_dict missing a key must be
      refused, naming the key.
Logits agree when max|ours - torch| <= 1e-4 * max(1, max|torch|) (float32 both sides; the
difference is only summation order).

The safetensors reader and writer here use only the standard library and torch.frombuffer (no
safetensors package needed). Exit codes: 0 all passed, 1 a failure, 77 skipped (no torch).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
except Exception as e:  # ImportError, or a broken install
    print(f"checkpoint_interop: skipped: import torch failed ({e}); run it with the interpreter that has PyTorch")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
import models  # noqa: E402

MODELS = ["fmnist_cnn", "resnet20"]
BATCH = 4
REL_TOL = 1e-4

DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
          "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
          "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}


# ---- safetensors with the standard library -------------------------------------------------------
def load_safetensors(path):
    """Returns ({name: tensor}, {metadata})."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        dtype = DTYPES[e["dtype"]]
        raw = bytearray(data[base + begin:base + end])  # frombuffer wants a writable buffer
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(e["shape"])
    return out, meta


def save_safetensors(path, tensors, meta=None):
    """Writes {name: tensor} (larger elements first, header padded to 8 bytes, like ours)."""
    items = sorted(tensors.items(), key=lambda kv: -kv[1].element_size())
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, t in items:
        t = t.detach().cpu().contiguous()
        blob = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


# ---- checks ----------------------------------------------------------------------------------------
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {what}")
    else:
        failed += 1
        print(f"FAIL {what}")


def run_tool(args):
    r = subprocess.run([TOOL] + args, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  ckpt_tool {' '.join(args)} exited {r.returncode}:\n{r.stderr}", end="")
    return r


def read_logits(path, n):
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    return torch.frombuffer(raw, dtype=torch.float32).reshape(n, -1)


def compare(ours, ref, what):
    peak = ref.abs().max().item()
    scale = max(1.0, peak)
    diff = (ours - ref).abs().max().item() if ours.shape == ref.shape else float("inf")
    check(diff <= REL_TOL * scale,
          f"{what}: max|ours - torch| = {diff:.3g} (tolerance {REL_TOL:g} x max(1, max|torch| = {peak:.3g}); "
          f"logits {list(ref.shape)})")


def ours_to_torch(name, d):
    module, shape = models.build(name)
    torch.manual_seed(0)
    x = torch.randn(BATCH, *shape)
    xin, ckpt, logits = (os.path.join(d, f"{name}_a.{s}") for s in ("in.bin", "safetensors", "logits.bin"))
    with open(xin, "wb") as f:
        f.write(x.numpy().tobytes())
    if run_tool(["save", name, "7", ckpt, xin, logits, "2"]).returncode != 0:
        check(False, f"{name}: ckpt_tool save")
        return
    state, meta = load_safetensors(ckpt)
    check(meta.get("model") == name and meta.get("format") == "pt", f"{name}: metadata {meta}")
    counters = [k for k in state if k.endswith(".num_batches_tracked")]
    check(all(state[k].dtype == torch.int64 and state[k].shape == () and state[k].item() == 2 for k in counters),
          f"{name}: {len(counters)} num_batches_tracked counters are int64 scalars equal to 2")
    means = [state[k] for k in state if k.endswith(".running_mean")]
    if means:
        check(all(m.abs().max().item() > 0 for m in means), f"{name}: running means moved away from 0 before saving")
    try:
        module.load_state_dict(state, strict=True)
        check(True, f"{name}: load_state_dict(strict=True) of our checkpoint ({len(state)} tensors)")
    except RuntimeError as e:
        check(False, f"{name}: load_state_dict(strict=True) of our checkpoint: {e}")
        return
    module.eval()
    with torch.no_grad():
        ref = module(x)
    compare(read_logits(logits, BATCH), ref, f"{name}: ours -> torch")


def torch_to_ours(name, d):
    torch.manual_seed(1)
    module, shape = models.build(name)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(5)
    module.eval()
    x = torch.randn(BATCH, *shape)
    with torch.no_grad():
        ref = module(x)
    xin, ckpt, logits = (os.path.join(d, f"{name}_b.{s}") for s in ("in.bin", "safetensors", "logits.bin"))
    with open(xin, "wb") as f:
        f.write(x.numpy().tobytes())
    state = module.state_dict()
    save_safetensors(ckpt, state, {"format": "pt"})
    if run_tool(["load", name, ckpt, xin, logits]).returncode != 0:
        check(False, f"{name}: ckpt_tool load of a PyTorch state_dict")
        return
    compare(read_logits(logits, BATCH), ref, f"{name}: torch -> ours")

    # A state_dict without one key is refused under strict loading, naming the key.
    dropped = list(state)[-1] if name == "fmnist_cnn" else "layer2.0.shortcut.1.running_var"
    partial = {k: v for k, v in state.items() if k != dropped}
    bad = os.path.join(d, f"{name}_partial.safetensors")
    save_safetensors(bad, partial)
    r = subprocess.run([TOOL, "load", name, bad, xin, logits], capture_output=True, text=True)
    check(r.returncode != 0 and f"'{dropped}'" in r.stderr,
          f"{name}: a checkpoint without '{dropped}' is refused naming it ({r.stderr.strip().splitlines()[0:1]})")


def main():
    global TOOL
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    TOOL = sys.argv[1]
    if sys.byteorder != "little":
        print("checkpoint_interop: skipped: safetensors data are little-endian and this host is not")
        return 77
    torch.set_num_threads(2)
    print(f"checkpoint_interop: torch {torch.__version__}, tool {TOOL}")
    with tempfile.TemporaryDirectory(prefix="sd_interop_") as d:
        for name in MODELS:
            ours_to_torch(name, d)
            torch_to_ours(name, d)
    print(f"checkpoint_interop: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
