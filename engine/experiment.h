/* experiment.h: experiment files. One JSON file describes a distributed ScaDLES experiment: the
 * model and dataset, how the data is partitioned, the devices (stream rate, compute profile, link),
 * the modes to compare (ddp, scadles), buffers, optimizer, injection, compression, evaluation and
 * budgets. This layer loads a file onto the defaults, applies `--set key=value` overrides, resolves
 * rate presets and distributions into per-device values, validates every field (each error names
 * the key path, e.g. devices.list[3].rate, and the allowed values) and writes the resolved
 * configuration back as JSON that loads to the same struct. The schema: docs/experiments.md.
 *
 * sd_experiment is a plain value: fixed-size arrays, no pointers, safe to copy with `=` or memcpy
 * and to compare with memcmp after sd_experiment_defaults (which zeroes it first). The trainer
 * reads it after sd_experiment_resolve() has returned SD_OK; then devices.dev[0..devices.count)
 * holds every device's values and every other field is in range. */
#ifndef SD_ENGINE_EXPERIMENT_H
#define SD_ENGINE_EXPERIMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "comm/compress.h"
#include "engine/profile.h"
#include "stream/source.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_MAX_DEVICES 64
#define SD_EXP_MAX_SEEDS 32
#define SD_EXP_MAX_MODES 2
#define SD_EXP_NAME_LEN 64      /* name, model, dataset, preset names (with the NUL) */
#define SD_EXP_PATH_LEN 256     /* out_dir, data_root, description */
#define SD_EXP_SCHEDULE_LEN 128 /* optimizer.schedule */
#define SD_EXP_FILE_MAX (1 << 20) /* experiment files larger than 1 MiB are refused */
#define SD_EXP_SEED_MAX 9007199254740992.0 /* 2^53: seeds must be exact in a JSON number */

/* ---- enumerations (the JSON spellings are in the comments, in enum order) ---------------------- */
typedef enum sd_exp_partition_kind {
    SD_EXP_PART_IID = 0,   /* "iid": every device streams a uniform random share of every class */
    SD_EXP_PART_SLICES,    /* "slices": device i holds classes_per_device contiguous labels */
    SD_EXP_PART_DIRICHLET  /* "dirichlet": per-device class mix drawn from Dirichlet(alpha) */
} sd_exp_partition_kind;

typedef enum sd_exp_rates_kind {
    SD_EXP_RATES_PRESET = 0, /* a named preset (sd_experiment_presets()) */
    SD_EXP_RATES_LIST,       /* an explicit array, one rate per device */
    SD_EXP_RATES_UNIFORM,    /* {"uniform": [lo, hi]}: drawn per device from rate_seed */
    SD_EXP_RATES_NORMAL      /* {"normal": [mu, sigma]}: drawn per device, truncated to > 0 */
} sd_exp_rates_kind;

typedef enum sd_exp_arrival { SD_EXP_ARRIVAL_CONSTANT = 0, SD_EXP_ARRIVAL_POISSON } sd_exp_arrival; /* "constant" "poisson" */
typedef enum sd_exp_mode { SD_EXP_MODE_DDP = 0, SD_EXP_MODE_SCADLES } sd_exp_mode;                    /* "ddp" "scadles" */
typedef enum sd_exp_backend { SD_EXP_BACKEND_LOCAL = 0, SD_EXP_BACKEND_MPI, SD_EXP_BACKEND_TCP } sd_exp_backend; /* "local" "mpi" "tcp" */
typedef enum sd_exp_clock { SD_EXP_CLOCK_VIRTUAL = 0, SD_EXP_CLOCK_REAL } sd_exp_clock;               /* "virtual" "real" */
typedef enum sd_exp_buffer_policy {
    SD_EXP_BUF_PERSISTENCE = 0, /* "persistence": keep until consumed */
    SD_EXP_BUF_TRUNCATION,      /* "truncation": discard what a step did not take */
    SD_EXP_BUF_DROP_OLDEST      /* "drop-oldest": evict the oldest when full */
} sd_exp_buffer_policy;
typedef enum sd_exp_buffer_full {
    SD_EXP_FULL_DROP_NEWEST = 0, /* "drop-newest": the arriving sample is dropped and counted */
    SD_EXP_FULL_BACKPRESSURE     /* "backpressure": the stream waits for room */
} sd_exp_buffer_full;
typedef enum sd_exp_bn { SD_EXP_BN_LOCAL = 0, SD_EXP_BN_AVERAGE } sd_exp_bn; /* "local" "average" */
/* A step whose summed gradient or loss is NaN/Inf: stop the run with a message naming the step,
 * or skip the update (counted as skipped_steps in summary.json). */
typedef enum sd_exp_nonfinite { SD_EXP_NONFINITE_STOP = 0, SD_EXP_NONFINITE_SKIP } sd_exp_nonfinite; /* "stop" "skip" */
typedef enum sd_exp_compute { SD_EXP_COMPUTE_CPU = 0, SD_EXP_COMPUTE_CUDA } sd_exp_compute; /* "cpu" "cuda" */
typedef enum sd_exp_collectives { SD_EXP_COLL_HOST = 0, SD_EXP_COLL_NCCL } sd_exp_collectives; /* "host" "nccl" */
typedef enum sd_exp_link_emulation { SD_EXP_LINK_OFF = 0, SD_EXP_LINK_TOKEN_BUCKET } sd_exp_link_emulation; /* "off" "token_bucket" */

/* ---- devices ----------------------------------------------------------------------------------- */
/* Bits of sd_exp_device.set: which values devices.list gave explicitly. */
#define SD_EXP_DEV_RATE (1u << 0)
#define SD_EXP_DEV_SAMPLES_PER_S (1u << 1)
#define SD_EXP_DEV_STEP_OVERHEAD (1u << 2)
#define SD_EXP_DEV_BANDWIDTH (1u << 3)
#define SD_EXP_DEV_LATENCY (1u << 4)
#define SD_EXP_DEV_PROFILE (1u << 5)
#define SD_EXP_DEV_SLOWDOWN (1u << 6)
#define SD_EXP_DEV_ALL 0x7fu
/* After resolve a device has every value of its compute's form: modelled (samples_per_s,
 * step_overhead_s) or measured (profile), never both (engine/profile.h). */
#define SD_EXP_DEV_RESOLVED_MODELLED (SD_EXP_DEV_ALL & ~SD_EXP_DEV_PROFILE)
#define SD_EXP_DEV_RESOLVED_MEASURED (SD_EXP_DEV_ALL & ~(SD_EXP_DEV_SAMPLES_PER_S | SD_EXP_DEV_STEP_OVERHEAD))

typedef struct sd_exp_device {
    double rate;                /* stream rate, samples/s, in (0, 1e9] */
    sd_device_profile profile;  /* compute, modelled (samples_per_s > 0, step_overhead_s >= 0) or measured
                                   (profile: a device profile file), times slowdown > 0, and link
                                   (bandwidth_bps > 0, latency_s >= 0) */
    unsigned set;               /* SD_EXP_DEV_* bits given in devices.list; after resolve:
                                   SD_EXP_DEV_RESOLVED_MODELLED or SD_EXP_DEV_RESOLVED_MEASURED */
} sd_exp_device;

typedef struct sd_exp_rates {
    sd_exp_rates_kind kind;
    char preset[SD_EXP_NAME_LEN]; /* PRESET: "uniform_s1", "uniform_s2" or "normal_s1" */
    double a, b;                  /* UNIFORM: [lo, hi] (0 <= lo <= hi, hi > 0); NORMAL: mu > 0, sigma >= 0 */
    int n;                        /* LIST: number of values */
    double values[SD_MAX_DEVICES];/* LIST: the rates, each > 0 */
} sd_exp_rates;

typedef struct sd_exp_devices {
    int count;                    /* 1..SD_MAX_DEVICES; 0 before resolve = the preset's or array's length
                                     (required with a distribution) */
    sd_exp_rates rates;           /* where the stream rates come from */
    uint64_t rate_seed;           /* seed of the uniform/normal draws (default 1) */
    sd_exp_arrival arrival;       /* how arrivals are spaced (default constant) */
    sd_device_profile profile;    /* defaults for every device: compute {2000 samples/s, 5 ms per step, or a
                                     profile file; slowdown 1}, link {100 Mbit/s, 1 ms} (JSON: devices.compute,
                                     devices.link); with a profile, samples_per_s and step_overhead_s keep
                                     their defaults */
    int list_len;                 /* entries in devices.list (<= count) */
    sd_exp_device dev[SD_MAX_DEVICES]; /* after resolve: dev[0..count) complete */
} sd_exp_devices;

/* ---- the experiment ---------------------------------------------------------------------------- */
typedef struct sd_experiment {
    char name[SD_EXP_NAME_LEN];        /* [A-Za-z0-9_.-]+, default "experiment" */
    char description[SD_EXP_PATH_LEN]; /* free text, default "" */
    char out_dir[SD_EXP_PATH_LEN];     /* relative to the working directory; "" = runs/<name> (set by resolve) */

    char model[SD_EXP_NAME_LEN];       /* engine/models.h name, default "fmnist_cnn" */
    double width;                      /* channel multiplier, (0, 16], default 1 */
    char dataset[SD_EXP_NAME_LEN];     /* fashion-mnist | mnist | cifar10 | cifar100, default fashion-mnist */
    char data_root[SD_EXP_PATH_LEN];   /* "" = the dataset's default location */

    struct {
        sd_exp_partition_kind kind;    /* default iid */
        int classes_per_device;        /* slices: 1..classes of the dataset, default 1 */
        double alpha;                  /* dirichlet concentration, > 0, default 0.5 */
    } partition;

    sd_exp_devices devices;

    int n_modes;                       /* 1..2 */
    sd_exp_mode modes[SD_EXP_MAX_MODES]; /* run in this order, no duplicates; default ddp, scadles */
    sd_exp_backend backend;            /* default local */
    sd_exp_clock clock;                /* default virtual */

    int batch;                         /* ddp's fixed per-device batch and scadles' b_ref, 1..65536, default 64 */
    double window_s;                   /* scadles window, (0, 3600], default 1 */
    int cap;                           /* scadles' largest per-device batch, 1..65536, default 256 */
    struct {
        sd_exp_buffer_policy policy;   /* default persistence */
        int64_t capacity;              /* samples, 1..2^26, default 4096 */
        sd_exp_buffer_full full;       /* when full (persistence, truncation), default drop-newest */
    } buffer;
    double ddp_timeout_s;              /* longest wait for a ddp batch, > 0, default 30 */

    struct {
        double lr;                     /* reference lr (> 0), default 0.05 */
        double momentum;               /* [0, 1), default 0.9 */
        double weight_decay;           /* >= 0, default 5e-4 */
        bool nesterov;                 /* default false */
        char schedule[SD_EXP_SCHEDULE_LEN]; /* optim.h syntax, milestones in steps, default "constant" */
        int64_t warmup_steps;          /* >= 0, default 0 */
        double lr_scale_max;           /* scadles: cap on the global-batch lr scale; 0 (default): none */
    } optimizer;

    struct {
        double alpha;                  /* [0, 1]: ceil(alpha x devices) other classes per batch; 0 = off */
        double beta;                   /* [0, 1]: beta x batch samples from each; 0 = off */
    } injection;

    struct {
        sd_compress_policy policy; /* default off */
        double ratio;                  /* Top-k fraction kept, (0, 1], default 0.1 */
        double delta;                  /* paper: vote threshold, [0, 1], default 0.3 */
        bool per_layer;                /* Top-k per layer (true) or over the whole gradient, default true */
        double min_ratio, max_ratio;   /* gain: range of the ratio, 0 < min <= max <= 1, default 0.001, 0.1 */
        double epsilon;                /* gain: threshold of the smoothed gain, (0, 1], default 0.9 */
        bool f16_values;               /* send values as float16, default false */
        bool momentum_correction;      /* momentum accumulated per device before Top-k (DGC), default true */
        bool time_aware;               /* paper: vote dense when compute + dense communication fit in the window, default false */
        sd_sparse_exchange exchange;   /* sparse steps: allgather, allreduce or auto (lower modelled time), default auto */
    } compression;

    sd_exp_bn bn;                      /* batch-norm running statistics, default average */
    sd_exp_nonfinite nonfinite;        /* NaN/Inf in loss or gradients: stop (default) or skip the step */
    sd_exp_compute compute_backend;    /* where each device computes: cpu (default) or cuda (one GPU per device) */
    sd_exp_collectives collectives;    /* host (default): the run's communicator on host memory; nccl: gradients and BN
                                          statistics summed by NCCL in GPU memory (backend mpi, compute_backend cuda) */
    sd_exp_link_emulation link_emulation; /* real clock: shape each device's collectives to its link (comm/shaper.h), default off */
    double link_burst_bytes;           /* token-bucket depth, [0, 1e12], default 65536 */
    double comm_timeout_s;             /* local and tcp backends: bound on a wait inside a collective (tcp: also the
                                          rendezvous, unless SCADLES_CONNECT_TIMEOUT_S), (0, 1e6], default 600 */
    sd_stream_config stream;              /* where samples come from: replay (default), kafka, mqtt (real clock) */
    int n_seeds;                       /* 1..SD_EXP_MAX_SEEDS */
    uint64_t seeds[SD_EXP_MAX_SEEDS];  /* one run per seed and mode, each in [0, 2^53], default [1] */
    double target_accuracy;            /* [0, 1], default 0.85; reaching it ends the run (0: no target, train to the end) */
    double eval_every_s;               /* clock seconds between evaluations, > 0, default 10 */
    int64_t eval_every_steps;          /* also evaluate every this many steps, >= 0 (0 = only by time), default 0 */
    int64_t eval_limit;                /* test samples per evaluation, >= 0 (0 = all), default 0 */
    int eval_batch;                    /* test samples per forward pass, 1..65536, default 500 */
    int64_t train_limit;               /* stream only the first N training samples, >= 0 (0 = all), default 0 */
    bool augment;                      /* the dataset's training augmentation (CIFAR: crop + flip) on every streamed
                                          sample, drawn from (seed, device, step), default false */
    int64_t checkpoint_every_steps;    /* also write the checkpoint every this many steps and go on, >= 0 (0 = only when
                                          stopped), default 0 */
    double time_budget_s;              /* clock seconds per run, > 0, default 600 */
    int64_t max_steps;                 /* >= 0 (0 = no limit), default 0 */
    int threads;                       /* compute threads, 0..1024 (0 = all cores), default 0 */
} sd_experiment;

/* Zeroes *e and sets every documented default (a valid experiment: Uniform S1, 8 devices). */
void sd_experiment_defaults(sd_experiment *e);

/* Loads a JSON experiment file onto the defaults (sd_experiment_defaults first). Files over
 * SD_EXP_FILE_MAX are SD_ERR_INVALID, unreadable files SD_ERR_IO, malformed JSON SD_ERR_FORMAT
 * naming path:line:column; unknown keys, wrong types and out-of-range values SD_ERR_INVALID
 * naming the path of the file and the key. Cross-field checks wait for sd_experiment_resolve. */
sd_status sd_experiment_load_file(const char *path, sd_experiment *e);
/* The same from a NUL-terminated string (also onto the defaults); `origin` (NULL: "<string>")
 * starts every message where load_file puts the path. On failure both leave *e unchanged. */
sd_status sd_experiment_load_string(const char *json, const char *origin, sd_experiment *e);

/* Applies one "key=value" override (the --set option). key is a dotted path as in the JSON
 * ("optimizer.lr", "devices.list[3].rate"); value is converted to the key's type: numbers,
 * true/false, strings as typed, comma-separated lists for arrays ("modes=ddp,scadles",
 * "seeds=1,2,3", "devices.rates=50,38,12"), a preset name for devices.rates, or any JSON value
 * when it starts with '[' or '{' ("devices.rates={\"uniform\": [10, 100]}"). */
sd_status sd_experiment_set(sd_experiment *e, const char *assignment);
/* Note: an object value merges into what is there; devices.list merges entry by entry (index i of
 * the given array onto device i), so "devices.list[3].rate=50" leaves devices 0..2 as they are.
 * On failure *e is unchanged. */

/* Fills in what was left to resolution: out_dir "" -> runs/<name>; devices.count from the rates
 * (a preset's or array's length; a distribution needs devices.count); per-device rates from the
 * preset, array or seeded distribution (one draw per device in order, from devices.rate_seed),
 * and compute/link from the defaults, for every value devices.list did not give; then marks every
 * device value as set (so a resolved config lists every device and re-resolves to itself) and
 * validates everything, cross-field rules included. Idempotent. On failure *e is unchanged. */
sd_status sd_experiment_resolve(sd_experiment *e);

/* MPI and TCP: the job must have exactly devices.count ranks; local: exactly one process. */
sd_status sd_experiment_check_ranks(const sd_experiment *e, int ranks);

/* Writes *e as JSON (every key, numbers exact) to `path`; sd_experiment_load_file gives back a
 * struct equal to *e byte for byte. sd_experiment_to_json returns the text in a malloc'd string
 * (*out; the caller frees it). */
sd_status sd_experiment_write_json(const sd_experiment *e, const char *path);
sd_status sd_experiment_to_json(const sd_experiment *e, char **out);

/* Space-separated names of the rate presets, for help texts: "uniform_s1 uniform_s2 normal_s1". */
const char *sd_experiment_presets(void);
/* The rates of a preset: number of devices (0 for an unknown name) and, when rates != NULL, the
 * values (rates must hold SD_MAX_DEVICES). */
int sd_experiment_preset_rates(const char *name, double *rates);

/* JSON spelling of an enum value, for logs ("ddp", "persistence", ...). */
const char *sd_exp_mode_name(sd_exp_mode m);
const char *sd_exp_source_name(sd_source_kind s);

#ifdef __cplusplus
}
#endif

#endif
