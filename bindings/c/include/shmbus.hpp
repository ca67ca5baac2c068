// shmbus.hpp - a header-only C++17 RAII wrapper of shmbus.h.
//
//   shmbus::Bus bus = shmbus::Bus::open_or_create("/dev/shm/ticks.bus",
//                                                 shmbus::Options().capacity(16 << 20));
//   shmbus::Publisher pub = bus.publisher();
//   std::uint64_t seq = pub.send("AAPL 189.52");
//   shmbus::Subscriber sub = bus.subscribe(shmbus::Start::Oldest);
//   std::vector<std::uint8_t> buf;
//   shmbus::Message msg = sub.recv(buf);          // buf holds the payload, msg.seq its order
//
// Errors: exceptions. Every failed call throws shmbus::Error, which carries the C status
// code (status(), status_name()), the library's message (what()) and, for SHMBUS_LOST, the
// number of messages lost (lost()). Outcomes that are not errors come back as values:
// try_send / send_for return std::nullopt when the ring is full or the time ran out, and
// try_recv / recv_for (and the _ref variants) return std::nullopt when there is no message.
// Why exceptions and not an expected-style result: constructors and factories (Bus::open,
// bus.publisher()) need them to stay RAII, std::expected is C++23, and once "no room" and
// "no message" are values, what is left (a missing file, a message too large, a corrupt
// ring, a lapped lossy subscriber) is exceptional and must not be ignored silently.
//
// Handles (Bus, Publisher, Subscriber, Loan) are move-only and free their C handle in the
// destructor. Thread rules are those of shmbus.h: a Bus may be shared by threads; a
// Publisher or Subscriber is used by one thread at a time. Publishers and subscribers keep
// the bus mapped, so the Bus may be destroyed first.
//
// Link with libshmbus (see bindings/c/README.md).

#ifndef SHMBUS_HPP
#define SHMBUS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmbus.h"

namespace shmbus {

// A failed libshmbus call.
class Error : public std::runtime_error {
public:
    Error(shmbus_status status, const std::string &message, std::uint64_t lost = 0)
        : std::runtime_error(std::string(shmbus_status_name(status)) + ": " + message),
          status_(status), lost_(lost) {}

    // The C status code (SHMBUS_NOT_FOUND, SHMBUS_LOST, ...).
    shmbus_status status() const noexcept { return status_; }
    // Its name, "SHMBUS_NOT_FOUND".
    const char *status_name() const noexcept { return shmbus_status_name(status_); }
    // With SHMBUS_LOST: how many messages were lost before the next one (else 0). The
    // subscriber goes on: receive again for the next message.
    std::uint64_t lost() const noexcept { return lost_; }

private:
    shmbus_status status_;
    std::uint64_t lost_;
};

namespace detail {

[[noreturn]] inline void raise(shmbus_status status, std::uint64_t lost = 0) {
    throw Error(status, shmbus_last_error_message(), lost);
}

inline void check(shmbus_status status) {
    if (status != SHMBUS_OK) {
        raise(status);
    }
}

// A duration as the C API's nanoseconds: negative and zero are 0 (do not wait), anything
// from UINT64_MAX ns (about 584 years) up, seconds::max() included, is UINT64_MAX. Converted
// through long double, which holds every 64-bit count exactly: a duration_cast to
// nanoseconds would overflow (undefined behaviour) for long integer durations. A NaN
// duration is an error (SHMBUS_INVALID_ARGUMENT), as in the Python binding.
template <class Rep, class Period>
std::uint64_t nanos(std::chrono::duration<Rep, Period> d) {
    const long double ns = std::chrono::duration<long double, std::nano>(d).count();
    if (ns != ns) {
        throw Error(SHMBUS_INVALID_ARGUMENT, "a timeout of NaN");
    }
    if (ns <= 0) {
        return 0;
    }
    if (ns >= 18446744073709551615.0L) {
        return UINT64_MAX;
    }
    return static_cast<std::uint64_t>(ns);
}

// A path as the C API takes it: a NUL inside would silently cut it short.
inline const char *c_path(const std::string &path) {
    if (path.find('\0') != std::string::npos) {
        throw Error(SHMBUS_INVALID_ARGUMENT, "a path with a NUL byte inside");
    }
    return path.c_str();
}

struct FreeBus {
    void operator()(shmbus_bus *p) const noexcept { shmbus_bus_free(p); }
};
struct FreePublisher {
    void operator()(shmbus_publisher *p) const noexcept { shmbus_publisher_free(p); }
};
struct FreeSubscriber {
    void operator()(shmbus_subscriber *p) const noexcept { shmbus_subscriber_free(p); }
};

} // namespace detail

// Delivery mode of a new bus.
enum class Mode : std::uint32_t {
    Reliable = SHMBUS_MODE_RELIABLE, // producers wait for the slowest live subscriber
    Lossy = SHMBUS_MODE_LOSSY,       // producers never wait; lapped subscribers get Lost
};

// Where a new subscriber starts (or use Bus::subscribe_at for a saved position).
enum class Start : std::uint32_t {
    Latest = SHMBUS_START_LATEST, // only messages published from now on
    Oldest = SHMBUS_START_OLDEST, // the oldest message still in the ring
};

// How a subscriber's waiting receives wait (Subscriber::set_wait).
enum class Wait : std::uint32_t {
    SpinThenBlock = SHMBUS_WAIT_SPIN_THEN_BLOCK, // the default: spin briefly, then sleep
    Spin = SHMBUS_WAIT_SPIN,                     // busy-poll: lowest latency, one core
    Block = SHMBUS_WAIT_BLOCK,                   // sleep on the futex at once
};

// Parameters of a new bus; the defaults of shmbus_options_init, changed by chained setters.
class Options {
public:
    Options() { detail::check(shmbus_options_init(&raw_)); }
    Options &capacity(std::uint64_t bytes) { raw_.capacity = bytes; return *this; }
    Options &max_message(std::uint32_t bytes) { raw_.max_message = bytes; return *this; }
    Options &mode(Mode m) { raw_.mode = static_cast<std::uint32_t>(m); return *this; }
    Options &max_subscribers(std::uint32_t n) { raw_.max_subscribers = n; return *this; }
    Options &max_producers(std::uint32_t n) { raw_.max_producers = n; return *this; }
    Options &file_mode(std::uint32_t bits) { raw_.file_mode = bits; return *this; }
    Options &sparse(bool yes) { raw_.sparse = yes ? 1 : 0; return *this; }
    Options &unblock_timeout(std::chrono::nanoseconds t) {
        raw_.unblock_timeout_ns = detail::nanos(t);
        return *this;
    }
    const shmbus_options *raw() const noexcept { return &raw_; }

private:
    shmbus_options raw_{};
};

// What a copying receive delivered; the payload went into the caller's vector.
struct Message {
    std::uint64_t seq;      // bus-wide sequence number
    std::uint64_t position; // pass to Bus::subscribe_at to resume here
    std::size_t size;       // payload bytes
};

// A message borrowed in place: valid until the next call on its Subscriber (any receive,
// release(), or its destruction). Copy what you keep.
struct View {
    const std::uint8_t *data;
    std::size_t size;
    std::uint64_t seq;
    std::uint64_t position;

    std::string_view str() const noexcept {
        return {reinterpret_cast<const char *>(data), size};
    }
};

class Publisher;

// A message being written in place inside the ring (Publisher::loan). commit() publishes
// it; destroying it uncommitted abandons it (the record becomes padding nobody receives).
// While a loan lives its publisher sends nothing else (Error SHMBUS_LOAN_OUTSTANDING),
// and a loan must not outlive its publisher.
class Loan {
public:
    Loan(Loan &&o) noexcept : pub_(std::exchange(o.pub_, nullptr)), data_(o.data_), size_(o.size_) {}
    Loan &operator=(Loan &&o) noexcept {
        if (this != &o) {
            abandon();
            pub_ = std::exchange(o.pub_, nullptr);
            data_ = o.data_;
            size_ = o.size_;
        }
        return *this;
    }
    Loan(const Loan &) = delete;
    Loan &operator=(const Loan &) = delete;
    ~Loan() { abandon(); }

    std::uint8_t *data() noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

    // Publishes the message and returns its sequence number. The loan is over either way.
    std::uint64_t commit() {
        if (pub_ == nullptr) {
            throw Error(SHMBUS_NO_LOAN, "this loan was already committed, abandoned or moved");
        }
        std::uint64_t seq = 0;
        shmbus_status s = shmbus_publisher_commit(std::exchange(pub_, nullptr), &seq);
        detail::check(s);
        return seq;
    }

    // Gives the message up (also what the destructor does).
    void abandon() noexcept {
        if (pub_ != nullptr) {
            shmbus_publisher_abandon(std::exchange(pub_, nullptr));
        }
    }

private:
    friend class Publisher;
    Loan(shmbus_publisher *pub, std::uint8_t *data, std::size_t size) noexcept
        : pub_(pub), data_(data), size_(size) {}

    shmbus_publisher *pub_;
    std::uint8_t *data_;
    std::size_t size_;
};

// Publishes messages; holds a producer slot until destroyed. One thread at a time.
class Publisher {
public:
    // Sends `len` bytes, waiting while the ring is full; returns the sequence number.
    std::uint64_t send(const void *data, std::size_t len) {
        std::uint64_t seq = 0;
        detail::check(shmbus_publisher_send(h_.get(), data, len, &seq));
        return seq;
    }
    std::uint64_t send(std::string_view s) { return send(s.data(), s.size()); }

    // Sends if there is room now; std::nullopt when the ring is full.
    std::optional<std::uint64_t> try_send(const void *data, std::size_t len) {
        std::uint64_t seq = 0;
        shmbus_status s = shmbus_publisher_try_send(h_.get(), data, len, &seq);
        if (s == SHMBUS_FULL) {
            return std::nullopt;
        }
        detail::check(s);
        return seq;
    }
    std::optional<std::uint64_t> try_send(std::string_view s) { return try_send(s.data(), s.size()); }

    // Sends, waiting at most `timeout` for room; std::nullopt when the time ran out.
    template <class Rep, class Period>
    std::optional<std::uint64_t> send_for(const void *data, std::size_t len,
                                          std::chrono::duration<Rep, Period> timeout) {
        std::uint64_t seq = 0;
        shmbus_status s =
            shmbus_publisher_send_timeout(h_.get(), data, len, detail::nanos(timeout), &seq);
        if (s == SHMBUS_TIMEOUT) {
            return std::nullopt;
        }
        detail::check(s);
        return seq;
    }
    template <class Rep, class Period>
    std::optional<std::uint64_t> send_for(std::string_view s,
                                          std::chrono::duration<Rep, Period> timeout) {
        return send_for(s.data(), s.size(), timeout);
    }

    // Lends `len` bytes in the ring to write a message in place, waiting while it is full.
    Loan loan(std::size_t len) {
        std::uint8_t *data = nullptr;
        detail::check(shmbus_publisher_loan(h_.get(), len, &data));
        return Loan(h_.get(), data, len);
    }

    shmbus_publisher *raw() const noexcept { return h_.get(); }

private:
    friend class Bus;
    explicit Publisher(shmbus_publisher *h) noexcept : h_(h) {}
    std::unique_ptr<shmbus_publisher, detail::FreePublisher> h_;
};

// Receives every message from its start on; holds a subscriber slot until destroyed. One
// thread at a time. In reliable mode producers wait for it: keep receiving, or destroy it.
class Subscriber {
public:
    // Receives the next message into `out` (resized to the payload), waiting as long as it
    // takes. Throws Error with SHMBUS_LOST (and lost()) when a lossy subscriber was lapped.
    Message recv(std::vector<std::uint8_t> &out) { return copy(recv_ref(), out); }

    // The next message if one is there now.
    std::optional<Message> try_recv(std::vector<std::uint8_t> &out) {
        std::optional<View> v = try_recv_ref();
        if (!v) {
            return std::nullopt;
        }
        return copy(*v, out);
    }

    // The next message, waiting at most `timeout`.
    template <class Rep, class Period>
    std::optional<Message> recv_for(std::vector<std::uint8_t> &out,
                                    std::chrono::duration<Rep, Period> timeout) {
        std::optional<View> v = recv_ref_for(timeout);
        if (!v) {
            return std::nullopt;
        }
        return copy(*v, out);
    }

    // The next message in place, without a copy (see View for how long it stays valid).
    View recv_ref() {
        shmbus_message m;
        check_recv(shmbus_subscriber_recv_ref(h_.get(), &m), m);
        return view(m);
    }

    std::optional<View> try_recv_ref() {
        shmbus_message m;
        shmbus_status s = shmbus_subscriber_try_recv_ref(h_.get(), &m);
        if (s == SHMBUS_EMPTY) {
            return std::nullopt;
        }
        check_recv(s, m);
        return view(m);
    }

    template <class Rep, class Period>
    std::optional<View> recv_ref_for(std::chrono::duration<Rep, Period> timeout) {
        shmbus_message m;
        shmbus_status s =
            shmbus_subscriber_recv_ref_timeout(h_.get(), detail::nanos(timeout), &m);
        if (s == SHMBUS_TIMEOUT) {
            return std::nullopt;
        }
        check_recv(s, m);
        return view(m);
    }

    // How receives wait when there is no message yet (from the next one that waits).
    void set_wait(Wait wait) {
        detail::check(shmbus_subscriber_set_wait(h_.get(), static_cast<std::uint32_t>(wait)));
    }

    // Ends the borrow of the last View early.
    void release() { detail::check(shmbus_subscriber_release(h_.get())); }

    // Position of the next message (save it; Bus::subscribe_at resumes there).
    std::uint64_t position() const { return get(shmbus_subscriber_position); }
    std::uint64_t next_seq() const { return get(shmbus_subscriber_next_seq); }
    std::uint64_t delivered() const { return get(shmbus_subscriber_delivered); }
    std::uint64_t lost() const { return get(shmbus_subscriber_lost); }

    shmbus_subscriber *raw() const noexcept { return h_.get(); }

private:
    friend class Bus;
    explicit Subscriber(shmbus_subscriber *h) noexcept : h_(h) {}

    static void check_recv(shmbus_status s, const shmbus_message &m) {
        if (s != SHMBUS_OK) {
            detail::raise(s, m.lost);
        }
    }
    static View view(const shmbus_message &m) noexcept {
        return View{m.data, m.len, m.seq, m.position};
    }
    static Message copy(const View &v, std::vector<std::uint8_t> &out) {
        out.assign(v.data, v.data + v.size);
        return Message{v.seq, v.position, v.size};
    }
    std::uint64_t get(shmbus_status (*f)(const shmbus_subscriber *, std::uint64_t *)) const {
        std::uint64_t v = 0;
        detail::check(f(h_.get(), &v));
        return v;
    }

    std::unique_ptr<shmbus_subscriber, detail::FreeSubscriber> h_;
};

// An open bus: the mapped file. May be shared by threads.
class Bus {
public:
    // Creates a new bus file (its directory must exist).
    static Bus create(const std::string &path, const Options &options = Options()) {
        shmbus_bus *h = nullptr;
        detail::check(shmbus_bus_create(detail::c_path(path), options.raw(), &h));
        return Bus(h);
    }
    // Opens an existing bus file.
    static Bus open(const std::string &path) {
        shmbus_bus *h = nullptr;
        detail::check(shmbus_bus_open(detail::c_path(path), &h));
        return Bus(h);
    }
    // Opens an existing bus with `flags`: SHMBUS_OPEN_FOLLOW_SYMLINKS and/or
    // SHMBUS_OPEN_ALLOW_OTHER_OWNER (see shmbus_bus_open_with).
    static Bus open_with(const std::string &path, std::uint32_t flags) {
        shmbus_bus *h = nullptr;
        detail::check(shmbus_bus_open_with(detail::c_path(path), flags, &h));
        return Bus(h);
    }
    // Opens the bus, creating it with `options` if there is none.
    static Bus open_or_create(const std::string &path, const Options &options = Options()) {
        shmbus_bus *h = nullptr;
        detail::check(shmbus_bus_open_or_create(detail::c_path(path), options.raw(), &h));
        return Bus(h);
    }

    Publisher publisher() const {
        shmbus_publisher *p = nullptr;
        detail::check(shmbus_bus_publisher(h_.get(), &p));
        return Publisher(p);
    }
    Subscriber subscribe(Start start = Start::Latest) const {
        shmbus_subscriber *s = nullptr;
        detail::check(shmbus_bus_subscribe(h_.get(), static_cast<std::uint32_t>(start), 0, &s));
        return Subscriber(s);
    }
    // A subscriber that resumes at a saved position (Message::position, Subscriber::position).
    Subscriber subscribe_at(std::uint64_t position) const {
        shmbus_subscriber *s = nullptr;
        detail::check(shmbus_bus_subscribe(h_.get(), SHMBUS_START_POSITION, position, &s));
        return Subscriber(s);
    }

    shmbus_bus_info info() const {
        shmbus_bus_info i{};
        detail::check(shmbus_bus_get_info(h_.get(), &i));
        return i;
    }
    void flush() const { detail::check(shmbus_bus_flush(h_.get())); }

    shmbus_bus *raw() const noexcept { return h_.get(); }

private:
    explicit Bus(shmbus_bus *h) noexcept : h_(h) {}
    std::unique_ptr<shmbus_bus, detail::FreeBus> h_;
};

} // namespace shmbus

#endif // SHMBUS_HPP
