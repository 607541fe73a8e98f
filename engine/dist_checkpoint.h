/* dist_checkpoint.h: the pieces of a distributed run's checkpoint (docs/checkpoints.md,
 * "Distributed runs"). A checkpoint is a directory holding one safetensors file per rank,
 * rank<r>.safetensors (that device's whole state), and run.safetensors, written by rank 0 after
 * every rank file is complete (the experiment's progress: which run, which step, the summaries of
 * the runs already finished). Scalars are 0-dim tensors (F64, I64, U64), so doubles round-trip
 * exactly; the identity of the checkpoint (format, version, experiment, devices, run, step) is
 * metadata, checked on load with messages naming the file, what differs and the fix. Every file
 * carries a checksum of its tensors and metadata, so a damaged file is refused rather than resumed
 * from: the sum over tensors and metadata of an XXH3-64 hash each (checksum_algo xxh3-64-sum;
 * files of version 1 have none and sum FNV-1a hashes, which is read too).
 *
 * engine/step/checkpoint.c composes these into the device state; engine/runner.c writes and reads
 * run.safetensors. */
#ifndef SD_ENGINE_DIST_CHECKPOINT_H
#define SD_ENGINE_DIST_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/compress.h"
#include "engine/distributed.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "stream/ingest.h"
#include "stream/inject.h"
#include "stream/ring.h"
#include "stream/source.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_DIST_CKPT_FORMAT "scadles-distributed-checkpoint"
#define SD_DIST_CKPT_VERSION "2" /* 2: the checksum is named by checksum_algo; version 1 files (FNV-1a) are read too */
#define SD_DIST_CKPT_CHECKSUM_XXH3 "xxh3-64-sum"  /* what this build writes */
#define SD_DIST_CKPT_CHECKSUM_FNV1A "fnv1a-64-sum" /* version 1 files (no checksum_algo): read, never written */
#define SD_DIST_CKPT_RUN_FILE "run.safetensors"

/* What a checkpoint is of. */
typedef struct sd_dist_ckpt_id {
    const char *experiment; /* the resolved experiment as JSON, threads set to 0 (the one key a resume may change) */
    int devices;
    int run_index;          /* which mode x seed run was in progress (seed-major, as the runner orders them) */
    sd_exp_mode mode;
    uint64_t seed;
    int64_t step;           /* steps done in that run */
} sd_dist_ckpt_id;

/* The experiment's JSON for the identity (malloc'd into *out; the caller frees it). */
sd_status sd_dist_ckpt_experiment_json(const sd_experiment *e, char **out);
/* Creates the directory and its parents (mode 0755); SD_ERR_IO naming the one that failed. */
sd_status sd_dist_ckpt_mkdir(const char *dir);
/* "<dir>/rank<r>.safetensors" or "<dir>/run.safetensors" (rank < 0). */
void sd_dist_ckpt_path(const char *dir, int rank, char *out, size_t cap);

/* ---- replacing a checkpoint without losing the last good one (docs/checkpoints.md) ---------------
 * A new checkpoint of <dir> is written into <dir>.new (every rank file, then run.safetensors, last),
 * and only then switched in: <dir> -> <dir>.old, <dir>.new -> <dir>, <dir>.old removed. Whatever
 * moment a kill strikes, one complete checkpoint is left: <dir>, or a complete <dir>.new (it has its
 * run file), or <dir>.old. Rank 0 does these steps; the ranks agree around them. */
/* "<dir>.new" / "<dir>.old". */
void sd_dist_ckpt_sibling(const char *dir, const char *suffix, char *out, size_t cap);
/* Removes <dir>.new and what it holds (a checkpoint whose writing was interrupted) and creates it empty. */
sd_status sd_dist_ckpt_begin(const char *dir);
/* Switches the complete <dir>.new in for <dir>. */
sd_status sd_dist_ckpt_switch(const char *dir);
/* Before a resume from <dir>: when <dir> holds no run file (a kill between the two renames of a
 * switch, or before the first switch), a complete <dir>.new, else <dir>.old, becomes <dir> again.
 * *recovered names the one used ("" when there was nothing to recover: <dir> complete, or no
 * complete sibling, which reading <dir> then reports). SD_ERR_IO when a folder cannot be moved. */
sd_status sd_dist_ckpt_recover(const char *dir, char *recovered, size_t cap);

/* ---- writing ------------------------------------------------------------------------------------ */
/* A safetensors writer that also sums a checksum over what is added. */
typedef struct sd_dist_ckpt_writer {
    sd_st_writer *w;
    struct XXH3_state_s *hash; /* libxxhash's streaming state, reused for every tensor */
    uint64_t sum;
} sd_dist_ckpt_writer;

sd_status sd_dist_ckpt_writer_begin(sd_dist_ckpt_writer *cw, const sd_dist_ckpt_id *id, int rank, const char *reason);
/* Adds the checksum and writes the file atomically; destroys the writer either way. */
sd_status sd_dist_ckpt_writer_finish(sd_dist_ckpt_writer *cw, const char *path);
void sd_dist_ckpt_writer_abort(sd_dist_ckpt_writer *cw);

sd_status sd_dist_ckpt_put(sd_dist_ckpt_writer *cw, const char *name, sd_st_dtype dtype, int ndim, const int64_t *shape,
                           const void *data);
sd_status sd_dist_ckpt_put_f64(sd_dist_ckpt_writer *cw, const char *name, double v);
sd_status sd_dist_ckpt_put_i64(sd_dist_ckpt_writer *cw, const char *name, int64_t v);
sd_status sd_dist_ckpt_put_u64(sd_dist_ckpt_writer *cw, const char *name, uint64_t v);

/* The components. */
sd_status sd_dist_ckpt_put_net(sd_dist_ckpt_writer *cw, sd_net *net, const sd_optimizer *opt);
sd_status sd_dist_ckpt_put_ring(sd_dist_ckpt_writer *cw, sd_ring *ring, const sd_sink *sink);
/* The source's own position (its save entry, through base/archive.h; nothing when it has none). */
sd_status sd_dist_ckpt_put_source(sd_dist_ckpt_writer *cw, const sd_source *src);
sd_status sd_dist_ckpt_put_pool(sd_dist_ckpt_writer *cw, const sd_inject_pool *p, int devices);
sd_status sd_dist_ckpt_put_compressor(sd_dist_ckpt_writer *cw, const sd_compressor *z);
sd_status sd_dist_ckpt_put_rng(sd_dist_ckpt_writer *cw, const char *name, const sd_rng *rng);

/* ---- reading ------------------------------------------------------------------------------------ */
/* Opens a checkpoint file and checks format, version, checksum, the device count and the
 * experiment against `want` (and the rank, when rank >= 0): SD_ERR_FORMAT for a damaged or foreign
 * file, SD_ERR_INVALID for a checkpoint of another experiment or device count (the message names
 * the first differing line of the configuration). got: run_index, mode, seed and step as saved. */
sd_status sd_dist_ckpt_open(const char *path, const sd_dist_ckpt_id *want, int rank, sd_st_file **f,
                            sd_dist_ckpt_id *got);

/* The checksum of an open file under `algo` (SD_DIST_CKPT_CHECKSUM_XXH3 or _FNV1A): the sum over its
 * tensors and its metadata pairs but "checksum" of one 64-bit hash each (docs/checkpoints.md).
 * sd_dist_ckpt_open checks it; exported for the tests and scadles-bench_checkpoint. */
sd_status sd_dist_ckpt_checksum(const sd_st_file *f, const char *algo, uint64_t *sum);

/* The tensor `name` with this dtype and element count (SD_ERR_FORMAT naming the file otherwise). */
sd_status sd_dist_ckpt_get(const sd_st_file *f, const char *name, sd_st_dtype dtype, size_t numel,
                           const sd_st_tensor **t);
sd_status sd_dist_ckpt_get_f64(const sd_st_file *f, const char *name, double *v);
sd_status sd_dist_ckpt_get_i64(const sd_st_file *f, const char *name, int64_t *v);
sd_status sd_dist_ckpt_get_u64(const sd_st_file *f, const char *name, uint64_t *v);

sd_status sd_dist_ckpt_get_net(const sd_st_file *f, sd_net *net, sd_optimizer *opt);
/* SD_ERR_FORMAT naming the file and the tensor when the parameters, BN statistics or momentum hold
 * NaN or Inf (a valid checksum does not rule that out: a diverged run writes such weights). */
sd_status sd_dist_ckpt_check_finite(const sd_st_file *f);
sd_status sd_dist_ckpt_get_ring(const sd_st_file *f, sd_ring *ring, sd_sink *sink);
sd_status sd_dist_ckpt_get_source(const sd_st_file *f, const sd_source *src);
sd_status sd_dist_ckpt_get_pool(const sd_st_file *f, sd_inject_pool *p, int devices);
sd_status sd_dist_ckpt_get_compressor(const sd_st_file *f, sd_compressor *z);
sd_status sd_dist_ckpt_get_rng(const sd_st_file *f, const char *name, sd_rng *rng);

/* ---- run.safetensors ---------------------------------------------------------------------------- */
/* Rank 0, after every rank file is written: the identity and the summaries of the runs finished
 * before the one in progress (done[0..id->run_index)). */
sd_status sd_dist_ckpt_write_run(const char *dir, const sd_dist_ckpt_id *id, const sd_run_summary *done,
                                 const char *reason);
/* Reads it back, checked against want (experiment, devices): got (run_index, step, ...) and
 * done[0..got->run_index) (done must hold SD_EXP_MAX_MODES x SD_EXP_MAX_SEEDS). */
sd_status sd_dist_ckpt_read_run(const char *dir, const sd_dist_ckpt_id *want, sd_dist_ckpt_id *got,
                                sd_run_summary *done);

#ifdef __cplusplus
}
#endif

#endif
