// wrapper.cpp - the C++ wrapper's error convention and RAII, run by tests/c_api.rs as
// `wrapper DIR`: errors throw shmbus::Error with the C status, no-message and no-room
// outcomes are std::nullopt, a lapped lossy subscriber throws SHMBUS_LOST with the exact
// count and goes on, an uncommitted Loan is abandoned, handles move.
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmbus.hpp"

static int checks, failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            std::printf("FAIL line %d: %s\n", __LINE__, #cond);              \
        }                                                                    \
    } while (0)

template <class F> static shmbus_status status_of(F f) {
    try {
        f();
    } catch (const shmbus::Error &e) {
        return e.status();
    }
    return SHMBUS_OK;
}

static_assert(!std::is_copy_constructible_v<shmbus::Bus>, "move-only");
static_assert(!std::is_copy_constructible_v<shmbus::Publisher>, "move-only");
static_assert(!std::is_copy_constructible_v<shmbus::Subscriber>, "move-only");
static_assert(!std::is_copy_constructible_v<shmbus::Loan>, "move-only");
static_assert(std::is_nothrow_move_constructible_v<shmbus::Subscriber>, "movable");

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: wrapper DIR\n");
        return 2;
    }
    std::string dir = argv[1];
    using namespace std::chrono_literals;

    CHECK(status_of([&] { shmbus::Bus::open(dir + "/missing.bus"); }) == SHMBUS_NOT_FOUND);
    try {
        shmbus::Bus::open(dir + "/missing.bus");
    } catch (const shmbus::Error &e) {
        CHECK(std::string(e.what()).find("SHMBUS_NOT_FOUND") == 0);
        CHECK(std::string(e.what()).find("missing.bus") != std::string::npos);
        CHECK(std::string(e.status_name()) == "SHMBUS_NOT_FOUND");
    }
    CHECK(status_of([&] { shmbus::Bus::create(dir + "/bad.bus", shmbus::Options().capacity(3)); }) ==
          SHMBUS_INVALID_OPTIONS);

    // Timeouts: saturated, never wrapped (a duration_cast of seconds::max() to nanoseconds
    // overflows: it came out as 0, "do not wait", for "wait forever").
    {
        using shmbus::detail::nanos;
        CHECK(nanos(1ms) == 1000000u);
        CHECK(nanos(0ns) == 0u);
        CHECK(nanos(-5s) == 0u);
        CHECK(nanos(std::chrono::seconds::min()) == 0u);
        CHECK(nanos(std::chrono::seconds::max()) == UINT64_MAX);
        CHECK(nanos(std::chrono::nanoseconds::max()) ==
              static_cast<std::uint64_t>(std::chrono::nanoseconds::max().count()));
        CHECK(nanos(std::chrono::hours(24 * 365 * 1000)) == UINT64_MAX);
        CHECK(nanos(std::chrono::duration<double>(1e30)) == UINT64_MAX);
        CHECK(nanos(std::chrono::duration<double>(-1e30)) == 0u);
        CHECK(nanos(std::chrono::duration<double, std::milli>(1.5)) == 1500000u);
        CHECK(status_of([&] {
                  nanos(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN()));
              }) == SHMBUS_INVALID_ARGUMENT);
    }
    // A path with a NUL inside is refused, not cut short at the NUL.
    {
        std::string cut = dir + "/cut.bus";
        std::string with_nul = cut + std::string(1, '\0') + ".ignored";
        CHECK(status_of([&] { shmbus::Bus::create(with_nul, shmbus::Options().capacity(4096)); }) ==
              SHMBUS_INVALID_ARGUMENT);
        CHECK(status_of([&] { shmbus::Bus::open(with_nul); }) == SHMBUS_INVALID_ARGUMENT);
        CHECK(status_of([&] { shmbus::Bus::open_or_create(with_nul, shmbus::Options()); }) ==
              SHMBUS_INVALID_ARGUMENT);
        CHECK(std::fopen(cut.c_str(), "r") == nullptr);
        CHECK(status_of([&] { shmbus::Bus::open_with(with_nul, SHMBUS_OPEN_FOLLOW_SYMLINKS); }) ==
              SHMBUS_INVALID_ARGUMENT);
        CHECK(status_of([&] { shmbus::Bus::open_with(dir + "/missing.bus", 0); }) == SHMBUS_NOT_FOUND);
    }

    {
        shmbus::Bus bus = shmbus::Bus::create(
            dir + "/reliable.bus", shmbus::Options().capacity(4096).max_message(256));
        shmbus::Subscriber sub = bus.subscribe();
        shmbus::Publisher pub = bus.publisher();
        std::vector<std::uint8_t> buf;
        CHECK(!sub.try_recv(buf));
        CHECK(!sub.recv_for(buf, 1ms));
        CHECK(!sub.recv_ref_for(0ns));
        sub.set_wait(shmbus::Wait::Spin);
        CHECK(!sub.recv_for(buf, 1ms));
        sub.set_wait(shmbus::Wait::SpinThenBlock);
        CHECK(status_of([&] { pub.send(std::string(257, 'x')); }) == SHMBUS_MESSAGE_TOO_LARGE);

        // An uncommitted loan is abandoned; a committed one is delivered.
        {
            shmbus::Loan dropped = pub.loan(3);
            CHECK(status_of([&] { pub.send("meanwhile"); }) == SHMBUS_LOAN_OUTSTANDING);
        }
        shmbus::Loan loan = pub.loan(2);
        loan.data()[0] = 'o';
        loan.data()[1] = 'k';
        shmbus::Loan moved = std::move(loan);
        CHECK(status_of([&] { loan.commit(); }) == SHMBUS_NO_LOAN);
        CHECK(moved.commit() == 1);
        shmbus::Message m = sub.recv(buf);
        CHECK(m.seq == 1 && std::string(buf.begin(), buf.end()) == "ok");

        // Fill the ring: try_send and send_for say so with nullopt.
        int sent = 0;
        while (pub.try_send(std::string(200, 'f'))) {
            sent++;
        }
        CHECK(sent > 5);
        CHECK(!pub.send_for(std::string(200, 'f'), 1ms));
        for (int i = 0; i < sent; i++) {
            std::optional<shmbus::View> v = sub.recv_ref_for(1s);
            CHECK(v && v->size == 200 && v->str() == std::string(200, 'f'));
        }
        CHECK(sub.delivered() == 1 + static_cast<std::uint64_t>(sent));
        CHECK(sub.lost() == 0);

        // Move a subscriber and resume another at its position.
        shmbus::Subscriber other = std::move(sub);
        pub.send("resume here");
        std::uint64_t pos = other.position();
        shmbus::Subscriber resumed = bus.subscribe_at(pos);
        CHECK(resumed.recv(buf).position == pos);
        CHECK(std::string(buf.begin(), buf.end()) == "resume here");
        CHECK(bus.info().capacity == 4096);
    }

    {
        // A lapped lossy subscriber: SHMBUS_LOST with the exact count, then it goes on.
        shmbus::Bus bus = shmbus::Bus::create(
            dir + "/lossy.bus", shmbus::Options().capacity(4096).mode(shmbus::Mode::Lossy));
        shmbus::Subscriber sub = bus.subscribe(shmbus::Start::Latest);
        shmbus::Publisher pub = bus.publisher();
        const std::uint64_t published = 500;
        for (std::uint64_t i = 0; i < published; i++) {
            CHECK(pub.try_send(std::to_string(i)));
        }
        std::uint64_t delivered = 0, lost = 0;
        std::vector<std::uint8_t> buf;
        for (;;) {
            try {
                std::optional<shmbus::Message> m = sub.try_recv(buf);
                if (!m) {
                    break;
                }
                CHECK(std::string(buf.begin(), buf.end()) == std::to_string(m->seq));
                delivered++;
            } catch (const shmbus::Error &e) {
                CHECK(e.status() == SHMBUS_LOST && e.lost() > 0);
                lost += e.lost();
            }
        }
        CHECK(lost > 0 && delivered + lost == published && sub.lost() == lost);
    }

    std::printf("wrapper.cpp: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
