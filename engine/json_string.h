/* json_string.h: the engine's one JSON string escaper, for the JSON it writes piece by piece (the
 * trace, the safetensors header); files built whole go through cJSON, which escapes the same way. */
#ifndef SD_ENGINE_JSON_STRING_H
#define SD_ENGINE_JSON_STRING_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where the escaped text goes: called with runs of bytes, in order. */
typedef void (*sd_json_put_fn)(void *ctx, const char *bytes, size_t n);

/* Writes s as a JSON string literal through put: the quotes around it; '"' and '\\' escaped;
 * \b \f \n \r \t as such and the other control characters as \u00XX; every other byte (UTF-8
 * included) as it is. */
void sd_json_put_string(const char *s, sd_json_put_fn put, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
