#!/usr/bin/env python3
"""Python-to-Python benchmark: shmbus against multiprocessing.Pipe (and iceoryx2's Python
package where it is installed), between two processes pinned to different CPUs.

    python bench.py            # the full run (about a minute)
    python bench.py --quick    # a tenth of the messages

Every receiver checks every message's counter (the first 8 bytes of the payload); a wrong
one aborts the run. One-way rates are taken by the receiver, from the moment both sides are
released until it has the last message. Round trips: one side sends, the other echoes.
The per-call rows time one process calling the binding in a loop against the same loop
calling a builtin that does nothing (`len`), so the difference is the cost of the binding
and bus-core, not of the interpreter's loop.
"""

import argparse
import multiprocessing as mp
import os
import platform
import struct
import sys
import tempfile
import time

import shmbus

CTX = mp.get_context("spawn")
COUNTER = struct.Struct("<Q")
CPUS = sorted(os.sched_getaffinity(0))
CPU_A, CPU_B = (CPUS[0], CPUS[1]) if len(CPUS) > 1 else (CPUS[0], CPUS[0])


def pin(cpu):
    os.sched_setaffinity(0, {cpu})


def die(msg):
    raise SystemExit(f"bench: {msg}")


# ---- shmbus ---------------------------------------------------------------------------


def shm_send(path, n, size, cpu, ready, go):
    pin(cpu)
    pub = shmbus.Bus.open(path).publisher()
    buf = bytearray(size)
    pack, send = COUNTER.pack_into, pub.send
    ready.set()
    go.wait()
    for i in range(n):
        pack(buf, 0, i)
        send(buf)


def shm_recv(path, n, cpu, wait, ready, go, out):
    pin(cpu)
    sub = shmbus.Bus.open(path).subscribe(wait=wait)
    unpack, recv = COUNTER.unpack_from, sub.recv
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        if unpack(recv().data)[0] != i:
            die("shmbus: message out of sequence")
    out.put(time.perf_counter() - t0)


def shm_send_many(path, n, size, batch, cpu, ready, go):
    pin(cpu)
    pub = shmbus.Bus.open(path).publisher()
    pack = struct.Struct(f"<Q{size - 8}x").pack  # the counter, padded to `size` bytes
    ready.set()
    go.wait()
    for start in range(0, n, batch):
        pub.send_many([pack(i) for i in range(start, min(n, start + batch))])


def shm_recv_many(path, n, size, batch, cpu, wait, ready, go, out):
    pin(cpu)
    sub = shmbus.Bus.open(path).subscribe(wait=wait)
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    i = 0
    while i < n:
        msgs = sub.recv_many(batch)
        # Every message's counter, checked without a Python loop per message: join the
        # payloads and read every eighth native word (the first of each 64 B).
        words = memoryview(b"".join([m.data for m in msgs])).cast("Q")[:: size // 8]
        if words.tolist() != list(range(i, i + len(msgs))):
            die("shmbus batch: message out of sequence")
        i += len(msgs)
    out.put(time.perf_counter() - t0)


def shm_ping(a, b, n, size, cpu, wait, ready, go, out):
    pin(cpu)
    pub = shmbus.Bus.open(a).publisher()
    sub = shmbus.Bus.open(b).subscribe(wait=wait)
    buf = bytearray(size)
    pack, unpack, send, recv = COUNTER.pack_into, COUNTER.unpack_from, pub.send, sub.recv
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        pack(buf, 0, i)
        send(buf)
        if unpack(recv().data)[0] != i:
            die("shmbus ping: reply out of sequence")
    out.put(time.perf_counter() - t0)


def shm_pong(a, b, n, cpu, wait, ready, go):
    pin(cpu)
    sub = shmbus.Bus.open(a).subscribe(wait=wait)
    pub = shmbus.Bus.open(b).publisher()
    unpack, send, recv = COUNTER.unpack_from, pub.send, sub.recv
    ready.set()
    go.wait()
    for i in range(n):
        data = recv().data
        if unpack(data)[0] != i:
            die("shmbus pong: request out of sequence")
        send(data)


# ---- multiprocessing.Pipe -------------------------------------------------------------


def pipe_send(conn, n, size, cpu, ready, go):
    pin(cpu)
    buf = bytearray(size)
    pack, send = COUNTER.pack_into, conn.send_bytes
    ready.set()
    go.wait()
    for i in range(n):
        pack(buf, 0, i)
        send(buf)


def pipe_recv(conn, n, cpu, ready, go, out):
    pin(cpu)
    unpack, recv = COUNTER.unpack_from, conn.recv_bytes
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        if unpack(recv())[0] != i:
            die("pipe: message out of sequence")
    out.put(time.perf_counter() - t0)


def pipe_ping(conn, n, size, cpu, ready, go, out):
    pin(cpu)
    buf = bytearray(size)
    pack, unpack = COUNTER.pack_into, COUNTER.unpack_from
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        pack(buf, 0, i)
        conn.send_bytes(buf)
        if unpack(conn.recv_bytes())[0] != i:
            die("pipe ping: reply out of sequence")
    out.put(time.perf_counter() - t0)


def pipe_pong(conn, n, cpu, ready, go):
    pin(cpu)
    unpack = COUNTER.unpack_from
    ready.set()
    go.wait()
    for i in range(n):
        data = conn.recv_bytes()
        if unpack(data)[0] != i:
            die("pipe pong: request out of sequence")
        conn.send_bytes(data)


# ---- iceoryx2 (optional) --------------------------------------------------------------


def iox_service(name, size):
    import ctypes

    import iceoryx2 as iox2

    class Payload(ctypes.Structure):
        _fields_ = [("counter", ctypes.c_uint64), ("pad", ctypes.c_uint8 * (size - 8))]

    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    service = (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(Payload)
        .enable_safe_overflow(False)  # no silent loss: the publisher waits instead
        .subscriber_max_buffer_size(256)
        .open_or_create()
    )
    return iox2, node, service, Payload


def iox_send(name, n, size, cpu, ready, go):
    pin(cpu)
    iox2, _node, service, Payload = iox_service(name, size)
    pub = (
        service.publisher_builder()
        .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
        .max_loaned_samples(2)
        .create()
    )
    while service.dynamic_config.number_of_subscribers < 1:
        time.sleep(0.001)
    ready.set()
    go.wait()
    for i in range(n):
        sample = pub.loan_uninit()
        sample = sample.write_payload(Payload(counter=i))
        sample.send()


def iox_recv(name, n, size, cpu, ready, go, out):
    pin(cpu)
    _iox2, _node, service, _Payload = iox_service(name, size)
    sub = service.subscriber_builder().buffer_size(256).create()
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    i = 0
    while i < n:
        sample = sub.receive()
        if sample is None:
            continue
        if sample.payload().contents.counter != i:
            die("iceoryx2: message out of sequence")
        sample.delete()
        i += 1
    out.put(time.perf_counter() - t0)


# ---- the harness ----------------------------------------------------------------------


def run(targets, timeout=300):
    """Starts (target, args) children in order, each after the previous one is ready, then
    releases them together; returns what the measuring child put on the queue."""
    out, go = CTX.Queue(), CTX.Event()
    procs = []
    try:
        for target, args in targets:
            ready = CTX.Event()
            extra = (ready, go, out) if "out" in target.__code__.co_varnames else (ready, go)
            p = CTX.Process(target=target, args=args + extra, daemon=True)
            p.start()
            procs.append(p)
            if not ready.wait(60):
                die(f"{target.__name__} did not start")
        go.set()
        secs = out.get(timeout=timeout)
        for p in procs:
            p.join(timeout)
            if p.exitcode != 0:
                die(f"{p.name} exited with {p.exitcode}")
        return secs
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)


def fresh_bus(d, name, capacity=16 << 20, max_message=4096):
    path = os.path.join(d, name)
    shmbus.Bus.create(path, capacity=capacity, max_message=max_message)
    return path


def per_call(d, n):
    """ns per call, in one process: (noop, send, try_recv, recv, recv_many per message,
    send_many per message)."""
    bus = shmbus.Bus.create(os.path.join(d, "calls.bus"), capacity=1 << 26, max_message=4096)
    pub = bus.publisher()
    buf = bytes(64)

    def loop(f, arg, count):
        t0 = time.perf_counter_ns()
        for _ in range(count):
            f(arg)
        return (time.perf_counter_ns() - t0) / count

    def loop0(f, count):
        t0 = time.perf_counter_ns()
        for _ in range(count):
            f()
        return (time.perf_counter_ns() - t0) / count

    noop = min(loop(len, buf, n) for _ in range(3))
    noop0 = min(loop0(tuple, n) for _ in range(3))
    # No subscriber: a reliable ring with nobody to wait for never fills.
    send = min(loop(pub.send, buf, n) for _ in range(3))
    fits = (1 << 26) // 80 - 1000
    m = min(n, fits)
    results = {"noop(arg)": noop, "noop()": noop0, "send": send}
    for name in ("try_recv", "recv"):
        best = None
        for _ in range(3):
            sub = bus.subscribe()
            for _ in range(m // 1000):
                pub.send_many([buf] * 1000)
            f = getattr(sub, name)
            t = loop0(f, m // 1000 * 1000)
            best = t if best is None else min(best, t)
            sub.close()
        results[name] = best
    sub = bus.subscribe()
    batch = [buf] * 1000
    t0 = time.perf_counter_ns()
    for _ in range(m // 1000):
        pub.send_many(batch)
    results["send_many/msg"] = (time.perf_counter_ns() - t0) / (m // 1000 * 1000)
    t0 = time.perf_counter_ns()
    for _ in range(m // 1000):
        sub.recv_many(1000)
    results["recv_many/msg"] = (time.perf_counter_ns() - t0) / (m // 1000 * 1000)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the messages")
    ap.add_argument("--no-iceoryx2", action="store_true", help="skip iceoryx2 even if installed")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    n_fast = int(2_000_000 * scale)
    n_slow = int(300_000 * scale)
    n_rtt = int(100_000 * scale)

    try:
        import iceoryx2  # noqa: F401

        iox = not args.no_iceoryx2
        iox_note = "iceoryx2 " + __import__("importlib.metadata").metadata.version("iceoryx2")
    except ImportError:
        iox, iox_note = False, "iceoryx2: not installed (pip install iceoryx2), skipped"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# shmbus {shmbus.__version__} Python benchmark")
    print(f"# {cpu}; Python {platform.python_version()}; processes pinned to CPUs {CPU_A} and {CPU_B}")
    print(f"# {iox_note}")
    rows = []  # (test, transport, value, unit)

    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        for size in (64, 1024):
            p = fresh_bus(d, f"oneway{size}.bus")
            secs = run([(shm_recv, (p, n_fast, CPU_B, "spin_then_block")), (shm_send, (p, n_fast, size, CPU_A))])
            rows.append((f"one-way {size} B", "shmbus", n_fast / secs, "msgs/s"))
            r, w = CTX.Pipe(duplex=False)
            secs = run([(pipe_recv, (r, n_slow, CPU_B)), (pipe_send, (w, n_slow, size, CPU_A))])
            rows.append((f"one-way {size} B", "multiprocessing.Pipe", n_slow / secs, "msgs/s"))
            if iox:
                name = f"shmbus-bench-{os.getpid()}-{size}"
                try:
                    secs = run([(iox_recv, (name, n_slow, size, CPU_B)), (iox_send, (name, n_slow, size, CPU_A))])
                    rows.append((f"one-way {size} B", "iceoryx2", n_slow / secs, "msgs/s"))
                except SystemExit as e:
                    print(f"# iceoryx2 {size} B failed: {e}", file=sys.stderr)
        p = fresh_bus(d, "batch.bus", capacity=1 << 22)
        secs = run(
            [
                (shm_recv_many, (p, n_fast * 2, 64, 4096, CPU_B, "spin")),
                (shm_send_many, (p, n_fast * 2, 64, 1024, CPU_A)),
            ]
        )
        rows.append(("one-way 64 B, batches", "shmbus send_many/recv_many (spin)", n_fast * 2 / secs, "msgs/s"))

        for wait in ("spin", "spin_then_block"):
            a, b = fresh_bus(d, f"ping-{wait}.bus"), fresh_bus(d, f"pong-{wait}.bus")
            secs = run([(shm_pong, (a, b, n_rtt, CPU_B, wait)), (shm_ping, (a, b, n_rtt, 64, CPU_A, wait))])
            rows.append(("round trip 64 B", f"shmbus ({wait})", secs / n_rtt * 1e6, "µs"))
        x, y = CTX.Pipe()
        secs = run([(pipe_pong, (y, n_rtt, CPU_B)), (pipe_ping, (x, n_rtt, 64, CPU_A))])
        rows.append(("round trip 64 B", "multiprocessing.Pipe", secs / n_rtt * 1e6, "µs"))

        calls = per_call(d, int(1_000_000 * scale))

    base = {}
    for test, transport, value, unit in rows:
        if transport == "multiprocessing.Pipe":
            base[test] = value
    pipe_64 = base.get("one-way 64 B")
    print()
    print("| test | transport | result | vs multiprocessing.Pipe |")
    print("|---|---|---:|---:|")
    for test, transport, value, unit in rows:
        ref = base.get(test, pipe_64 if "batches" in test else None)
        if unit == "msgs/s":
            shown = f"{value / 1e6:.2f} M msgs/s"
            ratio = f"{value / ref:.1f}×" if ref else ""
        else:
            shown = f"{value:.2f} µs"
            ratio = f"{ref / value:.1f}× faster" if ref else ""
        if transport == "multiprocessing.Pipe":
            ratio = "1.0×"
        print(f"| {test} | {transport} | {shown} | {ratio} |")
    print()
    print("Per call, one process (ns; the loop and a builtin call included):")
    print()
    print("| call | ns | minus the builtin no-op |")
    print("|---|---:|---:|")
    for name, ns in calls.items():
        ref = calls["noop(arg)"] if name in ("send",) else calls["noop()"]
        extra = "" if name.startswith("noop") or "/msg" in name else f"{ns - ref:.0f}"
        print(f"| {name} | {ns:.0f} | {extra} |")


if __name__ == "__main__":
    main()
