/*
 * errors.c - every error path of the C API, checked from C.
 *
 * Run by tests/c_api.rs as `errors DIR` (DIR: an empty temporary directory of its own).
 * Prints one line per failed check and exits 1 if any failed.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmbus.h"

static int checks;
static int failures;
static const char *dir;

/* Checks that `call` returned `want`; on a failure status also that a message is set. */
#define EXPECT(want, call) expect_status((want), (call), #call, __LINE__)

static void expect_status(shmbus_status want, shmbus_status got, const char *what, int line) {
    checks++;
    if (got != want) {
        failures++;
        printf("FAIL line %d: %s\n  want %s, got %s (%s)\n", line, what, shmbus_status_name(want),
               shmbus_status_name(got), shmbus_last_error_message());
        return;
    }
    if (want != SHMBUS_OK && shmbus_last_error_message()[0] == '\0') {
        failures++;
        printf("FAIL line %d: %s returned %s without a message\n", line, what,
               shmbus_status_name(got));
    }
}

#define CHECK(cond) check_true((cond), #cond, __LINE__)

static void check_true(int cond, const char *what, int line) {
    checks++;
    if (!cond) {
        failures++;
        printf("FAIL line %d: %s\n", line, what);
    }
}

static const char *path_of(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static shmbus_bus *make_bus(const char *name, uint64_t capacity, uint32_t mode,
                            uint32_t max_message) {
    shmbus_options o;
    EXPECT(SHMBUS_OK, shmbus_options_init(&o));
    o.capacity = capacity;
    o.mode = mode;
    o.max_message = max_message;
    o.unblock_timeout_ns = 10 * 1000 * 1000; /* 10 ms: keeps NOT_A_RECORD quick */
    shmbus_bus *bus = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_create(path_of(name), &o, &bus));
    if (bus == NULL) {
        printf("cannot go on without a bus\n");
        exit(1);
    }
    return bus;
}

static void null_arguments(void) {
    shmbus_bus *bus = (shmbus_bus *)0x1; /* must be overwritten with NULL on failure */
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_create(NULL, NULL, &bus));
    CHECK(bus == NULL);
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_create(path_of("x.bus"), NULL, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_open(NULL, &bus));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_open("", &bus));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_open_or_create(NULL, NULL, &bus));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_options_init(NULL));

    shmbus_options o;
    shmbus_options_init(&o);
    o.mode = 7;
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_create(path_of("badmode.bus"), &o, &bus));
    CHECK(strstr(shmbus_last_error_message(), "mode") != NULL);

    shmbus_publisher *pub = NULL;
    shmbus_subscriber *sub = NULL;
    shmbus_message msg;
    uint64_t v = 0;
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_publisher(NULL, &pub));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_subscribe(NULL, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_publisher_send(NULL, "x", 1, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_publisher_try_send(NULL, "x", 1, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_publisher_commit(NULL, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_recv(NULL, NULL, 0, &msg));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_try_recv_ref(NULL, &msg));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_position(NULL, &v));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_get_info(NULL, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_flush(NULL));

    shmbus_bus *real = make_bus("nulls.bus", 1 << 16, SHMBUS_MODE_RELIABLE, 0);
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_publisher(real, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_subscribe(real, 9, 0, &sub));
    CHECK(sub == NULL);
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(real, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(real, &pub));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_publisher_send(pub, NULL, 3, NULL));
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, NULL, 0, NULL)); /* empty message */
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_publisher_loan(pub, 4, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_recv(sub, NULL, 0, NULL));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_recv(sub, NULL, 8, &msg));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_lost(sub, NULL));
    /* The empty message is still there after those misuses. */
    EXPECT(SHMBUS_OK, shmbus_subscriber_try_recv(sub, NULL, 0, &msg));
    CHECK(msg.len == 0 && msg.seq == 0);

    shmbus_publisher_free(pub);
    shmbus_subscriber_free(sub);
    shmbus_bus_free(real);
    /* Freeing NULL does nothing. */
    shmbus_bus_free(NULL);
    shmbus_publisher_free(NULL);
    shmbus_subscriber_free(NULL);
    CHECK(strcmp(shmbus_status_name(SHMBUS_LOST), "SHMBUS_LOST") == 0);
    CHECK(strcmp(shmbus_status_name(-5), "SHMBUS_UNKNOWN_STATUS") == 0);
}

static void open_errors(void) {
    shmbus_bus *bus = NULL;
    EXPECT(SHMBUS_NOT_FOUND, shmbus_bus_open(path_of("missing.bus"), &bus));
    EXPECT(SHMBUS_DIRECTORY_NOT_FOUND,
           shmbus_bus_create(path_of("no/such/dir.bus"), NULL, &bus));

    /* A file that is not a bus: the error names it. */
    const char *text = path_of("notes.txt");
    FILE *f = fopen(text, "w");
    for (int i = 0; i < 1000; i++) {
        fprintf(f, "this is not a bus file, line %d\n", i);
    }
    fclose(f);
    EXPECT(SHMBUS_NOT_A_BUS, shmbus_bus_open(text, &bus));
    CHECK(bus == NULL);
    CHECK(strstr(shmbus_last_error_message(), "notes.txt") != NULL);
    EXPECT(SHMBUS_NOT_A_BUS, shmbus_bus_open_or_create(text, NULL, &bus));

    /* A short file is not a bus either. */
    const char *tiny = path_of("tiny.bus");
    f = fopen(tiny, "w");
    fputs("x", f);
    fclose(f);
    EXPECT(SHMBUS_NOT_A_BUS, shmbus_bus_open(tiny, &bus));

    EXPECT(SHMBUS_NOT_A_REGULAR_FILE, shmbus_bus_open(dir, &bus));

    shmbus_options o;
    shmbus_options_init(&o);
    o.capacity = 1000; /* not a power of two */
    EXPECT(SHMBUS_INVALID_OPTIONS, shmbus_bus_create(path_of("bad.bus"), &o, &bus));
    o.capacity = 1 << 16;
    o.max_message = 1 << 30;
    EXPECT(SHMBUS_INVALID_OPTIONS, shmbus_bus_create(path_of("bad.bus"), &o, &bus));

    shmbus_bus *a = make_bus("twice.bus", 1 << 16, SHMBUS_MODE_LOSSY, 0);
    EXPECT(SHMBUS_ALREADY_EXISTS, shmbus_bus_create(path_of("twice.bus"), NULL, &bus));
    /* open_or_create opens it, with its own parameters. */
    shmbus_bus *b = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_open_or_create(path_of("twice.bus"), NULL, &b));
    shmbus_bus_info info;
    EXPECT(SHMBUS_OK, shmbus_bus_get_info(b, &info));
    CHECK(info.capacity == 1 << 16 && info.mode == SHMBUS_MODE_LOSSY);
    CHECK(info.max_message == (1 << 16) / 8);
    EXPECT(SHMBUS_OK, shmbus_bus_flush(b));
    shmbus_bus_free(a);
    shmbus_bus_free(b);

    /* A link to a bus, and a bus of another user: refused by shmbus_bus_open, opened with
     * the flag that says so. */
    char target[4096];
    snprintf(target, sizeof target, "%s", path_of("twice.bus"));
    const char *link = path_of("link.bus");
    CHECK(symlink(target, link) == 0);
    EXPECT(SHMBUS_SYMBOLIC_LINK, shmbus_bus_open(link, &bus));
    EXPECT(SHMBUS_SYMBOLIC_LINK, shmbus_bus_open_with(link, SHMBUS_OPEN_ALLOW_OTHER_OWNER, &bus));
    EXPECT(SHMBUS_OK, shmbus_bus_open_with(link, SHMBUS_OPEN_FOLLOW_SYMLINKS, &bus));
    shmbus_bus_free(bus);
    bus = NULL;
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_bus_open_with(target, 4, &bus));
    CHECK(strstr(shmbus_last_error_message(), "0x4") != NULL);
    CHECK(bus == NULL);
    EXPECT(SHMBUS_OK, shmbus_bus_open_with(target, 0, &bus));
    shmbus_bus_free(bus);
    /* The tests run as root (here and in CI): give the file to nobody. */
    if (chown(target, 65534, 65534) == 0) {
        EXPECT(SHMBUS_OWNED_BY_OTHER_USER, shmbus_bus_open(target, &bus));
        EXPECT(SHMBUS_OWNED_BY_OTHER_USER, shmbus_bus_open_with(target, 0, &bus));
        EXPECT(SHMBUS_OK, shmbus_bus_open_with(target, SHMBUS_OPEN_ALLOW_OTHER_OWNER, &bus));
        shmbus_bus_free(bus);
        EXPECT(SHMBUS_OK,
               shmbus_bus_open_with(link, SHMBUS_OPEN_FOLLOW_SYMLINKS | SHMBUS_OPEN_ALLOW_OTHER_OWNER,
                                    &bus));
        shmbus_bus_free(bus);
    } else {
        printf("note: not root, the other-owner case of shmbus_bus_open_with is not checked\n");
    }
}

static void too_large(void) {
    shmbus_bus *bus = make_bus("large.bus", 1 << 16, SHMBUS_MODE_RELIABLE, 1024);
    shmbus_publisher *pub = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &pub));
    static char big[1025];
    uint64_t seq = 77;
    EXPECT(SHMBUS_MESSAGE_TOO_LARGE, shmbus_publisher_send(pub, big, 1025, &seq));
    CHECK(seq == 77); /* untouched on failure */
    CHECK(strstr(shmbus_last_error_message(), "1025") != NULL);
    EXPECT(SHMBUS_MESSAGE_TOO_LARGE, shmbus_publisher_try_send(pub, big, 1025, NULL));
    EXPECT(SHMBUS_MESSAGE_TOO_LARGE, shmbus_publisher_send_timeout(pub, big, 1025, 0, NULL));
    /* A length no buffer can have (a negative length cast): refused before it is used. */
    EXPECT(SHMBUS_MESSAGE_TOO_LARGE, shmbus_publisher_send(pub, big, SIZE_MAX, &seq));
    CHECK(strstr(shmbus_last_error_message(), "no buffer") != NULL);
    EXPECT(SHMBUS_MESSAGE_TOO_LARGE, shmbus_publisher_try_send(pub, big, (size_t)PTRDIFF_MAX + 1, NULL));
    uint8_t *data = (uint8_t *)big;
    EXPECT(SHMBUS_MESSAGE_TOO_LARGE, shmbus_publisher_loan(pub, 1025, &data));
    CHECK(data == NULL);
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, big, 1024, &seq));
    CHECK(seq == 0);
    shmbus_publisher_free(pub);
    shmbus_bus_free(bus);
}

static void buffer_too_small(void) {
    shmbus_bus *bus = make_bus("small.bus", 1 << 16, SHMBUS_MODE_RELIABLE, 0);
    shmbus_subscriber *sub = NULL;
    shmbus_publisher *pub = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &pub));
    char payload[100];
    for (int i = 0; i < 100; i++) {
        payload[i] = (char)('a' + i % 26);
    }
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, payload, 100, NULL));
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, "next", 4, NULL));

    char buf[200];
    shmbus_message msg;
    uint64_t pos_before = 0, pos = 0, seq = 0, delivered = 9;
    EXPECT(SHMBUS_OK, shmbus_subscriber_position(sub, &pos_before));
    EXPECT(SHMBUS_BUFFER_TOO_SMALL, shmbus_subscriber_recv(sub, buf, 10, &msg));
    CHECK(msg.len == 100 && msg.seq == 0 && msg.data == NULL);
    /* Not consumed: the getters still point at it. */
    EXPECT(SHMBUS_OK, shmbus_subscriber_position(sub, &pos));
    CHECK(pos == pos_before && msg.position == pos_before);
    EXPECT(SHMBUS_OK, shmbus_subscriber_next_seq(sub, &seq));
    CHECK(seq == 0);
    EXPECT(SHMBUS_OK, shmbus_subscriber_delivered(sub, &delivered));
    CHECK(delivered == 0);
    /* Asking the length with no buffer at all. */
    EXPECT(SHMBUS_BUFFER_TOO_SMALL, shmbus_subscriber_try_recv(sub, NULL, 0, &msg));
    CHECK(msg.len == 100);
    EXPECT(SHMBUS_BUFFER_TOO_SMALL, shmbus_subscriber_recv_timeout(sub, buf, 99, 0, &msg));
    /* Then the same message with room enough. */
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv(sub, buf, sizeof buf, &msg));
    CHECK(msg.len == 100 && msg.seq == 0 && msg.data == (const uint8_t *)buf);
    CHECK(memcmp(buf, payload, 100) == 0);
    EXPECT(SHMBUS_OK, shmbus_subscriber_delivered(sub, &delivered));
    CHECK(delivered == 1);

    /* A kept message is also what a recv_ref returns next. */
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, payload, 50, NULL));
    EXPECT(SHMBUS_BUFFER_TOO_SMALL, shmbus_subscriber_recv(sub, buf, 2, &msg));
    CHECK(msg.len == 4); /* "next" comes first */
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv_ref(sub, &msg));
    CHECK(msg.len == 4 && memcmp(msg.data, "next", 4) == 0 && msg.seq == 1);
    EXPECT(SHMBUS_OK, shmbus_subscriber_try_recv_ref(sub, &msg));
    CHECK(msg.len == 50 && memcmp(msg.data, payload, 50) == 0 && msg.seq == 2);
    EXPECT(SHMBUS_OK, shmbus_subscriber_release(sub));
    EXPECT(SHMBUS_OK, shmbus_subscriber_release(sub)); /* nothing lent: nothing to do */
    EXPECT(SHMBUS_EMPTY, shmbus_subscriber_try_recv(sub, buf, sizeof buf, &msg));
    CHECK(msg.len == 0 && msg.data == NULL);

    shmbus_publisher_free(pub);
    shmbus_subscriber_free(sub);
    shmbus_bus_free(bus);
}

static void timeouts_and_full(void) {
    shmbus_bus *bus = make_bus("timeouts.bus", 1 << 12, SHMBUS_MODE_RELIABLE, 256);
    shmbus_subscriber *sub = NULL;
    shmbus_publisher *pub = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &pub));

    char buf[256];
    shmbus_message msg;
    EXPECT(SHMBUS_EMPTY, shmbus_subscriber_try_recv(sub, buf, sizeof buf, &msg));
    EXPECT(SHMBUS_EMPTY, shmbus_subscriber_try_recv_ref(sub, &msg));
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 0, &msg));
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 1, &msg));
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_ref_timeout(sub, 0, &msg));
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_ref_timeout(sub, 1000, &msg));
    double t0 = now_s();
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 20000000, &msg));
    double waited = now_s() - t0;
    CHECK(waited >= 0.019 && waited < 5.0);
    /* Each wait strategy times out the same way. */
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_set_wait(sub, 3));
    EXPECT(SHMBUS_INVALID_ARGUMENT, shmbus_subscriber_set_wait(NULL, SHMBUS_WAIT_SPIN));
    uint32_t waits[] = {SHMBUS_WAIT_SPIN, SHMBUS_WAIT_BLOCK, SHMBUS_WAIT_SPIN_THEN_BLOCK};
    for (int w = 0; w < 3; w++) {
        EXPECT(SHMBUS_OK, shmbus_subscriber_set_wait(sub, waits[w]));
        t0 = now_s();
        EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 5000000, &msg));
        waited = now_s() - t0;
        CHECK(waited >= 0.004 && waited < 5.0);
    }

    /* Fill the ring: the subscriber reads nothing, so a reliable bus runs full. */
    int sent = 0;
    shmbus_status s;
    memset(buf, 'f', sizeof buf);
    while ((s = shmbus_publisher_try_send(pub, buf, 200, NULL)) == SHMBUS_OK) {
        sent++;
    }
    EXPECT(SHMBUS_FULL, s);
    CHECK(sent > 5 && sent < 4096 / 200 + 1);
    EXPECT(SHMBUS_TIMEOUT, shmbus_publisher_send_timeout(pub, buf, 200, 0, NULL));
    EXPECT(SHMBUS_TIMEOUT, shmbus_publisher_send_timeout(pub, buf, 200, 1, NULL));
    t0 = now_s();
    EXPECT(SHMBUS_TIMEOUT, shmbus_publisher_send_timeout(pub, buf, 200, 20000000, NULL));
    waited = now_s() - t0;
    CHECK(waited >= 0.019 && waited < 5.0);
    uint8_t *data = NULL;
    EXPECT(SHMBUS_FULL, shmbus_publisher_try_loan(pub, 200, &data));
    EXPECT(SHMBUS_TIMEOUT, shmbus_publisher_loan_timeout(pub, 200, 1000, &data));
    CHECK(data == NULL);

    /* Reading one makes room again. */
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv(sub, buf, sizeof buf, &msg));
    /* (The subscriber publishes its position in batches; drain all to be sure.) */
    while (shmbus_subscriber_try_recv(sub, buf, sizeof buf, &msg) == SHMBUS_OK) {
    }
    uint64_t seq = 0;
    EXPECT(SHMBUS_OK, shmbus_publisher_send_timeout(pub, buf, 200, 1000000000u, &seq));
    CHECK(seq == (uint64_t)sent);

    shmbus_publisher_free(pub);
    shmbus_subscriber_free(sub);
    shmbus_bus_free(bus);
}

static void loans(void) {
    shmbus_bus *bus = make_bus("loans.bus", 1 << 16, SHMBUS_MODE_RELIABLE, 0);
    shmbus_subscriber *sub = NULL;
    shmbus_publisher *pub = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &pub));

    EXPECT(SHMBUS_NO_LOAN, shmbus_publisher_commit(pub, NULL));
    EXPECT(SHMBUS_NO_LOAN, shmbus_publisher_abandon(pub));

    uint8_t *data = NULL;
    EXPECT(SHMBUS_OK, shmbus_publisher_loan(pub, 8, &data));
    CHECK(data != NULL);
    memcpy(data, "dropped!", 8);
    EXPECT(SHMBUS_LOAN_OUTSTANDING, shmbus_publisher_send(pub, "x", 1, NULL));
    uint8_t *second = NULL;
    EXPECT(SHMBUS_LOAN_OUTSTANDING, shmbus_publisher_loan(pub, 8, &second));
    EXPECT(SHMBUS_OK, shmbus_publisher_abandon(pub)); /* never delivered */

    EXPECT(SHMBUS_OK, shmbus_publisher_try_loan(pub, 6, &data));
    memcpy(data, "loaned", 6);
    uint64_t seq = 0;
    EXPECT(SHMBUS_OK, shmbus_publisher_commit(pub, &seq));
    CHECK(seq == 1); /* the abandoned loan used up sequence 0 */

    EXPECT(SHMBUS_OK, shmbus_publisher_loan_timeout(pub, 3, 1000, &data));
    memcpy(data, "end", 3);
    /* Freeing the publisher with a loan out abandons it. */
    shmbus_publisher_free(pub);

    shmbus_message msg;
    /* The abandoned loans are skipped: the first message is the committed one. */
    EXPECT(SHMBUS_BUFFER_TOO_SMALL,
           shmbus_subscriber_recv_timeout(sub, NULL, 0, 1000000000u, &msg));
    CHECK(msg.len == 6);
    char buf[16];
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv(sub, buf, sizeof buf, &msg));
    CHECK(msg.len == 6 && memcmp(buf, "loaned", 6) == 0 && msg.seq == 1);
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 1000000, &msg));
    shmbus_subscriber_free(sub);
    shmbus_bus_free(bus);
}

static void slots_and_positions(void) {
    shmbus_options o;
    shmbus_options_init(&o);
    o.capacity = 1 << 16;
    o.max_producers = 1;
    o.max_subscribers = 1;
    o.unblock_timeout_ns = 10 * 1000 * 1000;
    shmbus_bus *bus = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_create(path_of("slots.bus"), &o, &bus));
    shmbus_publisher *p1 = NULL, *p2 = NULL;
    shmbus_subscriber *s1 = NULL, *s2 = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &p1));
    EXPECT(SHMBUS_NO_FREE_SLOT, shmbus_bus_publisher(bus, &p2));
    CHECK(p2 == NULL);
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_OLDEST, 0, &s1));
    EXPECT(SHMBUS_NO_FREE_SLOT, shmbus_bus_subscribe(bus, SHMBUS_START_OLDEST, 0, &s2));

    /* The bus handle may go first: the publisher and subscriber keep the mapping. */
    shmbus_bus_free(bus);
    uint64_t seq = 0;
    EXPECT(SHMBUS_OK, shmbus_publisher_send(p1, "one", 3, &seq));
    EXPECT(SHMBUS_OK, shmbus_publisher_send(p1, "two", 3, &seq));
    shmbus_message msg;
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv_ref(s1, &msg));
    uint64_t second = 0;
    EXPECT(SHMBUS_OK, shmbus_subscriber_position(s1, &second));
    shmbus_subscriber_free(s1);

    EXPECT(SHMBUS_OK, shmbus_bus_open(path_of("slots.bus"), &bus));
    /* Resume at a saved position, in this process or another. */
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_POSITION, second, &s2));
    char buf[8];
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv(s2, buf, sizeof buf, &msg));
    CHECK(msg.len == 3 && memcmp(buf, "two", 3) == 0 && msg.seq == 1);
    shmbus_subscriber_free(s2);
    s2 = NULL;
    EXPECT(SHMBUS_POSITION_NOT_RETAINED,
           shmbus_bus_subscribe(bus, SHMBUS_START_POSITION, second + (1 << 20), &s2));
    EXPECT(SHMBUS_NOT_A_RECORD,
           shmbus_bus_subscribe(bus, SHMBUS_START_POSITION, second - 16, &s2));
    CHECK(s2 == NULL);
    shmbus_publisher_free(p1);
    shmbus_bus_free(bus);
}

/* A lossy bus where the subscriber is lapped: the lost count is exact. */
static void lossy_lapped(void) {
    shmbus_bus *bus = make_bus("lossy.bus", 1 << 12, SHMBUS_MODE_LOSSY, 0);
    shmbus_subscriber *sub = NULL;
    shmbus_publisher *pub = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &pub));

    const uint64_t published = 1000; /* 48-byte records: about 12 rings' worth */
    char payload[32];
    for (uint64_t i = 0; i < published; i++) {
        int n = snprintf(payload, sizeof payload, "%" PRIu64, i);
        EXPECT(SHMBUS_OK, shmbus_publisher_try_send(pub, payload, (size_t)n, NULL));
    }

    uint64_t delivered = 0, lost = 0, gaps = 0, next_expected = 0;
    char buf[64];
    shmbus_message msg;
    for (;;) {
        shmbus_status s = shmbus_subscriber_try_recv(sub, buf, sizeof buf, &msg);
        if (s == SHMBUS_EMPTY) {
            break;
        }
        if (s == SHMBUS_LOST) {
            gaps++;
            lost += msg.lost;
            next_expected += msg.lost;
            CHECK(msg.lost > 0);
            continue;
        }
        EXPECT(SHMBUS_OK, s);
        buf[msg.len] = '\0';
        CHECK(msg.seq == next_expected);
        CHECK(strtoull(buf, NULL, 10) == msg.seq);
        next_expected = msg.seq + 1;
        delivered++;
    }
    CHECK(gaps >= 1);
    CHECK(lost > 0 && delivered > 0);
    CHECK(delivered + lost == published);
    uint64_t counted = 0;
    EXPECT(SHMBUS_OK, shmbus_subscriber_lost(sub, &counted));
    CHECK(counted == lost);
    printf("lossy: %" PRIu64 " delivered + %" PRIu64 " lost = %" PRIu64 " published\n",
           delivered, lost, published);
    shmbus_publisher_free(pub);
    shmbus_subscriber_free(sub);
    shmbus_bus_free(bus);
}

/* A child made by fork() without exec inherits the parent's handles but not their slots:
 * every call through them returns SHMBUS_FORKED and leaves the bus alone, and the child can
 * open the bus itself. The child's verdict is its exit status (alarm: a watchdog). */
static void forked_child(void) {
    shmbus_bus *bus = make_bus("fork.bus", 1 << 16, SHMBUS_MODE_RELIABLE, 0);
    shmbus_subscriber *sub = NULL;
    shmbus_publisher *pub = NULL;
    EXPECT(SHMBUS_OK, shmbus_bus_subscribe(bus, SHMBUS_START_LATEST, 0, &sub));
    EXPECT(SHMBUS_OK, shmbus_bus_publisher(bus, &pub));
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, "parent 0", 8, NULL));
    {
        /* The subscriber keeps a message that did not fit: the child must not get it. */
        char small[2];
        shmbus_message held;
        EXPECT(SHMBUS_BUFFER_TOO_SMALL, shmbus_subscriber_recv(sub, small, sizeof small, &held));
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        checks = failures = 0;
        char buf[64];
        uint8_t *data = NULL;
        shmbus_message msg;
        EXPECT(SHMBUS_FORKED, shmbus_publisher_send(pub, "child", 5, NULL));
        EXPECT(SHMBUS_FORKED, shmbus_publisher_try_send(pub, "child", 5, NULL));
        EXPECT(SHMBUS_FORKED, shmbus_publisher_send_timeout(pub, "child", 5, 0, NULL));
        EXPECT(SHMBUS_FORKED, shmbus_publisher_loan(pub, 8, &data));
        EXPECT(SHMBUS_FORKED, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 0, &msg));
        EXPECT(SHMBUS_FORKED, shmbus_subscriber_try_recv(sub, buf, sizeof buf, &msg));
        shmbus_bus *own = NULL;
        shmbus_subscriber *mine = NULL;
        EXPECT(SHMBUS_OK, shmbus_bus_open(path_of("fork.bus"), &own));
        if (own != NULL) {
            EXPECT(SHMBUS_OK, shmbus_bus_subscribe(own, SHMBUS_START_OLDEST, 0, &mine));
            EXPECT(SHMBUS_OK, shmbus_subscriber_recv_timeout(mine, buf, sizeof buf,
                                                             5000000000ull, &msg));
            CHECK(msg.len == 8 && memcmp(buf, "parent 0", 8) == 0);
            shmbus_subscriber_free(mine);
            shmbus_bus_free(own);
        }
        fflush(stdout);
        _exit(failures == 0 ? 0 : 1);
    }
    CHECK(pid > 0);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent's handles go on where they were. */
    char buf[64];
    shmbus_message msg;
    EXPECT(SHMBUS_OK, shmbus_publisher_send(pub, "parent 1", 8, NULL));
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 5000000000ull, &msg));
    CHECK(msg.seq == 0 && memcmp(buf, "parent 0", 8) == 0);
    EXPECT(SHMBUS_OK, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 5000000000ull, &msg));
    CHECK(msg.seq == 1 && memcmp(buf, "parent 1", 8) == 0);
    EXPECT(SHMBUS_TIMEOUT, shmbus_subscriber_recv_timeout(sub, buf, sizeof buf, 50000000ull, &msg));
    shmbus_subscriber_free(sub);
    shmbus_publisher_free(pub);
    shmbus_bus_free(bus);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: errors DIR\n");
        return 2;
    }
    dir = argv[1];
    null_arguments();
    open_errors();
    too_large();
    buffer_too_small();
    timeouts_and_full();
    loans();
    slots_and_positions();
    lossy_lapped();
    forked_child();
    printf("errors.c: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
