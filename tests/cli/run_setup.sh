#!/bin/sh
# run_setup.sh ROOT: scripts/setup.sh's decisions, with nothing installed: it runs under a PATH of
# stand-ins only (dpkg-query that reports the packages named in $FAKE_MISSING as absent, apt-get
# and sudo that log their arguments, id that answers $FAKE_UID) and must
#   - install only the main job's packages for `main`, and those plus the tests' for `tests` (the
#     default, what scripts/test.sh and so CI ask for), with apt-get as root and sudo apt-get as
#     another user; nothing when all are present;
#   - as another user without sudo, or without dpkg-query/apt-get, exit 1 naming the missing
#     packages and SCADLES_SKIP_SETUP, without running apt-get;
#   - with SCADLES_SKIP_SETUP=1 look nothing up and install nothing (exit 1 naming cmake when it is
#     not on PATH); with SCADLES_SETUP_DRY_RUN=1 print the command and run nothing;
#   - keep PyTorch, clang, mosquitto, MPI and librdkafka out of the main group, and oneDNN in it (the
#     CPU convolutions); the bench group holds main's and its peers';
# and scripts/run.sh and scripts/test.sh must ask for their groups.
ROOT=$1
SETUP="$ROOT/scripts/setup.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd_setup_XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "PASS $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

bin="$tmp/bin"
mkdir -p "$bin"
cat > "$bin/dpkg-query" <<'EOF'
#!/bin/sh
for p; do :; done
echo "dpkg-query $p" >> "$FAKE_LOG"
case " $FAKE_MISSING " in *" $p "*) exit 1 ;; esac
printf 'install ok installed'
EOF
cat > "$bin/apt-get" <<'EOF'
#!/bin/sh
echo "apt-get $*" >> "$FAKE_LOG"
EOF
cat > "$bin/sudo" <<'EOF'
#!/bin/sh
echo "sudo" >> "$FAKE_LOG"
exec "$@"
EOF
cat > "$bin/id" <<'EOF'
#!/bin/sh
echo "$FAKE_UID"
EOF
for t in cmake cc pkg-config; do printf '#!/bin/sh\n' > "$bin/$t"; done
chmod +x "$bin"/*
ln -s "$(command -v env)" "$bin/env"

# run GROUP...: runs setup.sh under the stand-ins; sets rc, out (stdout + stderr) and log (their calls)
run() {
    : > "$tmp/log"
    out=$(cd "$tmp" && PATH="$bin" FAKE_LOG="$tmp/log" /bin/bash "$SETUP" "$@" 2>&1)
    rc=$?
    log=$(cat "$tmp/log")
}
has() { case "$1" in *"$2"*) return 0 ;; esac; return 1; }
install_line() { printf '%s\n' "$log" | grep 'apt-get install' || true; }

export FAKE_UID=0 FAKE_MISSING=""

# the lists
run --list main; main=" $out "
run --list tests; tests=" $out "
for p in build-essential cmake pkg-config libopenblas-dev libcjson-dev libxxhash-dev zlib1g-dev dataset-fashion-mnist; do
    has "$main" " $p " || bad "main group lacks $p (required to build or run the main job)"
done
has "$main" " libdnnl-dev " || bad "main group lacks libdnnl-dev (oneDNN: the main job's CPU convolutions)"
run --list bench; bench=" $out "
for p in $main libisal-dev python3-torch; do has "$bench" " $p " || bad "bench group lacks $p"; done
for p in python3-torch clang libclang-rt-dev mosquitto libmosquitto-dev libopenmpi-dev openmpi-bin librdkafka-dev; do
    has "$main" " $p " && bad "main group has $p (the tests' only)"
    has "$tests" " $p " || bad "tests group lacks $p"
done
for p in $main; do has "$tests" " $p " || bad "tests group lacks the main job's $p"; done
[ "$fails" = 0 ] && ok "lists: main $(echo $main | wc -w) packages, tests $(echo $tests | wc -w), main within tests"
run; [ "$rc" = 0 ] && [ " $(printf '%s\n' "$log" | sed 's/dpkg-query //' | tr '\n' ' ')" = "$tests" ] \
    && ok "no group: the tests' packages are looked up" || bad "no group (rc $rc): looked up $log"
run bogus; [ "$rc" = 2 ] && has "$out" "unknown group 'bogus'" && ok "an unknown group: exit 2" || bad "unknown group: rc $rc: $out"

# everything present
run main; [ "$rc" = 0 ] && ! has "$log" apt-get && has "$out" "packages present" \
    && ok "all present: nothing installed" || bad "all present: rc $rc, log: $log"

# missing, as root
FAKE_MISSING="cmake python3-torch mosquitto"
run main
line=$(install_line)
if [ "$rc" = 0 ] && has "$log" "apt-get update" && has "$line" " cmake" && ! has "$line" python3-torch \
   && ! has "$line" mosquitto && ! has "$log" sudo; then ok "root, main: apt-get installs cmake only: $line"
else bad "root, main: rc $rc, log: $log"; fi
run tests
line=$(install_line)
if [ "$rc" = 0 ] && has "$line" " cmake" && has "$line" python3-torch && has "$line" mosquitto && ! has "$log" sudo
then ok "root, tests: apt-get installs all three: $line"; else bad "root, tests: rc $rc, log: $log"; fi

# another user, with and without sudo
FAKE_UID=1000
run main
if [ "$rc" = 0 ] && [ "$(printf '%s\n' "$log" | grep -v dpkg-query | head -n 1)" = sudo ] && has "$(install_line)" " cmake"
then ok "user with sudo: sudo apt-get"; else bad "user with sudo: rc $rc, log: $log"; fi
mv "$bin/sudo" "$tmp/sudo"
run main
if [ "$rc" = 1 ] && ! has "$log" apt-get && has "$out" "missing Debian packages: cmake" && has "$out" SCADLES_SKIP_SETUP=1
then ok "user without sudo: exit 1 naming the packages and SCADLES_SKIP_SETUP"; else bad "user without sudo: rc $rc: $out / $log"; fi
mv "$tmp/sudo" "$bin/sudo"
FAKE_UID=0

# skip and dry run
SCADLES_SKIP_SETUP=1 run tests
[ "$rc" = 0 ] && [ -z "$log" ] && ok "SCADLES_SKIP_SETUP=1: nothing looked up or installed" || bad "skip: rc $rc, log: $log"
mv "$bin/cmake" "$tmp/cmake"
SCADLES_SKIP_SETUP=1 run main
[ "$rc" = 1 ] && has "$out" "cmake (Debian package cmake)" && ok "SCADLES_SKIP_SETUP=1 without cmake: exit 1 naming it" \
    || bad "skip without cmake: rc $rc: $out"
mv "$tmp/cmake" "$bin/cmake"
SCADLES_SETUP_DRY_RUN=1 run tests
if [ "$rc" = 0 ] && ! has "$log" apt-get && has "$out" "would run" && has "$out" "install -y -qq --no-install-recommends cmake mosquitto python3-torch"
then ok "SCADLES_SETUP_DRY_RUN=1: prints the command, runs nothing"; else bad "dry run: rc $rc: $out / $log"; fi

# no Debian tools
mv "$bin/dpkg-query" "$tmp/dpkg-query"
run main
[ "$rc" = 1 ] && has "$out" "libopenblas-dev" && has "$out" SCADLES_SKIP_SETUP=1 && ! has "$log" apt-get \
    && ok "no dpkg-query: exit 1 naming the packages" || bad "no dpkg-query: rc $rc: $out"
mv "$tmp/dpkg-query" "$bin/dpkg-query"

# the two README commands ask for their groups
grep -q '^scripts/setup.sh main$' "$ROOT/scripts/run.sh" && ok "scripts/run.sh: setup.sh main" || bad "scripts/run.sh does not run setup.sh main"
grep -q '^scripts/setup.sh tests$' "$ROOT/scripts/test.sh" && ok "scripts/test.sh: setup.sh tests" || bad "scripts/test.sh does not run setup.sh tests"

[ "$fails" = 0 ] || { echo "run_setup: $fails failure(s)"; exit 1; }
echo "run_setup: all passed"
