#!/usr/bin/env bash
# The device SDK as an application sees it: configures bitinc with the
# decode component alone, installs it to a scratch prefix, builds the C
# consumer (tests/c_api_test.c) and a C++ ProgressiveModel over a directory
# (progressive_consumer.cpp) against the installed files with find_package
# and with pkg-config, and the C++ device integration of docs/architecture.md
# with find_package, runs them on a package, and checks that
# neither the installed library nor the programs pull in OpenCV, HTTP
# (cpp-httplib, libcurl), zstd or OpenSSL.
#
# usage: check.sh PACKAGE_DIR EXPECTED.onnx [WORK_DIR]
#   PACKAGE_DIR    a package with an exact rung of EXPECTED.onnx (bitinc pack
#                  --ladder 4,8,exact); the consumer must decode it back to it
#   WORK_DIR       kept between runs so that the decode-only build is
#                  incremental (default: a temporary directory, removed)
# Uses ccache when it is installed.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 PACKAGE_DIR EXPECTED.onnx [WORK_DIR]" >&2
    exit 2
fi
package=$(realpath "$1")
expected=$(realpath "$2")
source_dir=$(realpath "$(dirname "$0")/../..")
if [[ $# -eq 3 ]]; then
    work=$3
    mkdir -p "$work"
    work=$(realpath "$work")
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
prefix=$work/prefix
rm -rf "$prefix" "$work/consumer-cmake" "$work/consumer-pkgconfig"

launchers=()
if command -v ccache >/dev/null; then
    launchers=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
step() { echo "== $*"; }

step "bitinc, decode component only"
cmake -S "$source_dir" -B "$work/bitinc" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBITINC_BUILD_FETCH=OFF -DBITINC_BUILD_RUNTIME=OFF -DBITINC_BUILD_ENCODE=OFF \
    -DBITINC_BUILD_LAB=OFF "${launchers[@]}" >"$work/configure.log" ||
    { cat "$work/configure.log"; exit 1; }
# A device build must configure where none of them is installed: it does
# not even look for them (nor for GoogleTest or Google Benchmark).
if grep -E '^[A-Za-z_]+:' "$work/bitinc/CMakeCache.txt" | cut -d: -f1 |
    grep -E '^(OPENCV|CURL|ZSTD|HTTPLIB|OPENSSL|OpenSSL|GTest|benchmark)'; then
    echo "the decode-only configure looked for the libraries above" >&2
    exit 1
fi
cmake --build "$work/bitinc" >"$work/build.log" || { tail -n 50 "$work/build.log"; exit 1; }
cmake --install "$work/bitinc" --prefix "$prefix" >/dev/null
for file in include/bitinc/bitinc.h lib/libbitinc_decode.a lib/cmake/bitinc/bitincConfig.cmake \
    lib/cmake/bitinc/bitincConfigVersion.cmake lib/pkgconfig/bitinc-decode.pc; do
    [[ -f $prefix/$file ]] || { echo "not installed: $file" >&2; exit 1; }
done
# The device's headers alone: a producer's or the lab's would not link.
for file in include/bitinc/device.hpp include/bitinc/decoder.hpp include/bitinc/fetch.hpp; do
    [[ -f $prefix/$file ]] || { echo "not installed: $file" >&2; exit 1; }
done
for file in pack.hpp calibration.hpp evaluation.hpp trust.hpp bitinc.hpp server.hpp net.hpp; do
    [[ ! -e $prefix/include/bitinc/$file ]] ||
        { echo "a decode-only install has include/bitinc/$file" >&2; exit 1; }
done
for file in "$prefix"/lib/libbitinc_*.a; do
    [[ $(basename "$file") == libbitinc_decode.a ]] ||
        { echo "a decode-only install has $file" >&2; exit 1; }
done

step "consumer with find_package(bitinc COMPONENTS decode)"
cmake -S "$source_dir/tests/consumer" -B "$work/consumer-cmake" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer-cmake" >/dev/null
"$work/consumer-cmake/consumer" "$package" "$expected"
"$work/consumer-cmake/progressive_consumer" "$package" "$expected"
step "the device integration of docs/architecture.md"
"$work/consumer-cmake/device_example" "$package" "$expected"

step "find_package(bitinc COMPONENTS runtime) fails on this install"
if cmake -S "$source_dir/tests/consumer" -B "$work/consumer-missing" -G Ninja \
    -DCMAKE_PREFIX_PATH="$prefix" -DBITINC_CONSUMER_COMPONENTS=runtime >/dev/null 2>&1; then
    echo "find_package found a component that is not installed" >&2
    exit 1
fi
rm -rf "$work/consumer-missing"

step "consumer with pkg-config bitinc-decode"
mkdir -p "$work/consumer-pkgconfig"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# shellcheck disable=SC2046  # the flags are words
"${CC:-cc}" -std=c11 -O2 -Wall -Wextra -Werror "$source_dir/tests/c_api_test.c" \
    $(pkg-config --cflags --libs bitinc-decode) -o "$work/consumer-pkgconfig/consumer"
"$work/consumer-pkgconfig/consumer" "$package" "$expected"
# shellcheck disable=SC2046
"${CXX:-c++}" -std=c++20 -O2 -Wall -Wextra -Werror "$source_dir/tests/consumer/progressive_consumer.cpp" \
    $(pkg-config --cflags --libs bitinc-decode) -o "$work/consumer-pkgconfig/progressive_consumer"
"$work/consumer-pkgconfig/progressive_consumer" "$package" "$expected"

step "no OpenCV, HTTP, zstd or OpenSSL"
forbidden_libraries='opencv|httplib|curl|zstd|libssl|libcrypto'
forbidden_symbols='cv::|httplib|curl_|ZSTD_|EVP_|SSL_'
status=0
for program in "$work"/consumer-{cmake,pkgconfig}/{consumer,progressive_consumer} \
    "$work/consumer-cmake/device_example"; do
    if ldd "$program" | grep -Ei "$forbidden_libraries"; then
        echo "$program loads a library it must not" >&2
        status=1
    fi
    if nm -C "$program" | grep -E "$forbidden_symbols"; then
        echo "$program has symbols it must not" >&2
        status=1
    fi
done
# The whole archive, not only what the program happened to pull in.
if nm -C "$prefix/lib/libbitinc_decode.a" | grep -E "$forbidden_symbols"; then
    echo "libbitinc_decode.a refers to symbols it must not" >&2
    status=1
fi
[[ $status -eq 0 ]] && echo "consumer check passed"
exit $status
