"""close() on a handle that a blocked call holds: from another thread, from a signal handler.

A blocked receive or send holds its handle for the whole wait. Before, close() from another
thread raised Busy and the waiting thread went on waiting (a shutdown that hung the
interpreter's exit), and close() in a signal handler raised Busy into the interrupted call.
"""

import fcntl
import gc
import os
import signal
import threading
import time

import pytest

import shmbus

# Every wait here is bounded: a thread that does not end fails the test instead of hanging.
JOIN = 10


def subscribers(bus):
    return len(bus.stats()["subscribers"])


def test_close_from_another_thread_ends_a_blocked_iteration(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    sub = bus.subscribe()
    pub = bus.publisher()
    got, errors = [], []
    first = threading.Event()

    def consume():
        try:
            for m in sub:
                got.append(m.data)
                first.set()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    pub.send(b"one")
    assert first.wait(JOIN)
    assert subscribers(bus) == 1
    sub.close()  # the loop is blocked in the next receive
    t.join(JOIN)
    assert not t.is_alive(), "close() did not end the blocked iteration"
    assert errors == []  # `for` ends quietly on Closed
    assert got == [b"one"]
    assert sub.closed
    # The slot is given back: a reliable publisher no longer waits for this subscriber.
    assert subscribers(bus) == 0
    for _ in range(200):
        pub.try_send(b"x" * 100)
    with pytest.raises(shmbus.Closed):
        sub.try_recv()


def test_close_from_another_thread_ends_a_send_blocked_on_a_full_ring(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256, max_producers=1)
    holder = bus.subscribe()  # never reads: the ring fills
    pub = bus.publisher()
    with pytest.raises(shmbus.Full):
        while True:
            pub.try_send(b"x" * 200)
    outcome = []
    t = threading.Thread(
        target=lambda: outcome.append(_raised(lambda: pub.send(b"y" * 200))), daemon=True
    )
    t.start()
    t.join(0.2)
    assert t.is_alive(), "the send did not block"
    pub.close()
    t.join(JOIN)
    assert not t.is_alive(), "close() did not end the blocked send"
    assert outcome == [shmbus.Closed]
    assert pub.closed
    # The one producer slot is free again.
    bus.publisher().close()
    del holder


def test_close_in_a_signal_handler_ends_the_interrupted_receive(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12)
    sub = bus.subscribe()
    old = signal.signal(signal.SIGALRM, lambda *_: sub.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        # Bounded: without the fix this raises Busy from the handler, or times out.
        with pytest.raises(shmbus.Closed):
            sub.recv(timeout=JOIN)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert sub.closed
    assert subscribers(bus) == 0


def test_close_in_a_signal_handler_ends_the_interrupted_send(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    holder = bus.subscribe()
    pub = bus.publisher()
    with pytest.raises(shmbus.Full):
        while True:
            pub.try_send(b"x" * 200)
    old = signal.signal(signal.SIGALRM, lambda *_: pub.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(shmbus.Closed):
            pub.send(b"y" * 200, timeout=JOIN)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert pub.closed
    assert bus.stats()["producers"] == []
    del holder


def test_a_no_free_slot_error_has_errno_none(path):
    # NoFreeSlot is a JoinError, whose documented attribute is .errno.
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_producers=1)
    pub = bus.publisher()
    with pytest.raises(shmbus.NoFreeSlot) as e:
        bus.publisher()
    assert e.value.errno is None
    assert e.value.kind == "producer" and e.value.max == 1
    pub.close()


def _raised(call):
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the test looks at the class
        return type(e)
    return None


def test_close_during_a_send_many_stops_the_batch(path):
    # The batch holds the publisher; an item's own code (here: the generator; in life, a
    # signal handler that runs inside it) closes it. The close is pending until the batch
    # lets go, and the batch must not publish past it even though it never has to wait.
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    sub = bus.subscribe()
    pub = bus.publisher()

    def items():
        for i in range(100):
            if i == 10:
                pub.close()
            yield bytes([i])

    with pytest.raises(shmbus.Closed) as e:
        pub.send_many(items())
    assert e.value.sent == 10
    assert pub.closed
    assert bus.stats()["producers"] == []
    assert [m.data for m in sub.recv_many(1000, timeout=0)] == [bytes([i]) for i in range(10)]


def test_a_collected_handle_leaves_the_bus_without_holding_the_gil(path):
    # Leaving takes the bus's control lock (one byte at offset 640). While another process
    # holds it (here a read lock of our own: traditional record locks and the bus's open
    # file description locks conflict even within one process), leaving waits up to 5 s. A
    # collection doing that with the GIL held stopped every other Python thread meanwhile.
    bus = shmbus.Bus.create(path, capacity=1 << 12)
    sub = bus.subscribe()
    fd = os.open(path, os.O_RDONLY)
    ticks = 0
    stop = threading.Event()

    def tick():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=tick, daemon=True)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH, 1, 640)
        t.start()
        time.sleep(0.05)
        before = ticks
        del sub  # the last reference: dropped here, waiting for the control lock
        gc.collect()
        during = ticks - before
    finally:
        stop.set()
        t.join(JOIN)
        os.close(fd)
    assert during > 10, f"other threads ran {during} times while the handle left the bus"
