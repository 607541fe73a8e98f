#!/usr/bin/env bash
# check_bundle.sh: the rehearsal of the one-call GPU acceptance (ctest gpu_bundle_rehearsal; docs/cuda.md,
# "Checking on a lent GPU in one call"), on a machine without a GPU. From the binaries this build
# already has (scripts/gpu_bundle.sh --from-build: nothing rebuilt) it makes a bundle in
# BUILD/gpu-bundle-rehearsal and checks that
#   - every ctest test matching cuda|nccl is in its tests.list, and every file tests.list names is there;
#   - MANIFEST lists exactly the bundle's files, with their sizes;
#   - it stays under 64 MiB together with the repository's tracked files (what one device call carries);
#   - ldd of every bundled ELF file, with the environment gpu_check.sh sets (gpu_check.sh --print-env),
#     finds every library, and nothing but glibc, libstdc++/libgcc_s and the CUDA family outside it;
#   - at run time too (LD_DEBUG): scadles-train trains a step on the CPU, test_cuda_topk reports
#     skipped (no GPU), and the bundle's relocated mpirun starts 2 ranks of test_comm_nccl --probe, all
#     with no library or Open MPI plugin taken from outside the bundle;
#   - gpu_check.sh fails within 30 s, exit code non-zero, naming the missing GPU.
# Skipped (77) when the build has no CUDA backend, when xz or Fashion-MNIST is missing here, and for the
# run-time parts on a machine that has a GPU (there, run gpu_check.sh itself).
#   usage: check_bundle.sh SOURCE_DIR BUILD_DIR
set -u
src=$1 build=$2
me=gpu_bundle_rehearsal
t_start=$(date +%s)
skip() { echo "$me: skipped: $*"; exit 77; }
fail() { echo "$me: FAILED: $*"; exit 1; }
grep -q '^SCADLES_HAVE_CUDA=ON$' "$build/scadles_build.env" 2>/dev/null ||
    skip "this build has no CUDA backend (nvcc, cuBLAS or cuDNN not found at configure time): no bundle to make"
command -v xz >/dev/null || skip "xz not found (the bundle stores its large libraries xz-compressed)"
[ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || skip "Fashion-MNIST not installed (scripts/setup.sh)"

out=$build/gpu-bundle-rehearsal
tmp=$(mktemp -d /tmp/sd_bundle_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$src/scripts/gpu_bundle.sh" --from-build "$build" "$out" > "$tmp/bundle.log" 2>&1 ||
    { tail -n 20 "$tmp/bundle.log"; fail "gpu_bundle.sh --from-build $build failed"; }
grep '^gpu_bundle.sh:' "$tmp/bundle.log"
echo "$me: bundle made in $(($(date +%s) - t_start)) s"

# ---- complete -----------------------------------------------------------------------------------
for f in gpu_check.sh MANIFEST tests.list device_libs.txt apps/scadles-train apps/scadles-bench_gpu \
    tests/bench/torch_gpu_peer.py tests/golden/models.py scripts/bench_gpu_ratios.awk \
    data/fashion-mnist/train-images-idx3-ubyte.xz data/fashion-mnist/train-labels-idx1-ubyte.gz \
    data/fashion-mnist/t10k-images-idx3-ubyte.gz data/fashion-mnist/t10k-labels-idx1-ubyte.gz; do
    [ -s "$out/$f" ] || fail "the bundle has no $f"
done
[ -x "$out/gpu_check.sh" ] || fail "gpu_check.sh in the bundle is not executable"
want=$(cd "$build" && ctest -N -R 'cuda|nccl' | sed -n 's/^ *Test *#[0-9]*: \(.*\)$/\1/p' | sort)
have=$(grep -v '^#' "$out/tests.list" | cut -f1 | sort)
[ -n "$want" ] || fail "ctest in $build lists no test matching cuda|nccl"
[ "$want" = "$have" ] || fail "tests.list ($(echo $have)) is not ctest's cuda|nccl list ($(echo $want))"
while IFS= read -r p; do
    [ -e "$out/$p" ] || fail "tests.list names @B@/$p, which is not in the bundle"
done < <(grep -v '^#' "$out/tests.list" | tr '\t:=' '\n\n\n' | sed -n 's|^@B@/||p' | sort -u)
grep -q 'mpi/bin/mpirun' "$out/tests.list" && { [ -x "$out/mpi/bin/mpirun" ] || fail "tests.list uses mpi/bin/mpirun, not in the bundle"; }
listed=$(grep -v '^#' "$out/MANIFEST" | cut -f1 | sort)
files=$(cd "$out" && find . -type f ! -name MANIFEST | sed 's|^\./||' | sort)
[ "$listed" = "$files" ] || fail "MANIFEST does not list exactly the bundle's files: $(diff <(echo "$listed") <(echo "$files") | head -n 5 | tr '\n' ' ')"
sizes=$(cd "$out" && find . -type f ! -name MANIFEST -printf '%P\t%s\n' | sort)
[ "$sizes" = "$(grep -v '^#' "$out/MANIFEST" | cut -f1,2 | sort)" ] ||
    fail "MANIFEST's sizes are not the files': $(diff <(echo "$sizes") <(grep -v '^#' "$out/MANIFEST" | cut -f1,2 | sort) | head -n 4 | tr '\n' ' ')"
[ -z "$(find "$out" -type l)" ] || fail "the bundle holds symbolic links (they travel as links): $(find "$out" -type l | head -n 3)"

# the training images travel as xz of the raw IDX file: exactly the installed file's bytes
cmp -s <(xz -dc "$out/data/fashion-mnist/train-images-idx3-ubyte.xz") \
    <(gzip -dc /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz) ||
    fail "data/fashion-mnist/train-images-idx3-ubyte.xz does not unpack to the installed training images"

# ---- size -----------------------------------------------------------------------------------------
size=$(du -sb "$out" | cut -f1)
tracked=$(git -C "$src" ls-files -z 2>/dev/null | (cd "$src" && xargs -0 -r stat -c %s 2>/dev/null) | awk '{s += $1} END {print s + 0}')
[ $((size + tracked)) -lt $((64 * 1024 * 1024)) ] || fail "bundle $size + tracked $tracked bytes >= 64 MiB"
echo "$me: complete: $(echo "$have" | wc -l) tests, $(grep -vc '^#' "$out/MANIFEST") files, $((size / 1024)) KiB (+ $((tracked / 1024)) KiB tracked) < 64 MiB"

# ---- libraries: ldd with the environment gpu_check.sh sets -------------------------------------------
# Outside the bundle only: glibc, the C++ runtime, the CUDA family (runtime, cuBLAS, cuDNN, NCCL, driver).
outside_ok='^(linux-vdso|ld-linux-x86-64|libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil|libanl|libnsl|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libcudnn[a-z_]*|libnccl|libnvidia-[a-z_-]*|libnvrtc[a-z-]*|libnvJitLink|libcupti)\.so'
"$out/gpu_check.sh" --print-env "$tmp/lib" > "$tmp/env.sh" || fail "gpu_check.sh --print-env failed: $(tail -n 3 "$tmp/env.sh")"
(
    . "$tmp/env.sh"
    n=0
    while IFS= read -r -d '' f; do
        [ "$(head -c 4 "$f" | od -An -c | tr -d ' \n')" = '177ELF' ] || continue
        n=$((n + 1))
        while read -r lib arrow path _; do
            [ "$arrow" = "=>" ] || continue
            case $path in "$out"/* | "$tmp"/lib/*) continue ;; esac
            [[ $lib =~ $outside_ok ]] && continue
            [ "$path" = not ] && fail "ldd ${f#"$out"/}: $lib not found (and it is not a CUDA library the device has)"
            fail "ldd ${f#"$out"/}: $lib taken from outside the bundle ($path)"
        done < <(ldd "$f" 2>&1)
    done < <(find "$out" "$tmp/lib" -type f -print0)
    echo "$me: ldd: $n ELF files, every library from the bundle or glibc/libstdc++/CUDA"
) || exit 1

# ---- at run time, no GPU: the binaries load, Open MPI runs relocated -----------------------------------
# LD_DEBUG=files names every object a process maps, dlopen'ed plugins too ("calling init: PATH").
outside() { # LD_DEBUG files...: the objects loaded from outside the bundle that should not be
    cat "$@" 2>/dev/null | sed -n 's/.*calling init: \(.*\)$/\1/p' | sort -u | while IFS= read -r p; do
        case $p in "$out"/* | "$tmp"/lib/*) continue ;; esac
        [[ $(basename "$p") =~ $outside_ok ]] || echo "$p"
    done
}
smi=$(command -v nvidia-smi || true)
if [ -n "$smi" ] && "$smi" -L 2>/dev/null | grep -q '^GPU'; then
    echo "$me: this machine has a GPU: the no-GPU run-time checks are left out (run gpu_check.sh instead)"
else
    (
        . "$tmp/env.sh"
        cd "$tmp" || exit 1
        LD_DEBUG=files LD_DEBUG_OUTPUT=$tmp/ld_train PATH=/usr/bin:/bin "$out/apps/scadles-train" --model fmnist_cnn \
            --steps 1 --train-limit 256 --eval-limit 64 --threads 1 --quiet --out "$tmp/train" > "$tmp/train.log" 2>&1 &
        pid=$!
        wait $pid || fail "scadles-train (CPU, one step) from the bundle failed: $(tail -n 3 "$tmp/train.log")"
        bad=$(outside "$tmp/ld_train.$pid")
        [ -z "$bad" ] || fail "scadles-train loaded from outside the bundle: $(echo $bad)"
        LD_DEBUG=files LD_DEBUG_OUTPUT=$tmp/ld_topk SD_CUDA_REQUIRE=0 "$out/tests/test_cuda_topk" > "$tmp/topk.log" 2>&1
        rc=$?
        [ $rc -eq 77 ] || fail "test_cuda_topk from the bundle without a GPU: exit $rc (want 77, skipped): $(tail -n 2 "$tmp/topk.log")"
        bad=$(outside "$tmp"/ld_topk.*)
        [ -z "$bad" ] || fail "test_cuda_topk loaded from outside the bundle: $(echo $bad)"
        if [ -x "$out/mpi/bin/mpirun" ]; then
            LD_DEBUG=files LD_DEBUG_OUTPUT=$tmp/ld_mpi timeout 60 "$out/mpi/bin/mpirun" --oversubscribe -n 2 \
                "$out/tests/test_comm_nccl" --probe > "$tmp/mpi.log" 2>&1
            rc=$?
            grep -q 'sd-mpi-probe: MPI started (2 ranks)' "$tmp/mpi.log" ||
                fail "the bundle's mpirun -n 2 test_comm_nccl --probe: exit $rc: $(tail -n 5 "$tmp/mpi.log" | tr '\n' ' ')"
            bad=$(outside "$tmp"/ld_mpi.*)
            [ -z "$bad" ] || fail "mpirun and its ranks loaded from outside the bundle: $(echo $bad)"
            plugins=$(cat "$tmp"/ld_mpi.* | sed -n 's/.*calling init: \(.*\)$/\1/p' | grep -c "^$out/lib/openmpi/")
            [ "$plugins" -gt 0 ] || fail "no Open MPI plugin was loaded from the bundle's lib/openmpi"
            echo "$me: run time: scadles-train (CPU step), test_cuda_topk (skipped, no GPU) and mpirun -n 2 (Open MPI relocated, $plugins plugin loads) use only the bundle's libraries"
        else
            echo "$me: run time: scadles-train (CPU step) and test_cuda_topk (skipped, no GPU) use only the bundle's libraries"
        fi
    ) || exit 1
    # ---- gpu_check.sh without a GPU: fails fast and says why ----------------------------------------------
    t0=$(date +%s)
    OUT=$tmp/gpu_check timeout 60 "$out/gpu_check.sh" > "$tmp/gpu_check.log" 2>&1
    rc=$? dt=$(($(date +%s) - t0))
    [ $rc -ne 0 ] || fail "gpu_check.sh exited 0 on a machine without a GPU"
    [ $rc -ne 124 ] || fail "gpu_check.sh still running after 60 s without a GPU"
    [ $dt -le 30 ] || fail "gpu_check.sh took $dt s to fail without a GPU (want <= 30 s)"
    grep -Eq 'no nvidia-smi|no CUDA device|no CUDA driver' "$tmp/gpu_check.log" ||
        fail "gpu_check.sh's message does not name the missing GPU: $(tail -n 5 "$tmp/gpu_check.log")"
    grep -q '^gpu_check: FAIL' "$tmp/gpu_check/gpu_check.txt" 2>/dev/null || fail "gpu_check.sh wrote no summary into \$OUT/gpu_check.txt"
    echo "$me: gpu_check.sh without a GPU: exit $rc after $dt s: $(grep -m 1 -E 'no nvidia-smi|no CUDA device|no CUDA driver' "$tmp/gpu_check.log" | sed 's/^ *- //')"
fi
echo "$me: passed in $(($(date +%s) - t_start)) s"
