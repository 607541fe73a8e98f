/* source.c: opening a device's stream source by kind (source.h). The one place that names the
 * concrete sources: the replay of a partition, a Kafka consumer, an MQTT subscriber. */
#include "stream/source.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "stream/kafka.h"
#include "stream/mqtt.h"
#include "stream/replay.h"

const char *sd_source_kind_name(sd_source_kind k) {
    return k == SD_SOURCE_KIND_KAFKA ? "kafka" : k == SD_SOURCE_KIND_MQTT ? "mqtt" : "replay";
}

/* The first line of a password file, without its line end. */
static sd_status read_password(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f)
        return SD_FAIL(SD_ERR_IO, "stream.mqtt.password_file: cannot open %s: %s; give a readable file whose first line is "
                       "the password", path, strerror(errno));
    out[0] = '\0';
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (!ok || !out[0])
        return SD_FAIL(SD_ERR_INVALID, "stream.mqtt.password_file: %s is empty; its first line must be the password", path);
    return SD_OK;
}

static sd_status open_kafka(const sd_source_request *r, const char *topic, sd_source *out, char *desc, size_t cap) {
    const sd_stream_config *st = r->stream;
    const char *conf[SD_STREAM_MAX_CONF];
    for (int i = 0; i < st->kafka.n_conf; i++) conf[i] = st->kafka.conf[i];
    char group[SD_STREAM_NAME_LEN + 16];
    snprintf(group, sizeof group, "%s-%d", st->kafka.group_id, r->device);
    sd_kafka_config kc = {.conn = {.bootstrap = st->kafka.bootstrap[0] ? st->kafka.bootstrap : NULL, .conf = conf,
                                   .n_conf = (size_t)st->kafka.n_conf, .connect_timeout_s = st->connect_timeout_s},
                          .topic = topic, .group_id = st->kafka.group_id[0] ? group : NULL, .ring = r->ring,
                          .commit = SD_KAFKA_COMMIT_CONSUMED};
    if (desc)
        snprintf(desc, cap, "kafka(%s) from the brokers at %s", topic,
                 st->kafka.bootstrap[0] ? st->kafka.bootstrap : "(bootstrap.servers in stream.kafka.conf)");
    sd_kafka *k = NULL;
    TRY(sd_kafka_create(&kc, &k));
    *out = sd_kafka_source(k);
    return SD_OK;
}

static sd_status open_mqtt(const sd_source_request *r, const char *topic, sd_source *out, char *desc, size_t cap) {
    const sd_stream_config *st = r->stream;
    char password[512] = "";
    if (st->mqtt.password_file[0]) TRY(read_password(st->mqtt.password_file, password, sizeof password));
    sd_mqtt_config mc = {.conn = {.host = st->mqtt.host, .port = st->mqtt.port,
                                  .username = st->mqtt.username[0] ? st->mqtt.username : NULL,
                                  .password = password[0] ? password : NULL,
                                  .cafile = st->mqtt.cafile[0] ? st->mqtt.cafile : NULL,
                                  .connect_timeout_s = st->connect_timeout_s},
                         .topic = topic, .qos = st->mqtt.qos, .ring = r->ring};
    if (desc)
        snprintf(desc, cap, "mqtt(%s) from the broker at %s:%d", topic, st->mqtt.host,
                 st->mqtt.port ? st->mqtt.port : st->mqtt.cafile[0] ? 8883 : 1883);
    sd_mqtt *m = NULL;
    sd_status s = sd_mqtt_create(&mc, &m);
    memset(password, 0, sizeof password);
    TRY(s);
    *out = sd_mqtt_source(m);
    return SD_OK;
}

sd_status sd_source_open(const sd_source_request *r, sd_source *out, char *desc, size_t desc_cap) {
    if (!r || !r->stream || !out) return SD_FAIL(SD_ERR_INVALID, "sd_source_open needs a request and an output");
    memset(out, 0, sizeof *out);
    if (desc && desc_cap) desc[0] = '\0';
    if (r->stream->source == SD_SOURCE_KIND_REPLAY) {
        if (!r->replay) return SD_FAIL(SD_ERR_INVALID, "sd_source_open: a replay source needs its replay configuration");
        sd_replay *rp = NULL;
        TRY(sd_replay_create(r->replay, &rp));
        *out = sd_replay_source(rp);
        if (desc) snprintf(desc, desc_cap, "%s", out->ops->name(out->ctx));
        return SD_OK;
    }
    char topic[SD_STREAM_NAME_LEN + 16];
    snprintf(topic, sizeof topic, "%s%d", r->stream->topic_prefix, r->device);
    if (r->stream->source == SD_SOURCE_KIND_KAFKA) TRY(open_kafka(r, topic, out, desc, desc_cap));
    else if (r->stream->source == SD_SOURCE_KIND_MQTT) TRY(open_mqtt(r, topic, out, desc, desc_cap));
    else return SD_FAIL(SD_ERR_INVALID, "stream.source %d is unknown (replay, kafka, mqtt)", (int)r->stream->source);
    return SD_OK;
}

void sd_source_close(sd_source *s) {
    if (!s) return;
    if (s->ops && s->ops->destroy) s->ops->destroy(s->ctx);
    s->ops = NULL;
    s->ctx = NULL;
}
