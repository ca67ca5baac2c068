"""shmbus: a shared-memory publish/subscribe bus for processes on one Linux machine.

Every participant maps the same file; messages move through a lock-free ring inside it::

    import shmbus
    bus = shmbus.Bus.open_or_create("/dev/shm/ticks.bus", capacity=16 << 20)
    pub = bus.publisher()
    sub = bus.subscribe(start="oldest")
    seq = pub.send(b"AAPL 189.52")
    msg = sub.recv(timeout=1.0)          # shmbus.Message: .data, .seq, .position
    msg = await sub.recv_async()         # asyncio (also `await pub.send_async(data)`,
                                         # `async for msg in sub`)

Errors are subclasses of :class:`shmbus.Error`.
"""

from ._shmbus import (
    DEFAULT_CAPACITY,
    Bus,
    Busy,
    Closed,
    Corrupt,
    Empty,
    Error,
    Forked,
    Full,
    JoinError,
    Loan,
    LockError,
    Lost,
    Message,
    MessageTooLarge,
    NoFreeSlot,
    NotARecord,
    OpenError,
    Pending,
    PositionNotRetained,
    ProducerConflict,
    Publisher,
    RingCorrupt,
    Subscriber,
    Timeout,
    Unblocked,
    View,
    __version__,
    default_dir,
    resolve,
)

#: Alias of :class:`NoFreeSlot`.
NoSlot = NoFreeSlot

__all__ = [
    "DEFAULT_CAPACITY",
    "Bus",
    "Busy",
    "Closed",
    "Corrupt",
    "Empty",
    "Error",
    "Forked",
    "Full",
    "JoinError",
    "Loan",
    "LockError",
    "Lost",
    "Message",
    "MessageTooLarge",
    "NoFreeSlot",
    "NoSlot",
    "NotARecord",
    "OpenError",
    "Pending",
    "PositionNotRetained",
    "ProducerConflict",
    "Publisher",
    "RingCorrupt",
    "Subscriber",
    "Timeout",
    "Unblocked",
    "View",
    "default_dir",
    "resolve",
]
