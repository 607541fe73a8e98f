/* kafka_none.c: stream/kafka.h in a build without librdkafka (stream/CMakeLists.txt compiles this
 * file instead of the kafka_*.c ones): every call that would need the library fails with
 * SD_ERR_UNSUPPORTED and a message naming the package to install. */
#include "stream/kafka.h"

#include <string.h>

#define SD_KAFKA_MISSING                                                                                    \
    "this build has no Kafka support: install librdkafka (Debian: apt-get install librdkafka-dev, which " \
    "pkg-config finds as 'rdkafka') and re-run cmake"

bool sd_kafka_available(void) { return false; }
sd_status sd_kafka_create(const sd_kafka_config *c, sd_kafka **out) {
    (void)c;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
void sd_kafka_destroy(sd_kafka *k) { (void)k; }
sd_source sd_kafka_source(sd_kafka *k) { return (sd_source){NULL, k}; }
sd_status sd_kafka_ack(sd_kafka *k, uint64_t seq) {
    (void)k, (void)seq;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_checkpointed(sd_kafka *k, uint64_t seq) {
    (void)k, (void)seq;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_commit_now(sd_kafka *k, double timeout_s) {
    (void)k, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
int64_t sd_kafka_committed_offset(sd_kafka *k, int32_t partition) {
    (void)k, (void)partition;
    return -1;
}
void sd_kafka_get_stats(sd_kafka *k, sd_kafka_stats *out) {
    (void)k;
    memset(out, 0, sizeof *out);
}
sd_status sd_kafka_pub_create(const sd_kafka_conn *conn, sd_kafka_pub **out) {
    (void)conn;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_pub_create_topics(sd_kafka_pub *p, const char *const *topics, size_t n, int partitions,
                                     double timeout_s) {
    (void)p, (void)topics, (void)n, (void)partitions, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
sd_status sd_kafka_pub_send(sd_kafka_pub *p, const char *topic, int32_t partition, int32_t label, const void *msg,
                            size_t len) {
    (void)p, (void)topic, (void)partition, (void)label, (void)msg, (void)len;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
void sd_kafka_pub_poll(sd_kafka_pub *p) { (void)p; }
sd_status sd_kafka_pub_flush(sd_kafka_pub *p, double timeout_s) {
    (void)p, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_KAFKA_MISSING);
}
void sd_kafka_pub_get_stats(sd_kafka_pub *p, sd_kafka_pub_stats *out) {
    (void)p;
    memset(out, 0, sizeof *out);
}
void sd_kafka_pub_destroy(sd_kafka_pub *p) { (void)p; }
