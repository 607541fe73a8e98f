/* mqtt_none.c: stream/mqtt.h in a build without libmosquitto (stream/CMakeLists.txt compiles this
 * file instead of the mqtt_*.c ones): every call that would need the library fails with
 * SD_ERR_UNSUPPORTED and a message naming the package to install. */
#include "stream/mqtt.h"

#include <string.h>

#define SD_MQTT_MISSING                                                                                          \
    "this build has no MQTT support: install libmosquitto (Debian: apt-get install libmosquitto-dev, and the " \
    "broker: mosquitto) and re-run cmake"

bool sd_mqtt_available(void) { return false; }
sd_status sd_mqtt_create(const sd_mqtt_config *c, sd_mqtt **out) {
    (void)c;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
void sd_mqtt_destroy(sd_mqtt *m) { (void)m; }
sd_source sd_mqtt_source(sd_mqtt *m) { return (sd_source){NULL, m}; }
void sd_mqtt_get_stats(sd_mqtt *m, sd_mqtt_stats *out) {
    (void)m;
    memset(out, 0, sizeof *out);
    out->granted_qos = -1;
}
sd_status sd_mqtt_pub_create(const sd_mqtt_conn *conn, int qos, sd_mqtt_pub **out) {
    (void)conn, (void)qos;
    if (out) *out = NULL;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
sd_status sd_mqtt_pub_send(sd_mqtt_pub *p, const char *topic, const void *msg, size_t len) {
    (void)p, (void)topic, (void)msg, (void)len;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
sd_status sd_mqtt_pub_flush(sd_mqtt_pub *p, double timeout_s) {
    (void)p, (void)timeout_s;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "%s", SD_MQTT_MISSING);
}
uint64_t sd_mqtt_pub_outstanding(sd_mqtt_pub *p) {
    (void)p;
    return 0;
}
void sd_mqtt_pub_get_stats(sd_mqtt_pub *p, sd_mqtt_pub_stats *out) {
    (void)p;
    memset(out, 0, sizeof *out);
}
void sd_mqtt_pub_destroy(sd_mqtt_pub *p) { (void)p; }
