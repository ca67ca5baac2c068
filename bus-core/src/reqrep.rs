//! Request/reply over two buses: a [`Server`] answers requests from any number of
//! [`Client`]s, each of which may have many requests in flight.
//!
//! Clients publish requests on the *requests* bus; the server subscribes to it and publishes
//! each reply on the *replies* bus, which every client subscribes to and filters. Every frame
//! starts with 16 bytes, the client's id and the request's id (u64 little-endian each), then
//! the payload as given: byte-level handles (`shmbus sub`, another language's binding) can
//! read and write them too. Frames shorter than that are skipped and counted
//! ([`Server::malformed`], [`Client::malformed`]).
//!
//! Every client reads every reply. On a *reliable* replies bus a client that keeps its handle
//! without reading (between requests, say) therefore holds the server's replies up once the
//! ring is full, and with them every other client: make the replies bus *lossy*, where such
//! a client is only lapped (it loses replies it was not waiting for; a reply it waits for
//! and loses ends the wait at its deadline with a timeout, or at once with
//! [`RecvError::Lost`] when it has none; laps are counted in [`Client::replies_lost`]), or
//! answer with [`Server::reply_timeout`].
//!
//! A client knows *which* server it talks to: the producers on the replies bus when it
//! connected (their slots and join times). While it waits for a reply it looks at them every
//! 10 ms; when none of them is alive any more it takes the replies already in the ring (for
//! 10 ms at most: a server's last reply comes before its death) and returns
//! [`RequestError::ServerGone`], instead of waiting out its timeout. Their liveness is their slots' OFD locks, which die
//! with their processes, so a server killed with SIGKILL is noticed like one that exits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::{
    Bus, JoinError, Publisher, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Start,
    SubscribeError, Subscriber,
};

/// Bytes before every payload: the client id and the request id.
pub const FRAME_HEADER: usize = 16;

/// How often a waiting client looks at its server's liveness.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(10);

/// A client or server could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No slot on one of the buses.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// Subscribing failed.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// A client found no live producer on the replies bus: no server is up.
    #[error("no server is publishing on the replies bus")]
    NoServer,
    /// The requests and the replies bus are the same file: every client would read its own
    /// requests as replies, and the server its replies as requests.
    #[error("the requests and the replies bus are the same file (they must be two buses)")]
    SameBus,
    /// The process could not start the waiter thread of the async handles.
    #[error("the async waiter thread could not be started")]
    Thread,
}

/// A request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Every server this client connected to has died (its process is gone, whatever the
    /// timeout said). Requests in flight get no reply; connect again when a server is up.
    #[error("the server is gone (its process died)")]
    ServerGone,
    /// No reply within the timeout, while the server lives.
    #[error("no reply within the timeout")]
    Timeout,
    /// The request is larger than the requests bus takes (after the 16-byte frame header),
    /// or publishing it failed.
    #[error("sending the request: {0}")]
    Send(#[from] SendError),
    /// Receiving replies failed: a corrupt record, or, on a lossy replies bus and only for a
    /// wait without a deadline, a lap that may have taken the reply waited for.
    #[error("receiving replies: {0}")]
    Recv(#[from] RecvError),
}

/// A request as the server sees it: who asked, which request, and the payload (borrowed from
/// the server's buffer until the next receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The asking client's id.
    pub client: u64,
    /// The request's id, unique per client.
    pub id: u64,
    /// The payload.
    pub data: &'a [u8],
}

/// Where a reply goes: the client and request ids of a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyTo {
    /// The client.
    pub client: u64,
    /// The request.
    pub id: u64,
}

impl Request<'_> {
    /// Where the reply to this request goes.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            client: self.client,
            id: self.id,
        }
    }
}

fn split(frame: &[u8]) -> Option<(u64, u64, &[u8])> {
    let client = u64::from_le_bytes(frame.get(..8)?.try_into().ok()?);
    let id = u64::from_le_bytes(frame.get(8..16)?.try_into().ok()?);
    Some((client, id, &frame[FRAME_HEADER..]))
}

fn frame_into(out: &mut Vec<u8>, client: u64, id: u64, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&client.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(data);
}

/// Answers requests. It subscribes to the requests bus at `Start::Latest` (at
/// [`Server::with_start`], any start) and holds a producer slot on the replies bus, which is
/// how clients know it lives.
pub struct Server {
    requests: Subscriber,
    replies: Publisher,
    buf: Vec<u8>,
    frame: Vec<u8>,
    malformed: u64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("requests", &self.requests)
            .field("replies", &self.replies)
            .finish()
    }
}

impl Server {
    /// A server reading `requests` and answering on `replies`.
    ///
    /// # Errors
    ///
    /// No slot on one of the buses.
    pub fn new(requests: &Bus, replies: &Bus) -> Result<Server, ConnectError> {
        Server::with_start(requests, replies, Start::Latest)
    }

    /// As [`Server::new`], reading requests from `start` (`Oldest`: also those sent before
    /// the server was up, while the bus retains them).
    ///
    /// # Errors
    ///
    /// As [`Server::new`].
    pub fn with_start(requests: &Bus, replies: &Bus, start: Start) -> Result<Server, ConnectError> {
        check_two_buses(requests, replies)?;
        Ok(Server {
            requests: requests.subscribe(start)?,
            replies: replies.publisher()?,
            buf: Vec::new(),
            frame: Vec::new(),
            malformed: 0,
        })
    }

    /// The next request, waiting at most `timeout`. Frames too short to be requests are
    /// skipped (see [`Server::malformed`]).
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Request<'_>, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            self.requests.recv_timeout(&mut self.buf, left)?;
            if self.buf.len() >= FRAME_HEADER {
                break;
            }
            self.malformed += 1;
        }
        let (client, id, data) = split(&self.buf).expect("length checked above");
        Ok(Request { client, id, data })
    }

    /// Sends the reply to a request. On a reliable replies bus it waits while the ring is
    /// full (see the module doc: a client that does not read holds it up).
    ///
    /// # Errors
    ///
    /// As [`Publisher::send`] (a reply larger than the replies bus takes).
    pub fn reply(&mut self, to: ReplyTo, data: &[u8]) -> Result<(), SendError> {
        frame_into(&mut self.frame, to.client, to.id, data);
        self.replies.send(&self.frame)?;
        Ok(())
    }

    /// [`Server::reply`], waiting at most `timeout` for room on a reliable replies bus: a
    /// server that must not be held up by a client that stopped reading.
    ///
    /// # Errors
    ///
    /// As [`Publisher::send_timeout`]: `Timeout` when there was no room in time (the reply
    /// was not sent).
    pub fn reply_timeout(
        &mut self,
        to: ReplyTo,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        frame_into(&mut self.frame, to.client, to.id, data);
        self.replies.send_timeout(&self.frame, timeout)?;
        Ok(())
    }

    /// Serves until `handle` returns `false` or receiving fails: each request's reply is what
    /// `handle` writes into the buffer it is given (cleared before each call), sent with
    /// [`Server::reply`].
    ///
    /// # Errors
    ///
    /// A failed receive (lossy requests bus, corrupt record) or reply.
    pub fn serve(
        &mut self,
        mut handle: impl FnMut(Request<'_>, &mut Vec<u8>) -> bool,
    ) -> Result<(), RequestError> {
        let mut out = Vec::new();
        loop {
            let req = match self.recv_timeout(Duration::from_secs(3600)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Lost(n)) => return Err(RecvError::Lost(n).into()),
                Err(RecvTimeoutError::Corrupt { position, problem }) => {
                    return Err(RecvError::Corrupt { position, problem }.into())
                }
                Err(RecvTimeoutError::Forked) => return Err(RecvError::Forked.into()),
            };
            out.clear();
            let to = req.reply_to();
            let go_on = handle(req, &mut out);
            self.reply(to, &out)?;
            if !go_on {
                return Ok(());
            }
        }
    }

    /// Frames skipped for being shorter than the 16-byte header.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// The server slots a client watches: producers on the replies bus when it connected.
#[derive(Debug, Clone)]
struct ServerWatch {
    bus: Bus,
    /// (slot offset, pid, join time) of each.
    slots: Vec<(u64, u32, u64)>,
    last_look: Instant,
    /// Seen dead once: dead for good (a new server is another server).
    gone: bool,
}

impl ServerWatch {
    fn new(replies: &Bus) -> Result<ServerWatch, ConnectError> {
        let seg = &replies.shared.seg;
        let slots: Vec<_> = (0..seg.config.max_producers)
            .map(|i| seg.config.producer_slot_offset(i))
            .filter(|&off| {
                seg.slot(off).state_acquire() == crate::layout::SLOT_ACTIVE
                    && crate::registry::is_alive(seg, off)
            })
            .map(|off| {
                let s = seg.slot(off);
                (off, s.pid_relaxed(), s.joined_relaxed())
            })
            .collect();
        if slots.is_empty() {
            return Err(ConnectError::NoServer);
        }
        Ok(ServerWatch {
            bus: replies.clone(),
            slots,
            last_look: Instant::now(),
            gone: false,
        })
    }

    /// Whether one of the servers still lives: its slot is still the one it joined (same pid
    /// and join time, still active) and its liveness lock is held.
    fn alive(&self) -> bool {
        let seg = &self.bus.shared.seg;
        self.slots.iter().any(|&(off, pid, joined)| {
            let s = seg.slot(off);
            s.state_acquire() == crate::layout::SLOT_ACTIVE
                && s.pid_relaxed() == pid
                && s.joined_relaxed() == joined
                && crate::registry::is_alive(seg, off)
        })
    }

    /// At most every [`LIVENESS_INTERVAL`]: `Err(ServerGone)` if no server lives.
    fn check(&mut self) -> Result<(), RequestError> {
        if !self.gone && self.last_look.elapsed() >= LIVENESS_INTERVAL {
            self.last_look = Instant::now();
            self.gone = !self.alive();
        }
        if self.gone {
            Err(RequestError::ServerGone)
        } else {
            Ok(())
        }
    }
}

/// A fresh client id: random, so that clients in any process never collide.
fn client_id() -> u64 {
    let mut b = [0u8; 8];
    // A failed getrandom leaves zeros; mix in the pid and the time so ids still differ.
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    u64::from_le_bytes(b) ^ (u64::from(std::process::id()) << 32) ^ t
}

/// A client's bookkeeping, shared by [`Client`] and `AsyncClient`: its id, the requests in
/// flight, replies that came while another was awaited, and its server's liveness.
struct Book {
    id: u64,
    next: u64,
    watch: ServerWatch,
    frame: Vec<u8>,
    /// Requests sent and not answered yet, with the replies bus's tail position just before
    /// each was sent (its reply can only be at or after it). A reply to anything else is
    /// dropped: a request that timed out, say.
    outstanding: HashMap<u64, u64>,
    /// Replies that arrived while `request` waited for another one.
    stash: HashMap<u64, Vec<u8>>,
    /// The request an async `request` is waiting for: still set when the next call comes,
    /// that future was dropped, and the request is forgotten.
    awaiting: Option<u64>,
    /// Reply frames too short to carry the header.
    malformed: u64,
    /// Replies lost (lossy replies bus: this client was lapped).
    lost: u64,
}

/// One wait for replies.
#[derive(Default)]
struct Wait {
    /// The request `request` waits for (`None`: `recv_reply`, any of them).
    want: Option<u64>,
    /// No deadline: a lap that may have taken the awaited reply ends the wait, which would
    /// otherwise never end.
    unbounded: bool,
    /// Set when the server was first seen dead: from then on only what is already in the
    /// ring is read, until this instant at most.
    last_pass_until: Option<Instant>,
    /// The same once the deadline has passed: a reply already in the ring behind others'
    /// is still taken, and a stream of others' replies holds the wait this long at most.
    overtime_until: Option<Instant>,
}

impl Wait {
    fn new(want: Option<u64>, deadline: Option<Instant>) -> Wait {
        Wait {
            want,
            unbounded: deadline.is_none(),
            ..Wait::default()
        }
    }

    /// How long the next receive may wait: on a last pass, not at all.
    fn slice(&self, left: Duration) -> Duration {
        if self.last_pass_until.is_some() || self.overtime_until.is_some() {
            Duration::ZERO
        } else {
            left.min(LIVENESS_INTERVAL)
        }
    }

    /// On a last pass (started now if not yet), whether it is over: `drained` (the
    /// receive found nothing) or its time is up.
    fn pass_over(until: &mut Option<Instant>, drained: bool) -> bool {
        let now = Instant::now();
        let end = *until.get_or_insert(now + LIVENESS_INTERVAL);
        drained || now >= end
    }
}

impl Book {
    fn new(replies: &Bus) -> Result<Book, ConnectError> {
        Ok(Book {
            id: client_id(),
            next: 0,
            watch: ServerWatch::new(replies)?,
            frame: Vec::new(),
            outstanding: HashMap::new(),
            stash: HashMap::new(),
            awaiting: None,
            malformed: 0,
            lost: 0,
        })
    }

    /// Forgets the request of an async `request` that was dropped before its reply came.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    fn forget_abandoned(&mut self) {
        if let Some(id) = self.awaiting.take() {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: u64) -> bool {
        let waiting = self.outstanding.remove(&id).is_some();
        let stashed = self.stash.remove(&id).is_some();
        waiting || stashed
    }

    /// Requests sent and not answered (or forgotten) yet.
    fn in_flight(&self) -> usize {
        let abandoned = self
            .awaiting
            .is_some_and(|id| self.outstanding.contains_key(&id));
        self.outstanding.len() + self.stash.len() - usize::from(abandoned)
    }

    /// Frames the next request in `self.frame`; returns its id and the replies bus's tail
    /// now (both for [`sent`]).
    ///
    /// [`sent`]: Book::sent
    fn frame_request(&mut self, data: &[u8]) -> Result<(u64, u64), RequestError> {
        self.watch.check()?;
        frame_into(&mut self.frame, self.id, self.next, data);
        Ok((self.next, crate::ring::latest(&self.watch.bus.shared.seg).0))
    }

    fn sent(&mut self, (id, replies_tail): (u64, u64)) {
        self.next += 1;
        self.outstanding.insert(id, replies_tail);
    }

    /// What a send of the framed request that failed (waiting at most a liveness interval,
    /// `left` before it) means: `Err` ends the send, `Ok` tries again.
    fn on_send_fail(&mut self, e: SendTimeoutError, left: Duration) -> Result<(), RequestError> {
        match e.into_send() {
            Some(e) => Err(e.into()),
            None => {
                // No room yet: a dead server will not make any, and a deadline ends the wait.
                self.watch.check()?;
                if left.is_zero() {
                    return Err(RequestError::Timeout);
                }
                Ok(())
            }
        }
    }

    /// A reply kept for `recv_reply`.
    fn stashed(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let id = *self.stash.keys().next()?;
        *buf = self.stash.remove(&id)?;
        Some(id)
    }

    /// What one receive of the replies bus (waiting at most [`Wait::slice`]) means:
    /// `Some(Ok(id))` a reply to one of ours (in `buf`), `Some(Err)` the end of the wait,
    /// `None` wait on. `left` was the time left before that receive, `now_at` the
    /// subscriber's position after it.
    fn on_recv(
        &mut self,
        r: Result<crate::Message, RecvTimeoutError>,
        left: Duration,
        buf: &mut Vec<u8>,
        wait: &mut Wait,
        now_at: u64,
    ) -> Option<Result<u64, RequestError>> {
        let drained = match r {
            Ok(_) => {
                match split(&self.frame) {
                    Some((client, id, data))
                        if client == self.id && self.outstanding.remove(&id).is_some() =>
                    {
                        buf.clear();
                        buf.extend_from_slice(data);
                        return Some(Ok(id));
                    }
                    Some(_) => {}
                    None => self.malformed += 1,
                }
                // Another client's reply (or a forgotten one of ours): the deadline and the
                // server's liveness still count, or a stream of them would hold us past both.
                false
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Lost(n)) => {
                // Lapped on a lossy replies bus. The lost replies are most likely other
                // clients'; if ours was among them, a wait with a deadline ends in a timeout.
                self.lost = self.lost.saturating_add(n);
                if wait.unbounded {
                    // Without one it would never end: a request whose reply may have been
                    // in the lost range (it was sent before the position we resumed at)
                    // is given up as lost.
                    let maybe_lost = |sent_at: &u64| *sent_at < now_at;
                    let gone: Vec<u64> = match wait.want {
                        Some(w) => self
                            .outstanding
                            .get(&w)
                            .filter(|t| maybe_lost(t))
                            .map(|_| w)
                            .into_iter()
                            .collect(),
                        None => self
                            .outstanding
                            .iter()
                            .filter(|(_, t)| maybe_lost(t))
                            .map(|(&id, _)| id)
                            .collect(),
                    };
                    if !gone.is_empty() {
                        for id in gone {
                            self.outstanding.remove(&id);
                        }
                        return Some(Err(RecvError::Lost(n).into()));
                    }
                }
                false
            }
            Err(RecvTimeoutError::Corrupt { position, problem }) => {
                return Some(Err(RecvError::Corrupt { position, problem }.into()))
            }
            Err(RecvTimeoutError::Forked) => return Some(Err(RecvError::Forked.into())),
        };
        if let Err(gone) = self.watch.check() {
            // A server commits its last replies before it dies: take what is already in the
            // ring (for a liveness interval at most) before saying it is gone. (The first
            // look after it was seen dead always happens: the receive that found nothing
            // may have come just before its last reply.)
            let first = wait.last_pass_until.is_none();
            let over = Wait::pass_over(&mut wait.last_pass_until, drained);
            return (!first && over).then_some(Err(gone));
        }
        if left.is_zero() {
            // Past the deadline, the replies already in the ring are still looked through.
            return Wait::pass_over(&mut wait.overtime_until, drained)
                .then_some(Err(RequestError::Timeout));
        }
        None
    }

    /// What `request` does with a reply that came for request `got` while it waits for
    /// `want`: `true` when it is the one.
    fn settle(
        &mut self,
        want: u64,
        got: Result<u64, RequestError>,
        buf: &mut Vec<u8>,
    ) -> Result<bool, RequestError> {
        match got {
            Ok(id) if id == want => Ok(true),
            Ok(id) => {
                self.stash.insert(id, std::mem::take(buf));
                Ok(false)
            }
            Err(e) => {
                self.outstanding.remove(&want);
                Err(e)
            }
        }
    }
}

/// Refuses one bus for both roles ([`ConnectError::SameBus`]): the same file, however it was
/// opened.
fn check_two_buses(requests: &Bus, replies: &Bus) -> Result<(), ConnectError> {
    use std::os::unix::fs::MetadataExt;
    let same = std::sync::Arc::ptr_eq(&requests.shared, &replies.shared)
        || match (
            requests.shared.seg.file.metadata(),
            replies.shared.seg.file.metadata(),
        ) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
    if same {
        return Err(ConnectError::SameBus);
    }
    Ok(())
}

/// Time left until `deadline` (`None`: no deadline).
fn left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// Sends requests and waits for their replies.
///
/// ```no_run
/// # use bus_core::{Bus, Client};
/// # use std::time::Duration;
/// let (requests, replies) = (Bus::open("/dev/shm/shmbus/rq.bus")?, Bus::open("/dev/shm/shmbus/rp.bus")?);
/// let mut client = Client::new(&requests, &replies)?;   // NoServer if none is up
/// let mut reply = Vec::new();
/// client.request(b"ping", &mut reply, Duration::from_secs(1))?;
/// // Many in flight: send, then collect in any order.
/// let a = client.send_request(b"a")?;
/// let b = client.send_request(b"b")?;
/// let first = client.recv_reply(&mut reply, Duration::from_secs(1))?;
/// assert!(first == a || first == b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client {
    book: Book,
    requests: Publisher,
    replies: Subscriber,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.book.id)
            .field("next", &self.book.next)
            .finish()
    }
}

impl Client {
    /// A client of the server that publishes on `replies` (subscribed before any request is
    /// sent, so no reply is missed).
    ///
    /// # Errors
    ///
    /// [`ConnectError::NoServer`] when no live producer is on the replies bus; no slot.
    pub fn new(requests: &Bus, replies: &Bus) -> Result<Client, ConnectError> {
        check_two_buses(requests, replies)?;
        let replies_sub = replies.subscribe(Start::Latest)?;
        Ok(Client {
            book: Book::new(replies)?,
            requests: requests.publisher()?,
            replies: replies_sub,
        })
    }

    /// This client's id (what the server sees in [`Request::client`]).
    pub fn id(&self) -> u64 {
        self.book.id
    }

    /// Sends a request without waiting for its reply; returns its id. While the requests
    /// ring is full it waits for room, looking at the server's liveness every 10 ms.
    ///
    /// # Errors
    ///
    /// [`RequestError::ServerGone`] when the server is (or, while waiting for room, is seen)
    /// dead; a failed publish.
    pub fn send_request(&mut self, data: &[u8]) -> Result<u64, RequestError> {
        self.send_until(data, None)
    }

    /// Sends a request, waiting for room until `deadline` at most.
    fn send_until(&mut self, data: &[u8], deadline: Option<Instant>) -> Result<u64, RequestError> {
        let framed = self.book.frame_request(data)?;
        loop {
            let left = left(deadline);
            match self
                .requests
                .send_timeout(&self.book.frame, left.min(LIVENESS_INTERVAL))
            {
                Ok(_) => break,
                Err(e) => self.book.on_send_fail(e, left)?,
            }
        }
        self.book.sent(framed);
        Ok(framed.0)
    }

    /// Requests sent and not answered yet (replies kept for [`Client::recv_reply`] count
    /// until they are taken).
    pub fn in_flight(&self) -> usize {
        self.book.in_flight()
    }

    /// Stops waiting for request `id`: its reply, should it come (or have come), is dropped.
    /// False if it was not in flight.
    pub fn forget(&mut self, id: u64) -> bool {
        self.book.forget(id)
    }

    /// Reply frames skipped for being shorter than the 16-byte header.
    pub fn malformed(&self) -> u64 {
        self.book.malformed
    }

    /// Replies this client lost to being lapped on a lossy replies bus (most of them, as a
    /// rule, other clients' replies).
    pub fn replies_lost(&self) -> u64 {
        self.book.lost
    }

    /// The next reply to any of this client's requests, into `buf`; returns its request id.
    ///
    /// # Errors
    ///
    /// [`RequestError::ServerGone`] once the server is seen dead (within about 20 ms);
    /// [`RequestError::Timeout`]; a failed receive.
    pub fn recv_reply(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<u64, RequestError> {
        if let Some(id) = self.book.stashed(buf) {
            return Ok(id);
        }
        let deadline = Instant::now().checked_add(timeout);
        self.next_reply(buf, Wait::new(None, deadline), deadline)
    }

    fn next_reply(
        &mut self,
        buf: &mut Vec<u8>,
        mut wait: Wait,
        deadline: Option<Instant>,
    ) -> Result<u64, RequestError> {
        loop {
            let left = left(deadline);
            let r = self
                .replies
                .recv_timeout(&mut self.book.frame, wait.slice(left));
            let at = self.replies.position();
            if let Some(r) = self.book.on_recv(r, left, buf, &mut wait, at) {
                return r;
            }
        }
    }

    /// Sends a request and waits for its reply (into `buf`); `timeout` bounds both, the wait
    /// for room to send included. Replies to other requests of this client that arrive
    /// meanwhile are kept for [`Client::recv_reply`]. A request that times out is forgotten:
    /// its reply, should it come later, is dropped.
    ///
    /// # Errors
    ///
    /// As [`Client::send_request`] and [`Client::recv_reply`].
    pub fn request(
        &mut self,
        data: &[u8],
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RequestError> {
        let deadline = Instant::now().checked_add(timeout);
        let want = self.send_until(data, deadline)?;
        loop {
            let got = self.next_reply(buf, Wait::new(Some(want), deadline), deadline);
            if self.book.settle(want, got, buf)? {
                return Ok(());
            }
        }
    }
}

#[cfg(feature = "async")]
pub use self::nonblocking::AsyncClient;

#[cfg(feature = "async")]
mod nonblocking {
    use super::*;
    use crate::{AsyncPublisher, AsyncSubscriber};

    /// [`Client`] for async programs: the same frames, ids and liveness rule.
    pub struct AsyncClient {
        book: Book,
        requests: AsyncPublisher,
        replies: AsyncSubscriber,
    }

    impl std::fmt::Debug for AsyncClient {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AsyncClient")
                .field("id", &self.book.id)
                .finish()
        }
    }

    impl AsyncClient {
        /// As [`Client::new`].
        ///
        /// # Errors
        ///
        /// As [`Client::new`], and [`ConnectError::Thread`].
        pub fn new(requests: &Bus, replies: &Bus) -> Result<AsyncClient, ConnectError> {
            check_two_buses(requests, replies)?;
            let replies_sub = replies
                .subscribe(Start::Latest)?
                .into_async()
                .map_err(|_| ConnectError::Thread)?;
            Ok(AsyncClient {
                book: Book::new(replies)?,
                requests: requests
                    .publisher()?
                    .into_async()
                    .map_err(|_| ConnectError::Thread)?,
                replies: replies_sub,
            })
        }

        /// This client's id.
        pub fn id(&self) -> u64 {
            self.book.id
        }

        /// As [`Client::in_flight`] (a dropped `request` does not count).
        pub fn in_flight(&self) -> usize {
            self.book.in_flight()
        }

        /// As [`Client::forget`].
        pub fn forget(&mut self, id: u64) -> bool {
            self.book.forget_abandoned();
            self.book.forget(id)
        }

        /// As [`Client::malformed`].
        pub fn malformed(&self) -> u64 {
            self.book.malformed
        }

        /// As [`Client::replies_lost`].
        pub fn replies_lost(&self) -> u64 {
            self.book.lost
        }

        /// As [`Client::send_request`], waiting for room without blocking the thread.
        ///
        /// # Errors
        ///
        /// As [`Client::send_request`].
        pub async fn send_request(&mut self, data: &[u8]) -> Result<u64, RequestError> {
            self.book.forget_abandoned();
            self.send_until(data, None).await
        }

        async fn send_until(
            &mut self,
            data: &[u8],
            deadline: Option<Instant>,
        ) -> Result<u64, RequestError> {
            let framed = self.book.frame_request(data)?;
            loop {
                let left = left(deadline);
                match self
                    .requests
                    .send_timeout(&self.book.frame, left.min(LIVENESS_INTERVAL))
                    .await
                {
                    Ok(_) => break,
                    Err(e) => self.book.on_send_fail(e, left)?,
                }
            }
            self.book.sent(framed);
            Ok(framed.0)
        }

        /// As [`Client::recv_reply`].
        ///
        /// # Errors
        ///
        /// As [`Client::recv_reply`].
        pub async fn recv_reply(
            &mut self,
            buf: &mut Vec<u8>,
            timeout: Duration,
        ) -> Result<u64, RequestError> {
            self.book.forget_abandoned();
            if let Some(id) = self.book.stashed(buf) {
                return Ok(id);
            }
            let deadline = Instant::now().checked_add(timeout);
            self.next_reply(buf, Wait::new(None, deadline), deadline)
                .await
        }

        async fn next_reply(
            &mut self,
            buf: &mut Vec<u8>,
            mut wait: Wait,
            deadline: Option<Instant>,
        ) -> Result<u64, RequestError> {
            loop {
                let left = left(deadline);
                let r = self
                    .replies
                    .recv_timeout(&mut self.book.frame, wait.slice(left))
                    .await;
                let at = self.replies.get_ref().position();
                if let Some(r) = self.book.on_recv(r, left, buf, &mut wait, at) {
                    return r;
                }
            }
        }

        /// As [`Client::request`]. Cancellation-safe in the sense of the async handles: a
        /// request dropped before it was sent is not sent; one dropped after it was sent is
        /// forgotten (by the next call on this client), so its reply, should it come, is
        /// skipped.
        ///
        /// # Errors
        ///
        /// As [`Client::request`].
        pub async fn request(
            &mut self,
            data: &[u8],
            buf: &mut Vec<u8>,
            timeout: Duration,
        ) -> Result<(), RequestError> {
            self.book.forget_abandoned();
            let deadline = Instant::now().checked_add(timeout);
            let want = self.send_until(data, deadline).await?;
            // Set until this call returns: a dropped future leaves it for the next call.
            self.book.awaiting = Some(want);
            loop {
                let got = self
                    .next_reply(buf, Wait::new(Some(want), deadline), deadline)
                    .await;
                match self.book.settle(want, got, buf) {
                    Ok(false) => {}
                    done => {
                        self.book.awaiting = None;
                        return done.map(|_| ());
                    }
                }
            }
        }
    }
}
