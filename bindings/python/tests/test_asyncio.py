"""asyncio: recv_async, send_async and `async for`, in one process and across processes.

What they must show: nothing blocks the loop, a cancelled or timed-out await consumes
nothing (the next receive gets the message, a cancelled send publishes nothing), many
subscribers wait on one loop without a thread each, and the handles stay usable.
"""

import asyncio
import multiprocessing as mp
import os
import struct

import pytest

import shmbus
import _children

CTX = mp.get_context("spawn")
U64 = struct.Struct("<Q")


def counter(msg):
    return U64.unpack_from(msg.data)[0]


def threads():
    return len(os.listdir("/proc/self/task"))


def test_recv_async_returns_a_waiting_message_at_once_and_waits_for_the_next(bus):
    sub, pub = bus.subscribe(), bus.publisher()

    async def main():
        pub.send(b"there")
        m = await sub.recv_async()
        assert (m.data, m.seq) == (b"there", 0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, pub.send, b"later")
        ticks = 0

        async def ticker():  # the loop keeps running while the receive waits
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        m = await sub.recv_async()
        t.cancel()
        assert (m.data, m.seq) == (b"later", 1)
        assert ticks >= 3

    asyncio.run(main())
    with pytest.raises(shmbus.Timeout):
        sub.recv(timeout=0)  # nothing left behind, and the blocking API works after asyncio


def test_send_async_waits_for_room_and_publishes_once(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    sub, pub = bus.subscribe(), bus.publisher()
    filled = 0
    with pytest.raises(shmbus.Full):
        while True:
            pub.try_send(U64.pack(filled) + bytes(200))
            filled += 1

    async def main():
        async def drain():
            # Starts late: the send below has to wait. (A reader tells producers where it is
            # when it catches up, or every eighth of the ring: it reads on to the end.)
            await asyncio.sleep(0.05)
            return [counter(await sub.recv_async()) for _ in range(filled + 1)]

        d = asyncio.create_task(drain())
        seq = await pub.send_async(U64.pack(filled) + bytes(200))
        assert seq == filled
        assert await d == list(range(filled + 1))

    asyncio.run(main())
    with pytest.raises(shmbus.Empty):
        sub.try_recv()


def test_async_for_ends_when_the_subscriber_is_closed(bus):
    sub, pub = bus.subscribe(), bus.publisher()
    for i in range(5):
        pub.send(U64.pack(i))

    async def main():
        asyncio.get_running_loop().call_later(0.05, sub.close)
        return [counter(m) async for m in sub]

    assert asyncio.run(main()) == list(range(5))


def test_wait_for_timeouts_then_go_on_without_loss(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    sub = bus.subscribe()
    count = 150
    ready = CTX.Event()
    # Another process, so that the publisher does not share the GIL with the loop.
    p = CTX.Process(target=_children.publish_paced, args=(path, count, 0.002, ready), daemon=True)
    p.start()

    async def main():
        got, timeouts = [], 0
        while len(got) < count:
            try:
                got.append(counter(await asyncio.wait_for(sub.recv_async(), 0.0005)))
            except asyncio.TimeoutError:
                timeouts += 1
        return got, timeouts

    try:
        assert ready.wait(30)
        got, timeouts = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        p.join(30)
    assert p.exitcode == 0
    assert got == list(range(count))
    assert timeouts > 10  # the receive was cut off while waiting many times
    with pytest.raises(shmbus.Empty):
        sub.try_recv()


@pytest.mark.parametrize("wait", ["spin_then_block", "block"])
def test_a_cancelled_receive_consumes_nothing(bus, wait):
    # "block" parks at once (the wake comes through the waiter thread and the loop's socket);
    # "spin_then_block" first re-polls through the loop (bare yields).
    sub, pub = bus.subscribe(wait=wait), bus.publisher()
    rounds = 300
    outcomes = {"completed": 0, "cancelled": 0}

    async def main():
        got = []
        for i in range(rounds):
            task = asyncio.create_task(sub.recv_async())
            await asyncio.sleep(0)  # the task is waiting (parked or spinning)
            # Publish, then cancel before the task has run again: whichever of the wake-up
            # and the cancellation wins, the message must reach us exactly once.
            pub.send(U64.pack(i))
            if i % 3 == 1:
                await asyncio.sleep(0)  # one loop iteration: the wake may or may not be in
            elif i % 3 == 2:
                await asyncio.sleep(0.002)  # the wake is in: the task has its message
            task.cancel()
            try:
                got.append(counter(await task))
                outcomes["completed"] += 1
            except asyncio.CancelledError:
                got.append(counter(await sub.recv_async()))
                outcomes["cancelled"] += 1
        return got

    assert asyncio.run(main()) == list(range(rounds))
    assert outcomes["cancelled"] > 0  # the race went both ways
    assert outcomes["completed"] > 0
    with pytest.raises(shmbus.Empty):
        sub.try_recv()


def test_a_cancelled_send_publishes_nothing_and_the_publisher_goes_on(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    sub, pub = bus.subscribe(), bus.publisher()
    filled = 0
    with pytest.raises(shmbus.Full):
        while True:
            pub.try_send(U64.pack(filled) + bytes(200))
            filled += 1

    async def main():
        task = asyncio.create_task(pub.send_async(bytes(208)))
        await asyncio.sleep(0.02)
        assert not task.done()
        with pytest.raises(shmbus.Busy):
            pub.try_send(b"x")  # one task at a time while the send waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pub.send_async(bytes(208)), 0.02)
        got = [counter(m) for m in sub.recv_many(1000, timeout=0)]
        assert got == list(range(filled))
        assert await pub.send_async(U64.pack(filled)) == filled

    asyncio.run(main())
    assert counter(sub.recv(timeout=1)) == filled
    with pytest.raises(shmbus.Empty):
        sub.try_recv()


def test_one_task_at_a_time_per_subscriber(bus):
    sub = bus.subscribe()

    async def main():
        first = asyncio.create_task(sub.recv_async())
        await asyncio.sleep(0.01)
        with pytest.raises(shmbus.Busy):
            await sub.recv_async()
        with pytest.raises(shmbus.Busy):
            sub.recv(timeout=0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        bus.publisher().send(b"ok")
        assert (await sub.recv_async()).data == b"ok"

    asyncio.run(main())


def test_recv_async_in_a_child_process_publisher(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    sub = bus.subscribe("oldest")
    count = 300
    ready = CTX.Event()
    p = CTX.Process(target=_children.publish_paced, args=(path, count, 0.001, ready), daemon=True)
    p.start()
    try:
        assert ready.wait(30)

        async def main():
            got = []
            async for m in sub:
                got.append((m.seq, counter(m)))
                if len(got) == count:
                    return got

        got = asyncio.run(asyncio.wait_for(main(), 60))
        assert got == [(i, i) for i in range(count)]
    finally:
        p.join(30)
    assert p.exitcode == 0


def test_send_async_to_a_slow_reader_in_a_child_process(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=64)
    count = 500  # 32 B records: about four ring laps, so the sender waits for room often
    out, ready = CTX.Queue(), CTX.Event()
    p = CTX.Process(target=_children.consume_slowly, args=(path, count, out, ready), daemon=True)
    p.start()
    try:
        assert ready.wait(30)
        pub = bus.publisher()

        async def main():
            seqs = [await pub.send_async(U64.pack(i)) for i in range(count)]
            assert seqs == list(range(count))

        asyncio.run(asyncio.wait_for(main(), 60))
        assert out.get(timeout=60) == list(range(count))
    finally:
        p.join(30)
    assert p.exitcode == 0


def test_fifty_buses_awaited_on_one_loop(tmp_path):
    buses = 50
    count = 400
    paths = [str(tmp_path / f"b{i}.bus") for i in range(buses)]
    subs = [shmbus.Bus.create(p, capacity=1 << 14).subscribe() for p in paths]
    ready, go = CTX.Event(), CTX.Event()
    p = CTX.Process(target=_children.publish_round_robin, args=(paths, count, ready, go), daemon=True)
    p.start()
    try:
        assert ready.wait(30)
        before = threads()

        async def follow(sub):
            got = []
            async for m in sub:
                assert m.seq == len(got)
                got.append(counter(m))
                if len(got) == count:
                    return got

        async def main():
            tasks = [asyncio.create_task(follow(s)) for s in subs]
            await asyncio.sleep(0.05)  # every task waits (parked) before the first message
            go.set()
            return await asyncio.gather(*tasks), threads()

        results, during = asyncio.run(asyncio.wait_for(main(), 120))
        assert all(r == list(range(count)) for r in results)
        # One waiter thread for the whole process (bus-core serves 127 bus sides a thread),
        # not one per subscriber.
        assert during - before <= 1
    finally:
        go.set()
        p.join(30)
    assert p.exitcode == 0


def test_outside_an_event_loop_it_says_so(bus):
    sub = bus.subscribe()
    with pytest.raises(RuntimeError):
        sub.recv_async().send(None)  # nothing there: it needs a running loop to wait
    bus.publisher().send(b"x")
    with pytest.raises(StopIteration) as e:
        sub.recv_async().send(None)  # a message there: done at once, no loop needed
    assert e.value.value.data == b"x"


def test_closing_a_handle_ends_its_waiting_task(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    sub, pub = bus.subscribe(), bus.publisher()
    with pytest.raises(shmbus.Full):
        while True:
            pub.try_send(bytes(200))

    async def main():
        sending = asyncio.create_task(pub.send_async(bytes(200)))
        other = bus.subscribe()
        receiving = asyncio.create_task(other.recv_async())
        await asyncio.sleep(0.02)
        pub.close()
        other.close()
        with pytest.raises(shmbus.Closed):
            await asyncio.wait_for(sending, 5)
        with pytest.raises(shmbus.Closed):
            await asyncio.wait_for(receiving, 5)

    asyncio.run(main())
    # Nothing was published by the send that was waiting.
    assert len(sub.recv_many(1000, timeout=0)) == bus.stats()["tail_seq"]


def test_asyncio_timeout_block(bus):
    sub = bus.subscribe()

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await sub.recv_async()
        bus.publisher().send(b"after")
        async with asyncio.timeout(5):
            return await sub.recv_async()

    assert asyncio.run(main()).data == b"after"


def test_a_ready_stream_still_lets_the_loop_run(path):
    # Messages that are already there are returned without a loop call; a stream the ring
    # always has ready (a faster publisher in another process) never let the loop run: other
    # tasks starved and `asyncio.timeout` never fired. Every 64 such operations one yields.
    bus = shmbus.Bus.create(path, capacity=1 << 20)
    sub, pub = bus.subscribe(), bus.publisher()
    n = 5000
    for i in range(n):
        pub.send(U64.pack(i))

    async def main():
        beats = 0

        async def heartbeat():
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0)

        hb = asyncio.create_task(heartbeat())
        await asyncio.sleep(0)
        start = beats
        got = 0
        async for m in sub:
            assert counter(m) == got  # nothing lost or repeated around the yields
            got += 1
            if got == n:
                break
        during_recv = beats - start
        # The same for sends into a ring with room.
        start = beats
        for i in range(n):
            await pub.send_async(U64.pack(i))
        during_send = beats - start
        hb.cancel()
        return during_recv, during_send

    during_recv, during_send = asyncio.run(main())
    assert during_recv >= n // 64 - 1, during_recv
    assert during_send >= n // 64 - 1, during_send


def test_pending_is_generic_at_run_time():
    # The stub declares `Pending(Generic[_T])`; annotations evaluated at run time use it.
    alias = shmbus.Pending[shmbus.Message]
    assert alias.__origin__ is shmbus.Pending
    assert alias.__args__ == (shmbus.Message,)


def test_pendings_driven_by_hand_never_yield(bus):
    # The yield to the loop (one operation in 64 that would complete at once) is for a task
    # under a running asyncio loop. Driven by hand, a ready operation completes in its first
    # step every time, however many came before.
    sub, pub = bus.subscribe(), bus.publisher()
    for i in range(200):
        pub.send(U64.pack(i))
    for i in range(200):
        with pytest.raises(StopIteration) as e:
            sub.recv_async().send(None)
        assert counter(e.value.value) == i
