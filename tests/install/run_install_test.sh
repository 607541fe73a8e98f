#!/bin/sh
# run_install_test.sh CMAKE BUILD_DIR CONSUMER_DIR GENERATOR C_COMPILER PKG_CONFIG BUILD_TYPE: the engine
# as another project sees it (docs/install.md). `cmake --install` of this build tree into a temporary
# prefix (Runtime, Development and Apps); every installed header has its extern "C" guard and compiles
# alone as C++23; the consumer (tests/install/consumer.c) is built twice against the prefix,
# as C++17 with find_package(scadles CONFIG) and as C11 with pkg-config, and each run trains two steps
# and checks its outputs; the installed scadles-train runs. Exits 77 (skipped) without Fashion-MNIST or
# without a C++ compiler.
CMAKE=$1
BUILD=$2
SRC=$3
GEN=$4
CC=$5
PKGCONFIG=$6
TYPE=$7
DATA=/usr/share/datasets/fashion-mnist
if [ ! -r "$DATA/train-images-idx3-ubyte.gz" ]; then
  echo "test_install: skipped: Fashion-MNIST not found in $DATA (scripts/setup.sh installs dataset-fashion-mnist)"
  exit 77
fi
CXX=$(command -v c++ || command -v g++ || command -v clang++)
if [ -z "$CXX" ]; then
  echo "test_install: skipped: no C++ compiler (c++, g++ or clang++) for the C++ consumer: apt-get install g++"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd_install_XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
P=$tmp/prefix
die() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }

# ---- install -------------------------------------------------------------------------------------
step "cmake --install $BUILD --prefix $P"
for c in Runtime Development Apps; do
  "$CMAKE" --install "$BUILD" --prefix "$P" --component $c > "$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; die "cmake --install --component $c failed (is the build complete? cmake --build $BUILD)"; }
done
PC=$(find "$P" -name scadles.pc)
[ -n "$PC" ] || die "no scadles.pc under $P"
LIBDIR=$(dirname "$(dirname "$PC")")
for f in include/scadles/scadles.h include/scadles/stream/ring.h include/scadles/engine/experiment.h bin/scadles-train; do
  [ -e "$P/$f" ] || die "$f is not installed"
done
[ -e "$LIBDIR/libscadles_engine.a" ] || [ -e "$LIBDIR/libscadles_engine.so" ] || die "no libscadles_engine in $LIBDIR"
[ -r "$LIBDIR/cmake/scadles/scadlesConfig.cmake" ] && [ -r "$LIBDIR/cmake/scadles/scadlesConfigVersion.cmake" ] ||
  die "no scadlesConfig.cmake / scadlesConfigVersion.cmake in $LIBDIR/cmake/scadles"
if ls "$P"/include/scadles/*/*_internal.h > /dev/null 2>&1; then die "internal headers were installed"; fi
# shared builds run from the prefix: the libraries are found beside it (LD_LIBRARY_PATH for the pkg-config one)
"$P/bin/scadles-train" --help > "$tmp/help" 2>&1 || { cat "$tmp/help"; die "the installed scadles-train --help failed"; }

# ---- the installed headers -------------------------------------------------------------------------
export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
CFLAGS=$("$PKGCONFIG" --cflags scadles) || die "pkg-config --cflags scadles failed"
step "every installed header: extern \"C\", compiles alone as C++23 (the C consumer includes them all)"
n=0
for h in $(cd "$P/include/scadles" && ls */*.h); do
  grep -q 'extern "C" {' "$P/include/scadles/$h" || die "$h has no extern \"C\" guard"
  printf '#include "%s"\n' "$h" > "$tmp/one.h"
  # shellcheck disable=SC2086
  "$CXX" -std=c++2b -Wall -Wextra -Werror -fsyntax-only -x c++ $CFLAGS "$tmp/one.h" 2> "$tmp/err" ||
    { cat "$tmp/err"; die "$h does not compile alone as C++23"; }
  n=$((n + 1))
done
echo "$n headers"

# ---- find_package(scadles CONFIG), C++ -------------------------------------------------------------
step "C++ consumer with find_package(scadles CONFIG)"
"$CMAKE" -S "$SRC" -B "$tmp/cmake" -G "$GEN" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE="$TYPE" \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" > "$tmp/log" 2>&1 || { cat "$tmp/log"; die "configuring the consumer failed"; }
"$CMAKE" --build "$tmp/cmake" > "$tmp/log" 2>&1 || { cat "$tmp/log"; die "building the consumer failed"; }
"$tmp/cmake/consumer_cmake" "$tmp/out_cmake" "$DATA" > "$tmp/log" 2>&1 || { cat "$tmp/log"; die "consumer_cmake failed"; }
tail -n 1 "$tmp/log"

# ---- pkg-config, C -------------------------------------------------------------------------------
step "C consumer with pkg-config"
[ "$("$PKGCONFIG" --modversion scadles)" = "$(sed -n 's/^#define SD_VERSION_STRING "\(.*\)"/\1/p' "$P/include/scadles/base/version.h")" ] ||
  die "pkg-config --modversion scadles differs from base/version.h"
LIBS=$("$PKGCONFIG" --libs scadles) || die "pkg-config --libs scadles failed"
# shellcheck disable=SC2086
"$CC" -std=c11 -Wall -Wextra -Werror $CFLAGS "$SRC/consumer.c" -o "$tmp/consumer_pc" $LIBS 2> "$tmp/err" ||
  { cat "$tmp/err"; echo "cflags: $CFLAGS"; echo "libs: $LIBS"; die "building the consumer with pkg-config failed"; }
LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/consumer_pc" "$tmp/out_pc" "$DATA" > "$tmp/log" 2>&1 ||
  { cat "$tmp/log"; die "consumer_pc failed"; }
tail -n 1 "$tmp/log"
echo "test_install: passed"
