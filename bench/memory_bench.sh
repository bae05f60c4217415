#!/usr/bin/env bash
# Peak memory (max RSS, /usr/bin/time -f %M) of pack, verify, unpack and an
# incremental fetch over loopback, against the model's float32 weight bytes.
# Makes synthetic Gemm-stack models (bench/make_big_model.cpp, Laplacian
# weights) and prints one table row per command:
#
#   model  command  float32 bytes  peak RSS  × float32  target  met
#
# Targets (issue 11): fetch, unpack and verify ≤ 1.3 × float32 + 64 MB;
# pack ≤ 2 × float32. With $BEFORE (default /work/main/build/bitinc, when
# present) the same commands of that binary are measured on the models it
# can read (inline data under 2 GiB), for the "before" figures.
#
#   bench/memory_bench.sh     # 8 x 4096 (0.54 GB), 1 x 12000 (0.58 GB, one tensor), 48 x 4096 (3.2 GB)
#   MODELS="small:4:1024" bench/memory_bench.sh
#
# Environment: BITINC (build/bitinc), MAKER (build/bench/bitinc_make_big_model),
# BEFORE, OUT (scratch directory, removed at the end unless KEEP=1), LADDER
# (8,16), MODELS (NAME:LAYERS:WIDTH[:external] ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bitinc=$(realpath "${BITINC:-build/bitinc}")
maker=$(realpath "${MAKER:-build/bench/bitinc_make_big_model}")
before=${BEFORE-/work/main/build/bitinc}
[[ -n $before && -x $before ]] || before=""
out=${OUT:-$(mktemp -d /tmp/bitinc-memory-XXXXXX)}
ladder=${LADDER:-8,16}
models=${MODELS:-"mid:8:4096 wide:1:12000 big:48:4096:external"}
mkdir -p "$out/www"

server=""
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$out"
}
trap cleanup EXIT

"$bitinc" serve "$out/www" --port 0 --quiet >"$out/serve.out" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q http "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$out/serve.out")

# peak_kb COMMAND...: runs it, prints its max RSS in KB and its seconds;
# fails if it fails.
peak_kb() {
    /usr/bin/time -f '%M %e' -o "$out/time.txt" "$@" >"$out/command.out" 2>&1 || {
        echo "failed: $*" >&2
        cat "$out/command.out" >&2
        return 1
    }
    tail -1 "$out/time.txt"
}

printf '%-6s %-7s %-15s %-11s %-8s %-7s %-10s %-4s %s\n' model binary command "float32 MB" "peak MB" "x f32" target met seconds
row() {  # model binary command float32_bytes "peak_kb seconds"
    local model=$1 binary=$2 command=$3 f32=$4 measured=$5
    python3 - "$model" "$binary" "$command" "$f32" $measured <<'EOF'
import sys
model, binary, command, f32, kb, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
peak = kb * 1024
if command == "pack":
    limit, target = 2 * f32, "2x"
else:
    limit, target = 1.3 * f32 + 64e6, "1.3x+64MB"
met = "yes" if peak <= limit else "no"
print(f"{model:<6} {binary:<7} {command:<15} {f32/1e6:<11.0f} {peak/1e6:<8.0f} {peak/f32:<7.2f} {target:<10} {met:<4} {seconds:.1f}")
EOF
}

# measure MODEL BINARY_LABEL COMMAND_NAME FLOAT32_BYTES COMMAND...: one row;
# stops the script if the command fails.
measure() {
    local model=$1 label=$2 command=$3 f32=$4 measured
    shift 4
    measured=$(peak_kb nice "$@") || exit 1
    row "$model" "$label" "$command" "$f32" "$measured"
}

for spec in $models; do
    IFS=: read -r name layers width external <<<"$spec"
    dir=$out/$name
    mkdir -p "$dir"
    "$maker" "$dir/$name.onnx" "$layers" "$width" ${external:+--external-data} >&2
    f32=$(( layers * width * (width + 1) * 4 ))
    binaries="after:$bitinc"
    [[ -n $before && -z $external ]] && binaries="$binaries before:$before"
    for entry in $binaries; do
        label=${entry%%:*}
        binary=${entry#*:}
        package=$out/www/$name-$label
        mkdir -p "$dir/unpacked" "$dir/fetched"
        measure "$name" "$label" pack "$f32" \
            "$binary" pack "$dir/$name.onnx" --ladder "$ladder" -o "$package" --no-progress
        measure "$name" "$label" verify "$f32" "$binary" verify "$package" --no-progress
        measure "$name" "$label" unpack "$f32" "$binary" unpack "$package" -o "$dir/unpacked/model.onnx"
        measure "$name" "$label" fetch-loopback "$f32" \
            "$binary" fetch "$url/$name-$label/" -o "$dir/fetched/model.onnx" --no-progress
        # What was fetched is what unpack rebuilt (the data file too, if any).
        diff -r "$dir/fetched" "$dir/unpacked" >&2
        rm -rf "$dir/fetched" "$dir/unpacked" "$package"
    done
    rm -rf "$dir"
done
