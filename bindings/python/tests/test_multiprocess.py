"""Real processes (multiprocessing, spawn): ordering across publishers and subscribers,
eviction of a killed subscriber, and Ctrl-C in a blocked call. Every test bounds its time
and kills its children in `finally`."""

import multiprocessing as mp
import os
import signal
import time

import pytest

import _children
import shmbus

CTX = mp.get_context("spawn")
JOIN = 60  # seconds: the bound on any child


def start(target, *args):
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def reap(procs):
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)


def wait_all(events, timeout=JOIN):
    for e in events:
        assert e.wait(timeout), "a child did not get ready in time"


def test_every_message_exactly_once_in_order(path):
    # Small ring: producers wait for the subscribers often (reliable mode).
    shmbus.Bus.create(path, capacity=1 << 14, max_message=64)
    producers, count, subscribers = 2, 5000, 2
    out = CTX.Queue()
    procs = []
    try:
        sub_ready = [CTX.Event() for _ in range(subscribers)]
        for e in sub_ready:
            procs.append(start(_children.subscribe, path, producers * count, out, e))
        wait_all(sub_ready)
        go = CTX.Event()
        pub_ready = [CTX.Event() for _ in range(producers)]
        for i, e in enumerate(pub_ready):
            procs.append(start(_children.publish, path, i, count, e, go))
        wait_all(pub_ready)
        go.set()
        results = [out.get(timeout=JOIN) for _ in range(subscribers)]
        for p in procs:
            p.join(JOIN)
            assert p.exitcode == 0
    finally:
        reap(procs)
    orders = []
    for _pid, seen in results:
        assert len(seen) == producers * count
        seqs = [s for s, _, _ in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for producer in range(producers):
            assert [i for _, p, i in seen if p == producer] == list(range(count))
        orders.append([(p, i) for _, p, i in seen])
    # Every subscriber saw the same total order.
    assert all(o == orders[0] for o in orders)


def test_killed_subscriber_is_evicted(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    procs = []
    try:
        ready = CTX.Event()
        child = start(_children.subscribe_and_stall, path, ready)
        procs.append(child)
        wait_all([ready])
        pub = bus.publisher()
        with pytest.raises(shmbus.Full):
            for _ in range(1000):
                pub.try_send(b"x" * 200)
        with pytest.raises(shmbus.Timeout):
            pub.send(b"x" * 200, timeout=0.2)  # the live child holds the ring full
        os.kill(child.pid, signal.SIGKILL)
        child.join(JOIN)
        t = time.monotonic()
        pub.send(b"after the kill", timeout=10)  # its liveness lock died with it
        assert time.monotonic() - t < 5
        assert not any(s["alive"] for s in bus.stats()["subscribers"])
        bus.evict_dead()
        assert bus.stats()["subscribers"] == []
    finally:
        reap(procs)


def _interrupt(path, target, setup=None):
    """Starts `target` in a child, waits until it is blocked, sends SIGINT; returns what
    the child reported and how long after the signal it reported it."""
    out = CTX.Queue()
    ready = CTX.Event()
    procs = []
    try:
        child = start(target, path, ready, out)
        procs.append(child)
        wait_all([ready])
        time.sleep(0.3)  # well inside the blocking call
        sent_at = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        what, at = out.get(timeout=10)
        child.join(JOIN)
        assert child.exitcode == 0
        print(f"{target.__name__}: {what} {(at - sent_at) * 1000:.1f} ms after SIGINT")
        return what, at - sent_at
    finally:
        reap(procs)


def test_sigint_interrupts_a_blocked_recv(path):
    shmbus.Bus.create(path, capacity=1 << 16)
    what, delay = _interrupt(path, _children.blocked_recv)
    assert what == "interrupted"
    assert delay < 0.1, f"KeyboardInterrupt came {delay * 1000:.0f} ms after SIGINT"


def test_sigint_interrupts_a_subscribe_at_a_position_still_being_written(path):
    # The join would wait up to twice this for the loan's producer.
    shmbus.Bus.create(path, capacity=1 << 16, unblock_timeout=60.0)
    what, delay = _interrupt(path, _children.blocked_subscribe)
    assert what == "interrupted"
    assert delay < 0.1, f"KeyboardInterrupt came {delay * 1000:.0f} ms after SIGINT"


def test_sigint_interrupts_a_blocked_send(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    holder = bus.subscribe()  # never reads: the child's send blocks on the full ring
    what, delay = _interrupt(path, _children.blocked_send)
    assert what == "interrupted"
    assert delay < 0.1, f"KeyboardInterrupt came {delay * 1000:.0f} ms after SIGINT"
    del holder
