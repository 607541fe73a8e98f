#!/usr/bin/env bash
# gpu_bundle.sh: builds the GPU acceptance bundle, a self-contained folder that one call of the device
# tool carries to a lent GPU machine and runs there with its gpu_check.sh (docs/cuda.md, "Checking on a
# lent GPU in one call").
#
#   scripts/gpu_bundle.sh [--from-build DIR] [OUTDIR]        OUTDIR: default gpu-bundle/ at the root
#
# Without --from-build it configures and builds BUILD (default build-gpu/) in Release for sm_90 only,
# without -march=native (the device's CPU is not this one) and without oneDNN (SCADLES_DNNL=OFF: the
# CPU convolutions are our kernels there), JOBS parallel jobs (default: all cores).
# --from-build DIR takes the binaries of an existing build tree as they are: nothing is configured or
# built, a missing binary is an error (the rehearsal test, tests/gpu/check_bundle.sh, uses this).
#
# What goes in: every ctest test whose name matches cuda|nccl (their executables, the scripts they run,
# their data, tests.list with their commands), scadles-train, scadles-bench_gpu, the PyTorch GPU peer,
# Fashion-MNIST, gpu_check.sh, and under lib/ every shared library those need except glibc, libstdc++,
# libgcc_s and the CUDA family (runtime, cuBLAS, cuDNN, NCCL, driver), which the device machine has:
# gpu_check.sh finds them there. Open MPI comes with its plugins, help files and configuration (mpi/),
# relocated at run time through OPAL_* / PMIX_* variables. Libraries over 1 MiB are stored xz-compressed
# (lib/NAME.xz; OpenBLAS alone is 36 MB raw, 4 MB compressed); gpu_check.sh unpacks them to /tmp.
# MANIFEST lists every file, its size and where it came from. The bundle plus the repository's tracked
# files (both travel in one device call) must stay under 64 MiB, or this fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
regex='cuda|nccl'
limit=$((64 * 1024 * 1024))
big=$((1024 * 1024))

die() { echo "gpu_bundle.sh: $*" >&2; exit 1; }
usage() { sed -n '6,13p' "$0" | sed 's/^# \{0,1\}//'; }

from_build="" out=""
while [ $# -gt 0 ]; do
    case $1 in
    --from-build) [ $# -ge 2 ] || die "--from-build needs a build directory"; from_build=$2; shift 2 ;;
    --from-build=*) from_build=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$out" ] || die "one OUTDIR only ('$out', '$1')"; out=$1; shift ;;
    esac
done
out=${out:-$root/gpu-bundle}
case $out in /*) ;; *) out=$PWD/$out ;; esac
out=${out%/}
command -v xz >/dev/null || die "xz not found (Debian: apt-get install xz-utils)"

# ---- the build ---------------------------------------------------------------------------------
if [ -n "$from_build" ]; then
    build=$(cd "$from_build" && pwd) || die "no build directory '$from_build'"
else
    build=${BUILD:-$root/build-gpu}
    # without oneDNN: the bundle checks the GPU, its CPU side is the parity reference (our kernels),
    # and libdnnl alone would add 6.9 MB xz-compressed to a bundle that must stay under 64 MiB
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSCADLES_CUDA_ARCHS=90 -DSCADLES_NATIVE=OFF \
        -DSCADLES_SANITIZE=OFF -DSCADLES_TSAN=OFF -DSCADLES_DNNL=OFF | sed -n '/ScaDLES configuration/,$p'
fi
info=$build/scadles_build.env
[ -r "$info" ] || die "$build has no scadles_build.env: not a configured ScaDLES build tree"
cfg() { sed -n "s/^$1=//p" "$info"; }
[ "$(cfg SCADLES_HAVE_CUDA)" = ON ] || die "$build has no CUDA backend (nvcc, cuBLAS or cuDNN not found at configure time)"
[ "$(cfg SCADLES_HAVE_NCCL)" = ON ] || echo "gpu_bundle.sh: warning: $build has no NCCL communicator: the NCCL tests will report skipped" >&2
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
[ -d "$src" ] || die "cannot read the source directory of $build from its CMakeCache.txt"

tmp=$(mktemp -d)
stage=""
trap 'rm -rf "$tmp" ${stage:+"$stage"}' EXIT
if [ -z "$from_build" ]; then
    # ctest names a test's command only once its executable exists: build first the targets named
    # like the tests (test_comm_nccl_1 runs test_comm_nccl, test_dist_nccl runs scadles-train) and the apps
    names=$( (cd "$build" && ctest -N -R "$regex") | sed -n 's/^ *Test *#[0-9]*: //p' | sed 's/_[0-9]*$//' | sort -u)
    targets="scadles-train scadles-bench_gpu"
    for n in $names; do
        [ -n "$(find "$build" -type d -path "*/CMakeFiles/$n.dir" -print -quit)" ] && targets+=" $n"
    done
    echo "gpu_bundle.sh: building $targets in $build"
    cmake --build "$build" -j"${JOBS:-$(nproc)}" --target $targets
fi
(cd "$build" && ctest -N -R "$regex" --show-only=json-v1) > "$tmp/tests.json"
cmake -DJSON="$tmp/tests.json" -DREGEX="$regex" -DOUT="$tmp/tests.tsv" -P "$root/scripts/gpu_bundle_tests.cmake" ||
    die "a test matching '$regex' has no command: its executable is not built (cmake --build $build)"
[ -s "$tmp/tests.tsv" ] || die "ctest in $build lists no test matching '$regex'"

# the executables the tests run from the build tree, plus the two apps
exes=$( (tr '\t' '\n' < "$tmp/tests.tsv" | grep "^$build/" | grep -v "^$build/tests\$" || true
         echo "$build/apps/scadles-train"; echo "$build/apps/scadles-bench_gpu") | sort -u)
for e in $exes; do [ -f "$e" ] && [ -x "$e" ] || die "$e is missing: build it first (cmake --build $build)"; done

# ---- staging -----------------------------------------------------------------------------------
# The old bundle is replaced only when the new one is complete; OUTDIR is removed only when it is
# one (it holds a MANIFEST) or empty.
if [ -e "$out" ] && [ ! -f "$out/MANIFEST" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
    die "$out exists and is not a bundle (no MANIFEST); not replacing it"
fi
mkdir -p "$(dirname "$out")"
stage=$(mktemp -d "$out.tmp.XXXXXX")
declare -A from=()     # bundle path -> where it came from
declare -A libs=()     # soname -> resolved path, for every carried library
declare -A devlibs=()  # soname -> 1, libraries left to the device machine

put() { # SRC REL [NOTE]: copy a file into the bundle
    local d=$stage/${2%/*}
    [ "$2" = "${2%/*}" ] || [ -d "$d" ] || mkdir -p "$d"
    cp -L --preserve=mode "$1" "$stage/$2"
    if [ -L "$1" ]; then from[$2]="$(readlink -f "$1")${3:+ ($3)}"; else from[$2]="$1${3:+ ($3)}"; fi
}
put_gen() { # FILE REL WHAT: a file made here
    put "$1" "$2"
    from[$2]="generated: $3"
}
put_tree() { # DIR REL: copy every file under DIR
    local f
    while IFS= read -r -d '' f; do put "$f" "$2/${f#"$1"/}"; done < <(find "$1" -type f -print0)
}

# Not carried: glibc, the C++ runtime and the CUDA family (the device machine has CUDA, cuDNN and NCCL).
system_re='^(linux-vdso|ld-linux-x86-64|libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil|libanl|libnsl|libBrokenLocale|libstdc\+\+|libgcc_s)\.so'
cuda_re='^(libcuda|libcudart|libcublas|libcublasLt|libcudnn[a-z_]*|libnccl|libnvidia-[a-z_-]*|libnvrtc[a-z-]*|libnvJitLink|libcupti|libcufft|libcurand|libcusolver|libcusparse|libnvToolsExt)\.so'

xz_cache=${SD_BUNDLE_CACHE:-$build/gpu-bundle-cache}
put_lib() { # SONAME PATH: into lib/, xz-compressed when over 1 MiB (cached by path, size and time)
    local name=$1 path=$2 size key
    [ -n "${libs[$name]:-}" ] && return 0
    libs[$name]=$path
    size=$(stat -Lc %s "$path")
    if [ "$size" -le $big ]; then put "$path" "lib/$name"; return 0; fi
    mkdir -p "$xz_cache" "$stage/lib"
    key="$(readlink -f "$path") $(stat -Lc '%s %Y' "$path") xz-6"
    if [ ! -f "$xz_cache/$name.xz" ] || [ "$(cat "$xz_cache/$name.key" 2>/dev/null)" != "$key" ]; then
        xz -6 -T1 -c "$path" > "$xz_cache/$name.xz.part"
        mv "$xz_cache/$name.xz.part" "$xz_cache/$name.xz"
        echo "$key" > "$xz_cache/$name.key"
    fi
    cp "$xz_cache/$name.xz" "$stage/lib/$name.xz"
    from[lib/$name.xz]="$(readlink -f "$path") (xz; $size bytes unpacked)"
}
add_deps() { # ELF: every library it loads (ldd: the whole closure) into lib/, or onto the device list
    local name arrow path rest
    while read -r name arrow path rest; do
        [ "$arrow" = "=>" ] || continue
        if [[ $name =~ $system_re ]]; then continue; fi
        if [[ $name =~ $cuda_re ]]; then devlibs[$name]=1; continue; fi
        [ "$path" != "not" ] || die "ldd $1: $name not found here; cannot carry it"
        put_lib "$name" "$path"
    done < <(ldd "$1")
}

# ---- tests, rewritten into the bundle ------------------------------------------------------------
# In tests.list the bundle root is @B@ (gpu_check.sh puts in the absolute path); the build tree and the
# source tree both map onto it, mpiexec onto mpi/bin/mpirun.
mpiexec=$(cfg MPIEXEC_EXECUTABLE)
uses_mpi=0
rw=""
rewrite() { # one field of tests.tsv -> rw, its bundle form (and the file it names goes into the bundle)
    local f=$1 rel=""
    case $f in
    /bin/sh | /usr/bin/sh) rw=sh; return ;;
    /bin/bash | /usr/bin/bash) rw=bash; return ;;
    esac
    if [ -n "$mpiexec" ] && [ "$f" = "$mpiexec" ]; then uses_mpi=1; rw="@B@/mpi/bin/mpirun"; return; fi
    if [ "$f" = "$build" ] || [ "$f" = "$src" ]; then rw="@B@"; return; fi
    case $f in "$build"/*) rel=${f#"$build"/} ;; "$src"/*) rel=${f#"$src"/} ;; esac
    if [ -n "$rel" ]; then
        if [ -f "$f" ]; then put "$f" "$rel"; elif [ -d "$f" ] && [ "$f" != "$build/tests" ]; then put_tree "$f" "$rel"; fi
    fi
    f=${f//"$build"\//@B@/}
    rw=${f//"$src"\//@B@/}
}
{
    echo "# tests.list: the ctest tests matching '$regex' of $build, for gpu_check.sh. Tab-separated:"
    echo "# NAME, WORKING_DIRECTORY, N, N environment entries, the command; @B@ is the bundle's root."
    while IFS=$'\t' read -r -a fld; do
        line=""
        for f in "${fld[@]}"; do
            k=${f%%=*}
            if [[ $f == *=* && $k =~ ^[A-Z_][A-Z0-9_]*$ ]]; then rewrite "${f#*=}"; rw="$k=$rw"; else rewrite "$f"; fi
            line+="${line:+$'\t'}$rw"
        done
        echo "$line"
    done < "$tmp/tests.tsv"
} > "$tmp/tests.list"
put_gen "$tmp/tests.list" tests.list "ctest -N -R '$regex' --show-only=json-v1 in $build, paths rewritten"

for e in $exes; do put "$e" "${e#"$build"/}"; done
[ -d "$stage/tests/mpi" ] && for f in "$src"/tests/mpi/*.sh "$src"/tests/mpi/*.supp; do # helpers they source
    [ -f "$f" ] && put "$f" "tests/mpi/$(basename "$f")"
done
put_tree "$src/apps/experiments" apps/experiments
put "$src/tests/bench/torch_gpu_peer.py" tests/bench/torch_gpu_peer.py
put "$src/tests/golden/models.py" tests/golden/models.py
put "$src/scripts/bench_gpu_ratios.awk" scripts/bench_gpu_ratios.awk
put "$src/scripts/gpu_check.sh" gpu_check.sh

fm=/usr/share/datasets/fashion-mnist
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -r "$fm/$f.gz" ] || die "$fm/$f.gz not found: test_cuda_distributed and test_dist_nccl need Fashion-MNIST (scripts/setup.sh installs dataset-fashion-mnist)"
    if [ "$f" != train-images-idx3-ubyte ]; then
        put "$fm/$f.gz" "data/fashion-mnist/$f.gz" "gpu_check.sh links it into $fm on the device"
        continue
    fi
    # the training images, the bundle's largest file (26.4 MB of gzip), travel as xz -9 of the raw
    # IDX file (22.7 MB; cached like the libraries); gpu_check.sh gzips them back on the device
    mkdir -p "$xz_cache" "$stage/data/fashion-mnist"
    key="$(readlink -f "$fm/$f.gz") $(stat -Lc '%s %Y' "$fm/$f.gz") raw-xz-9"
    if [ ! -f "$xz_cache/$f.xz" ] || [ "$(cat "$xz_cache/$f.key" 2>/dev/null)" != "$key" ]; then
        gzip -dc "$fm/$f.gz" | xz -9 -T0 -c > "$xz_cache/$f.xz.part" || die "cannot recompress $fm/$f.gz"
        mv "$xz_cache/$f.xz.part" "$xz_cache/$f.xz"
        echo "$key" > "$xz_cache/$f.key"
    fi
    cp "$xz_cache/$f.xz" "$stage/data/fashion-mnist/$f.xz"
    from[data/fashion-mnist/$f.xz]="$(readlink -f "$fm/$f.gz") (gunzipped, xz -9; gpu_check.sh gzips it into $fm on the device)"
done

# ---- Open MPI, relocatable -----------------------------------------------------------------------
dropped=""
if [ $uses_mpi = 1 ]; then
    "$mpiexec" --version 2>&1 | grep -Eqi 'open ?mpi|openrte' || die "$mpiexec is not Open MPI: only Open MPI is made relocatable here"
    command -v ompi_info >/dev/null || die "ompi_info not found (it comes with Open MPI's mpirun); needed to find Open MPI's folders"
    opath() { ompi_info --parsable --path "$1" | sed -n "s/^path:$1://p" | head -n 1; }
    pkglibdir=$(opath pkglibdir) pkgdatadir=$(opath pkgdatadir) sysconfdir=$(opath sysconfdir)
    [ -d "$pkglibdir" ] || die "Open MPI's plugin folder '$pkglibdir' (ompi_info --path pkglibdir) not found"
    put "$(readlink -f "$mpiexec")" mpi/bin/mpirun "$mpiexec"
    # Plugins for what runs on one host; those for fabrics, OpenSHMEM and netlink need libraries a
    # single-GPU machine does not use (and we do not carry): left out, listed in the MANIFEST.
    drop_re='^(liboshmem|libucp|libucs|libucm|libuct|libfabric|libibverbs|librdmacm|libpsm_infinipath|libpsm2|libnl-3|libnl-route-3|libknem|libxpmem|libhcoll|libcuda)\.so'
    for p in "$pkglibdir"/*.so; do
        bad=$(objdump -p "$p" | awk '/NEEDED/ {print $2}' | { grep -E "$drop_re" || true; } | tr '\n' ' ')
        if [ -n "$bad" ]; then dropped+="# left out: $(basename "$p") (needs ${bad% })"$'\n'; continue; fi
        put "$p" "lib/openmpi/$(basename "$p")"
    done
    [ -d "$pkgdatadir" ] && put_tree "$pkgdatadir" mpi/share/openmpi
    [ -d "$sysconfdir" ] && put_tree "$sysconfdir" mpi/etc
fi

# ---- shared libraries: the closure of every ELF file in the bundle ------------------------------
is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' \n')" = '177ELF' ]; }
for rel in "${!from[@]}"; do
    is_elf "$stage/$rel" && add_deps "$stage/$rel"
done
if [ -n "${libs[libpmix.so.2]:-}" ]; then # external PMIx (Debian's Open MPI): its plugins and help files
    pmix=$(dirname "$(readlink -f "${libs[libpmix.so.2]}")")
    if [ -d "$pmix/pmix" ]; then
        for p in "$pmix"/pmix/*.so; do put "$p" "lib/pmix/$(basename "$p")"; add_deps "$p"; done
    fi
    [ -d "$pmix/../share/pmix" ] && put_tree "$(cd "$pmix/../share/pmix" && pwd)" mpi/share/pmix
    [ -f "$pmix/../share/pmix-mca-params.conf" ] && put "$pmix/../share/pmix-mca-params.conf" mpi/etc/pmix-mca-params.conf
fi
printf '%s\n' "${!devlibs[@]}" | sort > "$tmp/device_libs.txt"
put_gen "$tmp/device_libs.txt" device_libs.txt "the CUDA libraries the binaries load (ldd), left to the device machine"

# ---- MANIFEST, size --------------------------------------------------------------------------------
ver() { sed -n "s/^#define $1 *//p" "$2" 2>/dev/null | head -n 1; }
cudnn_h=$(cfg CUDNN_INCLUDE_DIR)/cudnn_version.h nccl_h=$(cfg NCCL_INCLUDE_DIR)/nccl.h
{
    echo "# MANIFEST of the ScaDLES GPU acceptance bundle (scripts/gpu_bundle.sh); run ./gpu_check.sh on the device."
    echo "# made: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) ($(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"))"
    echo "# commit: $(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$src" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
    echo "# build: $build ($(cfg CMAKE_BUILD_TYPE), CUDA archs $(cfg SCADLES_CUDA_ARCHS), native $(cfg SCADLES_NATIVE), NCCL $(cfg SCADLES_HAVE_NCCL))"
    echo "# built against: nvcc $(cfg CUDA_COMPILER_VERSION), cuDNN $(ver CUDNN_MAJOR "$cudnn_h").$(ver CUDNN_MINOR "$cudnn_h").$(ver CUDNN_PATCHLEVEL "$cudnn_h"), NCCL $(ver NCCL_MAJOR "$nccl_h").$(ver NCCL_MINOR "$nccl_h").$(ver NCCL_PATCH "$nccl_h")${mpiexec:+, $("$mpiexec" --version 2>&1 | head -n 1)}"
    echo "# left to the device machine: $(tr '\n' ' ' < "$tmp/device_libs.txt")glibc, libstdc++, libgcc_s"
    [ "$(cfg SCADLES_NATIVE)" = ON ] && echo "# WARNING: built with -march=native: may not run on the device's CPU (the default build is not)"
    printf '%s' "$dropped"
    echo "# path<TAB>bytes<TAB>from"
    (cd "$stage" && find . -type f -printf '%P\t%s\n') | LC_ALL=C sort > "$tmp/sizes"
    for rel in "${!from[@]}"; do printf '%s\t%s\n' "$rel" "${from[$rel]}"; done | LC_ALL=C sort > "$tmp/from"
    LC_ALL=C join -t $'\t' "$tmp/sizes" "$tmp/from"
} > "$stage/MANIFEST"

size=$(du -sb "$stage" | cut -f1)
tracked=$(git -C "$root" ls-files -z 2>/dev/null | (cd "$root" && xargs -0 -r stat -c %s 2>/dev/null) | awk '{s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu_bundle.sh: size $(mib "$size") ($size bytes); with the repository's tracked files ($(mib "$tracked")) $(mib $((size + tracked))) of the 64 MiB one device call carries"
if [ $((size + tracked)) -ge $limit ]; then # the old bundle, if any, stays
    die "too large: $(mib "$size") + $(mib "$tracked") of tracked files >= 64 MiB (the device tool carries at most 64 MiB)"
fi
rm -rf "$out"
mv "$stage" "$out"
stage=""
echo "gpu_bundle.sh: $out: $(grep -vc '^#' "$out/MANIFEST") files, $(grep -vc '^#' "$out/tests.list") tests, $(find "$out/lib" -type f | wc -l) libraries and plugins"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1 && [[ $out == "$root"/* ]] && ! git -C "$root" check-ignore -q "$out"; then
    echo "gpu_bundle.sh: warning: $out is not git-ignored: it would travel twice (untracked and carried)" >&2
fi
