// pubsub.cpp - publish N messages from one thread and receive them in another, in C++17.
//
// Each thread owns its handle (a Publisher or a Subscriber is used by one thread at a
// time; the Bus may be shared). Another process would do the same with Bus::open.
//
//   cargo build --release -p bus-c
//   c++ -std=c++17 -Wall -Wextra -Werror -I bindings/c/include -pthread -o pubsub
//       bindings/c/examples/pubsub.cpp -L target/release -lshmbus -Wl,-rpath,"$PWD/target/release"
//   (one command)
//   ./pubsub [bus-path] [count]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "shmbus.hpp"

int main(int argc, char **argv) {
    std::string path = argc > 1 ? argv[1] : "/tmp/shmbus-pubsub-cpp-" + std::to_string(getpid()) + ".bus";
    long count = argc > 2 ? std::atol(argv[2]) : 100000;
    try {
        // A 64 KiB reliable ring, much smaller than the stream: the publisher waits for the
        // subscriber whenever it is a ring ahead, and nothing is ever lost.
        shmbus::Bus bus = shmbus::Bus::create(
            path, shmbus::Options().capacity(64 << 10).mode(shmbus::Mode::Reliable));
        shmbus::Subscriber sub = bus.subscribe(shmbus::Start::Latest);

        std::thread producer([&bus, count] {
            shmbus::Publisher pub = bus.publisher();
            for (long i = 0; i < count; i++) {
                pub.send("tick " + std::to_string(i));
            }
            // Zero copy: write the last message in place, then commit it.
            shmbus::Loan loan = pub.loan(4);
            std::copy_n("done", 4, loan.data());
            loan.commit();
        });

        std::vector<std::uint8_t> buf;
        for (long i = 0; i < count; i++) {
            std::optional<shmbus::Message> msg = sub.recv_for(buf, std::chrono::seconds(10));
            std::string want = "tick " + std::to_string(i);
            if (!msg || msg->seq != static_cast<std::uint64_t>(i) ||
                std::string(buf.begin(), buf.end()) != want) {
                std::fprintf(stderr, "pubsub: message %ld is missing or wrong\n", i);
                producer.join();
                return 1;
            }
        }
        // In place: a View is valid until the next call on the subscriber.
        shmbus::View last = sub.recv_ref();
        std::printf("last message %.*s (seq %llu)\n", static_cast<int>(last.size),
                    reinterpret_cast<const char *>(last.data),
                    static_cast<unsigned long long>(last.seq));
        producer.join();

        if (sub.try_recv(buf)) {
            std::fprintf(stderr, "pubsub: an extra message\n");
            return 1;
        }
        std::printf("pubsub.cpp: sent and received %ld messages in order\n", count);
    } catch (const shmbus::Error &e) {
        // e.status() is the C status code, e.what() the message.
        std::fprintf(stderr, "pubsub: %s\n", e.what());
        unlink(path.c_str());
        return 1;
    }
    if (argc <= 1) {
        unlink(path.c_str());
    }
    return 0;
}
