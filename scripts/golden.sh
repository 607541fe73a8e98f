#!/usr/bin/env bash
# golden.sh: regenerates tests/data/golden_ops.bin, PyTorch's reference values for the op and
# network tests (format and record names: docs/golden-format.md). CI does not run this: the file
# is committed, so the tests need no PyTorch. Installs nothing.
#
# Needs a Python 3 with PyTorch, e.g. Debian's python3-torch (apt-get install python3-torch), which
# lives at /usr/bin/python3; set PYTHON to use another interpreter.
#
#   scripts/golden.sh           regenerate the file in place
#   scripts/golden.sh --check   regenerate into a temp file and compare it byte for byte with the
#                               committed one (the generator is deterministic on one machine and
#                               PyTorch build; another CPU or PyTorch version may change low bits)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-/usr/bin/python3}
out=tests/data/golden_ops.bin

if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "golden.sh: $python cannot import torch." >&2
    echo "  Install PyTorch for it (Debian/Ubuntu: apt-get install python3-torch) or set PYTHON to an" >&2
    echo "  interpreter that has it. The committed $out is enough to build and test." >&2
    exit 1
fi

case "${1:-}" in
"")
    mkdir -p "$(dirname "$out")"
    "$python" tests/golden/gen_golden.py --out "$out"
    ;;
--check)
    tmp=$(mktemp "${TMPDIR:-/tmp}/golden_ops.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    "$python" tests/golden/gen_golden.py --out "$tmp" >/dev/null
    if cmp -s "$tmp" "$out"; then
        echo "golden.sh: $out is up to date ($(sha256sum "$out" | cut -d' ' -f1))"
    else
        echo "golden.sh: regenerated values differ from $out; run scripts/golden.sh and review the diff" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: scripts/golden.sh [--check]" >&2
    exit 2
    ;;
esac
