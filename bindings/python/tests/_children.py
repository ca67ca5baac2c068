"""Functions run in multiprocessing (spawn) children by the multi-process tests."""

import os
import signal
import struct
import time

import shmbus

REC = struct.Struct("<II")  # (producer id, index)


def publish(path, producer, count, ready, go):
    bus = shmbus.Bus.open(path)
    pub = bus.publisher()
    ready.set()
    go.wait(30)
    for i in range(count):
        pub.send(REC.pack(producer, i), timeout=30)
    pub.close()


def subscribe(path, expected, out, ready):
    bus = shmbus.Bus.open(path)
    sub = bus.subscribe("latest")
    ready.set()
    seen = []
    for _ in range(expected):
        m = sub.recv(timeout=30)
        producer, i = REC.unpack(m.data)
        seen.append((m.seq, producer, i))
    out.put((os.getpid(), seen))


def subscribe_and_stall(path, ready):
    """Joins a reliable bus and never reads: producers wait for it until it dies."""
    bus = shmbus.Bus.open(path)
    sub = bus.subscribe("latest")  # noqa: F841 (held until the process is killed)
    ready.set()
    time.sleep(600)


def blocked_recv(path, ready, out):
    """Blocks in recv() with the default SIGINT handler; reports how Ctrl-C ended it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bus = shmbus.Bus.open(path)
    sub = bus.subscribe("latest")
    ready.set()
    try:
        sub.recv()
        out.put(("received", time.monotonic()))
    except KeyboardInterrupt:
        out.put(("interrupted", time.monotonic()))


def blocked_send(path, ready, out):
    """Fills a reliable ring that a stalled subscriber holds, then blocks in send()."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bus = shmbus.Bus.open(path)
    pub = bus.publisher()
    try:
        while True:
            pub.try_send(b"x" * 64)
    except shmbus.Full:
        pass
    ready.set()
    try:
        pub.send(b"y" * 64)
        out.put(("sent", time.monotonic()))
    except KeyboardInterrupt:
        out.put(("interrupted", time.monotonic()))


def blocked_subscribe(path, ready, out):
    """Holds a loan (claimed, never committed) and subscribes at its position: the join
    waits for the record's producer (up to twice the unblock timeout); Ctrl-C must end it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bus = shmbus.Bus.open(path)
    pub = bus.publisher()
    pub.send(b"before")
    position = bus.stats()["tail_position"]
    loan = pub.loan(8)  # noqa: F841 (held, uncommitted, while the subscribe waits)
    ready.set()
    try:
        bus.subscribe(start=position)
        out.put(("subscribed", time.monotonic()))
    except KeyboardInterrupt:
        out.put(("interrupted", time.monotonic()))


def publish_paced(path, count, pause, ready):
    """Publishes `count` counters, sleeping `pause` seconds between them (receivers wait)."""
    bus = shmbus.Bus.open(path)
    pub = bus.publisher()
    ready.set()
    for i in range(count):
        pub.send(struct.pack("<Q", i), timeout=30)
        if pause:
            time.sleep(pause)
    pub.close()


def publish_round_robin(paths, count, ready, go):
    """Publishes counters 0..count on every bus of `paths`, one bus after the other."""
    pubs = [shmbus.Bus.open(p).publisher() for p in paths]
    ready.set()
    go.wait(30)
    for i in range(count):
        for pub in pubs:
            pub.send(struct.pack("<Q", i), timeout=30)
        if i % 50 == 0:
            time.sleep(0.001)  # let the receivers catch up, so that they park


def consume_slowly(path, count, out, ready):
    """Joins a reliable bus and reads `count` messages slowly (publishers fill the ring)."""
    bus = shmbus.Bus.open(path)
    sub = bus.subscribe("oldest")
    ready.set()
    seen = []
    for _ in range(count):
        time.sleep(0.002)
        seen.append(struct.unpack("<Q", sub.recv(timeout=30).data)[0])
    out.put(seen)
