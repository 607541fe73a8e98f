#!/usr/bin/env bash
# gpu_check.sh: the one-call GPU acceptance (docs/cuda.md, "Checking on a lent GPU in one call"). It is
# copied into the bundle that scripts/gpu_bundle.sh makes and runs from there, on the device machine:
#
#   gpu-bundle/gpu_check.sh [--only STEP,...] [--limit SECONDS]
#   gpu-bundle/gpu_check.sh --print-env DIR      (unpack the libraries into DIR, print the environment)
#
# Steps, each under its own timeout and all within --limit (default 470 s, under the 8 minutes one
# device call is planned for): the preflight (nvidia-smi, the driver, the CUDA libraries the binaries
# need, found on the machine: cuDNN and NCCL in PyTorch's nvidia/* packages first; ldd of every bundled
# binary), then every test in tests.list (the bundle's ctest tests matching cuda|nccl) with
# SD_CUDA_REQUIRE=1, one training step of scadles-train on the GPU, compute-sanitizer memcheck and
# racecheck on test_cuda_topk and on one training step (when compute-sanitizer is there), and
# scadles-bench_gpu with the PyTorch peer (tests/bench/torch_gpu_peer.py) and the ratios.
# Everything goes into $OUT/gpu_check.txt (OUT: the device tool's output folder; a fresh /tmp folder
# when unset): each step's command, output (long outputs cut in the middle), result (PASS, FAIL, SKIP,
# TIMEOUT), time and figures, and a summary at the end, which is also printed; the steps' whole
# outputs go into $OUT/gpu_check_logs.tar.gz.
# Exit: 0 when nothing failed or timed out, 1 when something did, 2 when the preflight failed (no GPU,
# no driver, a library not found): that takes seconds and names what is missing.
set -u
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
t_start=$(date +%s)
limit=470 only="" print_env=""
while [ $# -gt 0 ]; do
    case $1 in
    --only) only=${2:-}; shift 2 || shift ;;
    --limit) limit=${2:-470}; shift 2 || shift ;;
    --print-env) print_env=${2:-}; shift 2 || shift ;;
    -h | --help) sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (--only STEP,... | --limit SECONDS | --print-env DIR)" >&2; exit 2 ;;
    esac
done
deadline=$((t_start + limit))
if [ ! -f "$B/MANIFEST" ] || [ ! -f "$B/tests.list" ]; then
    echo "gpu_check.sh: $B is not a bundle (no MANIFEST, tests.list): make one with scripts/gpu_bundle.sh and run its copy" >&2
    exit 2
fi
orig_ld=${LD_LIBRARY_PATH:-} orig_path=$PATH

# ---- where the CUDA libraries and tools are --------------------------------------------------------
# Folders of PyTorch's CUDA wheels (nvidia/<package>/lib, torch/lib), without importing torch.
py_lib_dirs() {
    command -v python3 >/dev/null || return 0
    timeout 20 python3 - <<'EOF' 2>/dev/null
import importlib.util, os
out = []
for mod in ("nvidia", "torch"):
    try:
        spec = importlib.util.find_spec(mod)
    except Exception:
        continue
    for base in (spec.submodule_search_locations or []) if spec else []:
        if mod == "torch":
            out.append(os.path.join(base, "lib"))
            continue
        for sub in sorted(os.listdir(base)):
            d = os.path.join(base, sub, "lib")
            if os.path.isdir(d):
                out.append(d)
print("\n".join(d for d in out if os.path.isdir(d)))
EOF
}
cuda_dirs="/usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib"
case ${CUDA_HOME:-/usr/local/cuda} in /usr/local/cuda) ;; *) cuda_dirs="$CUDA_HOME/lib64 $CUDA_HOME/lib $cuda_dirs" ;; esac
driver_dirs="${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ } }/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu /usr/lib/wsl/lib"
from_ldconfig() { ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; exit}'; }
find_lib() { # SONAME DIR...: the first folder holding SONAME, else ldconfig's
    local n=$1 d p
    shift
    for d in "$@"; do [ -e "$d/$n" ] && { echo "$d"; return 0; }; done
    p=$(from_ldconfig "$n")
    [ -n "$p" ] && dirname "$p"
}
find_tool() { # NAME: on PATH, or in the CUDA / driver folders
    local d
    command -v "$1" 2>/dev/null && return 0
    for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /usr/local/nvidia/bin /opt/nvidia/bin; do
        [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}
unxz_to() { # FILE.xz OUT
    if command -v xz >/dev/null; then xz -dc "$1" > "$2"
    else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}

# unpack_libs DIR: lib/*.xz into DIR; sets the environment (libraries, Open MPI relocation) in this shell.
ld_dirs=""
add_ld() { case ":$ld_dirs:" in *":$1:"*) ;; *) ld_dirs=${ld_dirs:+$ld_dirs:}$1 ;; esac; }
unpack_libs() {
    local f ok=0
    mkdir -p "$1" || return 1
    for f in "$B"/lib/*.xz; do
        [ -e "$f" ] || continue
        unxz_to "$f" "$1/$(basename "${f%.xz}")" || { echo "cannot unpack $f into $1"; ok=1; }
    done
    add_ld "$1"
    add_ld "$B/lib"
    return $ok
}
mpi_env() { # Open MPI and PMIx from the bundle (relocated; nothing read from the machine's own)
    local m=$B/mpi
    export OPAL_PREFIX=$m OPAL_EXEC_PREFIX=$m OPAL_BINDIR=$m/bin OPAL_SBINDIR=$m/bin OPAL_LIBEXECDIR=$m/bin
    export OPAL_LIBDIR=$B/lib OPAL_PKGLIBDIR=$B/lib/openmpi OPAL_DATAROOTDIR=$m/share OPAL_DATADIR=$m/share
    export OPAL_PKGDATADIR=$m/share/openmpi OPAL_SYSCONFDIR=$m/etc
    export PMIX_PREFIX=$m PMIX_EXEC_PREFIX=$m PMIX_LIBDIR=$B/lib PMIX_PKGLIBDIR=$B/lib/pmix PMIX_DATAROOTDIR=$m/share
    export PMIX_DATADIR=$m/share PMIX_PKGDATADIR=$m/share/pmix PMIX_SYSCONFDIR=$m/etc
    export HWLOC_PLUGINS_PATH=$B/lib/hwloc # none carried: the same topology code here and there
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_btl_vader_single_copy_mechanism=none # CMA needs ptrace rights VMs may not give
}

# The CUDA libraries the binaries need (device_libs.txt), each found on this machine: cuDNN and NCCL in
# PyTorch's wheels first (the bundle carries neither), the rest in the CUDA toolkit first. Sets ld_dirs
# and lib_where; what is not found goes to $missing.
missing=()
lib_where=""
locate_cuda_libs() {
    local py n d
    py=$(py_lib_dirs | tr '\n' ' ')
    while IFS= read -r n; do
        [ -n "$n" ] || continue
        case $n in
        libcudnn* | libnccl*) d=$(find_lib "$n" $py $cuda_dirs) ;;
        libcuda.so*) d=$(find_lib "$n" $driver_dirs) ;;
        *) d=$(find_lib "$n" $cuda_dirs $py) ;;
        esac
        if [ -n "$d" ]; then add_ld "$d"; lib_where+="  $n: $d"$'\n'
        elif [ "$n" = libcuda.so.1 ]; then missing+=("no CUDA driver: libcuda.so.1 not found (looked in $driver_dirs and ldconfig -p)")
        else missing+=("library $n not found (looked in PyTorch's nvidia/*/lib and torch/lib, $cuda_dirs and ldconfig -p)"); fi
    done < <(cat "$B/device_libs.txt" 2>/dev/null; echo libcuda.so.1)
}

if [ -n "$print_env" ]; then # for tests/gpu/check_bundle.sh and for running a binary by hand
    unpack_libs "$print_env" || exit 1
    locate_cuda_libs
    mpi_env
    echo "export LD_LIBRARY_PATH='$ld_dirs${orig_ld:+:$orig_ld}'"
    env | grep -E '^(OPAL|PMIX|HWLOC|OMPI)_' | sed "s/^\([^=]*\)=\(.*\)$/export \1='\2'/"
    for m in "${missing[@]}"; do echo "# missing: $m"; done
    exit 0
fi

# ---- the report ----------------------------------------------------------------------------------
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
report=$OUT/gpu_check.txt
work=$(mktemp -d /tmp/gpu_check_work.XXXXXX)
trap 'rm -rf "$work"' EXIT
: > "$report"
say() { printf '%s\n' "$*" | tee -a "$report"; }
log() { printf '%s\n' "$*" >> "$report"; }
now() { date +%s; }
S_NAME=() S_RES=() S_SECS=() S_NOTE=()
record() { # NAME RESULT SECONDS NOTE
    S_NAME+=("$1") S_RES+=("$2") S_SECS+=("$3") S_NOTE+=("$4")
    say "== $1: $2 ($3 s)${4:+: $4}"
}
wanted() { [ -z "$only" ] && return 0; case ",$only," in *",$1,"*) return 0 ;; esac; return 1; }

summary() {
    local i np=0 nf=0 ns=0 nt=0
    say ""
    say "==== summary ($(($(now) - t_start)) s of $limit s; report $report)"
    for i in "${!S_NAME[@]}"; do
        printf '%-22s %-8s %6s s  %s\n' "${S_NAME[$i]}" "${S_RES[$i]}" "${S_SECS[$i]}" "${S_NOTE[$i]}" | tee -a "$report"
        case ${S_RES[$i]} in PASS) np=$((np + 1)) ;; FAIL) nf=$((nf + 1)) ;; SKIP) ns=$((ns + 1)) ;; TIMEOUT) nt=$((nt + 1)) ;; esac
    done
    if [ "$nf" -eq 0 ] && [ "$nt" -eq 0 ]; then say "gpu_check: PASS ($np passed, $ns skipped)"
    else say "gpu_check: FAIL ($nf failed, $nt timed out, $np passed, $ns skipped)"; fi
    [ "$nf" -eq 0 ] && [ "$nt" -eq 0 ]
}

# run_step NAME CAP RESERVE WORKDIR CMD...: runs CMD with a timeout of CAP seconds, less when the
# deadline (minus RESERVE seconds kept for later steps) comes first; its output goes into the report
# (the first and last 150 lines when longer). Sets rc (-1: not run, no time left), secs, steplog, tlimit.
rc=0 secs=0 steplog="" tlimit=0
run_step() {
    local name=$1 cap=$2 reserve=$3 wd=$4 t0 n
    shift 4
    tlimit=$((deadline - $(now) - reserve - 10))
    [ "$tlimit" -gt "$cap" ] && tlimit=$cap
    steplog=$work/$name.log
    : > "$steplog"
    if [ "$tlimit" -lt 15 ]; then rc=-1 secs=0; return; fi
    log ""
    log "---- $name: $* (in ${wd/#$B/<bundle>}, limit $tlimit s)"
    t0=$(date +%s.%N)
    (cd "$wd" && exec timeout -k 10 "$tlimit" "$@") > "$steplog" 2>&1 < /dev/null
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    n=$(wc -l < "$steplog")
    if [ "$n" -le 300 ]; then cat "$steplog" >> "$report"
    else head -n 150 "$steplog" >> "$report"; log "[... $((n - 300)) lines left out ...]"; tail -n 150 "$steplog" >> "$report"; fi
}
timed_out() { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; }
last_match() { grep -E "$1" "$steplog" | tail -n 1 | cut -c1-200; }
# A test's result from its exit code: 0 PASS, 77 SKIP (with its reason), timeout, else FAIL.
test_result() {
    local note
    if [ "$rc" -eq -1 ]; then record "$1" SKIP 0 "no time left before the deadline"; return; fi
    if timed_out; then record "$1" TIMEOUT "$secs" "killed after $tlimit s"; return; fi
    note=$(last_match 'passed|failed|skipped|FAILED|agree')
    case $rc in
    0) record "$1" PASS "$secs" "${2:-$note}" ;;
    77) record "$1" SKIP "$secs" "${3:-$note}" ;;
    *) record "$1" FAIL "$secs" "exit $rc: $(last_match 'FAIL|rror|failed' || true)" ;;
    esac
}

say "gpu_check.sh: ScaDLES GPU acceptance, $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), bundle $B, limit $limit s"
log "$(grep '^#' "$B/MANIFEST" 2>/dev/null | head -n 8)"

# ---- preflight: GPU, driver, libraries -------------------------------------------------------------
t0=$(now)
ngpu=0 gpus=""
smi=$(find_tool nvidia-smi || true)
if [ -z "$smi" ]; then
    missing+=("no nvidia-smi (not on PATH, nor in /usr/local/nvidia/bin): no NVIDIA driver on this machine")
else
    gpus=$(timeout 30 "$smi" --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1)
    ngpu=$(printf '%s\n' "$gpus" | grep -c '^[0-9]' || true)
    log "nvidia-smi: $smi"
    log "$gpus"
    [ "$ngpu" -gt 0 ] || missing+=("no CUDA device: nvidia-smi lists no GPU ($(printf '%s' "$gpus" | head -n 1 | cut -c1-160))")
fi
if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    if [ "$ngpu" -gt 0 ]; then log "note: no /dev/nvidia0 and the like, though nvidia-smi lists $ngpu GPU(s)"
    else missing+=("no CUDA device node (/dev/nvidia0 and the like are absent)"); fi
fi
unpack_libs "$work/lib" > "$work/unpack.log" 2>&1 || missing+=("the bundle's libraries did not unpack: $(head -n 1 "$work/unpack.log")")
locate_cuda_libs
mpi_env
export LD_LIBRARY_PATH=$ld_dirs${orig_ld:+:$orig_ld}
log "libraries: the bundle's (lib/, unpacked into $work/lib) and, found on this machine:"
log "${lib_where%$'\n'}"
# every bundled ELF file, with these libraries: nothing may be missing; for the programs (ldd -r) no
# symbol either (a cuDNN or NCCL here older than the one built against)
nf=0
while IFS= read -r -d '' f; do
    [ "$(head -c 4 "$f" | od -An -c | tr -d ' \n')" = '177ELF' ] || continue
    nf=$((nf + 1))
    case $f in "$B"/apps/* | "$B"/tests/*) r=-r ;; *) r="" ;; esac
    while IFS= read -r l; do missing+=("${l} (needed by ${f#"$B"/})"); done < <(ldd $r "$f" 2>&1 |
        awk '/not found/ {print "library " $1 " not found"} /undefined symbol/ {sub(/^[ \t]*/, ""); print; n++} n >= 3 {exit}')
done < <(find "$B/apps" "$B/tests" "$B/mpi/bin" "$B/lib/openmpi" "$B/lib/pmix" "$work/lib" -type f -print0 2>/dev/null)
log "ldd: $nf bundled ELF files checked (programs with -r: every symbol found)"
sanitizer=$(find_tool compute-sanitizer || true)
if [ ${#missing[@]} -gt 0 ]; then
    say "PREFLIGHT FAILED: this machine cannot run the GPU checks:"
    for m in "${missing[@]}"; do say "  - $m"; done
    record preflight FAIL "$(($(now) - t0))" "$(printf '%s; ' "${missing[@]}" | sed 's/; $//')"
    summary
    exit 2
fi
record preflight PASS "$(($(now) - t0))" "$ngpu GPU(s): $(printf '%s\n' "$gpus" | head -n 1 | cut -d, -f2 | sed 's/^ //'); compute-sanitizer: ${sanitizer:-none}"
log "PyTorch here: $(cd "$work" && PATH=$orig_path LD_LIBRARY_PATH=$orig_ld timeout 60 python3 -c '
import torch
try:
    nccl = torch.cuda.nccl.version()
except Exception as e:
    nccl = "unknown (%s)" % e
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", nccl)
' 2>&1 | tail -n 1)"

# Fashion-MNIST where the tests look for it (they run as root on the device machine)
fm=/usr/share/datasets/fashion-mnist
if [ ! -r "$fm/train-images-idx3-ubyte.gz" ]; then
    # three files are linked; the training images travel as xz of the raw file: gzip them back
    if mkdir -p "$fm" 2>/dev/null && ln -sf "$B"/data/fashion-mnist/*.gz "$fm"/ 2>/dev/null &&
        unxz_to "$B/data/fashion-mnist/train-images-idx3-ubyte.xz" "$fm/train-images-idx3-ubyte" &&
        gzip -1 -f "$fm/train-images-idx3-ubyte" 2>/dev/null; then
        log "Fashion-MNIST: linked the bundle's copy into $fm (the training images unpacked)"
    else
        say "Fashion-MNIST: cannot put the bundle's copy into $fm (not root? no gzip?): the tests that need it will report skipped"
    fi
fi

# ---- the tests (tests.list, from ctest) ------------------------------------------------------------
# GPUs a test needs (the 2-rank NCCL tests: one GPU per rank). With fewer, it runs without
# SD_CUDA_REQUIRE and must refuse cleanly (exit 77): that is checked and reported as SKIP.
gpus_needed() { case $1 in test_comm_nccl | test_dist_nccl) echo 2 ;; *) echo 1 ;; esac; }
test_cap() { case $1 in test_cuda_topk | test_cuda_parity) echo 150 ;; test_comm_nccl* ) echo 90 ;; *) echo 120 ;; esac; }
while IFS=$'\t' read -r -a fld; do
    case ${fld[0]:-} in '' | '#'*) continue ;; esac
    name=${fld[0]} wd=${fld[1]//@B@/$B} ne=${fld[2]}
    [ "$wd" = - ] && wd=$B
    envs=() args=()
    for f in "${fld[@]:3:ne}"; do envs+=("${f//@B@/$B}"); done
    for f in "${fld[@]:$((3 + ne))}"; do args+=("${f//@B@/$B}"); done
    wanted "$name" || continue
    need=$(gpus_needed "$name")
    if [ "$ngpu" -ge "$need" ]; then
        run_step "$name" "$(test_cap "$name")" 120 "$wd" env "${envs[@]}" SD_CUDA_REQUIRE=1 "${args[@]}"
        test_result "$name"
    else
        run_step "$name" 90 120 "$wd" env "${envs[@]}" "${args[@]}"
        test_result "$name" "" "needs $need GPUs, $ngpu here; the clean refusal was checked: $(last_match 'skipped' | cut -c1-120)"
    fi
done < "$B/tests.list"

# ---- one training step on the GPU --------------------------------------------------------------------
train=(apps/scadles-train --model fmnist_cnn --dataset fashion-mnist --train-limit 2048 --eval-limit 256
       --eval-batch 256 --threads 4 --quiet --backend cuda)
if wanted train_step; then
    run_step train_step 90 120 "$B" "${train[@]}" --steps 2 --out "$work/train"
    if [ "$rc" -eq 0 ] && grep -q '"loss"' "$work/train/ddp-seed1/metrics.jsonl" 2>/dev/null; then
        record train_step PASS "$secs" "2 steps; step losses $(grep -o '"loss": [0-9.e+-]*' "$work/train/ddp-seed1/metrics.jsonl" | awk '{printf "%s ", $2}')"
    elif [ "$rc" -eq -1 ]; then record train_step SKIP 0 "no time left before the deadline"
    elif timed_out; then record train_step TIMEOUT "$secs" "killed after $tlimit s"
    else record train_step FAIL "$secs" "exit $rc: $(last_match 'rror|fail|cuda' || true)"; fi
fi

# ---- compute-sanitizer: memcheck and racecheck on test_cuda_topk and on one training step ----------
# The Top-k test under a sanitizer runs its sweeps up to SD_CUDA_TOPK_MAX_N entries (every kernel is
# 10-100x slower there); 150 s are kept for the benchmark.
sanitize() { # NAME CAP TOOL MAX_N CMD...
    local name=$1 cap=$2 tool=$3 maxn=$4
    shift 4
    wanted "$name" || return 0
    if [ -z "$sanitizer" ]; then record "$name" SKIP 0 "compute-sanitizer not found (PATH, /usr/local/cuda/bin)"; return; fi
    run_step "$name" "$cap" 150 "$B" env SD_CUDA_REQUIRE=1 ${maxn:+SD_CUDA_TOPK_MAX_N=$maxn} \
        "$sanitizer" --tool "$tool" --error-exitcode 99 --print-limit 20 "$@"
    local s
    s=$(last_match 'ERROR SUMMARY|RACECHECK SUMMARY|HAZARD' || true)
    if [ "$rc" -eq -1 ]; then record "$name" SKIP 0 "no time left before the deadline"
    elif timed_out; then record "$name" TIMEOUT "$secs" "killed after $tlimit s${s:+ ($s)}"
    elif [ "$rc" -eq 0 ]; then record "$name" PASS "$secs" "${s:-no errors reported}"
    elif [ "$rc" -eq 99 ]; then record "$name" FAIL "$secs" "the sanitizer found errors: $s"
    else record "$name" FAIL "$secs" "exit $rc: $(last_match 'FAIL|rror' || true)"; fi
}
sanitize memcheck_topk 90 memcheck 1000003 tests/test_cuda_topk
sanitize racecheck_topk 90 racecheck 200003 tests/test_cuda_topk
sanitize memcheck_train 75 memcheck "" "${train[@]}" --steps 1 --out "$work/train_memcheck"
sanitize racecheck_train 75 racecheck "" "${train[@]}" --steps 1 --out "$work/train_racecheck"

# ---- the benchmark against PyTorch -----------------------------------------------------------------
if wanted bench_gpu; then
    run_step bench_gpu 120 60 "$B" apps/scadles-bench_gpu --reps 10
    cp "$steplog" "$work/ours.txt"
    if [ "$rc" -eq -1 ]; then record bench_gpu SKIP 0 "no time left before the deadline"
    elif timed_out; then record bench_gpu TIMEOUT "$secs" "killed after $tlimit s ($(grep -c '^result' "$work/ours.txt") results by then)"
    elif grep -q 'skipped: no CUDA device' "$work/ours.txt"; then record bench_gpu FAIL "$secs" "$(last_match skipped)"
    elif [ "$rc" -ne 0 ]; then record bench_gpu FAIL "$secs" "exit $rc: $(last_match 'validation|FAIL|failed' || true)"
    else record bench_gpu PASS "$secs" "$(grep -c '^result' "$work/ours.txt") results, all validated first"; fi
fi
if wanted bench_torch; then
    run_step bench_torch 120 0 "$B" env PATH="$orig_path" LD_LIBRARY_PATH="$orig_ld" PYTHONUNBUFFERED=1 \
        python3 tests/bench/torch_gpu_peer.py --steps 10 --warmup 3 --reps 10
    cp "$steplog" "$work/torch.txt"
    if [ "$rc" -eq -1 ]; then record bench_torch SKIP 0 "no time left before the deadline"
    elif grep -q 'skipped' "$work/torch.txt"; then record bench_torch FAIL "$secs" "$(last_match skipped)"
    elif timed_out; then record bench_torch TIMEOUT "$secs" "killed after $tlimit s ($(grep -c '^torch ' "$work/torch.txt") results by then)"
    elif [ "$rc" -ne 0 ]; then record bench_torch FAIL "$secs" "exit $rc: $(last_match 'rror|FAILED' || true)"
    else record bench_torch PASS "$secs" "$(grep -c '^torch ' "$work/torch.txt") results"; fi
fi
if [ -s "$work/ours.txt" ]; then
    say ""
    say "==== figures (scadles-bench_gpu result lines)"
    grep '^result' "$work/ours.txt" | tee -a "$report"
    grep -q '^result' "$work/ours.txt" || say "(none)"
    if [ -s "$work/torch.txt" ]; then
        say "==== ours vs PyTorch eager on this GPU (scripts/bench_gpu_ratios.awk)"
        awk -f "$B/scripts/bench_gpu_ratios.awk" "$work/ours.txt" "$work/torch.txt" > "$work/ratios.txt"
        if [ -s "$work/ratios.txt" ]; then tee -a "$report" < "$work/ratios.txt"; else say "(no pair measured by both)"; fi
    fi
fi
# every step's whole output (the report cuts long ones in the middle)
(cd "$work" && tar -czf "$OUT/gpu_check_logs.tar.gz" ./*.log ./*.txt 2>/dev/null)
summary
