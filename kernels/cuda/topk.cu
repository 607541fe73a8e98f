/* topk.cu: Top-k by magnitude on the GPU (gradient compression), the CUDA twin of kernels/cpu/topk.c
 * with the same contract and the same result bit for bit (cuda_kernels.h, section "topk.cu"): the kk
 * entries of largest |x|, ties to the lowest index, NaN above +-inf above every finite value, -0 == +0,
 * written as (u32 index, f32 value) pairs in ascending index order. No sort.
 *
 * Keys: the bit pattern of |x| as an unsigned integer (orders non-negative floats exactly); every NaN
 * gets 0x7f800001, one above +inf, as on the CPU. Keys are < 2^31.
 *
 * Algorithm, all on the compute stream, no host round trip, no allocation after the first call:
 *  1. Radix select, three passes over x (digits of 11, 10 and 10 bits: key bits 30..20, 19..10, 9..0).
 *     Each pass builds the histogram of the digit over the entries that share the digits resolved so
 *     far (per-block shared-memory histograms, flushed to one global histogram with atomics); a
 *     one-block kernel finds the digit of the wanted rank by a suffix scan and narrows the prefix.
 *     After the third pass the prefix is the exact kk-th largest key T and `need` says how many of the
 *     entries with key == T to take (the lowest-index ones).
 *  2. Compaction in index order: x is cut into tiles (one block each); a count kernel gives every tile
 *     its number of keys > T and == T; a one-block scan gives every tile the ties it takes (ties go to
 *     the lowest tiles first) and its output offset; a write kernel walks its tile in chunks of one
 *     element per thread, ranks ties and selections with warp ballots, and writes in index order.
 * Traffic: five reads of x (three histograms, count, write) plus the kk pairs written.
 *
 * Scratch: one small device block owned by the context (histogram, state, four words per tile),
 * allocated on the first call and kept until the context is destroyed. */
#include "kernels/cuda/cuda_common.cuh"

#define TK_KEY_NAN 0x7f800001u
#define TK_THREADS 256             /* histogram, count and write kernels */
#define TK_SCAN_THREADS 1024       /* the one-block find and scan kernels */
#define TK_BINS0 2048u             /* digit 0: key bits 30..20 */
#define TK_BINS12 1024u            /* digits 1 and 2: bits 19..10 and 9..0 */
#define TK_TILE 8192u              /* entries per compaction tile, at least (a multiple of TK_THREADS) */
#define TK_MAX_TILES 4096u         /* tiles at most (larger inputs get larger tiles) */

/* Device-side state of one call. */
typedef struct tk_state {
    unsigned int prefix;     /* key bits resolved so far (after the last pass: T) */
    unsigned int pmask;      /* which bits those are */
    unsigned long long want; /* rank still to find among the entries matching prefix (at the end: ties to take) */
} tk_state;

/* Layout of the context's scratch block. */
typedef struct tk_scratch {
    unsigned int hist[TK_BINS0];
    tk_state st;
    unsigned int gt[TK_MAX_TILES], eq[TK_MAX_TILES], take[TK_MAX_TILES], out[TK_MAX_TILES];
} tk_scratch;

__device__ __forceinline__ unsigned int tk_key(float v) {
    const unsigned int u = __float_as_uint(v) & 0x7fffffffu;
    return u > 0x7f800000u ? TK_KEY_NAN : u;
}

/* Exclusive prefix sum of v over the block (blockDim.x <= TK_SCAN_THREADS), every thread calls it. */
__device__ unsigned long long tk_block_excl_scan(unsigned long long v, unsigned long long *sh) {
    const unsigned int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned int off = 1; off < blockDim.x; off <<= 1) {
        const unsigned long long add = t >= off ? sh[t - off] : 0ull;
        __syncthreads();
        sh[t] += add;
        __syncthreads();
    }
    const unsigned long long r = sh[t] - v;
    __syncthreads(); /* sh may be reused right after */
    return r;
}

/* ---- kernels ----------------------------------------------------------------------------------- */

static __global__ void tk_init_kernel(tk_scratch *s, unsigned long long kk) {
    for (unsigned int b = threadIdx.x; b < TK_BINS0; b += blockDim.x) s->hist[b] = 0;
    if (threadIdx.x == 0) {
        s->st.prefix = 0;
        s->st.pmask = 0;
        s->st.want = kk;
    }
}

/* Histogram of digit (key >> shift) & (nbins - 1) over the entries whose resolved bits match. */
static __global__ void tk_hist_kernel(const float *x, size_t n, const tk_scratch *s, int shift, unsigned int nbins,
                                      unsigned int *hist) {
    __shared__ unsigned int sh[TK_BINS0];
    for (unsigned int b = threadIdx.x; b < nbins; b += blockDim.x) sh[b] = 0;
    const unsigned int prefix = s->st.prefix, pmask = s->st.pmask, dmask = nbins - 1u;
    __syncthreads();
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const unsigned int key = tk_key(x[i]);
        if ((key & pmask) == prefix) atomicAdd(&sh[(key >> shift) & dmask], 1u);
    }
    __syncthreads();
    for (unsigned int b = threadIdx.x; b < nbins; b += blockDim.x)
        if (sh[b]) atomicAdd(&hist[b], sh[b]);
}

/* One block of TK_SCAN_THREADS: the digit b such that fewer than `want` matching entries have a
 * larger digit and at least `want` have a digit >= b; narrows the prefix to it and zeroes the
 * histogram for the next pass. nbins is a multiple of blockDim.x. */
static __global__ void tk_find_kernel(tk_scratch *s, int shift, unsigned int nbins) {
    __shared__ unsigned long long sh[TK_SCAN_THREADS];
    const unsigned long long want = s->st.want; /* read by every thread before anyone writes it */
    const unsigned int t = threadIdx.x, per = nbins / blockDim.x;
    /* thread t owns the bins nbins-1-t*per, ... (descending), so the scan runs from the top bin down */
    unsigned long long local = 0;
    for (unsigned int j = 0; j < per; j++) local += s->hist[nbins - 1u - (t * per + j)];
    unsigned long long before = tk_block_excl_scan(local, sh);
    for (unsigned int j = 0; j < per; j++) {
        const unsigned int b = nbins - 1u - (t * per + j);
        const unsigned long long h = s->hist[b];
        if (before < want && before + h >= want) { /* exactly one thread and bin */
            s->st.prefix |= b << shift;
            s->st.pmask |= (nbins - 1u) << shift;
            s->st.want = want - before;
        }
        before += h;
    }
    __syncthreads();
    for (unsigned int b = t; b < nbins; b += blockDim.x) s->hist[b] = 0;
}

/* Per tile: entries with key > T and key == T. */
static __global__ void tk_count_kernel(const float *x, size_t n, size_t tile, tk_scratch *s) {
    __shared__ unsigned int cnt[2];
    if (threadIdx.x == 0) cnt[0] = cnt[1] = 0;
    __syncthreads();
    const unsigned int T = s->st.prefix;
    const size_t lo = (size_t)blockIdx.x * tile, hi = lo + tile < n ? lo + tile : n;
    unsigned int gt = 0, eq = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const unsigned int key = tk_key(x[i]);
        gt += key > T;
        eq += key == T;
    }
    if (gt) atomicAdd(&cnt[0], gt);
    if (eq) atomicAdd(&cnt[1], eq);
    __syncthreads();
    if (threadIdx.x == 0) {
        s->gt[blockIdx.x] = cnt[0];
        s->eq[blockIdx.x] = cnt[1];
    }
}

/* One block of TK_SCAN_THREADS: ties taken per tile (lowest tiles first, `need` in all) and output
 * offsets (exclusive prefix of gt + take). */
static __global__ void tk_scan_kernel(tk_scratch *s, unsigned int ntiles) {
    __shared__ unsigned long long sh[TK_SCAN_THREADS];
    const unsigned long long need = s->st.want;
    const unsigned int per = (ntiles + blockDim.x - 1u) / blockDim.x;
    unsigned int lo = threadIdx.x * per, hi = lo + per;
    if (lo > ntiles) lo = ntiles;
    if (hi > ntiles) hi = ntiles;
    unsigned long long local = 0;
    for (unsigned int b = lo; b < hi; b++) local += s->eq[b];
    unsigned long long before = tk_block_excl_scan(local, sh);
    unsigned long long sel = 0;
    for (unsigned int b = lo; b < hi; b++) {
        const unsigned long long e = s->eq[b];
        const unsigned long long tk = before >= need ? 0ull : (need - before < e ? need - before : e);
        s->take[b] = (unsigned int)tk;
        before += e;
        sel += s->gt[b] + tk;
    }
    unsigned long long off = tk_block_excl_scan(sel, sh);
    for (unsigned int b = lo; b < hi; b++) {
        s->out[b] = (unsigned int)off;
        off += s->gt[b] + s->take[b];
    }
}

/* Per tile, in index order: every key > T and the first take[tile] keys == T. blockDim.x is
 * TK_THREADS (a multiple of 32). */
static __global__ void tk_write_kernel(const float *x, size_t n, size_t tile, const tk_scratch *s,
                                       uint32_t *idx_out, float *val_out) {
    __shared__ unsigned int wt_e[TK_THREADS / 32], wt_s[TK_THREADS / 32];
    const unsigned int b = blockIdx.x;
    const unsigned int take = s->take[b];
    if (s->gt[b] == 0 && take == 0) return; /* the whole block leaves: no barrier is left waiting */
    const unsigned int T = s->st.prefix, base = s->out[b];
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const unsigned int lt = (1u << lane) - 1u;
    const size_t lo = (size_t)b * tile, hi = lo + tile < n ? lo + tile : n;
    unsigned int ties = 0, sel = 0; /* taken so far in this tile (uniform over the block) */
    for (size_t c = lo; c < hi; c += blockDim.x) {
        const size_t i = c + threadIdx.x;
        float v = 0.0f;
        unsigned int key = 0;
        const bool ok = i < hi;
        if (ok) {
            v = x[i];
            key = tk_key(v);
        }
        const bool g = ok && key > T, e = ok && key == T;
        const unsigned int be = __ballot_sync(0xffffffffu, e);
        if (lane == 0) wt_e[warp] = __popc(be);
        __syncthreads();
        unsigned int off_e = 0, tot_e = 0;
        for (unsigned int w = 0; w < nw; w++) {
            off_e += w < warp ? wt_e[w] : 0u;
            tot_e += wt_e[w];
        }
        const bool take_me = g || (e && ties + off_e + (unsigned int)__popc(be & lt) < take);
        const unsigned int bs = __ballot_sync(0xffffffffu, take_me);
        if (lane == 0) wt_s[warp] = __popc(bs);
        __syncthreads();
        unsigned int off_s = 0, tot_s = 0;
        for (unsigned int w = 0; w < nw; w++) {
            off_s += w < warp ? wt_s[w] : 0u;
            tot_s += wt_s[w];
        }
        if (take_me) {
            const unsigned int pos = base + sel + off_s + (unsigned int)__popc(bs & lt);
            idx_out[pos] = (uint32_t)i;
            val_out[pos] = v;
        }
        ties += tot_e;
        sel += tot_s;
        __syncthreads(); /* wt_e / wt_s are rewritten by the next chunk */
    }
}

/* kk == n: everything, in index order. */
static __global__ void tk_all_kernel(const float *x, size_t n, uint32_t *idx_out, float *val_out) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        idx_out[i] = (uint32_t)i;
        val_out[i] = x[i];
    }
}

/* ---- launchers (stream last) ------------------------------------------------------------------- */

static cudaError_t tk_all_launch(const sd_kctx *k, const float *x, size_t n, uint32_t *idx_out, float *val_out,
                                 cudaStream_t st) {
    tk_all_kernel<<<sd_cuda_grid(k, n, TK_THREADS), TK_THREADS, 0, st>>>(x, n, idx_out, val_out);
    return cudaGetLastError();
}

static cudaError_t tk_select_launch(const sd_kctx *k, tk_scratch *s, const float *x, size_t n, size_t kk,
                                    uint32_t *idx_out, float *val_out, cudaStream_t st) {
    /* histogram blocks: enough to fill the device (8 per SM), each flushing only its non-zero bins */
    size_t hb = (n + TK_THREADS - 1) / TK_THREADS;
    const size_t hcap = (size_t)(k->sm_count > 0 ? k->sm_count : 1) * 8;
    if (hb > hcap) hb = hcap;
    /* compaction tiles: TK_TILE entries, or more so that there are at most TK_MAX_TILES */
    size_t tile = TK_TILE;
    if ((n + tile - 1) / tile > TK_MAX_TILES) {
        tile = (n + TK_MAX_TILES - 1) / TK_MAX_TILES;
        tile = (tile + TK_THREADS - 1) / TK_THREADS * TK_THREADS;
    }
    const unsigned int ntiles = (unsigned int)((n + tile - 1) / tile);
    static const int shift[3] = {20, 10, 0};
    static const unsigned int nbins[3] = {TK_BINS0, TK_BINS12, TK_BINS12};

    tk_init_kernel<<<1, TK_THREADS, 0, st>>>(s, (unsigned long long)kk);
    for (int p = 0; p < 3; p++) {
        tk_hist_kernel<<<(unsigned int)hb, TK_THREADS, 0, st>>>(x, n, s, shift[p], nbins[p], s->hist);
        tk_find_kernel<<<1, TK_SCAN_THREADS, 0, st>>>(s, shift[p], nbins[p]);
    }
    tk_count_kernel<<<ntiles, TK_THREADS, 0, st>>>(x, n, tile, s);
    tk_scan_kernel<<<1, TK_SCAN_THREADS, 0, st>>>(s, ntiles);
    tk_write_kernel<<<ntiles, TK_THREADS, 0, st>>>(x, n, tile, s, idx_out, val_out);
    return cudaGetLastError();
}

/* ---- entry point ------------------------------------------------------------------------------- */

static sd_status tk_get_scratch(sd_kctx *k, tk_scratch **out) {
    if (!k->topk_scratch) {
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, sizeof(tk_scratch));
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return SD_FAIL(SD_ERR_OOM, "topk: cudaMalloc of %zu bytes of scratch failed: %s", sizeof(tk_scratch),
                           sd_cuda_describe(e));
        }
        k->topk_scratch = p;
    }
    *out = (tk_scratch *)k->topk_scratch;
    return SD_OK;
}

extern "C" sd_status sd_cuda_topk(sd_kctx *k, const float *x, size_t n, size_t kk, uint32_t *idx_out,
                                  float *val_out) {
    if (!k) return SD_FAIL(SD_ERR_INVALID, "topk: NULL kernel context");
    if (kk > n) return SD_FAIL(SD_ERR_INVALID, "topk: k = %zu exceeds n = %zu", kk, n);
    if (n > (size_t)UINT32_MAX)
        return SD_FAIL(SD_ERR_UNSUPPORTED, "topk: n = %zu exceeds the 32-bit index range", n);
    if (kk == 0) return SD_OK;
    if (!x || !idx_out || !val_out)
        return SD_FAIL(SD_ERR_INVALID, "topk: NULL argument (x, idx_out and val_out are required for k > 0)");
    if (kk == n) {
        CUDA_CHECK(tk_all_launch(k, x, n, idx_out, val_out, k->stream));
        return SD_OK;
    }
    tk_scratch *s = NULL;
    TRY(tk_get_scratch(k, &s));
    CUDA_CHECK(tk_select_launch(k, s, x, n, kk, idx_out, val_out, k->stream));
    return SD_OK;
}
