/* broker_harness.h: what the broker tests (test_kafka.c, test_mqtt.c) share. Numbered test messages
 * (1 x 4 x 4 u8, label = seq % 10) and the experiment that expects them; a small persist ring;
 * publishing a numbered range through a broker's send function; waiting until a ring has received
 * n messages; taking batches while checking each label against its sequence number; draining a
 * ring and requiring exactly a range of sequence numbers (the publish-and-drain check); the ring's
 * invariants; a free loopback port; and running a program built next to the tests (scadles-publish)
 * with its output captured, bounded in time. Every wait is bounded. */
#ifndef SD_TESTS_BROKER_HARNESS_H
#define SD_TESTS_BROKER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "stream/message.h"
#include "stream/ring.h"

enum { SD_BH_SIDE = 4, SD_BH_PIX = SD_BH_SIDE * SD_BH_SIDE, SD_BH_CLASSES = 10 };

/* Encodes the valid message `seq` of device dev into buf (cap bytes); returns its length. */
size_t sd_bh_make_msg(uint8_t *buf, size_t cap, uint32_t dev, uint64_t seq);
/* The experiment those messages satisfy (device checked, payload limit 32 bytes). */
sd_msg_expect sd_bh_expect(uint32_t dev);
/* A persist, drop-newest ring of n samples of at most 64 bytes. */
sd_ring *sd_bh_ring(size_t n);

/* A broker's way to publish one encoded message (label as the Kafka key). */
typedef sd_status (*sd_bh_send_fn)(void *ctx, int32_t label, const void *msg, size_t len);
/* Publishes messages from..to-1 of device dev through send (each expected to succeed). */
void sd_bh_publish(sd_bh_send_fn send, void *ctx, uint32_t dev, uint64_t from, uint64_t to);

/* Whether everything the ring received (stored + dropped) reached n within timeout_s. */
bool sd_bh_wait_received(sd_ring *r, uint64_t n, double timeout_s);
/* Takes up to max_n (<= 8192) samples, their sequence numbers into seqs[0..got); checks each label
 * is seq % 10; returns got. */
size_t sd_bh_take(sd_ring *r, size_t max_n, uint64_t *seqs);
/* Whether s[0..n) is exactly from, from + 1, ..., to - 1. */
bool sd_bh_seqs_are(const uint64_t *s, size_t n, uint64_t from, uint64_t to);
/* Publish-and-drain: waits until the ring has received `received` messages in all, takes everything
 * it holds and expects exactly from..to-1, in order (an EXPECT naming `what`). Returns whether so. */
bool sd_bh_drain_exact(sd_ring *r, uint64_t received, uint64_t from, uint64_t to, double timeout_s, const char *what);
/* EXPECTs the ring's counter invariants (sd_ring_stats_consistent). */
void sd_bh_check_ring(sd_ring *r, const char *where);

/* A loopback TCP port nobody listens on right now (-1 on failure), and whether one accepts. */
int sd_bh_free_port(void);
bool sd_bh_port_open(int port);
/* The path of apps/<name> in the build tree next to this test binary; false when not built. */
bool sd_bh_app_path(const char *name, char *out, size_t cap);
/* Runs argv (argv[0] a path) with stdout and stderr into out (NUL-terminated); returns its exit
 * status, or -1 when it did not finish within timeout_s (it is then killed). */
int sd_bh_run_capture(char *const argv[], char *out, size_t cap, double timeout_s);

#endif
