/* status.h: status codes, the thread-local error message and the TRY/CHECK macros.
 * Library code returns sd_status and never exits; apps print sd_last_error() and exit. */
#ifndef SD_STATUS_H
#define SD_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_status {
    SD_OK = 0,
    SD_ERR_INVALID,     /* bad argument or configuration */
    SD_ERR_SHAPE,       /* shapes do not agree */
    SD_ERR_UNSUPPORTED, /* a backend declines this op or setting */
    SD_ERR_OOM,         /* allocation failed */
    SD_ERR_IO,          /* file or network I/O failed */
    SD_ERR_FORMAT,      /* malformed file or message */
    SD_ERR_RUNTIME,     /* a library (BLAS, CUDA, MPI, ...) reported failure */
    SD_ERR_NUMERIC      /* NaN/Inf where finite values were required */
} sd_status;

const char *sd_status_str(sd_status s);

/* Records a formatted message for the calling thread (file:line and function are prepended
 * by the SD_FAIL macro) and returns `s`, so code can write `return SD_FAIL(SD_ERR_SHAPE, ...)`. */
sd_status sd_set_error(sd_status s, const char *func, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Appends context to the current message (used by TRY while a failure travels up). */
void sd_add_context(const char *func, const char *file, int line);
const char *sd_last_error(void);
/* The message without its status prefix and without the "via" lines TRY appended: what a user
 * needs (apps print this; SD_ERROR_TRACE=1 in the environment prints the full chain). */
const char *sd_last_error_brief(void);
void sd_clear_error(void);
/* Appends printf-style text to the NUL-terminated string in buf (size bytes), truncating quietly:
 * for building messages piece by piece. */
void sd_appendf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define SD_FAIL(s, ...) sd_set_error((s), __func__, __FILE__, __LINE__, __VA_ARGS__)

/* Passes a failure up with the caller's location appended. */
#define TRY(expr)                                                   \
    do {                                                            \
        sd_status sd_try_s_ = (expr);                               \
        if (sd_try_s_ != SD_OK) {                                   \
            sd_add_context(__func__, __FILE__, __LINE__);           \
            return sd_try_s_;                                       \
        }                                                           \
    } while (0)

/* Generic check of an expression against a success value; the library-specific macros
 * (CUDA_CHECK, CUBLAS_CHECK, NCCL_CHECK, MPI_CHECK) are built on it where those libraries live. */
#define CHECK_GEN(expr, ok, to_string, status)                                                \
    do {                                                                                      \
        __typeof__(expr) sd_chk_r_ = (expr);                                                  \
        if (sd_chk_r_ != (ok))                                                                \
            return SD_FAIL((status), "%s failed: %s", #expr, to_string(sd_chk_r_));          \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
