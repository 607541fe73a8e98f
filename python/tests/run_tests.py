#!/usr/bin/python3
"""run_tests.py: runs one part of the scadles package's tests for ctest (tests/CMakeLists.txt).

Usage: /usr/bin/python3 python/tests/run_tests.py core|torch [PATH/TO/scadles-train]

core: reading run folders, driving scadles-train, the safetensors reader (standard library; pandas
when installed). torch: checkpoints in the PyTorch twins. Exit codes: 0 passed, 1 a failure, 77
skipped (the torch part without torch; either part without Fashion-MNIST, which the tiny runs
train on).
"""
import os
import sys
import unittest

SKIP = 77


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("core", "torch"):
        print("usage: run_tests.py core|torch [PATH/TO/scadles-train]", file=sys.stderr)
        return 2
    part = sys.argv[1]
    if len(sys.argv) == 3:
        os.environ["SCADLES_TRAIN"] = sys.argv[2]
    name = f"python_scadles_{part}"
    if part == "torch":
        try:
            import torch  # noqa: F401
        except Exception as e:  # ImportError, or a broken install
            print(f"{name}: skipped: import torch failed ({e}); Debian: apt-get install python3-torch "
                  "(scripts/setup.sh tests installs it)")
            return SKIP
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        print(f"{name}: skipped: Fashion-MNIST not installed (scripts/setup.sh installs dataset-fashion-mnist)")
        return SKIP
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import test_scadles
    cases = test_scadles.TORCH_CASES if part == "torch" else test_scadles.CORE_CASES
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in cases)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    if not result.wasSuccessful():
        return 1
    if part == "core" and not test_scadles.HAVE_PANDAS:
        print(f"{name}: note: pandas is not installed, so the DataFrame cases were skipped "
              "(Debian: apt-get install python3-pandas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
