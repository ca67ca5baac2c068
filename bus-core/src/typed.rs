//! Typed messages: serde values encoded straight into a loan, decoded from the record.
//!
//! The default codec is [`Postcard`] (postcard 1.x): compact, maintained, with a documented
//! and stable wire format. `Bincode` (bincode 2.0.1, standard configuration: little-endian
//! varints; feature `bincode`) is there for buses shared with programs that already speak it;
//! bincode has stopped releasing (2.0.1 is final, and pinned). Choose it with
//! `TypedPublisher::<T, Bincode>`. Both sides of a bus must use the same codec.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::typeinfo::{self, TypeError};
use crate::{
    CommitError, Publisher, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sent,
    Subscriber, TryRecvError, TrySendError,
};

/// A serde encoding of messages.
pub trait Codec {
    /// Short name, for diagnostics.
    const NAME: &'static str;
    /// Exact encoded size of `value`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Encode`] if the value cannot be encoded.
    fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError>;
    /// Encodes `value` into `buf` (exactly `encoded_len` bytes); returns the bytes written.
    ///
    /// # Errors
    ///
    /// [`CodecError::Encode`].
    fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<usize, CodecError>;
    /// Decodes a value that must use every byte of `bytes`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Decode`] for bytes that are not a valid encoding (any bytes are
    /// handled), [`CodecError::TrailingBytes`] if the value ends early.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// A value could not be encoded or decoded. Returned inside [`TypedSendError`] and
/// [`TypedRecvError`], and by [`Codec`] methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value cannot be encoded (for example a map with non-string keys in a format that
    /// needs them, or a sequence of unknown length).
    #[error("{codec} encode: {message}")]
    Encode {
        /// Codec name.
        codec: &'static str,
        /// The codec's message.
        message: String,
    },
    /// The bytes are not a valid encoding of the type.
    #[error("{codec} decode: {message}")]
    Decode {
        /// Codec name.
        codec: &'static str,
        /// The codec's message.
        message: String,
    },
    /// The value decoded from the first `used` bytes of a `len`-byte message: the sender used
    /// another type or codec.
    #[error("{codec} decode: value ended after {used} of {len} bytes")]
    TrailingBytes {
        /// Codec name.
        codec: &'static str,
        /// Bytes the value used.
        used: usize,
        /// Bytes in the message.
        len: usize,
    },
}

/// bincode 2.0.1, standard configuration (little-endian varints). Feature `bincode`.
///
/// Decoding refuses a value that would claim more than [`BINCODE_DECODE_LIMIT`] bytes: without
/// a limit, bincode allocates whatever length a (hostile or corrupt) message announces before
/// checking it against the input, and a huge one aborts the process.
#[cfg(feature = "bincode")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// Most bytes one bincode-decoded value may claim (256 MiB).
#[cfg(feature = "bincode")]
pub const BINCODE_DECODE_LIMIT: usize = 256 << 20;

#[cfg(feature = "bincode")]
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BINCODE_DECODE_LIMIT>()
}

/// postcard 1.x: compact, stable, maintained. The default codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

#[cfg(feature = "bincode")]
impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
        let mut w = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(value, &mut w, bincode_config()).map_err(|e| {
            CodecError::Encode {
                codec: Self::NAME,
                message: e.to_string(),
            }
        })?;
        Ok(w.bytes_written)
    }

    fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<usize, CodecError> {
        bincode::serde::encode_into_slice(value, buf, bincode_config()).map_err(|e| {
            CodecError::Encode {
                codec: Self::NAME,
                message: e.to_string(),
            }
        })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (v, used) =
            bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| {
                CodecError::Decode {
                    codec: Self::NAME,
                    message: e.to_string(),
                }
            })?;
        if used != bytes.len() {
            return Err(CodecError::TrailingBytes {
                codec: Self::NAME,
                used,
                len: bytes.len(),
            });
        }
        Ok(v)
    }
}

impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
        postcard::experimental::serialized_size(value).map_err(|e| CodecError::Encode {
            codec: Self::NAME,
            message: e.to_string(),
        })
    }

    fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<usize, CodecError> {
        postcard::to_slice(value, buf)
            .map(|s| s.len())
            .map_err(|e| CodecError::Encode {
                codec: Self::NAME,
                message: e.to_string(),
            })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| CodecError::Decode {
            codec: Self::NAME,
            message: e.to_string(),
        })?;
        if !rest.is_empty() {
            return Err(CodecError::TrailingBytes {
                codec: Self::NAME,
                used: bytes.len() - rest.len(),
                len: bytes.len(),
            });
        }
        Ok(v)
    }
}

/// A typed message could not be sent. Returned by [`TypedPublisher`] methods, with `E` the
/// error of the byte-level call underneath: [`SendError`] for `send`, [`TrySendError`] for
/// `try_send`, [`SendTimeoutError`] for `send_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedSendError<E = SendError> {
    /// The byte-level send failed (see `E`).
    #[error("{0}")]
    Send(E),
    /// The value could not be encoded; nothing was published.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl<E> TypedSendError<E> {
    fn send(e: impl Into<E>) -> Self {
        TypedSendError::Send(e.into())
    }
}

/// A typed message could not be received. Returned by [`TypedSubscriber`] methods, with `E`
/// the error of the byte-level call underneath: [`RecvError`] for `recv`, [`TryRecvError`]
/// for `try_recv`, [`RecvTimeoutError`] for `recv_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedRecvError<E = RecvError> {
    /// The byte-level receive failed (see `E`).
    #[error("{0}")]
    Recv(E),
    /// The message with sequence `seq` did not decode as this type; it is consumed, and the
    /// next call goes on with the next message.
    #[error("message {seq}: {error}")]
    Decode {
        /// Sequence of the message.
        seq: u64,
        /// The codec's error.
        error: CodecError,
    },
}

/// A decoded message with its place in the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed<T> {
    /// The value.
    pub value: T,
    /// Bus-wide sequence number.
    pub seq: u64,
    /// Absolute position of the record.
    pub position: u64,
}

/// Marks the value and codec types without owning either (keeps the handles `Send`).
type Marker<T, C> = PhantomData<(fn() -> Box<T>, C)>;

/// Publishes values of `T`, encoded by `C` directly into the ring (no intermediate buffer).
pub struct TypedPublisher<T: ?Sized, C: Codec = Postcard> {
    inner: Publisher,
    _types: Marker<T, C>,
}

impl<T: Serialize + DeserializeOwned, C: Codec> TypedPublisher<T, C> {
    /// Wraps a byte publisher, after checking that its bus carries `T` in codec `C`: the
    /// first typed handle of a bus records its type in the bus header, and every later one
    /// must match it (see [`crate::BusType`] for what makes two types the same).
    ///
    /// # Errors
    ///
    /// [`TypeError::Mismatch`] naming both types when the bus carries another; a corrupt
    /// type record; the control lock.
    pub fn new(inner: Publisher) -> Result<Self, TypeError> {
        typeinfo::claim(&inner.shared, &typeinfo::type_of::<T>(C::NAME))?;
        Ok(Self::new_unchecked(inner))
    }
}

impl<T: Serialize + ?Sized, C: Codec> TypedPublisher<T, C> {
    /// Wraps a byte publisher without recording or checking the bus's type: for values whose
    /// type has no owned, deserializable form (`str`, slices), or for relays that know the
    /// bytes are right. Typed subscribers still check what the bus records.
    pub fn new_unchecked(inner: Publisher) -> Self {
        TypedPublisher {
            inner,
            _types: PhantomData,
        }
    }

    /// The byte publisher underneath.
    pub fn into_inner(self) -> Publisher {
        self.inner
    }

    fn send_with<E, L>(
        &mut self,
        value: &T,
        loan: impl FnOnce(&mut Publisher, usize) -> Result<crate::Loan<'_>, L>,
    ) -> Result<Sent, TypedSendError<E>>
    where
        L: Into<E>,
        CommitError: Into<E>,
    {
        let len = C::encoded_len(value)?;
        let mut loan = loan(&mut self.inner, len).map_err(TypedSendError::send)?;
        // An encode error drops the loan uncommitted: abandoned, never delivered.
        let written = C::encode(value, &mut loan)?;
        if written != len {
            // A value that changed between the two passes (a field behind a lock or an
            // atomic), or a codec whose size is not exact: committing would publish stale
            // ring bytes after the value, which no subscriber decodes. Abandoned instead.
            return Err(CodecError::Encode {
                codec: C::NAME,
                message: format!(
                    "the value encoded to {written} bytes where its size pass said {len} \
                     (it changed between the two, or the codec's size is not exact); \
                     nothing was published"
                ),
            }
            .into());
        }
        loan.commit().map_err(TypedSendError::send)
    }

    /// Publishes `value`, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// [`TypedSendError::Codec`] if it does not encode; [`TypedSendError::Send`] as
    /// [`Publisher::send`].
    pub fn send(&mut self, value: &T) -> Result<Sent, TypedSendError<SendError>> {
        self.send_with(value, |p, len| p.loan(len))
    }

    /// Publishes `value` if there is room now.
    ///
    /// # Errors
    ///
    /// As [`TypedPublisher::send`], and `Send(TrySendError::Full)`.
    pub fn try_send(&mut self, value: &T) -> Result<Sent, TypedSendError<TrySendError>> {
        self.send_with(value, |p, len| p.try_loan(len))
    }

    /// Publishes `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`TypedPublisher::send`], and `Send(SendTimeoutError::Timeout)`.
    pub fn send_timeout(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<Sent, TypedSendError<SendTimeoutError>> {
        self.send_with(value, |p, len| p.loan_timeout(len, timeout))
    }
}

impl<T: ?Sized, C: Codec> std::fmt::Debug for TypedPublisher<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedPublisher")
            .field("type", &std::any::type_name::<T>())
            .field("codec", &C::NAME)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T, C: Codec> std::fmt::Debug for TypedSubscriber<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedSubscriber")
            .field("type", &std::any::type_name::<T>())
            .field("codec", &C::NAME)
            .field("inner", &self.inner)
            .finish()
    }
}

/// Receives values of `T`, decoded by `C` from the record in place (reliable mode) or from a
/// reused buffer (lossy mode).
pub struct TypedSubscriber<T, C: Codec = Postcard> {
    inner: Subscriber,
    _types: Marker<T, C>,
}

impl<T: DeserializeOwned, C: Codec> TypedSubscriber<T, C> {
    /// Wraps a byte subscriber, after checking that its bus carries `T` in codec `C` (as
    /// [`TypedPublisher::new`]; the first typed handle, publisher or subscriber, records the
    /// type).
    ///
    /// # Errors
    ///
    /// As [`TypedPublisher::new`].
    pub fn new(inner: Subscriber) -> Result<Self, TypeError> {
        typeinfo::claim(&inner.shared, &typeinfo::type_of::<T>(C::NAME))?;
        Ok(TypedSubscriber {
            inner,
            _types: PhantomData,
        })
    }

    /// The byte subscriber underneath (for `position`, counters, wait strategy).
    pub fn inner(&mut self) -> &mut Subscriber {
        &mut self.inner
    }

    fn decode<E>(sample: Result<crate::Sample<'_>, E>) -> Result<Typed<T>, TypedRecvError<E>> {
        let sample = sample.map_err(TypedRecvError::Recv)?;
        let value = C::decode(&sample).map_err(|error| TypedRecvError::Decode {
            seq: sample.seq,
            error,
        })?;
        Ok(Typed {
            value,
            seq: sample.seq,
            position: sample.position,
        })
    }

    /// Receives the next value, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`TypedRecvError::Decode`] for a message that is not a `T`; otherwise as
    /// [`Subscriber::recv`].
    pub fn recv(&mut self) -> Result<Typed<T>, TypedRecvError<RecvError>> {
        Self::decode(self.inner.recv_ref())
    }

    /// Receives the next value if one is there now.
    ///
    /// # Errors
    ///
    /// As [`TypedSubscriber::recv`], and `Recv(TryRecvError::Empty)`.
    pub fn try_recv(&mut self) -> Result<Typed<T>, TypedRecvError<TryRecvError>> {
        Self::decode(self.inner.try_recv_ref())
    }

    /// Receives the next value, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`TypedSubscriber::recv`], and `Recv(RecvTimeoutError::Timeout)`.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Typed<T>, TypedRecvError<RecvTimeoutError>> {
        Self::decode(self.inner.recv_ref_timeout(timeout))
    }
}
