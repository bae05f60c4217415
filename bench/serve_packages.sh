# Sourced by the delivery and runtime benchmarks: packs each model given as
# an argument into $out/www (once), serves $out/www with `bitinc serve` on a
# free loopback port at $rate ("unlimited": no pacing) and $rtt, stops it when the script exits, and
# sets $url. Expects $bitinc, $ladder, $rate, $rtt and $out.
www=$out/www
mkdir -p "$www"
for model in "$@"; do
    name=$(basename "$model" .onnx)
    [[ -f $www/$name/manifest.json ]] || $bitinc pack "$model" --ladder "$ladder" -o "$www/$name" --no-progress >/dev/null
done
link=()
[[ $rate == unlimited ]] || link+=(--rate "$rate")
$bitinc serve "$www" --port 0 "${link[@]}" --rtt "$rtt" --quiet >"$out/serve.out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q http "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$out/serve.out")
