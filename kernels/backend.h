/* backend.h: the backend interface. A backend is a table of function pointers plus a context
 * (sd_kctx). The CPU backend (kernels/cpu) fills it everywhere; the CUDA backend (kernels/cuda)
 * fills the same table when built with CUDA. Layers and the trainer only call through it.
 *
 * Memory entries move bytes between the host and the backend's memory ("device" memory is host
 * memory for the CPU backend). Every op entry is required; supports_op lets a backend decline a
 * shape or setting up front (the caller then reports SD_ERR_UNSUPPORTED naming the op). Entries
 * marked OPTIONAL may be NULL; callers then use the required entry named there. */
#ifndef SD_ENGINE_BACKEND_H
#define SD_ENGINE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/op_list.h"
#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Host <-> device traffic of a backend since it was created (transfers entry). */
typedef struct sd_transfer_stats {
    uint64_t h2d_bytes, h2d_copies; /* host -> device */
    uint64_t d2h_bytes, d2h_copies; /* device -> host */
} sd_transfer_stats;

typedef struct sd_backend_ops {
    const char *name;

    /* ---- memory ---- */
    sd_status (*alloc)(sd_kctx *k, size_t bytes, void **out); /* 64-byte aligned, not zeroed */
    void (*free)(sd_kctx *k, void *ptr);
    sd_status (*upload)(sd_kctx *k, void *dst, const void *host_src, size_t bytes);
    sd_status (*download)(sd_kctx *k, void *host_dst, const void *src, size_t bytes);
    sd_status (*copy)(sd_kctx *k, void *dst, const void *src, size_t bytes); /* within the backend */
    sd_status (*zero)(sd_kctx *k, void *ptr, size_t bytes);
    sd_status (*synchronize)(sd_kctx *k);
    bool (*supports_op)(sd_kctx *k, sd_op op, const void *params);
    void (*destroy)(sd_kctx *k);

    /* ---- OPTIONAL: asynchronous host-to-device uploads (double buffering); NULL: use upload ----
     * upload_async enqueues the copy (CUDA: on the copy stream, overlapping compute) and returns at
     * once. The copy starts only after all compute work enqueued before the last upload_wait (or
     * before this call, if there was none), so dst may be a buffer that work read: with two input
     * buffers, the next batch can be uploaded into the one the previous step used while the current
     * step computes. host_src (best: pinned memory, sd_cuda_host_alloc) must stay unchanged until
     * the next upload_wait returns.
     * upload_wait makes every op enqueued after it see the data of all earlier upload_async calls,
     * and returns once those copies are done (their host sources may then be reused). The CPU
     * backend implements them as memcpy and a no-op. */
    sd_status (*upload_async)(sd_kctx *k, void *dst, const void *host_src, size_t bytes);
    sd_status (*upload_wait)(sd_kctx *k);

    /* ---- OPTIONAL: what crossed between host and device memory so far (every copy the backend
     * makes: uploads, downloads and the scalars ops read back); NULL where host memory is the
     * device's (the CPU backend). */
    void (*transfers)(sd_kctx *k, sd_transfer_stats *out);

    /* ---- the compute ops: one field per entry of kernels/op_list.h, every one required ----
     * every backward: dx may be NULL (input gradient not needed: the first layer).
     * bn_fwd_train, bn_fwd_eval with p->relu: y = max(0, bn(x)) (x < 0 ? 0 : x, as relu_fwd), a
     *   ReLU fused into the pass; bn_relu_bwd is the backward of that: dy is the gradient of y,
     *   the ReLU passes it where y > 0, then batch norm's backward; bitwise what relu_bwd
     *   followed by bn_bwd computes. bn_bwd refuses params with relu set.
     * add_relu_fwd: y = relu(a + b), bitwise add then relu_fwd (a residual block's sum and ReLU
     *   in one pass; its backward is relu_bwd on that y). y may alias a or b.
     * maxpool_fwd: argmax holds, per output, the flat index iy * w + ix within its (n, c) input
     *   plane (as PyTorch); the first maximum wins ties, NaN propagates.
     * gap_fwd/bwd: global average pool, x [n, c, h, w] -> y [n, c]; only n, c, h, w of p are used.
     * xent_fwd: probs [n, classes] receives the softmax; *loss_out (host) the mean loss over n.
     *   Labels live in backend memory; a label outside [0, classes) is SD_ERR_INVALID.
     * xent_bwd: dlogits = (probs - onehot(labels)) * scale (scale = 1/n for a mean loss).
     * add, axpy, scale: y = a + b; y += alpha * x; x *= alpha. y may alias a or b.
     * all_finite: *all = no element of x is NaN or infinite (the trainer's check of a summed
     *   gradient where it lives: on the GPU with NCCL collectives it never reaches the host).
     *   Waits for the result.
     * dropout_fwd: y = keep ? x / (1 - p) : 0; mask[i] = keep (1 or 0).
     * The compressor's steps (comm/compress.h; results bitwise equal on every backend except
     * cz_sumsq, which is deterministic per backend):
     * topk_select: the kk entries of x[0..n) largest in |x| (sd_cpu_topk's order and ties), their
     *   indices + base in ascending order to idx_out, their values to val_out.
     * cz_velocity: u = mu * u + g, then g = u (momentum correction).
     * cz_f16_round: x = sd_f16_wire(x) (base/f16.h: saturate to +-65504, round to binary16).
     * cz_sumsq: *host_out = sum of x^2 in double over fixed blocks of 16384 added in order. Waits.
     * cz_residual: res = a, then res[idx[j]] = a[idx[j]] - val[j] (0 where that is NaN); velocity
     *   (may be NULL) is cleared at idx[j]. idx: np ascending indices < count.
     * cz_to_f16: out (2 bytes per value, any 2-byte alignment) = the binary16 bits of x.
     * cz_scatter_sum: buf holds n messages (message j at displs[j], np[j] pairs; displs and np are
     *   host arrays) in the compressor's wire format (u32 pairs, f32 gain, u32 indices, values f32
     *   or binary16; any alignment); checks each (declared pairs, indices < count and
     *   non-decreasing: SD_ERR_FORMAT naming the message) and sets out[0..count) to the sum of
     *   every message's values, added in message order. Waits for the check.
     * The sparse allreduce's steps (comm/compress.h, exchange "allreduce"):
     * cz_split: pos_host[b] = the first j with idx[j] >= bounds_host[b] (np when none), b < nb;
     *   idx: np ascending indices. Waits.
     * cz_unsent: res[idx[j]] += val[j] where out[idx[j]] == 0 and val[j] is not NaN (a contribution
     *   the reduction did not keep returns to the residual). idx: np distinct indices.
     * cz_round_excess: w = sd_f16_wire(val[j]); res[idx[j]] += val[j] - w where w != 0 and
     *   the difference is finite; val[j] = w. idx: np distinct indices. */
    SD_KERNEL_OPS(SD_OP_FIELD)
} sd_backend_ops;

typedef struct sd_backend {
    const sd_backend_ops *ops;
    sd_kctx *ctx;
} sd_backend;

/* The CPU backend. threads <= 0 means "all online cores"; the same count drives OpenBLAS and
 * the OpenMP loops of the CPU kernels. */
sd_status sd_backend_cpu_create(sd_backend *be, int threads);
/* The CUDA backend (only when built with SCADLES_HAVE_CUDA; otherwise SD_ERR_UNSUPPORTED). */
sd_status sd_backend_cuda_create(sd_backend *be, int device);
void sd_backend_destroy(sd_backend *be);

/* Checks supports_op and names the op when the backend declines. */
sd_status sd_backend_require(const sd_backend *be, sd_op op, const void *params);

#ifdef __cplusplus
}
#endif

#endif
