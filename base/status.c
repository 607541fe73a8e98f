/* status.c: status names and the per-thread error message buffer. */
#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char sd_err_buf[2048];
static _Thread_local char sd_err_brief[2048];

const char *sd_status_str(sd_status s) {
    switch (s) {
    case SD_OK: return "ok";
    case SD_ERR_INVALID: return "invalid argument";
    case SD_ERR_SHAPE: return "shape mismatch";
    case SD_ERR_UNSUPPORTED: return "unsupported";
    case SD_ERR_OOM: return "out of memory";
    case SD_ERR_IO: return "I/O error";
    case SD_ERR_FORMAT: return "malformed input";
    case SD_ERR_RUNTIME: return "runtime library error";
    case SD_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown status";
}

sd_status sd_set_error(sd_status s, const char *func, const char *file, int line, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    snprintf(sd_err_buf, sizeof sd_err_buf, "%s: %s (%s at %s:%d)", sd_status_str(s), msg, func,
             base ? base + 1 : file, line);
    return s;
}

void sd_add_context(const char *func, const char *file, int line) {
    size_t len = strlen(sd_err_buf);
    const char *base = strrchr(file, '/');
    if (len + 64 < sizeof sd_err_buf)
        snprintf(sd_err_buf + len, sizeof sd_err_buf - len, "\n  via %s at %s:%d", func,
                 base ? base + 1 : file, line);
}

const char *sd_last_error(void) { return sd_err_buf[0] ? sd_err_buf : "no error recorded"; }

void sd_clear_error(void) { sd_err_buf[0] = '\0'; }

const char *sd_last_error_brief(void) {
    if (getenv("SD_ERROR_TRACE")) return sd_last_error();
    const char *m = sd_last_error();
    /* drop "<status>: " prefixes (a message re-raised by another layer may carry several) */
    for (;;) {
        const char *p = NULL;
        for (int st = SD_ERR_INVALID; st <= SD_ERR_NUMERIC; st++) {
            size_t n = strlen(sd_status_str((sd_status)st));
            if (!strncmp(m, sd_status_str((sd_status)st), n) && m[n] == ':' && m[n + 1] == ' ') p = m + n + 2;
        }
        if (!p) break;
        m = p;
    }
    size_t len = strcspn(m, "\n");
    if (len >= sizeof sd_err_brief) len = sizeof sd_err_brief - 1;
    memcpy(sd_err_brief, m, len);
    sd_err_brief[len] = '\0';
    /* the "(func at file:line)" tail of the first line is for developers */
    char *tail = strrchr(sd_err_brief, '(');
    if (tail && tail > sd_err_brief && tail[-1] == ' ' && strstr(tail, " at ") && strchr(tail, ')')) tail[-1] = '\0';
    return sd_err_brief;
}

void sd_appendf(char *buf, size_t size, const char *fmt, ...) {
    size_t len = strlen(buf);
    if (len + 1 >= size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
}
