"""The API of the issue, call by call, in one process."""

import array
import pathlib
import os
import threading
import time

import pytest

import shmbus


def test_create_open_open_or_create(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16, mode="lossy", max_message=1024)
    assert (bus.capacity, bus.mode, bus.max_message) == (1 << 16, "lossy", 1024)
    assert str(bus.path) == path
    assert (bus.max_subscribers, bus.max_producers) == (64, 64)
    again = shmbus.Bus.open(path)
    assert (again.capacity, again.mode, again.max_message) == (1 << 16, "lossy", 1024)
    # An existing bus keeps its own parameters.
    third = shmbus.Bus.open_or_create(path, capacity=1 << 20, mode="reliable")
    assert (third.capacity, third.mode) == (1 << 16, "lossy")
    other = shmbus.Bus.open_or_create(path + "2", capacity=1 << 20)
    assert (other.capacity, other.mode) == (1 << 20, "reliable")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "Bus(" in repr(bus)


def test_pathlike_and_resolve(tmp_path):
    bus = shmbus.Bus.create(tmp_path / "p.bus", capacity=1 << 16)
    assert bus.path == tmp_path / "p.bus"
    assert shmbus.resolve("./x.bus") == pathlib.Path("./x.bus")
    assert str(shmbus.resolve("ticks")).endswith("ticks.bus")
    assert shmbus.default_dir()


def test_send_returns_sequence_and_recv_message(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    assert [pub.send(b"a"), pub.send(b"bb"), pub.send(b"ccc")] == [0, 1, 2]
    m = sub.recv()
    assert isinstance(m, shmbus.Message)
    assert (m.data, m.seq, m.position) == (b"a", 0, 0)
    assert isinstance(m.data, bytes)
    assert len(m) == 1 and bytes(m) == b"a"
    assert sub.recv(timeout=1.0).data == b"bb"
    assert sub.try_recv().data == b"ccc"
    assert "seq=2" in repr(m) or "seq=0" in repr(m)
    assert pub.sent == 3
    assert sub.delivered == 3
    assert sub.next_seq == 3


def test_any_buffer(bus):
    np = pytest.importorskip("numpy")
    sub = bus.subscribe()
    pub = bus.publisher()
    arr = np.arange(16, dtype=np.float64)
    payloads = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"memoryview"),
        memoryview(b"..slice..")[2:-2],
        array.array("i", [1, 2, 3]),
        arr,
        arr.reshape(4, 4),
        b"",
    ]
    for p in payloads:
        pub.send(p)
    for p in payloads:
        got = sub.recv(timeout=1).data
        assert got == bytes(memoryview(p).cast("B")) if not isinstance(p, bytes) else got == p
    assert np.array_equal(np.frombuffer(bytes(memoryview(arr)), dtype=np.float64), arr)
    # A non-contiguous array has no single run of bytes to send (numpy says ValueError).
    with pytest.raises((BufferError, ValueError)):
        pub.send(arr[::2])
    with pytest.raises(TypeError):
        pub.send("a str is not a buffer")


def test_start_oldest_latest_and_position(bus):
    pub = bus.publisher()
    for i in range(3):
        pub.send(b"%d" % i)
    assert [m.data for m in bus.subscribe(start="oldest").recv_many(10)] == [b"0", b"1", b"2"]
    latest = bus.subscribe()  # "latest" is the default
    with pytest.raises(shmbus.Empty):
        latest.try_recv()
    first = bus.subscribe("oldest")
    first.recv()
    saved = first.position
    pub.send(b"3")
    resumed = bus.subscribe(start=saved)
    assert [m.data for m in resumed.recv_many(10, timeout=1)] == [b"1", b"2", b"3"]
    assert latest.recv(timeout=1).data == b"3"
    with pytest.raises(ValueError):
        bus.subscribe("newest")
    with pytest.raises(TypeError):
        bus.subscribe(True)


def test_iteration(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    for i in range(5):
        pub.send(b"%d" % i)
    got = []
    for msg in sub:
        got.append(msg.data)
        if len(got) == 5:
            break
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    sub.close()
    assert list(sub) == []  # a closed subscriber ends the iteration


def test_batches(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    assert pub.send_many([]) is None
    last = pub.send_many([b"a", bytearray(b"b"), memoryview(b"c")])
    assert last == 2
    assert pub.send_many(b"%d" % i for i in range(3)) == 5  # any iterable
    msgs = sub.recv_many(4)
    assert [m.data for m in msgs] == [b"a", b"b", b"c", b"0"]
    assert [m.seq for m in msgs] == [0, 1, 2, 3]
    assert [m.data for m in sub.recv_many(100, timeout=1)] == [b"1", b"2"]
    with pytest.raises(shmbus.Timeout):
        sub.recv_many(10, timeout=0.01)
    assert sub.recv_many(0) == []


def test_send_many_reports_how_many_were_sent(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    bus.subscribe()  # never reads: the ring fills
    sub = bus.subscribe()
    pub = bus.publisher()
    with pytest.raises(shmbus.Timeout) as e:
        pub.send_many([b"x" * 200] * 100, timeout=0.05)
    assert 0 < e.value.sent < 100
    assert len(sub.recv_many(1000)) == e.value.sent


def test_full_and_timeout_on_a_reliable_ring(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=512)
    sub = bus.subscribe()
    pub = bus.publisher()
    sent = 0
    with pytest.raises(shmbus.Full):
        while True:
            pub.try_send(b"x" * 100)
            sent += 1
    assert sent > 10
    t = time.monotonic()
    with pytest.raises(shmbus.Timeout):
        pub.send(b"y", timeout=0.1)
    assert 0.09 < time.monotonic() - t < 2
    with pytest.raises(shmbus.Timeout):
        pub.send(b"y", timeout=0)
    with pytest.raises(shmbus.Timeout):
        pub.loan(8, timeout=0.01)
    with pytest.raises(shmbus.Full):
        pub.try_loan(8)
    # Reading makes room.
    assert len(sub.recv_many(1000)) == sent
    assert pub.send(b"z", timeout=1) == sent


def test_recv_releases_the_gil(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    got = []
    t = threading.Thread(target=lambda: got.append(sub.recv(timeout=5)))
    t.start()
    time.sleep(0.1)  # the main thread runs while the other is blocked in recv
    pub.send(b"wake")
    t.join(5)
    assert not t.is_alive()
    assert got[0].data == b"wake"


def test_one_thread_at_a_time(bus):
    sub = bus.subscribe()
    outcome = []

    def blocked():
        try:
            sub.recv(timeout=0.5)
        except shmbus.Timeout as e:
            outcome.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.1)
    with pytest.raises(shmbus.Busy):
        sub.try_recv()
    t.join(5)
    assert len(outcome) == 1
    with pytest.raises(shmbus.Empty):
        sub.try_recv()


def test_close_and_context_managers(bus):
    with bus.publisher() as pub, bus.subscribe() as sub:
        pub.send(b"x")
        assert sub.recv().data == b"x"
    assert pub.closed and sub.closed
    with pytest.raises(shmbus.Closed):
        pub.send(b"y")
    with pytest.raises(shmbus.Closed):
        sub.recv()
    pub.close()  # twice is harmless
    sub.close()


def test_slots_are_given_back(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16, max_producers=1, max_subscribers=1)
    pub = bus.publisher()
    with pytest.raises(shmbus.NoFreeSlot):
        bus.publisher()
    pub.close()
    bus.publisher().close()
    sub = bus.subscribe()
    with pytest.raises(shmbus.NoSlot) as e:
        bus.subscribe()
    assert (e.value.kind, e.value.max) == ("subscriber", 1)
    del sub  # collected: the slot is free again
    bus.subscribe()


def test_stats_and_maintenance(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(b"abc")
    sub.recv()
    s = bus.stats()
    assert s["tail_seq"] == 1 and s["mode"] == "reliable"
    assert len(s["subscribers"]) == 1 and len(s["producers"]) == 1
    assert s["producers"][0]["pid"] == os.getpid()
    assert bus.evict_dead() == 0
    bus.flush()


def test_wait_strategies(bus):
    pub = bus.publisher()
    subs = [bus.subscribe(wait=w) for w in ("spin_then_block", "spin", "block")]
    pub.send(b"x")
    for s in subs:
        assert s.recv(timeout=1).data == b"x"
    with pytest.raises(ValueError):
        bus.subscribe(wait="nap")


def test_bad_arguments(path):
    with pytest.raises(ValueError):
        shmbus.Bus.create(path, mode="sloppy")
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    sub = bus.subscribe()
    with pytest.raises(ValueError):
        sub.recv(timeout=-1)
    with pytest.raises(ValueError):
        sub.recv(timeout=float("nan"))
    # A start position of the wrong value is a ValueError; of the wrong type a TypeError.
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError):
            bus.subscribe(start=bad)
    for bad in (1.5, True, b"oldest"):
        with pytest.raises(TypeError):
            bus.subscribe(start=bad)
    with pytest.raises(ValueError):
        bus.subscribe(start="newest")
    # Valid numbers the bus refuses are the Rust API's InvalidOptions.
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.create(path + ".2", capacity=1000)
    assert e.value.kind == "invalid_options"


def test_large_messages_are_copied_without_the_gil(path):
    # 64 KiB and more: the copy into the ring runs with the GIL released (publisher.rs).
    bus = shmbus.Bus.create(path, capacity=1 << 20, max_message=256 << 10)
    sub = bus.subscribe()
    pub = bus.publisher()
    big = bytes(range(256)) * 800  # 200 KiB
    assert pub.send(big) == 0
    assert pub.try_send(bytearray(big)) == 1
    assert pub.send_many([memoryview(big)] * 2, timeout=1) == 3
    for seq in range(4):
        m = sub.recv(timeout=1)
        assert (m.seq, m.data) == (seq, big)
    with pub.loan(len(big)) as buf:
        buf[:] = big
    with sub.recv_view(timeout=1) as view:
        assert view == big


def test_a_full_ring_with_large_messages_times_out_and_resumes(path):
    bus = shmbus.Bus.create(path, capacity=1 << 20, max_message=256 << 10)
    sub = bus.subscribe()
    pub = bus.publisher()
    big = b"z" * (200 << 10)
    n = 0
    with pytest.raises(shmbus.Timeout):
        while True:
            pub.send(big, timeout=0.05)
            n += 1
    got = []
    t = threading.Thread(target=lambda: got.extend(sub.recv(timeout=5) for _ in range(n + 1)))
    t.start()
    pub.send(big, timeout=5)  # room appears as the thread reads
    t.join(10)
    assert [m.seq for m in got] == list(range(n + 1))  # a timed-out send claims nothing
