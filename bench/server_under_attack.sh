#!/usr/bin/env bash
# The package server under attack: packs MODEL (default
# models/mobilenetv2.onnx), serves it with `bitinc serve`, times curl fetches
# of its largest rung file, then again while an attacker holds IDLE idle
# connections and SLOW slowloris connections (one header byte per second
# each, reconnecting whatever the server closes), and finally while it sends
# HEADS request heads of 1 MiB each. Prints client latencies and the
# server's peak and current RSS (VmHWM, VmRSS) after each phase.
#
#   bench/server_under_attack.sh [MODEL.onnx]
#
# IDLE (default 2000), SLOW (100), FETCHES (10), HEADS (200), OUT (out/attack).
set -euo pipefail
cd "$(dirname "$0")/.."
bitinc=${BITINC:-build/bitinc}
[[ -x $bitinc ]] || { echo "build first: make build" >&2; exit 1; }
model=${1:-models/mobilenetv2.onnx}
idle=${IDLE:-2000} slow=${SLOW:-100} fetches=${FETCHES:-10} heads=${HEADS:-200}
out=${OUT:-out/attack}
ulimit -n "$(ulimit -Hn)"  # the attacker needs IDLE + SLOW sockets

name=$(basename "$model" .onnx)
www=$out/www
mkdir -p "$www"
[[ -f $www/$name/manifest.json ]] ||
    $bitinc pack "$model" --ladder 4,8,16 -o "$www/$name" --no-progress >/dev/null
rung=$(find "$www/$name" -name "*.bin" -printf "%s %p\n" | sort -nr | awk "NR == 1 {print \$2}")
rung=${rung#"$www"}
$bitinc serve "$www" --port 0 --quiet >"$out/serve.out" 2>&1 &
server=$!
attacker=
trap 'kill $server ${attacker:+$attacker} 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q http "$out/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$out/serve.out")
port=${url##*:}
size=$(stat -c %s "$www$rung")

memory() {
    awk '/^VmHWM|^VmRSS/ {printf "%s %.1f MiB  ", $1, $2 / 1024}' "/proc/$server/status"
    echo "open descriptors $(ls "/proc/$server/fd" | wc -l)"
}
# Times FETCHES fetches of the rung file with curl: min / median / max.
fetch_times() {
    local results=$out/fetches.txt
    for _ in $(seq "$fetches"); do
        curl -s -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{time_total}\n' "$url$rung" || true
    done >"$results"
    local failed
    failed=$(awk -v size="$size" '$1 != 200 || $2 != size' "$results" | wc -l)
    sort -g -k3 "$results" | awk -v failed="$failed" '
        { t[NR] = $3 }
        END {
            printf "  %d fetches: min %.3f s, median %.3f s, max %.3f s, %d failed\n",
                NR, t[1], t[int((NR + 1) / 2)], t[NR], failed
        }'
}

echo "server: $url, pid $server; rung $rung ($size bytes)"
echo "quiet server:"
fetch_times
echo "  $(memory)"

# The attacker: a Python process that keeps IDLE idle and SLOW slowloris
# connections open and trickles one header byte per second into the slow ones.
/usr/bin/python3 - "$port" "$idle" "$slow" "$out/attacker.ready" <<'PY' &
import socket, sys, time
port, idle_count, slow_count, ready = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    return s
idle = [connect() for _ in range(idle_count)]
slow = []
for _ in range(slow_count):
    s = connect()
    s.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    slow.append(s)
open(ready, "w").write("%d\n" % (len(idle) + len(slow)))
reopened = 0
while True:
    time.sleep(1)
    for group, head in ((idle, b""), (slow, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")):
        for i, s in enumerate(group):
            try:
                if head:
                    s.send(b"a")
                elif s.recv(1) == b"":
                    raise OSError("closed")
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                group[i] = connect()
                if head:
                    group[i].send(head)
                reopened += 1
PY
attacker=$!
rm -f "$out/attacker.ready"
for _ in $(seq 300); do [[ -s $out/attacker.ready ]] && break; sleep 0.1; done
echo "with $idle idle + $slow slowloris connections open:"
sleep 2
fetch_times
echo "  $(memory)"
kill $attacker
wait $attacker 2>/dev/null || true
attacker=

# Huge request heads, four connections at a time.
echo "after $heads request heads of 1 MiB each:"
/usr/bin/python3 - "$port" "$heads" <<'PY'
import socket, sys, concurrent.futures
port, count = int(sys.argv[1]), int(sys.argv[2])
filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(1024))
def attack(_):
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + filler)
        s.shutdown(socket.SHUT_WR)
        return s.recv(64).split(b"\r\n")[0].decode()
    except OSError as error:
        return type(error).__name__
    finally:
        s.close()
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(attack, range(count)))
print("  answers:", {a: answers.count(a) for a in sorted(set(answers))})
PY
fetch_times
echo "  $(memory)"
