/* experiment_schema.h: internal to engine/experiment_*.c, not part of the API (that is
 * engine/experiment.h). The schema of experiment files as tables of fields, which the loader
 * (experiment_load.c), the validator (experiment_resolve.c) and the writer (experiment_write.c)
 * walk; and what they share from experiment_schema.c: the rate presets, the enum spellings, the
 * checks of numbers and special values, the closest-spelling suggestions and BAD(), which makes
 * every schema message "<origin>: <key path>: <what>". */
#ifndef SD_ENGINE_EXPERIMENT_SCHEMA_H
#define SD_ENGINE_EXPERIMENT_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"
#include "engine/experiment.h"

_Static_assert(sizeof(sd_exp_mode) == sizeof(int) && sizeof(sd_exp_bn) == sizeof(int),
               "enum fields are stored through int pointers");

#define PATH_MAX_LEN 256 /* key paths in messages */
#define RATE_MAX 1e9     /* samples/s, as stream/rate.h's SD_RATE_MAX */

/* ---- presets ----------------------------------------------------------------------------------- */
typedef struct sd_exp_preset {
    const char *name;
    int n;
    double rates[SD_MAX_DEVICES];
} sd_exp_preset;

#define SD_EXP_N_PRESETS 3
extern const sd_exp_preset sd_exp_preset_table[SD_EXP_N_PRESETS];
/* The preset of that name, or NULL. */
const sd_exp_preset *sd_exp_find_preset(const char *name);

/* ---- enum spellings (index = enum value, NULL-terminated) -------------------------------------- */
extern const char *const sd_exp_mode_names[];
extern const char *const sd_exp_source_names[];
/* stream/dataset.h's sd_dataset_open names and their class counts */
extern const char *const sd_exp_dataset_names[];
extern const int sd_exp_dataset_classes[];

int sd_exp_name_count(const char *const *names);
/* The index of s in names, or -1. */
int sd_exp_name_index(const char *const *names, const char *s);
/* "a, b, c" */
void sd_exp_join_names(const char *const *names, char *buf, size_t n);
/* The closest of the n candidates to word, or NULL when none is close. */
const char *sd_exp_closest(const char *word, const char *const *cands, int n);

/* ---- errors and key paths ---------------------------------------------------------------------- */
/* Every schema error: "<origin>: <key path>: <what>", status SD_ERR_INVALID; origin NULL: none,
 * path NULL or "": "(top level)". */
sd_status sd_exp_bad(const char *func, const char *file, int line, const char *origin, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
#define BAD(origin, path, ...) sd_exp_bad(__func__, __FILE__, __LINE__, (origin), (path), __VA_ARGS__)

/* The shortest of %.15g..%.17g that reads back to exactly v ("null" when not finite). */
void sd_exp_fmt_double(double v, char *buf, size_t n);
/* "path.key" ("key" at the top level) and "path[i]" into out (PATH_MAX_LEN bytes). */
void sd_exp_child_path(char *out, const char *path, const char *key);
void sd_exp_index_path(char *out, const char *path, int i);

/* ---- the schema -------------------------------------------------------------------------------- */
typedef enum sd_exp_ftype {
    F_STR, F_NUM, F_INT, F_I64, F_U64, F_BOOL, F_ENUM, F_OBJ, F_LIST, F_RATES, F_MODES, F_SEEDS, F_KV
} sd_exp_ftype;

/* FORM_MODELLED, FORM_MEASURED: the two forms of a device's compute (engine/profile.h):
 * samples_per_s and step_overhead_s, or a profile file; one object gives keys of one form only. */
enum { LO_OPEN = 1, HI_OPEN = 2, ALIAS = 4, FORM_MODELLED = 8, FORM_MEASURED = 16 };

typedef sd_status (*sd_exp_str_check_fn)(const char *value, const char *origin, const char *path);

typedef struct sd_exp_field {
    const char *key;
    sd_exp_ftype type;
    size_t off;                /* from the start of the struct the table describes */
    size_t size;               /* F_STR: capacity with the NUL */
    double lo, hi;             /* numbers: the allowed range, in the JSON's unit */
    unsigned flags;            /* LO_OPEN, HI_OPEN: the bound is excluded; ALIAS: another unit, not written */
    double scale;              /* stored = JSON value x scale (numbers; 1 when written) */
    const char *const *names;  /* F_ENUM */
    const struct sd_exp_field *sub; /* F_OBJ: the nested table */
    unsigned bit;              /* device list entries: SD_EXP_DEV_* */
    sd_exp_str_check_fn check; /* F_STR */
} sd_exp_field;

/* The struct that stream.kafka's table (and its F_KV field, conf) describes. */
typedef __typeof__(((sd_stream_config *)0)->kafka) sd_exp_kafka;

/* The tables end with an entry whose key is NULL. */
extern const sd_exp_field sd_exp_top_fields[];    /* sd_experiment */
extern const sd_exp_field sd_exp_device_fields[]; /* sd_exp_device: one entry of devices.list */

/* ---- checks ------------------------------------------------------------------------------------ */
/* "'v' is not allowed; did you mean ...? (allowed: ...)" */
sd_status sd_exp_unknown_name(const char *const *names, const char *v, const char *origin, const char *path);
/* "a number > 0", "a number in [0, 1]", "an integer in 1..64" */
void sd_exp_range_text(const sd_exp_field *f, char *buf, size_t n);
/* Checks a number (in the field's JSON unit) against the field's type and range. */
sd_status sd_exp_check_number(const sd_exp_field *f, double v, const char *origin, const char *path);
/* Strips " (func at file:line)" and the "via" lines from sd_last_error(): the inner reason. */
void sd_exp_inner_reason(char *buf, size_t n);
sd_status sd_exp_check_rates(const sd_exp_rates *r, const char *origin, const char *path);
sd_status sd_exp_check_seeds(const sd_experiment *e, const char *origin);
/* Checks one stored "key=value" pair of stream.kafka.conf. */
sd_status sd_exp_check_kv_pair(const char *kv, const char *origin, const char *path);

/* The "allowed: ..." texts of optimizer.schedule, devices.rates and stream.kafka.conf. */
extern const char sd_exp_schedule_allowed[];
extern const char sd_exp_rates_allowed[];
extern const char sd_exp_conf_allowed[];

#endif
