/*
 * peer.c - one side of the multi-process test (tests/c_api.rs), a real process each:
 *
 *   peer create PATH [lossy]    create a 64 KiB bus, reliable unless "lossy"
 *   peer pub PATH COUNT         publish COUNT messages (message i: see fill())
 *   peer sub PATH COUNT MODE    subscribe at the oldest message, print "ready", receive COUNT
 *                               messages and check each is message i, in order; MODE is
 *                               "copy" (recv into a buffer) or "ref" (recv_ref in place);
 *                               or "lossy": receive until delivered + lost = COUNT, check
 *                               each message against its seq, print both counts
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmbus.h"

static void check(shmbus_status s, const char *what) {
    if (s != SHMBUS_OK) {
        fprintf(stderr, "peer: %s: %s: %s\n", what, shmbus_status_name(s),
                shmbus_last_error_message());
        exit(1);
    }
}

/* Message i: 8 to 307 bytes, its index in the first 8, then a pattern of i. */
static size_t fill(uint64_t i, uint8_t *buf) {
    size_t len = 8 + (size_t)((i * 7919) % 300);
    memcpy(buf, &i, 8);
    for (size_t j = 8; j < len; j++) {
        buf[j] = (uint8_t)(i + j);
    }
    return len;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: peer create|pub|sub PATH [COUNT [copy|ref]]\n");
        return 2;
    }
    const char *role = argv[1], *path = argv[2];
    uint64_t count = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    shmbus_bus *bus = NULL;

    if (strcmp(role, "create") == 0) {
        shmbus_options o;
        check(shmbus_options_init(&o), "options");
        o.capacity = 1 << 16;
        o.max_message = 1024;
        if (argc > 3 && strcmp(argv[3], "lossy") == 0) {
            o.mode = SHMBUS_MODE_LOSSY;
        }
        check(shmbus_bus_create(path, &o, &bus), "create");
        printf("created\n");
    } else if (strcmp(role, "pub") == 0) {
        check(shmbus_bus_open(path, &bus), "open");
        shmbus_publisher *pub = NULL;
        check(shmbus_bus_publisher(bus, &pub), "publisher");
        uint8_t buf[512];
        for (uint64_t i = 0; i < count; i++) {
            uint64_t seq = 0;
            check(shmbus_publisher_send_timeout(pub, buf, fill(i, buf), 10000000000u, &seq),
                  "send");
            if (seq != i) {
                fprintf(stderr, "peer pub: message %" PRIu64 " got seq %" PRIu64 "\n", i, seq);
                return 1;
            }
        }
        printf("sent %" PRIu64 "\n", count);
        shmbus_publisher_free(pub);
    } else if (strcmp(role, "sub") == 0 && argc == 5 && strcmp(argv[4], "lossy") == 0) {
        check(shmbus_bus_open(path, &bus), "open");
        shmbus_subscriber *sub = NULL;
        check(shmbus_bus_subscribe(bus, SHMBUS_START_OLDEST, 0, &sub), "subscribe");
        printf("ready\n");
        fflush(stdout);
        uint8_t want[512], got[512];
        shmbus_message msg;
        uint64_t delivered = 0, lost = 0, next = 0;
        while (delivered + lost < count) {
            shmbus_status s = shmbus_subscriber_recv_timeout(sub, got, sizeof got, 10000000000u,
                                                             &msg);
            if (s == SHMBUS_LOST) {
                lost += msg.lost;
                next += msg.lost;
                continue;
            }
            check(s, "recv");
            size_t len = fill(msg.seq, want);
            if (msg.seq != next || msg.len != len || memcmp(got, want, len) != 0) {
                fprintf(stderr, "peer sub: message %" PRIu64 " is wrong (expected seq %" PRIu64
                        ")\n", msg.seq, next);
                return 1;
            }
            next = msg.seq + 1;
            delivered++;
        }
        uint64_t counted = 0;
        check(shmbus_subscriber_lost(sub, &counted), "lost");
        if (counted != lost) {
            fprintf(stderr, "peer sub: lost counter %" PRIu64 " but gaps of %" PRIu64 "\n",
                    counted, lost);
            return 1;
        }
        printf("delivered %" PRIu64 " lost %" PRIu64 "\n", delivered, lost);
        shmbus_subscriber_free(sub);
    } else if (strcmp(role, "sub") == 0 && argc == 5) {
        int by_ref = strcmp(argv[4], "ref") == 0;
        check(shmbus_bus_open(path, &bus), "open");
        shmbus_subscriber *sub = NULL;
        check(shmbus_bus_subscribe(bus, SHMBUS_START_OLDEST, 0, &sub), "subscribe");
        printf("ready\n");
        fflush(stdout);
        uint8_t want[512], got[512];
        shmbus_message msg;
        for (uint64_t i = 0; i < count; i++) {
            const uint8_t *data = got;
            if (by_ref) {
                check(shmbus_subscriber_recv_ref_timeout(sub, 10000000000u, &msg), "recv_ref");
                data = msg.data;
            } else {
                check(shmbus_subscriber_recv_timeout(sub, got, sizeof got, 10000000000u, &msg),
                      "recv");
            }
            size_t len = fill(i, want);
            if (msg.seq != i || msg.len != len || memcmp(data, want, len) != 0) {
                fprintf(stderr, "peer sub: message %" PRIu64 " is wrong (seq %" PRIu64
                        ", len %zu)\n", i, msg.seq, msg.len);
                return 1;
            }
        }
        uint64_t lost = 0;
        check(shmbus_subscriber_lost(sub, &lost), "lost");
        printf("received %" PRIu64 " lost %" PRIu64 "\n", count, lost);
        shmbus_subscriber_free(sub);
    } else {
        fprintf(stderr, "peer: unknown role %s\n", role);
        return 2;
    }
    shmbus_bus_free(bus);
    return 0;
}
