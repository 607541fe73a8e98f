/* json_string.c: the JSON string escaper declared in json_string.h. */
#include "engine/json_string.h"

#include <stdio.h>

void sd_json_put_string(const char *s, sd_json_put_fn put, void *ctx) {
    put(ctx, "\"", 1);
    const char *run = s; /* the bytes since the last escape, written as one piece */
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (p > run) put(ctx, run, (size_t)(p - run));
        if (c == '\0') break;
        char esc[8] = {'\\', (char)c};
        size_t n = 2;
        switch (c) {
        case '"': case '\\': break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default: n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c); break;
        }
        put(ctx, esc, n);
        run = p + 1;
    }
    put(ctx, "\"", 1);
}
