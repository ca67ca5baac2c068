"""Every error kind: its class, its attributes, and when it is raised."""

import asyncio
import os
import signal
import struct
import time

import pytest

import shmbus

KINDS = [
    "Empty", "Full", "Timeout", "MessageTooLarge", "Lost", "Corrupt", "RingCorrupt",
    "ProducerConflict", "Unblocked", "JoinError", "NoFreeSlot", "LockError",
    "PositionNotRetained", "NotARecord", "OpenError", "Busy", "Closed", "Forked",
]


def test_hierarchy():
    assert issubclass(shmbus.Error, Exception)
    for name in KINDS:
        cls = getattr(shmbus, name)
        assert issubclass(cls, shmbus.Error), name
        assert cls.__module__ == "shmbus"
        assert cls.__doc__
    assert issubclass(shmbus.NoFreeSlot, shmbus.JoinError)
    assert issubclass(shmbus.LockError, shmbus.JoinError)
    assert shmbus.NoSlot is shmbus.NoFreeSlot


def test_message_too_large(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16, max_message=100)
    pub = bus.publisher()
    for call in (pub.send, pub.try_send, pub.loan, pub.try_loan):
        with pytest.raises(shmbus.MessageTooLarge) as e:
            call(b"x" * 101 if call in (pub.send, pub.try_send) else 101)
        assert (e.value.len, e.value.max) == (101, 100)
        assert "exceeds" in str(e.value)
    assert pub.send(b"x" * 100) == 0


def test_open_errors(tmp_path):
    missing = tmp_path / "missing.bus"
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.open(missing)
    assert e.value.path == str(missing)
    assert e.value.kind == "not_found"
    assert e.value.reason == "no such bus"
    assert str(missing) in str(e.value)
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.create(tmp_path / "no-such-dir" / "x.bus")
    assert e.value.kind in ("directory_not_found", "not_found")
    p = tmp_path / "x.bus"
    shmbus.Bus.create(p, capacity=1 << 16)
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.create(p, capacity=1 << 16)
    assert e.value.kind == "already_exists"
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.create(tmp_path / "y.bus", capacity=12345)
    assert e.value.kind == "invalid_options"
    junk = tmp_path / "junk.bus"
    junk.write_bytes(b"not a bus" * 1000)
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.open(junk)
    assert e.value.kind == "invalid_header"
    assert e.value.header_problem == "not_a_bus"
    # A bus of another format version (the u32 after the 8-byte magic), and a damaged one.
    for offset, value, problem in ((8, 999, "unsupported_version"), (24, 0xDEAD, "bad_header")):
        other = tmp_path / f"{problem}.bus"
        shmbus.Bus.create(other, capacity=1 << 16)
        fd = os.open(other, os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<I", value), offset)
        finally:
            os.close(fd)
        with pytest.raises(shmbus.OpenError) as e:
            shmbus.Bus.open(other)
        assert (e.value.kind, e.value.header_problem) == ("invalid_header", problem), e.value
    link = tmp_path / "link.bus"
    link.symlink_to(p)
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.open(link)
    assert e.value.kind == "symbolic_link"
    assert shmbus.Bus.open(link, follow_symlinks=True).capacity == 1 << 16


def test_subscribe_position_errors(bus):
    pub = bus.publisher()
    pub.send(b"a" * 10)
    with pytest.raises(shmbus.PositionNotRetained) as e:
        bus.subscribe(start=1 << 20)
    assert e.value.requested == 1 << 20
    assert e.value.oldest == 0 and e.value.next > 0
    with pytest.raises(shmbus.NotARecord) as e:
        bus.subscribe(start=16)
    assert e.value.requested == 16


def test_a_path_with_a_nul_byte_is_a_value_error(tmp_path):
    cut = tmp_path / "cut.bus"
    with_nul = str(cut) + "\0.ignored"
    for call in (
        lambda: shmbus.Bus.create(with_nul, capacity=1 << 16),
        lambda: shmbus.Bus.open(with_nul),
        lambda: shmbus.Bus.open_or_create(with_nul, capacity=1 << 16),
        lambda: shmbus.resolve("a\0b"),
    ):
        with pytest.raises(ValueError, match="null byte"):
            call()
    assert not cut.exists()


def test_a_file_mode_beyond_the_permission_bits_is_refused(tmp_path):
    for mode in (0o7777, 0o4600, 0o1666, 1 << 31):
        p = tmp_path / f"m{mode:o}.bus"
        with pytest.raises(shmbus.OpenError) as e:
            shmbus.Bus.create(p, capacity=1 << 16, file_mode=mode)
        assert e.value.kind == "invalid_options"
        assert "file mode" in str(e.value)
        assert not p.exists()


def test_a_head_written_past_the_tail_is_ring_corrupt_not_a_hang(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    pub = bus.publisher()
    for _ in range(10):
        pub.send(b"x" * 24)
    tail = bus.stats()["tail_position"]
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<Q", tail + 16), TAIL_OFFSET + 128)  # head: the next line
    finally:
        os.close(fd)
    for start in ("latest", "oldest"):
        with pytest.raises(shmbus.RingCorrupt):
            bus.subscribe(start)


def test_lost_once_per_gap_then_goes_on(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, mode="lossy", max_message=64)
    sub = bus.subscribe()
    pub = bus.publisher()
    published = 1000
    for i in range(published):
        pub.send(struct.pack("<Q", i))
    delivered, lost, last = 0, 0, -1
    while True:
        try:
            m = sub.try_recv()
        except shmbus.Lost as e:
            assert e.count > 0
            assert "lost" in str(e)
            lost += e.count
            continue
        except shmbus.Empty:
            break
        (i,) = struct.unpack("<Q", m.data)
        assert i > last and i == m.seq
        last = i
        delivered += 1
    assert lost > 0 and delivered > 0
    assert delivered + lost == published
    assert sub.lost == lost


def test_lost_through_recv_many_is_reported_once(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, mode="lossy", max_message=64)
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(b"first")
    assert sub.recv().data == b"first"
    for i in range(1000):
        pub.send(b"%d" % i)
    delivered, lost = 0, 0
    while True:
        try:
            delivered += len(sub.recv_many(50, timeout=0))
        except shmbus.Lost as e:
            lost += e.count
        except shmbus.Timeout:
            break
    assert delivered + lost == 1000 and lost > 0


def test_closed_and_busy_and_empty(bus):
    sub = bus.subscribe()
    with pytest.raises(shmbus.Empty):
        sub.try_recv()
    with pytest.raises(shmbus.Timeout):
        sub.recv(timeout=0)
    sub.close()
    with pytest.raises(shmbus.Closed):
        sub.try_recv()
    with pytest.raises(shmbus.Closed):
        sub.position


# Offsets of the file format 2 header (bus-core/src/layout.rs): the tail pair
# {position, sequence} sits on the second 128-byte line; the data region's offset is the
# u64 at 56.
TAIL_OFFSET = 128
DATA_OFFSET_OFFSET = 56


def test_ring_corrupt_when_another_process_writes_garbage_into_the_header(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    pub = bus.publisher()
    pub.send(b"x")
    fd = os.open(path, os.O_RDWR)
    try:
        bad = (1 << 63) + 16  # past any position a producer can reach
        os.pwrite(fd, struct.pack("<QQ", bad, 1), TAIL_OFFSET)
    finally:
        os.close(fd)
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.open(path)
    assert e.value.kind == "ring_state_corrupt"
    with pytest.raises(shmbus.RingCorrupt) as e:
        bus.subscribe("latest")
    assert e.value.position == bad
    for call in (lambda: pub.try_send(b"y"), lambda: pub.send(b"y", timeout=0.1), lambda: pub.loan(3)):
        with pytest.raises(shmbus.RingCorrupt) as e:
            call()
        assert e.value.position == bad


def test_a_record_scrambled_by_another_process_is_skipped(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16, unblock_timeout=0.05)
    pub = bus.publisher()
    sub = bus.subscribe("oldest")
    pub.send(b"a" * 32)
    pub.send(b"b" * 32)
    fd = os.open(path, os.O_RDWR)
    try:
        (data,) = struct.unpack("<Q", os.pread(fd, 8, DATA_OFFSET_OFFSET))
        os.pwrite(fd, os.urandom(16), data)  # the first record's header
    finally:
        os.close(fd)
    # Not a record this bus's producers wrote: after the unblock timeout it is repaired
    # into padding (counted in `unblocked`) and the subscriber goes on.
    m = sub.recv(timeout=5)
    assert (m.data, m.seq) == (b"b" * 32, 1)
    assert bus.stats()["unblocked"] == 1


# More of the header (bus-core/src/layout.rs, line 0): max subscribers (u32 at 36), max
# producers (u32 at 40), the slot table's offset (u64 at 48). A slot is 128 bytes,
# subscribers' first; a producer slot's "claiming" word (0 idle, else 1 + the sequence it
# claims) is the u64 at 16 in it.
MAX_SUBSCRIBERS_OFFSET = 36
MAX_PRODUCERS_OFFSET = 40
SLOTS_OFFSET_OFFSET = 48
SLOT_SIZE = 128
PROD_CLAIMING = 16
CAPACITY_OFFSET = 24


def pread_u64(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<Q", f.read(8))[0]


def pwrite(path, offset, data):
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_a_scribbled_header_field_is_refused_at_open(path):
    shmbus.Bus.create(path, capacity=1 << 16)
    pwrite(path, CAPACITY_OFFSET, struct.pack("<Q", 1 << 20))  # the header's checksum breaks
    with pytest.raises(shmbus.OpenError) as e:
        shmbus.Bus.open(path)
    assert e.value.kind == "invalid_header"


def test_a_record_the_repairer_cannot_replace_raises_corrupt(path):
    # What bus-core's crash test `a_bad_header_the_repairer_cannot_replace_is_reported_as_corrupt`
    # plants: word1 of the second record scribbled, and the tail's sequence pushed so far that
    # the region would span more sequences than a repair can account for.
    bus = shmbus.Bus.create(path, capacity=1 << 16, unblock_timeout=0.02)
    pub = bus.publisher()
    sub = bus.subscribe("oldest")
    pub.send(b"first")
    second = bus.stats()["tail_position"]
    pub.send(b"second")
    data = pread_u64(path, DATA_OFFSET_OFFSET)
    pwrite(path, data + second + 8, b"\xff" * 8)
    tail_seq = pread_u64(path, TAIL_OFFSET + 8)
    pwrite(path, TAIL_OFFSET + 8, struct.pack("<Q", tail_seq + 100_000))
    assert sub.recv(timeout=1).data == b"first"
    with pytest.raises(shmbus.Corrupt) as e:
        sub.recv(timeout=5)
    assert e.value.position == second
    assert e.value.problem and "corrupt record" in str(e.value)
    # The subscriber stays where it is, and says so again (each time the record has stayed
    # bad for the unblock timeout) through every receive call; never a crash.
    with pytest.raises((shmbus.Empty, shmbus.Corrupt)):
        sub.try_recv()
    with pytest.raises(shmbus.Corrupt):
        sub.recv_many(10, timeout=5)
    with pytest.raises(shmbus.Corrupt):
        with sub.recv_view(timeout=5):
            pass

    async def main():
        with pytest.raises(shmbus.Corrupt):
            await sub.recv_async()

    asyncio.run(main())
    assert bus.stats()["unblocked"] == 0


def test_a_second_writer_on_a_one_producer_bus_raises_producer_conflict(path):
    # Exclusive bus (max_producers=1): the publisher claims with plain stores. Another
    # process moving the tail (here: our own writes into the header, as a publisher that
    # lost its slot would do) is noticed within a lap.
    bus = shmbus.Bus.create(path, capacity=1 << 12, mode="lossy", max_producers=1)
    pub = bus.publisher()
    with pytest.raises(shmbus.NoFreeSlot):
        bus.publisher()
    with pytest.raises(shmbus.ProducerConflict) as e:
        for _ in range(1000):
            pub.send(b"x" * 40)
            pos, seq = struct.unpack("<QQ", open(path, "rb").read(TAIL_OFFSET + 16)[TAIL_OFFSET:])
            pwrite(path, TAIL_OFFSET, struct.pack("<QQ", pos + 64, seq + 1))
    assert e.value.found == e.value.expected + 64
    assert "one-producer bus" in str(e.value)


def test_a_loan_repaired_away_raises_unblocked_at_commit(path):
    # A repairer turns a claimed record into padding only if every producer that may own it
    # is dead. Clearing the producers' "claiming" words makes this live publisher look like
    # one that died holding the loan: what a publisher whose process lost its liveness lock
    # would find. Its commit then fails: the message was not delivered.
    bus = shmbus.Bus.create(path, capacity=1 << 16, unblock_timeout=0.02)
    pub = bus.publisher()
    sub = bus.subscribe()
    slots = pread_u64(path, SLOTS_OFFSET_OFFSET)
    header = open(path, "rb").read(64)
    (max_subs,) = struct.unpack_from("<I", header, MAX_SUBSCRIBERS_OFFSET)
    (max_prods,) = struct.unpack_from("<I", header, MAX_PRODUCERS_OFFSET)
    loan = pub.loan(8)
    with pytest.raises(shmbus.Unblocked) as e:
        with loan as buf:
            buf[:] = b"repaired"
            for i in range(max_prods):
                pwrite(path, slots + (max_subs + i) * SLOT_SIZE + PROD_CLAIMING, bytes(8))
            with pytest.raises(shmbus.Timeout):
                sub.recv(timeout=0.5)  # finds the claim stuck, has it repaired, gets nothing
    assert "unblocked" in str(e.value)
    assert loan.committed is None
    assert bus.stats()["unblocked"] == 1
    # Both handles go on.
    pub.send(b"after")
    assert sub.recv(timeout=1).data == b"after"


def test_handles_inherited_across_os_fork_raise_forked(path):
    # multiprocessing's default start method on Linux is fork: a worker inherits the parent's
    # handles. Publishing through the parent's publisher of a one-producer bus would overwrite
    # the parent's records; receiving would move the parent's read position. Every call in
    # the child raises Forked instead, and the child can open the bus itself.
    bus = shmbus.Bus.create(path, capacity=1 << 16, max_producers=1)
    pub = bus.publisher()
    sub = bus.subscribe()
    pub.send(b"parent 0")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        verdict = b"ok"
        try:
            calls = [
                ("send", lambda: pub.send(b"child")),
                ("send timeout=0", lambda: pub.send(b"child", timeout=0)),
                ("try_send", lambda: pub.try_send(b"child")),
                ("send_many", lambda: pub.send_many([b"child"])),
                ("loan", lambda: pub.loan(8)),
                ("try_loan", lambda: pub.try_loan(8)),
                ("recv", lambda: sub.recv(timeout=0.01)),
                ("try_recv", lambda: sub.try_recv()),
                ("recv_many", lambda: sub.recv_many(4, timeout=0.01)),
                ("recv_view", lambda: sub.recv_view(timeout=0.01)),
            ]
            for name, call in calls:
                try:
                    call()
                    verdict = f"{name} went through in the child".encode()
                    break
                except shmbus.Forked:
                    pass
            else:
                own = shmbus.Bus.open(path).subscribe(start="oldest")
                if own.recv(timeout=5).data != b"parent 0":
                    verdict = b"the child's own subscriber read something else"
                own.close()
                # Closing the inherited handles leaves the parent's slots alone.
                pub.close()
                sub.close()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            verdict = repr(e).encode()
        os.write(w, verdict)
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.005)
    verdict = os.read(r, 4096)
    os.close(r)
    assert verdict == b"ok"
    stats = bus.stats()
    assert len(stats["subscribers"]) == 1 and len(stats["producers"]) == 1
    # The parent's handles carry on where they were.
    pub.send(b"parent 1")
    got = [(m.seq, m.data) for m in (sub.recv(timeout=5), sub.recv(timeout=5))]
    assert got == [(0, b"parent 0"), (1, b"parent 1")]
    with pytest.raises(shmbus.Timeout):
        sub.recv(timeout=0.05)
