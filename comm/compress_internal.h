/* compress_internal.h: the compressor's state and the helpers its two sparse exchanges share
 * (comm/compress.c: the policies, the dense and the all-gather steps; comm/compress_allreduce.c:
 * the sparse allreduce). Not a public header: users include comm/compress.h. */
#ifndef SD_COMM_COMPRESS_INTERNAL_H
#define SD_COMM_COMPRESS_INTERNAL_H

#include "comm/compress.h"

#define CZ_MAX_LEVELS 64        /* gain ladder length at most */

/* The sparse allreduce's layout for n ranks (regions [bounds[j], bounds[j+1]) of the gradient,
 * owned by rank j) and its buffers; rebuilt when n changes. */
typedef struct sd_cz_reduce_scratch {
    int n;                      /* ranks the layout is for (0: none yet) */
    uint32_t *bounds;           /* [n + 1] region bounds */
    size_t *pos;                /* [n + 1] this rank's pairs split by region (cz_split) */
    uint32_t *rows;             /* [n x (n + 1)] every rank's row: f32 gain, then pairs per region */
    size_t *sb, *sd, *rb, *rd;  /* [n] alltoallv send / receive sizes and offsets */
    size_t *rnp;                /* [n] pairs received from each rank */
    size_t *kq;                 /* [n] pairs each region's owner re-selects (phase 2 message sizes) */
    size_t *gb, *gd;            /* [n] phase-2 message bytes and offsets */
    double q_ratio;             /* the ratio kq/gb/gd were computed for (-1: none): auto's model and */
    size_t q_total;             /* the step share them; q_total: the phase-2 bytes in all */
    unsigned char *sbuf, *rbuf; /* backend memory: alltoallv send and receive buffers */
    size_t sbuf_bytes, rbuf_bytes;
    uint32_t *idx2;             /* backend memory: this rank's re-selected pairs */
    float *val2;
    size_t cap2;
} sd_cz_reduce_scratch;

struct sd_compressor {
    sd_compress_config cfg;
    size_t count;
    int nlayers;
    size_t *loff, *lcnt;        /* layers sorted by offset (per_layer), or the one whole block */
    sd_backend be;              /* where the state lives and the per-element work runs */
    bool own_be;                /* created here (a CPU backend of its own), destroyed with the compressor */
    float *residual;            /* backend memory, as everything below but the layout arrays */
    float *velocity;            /* momentum correction: u (NULL when cfg.momentum is 0) */
    bool residual_zero;         /* the residual is known to be all zeros */
    bool ineligible;            /* paper: the caller said compression cannot save time this step */
    uint32_t *idx;              /* this step's pairs: global indices, ascending */
    float *val;                 /* values as sent (after f16 rounding) */
    size_t cap_pairs;
    unsigned char *buf;         /* the gather buffer: every rank's message */
    size_t buf_bytes;
    size_t *sizes, *displs, *np; /* per rank: message bytes, offsets, pairs */
    int nranks;
    int nlevels;                /* gain: ladder length */
    sd_compress_state st;
    sd_cz_reduce_scratch ar;    /* the sparse allreduce's layout and buffers (compress_allreduce.c) */
};


/* ceil(ratio * n) clamped to [1, n] (0 for n = 0). */
size_t sd_cz_k_of(double ratio, size_t n);
/* Bytes of one wire message of np pairs (header included). */
size_t sd_cz_msg_bytes(size_t np, bool f16);
/* A buffer in the compressor's backend memory grown to `bytes` (contents not kept; *have is its
 * size): the gather buffer z->buf and the sparse allreduce's buffers. */
sd_status sd_cz_ensure_be(sd_compressor *z, void **buf, size_t *have, size_t bytes);
/* Frees backend memory of the compressor (NULL allowed). */
void sd_cz_be_free(sd_compressor *z, void *p);

/* The sparse allreduce step (exchange "allreduce", docs/compression.md): this rank's np pairs
 * (z->idx, z->val, selected from a = g) are reduced by region owners, re-selected and gathered;
 * g becomes the sum, the residual keeps a - (what the reduction kept of this rank's pairs). */
sd_status sd_cz_allreduce_step(sd_compressor *z, sd_comm *comm, sd_comm *data, float *g, size_t np, double ratio,
                               sd_compress_step *s);
/* Its modelled time before the exchange (the auto choice): balanced regions assumed. */
double sd_cz_allreduce_model_time(const sd_compressor *z, int n, size_t np, double ratio, double bandwidth_bps,
                                  double latency_s);
void sd_cz_reduce_scratch_free(sd_compressor *z);

#endif
