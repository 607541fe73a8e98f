"""test_scadles.py: the scadles package's tests (unittest, standard library; run by run_tests.py).

setUpModule makes its own tiny runs with scadles.train() (which is tested by that), in a temporary
folder: A, fmnist_cnn, ddp and scadles, 2 devices, 3 steps; B, resnet20 at width 0.25, scadles,
3 steps, finished; C, the same but max_steps 4 stopped after step 3 (--stop-at), so its checkpoint
holds B's weights after the same 3 steps. Needs the binary ($SCADLES_TRAIN, or found as train()
finds it) and Fashion-MNIST. The Torch* classes need torch; the rest never import it.
"""
import gzip
import json
import os
import shutil
import struct
import sys
import tempfile
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))
import scadles  # noqa: E402
from scadles import ScadlesError, TrainError  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"
EXPERIMENT = os.path.join(REPO, "apps", "experiments", "uniform_s1.json")
SMALL = {"devices.rates": [40, 25], "eval_limit": 200, "threads": 1, "max_steps": 3}
R20 = dict(SMALL, model="resnet20", width=0.25, modes=["scadles"])
TMP = A = B = C = None

try:
    import pandas  # noqa: F401
    HAVE_PANDAS = True
except ImportError:
    HAVE_PANDAS = False


def setUpModule():
    global TMP, A, B, C
    TMP = tempfile.mkdtemp(prefix="sd_python_")
    A = scadles.train(EXPERIMENT, SMALL, os.path.join(TMP, "a"), frames=False)
    B = scadles.train(EXPERIMENT, R20, os.path.join(TMP, "b"), frames=False)
    C = scadles.train(EXPERIMENT, dict(R20, max_steps=4), os.path.join(TMP, "c"), stop_at=3, frames=False)


def tearDownModule():
    if TMP and not os.environ.get("SD_PYTHON_KEEP"):
        shutil.rmtree(TMP, ignore_errors=True)


def copy_run(src, name):
    dst = os.path.join(TMP, name)
    shutil.copytree(src, dst)
    return dst


class RunFolders(unittest.TestCase):
    def test_lists(self):
        e = scadles.read_run(A.path, frames=False)
        self.assertEqual(e.config["model"], "fmnist_cnn")
        self.assertEqual(e.config["devices"]["count"], 2)
        self.assertEqual(list(e.runs), ["ddp-seed1", "scadles-seed1"])  # the order they ran in
        self.assertEqual(len(e.table), 2)
        for run in e:
            self.assertEqual([m["step"] for m in run.metrics], [1, 2, 3], run.name)
            self.assertTrue(all(len(m["batches"]) == 2 and m["loss"] > 0 for m in run.metrics))
            self.assertEqual(run.eval[-1]["step"], 3)
            self.assertAlmostEqual(run.eval[-1]["top1"], run.summary["final_accuracy"], places=6)
            self.assertEqual(run.summary["steps"], 3)
            self.assertEqual(sum(m["global_batch"] for m in run.metrics), run.summary["samples_trained"])
            self.assertEqual([d["device"] for d in run.drops], [0, 1])
            self.assertTrue(run.model_path and os.path.isfile(run.model_path))
        self.assertEqual(e["ddp-seed1"].metrics[0]["batches"], [64, 64])  # ddp: the fixed batch
        self.assertIsNone(e.checkpoint)

    @unittest.skipUnless(HAVE_PANDAS, "pandas is not installed")
    def test_frames(self):
        e = scadles.read_run(A.path)  # DataFrames by default when pandas is there
        m = e["scadles-seed1"].metrics
        self.assertEqual(list(m["step"]), [1, 2, 3])
        self.assertIn("loss", m.columns)
        self.assertEqual(list(e.table["mode"]), ["ddp", "scadles"])
        self.assertEqual(e["ddp-seed1"].drops.shape[0], 2)
        self.assertEqual(e["ddp-seed1"].eval["top1"].iloc[-1], e["ddp-seed1"].summary["final_accuracy"])

    def test_frames_required(self):
        if HAVE_PANDAS:
            self.assertFalse(isinstance(scadles.read_run(A.path, frames=True).table, list))
        else:
            with self.assertRaisesRegex(ScadlesError, "python3-pandas"):
                scadles.read_run(A.path, frames=True)

    def test_stopped(self):
        e = scadles.read_run(C.path, frames=False)
        self.assertIsNone(e.summary)
        self.assertEqual(e.table, [])
        self.assertEqual(os.path.basename(e.checkpoint), "checkpoint")
        run = e["scadles-seed1"]
        self.assertEqual(len(run.metrics), 3)
        self.assertIsNone(run.model_path)
        self.assertIn("stopped", C.log)

    def test_truncated_last_line(self):
        d = copy_run(A.path, "trunc")
        p = os.path.join(d, "ddp-seed1", "metrics.jsonl")
        with open(p, "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(data[:-20])  # the last line cut in the middle, as by a kill
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            e = scadles.read_run(d, frames=False)
        self.assertEqual(len(e["ddp-seed1"].metrics), 2)
        self.assertTrue(any("metrics.jsonl:3" in str(x.message) for x in w), [str(x.message) for x in w])

    def test_malformed_line(self):
        d = copy_run(A.path, "bad")
        p = os.path.join(d, "scadles-seed1", "eval.jsonl")
        with open(p) as f:
            lines = f.read().split("\n")
        lines[0] = lines[0][:-5]
        with open(p, "w") as f:
            f.write("\n".join(lines))
        with self.assertRaisesRegex(ScadlesError, r"eval\.jsonl:1: malformed"):
            scadles.read_run(d)

    def test_not_a_run(self):
        with self.assertRaisesRegex(ScadlesError, "no such folder"):
            scadles.read_run(os.path.join(TMP, "nowhere"))
        with self.assertRaisesRegex(ScadlesError, "one run's folder; give its parent"):
            scadles.read_run(os.path.join(A.path, "ddp-seed1"))
        with self.assertRaisesRegex(ScadlesError, "no config.json"):
            scadles.read_run(TMP)
        d = copy_run(A.path, "badjson")
        with open(os.path.join(d, "summary.json"), "w") as f:
            f.write("{")
        with self.assertRaisesRegex(ScadlesError, "summary.json: malformed JSON"):
            scadles.read_run(d)


class Training(unittest.TestCase):
    def test_command(self):
        cmd = A.command
        self.assertIn("--config", cmd)
        self.assertIn("devices.rates=[40, 25]", cmd)
        self.assertIn("out_dir=" + A.path, cmd)

    def test_dict_config_and_pairs(self):
        cfg = {"name": "tiny", "modes": ["scadles"], "devices": {"rates": [30, 20]}, "max_steps": 2,
               "eval_limit": 100, "threads": 1}
        e = scadles.train(cfg, ["seeds=2"], os.path.join(TMP, "dict"), frames=False)
        self.assertEqual(list(e.runs), ["scadles-seed2"])
        self.assertEqual(e.config["name"], "tiny")
        self.assertEqual(e.config["devices"]["rates"], [30, 20])
        self.assertEqual(len(e["scadles-seed2"].metrics), 2)

    def test_stop_and_resume(self):
        cfg = {"modes": ["scadles"], "devices": {"rates": [30, 20]}, "max_steps": 3, "eval_limit": 100,
               "threads": 1}
        out = os.path.join(TMP, "resume")
        stopped = scadles.train(cfg, None, out, stop_at=2, frames=False)
        self.assertIsNone(stopped.summary)
        self.assertEqual(len(stopped["scadles-seed1"].metrics), 2)
        done = scadles.train(cfg, None, out, resume=stopped.checkpoint, frames=False)
        self.assertEqual([m["step"] for m in done["scadles-seed1"].metrics], [1, 2, 3])
        self.assertEqual(done.table[0]["steps"], 3)

    def test_temporary_out_dir(self):
        e = scadles.train(EXPERIMENT, dict(SMALL, modes=["ddp"], max_steps=1), frames=False)
        try:
            self.assertTrue(os.path.basename(e.path).startswith("scadles-run-"))
            self.assertEqual(len(e["ddp-seed1"].metrics), 1)
        finally:
            shutil.rmtree(e.path)

    def test_engine_refuses(self):
        with self.assertRaises(TrainError) as cm:
            scadles.train(EXPERIMENT, {"optimizer.moemntum": 0.9}, os.path.join(TMP, "typo"))
        self.assertEqual(cm.exception.returncode, 2)  # a bad --set is a usage error
        self.assertIn("did you mean 'momentum'", str(cm.exception))
        with self.assertRaisesRegex(ScadlesError, "expected 'key=value'"):
            scadles.train(EXPERIMENT, ["max_steps"])
        with self.assertRaisesRegex(ScadlesError, "cannot read the experiment file"):
            scadles.train(os.path.join(TMP, "missing.json"))

    def test_binary_search(self):
        exe = scadles.find_train_binary()
        self.assertTrue(os.access(exe, os.X_OK))
        self.assertEqual(scadles.find_train_binary(binary=exe), exe)
        build = os.path.dirname(os.path.dirname(exe))
        old = os.environ.pop("SCADLES_TRAIN", None)
        try:
            self.assertEqual(scadles.find_train_binary(build_dir=build), exe)
            with self.assertRaisesRegex(ScadlesError, "not an executable file"):
                scadles.find_train_binary(binary=os.path.join(TMP, "nope"))
            os.environ["SCADLES_TRAIN"] = os.path.join(TMP, "nope")
            with self.assertRaisesRegex(ScadlesError, r"\$SCADLES_TRAIN"):
                scadles.find_train_binary()
        finally:
            if old is None:
                os.environ.pop("SCADLES_TRAIN", None)
            else:
                os.environ["SCADLES_TRAIN"] = old


def write_st(path, header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


class SafeTensorsFiles(unittest.TestCase):
    def test_model_file(self):
        st = scadles.read_safetensors(A["ddp-seed1"].model_path)
        self.assertEqual(st.metadata["format"], "pt")
        self.assertEqual(st.metadata["model"], "fmnist_cnn")
        self.assertEqual(st.entry("conv1.weight").shape, [16, 1, 5, 5])
        self.assertEqual(len(st.values("fc.bias")), 10)

    def test_rank_file_checksum(self):
        path = os.path.join(C.checkpoint, "rank1.safetensors")
        st = scadles.read_safetensors(path)
        self.assertEqual(st.metadata["format"], "scadles-distributed-checkpoint")
        try:
            import xxhash  # noqa: F401  (version-2 checkpoints: XXH3-64)
        except ImportError:
            with self.assertRaisesRegex(scadles.ScadlesError, "python3-xxhash"):
                st.checksum()
            self.skipTest("the xxhash module is not installed (apt-get install python3-xxhash)")
        self.assertEqual(st.checksum(), st.metadata["checksum"])
        self.assertEqual(st.scalar("net.batches_tracked"), 3)
        bad = os.path.join(TMP, "flipped.safetensors")
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[-3] ^= 1
        with open(bad, "wb") as f:
            f.write(data)
        st2 = scadles.read_safetensors(bad)
        self.assertNotEqual(st2.checksum(), st2.metadata["checksum"])

    def test_refused(self):
        p = os.path.join(TMP, "x.safetensors")
        eight = b"\0" * 8
        cases = [  # header, data section, what the error must say
            ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"", "inside the 0-byte data section"),
            ({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, eight, "unknown dtype"),
            ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, eight, r"\(12 expected\)"),
            ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", "non-negative integers"),
            ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, eight, "overlap"),
            ({"__metadata__": {"k": 1}}, b"", "object of strings"),
            ([1, 2], b"", "not an object"),
        ]
        for header, data, msg in cases:
            write_st(p, header, data)
            with self.assertRaisesRegex(ScadlesError, msg):
                scadles.read_safetensors(p)
        with open(p, "wb") as f:
            f.write(b"\x01\x02")
        with self.assertRaisesRegex(ScadlesError, "too short"):
            scadles.read_safetensors(p)
        write_st(p, None, raw_header=b'{"a": 1} x')
        with self.assertRaisesRegex(ScadlesError, "bytes after the JSON header"):
            scadles.read_safetensors(p)
        write_st(p, None, raw_header=b'{"a": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}, "a": 1}')
        with self.assertRaisesRegex(ScadlesError, "appears twice"):
            scadles.read_safetensors(p)
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", 1 << 40))
        with self.assertRaisesRegex(ScadlesError, "header length"):
            scadles.read_safetensors(p)


# ---- torch ------------------------------------------------------------------------------------------
def fmnist_test(n):
    """The first n Fashion-MNIST test images (uint8 [n, 784]) and labels, read from the IDX files."""
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051 and count >= n
        images = f.read(n * rows * cols)
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        magic, count = struct.unpack(">II", f.read(8))
        assert magic == 2049
        labels = f.read(n)
    return images, labels


def evaluate(model, n):
    """top-1 count and mean cross-entropy of the twin on the first n test images, normalised as the
    engine does (stream/augment.c: (v / 255 - 0.2860) / 0.3530 in float32)."""
    import torch
    import torch.nn.functional as F
    images, labels = fmnist_test(n)
    x = torch.frombuffer(bytearray(images), dtype=torch.uint8).float().reshape(n, 1, 28, 28)
    x = (x / 255.0 - 0.2860) / 0.3530
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    with torch.no_grad():
        logits = model(x)
    return int((logits.argmax(1) == y).sum()), float(F.cross_entropy(logits, y))


class TorchCheckpoints(unittest.TestCase):
    def assertMatchesEval(self, model, run):
        last = run.eval[-1]
        correct, loss = evaluate(model, 200)
        self.assertLessEqual(abs(correct - round(last["top1"] * 200)), 1,
                             f"{run.name}: the twin gets {correct}/200 right, the engine {last['top1'] * 200:.0f}")
        self.assertAlmostEqual(loss, last["test_loss"], delta=1e-4 * max(1.0, loss))

    def test_model_file_in_twin(self):
        for exp in (A, B):
            for run in exp:
                model, info = scadles.load_model(run.path)
                self.assertEqual(info["kind"], "model")
                self.assertEqual(info["width"], exp.config["width"])
                self.assertFalse(model.training)
                self.assertMatchesEval(model, run)
        lone = os.path.join(TMP, "lone")  # no config.json beside it: the width is read off conv1
        os.makedirs(lone)
        shutil.copy(B["scadles-seed1"].model_path, lone)
        model, info = scadles.load_model(os.path.join(lone, "model.safetensors"))
        self.assertEqual((info["model"], info["width"], info["dataset"]), ("resnet20", 0.25, "fashion-mnist"))
        self.assertMatchesEval(model, B["scadles-seed1"])

    def test_checkpoint_is_the_same_weights(self):
        import torch
        final, info = scadles.load_state_dict(B["scadles-seed1"].model_path)
        ranks = [scadles.load_state_dict(C.checkpoint, rank=r, verify=True) for r in (0, 1)]
        s0, i0 = ranks[0]
        self.assertEqual((i0["kind"], i0["model"], i0["width"], i0["step"], i0["rank"]),
                         ("checkpoint", "resnet20", 0.25, 3, 0))
        self.assertEqual(sorted(s0), sorted(final))
        for k, t in final.items():
            if k.endswith((".running_mean", ".running_var")):
                # bn: average: the finished run's statistics are the devices' mean
                mean = (ranks[0][0][k] + ranks[1][0][k]) / 2
                self.assertLessEqual(float((mean - t).abs().max()), 1e-6, k)
            else:
                self.assertTrue(torch.equal(s0[k], t), f"{k}: the checkpoint's net.params cut differs")
        model, _ = scadles.load_model(os.path.join(C.checkpoint, "rank0.safetensors"))
        model.load_state_dict(final)  # same names and shapes both ways
        self.assertMatchesEval(model, B["scadles-seed1"])

    def test_refused(self):
        with self.assertRaisesRegex(ScadlesError, "run file"):
            scadles.load_state_dict(os.path.join(C.checkpoint, "run.safetensors"))
        with self.assertRaisesRegex(ScadlesError, "weights of 2 runs"):
            scadles.load_model(A.path)
        with self.assertRaisesRegex(ScadlesError, "width"):
            scadles.load_model(C.checkpoint, width=0.5)
        with self.assertRaisesRegex(ScadlesError, "width"):
            scadles.load_model(B["scadles-seed1"].path, width=0.5)
        with self.assertRaisesRegex(ScadlesError, "without rank7"):
            scadles.load_model(C.checkpoint, rank=7)
        bad = copy_run(C.checkpoint, "damaged_ckpt")
        p = os.path.join(bad, "rank0.safetensors")
        with open(p, "r+b") as f:
            f.seek(-5, 2)
            b = f.read(1)
            f.seek(-5, 2)
            f.write(bytes([b[0] ^ 0x10]))
        with self.assertRaisesRegex(ScadlesError, "damaged"):
            scadles.load_state_dict(bad, verify=True)

    def test_width_twins(self):
        model, shape = scadles.build_twin("resnet20", "cifar100", 0.25)
        self.assertEqual(shape, (3, 32, 32))
        self.assertEqual(tuple(model.conv1.weight.shape), (4, 3, 3, 3))
        self.assertEqual(tuple(model.fc.weight.shape), (100, 16))
        with self.assertRaisesRegex(ScadlesError, "unknown model"):
            scadles.build_twin("resnet21")
        with self.assertRaisesRegex(ScadlesError, "unknown dataset"):
            scadles.build_twin("resnet20", "imagenet")


TORCH_CASES = [TorchCheckpoints]
CORE_CASES = [RunFolders, Training, SafeTensorsFiles]
