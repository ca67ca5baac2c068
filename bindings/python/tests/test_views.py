"""recv_view and loan: zero-copy blocks, and what happens to their buffers afterwards."""

import gc

import pytest

import shmbus


def test_view_is_read_only_and_released_at_exit(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(b"in place")
    ctx = sub.recv_view(timeout=1)
    assert (ctx.seq, ctx.position, len(ctx)) == (0, 0, 8)
    with ctx as view:
        assert isinstance(view, memoryview)
        assert view.readonly
        assert bytes(view) == b"in place"
        assert view[:2] == b"in"
        with pytest.raises(TypeError):
            view[0] = 0
        # The subscriber waits until the block ends.
        with pytest.raises(shmbus.Busy):
            sub.try_recv()
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(BufferError):
        memoryview(ctx)  # no new export after the block
    pub.send(b"next")
    assert sub.recv(timeout=1).data == b"next"


def test_view_protects_its_record_until_a_kept_slice_is_gone(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, max_message=256)
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(b"A" * 200)
    kept = None
    with pytest.raises(BufferError):
        with sub.recv_view() as view:
            kept = view[10:20]  # outlives the block
    assert bytes(kept) == b"A" * 10
    # The record is still pinned: the subscriber refuses, and producers cannot overwrite it.
    with pytest.raises(shmbus.Busy):
        sub.try_recv()
    with pytest.raises(shmbus.Full):
        for _ in range(100):
            pub.try_send(b"B" * 200)
    assert bytes(kept) == b"A" * 10
    del kept
    gc.collect()
    assert sub.try_recv().data == b"B" * 200


def test_view_with_numpy(bus):
    np = pytest.importorskip("numpy")
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(np.arange(8, dtype=np.int64))
    with sub.recv_view() as view:
        total = int(np.frombuffer(view, dtype=np.int64).sum())  # a temporary export
    assert total == 28


def test_view_without_with_ends_when_collected(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(b"x")
    pub.send(b"y")
    ctx = sub.recv_view()
    mv = ctx.__enter__()  # entered, never exited
    assert bytes(mv) == b"x"
    del ctx, mv
    gc.collect()
    assert sub.recv(timeout=1).data == b"y"


def test_view_in_lossy_mode_is_a_copy(path):
    bus = shmbus.Bus.create(path, capacity=1 << 12, mode="lossy", max_message=64)
    sub = bus.subscribe()
    pub = bus.publisher()
    pub.send(b"lossy")
    with sub.recv_view() as view:
        assert bytes(view) == b"lossy"


def test_view_errors_are_the_receive_errors(bus):
    sub = bus.subscribe()
    with pytest.raises(shmbus.Timeout):
        sub.recv_view(timeout=0.01)
    sub.close()
    with pytest.raises(shmbus.Closed):
        sub.recv_view()


def test_loan_commits_at_exit(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    ctx = pub.loan(4)
    assert (ctx.seq, len(ctx), ctx.committed) == (0, 4, None)
    with ctx as buf:
        assert isinstance(buf, memoryview) and not buf.readonly
        buf[:] = b"abcd"
        with pytest.raises(shmbus.Busy):
            pub.send(b"meanwhile")
    assert ctx.committed == 0
    with pytest.raises(ValueError):
        buf[0] = 1
    m = sub.recv(timeout=1)
    assert (m.data, m.seq) == (b"abcd", 0)


def test_loan_is_abandoned_on_an_exception(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    with pytest.raises(RuntimeError):
        with pub.loan(4) as buf:
            buf[:] = b"nope"
            raise RuntimeError("abandon")
    pub.send(b"after")
    m = sub.recv(timeout=1)
    assert m.data == b"after"
    assert m.seq == 1  # the abandoned loan consumed sequence 0


def test_loan_with_a_kept_slice_is_abandoned_when_it_goes(bus):
    sub = bus.subscribe()
    pub = bus.publisher()
    with pytest.raises(BufferError):
        with pub.try_loan(8) as buf:
            buf[:] = b"12345678"
            kept = buf[:4]
    with pytest.raises(shmbus.Busy):
        pub.send(b"x")
    with pytest.raises(shmbus.Empty):
        sub.try_recv()  # nothing was committed
    kept[0] = 0  # still writable memory of the pinned claim, never freed
    del kept
    gc.collect()
    pub.send(b"after")
    assert sub.recv(timeout=1).data == b"after"


def test_loan_into_numpy(bus):
    np = pytest.importorskip("numpy")
    sub = bus.subscribe()
    pub = bus.publisher()
    with pub.loan(8 * 4) as buf:
        a = np.frombuffer(buf, dtype=np.float64)
        a[:] = [1.0, 2.0, 3.0, 4.0]
        del a  # the array is an export of the loan: let it go before the commit
    assert np.frombuffer(sub.recv().data, dtype=np.float64).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_publisher_close_waits_for_its_loan(bus):
    pub = bus.publisher()
    ctx = pub.loan(4)
    with pytest.raises(shmbus.Busy):
        pub.close()
    del ctx
    gc.collect()
    pub.close()


def test_publisher_getters_wait_for_the_loan(bus):
    # A loan borrows the publisher mutably (it commits through it): reading the publisher's
    # counters beside it was a second, shared borrow (undefined behaviour in Rust's model).
    # Like every other call, the getters refuse while the loan is open.
    pub = bus.publisher()
    assert pub.sent == 0 and pub.max_message == bus.max_message
    with pub.loan(8) as buf:
        buf[:] = b"12345678"
        with pytest.raises(shmbus.Busy):
            pub.sent
        with pytest.raises(shmbus.Busy):
            pub.max_message
        assert "busy" in repr(pub)
    assert pub.sent == 1
    assert "sent=1" in repr(pub)


def test_a_with_block_keeps_its_exception_when_a_view_is_still_open(bus):
    # The subscriber cannot close while a view made in the block is open; that Busy used
    # to replace the exception the block raised (which became its __context__).
    bus.publisher().send(b"x")
    with pytest.raises(ZeroDivisionError):
        with bus.subscribe(start="oldest") as sub:
            view = sub.recv_view(timeout=5)
            view.__enter__()  # left open
            1 / 0
    view.__exit__(None, None, None)
    sub.close()
    assert sub.closed
