/*
 * pubsub.c - publish N messages on a shmbus bus and receive them, in C.
 *
 * One process holds a publisher and a subscriber of the same bus (a second process would
 * open the same file with shmbus_bus_open and do exactly what the subscriber half does).
 *
 *   cargo build --release -p bus-c
 *   cc -std=c11 -Wall -Wextra -Werror -I bindings/c/include bindings/c/examples/pubsub.c \
 *      -L target/release -lshmbus -Wl,-rpath,"$PWD/target/release" -o pubsub
 *   ./pubsub [bus-path] [count]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbus.h"

/* Prints the failed call, its status name and the library's message, and exits. */
static void check(shmbus_status status, const char *what) {
    if (status != SHMBUS_OK) {
        fprintf(stderr, "pubsub: %s: %s: %s\n", what, shmbus_status_name(status),
                shmbus_last_error_message());
        exit(1);
    }
}

/* Receives message i into buf and checks it is "tick i". A message longer than the buffer
 * would come back as SHMBUS_BUFFER_TOO_SMALL with msg->len set, still unread, for a retry
 * with more room. */
static void receive_one(shmbus_subscriber *sub, char *buf, size_t cap, shmbus_message *msg,
                        long i) {
    check(shmbus_subscriber_recv_timeout(sub, buf, cap, 1000000000u, msg), "recv");
    char want[64];
    int len = snprintf(want, sizeof want, "tick %ld", i);
    if (msg->len != (size_t)len || memcmp(buf, want, msg->len) != 0 || msg->seq != (uint64_t)i) {
        fprintf(stderr, "pubsub: message %ld is wrong (seq %" PRIu64 ")\n", i, msg->seq);
        exit(1);
    }
}

int main(int argc, char **argv) {
    char default_path[64];
    snprintf(default_path, sizeof default_path, "/tmp/shmbus-pubsub-c-%ld.bus", (long)getpid());
    const char *path = argc > 1 ? argv[1] : default_path;
    long count = argc > 2 ? atol(argv[2]) : 1000;

    /* A 64 KiB reliable bus: producers wait for the slowest subscriber, never overwrite. */
    shmbus_options options;
    check(shmbus_options_init(&options), "options");
    options.capacity = 64 << 10;
    options.mode = SHMBUS_MODE_RELIABLE;

    shmbus_bus *bus = NULL;
    check(shmbus_bus_create(path, &options, &bus), "create");

    /* Subscribe before publishing: SHMBUS_START_LATEST sees only what comes after. */
    shmbus_subscriber *sub = NULL;
    check(shmbus_bus_subscribe(bus, SHMBUS_START_LATEST, 0, &sub), "subscribe");
    shmbus_publisher *pub = NULL;
    check(shmbus_bus_publisher(bus, &pub), "publisher");

    /* Publish with try_send, which never waits: on a reliable bus SHMBUS_FULL means the
     * subscriber is a whole ring behind, and here that subscriber is us, so receive one
     * message and try again. (shmbus_publisher_send would wait for another process or
     * thread to receive; with only this thread, it would wait forever.) */
    char buf[256];
    shmbus_message msg;
    long received = 0;
    for (long i = 0; i < count; i++) {
        char text[64];
        int len = snprintf(text, sizeof text, "tick %ld", i);
        uint64_t seq = 0;
        shmbus_status s;
        while ((s = shmbus_publisher_try_send(pub, text, (size_t)len, &seq)) == SHMBUS_FULL) {
            receive_one(sub, buf, sizeof buf, &msg, received++);
        }
        check(s, "send");
    }
    while (received < count) {
        receive_one(sub, buf, sizeof buf, &msg, received++);
    }

    /* Zero copy on both sides: a loan is written in place, a recv_ref is read in place. */
    uint8_t *slot = NULL;
    check(shmbus_publisher_loan(pub, 5, &slot), "loan");
    memcpy(slot, "hello", 5);
    check(shmbus_publisher_commit(pub, NULL), "commit");
    check(shmbus_subscriber_recv_ref(sub, &msg), "recv_ref");
    printf("borrowed %.*s (seq %" PRIu64 "), valid until the next call on the subscriber\n",
           (int)msg.len, (const char *)msg.data, msg.seq);

    /* Nothing left: a try_recv says so at once. */
    shmbus_status s = shmbus_subscriber_try_recv(sub, buf, sizeof buf, &msg);
    if (s != SHMBUS_EMPTY) {
        fprintf(stderr, "pubsub: expected SHMBUS_EMPTY, got %s\n", shmbus_status_name(s));
        return 1;
    }

    uint64_t delivered = 0;
    check(shmbus_subscriber_delivered(sub, &delivered), "delivered");
    printf("pubsub.c: sent and received %ld messages in order (%" PRIu64 " delivered)\n",
           count, delivered);

    /* Free in any order; the file stays until it is removed. */
    shmbus_publisher_free(pub);
    shmbus_subscriber_free(sub);
    shmbus_bus_free(bus);
    if (argc <= 1) {
        unlink(path);
    }
    return 0;
}
