//! Async handles: [`AsyncSubscriber`] and [`AsyncPublisher`], for any executor.
//!
//! They wrap the blocking handles and add no protocol: a receive tries at once, and only when
//! there is nothing does it announce itself as a sleeper and park with a waiter thread shared
//! by the whole process (the `reactor` module), which wakes its task when the bus's futex word
//! moves. No thread per handle, no runtime thread ever blocked, and nothing runtime-specific:
//! the handles work on tokio's `current_thread` and multi-threaded runtimes alike, and on any
//! executor that polls futures.
//!
//! Every future here is cancellation-safe: dropping it at any await point consumes nothing
//! (a message is taken from the ring only in the same poll that returns it), and the handle
//! goes on from where it was.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::reactor::Seat;
use crate::wait::{Spinner, Spot, UNFENCED_SLICE};
use crate::{
    Message, Publisher, RecvError, Sample, SendError, SendTimeoutError, Sent, Subscriber,
    TryRecvError, TrySendError,
};

/// A handle's parking with a waiter thread.
struct Parking {
    seat: Seat,
    spot: Spot,
    /// An announcement is out and parked with the thread (which may have fired it since).
    parked: bool,
    /// The fork count when it was made ([`crate::lock::forks`]): a child forked since holds
    /// a copy of the parent's parking, which is not its own to take back.
    forks: u64,
}

impl Parking {
    fn new(spot: Spot) -> std::io::Result<Parking> {
        Ok(Parking {
            seat: Seat::new(&spot)?,
            spot,
            parked: false,
            forks: crate::lock::forks(),
        })
    }

    /// Called after a look found nothing to do. `Pending`: parked, the waker will be called.
    /// `Ready`: look again now (the thread woke us, or the re-check found progress).
    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        slice: Duration,
        is_ready: impl Fn() -> bool,
    ) -> Poll<()> {
        let reactor = &self.seat.reactor;
        if self.parked {
            if reactor.still_parked(self.seat.id, cx.waker()) {
                // The announcement made before the last re-check still stands: a commit since
                // then moves the word, and the thread wakes us.
                return Poll::Pending;
            }
            // The thread fired (and retracted the announcement): look again.
            self.parked = false;
            return Poll::Ready(());
        }
        let (value, fenced) = self.spot.announce();
        if is_ready() {
            self.spot.retract();
            return Poll::Ready(());
        }
        let slice = if fenced {
            slice
        } else {
            slice.min(UNFENCED_SLICE)
        };
        let deadline = Instant::now() + slice;
        reactor.park(
            self.seat.id,
            self.spot.clone(),
            value,
            cx.waker().clone(),
            deadline,
        );
        self.parked = true;
        Poll::Pending
    }

    /// Takes a parking back (a message came, or the future waiting was dropped). Not in a
    /// child forked since: the announcement (the slot's `sleeping` flag, the bus's waiting
    /// count) is the parent's, still parked with the parent's waiter thread, and the child's
    /// copy of that thread's state may have been copied locked.
    fn cancel(&mut self) {
        if !std::mem::replace(&mut self.parked, false) || crate::lock::forks_counted() != self.forks
        {
            return;
        }
        if self.seat.reactor.unpark(self.seat.id) {
            self.spot.retract();
        }
    }
}

impl Drop for Parking {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Rounds of look, announce, re-check in one poll before it yields to the executor instead
/// (a record that the re-check calls ready and the look does not take, such as bytes that a
/// repair is about to replace).
const ROUNDS_PER_POLL: usize = 4;

/// `Spin`: the pause of poll `n` of a wait that found nothing, doubling from one to 1,024
/// pauses, after which the handle hands the thread back to the executor. (`SpinThenBlock`
/// spins with a [`Spinner`] the same way before it parks, 40-80 µs in all here: under a stream
/// the next message comes within that, and a parked receiver would cost the producer a wake
/// system call per message.)
fn spin(n: u32) {
    for _ in 0..1u32 << n.min(10) {
        std::hint::spin_loop();
    }
}

// ---- subscriber ---------------------------------------------------------------------------

/// A [`Subscriber`] whose receives are futures. Made by [`Subscriber::into_async`].
///
/// ```
/// # use bus_core::{Bus, BusOptions, Start};
/// # let dir = tempfile::tempdir().unwrap();
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let bus = Bus::create(dir.path().join("ticks.bus"), &BusOptions::new().capacity(1 << 16))?;
/// let mut sub = bus.subscribe(Start::Latest)?.into_async()?;
/// let mut publ = bus.publisher()?.into_async()?;
/// publ.send(b"tick").await?;
/// let mut buf = Vec::new();
/// let msg = sub.recv(&mut buf).await?;
/// assert_eq!((msg.seq, &buf[..]), (0, &b"tick"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// It is also a [`futures_core::Stream`] of [`OwnedMessage`]s (it never ends; losses and
/// corrupt records come as `Err` items, after which it goes on).
pub struct AsyncSubscriber {
    /// Declared (so dropped) before `inner`: a parking still outstanding is withdrawn while
    /// the subscriber's slot is still its own, not after the slot was freed for another.
    park: Parking,
    inner: Subscriber,
    /// Polls of the current wait that found nothing (`Spin`, see [`spin`]).
    idle_polls: u32,
    /// The spin of the current wait (`SpinThenBlock`).
    spinner: Spinner,
}

impl std::fmt::Debug for AsyncSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncSubscriber").field(&self.inner).finish()
    }
}

/// A message with its payload, owned: the items of [`AsyncSubscriber`] as a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedMessage {
    /// Bus-wide sequence number.
    pub seq: u64,
    /// Absolute position of the record.
    pub position: u64,
    /// The payload.
    pub data: Vec<u8>,
}

impl Subscriber {
    /// Makes this subscriber async (keeping its position and slot).
    ///
    /// # Errors
    ///
    /// The process could not start its waiter thread (the first async handle of a process, or
    /// of every further 127 bus sides, starts one).
    pub fn into_async(self) -> std::io::Result<AsyncSubscriber> {
        let park = Parking::new(self.spot())?;
        Ok(AsyncSubscriber {
            inner: self,
            park,
            idle_polls: 0,
            spinner: Spinner::long(),
        })
    }
}

impl TryRecvError {
    /// The error a waiting receive reports, or `None` for `Empty` (wait and try again).
    fn into_recv(self) -> Option<RecvError> {
        match self {
            TryRecvError::Empty => None,
            TryRecvError::Lost(n) => Some(RecvError::Lost(n)),
            TryRecvError::Corrupt { position, problem } => {
                Some(RecvError::Corrupt { position, problem })
            }
            TryRecvError::Forked => Some(RecvError::Forked),
        }
    }
}

impl AsyncSubscriber {
    /// Back to a blocking subscriber, at the same position.
    pub fn into_sync(self) -> Subscriber {
        let AsyncSubscriber { inner, park, .. } = self;
        drop(park);
        inner
    }

    /// The blocking subscriber inside: its position, counters and `try_` calls. (Its blocking
    /// calls would block the executor's thread.)
    pub fn get_ref(&self) -> &Subscriber {
        &self.inner
    }

    /// As [`AsyncSubscriber::get_ref`], mutably (`try_recv`, `try_recv_ref`).
    pub fn get_mut(&mut self) -> &mut Subscriber {
        &mut self.inner
    }

    /// Ends a wait, whichever way it ended (a message or an error handed out, a deadline, a
    /// cancelled future): no announcement lingers, and the next wait starts with the whole
    /// spin budget.
    fn rest(&mut self) {
        self.park.cancel();
        self.idle_polls = 0;
        self.spinner.reset();
    }

    /// Polls until something can be received; `Ready` can be spurious. Waits as the
    /// subscriber's [`WaitStrategy`](crate::WaitStrategy) says: `Spin` never parks (it
    /// re-polls through the executor, which keeps its other tasks running), `SpinThenBlock`
    /// parks after a spin of 4,096 pauses in all (see [`Spinner`]), `Block` at once.
    ///
    /// With a `deadline`, `Ready(false)` says it passed with nothing to receive (the waiter
    /// thread wakes the task at the deadline, so no runtime timer is needed).
    fn poll_ready(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Poll<bool> {
        use crate::WaitStrategy;
        // The deadline first: the caller's receive has just looked, and a probe that keeps
        // saying "ready" while the receive finds nothing (spurious, see `probe`) must not
        // keep a timed wait from ending.
        let mut slice = self.inner.sleep_slice();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.rest();
                return Poll::Ready(false);
            }
            slice = slice.min(left);
        }
        if self.inner.probe() {
            self.rest();
            return Poll::Ready(true);
        }
        if !self.park.parked {
            let spun = match self.inner.wait_strategy() {
                WaitStrategy::Spin => {
                    spin(self.idle_polls);
                    self.idle_polls = self.idle_polls.saturating_add(1);
                    true
                }
                WaitStrategy::SpinThenBlock => self.spinner.spin(),
                WaitStrategy::Block => false,
            };
            if spun {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        for round in 0..ROUNDS_PER_POLL {
            if round > 0 && self.inner.probe() {
                self.rest();
                return Poll::Ready(true);
            }
            let inner = &self.inner;
            match self.park.poll_wait(cx, slice, || inner.is_ready()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Waits until something can be received (spuriously, at times), or `deadline` passes
    /// (`false`). Cancellation-safe.
    fn ready(&mut self, deadline: Option<Instant>) -> ReadyFuture<'_> {
        ReadyFuture {
            sub: self,
            deadline,
        }
    }

    /// Receives the next message into `buf` (replacing its contents): the async
    /// [`Subscriber::recv`], with the same errors. Cancellation-safe: dropped before it
    /// completes, it has consumed nothing.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv`].
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> Result<Message, RecvError> {
        loop {
            match self.inner.try_recv(buf) {
                Ok(m) => {
                    self.rest();
                    return Ok(m);
                }
                Err(e) => {
                    if let Some(e) = e.into_recv() {
                        self.rest();
                        return Err(e);
                    }
                }
            }
            self.ready(None).await;
        }
    }

    /// [`AsyncSubscriber::recv`], giving up after `timeout`: the async
    /// [`Subscriber::recv_timeout`], with its errors. The waiter thread wakes the task at the
    /// deadline, so it needs no runtime timer (with tokio, `tokio::time::timeout` around
    /// `recv` works as well). Cancellation-safe.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_timeout`].
    pub async fn recv_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Message, crate::RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.inner.try_recv(buf) {
                Ok(m) => {
                    self.rest();
                    return Ok(m);
                }
                Err(e) => {
                    if let Some(e) = e.into_recv() {
                        self.rest();
                        return Err(e.into());
                    }
                }
            }
            if !self.ready(deadline).await {
                return Err(crate::RecvTimeoutError::Timeout);
            }
        }
    }

    /// Receives the next message without copying it (reliable mode; lossy mode copies into a
    /// buffer the subscriber reuses): the async [`Subscriber::recv_ref`]. Cancellation-safe.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv`].
    pub async fn recv_ref(&mut self) -> Result<Sample<'_>, RecvError> {
        loop {
            match self.inner.next_ready() {
                Ok(true) => break,
                Ok(false) => {
                    self.ready(None).await;
                }
                Err(e) => {
                    self.rest();
                    return Err(e);
                }
            }
        }
        self.rest();
        // Returns at once: `next_ready` found a committed record at our position, and only
        // this handle moves the position (a lossy lap since then is reported as a loss).
        self.inner.recv_ref()
    }
}

/// See [`AsyncSubscriber::ready`].
struct ReadyFuture<'a> {
    sub: &'a mut AsyncSubscriber,
    deadline: Option<Instant>,
}

impl Future for ReadyFuture<'_> {
    type Output = bool;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let deadline = self.deadline;
        self.sub.poll_ready(cx, deadline)
    }
}

impl Drop for ReadyFuture<'_> {
    fn drop(&mut self) {
        // Dropped while parked (a `select!` took another branch): no announcement lingers.
        self.sub.rest();
    }
}

impl futures_core::Stream for AsyncSubscriber {
    type Item = Result<OwnedMessage, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let mut data = Vec::new();
            match this.inner.try_recv(&mut data) {
                Ok(m) => {
                    this.rest();
                    return Poll::Ready(Some(Ok(OwnedMessage {
                        seq: m.seq,
                        position: m.position,
                        data,
                    })));
                }
                Err(e) => {
                    if let Some(e) = e.into_recv() {
                        this.rest();
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.poll_ready(cx, None).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

// ---- publisher ----------------------------------------------------------------------------

/// A [`Publisher`] whose sends wait for room without blocking a thread. Made by
/// [`Publisher::into_async`].
pub struct AsyncPublisher {
    /// Dropped before `inner`, as in [`AsyncSubscriber`].
    park: Parking,
    inner: Publisher,
}

impl std::fmt::Debug for AsyncPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncPublisher").field(&self.inner).finish()
    }
}

impl Publisher {
    /// Makes this publisher async (keeping its slot).
    ///
    /// # Errors
    ///
    /// As [`Subscriber::into_async`].
    pub fn into_async(self) -> std::io::Result<AsyncPublisher> {
        let park = Parking::new(self.spot())?;
        Ok(AsyncPublisher { inner: self, park })
    }
}

impl AsyncPublisher {
    /// Back to a blocking publisher.
    pub fn into_sync(self) -> Publisher {
        let AsyncPublisher { inner, park } = self;
        drop(park);
        inner
    }

    /// The blocking publisher inside (`try_send`, `try_loan`, counters).
    pub fn get_ref(&self) -> &Publisher {
        &self.inner
    }

    /// As [`AsyncPublisher::get_ref`], mutably.
    pub fn get_mut(&mut self) -> &mut Publisher {
        &mut self.inner
    }

    /// Publishes `data`, waiting (without blocking the thread) while a reliable ring is full:
    /// the async [`Publisher::send`], with the same errors. While it waits it looks for dead
    /// subscribers every 10 ms, as `send` does, so one that died holding the ring full is
    /// evicted and the send goes on. Cancellation-safe: dropped before it completes, nothing
    /// was published.
    ///
    /// # Errors
    ///
    /// As [`Publisher::send`].
    pub async fn send(&mut self, data: &[u8]) -> Result<Sent, SendError> {
        loop {
            match self.send_until(data, None).await {
                Ok(s) => return Ok(s),
                Err(Some(e)) => return Err(e),
                // (Without a deadline there is no timeout.)
                Err(None) => continue,
            }
        }
    }

    /// [`AsyncPublisher::send`], giving up after `timeout` (any, from zero to
    /// [`Duration::MAX`]): the async [`Publisher::send_timeout`]. The waiter thread wakes the
    /// task at the deadline, so it needs no runtime timer. Cancellation-safe.
    ///
    /// # Errors
    ///
    /// As [`Publisher::send_timeout`].
    pub async fn send_timeout(
        &mut self,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Sent, SendTimeoutError> {
        self.send_until(data, Instant::now().checked_add(timeout))
            .await
            .map_err(|e| e.map_or(SendTimeoutError::Timeout, SendTimeoutError::from))
    }

    /// The one send loop: `Err(None)` once `deadline` (if any) has passed.
    async fn send_until(
        &mut self,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Sent, Option<SendError>> {
        // The first attempt reads no mark: the mark's loads (every subscriber's position, the
        // head) touch lines the subscribers write, a cache miss per message under a stream.
        let mut mark = None;
        loop {
            match self.inner.try_send(data) {
                Ok(s) => {
                    self.park.cancel();
                    return Ok(s);
                }
                Err(e) => {
                    if let Some(e) = e.into_send() {
                        self.park.cancel();
                        return Err(Some(e));
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.park.cancel();
                return Err(None);
            }
            // Full. Only an attempt made after the mark was read may decide to wait for it:
            // progress between that attempt and the wait then shows as a change.
            match mark {
                None => mark = Some(self.inner.space_mark()),
                Some(mark_read) => {
                    SpaceFuture {
                        publ: self,
                        mark: mark_read,
                        deadline,
                    }
                    .await;
                    mark = Some(self.inner.space_mark());
                }
            }
        }
    }

    /// Publishes `data` if there is room now: [`Publisher::try_send`].
    ///
    /// # Errors
    ///
    /// As [`Publisher::try_send`].
    pub fn try_send(&mut self, data: &[u8]) -> Result<Sent, TrySendError> {
        self.inner.try_send(data)
    }
}

/// Waits until the ring may have room, or `deadline` passes. Cancellation-safe.
struct SpaceFuture<'a> {
    publ: &'a mut AsyncPublisher,
    mark: crate::publisher::SpaceMark,
    deadline: Option<Instant>,
}

impl Future for SpaceFuture<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (mark, deadline) = (self.mark, self.deadline);
        let publ = &mut *self.publ;
        let mut slice = publ.inner.sleep_slice();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The caller's next look reports the timeout.
                publ.park.cancel();
                return Poll::Ready(());
            }
            slice = slice.min(left);
        }
        let inner = &publ.inner;
        publ.park
            .poll_wait(cx, slice, || inner.space_changed(&mark))
    }
}

impl Drop for SpaceFuture<'_> {
    fn drop(&mut self) {
        // Dropped while parked: no announcement lingers (after `Ready`, nothing is parked
        // and this does nothing).
        self.publ.park.cancel();
    }
}
