/* compress.cu: the CUDA twins of the gradient compressor's steps (contracts in kernels/backend.h,
 * CPU kernels in kernels/cpu/compress.c): Top-k with an index base, the momentum-correction
 * velocity (fused multiply-add, as the CPU twin), binary16 rounding and packing (base/f16.h, the
 * same integer code as the host), sums of squares over fixed blocks, the error-feedback residual
 * and the scatter-add of the gathered messages in message order. Everything is enqueued on the
 * compute stream; cz_sumsq and cz_scatter_sum wait (a scalar and a check flag come back). Message
 * bytes are read one at a time: a message may start at any address. */
#include "kernels/cuda/cuda_common.cuh"

extern "C" {
#include "base/f16.h"
}

#define CZ_NORM_BLOCK 16384 /* as the CPU twin: fixed blocks of the sums of squares */

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void add_base_kernel(uint32_t *idx, size_t kk, uint32_t base) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < kk; j += (size_t)gridDim.x * blockDim.x)
        idx[j] += base;
}

static __global__ void velocity_kernel(float mu, float *u, float *g, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = __fmaf_rn(mu, u[i], g[i]);
        u[i] = v;
        g[i] = v;
    }
}

static __global__ void f16_round_kernel(float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = sd_f16_wire(x[i]);
}

/* One block per CZ_NORM_BLOCK slice: its sum of squares in double (fixed order for a launch shape). */
static __global__ void sumsq_blocks_kernel(const float *x, size_t n, double *part) {
    __shared__ double sh[33];
    const size_t lo = (size_t)blockIdx.x * CZ_NORM_BLOCK, hi = lo + CZ_NORM_BLOCK < n ? lo + CZ_NORM_BLOCK : n;
    double s = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s = fma((double)x[i], (double)x[i], s);
    s = sd_block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

static __global__ void sum_in_order_kernel(const double *part, size_t nb, double *out) {
    double s = 0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    *out = s;
}

static __global__ void residual_kernel(const float *a, size_t np, const uint32_t *idx, const float *val, float *res,
                                       float *velocity) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < np; j += (size_t)gridDim.x * blockDim.x) {
        const uint32_t i = idx[j];
        const float d = __fsub_rn(a[i], val[j]);
        res[i] = isnan(d) ? 0.0f : d;
        if (velocity) velocity[i] = 0.0f;
    }
}

static __global__ void to_f16_kernel(const float *x, size_t n, unsigned char *out) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x) {
        const uint16_t h = sd_f32_to_f16(x[j]);
        out[2 * j] = (unsigned char)(h & 0xffu); /* little-endian, as the host's memcpy */
        out[2 * j + 1] = (unsigned char)(h >> 8);
    }
}

static __device__ __forceinline__ uint32_t ld_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static __device__ __forceinline__ float ld_val(const unsigned char *v, size_t j, bool f16) {
    if (f16) return sd_f16_to_f32((uint16_t)(v[2 * j] | v[2 * j + 1] << 8));
    return sd_bits_f32(ld_u32(v + 4 * j));
}

/* Message m's header and index order; the first bad message's number goes to *bad (atomicMin). */
static __global__ void check_kernel(const unsigned char *m, int msg, size_t np, size_t count, int *bad) {
    const unsigned char *ip = m + 8;
    if (blockIdx.x == 0 && threadIdx.x == 0 && ld_u32(m) != np) atomicMin(bad, msg);
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < np; p += (size_t)gridDim.x * blockDim.x) {
        const uint32_t i = ld_u32(ip + 4 * p);
        if (i >= count || (p > 0 && i < ld_u32(ip + 4 * (p - 1)))) atomicMin(bad, msg);
    }
}

/* Adds one message's values: the first pair of each run of equal indices adds the run in order,
 * so repeated indices add as the CPU twin does (one after the other). Bad indices are skipped
 * (the check reports them). */
static __global__ void scatter_kernel(const unsigned char *m, size_t np, bool f16, float *out, size_t count) {
    const unsigned char *ip = m + 8, *vp = ip + 4 * np;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < np; p += (size_t)gridDim.x * blockDim.x) {
        const uint32_t i = ld_u32(ip + 4 * p);
        if (i >= count || (p > 0 && ld_u32(ip + 4 * (p - 1)) == i)) continue;
        float acc = out[i];
        for (size_t q = p; q < np && ld_u32(ip + 4 * q) == i; q++) acc = __fadd_rn(acc, ld_val(vp, q, f16));
        out[i] = acc;
    }
}

/* ---- entry points ------------------------------------------------------------------------------ */

extern "C" sd_status sd_cuda_topk_select(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t base,
                                         uint32_t *idx_out, float *val_out) {
    TRY(sd_cuda_topk(k, x, n, kk, idx_out, val_out));
    if (base && kk) {
        add_base_kernel<<<sd_cuda_grid(k, kk, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(idx_out, kk, base);
        CUDA_CHECK(cudaGetLastError());
    }
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_velocity(sd_kctx *k, size_t count, float mu, float *u, float *g) {
    if (!k || (count && (!u || !g))) return SD_FAIL(SD_ERR_INVALID, "compressor velocity: NULL argument");
    if (count == 0) return SD_OK;
    velocity_kernel<<<sd_cuda_grid(k, count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(mu, u, g, count);
    CUDA_CHECK(cudaGetLastError());
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_f16_round(sd_kctx *k, size_t count, float *x) {
    if (!k || (count && !x)) return SD_FAIL(SD_ERR_INVALID, "compressor f16 rounding: NULL argument");
    if (count == 0) return SD_OK;
    f16_round_kernel<<<sd_cuda_grid(k, count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(x, count);
    CUDA_CHECK(cudaGetLastError());
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_sumsq(sd_kctx *k, size_t count, const float *x, double *host_out) {
    if (!k || !host_out || (count && !x)) return SD_FAIL(SD_ERR_INVALID, "compressor sum of squares: NULL argument");
    if (count == 0) {
        *host_out = 0;
        return SD_OK;
    }
    const size_t nb = (count + CZ_NORM_BLOCK - 1) / CZ_NORM_BLOCK;
    double *part = NULL;
    TRY(sd_cuda_workspace(k, (nb + 1) * sizeof(double), (void **)&part));
    sumsq_blocks_kernel<<<(unsigned)nb, SD_CUDA_THREADS, 0, k->stream>>>(x, count, part);
    CUDA_CHECK(cudaGetLastError());
    sum_in_order_kernel<<<1, 1, 0, k->stream>>>(part, nb, part + nb);
    CUDA_CHECK(cudaGetLastError());
    sd_cuda_count_d2h(k, sizeof(double));
    CUDA_CHECK(cudaMemcpyAsync(host_out, part + nb, sizeof(double), cudaMemcpyDeviceToHost, k->stream));
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_residual(sd_kctx *k, size_t count, const float *a, size_t np, const uint32_t *idx,
                                         const float *val, float *res, float *velocity) {
    if (!k || (count && (!a || !res)) || (np && (!idx || !val)))
        return SD_FAIL(SD_ERR_INVALID, "compressor residual: NULL argument");
    if (count && res != a)
        CUDA_CHECK(cudaMemcpyAsync(res, a, count * sizeof(float), cudaMemcpyDeviceToDevice, k->stream));
    if (np) {
        residual_kernel<<<sd_cuda_grid(k, np, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(a, np, idx, val, res,
                                                                                                 velocity);
        CUDA_CHECK(cudaGetLastError());
    }
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_to_f16(sd_kctx *k, size_t count, const float *x, unsigned char *out) {
    if (!k || (count && (!x || !out))) return SD_FAIL(SD_ERR_INVALID, "compressor f16 packing: NULL argument");
    if (count == 0) return SD_OK;
    to_f16_kernel<<<sd_cuda_grid(k, count, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(x, count, out);
    CUDA_CHECK(cudaGetLastError());
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_scatter_sum(sd_kctx *k, const unsigned char *buf, int n, const size_t *displs,
                                            const size_t *np, bool f16, float *out, size_t count) {
    if (!k || n < 0 || (n && (!buf || !displs || !np)) || (count && !out))
        return SD_FAIL(SD_ERR_INVALID, "compressor scatter: NULL argument");
    int *bad = NULL;
    TRY(sd_cuda_workspace(k, sizeof(int), (void **)&bad));
    CUDA_CHECK(cudaMemsetAsync(bad, 0x7f, sizeof(int), k->stream)); /* no bad message */
    if (count) CUDA_CHECK(cudaMemsetAsync(out, 0, count * sizeof(float), k->stream));
    for (int j = 0; j < n; j++) {
        const unsigned blocks = np[j] ? sd_cuda_grid(k, np[j], SD_CUDA_THREADS) : 1;
        check_kernel<<<blocks, SD_CUDA_THREADS, 0, k->stream>>>(buf + displs[j], j, np[j], count, bad);
        CUDA_CHECK(cudaGetLastError());
    }
    for (int j = 0; j < n; j++) { /* message order: one launch after the other on the stream */
        if (!np[j]) continue;
        scatter_kernel<<<sd_cuda_grid(k, np[j], SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(buf + displs[j], np[j],
                                                                                                   f16, out, count);
        CUDA_CHECK(cudaGetLastError());
    }
    int hbad = 0;
    sd_cuda_count_d2h(k, sizeof(int));
    CUDA_CHECK(cudaMemcpyAsync(&hbad, bad, sizeof(int), cudaMemcpyDeviceToHost, k->stream));
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    if (hbad != 0x7f7f7f7f)
        return SD_FAIL(SD_ERR_FORMAT, "sparse message of rank %d has a wrong pair count, or indices out of order or "
                       ">= %zu", hbad, count);
    return SD_OK;
}

/* ---- the sparse allreduce's steps -------------------------------------------------------------- */

static __global__ void split_kernel(const uint32_t *idx, size_t np, const uint32_t *bounds, int nb, size_t *pos) {
    const int b = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (b >= nb) return;
    size_t lo = 0, hi = np;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (idx[mid] < bounds[b]) lo = mid + 1;
        else hi = mid;
    }
    pos[b] = lo;
}

static __global__ void unsent_kernel(size_t np, const uint32_t *idx, const float *val, const float *out, float *res) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < np; j += (size_t)gridDim.x * blockDim.x) {
        const uint32_t i = idx[j];
        if (out[i] == 0.0f && !isnan(val[j])) res[i] = __fadd_rn(res[i], val[j]);
    }
}

static __global__ void round_excess_kernel(size_t np, const uint32_t *idx, float *val, float *res) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < np; j += (size_t)gridDim.x * blockDim.x) {
        const float v = val[j], w = sd_f16_wire(v), d = __fsub_rn(v, w);
        if (w != 0.0f && isfinite(d)) res[idx[j]] = __fadd_rn(res[idx[j]], d);
        val[j] = w;
    }
}

extern "C" sd_status sd_cuda_cz_split(sd_kctx *k, size_t np, const uint32_t *idx, int nb, const uint32_t *bounds_host,
                                      size_t *pos_host) {
    if (!k || nb < 0 || (nb && (!bounds_host || !pos_host)) || (np && !idx))
        return SD_FAIL(SD_ERR_INVALID, "compressor split: NULL argument");
    if (nb == 0) return SD_OK;
    const size_t nbz = (size_t)nb;
    size_t *dpos = NULL; /* workspace: [nb positions | nb bounds] */
    TRY(sd_cuda_workspace(k, nbz * (sizeof(size_t) + sizeof(uint32_t)), (void **)&dpos));
    uint32_t *dbounds = (uint32_t *)(dpos + nbz);
    sd_cuda_count_h2d(k, nbz * sizeof(uint32_t));
    CUDA_CHECK(cudaMemcpyAsync(dbounds, bounds_host, nbz * sizeof(uint32_t), cudaMemcpyHostToDevice, k->stream));
    split_kernel<<<(unsigned)((nbz + SD_CUDA_THREADS - 1) / SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(
        idx, np, dbounds, nb, dpos);
    CUDA_CHECK(cudaGetLastError());
    sd_cuda_count_d2h(k, nbz * sizeof(size_t));
    CUDA_CHECK(cudaMemcpyAsync(pos_host, dpos, nbz * sizeof(size_t), cudaMemcpyDeviceToHost, k->stream));
    CUDA_CHECK(cudaStreamSynchronize(k->stream));
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_unsent(sd_kctx *k, size_t np, const uint32_t *idx, const float *val, const float *out,
                                       float *res) {
    if (!k || (np && (!idx || !val || !out || !res))) return SD_FAIL(SD_ERR_INVALID, "compressor unsent: NULL argument");
    if (np == 0) return SD_OK;
    unsent_kernel<<<sd_cuda_grid(k, np, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(np, idx, val, out, res);
    CUDA_CHECK(cudaGetLastError());
    return SD_OK;
}

extern "C" sd_status sd_cuda_cz_round_excess(sd_kctx *k, size_t np, const uint32_t *idx, float *val, float *res) {
    if (!k || (np && (!idx || !val || !res)))
        return SD_FAIL(SD_ERR_INVALID, "compressor rounding excess: NULL argument");
    if (np == 0) return SD_OK;
    round_excess_kernel<<<sd_cuda_grid(k, np, SD_CUDA_THREADS), SD_CUDA_THREADS, 0, k->stream>>>(np, idx, val, res);
    CUDA_CHECK(cudaGetLastError());
    return SD_OK;
}
