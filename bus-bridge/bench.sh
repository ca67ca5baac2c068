#!/bin/sh
# The bridge's benchmark, in one run through one nats-server on loopback:
#   bridged throughput (publisher -> bus A -> bridge -> NATS -> bridge -> bus B -> subscriber)
#   at 64 B and 1 KiB, lossy (core NATS) and reliable (JetStream), against a plain async-nats
#   publisher and subscriber (built with the default allocator, and with the bridge's);
#   end-to-end latency at a low rate against a plain round trip.
# Usage: bus-bridge/bench.sh   (builds the release binaries; prints a Markdown table)
set -eu
cd "$(dirname "$0")/.."
cargo build --release -q -p bus-bridge
T=target/release
DIR=$(mktemp -d /dev/shm/bridge-bench.XXXXXX)
PORT=${PORT:-14399}
URL=nats://127.0.0.1:$PORT
NS=
# (`jobs -p` lists nothing in a non-interactive dash: kill the server by its pid.)
cleanup() { [ -n "$NS" ] && kill "$NS" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
nats-server -a 127.0.0.1 -p "$PORT" -js -sd "$DIR/js" -l "$DIR/server.log" &
NS=$!
sleep 0.5

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# bridged MODE SIZE COUNT RATE -> "rate delivered lost p50 p99"
bridged() {
    mode=$1 size=$2 count=$3 rate=$4
    rm -rf "$DIR/a.bus"* "$DIR/b.bus"*
    $T/bridge-peer create "$DIR/a.bus" 268435456 "$mode" >/dev/null
    $T/bridge-peer create "$DIR/b.bus" 268435456 "$mode" >/dev/null
    subj="bench.$mode.$size.$rate"
    $T/shmbus-bridge --nats "$URL" --out "$DIR/a.bus=$subj" --name A --stream "B$size$rate" 2>/dev/null &
    a=$!
    $T/shmbus-bridge --nats "$URL" --in "$subj=$DIR/b.bus" --name B --stream "B$size$rate" 2>/dev/null &
    b=$!
    sleep 1
    $T/bridge-peer sub "$DIR/b.bus" "$count" 3000 > "$DIR/sub.out" &
    s=$!
    sleep 0.2
    $T/bridge-peer pub "$DIR/a.bus" 0 "$count" "$size" "$rate" >/dev/null
    wait $s
    kill $a $b; wait $a $b 2>/dev/null || true
    line=$(grep done "$DIR/sub.out")
    d=$(field "$line" delivered); secs=$(field "$line" secs)
    echo "$(awk "BEGIN{printf \"%.0f\", $d/($secs>0?$secs:1)}") $d $(field "$line" lost) $(field "$line" p50_us) $(field "$line" p99_us)"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(nats-server --version)"
echo
echo "| path | size | msgs/s | vs plain (lossy: default / bridge's allocator; reliable: without / with message ids) |"
echo "|---|---|---|---|"
for size in 64 1024; do
    plain=$($T/nats-plain throughput "$URL" 500000 $size)
    core=$(field "$plain" msgs_per_s) core_received=$(field "$plain" received)
    plain_mi=$($T/nats-plain-mimalloc throughput "$URL" 500000 $size)
    core_mi=$(field "$plain_mi" msgs_per_s) core_mi_received=$(field "$plain_mi" received)
    # The same client, every message carrying the one origin header a lossy bridge writes
    # (built and read as the bridges do): what the header alone costs a NATS client.
    plain_o=$($T/nats-plain throughput-origin "$URL" 500000 $size)
    core_o=$(field "$plain_o" msgs_per_s) core_o_received=$(field "$plain_o" received)
    plain_omi=$($T/nats-plain-mimalloc throughput-origin "$URL" 500000 $size)
    core_omi=$(field "$plain_omi" msgs_per_s) core_omi_received=$(field "$plain_omi" received)
    js=$($T/nats-plain jetstream "$URL" 200000 $size | sed 's/.*msgs_per_s=//')
    e2e=$($T/nats-plain jetstream-e2e "$URL" 200000 $size | sed 's/.*msgs_per_s=//')
    e2eid=$($T/nats-plain jetstream-e2e-id "$URL" 200000 $size | sed 's/.*msgs_per_s=//')
    set -- $(bridged lossy $size 500000 0)
    lossy=$1 lossy_delivered=$2
    set -- $(bridged reliable $size 200000 0)
    rel=$1
    echo "| plain core NATS (async-nats pub -> sub), $core_received of 500000 received | $size B | $core | 1.00 |"
    echo "| plain core NATS, the bridge's allocator (mimalloc), $core_mi_received of 500000 received | $size B | $core_mi | |"
    echo "| plain core NATS with the bridge's origin header, $core_o_received of 500000 received | $size B | $core_o | |"
    echo "| plain core NATS with the origin header, the bridge's allocator, $core_omi_received of 500000 received | $size B | $core_omi | |"
    echo "| bridged lossy bus (core NATS), $lossy_delivered of 500000 delivered | $size B | $lossy | $(awk "BEGIN{printf \"%.2f / %.2f; with the header: %.2f / %.2f\", $lossy/$core, $lossy/$core_mi, $lossy/$core_o, $lossy/$core_omi}") |"
    echo "| plain JetStream publish only, 256 acks in flight | $size B | $js | |"
    echo "| plain JetStream publisher + durable pull consumer (AckAll every 256) | $size B | $e2e | 1.00 |"
    echo "| the same with a Nats-Msg-Id per message (JetStream de-duplicates) | $size B | $e2eid | 1.00 |"
    echo "| bridged reliable bus (JetStream, both bridges) | $size B | $rel | $(awk "BEGIN{printf \"%.2f / %.2f\", $rel/$e2e, $rel/$e2eid}") |"
done
echo
rtt=$($T/nats-plain rtt "$URL" 10000 64)
set -- $(bridged reliable 64 5000 1000)
echo "| latency, 64 B at 1000 msgs/s | p50 | p99 |"
echo "|---|---|---|"
echo "| plain NATS request/reply round trip | $(field "$rtt" p50_us) µs | $(field "$rtt" p99_us) µs |"
echo "| bridged reliable, one way (bus -> JetStream -> bus) | $4 µs | $5 µs |"
set -- $(bridged lossy 64 5000 1000)
echo "| bridged lossy, one way (bus -> core NATS -> bus) | $4 µs | $5 µs |"
