/* test_json_string.c: the engine's one JSON string escaper (engine/json_string.h), used by the
 * trace and the safetensors header. Checks: every byte 1..255 alone and all of them in one string
 * come back from cJSON's parser unchanged, the text is cJSON's own (cJSON_PrintUnformatted of the
 * same string), and the pieces handed to put are long runs, not one call per byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/json_string.h"
#include "tests/harness.h"

typedef struct out_buf {
    char b[4096];
    size_t len;
    int calls;
} out_buf;

static void put(void *ctx, const char *bytes, size_t n) {
    out_buf *o = ctx;
    o->calls++;
    if (o->len + n >= sizeof o->b) return;
    memcpy(o->b + o->len, bytes, n);
    o->len += n;
    o->b[o->len] = '\0';
}

/* s escaped by us and by cJSON: the same text, which parses back to s. */
static void check(const char *s, const char *what) {
    out_buf o = {.len = 0};
    sd_json_put_string(s, put, &o);
    cJSON *item = cJSON_CreateString(s);
    char *theirs = item ? cJSON_PrintUnformatted(item) : NULL;
    EXPECT(theirs && !strcmp(o.b, theirs), "%s: ours %s, cJSON's %s", what, o.b, theirs ? theirs : "(none)");
    cJSON *back = cJSON_Parse(o.b);
    EXPECT(cJSON_IsString(back) && !strcmp(back->valuestring, s), "%s: parses back to the original", what);
    cJSON_Delete(back);
    cJSON_free(theirs);
    cJSON_Delete(item);
}

int main(void) {
    char s[2], all[256], what[32];
    for (int c = 1; c < 256; c++) {
        s[0] = (char)c;
        s[1] = '\0';
        snprintf(what, sizeof what, "byte 0x%02x", c);
        check(s, what);
        all[c - 1] = (char)c;
    }
    all[255] = '\0';
    check(all, "bytes 1..255");
    check("", "the empty string");
    check("caf\xc3\xa9 \"quoted\" back\\slash tab\t nl\n", "UTF-8, quotes, backslash, tab, newline");

    out_buf o = {.len = 0};
    sd_json_put_string("net.layers.3.weight", put, &o);
    EXPECT(!strcmp(o.b, "\"net.layers.3.weight\"") && o.calls == 3, "a plain name: quote, the name, quote (%d calls)",
           o.calls);
    o = (out_buf){.len = 0};
    sd_json_put_string("a\nb", put, &o);
    EXPECT(!strcmp(o.b, "\"a\\nb\"") && o.calls == 5, "a\\nb: 5 pieces (%d)", o.calls);
    return sd_test_finish("test_json_string");
}
