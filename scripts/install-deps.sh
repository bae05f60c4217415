#!/usr/bin/env bash
# Installs the Debian packages bitinc needs. Idempotent: apt-get runs only when
# something is missing. `--training` adds the PyTorch stack used by `make models` (and the zstd tool the
# version-delta bench scripts compare against).
set -euo pipefail

packages=(
    # build
    cmake g++ make ninja-build pkg-config clang-format
    # fuzzing (libFuzzer)
    clang libclang-rt-14-dev
    # libraries
    libonnx-dev libprotobuf-dev protobuf-compiler
    libopencv-dnn-dev libopencv-core-dev libopencv-imgcodecs-dev libopencv-imgproc-dev
    zlib1g-dev libzstd-dev nlohmann-json3-dev libssl-dev libcpp-httplib-dev libcurl4-openssl-dev
    # the Python module (python/)
    python3-dev pybind11-dev python3-numpy
    # integration test against a real static web server
    nginx
    # plots of the evaluation report
    gnuplot-nox
    # tests and benchmarks
    libgtest-dev libgmock-dev libbenchmark-dev
    # ONNX's backend test models, through pack/unpack (tests/onnx_testdata_test.cpp)
    libonnx-testdata
    # bench/server_under_attack.sh
    curl python3
    # data
    dataset-fashion-mnist
)
if [[ "${1:-}" == "--training" ]]; then
    # zstd: the command-line tool bench/version_delta_*.py compare against.
    packages+=(python3-torch python3-torchvision python3-onnx python3-numpy zstd)
fi

missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install packages" >&2; exit 1; }
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
