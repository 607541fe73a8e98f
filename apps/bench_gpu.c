/* bench_gpu.c: scadles-bench_gpu, the CUDA backend's benchmark (built only with CUDA). Every result is
 * validated before it is timed, with the production kernels through the backend table:
 *  - ops: conv2d fwd/bwd, linear fwd/bwd (GFLOP/s), batch norm, ReLU, max pool, SGD (GB/s of the
 *    minimal traffic), each first compared with the CPU backend on the same inputs (NMSE bounds of
 *    tests/test_cuda_parity.c);
 *  - models: ResNet-18 and VGG-19 (CIFAR forms, engine/models.c) training images/s at batch 64 and
 *    128 (forward, loss, backward, SGD with momentum), validated by one step at batch 8 against the
 *    CPU backend from identical weights (loss within 1e-3 relative);
 *  - topk: sd_cuda_topk at 1M/10M/25M x ratio 0.01/0.1 (bitwise equal to sd_cpu_topk first) against
 *    one streaming read of the input (cublasSasum, the bound), measured in the same run;
 *  - h2d: cudaMemcpyAsync of 256 MiB from pinned memory (the copy engine's peak in this run), the
 *    backend's upload and upload_async of a batch-sized pinned staging buffer, and pageable memory;
 *  - nccl (built with NCCL): ncclAllReduce over every visible GPU from this one process
 *    (ncclCommInitAll), algbw = bytes / time and busbw = algbw x 2(n-1)/n as nccl-tests define them,
 *    validated with small integers first.
 * Lines starting with "result" are machine-readable (scripts/bench_gpu.sh compares them with
 * tests/bench/torch_gpu_peer.py). Without a CUDA device it prints "skipped: no CUDA device" and
 * exits 0. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps/cli/cli.h"
#include "engine/models.h"
#include "engine/net.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_kernels.h"

#ifdef SCADLES_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_kernels.h"
#ifdef SD_BENCH_NCCL
#include <nccl.h>
#endif

static sd_backend gpu, cpu;
static cudaStream_t g_stream;
static int g_reps = 20, g_failed = 0;
static const char *g_only = NULL;

#define DIE_IF(cond, ...)                                                \
    do {                                                                 \
        if (cond) {                                                      \
            fprintf(stderr, "scadles-bench_gpu: " __VA_ARGS__);          \
            fprintf(stderr, "\n");                                       \
            exit(1);                                                     \
        }                                                                \
    } while (0)
#define OK(expr) DIE_IF((expr) != SD_OK, "%s failed: %s", #expr, sd_last_error())
#define CU(expr)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (expr);                                                                   \
        DIE_IF(e_ != cudaSuccess, "%s failed: %s: %s", #expr, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
    } while (0)

static int want(const char *section) { return !g_only || strstr(g_only, section) != NULL; }

/* ---- data ------------------------------------------------------------------------------------- */
static uint64_t splitmix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)((double)(splitmix(seed + i) >> 11) * 0x1p-53);
}

/* Normal(0, 1e-3), the bench_topk data. */
static void fill_normal(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint64_t h = splitmix(i * 2 + 12345), h2 = splitmix(i * 2 + 12346);
        double u1 = ((double)(h >> 11) + 1.0) * 0x1p-53, u2 = (double)(h2 >> 11) * 0x1p-53;
        x[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2) * 1e-3);
    }
}

/* A buffer in both backends with the same contents. */
typedef struct dual {
    size_t n;
    float *c, *g;
} dual;

static dual dual_make(size_t n, uint64_t seed, float lo, float hi) {
    dual d = {n, NULL, NULL};
    OK(cpu.ops->alloc(cpu.ctx, n * sizeof(float), (void **)&d.c));
    OK(gpu.ops->alloc(gpu.ctx, n * sizeof(float), (void **)&d.g));
    fill_uniform(d.c, n, seed, lo, hi);
    OK(gpu.ops->upload(gpu.ctx, d.g, d.c, n * sizeof(float)));
    return d;
}

static void dual_free(dual *d) {
    if (d->c) cpu.ops->free(cpu.ctx, d->c);
    if (d->g) gpu.ops->free(gpu.ctx, d->g);
    d->c = d->g = NULL;
}

/* NMSE of the GPU copy against the CPU copy; a failure is counted and printed. */
static double check(const char *what, const dual *d, double bound) {
    float *h = malloc(d->n * sizeof(float));
    DIE_IF(!h, "out of memory");
    OK(gpu.ops->download(gpu.ctx, h, d->g, d->n * sizeof(float)));
    double num = 0, den = 0;
    for (size_t i = 0; i < d->n; i++) {
        const double e = (double)h[i] - (double)d->c[i];
        num += e * e;
        den += (double)d->c[i] * (double)d->c[i];
    }
    free(h);
    const double nmse = den > 0 ? num / den : num;
    if (!(nmse <= bound)) {
        printf("VALIDATION FAILED: %s: NMSE %.3g exceeds %.1g against the CPU backend\n", what, nmse, bound);
        g_failed++;
    }
    return nmse;
}

/* ---- timing ----------------------------------------------------------------------------------- */
typedef sd_status (*op_fn)(void *arg);

/* Mean seconds per call over g_reps calls after 3 warm-up calls, by CUDA events on the compute stream. */
static double time_op(op_fn fn, void *arg) {
    for (int i = 0; i < 3; i++) OK(fn(arg));
    cudaEvent_t a, b;
    CU(cudaEventCreate(&a));
    CU(cudaEventCreate(&b));
    CU(cudaEventRecord(a, g_stream));
    for (int i = 0; i < g_reps; i++) OK(fn(arg));
    CU(cudaEventRecord(b, g_stream));
    CU(cudaEventSynchronize(b));
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    OK(gpu.ops->synchronize(gpu.ctx));
    return (double)ms * 1e-3 / g_reps;
}

/* ---- ops -------------------------------------------------------------------------------------- */
typedef struct conv_arg {
    sd_conv2d_params p;
    dual x, w, y, dy, dx, dw;
} conv_arg;
static sd_status conv_fwd(void *a_) {
    conv_arg *a = a_;
    return gpu.ops->conv2d_fwd(gpu.ctx, &a->p, a->x.g, a->w.g, NULL, a->y.g);
}
static sd_status conv_bwd(void *a_) {
    conv_arg *a = a_;
    return gpu.ops->conv2d_bwd(gpu.ctx, &a->p, a->x.g, a->w.g, a->dy.g, a->dx.g, a->dw.g, NULL);
}

static void bench_conv(int n, int c, int hw, int k, int ks, int stride) {
    conv_arg a;
    OK(sd_conv2d_params_make(&a.p, n, c, hw, hw, k, ks, ks, stride, stride, ks / 2, ks / 2, 0));
    const size_t xn = (size_t)n * c * hw * hw, wn = (size_t)k * c * ks * ks, yn = (size_t)n * k * a.p.oh * a.p.ow;
    a.x = dual_make(xn, 1, -1, 1), a.w = dual_make(wn, 2, -0.1f, 0.1f), a.y = dual_make(yn, 3, 0, 0);
    a.dy = dual_make(yn, 4, -1, 1), a.dx = dual_make(xn, 5, 0, 0), a.dw = dual_make(wn, 6, 0, 0);
    OK(cpu.ops->conv2d_fwd(cpu.ctx, &a.p, a.x.c, a.w.c, NULL, a.y.c));
    OK(conv_fwd(&a));
    const double e1 = check("conv2d fwd", &a.y, 1e-8);
    OK(cpu.ops->conv2d_bwd(cpu.ctx, &a.p, a.x.c, a.w.c, a.dy.c, a.dx.c, a.dw.c, NULL));
    OK(conv_bwd(&a));
    const double e2 = check("conv2d bwd dx", &a.dx, 1e-8), e3 = check("conv2d bwd dw", &a.dw, 1e-8);
    const double flops = 2.0 * (double)yn * c * ks * ks;
    const double tf = time_op(conv_fwd, &a), tb = time_op(conv_bwd, &a);
    printf("  conv2d  [%d,%d,%d,%d] k%d %dx%d s%d   fwd %8.3f ms %8.1f GFLOP/s   bwd (dx+dw) %8.3f ms %8.1f GFLOP/s"
           "   (nmse %.1e %.1e %.1e)\n", n, c, hw, hw, k, ks, ks, stride, tf * 1e3, flops / tf * 1e-9, tb * 1e3,
           2 * flops / tb * 1e-9, e1, e2, e3);
    printf("result op conv2d_fwd_%d_%d_%d_%d gflops %.2f\nresult op conv2d_bwd_%d_%d_%d_%d gflops %.2f\n", n, c, hw, k,
           flops / tf * 1e-9, n, c, hw, k, 2 * flops / tb * 1e-9);
    dual_free(&a.x), dual_free(&a.w), dual_free(&a.y), dual_free(&a.dy), dual_free(&a.dx), dual_free(&a.dw);
}

typedef struct lin_arg {
    sd_linear_params p;
    dual x, w, b, y, dy, dx, dw, db;
} lin_arg;
static sd_status lin_fwd(void *a_) {
    lin_arg *a = a_;
    return gpu.ops->linear_fwd(gpu.ctx, &a->p, a->x.g, a->w.g, a->b.g, a->y.g);
}
static sd_status lin_bwd(void *a_) {
    lin_arg *a = a_;
    return gpu.ops->linear_bwd(gpu.ctx, &a->p, a->x.g, a->w.g, a->dy.g, a->dx.g, a->dw.g, a->db.g);
}

static void bench_linear(int n, int in, int out) {
    lin_arg a;
    OK(sd_linear_params_make(&a.p, n, in, out, 1));
    a.x = dual_make((size_t)n * in, 11, -1, 1), a.w = dual_make((size_t)out * in, 12, -0.05f, 0.05f);
    a.b = dual_make((size_t)out, 13, -1, 1), a.y = dual_make((size_t)n * out, 14, 0, 0);
    a.dy = dual_make((size_t)n * out, 15, -1, 1), a.dx = dual_make((size_t)n * in, 16, 0, 0);
    a.dw = dual_make((size_t)out * in, 17, 0, 0), a.db = dual_make((size_t)out, 18, 0, 0);
    OK(cpu.ops->linear_fwd(cpu.ctx, &a.p, a.x.c, a.w.c, a.b.c, a.y.c));
    OK(lin_fwd(&a));
    const double e1 = check("linear fwd", &a.y, 1e-10);
    OK(cpu.ops->linear_bwd(cpu.ctx, &a.p, a.x.c, a.w.c, a.dy.c, a.dx.c, a.dw.c, a.db.c));
    OK(lin_bwd(&a));
    const double e2 = check("linear bwd dx", &a.dx, 1e-10), e3 = check("linear bwd dw", &a.dw, 1e-10);
    const double flops = 2.0 * n * (double)in * out;
    const double tf = time_op(lin_fwd, &a), tb = time_op(lin_bwd, &a);
    printf("  linear  %d x %d -> %d            fwd %8.3f ms %8.1f GFLOP/s   bwd (dx+dw) %8.3f ms %8.1f GFLOP/s"
           "   (nmse %.1e %.1e %.1e)\n", n, in, out, tf * 1e3, flops / tf * 1e-9, tb * 1e3, 2 * flops / tb * 1e-9, e1,
           e2, e3);
    printf("result op linear_fwd_%d_%d_%d gflops %.2f\n", n, in, out, flops / tf * 1e-9);
    dual_free(&a.x), dual_free(&a.w), dual_free(&a.b), dual_free(&a.y);
    dual_free(&a.dy), dual_free(&a.dx), dual_free(&a.dw), dual_free(&a.db);
}

typedef struct ew_arg {
    sd_bn_params bn;
    sd_pool2d_params pool;
    sd_sgd_params sgd;
    dual x, y, g, b, rm, rv, sm, si, w, gr, buf;
    int32_t *argmax_g, *argmax_c;
    size_t count;
} ew_arg;
static sd_status bn_fwd(void *a_) {
    ew_arg *a = a_;
    return gpu.ops->bn_fwd_train(gpu.ctx, &a->bn, a->x.g, a->g.g, a->b.g, a->y.g, a->rm.g, a->rv.g, a->sm.g, a->si.g);
}
static sd_status relu_fwd(void *a_) {
    ew_arg *a = a_;
    return gpu.ops->relu_fwd(gpu.ctx, a->count, a->x.g, a->y.g);
}
static sd_status pool_fwd(void *a_) {
    ew_arg *a = a_;
    return gpu.ops->maxpool_fwd(gpu.ctx, &a->pool, a->x.g, a->y.g, a->argmax_g);
}
static sd_status sgd_step(void *a_) {
    ew_arg *a = a_;
    return gpu.ops->sgd_update(gpu.ctx, &a->sgd, a->w.g, a->gr.g, a->buf.g);
}

static void bench_memory_ops(void) {
    const int n = 128, c = 128, hw = 32;
    ew_arg a;
    memset(&a, 0, sizeof a);
    a.count = (size_t)n * c * hw * hw;
    a.x = dual_make(a.count, 21, -1, 1), a.y = dual_make(a.count, 22, 0, 0);
    a.g = dual_make((size_t)c, 23, 0.5f, 1.5f), a.b = dual_make((size_t)c, 24, -0.5f, 0.5f);
    a.rm = dual_make((size_t)c, 25, 0, 0), a.rv = dual_make((size_t)c, 26, 1, 1);
    a.sm = dual_make((size_t)c, 27, 0, 0), a.si = dual_make((size_t)c, 28, 0, 0);
    const double gb = (double)a.count * 4 * 1e-9;

    OK(sd_bn_params_make(&a.bn, n, c, hw, hw, 1e-5f, 0.1f));
    OK(cpu.ops->bn_fwd_train(cpu.ctx, &a.bn, a.x.c, a.g.c, a.b.c, a.y.c, a.rm.c, a.rv.c, a.sm.c, a.si.c));
    OK(bn_fwd(&a));
    double e = check("batchnorm fwd", &a.y, 1e-10);
    double t = time_op(bn_fwd, &a);
    printf("  batchnorm fwd (train) [%d,%d,%d,%d]   %8.3f ms %8.1f GB/s (one read + one write; nmse %.1e)\n", n, c, hw,
           hw, t * 1e3, 2 * gb / t, e);
    printf("result op bn_fwd gbps %.2f\n", 2 * gb / t);

    OK(cpu.ops->relu_fwd(cpu.ctx, a.count, a.x.c, a.y.c));
    OK(relu_fwd(&a));
    e = check("relu fwd", &a.y, 0);
    t = time_op(relu_fwd, &a);
    printf("  relu fwd %zu floats             %8.3f ms %8.1f GB/s (read + write; nmse %.1e)\n", a.count, t * 1e3,
           2 * gb / t, e);
    printf("result op relu_fwd gbps %.2f\n", 2 * gb / t);

    OK(sd_pool2d_params_make(&a.pool, n, c, hw, hw, 2, 2, 2, 2, 0, 0));
    const size_t yn = (size_t)n * c * (hw / 2) * (hw / 2);
    OK(gpu.ops->alloc(gpu.ctx, yn * sizeof(int32_t), (void **)&a.argmax_g));
    OK(cpu.ops->alloc(cpu.ctx, yn * sizeof(int32_t), (void **)&a.argmax_c));
    dual py = dual_make(yn, 29, 0, 0);
    dual save_y = a.y;
    a.y = py;
    OK(cpu.ops->maxpool_fwd(cpu.ctx, &a.pool, a.x.c, a.y.c, a.argmax_c));
    OK(pool_fwd(&a));
    e = check("maxpool fwd", &a.y, 0);
    t = time_op(pool_fwd, &a);
    const double pgb = gb + (double)yn * 8 * 1e-9;
    printf("  maxpool 2x2 fwd                    %8.3f ms %8.1f GB/s (x read, y + argmax written; nmse %.1e)\n",
           t * 1e3, pgb / t, e);
    printf("result op maxpool_fwd gbps %.2f\n", pgb / t);
    a.y = save_y;
    dual_free(&py);
    gpu.ops->free(gpu.ctx, a.argmax_g);
    cpu.ops->free(cpu.ctx, a.argmax_c);

    const size_t np = 11173962; /* ResNet-18 (CIFAR) parameters */
    a.w = dual_make(np, 31, -0.1f, 0.1f), a.gr = dual_make(np, 32, -0.01f, 0.01f), a.buf = dual_make(np, 33, 0, 0);
    OK(sd_sgd_params_make(&a.sgd, np, 0.1f, 0.9f, 0.0f, 5e-4f, 0, 1));
    OK(cpu.ops->sgd_update(cpu.ctx, &a.sgd, a.w.c, a.gr.c, a.buf.c));
    OK(sgd_step(&a));
    e = check("sgd", &a.w, 1e-12);
    OK(sd_sgd_params_make(&a.sgd, np, 0.1f, 0.9f, 0.0f, 5e-4f, 0, 0));
    t = time_op(sgd_step, &a);
    const double sgb = (double)np * 4 * 5 * 1e-9; /* w, g, buf read; w, buf written */
    printf("  sgd momentum %zu params          %8.3f ms %8.1f GB/s (5 x 4 bytes per parameter; nmse %.1e)\n", np,
           t * 1e3, sgb / t, e);
    printf("result op sgd gbps %.2f\n", sgb / t);
    dual_free(&a.w), dual_free(&a.gr), dual_free(&a.buf);
    dual_free(&a.x), dual_free(&a.y), dual_free(&a.g), dual_free(&a.b), dual_free(&a.rm), dual_free(&a.rv);
    dual_free(&a.sm), dual_free(&a.si);
}

/* ---- models ----------------------------------------------------------------------------------- */
typedef struct step_arg {
    sd_net *net;
    float *x, *mom;
    int32_t *labels;
    int batch, first;
    float loss;
} step_arg;

static sd_status train_step(sd_backend *be, step_arg *s) {
    TRY(sd_net_forward(s->net, s->x, s->batch, true));
    TRY(sd_net_loss(s->net, s->labels, 1.0f / (float)s->batch, &s->loss));
    TRY(sd_net_backward(s->net));
    sd_sgd_params p;
    const size_t np = sd_net_param_count(s->net);
    TRY(sd_sgd_params_make(&p, np, 0.05f, 0.9f, 0.0f, 5e-4f, 0, s->first));
    s->first = 0;
    TRY(be->ops->sgd_update(be->ctx, &p, sd_net_params(s->net), sd_net_grads(s->net), s->mom));
    return SD_OK;
}

static sd_status gpu_step(void *a) { return train_step(&gpu, a); }

/* Inputs and labels for a batch, in backend memory. */
static void make_batch(sd_backend *be, int batch, float **x, int32_t **labels) {
    const size_t xn = (size_t)batch * 3 * 32 * 32;
    float *hx = malloc(xn * sizeof(float));
    int32_t *hl = malloc((size_t)batch * sizeof(int32_t));
    DIE_IF(!hx || !hl, "out of memory");
    fill_uniform(hx, xn, 41, -2, 2);
    for (int i = 0; i < batch; i++) hl[i] = (int32_t)(splitmix(500 + (uint64_t)i) % 10);
    OK(be->ops->alloc(be->ctx, xn * sizeof(float), (void **)x));
    OK(be->ops->alloc(be->ctx, (size_t)batch * sizeof(int32_t), (void **)labels));
    OK(be->ops->upload(be->ctx, *x, hx, xn * sizeof(float)));
    OK(be->ops->upload(be->ctx, *labels, hl, (size_t)batch * sizeof(int32_t)));
    free(hx);
    free(hl);
}

static void bench_model(const char *name) {
    const sd_model_spec spec = {.name = name, .in_c = 3, .in_h = 32, .in_w = 32, .classes = 10, .width = 1.0f};
    sd_net *ng = NULL, *nc = NULL;
    OK(sd_model_build(&gpu, &spec, 7, &ng));
    OK(sd_model_build(&cpu, &spec, 7, &nc));
    const size_t np = sd_net_param_count(ng), nb = sd_net_buffer_count(ng);
    OK(gpu.ops->upload(gpu.ctx, sd_net_params(ng), sd_net_params(nc), np * sizeof(float)));
    if (nb) OK(gpu.ops->upload(gpu.ctx, sd_net_buffers(ng), sd_net_buffers(nc), nb * sizeof(float)));
    float *mg = NULL, *mc = NULL;
    OK(gpu.ops->alloc(gpu.ctx, np * sizeof(float), (void **)&mg));
    OK(cpu.ops->alloc(cpu.ctx, np * sizeof(float), (void **)&mc));
    /* validate: one step at batch 8 from identical weights */
    step_arg sg = {.net = ng, .mom = mg, .batch = 8, .first = 1}, sc = {.net = nc, .mom = mc, .batch = 8, .first = 1};
    make_batch(&gpu, 8, &sg.x, &sg.labels);
    make_batch(&cpu, 8, &sc.x, &sc.labels);
    OK(train_step(&gpu, &sg));
    OK(train_step(&cpu, &sc));
    const double rel = fabs((double)sg.loss - (double)sc.loss) / fmax(fabs((double)sc.loss), 1e-6);
    if (!(rel <= 1e-3)) {
        printf("VALIDATION FAILED: %s: loss gpu %.7f cpu %.7f (relative %.3g)\n", name, (double)sg.loss,
               (double)sc.loss, rel);
        g_failed++;
    }
    gpu.ops->free(gpu.ctx, sg.x), gpu.ops->free(gpu.ctx, sg.labels);
    cpu.ops->free(cpu.ctx, sc.x), cpu.ops->free(cpu.ctx, sc.labels);
    sd_net_destroy(nc);
    cpu.ops->free(cpu.ctx, mc);
    for (int batch = 64; batch <= 128; batch *= 2) {
        step_arg s = {.net = ng, .mom = mg, .batch = batch, .first = 0};
        make_batch(&gpu, batch, &s.x, &s.labels);
        const double t = time_op(gpu_step, &s);
        printf("  %-8s batch %3d   %8.2f ms/step   %9.1f images/s   (loss %.4f; validated at batch 8: loss rel "
               "diff %.1e)\n", name, batch, t * 1e3, batch / t, (double)s.loss, rel);
        printf("result model %s batch %d images_per_s %.1f\n", name, batch, batch / t);
        gpu.ops->free(gpu.ctx, s.x), gpu.ops->free(gpu.ctx, s.labels);
    }
    gpu.ops->free(gpu.ctx, mg);
    sd_net_destroy(ng);
}

/* ---- Top-k ------------------------------------------------------------------------------------ */
typedef struct topk_arg {
    const float *x;
    size_t n, kk;
    uint32_t *idx;
    float *val;
    cublasHandle_t blas;
    float *dsum;
} topk_arg;
static sd_status topk_run(void *a_) {
    topk_arg *a = a_;
    return sd_cuda_topk(gpu.ctx, a->x, a->n, a->kk, a->idx, a->val);
}
static sd_status read_run(void *a_) { /* the bound: one streaming read of x */
    topk_arg *a = a_;
    return cublasSasum(a->blas, (int)a->n, a->x, 1, a->dsum) == CUBLAS_STATUS_SUCCESS
               ? SD_OK
               : SD_FAIL(SD_ERR_RUNTIME, "cublasSasum failed");
}

static void bench_topk(void) {
    const size_t sizes[3] = {(size_t)1 << 20, (size_t)10 << 20, (size_t)25 << 20};
    const double ratios[2] = {0.01, 0.1};
    sd_kctx *ck = NULL;
    OK(sd_cpu_kctx_create(0, &ck));
    topk_arg a;
    memset(&a, 0, sizeof a);
    DIE_IF(cublasCreate(&a.blas) != CUBLAS_STATUS_SUCCESS, "cublasCreate failed");
    cublasSetStream(a.blas, g_stream);
    cublasSetPointerMode(a.blas, CUBLAS_POINTER_MODE_DEVICE);
    CU(cudaMalloc((void **)&a.dsum, sizeof(float)));
    for (int si = 0; si < 3; si++) {
        const size_t n = sizes[si];
        float *hx = malloc(n * sizeof(float)), *dx = NULL;
        DIE_IF(!hx, "out of memory");
        fill_normal(hx, n);
        OK(gpu.ops->alloc(gpu.ctx, n * sizeof(float), (void **)&dx));
        OK(gpu.ops->upload(gpu.ctx, dx, hx, n * sizeof(float)));
        a.x = dx;
        a.n = n;
        const double tr = time_op(read_run, &a);
        for (int ri = 0; ri < 2; ri++) {
            const size_t kk = (size_t)ceil(ratios[ri] * (double)n);
            uint32_t *ci = malloc(kk * sizeof *ci), *gi = malloc(kk * sizeof *gi);
            float *cv = malloc(kk * sizeof *cv), *gv = malloc(kk * sizeof *gv);
            DIE_IF(!ci || !gi || !cv || !gv, "out of memory");
            OK(gpu.ops->alloc(gpu.ctx, kk * sizeof(uint32_t), (void **)&a.idx));
            OK(gpu.ops->alloc(gpu.ctx, kk * sizeof(float), (void **)&a.val));
            a.kk = kk;
            OK(sd_cpu_topk(ck, hx, n, kk, ci, cv));
            OK(topk_run(&a));
            OK(gpu.ops->download(gpu.ctx, gi, a.idx, kk * sizeof *gi));
            OK(gpu.ops->download(gpu.ctx, gv, a.val, kk * sizeof *gv));
            const int same = !memcmp(ci, gi, kk * sizeof *ci) && !memcmp(cv, gv, kk * sizeof *cv);
            if (!same) {
                printf("VALIDATION FAILED: topk n=%zu k=%zu differs from sd_cpu_topk\n", n, kk);
                g_failed++;
            }
            const double t = time_op(topk_run, &a);
            printf("  topk n=%-9zu r=%-5g read %7.3f ms (%6.0f GB/s)   topk %7.3f ms   %5.2f x bound   (bitwise = cpu: "
                   "%s)\n", n, ratios[ri], tr * 1e3, (double)n * 4 / tr * 1e-9, t * 1e3, t / tr, same ? "yes" : "NO");
            printf("result topk n %zu r %g ms %.4f read_ms %.4f\n", n, ratios[ri], t * 1e3, tr * 1e3);
            gpu.ops->free(gpu.ctx, a.idx), gpu.ops->free(gpu.ctx, a.val);
            free(ci), free(gi), free(cv), free(gv);
        }
        gpu.ops->free(gpu.ctx, dx);
        free(hx);
    }
    cudaFree(a.dsum);
    cublasDestroy(a.blas);
    sd_cpu_kctx_destroy(ck);
}

/* ---- host to device --------------------------------------------------------------------------- */
typedef struct h2d_arg {
    void *dst;
    const void *src;
    size_t bytes;
    int async;
} h2d_arg;
static sd_status h2d_backend(void *a_) {
    h2d_arg *a = a_;
    if (a->async) {
        TRY(gpu.ops->upload_async(gpu.ctx, a->dst, a->src, a->bytes));
        TRY(gpu.ops->upload_wait(gpu.ctx));
        return SD_OK;
    }
    return gpu.ops->upload(gpu.ctx, a->dst, a->src, a->bytes);
}

static double wall_time(op_fn fn, void *arg, int reps) {
    for (int i = 0; i < 2; i++) OK(fn(arg));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < reps; i++) OK(fn(arg));
    OK(gpu.ops->synchronize(gpu.ctx));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9) / reps;
}

static void bench_h2d(void) {
    const size_t big = (size_t)256 << 20, batch = (size_t)128 * 3 * 32 * 32 * 4; /* a CIFAR batch of 128 */
    void *hp = NULL, *dst = NULL;
    bool pinned = false;
    OK(sd_cuda_host_alloc(big, &hp, &pinned));
    memset(hp, 1, big);
    OK(gpu.ops->alloc(gpu.ctx, big, &dst));
    /* the copy engine's peak: one large async copy from pinned memory on its own stream */
    cudaStream_t s;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t a, b;
    CU(cudaEventCreate(&a));
    CU(cudaEventCreate(&b));
    CU(cudaMemcpyAsync(dst, hp, big, cudaMemcpyHostToDevice, s));
    CU(cudaEventRecord(a, s));
    for (int i = 0; i < 5; i++) CU(cudaMemcpyAsync(dst, hp, big, cudaMemcpyHostToDevice, s));
    CU(cudaEventRecord(b, s));
    CU(cudaEventSynchronize(b));
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, a, b));
    const double peak = 5.0 * (double)big / ((double)ms * 1e-3) * 1e-9;
    printf("  h2d cudaMemcpyAsync 256 MiB from %s memory: %.2f GB/s (the copy engine's peak here)\n",
           pinned ? "pinned" : "PAGEABLE (cudaMallocHost failed)", peak);
    printf("result h2d peak gbps %.3f\n", peak);
    /* validate one batch-sized upload before timing it */
    unsigned char *check_buf = malloc(batch);
    for (size_t i = 0; i < batch; i++) ((unsigned char *)hp)[i] = (unsigned char)(i * 7);
    h2d_arg h = {dst, hp, batch, 0};
    OK(h2d_backend(&h));
    OK(gpu.ops->download(gpu.ctx, check_buf, dst, batch));
    if (memcmp(check_buf, hp, batch)) {
        printf("VALIDATION FAILED: upload of %zu bytes\n", batch);
        g_failed++;
    }
    free(check_buf);
    for (int async = 0; async < 2; async++) {
        h.async = async;
        const double t = wall_time(h2d_backend, &h, 200);
        printf("  h2d backend %-22s %zu bytes (batch 128) from pinned staging: %7.1f us  %6.2f GB/s  (%.0f%% of peak)\n",
               async ? "upload_async + wait" : "upload", batch, t * 1e6, batch / t * 1e-9, 100 * batch / t * 1e-9 / peak);
        printf("result h2d %s gbps %.3f\n", async ? "upload_async" : "upload", batch / t * 1e-9);
    }
    void *pageable = malloc(batch);
    memset(pageable, 2, batch);
    h.src = pageable;
    h.async = 0;
    const double tp = wall_time(h2d_backend, &h, 200);
    printf("  h2d backend upload                 %zu bytes from pageable malloc memory:  %7.1f us  %6.2f GB/s\n", batch,
           tp * 1e6, batch / tp * 1e-9);
    printf("result h2d pageable gbps %.3f\n", batch / tp * 1e-9);
    free(pageable);
    cudaEventDestroy(a), cudaEventDestroy(b), cudaStreamDestroy(s);
    gpu.ops->free(gpu.ctx, dst);
    sd_cuda_host_free(hp, pinned);
}

/* ---- NCCL ------------------------------------------------------------------------------------- */
#ifdef SD_BENCH_NCCL
#define NC(expr)                                                                                      \
    do {                                                                                              \
        ncclResult_t r_ = (expr);                                                                     \
        DIE_IF(r_ != ncclSuccess, "%s failed: %s (%s)", #expr, ncclGetErrorString(r_), ncclGetLastError(NULL)); \
    } while (0)

static void bench_nccl(void) {
    int ndev = 0;
    CU(cudaGetDeviceCount(&ndev));
    if (ndev > 8) ndev = 8;
    ncclComm_t comms[8];
    int devs[8];
    cudaStream_t st[8];
    float *buf[8];
    for (int d = 0; d < ndev; d++) devs[d] = d;
    NC(ncclCommInitAll(comms, ndev, devs));
    const size_t maxb = (size_t)1 << 30;
    for (int d = 0; d < ndev; d++) {
        CU(cudaSetDevice(d));
        CU(cudaStreamCreateWithFlags(&st[d], cudaStreamNonBlocking));
        CU(cudaMalloc((void **)&buf[d], maxb));
    }
    printf("  nccl allreduce (float sum) over %d GPU(s) in one process; busbw = algbw x 2(n-1)/n%s\n", ndev,
           ndev == 1 ? " (= 0 with one GPU: nothing crosses a link)" : "");
    printf("  %12s %10s %10s %10s %7s\n", "bytes", "time us", "algbw GB/s", "busbw GB/s", "#wrong");
    float *h = malloc(maxb);
    DIE_IF(!h, "out of memory");
    for (size_t bytes = (size_t)1 << 20; bytes <= maxb; bytes <<= 2) {
        const size_t count = bytes / 4;
        /* validate: rank d holds (i % 17) + d; every element must become sum_d of that */
        for (int d = 0; d < ndev; d++) {
            for (size_t i = 0; i < count; i++) h[i] = (float)(i % 17) + (float)d;
            CU(cudaSetDevice(d));
            CU(cudaMemcpy(buf[d], h, bytes, cudaMemcpyHostToDevice));
        }
        NC(ncclGroupStart());
        for (int d = 0; d < ndev; d++) NC(ncclAllReduce(buf[d], buf[d], count, ncclFloat, ncclSum, comms[d], st[d]));
        NC(ncclGroupEnd());
        long long wrong = 0;
        for (int d = 0; d < ndev; d++) {
            CU(cudaSetDevice(d));
            CU(cudaStreamSynchronize(st[d]));
            CU(cudaMemcpy(h, buf[d], bytes, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < count; i++)
                wrong += h[i] != (float)(i % 17) * ndev + (float)(ndev * (ndev - 1) / 2);
        }
        if (wrong) g_failed++;
        const int iters = bytes >= ((size_t)256 << 20) ? 5 : 20;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int it = 0; it < iters; it++) {
            NC(ncclGroupStart());
            for (int d = 0; d < ndev; d++) NC(ncclAllReduce(buf[d], buf[d], count, ncclFloat, ncclSum, comms[d], st[d]));
            NC(ncclGroupEnd());
        }
        for (int d = 0; d < ndev; d++) {
            CU(cudaSetDevice(d));
            CU(cudaStreamSynchronize(st[d]));
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double t = ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9) / iters;
        const double algbw = (double)bytes / t * 1e-9, busbw = algbw * 2.0 * (ndev - 1) / ndev;
        printf("  %12zu %10.1f %10.2f %10.2f %7lld\n", bytes, t * 1e6, algbw, busbw, wrong);
        printf("result nccl allreduce bytes %zu gpus %d algbw %.3f busbw %.3f\n", bytes, ndev, algbw, busbw);
    }
    free(h);
    for (int d = 0; d < ndev; d++) {
        CU(cudaSetDevice(d));
        cudaFree(buf[d]);
        cudaStreamDestroy(st[d]);
        ncclCommDestroy(comms[d]);
    }
    CU(cudaSetDevice(0));
}
#endif /* SD_BENCH_NCCL */

static void usage(FILE *f) {
    fprintf(f, "usage: scadles-bench_gpu [--reps R] [--only ops,models,topk,h2d,nccl]\n"
               "  Validates, then times the CUDA backend on device 0 (see the header of apps/bench_gpu.c).\n"
               "  Lines starting with \"result\" are for scripts/bench_gpu.sh.\n");
}

int main(int argc, char **argv) {
    static const sd_cli_option options[] = {
        {"--reps", true, NULL}, {"--only", true, "a list like ops,models,topk,h2d,nccl"}, {NULL},
    };
    sd_cli cli;
    sd_cli_parse(&cli, "bench_gpu", usage, options, argc, argv);
    for (int i = 0; i < cli.n; i++) {
        const char *a = cli.args[i].flag, *v = cli.args[i].value;
        if (!strcmp(a, "--only")) {
            g_only = v;
            continue;
        }
        char *end = NULL; /* --reps */
        long x = strtol(v, &end, 10);
        if (end == v || *end || x < 1 || x > 1000000) {
            fprintf(stderr, "scadles-bench_gpu: --reps needs a whole number in [1, 1000000], got '%s'\n", v);
            sd_cli_free(&cli);
            return 2;
        }
        g_reps = (int)x;
    }
    sd_cli_free(&cli);
    if (sd_backend_cuda_create(&gpu, 0) != SD_OK) {
        printf("scadles-bench_gpu: skipped: no CUDA device (%s)\n", sd_last_error_brief());
        return 0;
    }
    OK(sd_backend_cpu_create(&cpu, 0));
    g_stream = (cudaStream_t)sd_cuda_stream(gpu.ctx);
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    printf("scadles-bench_gpu: %s (sm_%d%d, %d SMs), fp32 without TF32, %d timed reps after 3 warm-up calls\n",
           prop.name, prop.major, prop.minor, prop.multiProcessorCount, g_reps);
    if (want("ops")) {
        printf("ops (validated against the CPU backend first):\n");
        bench_conv(128, 128, 16, 128, 3, 1);
        bench_conv(128, 64, 32, 64, 3, 1);
        bench_conv(128, 256, 8, 512, 3, 2);
        bench_linear(1024, 4096, 4096);
        bench_memory_ops();
    }
    if (want("models")) {
        printf("models (CIFAR forms, 32x32x3, 10 classes; one step = forward, loss, backward, SGD):\n");
        bench_model("resnet18");
        bench_model("vgg19");
    }
    if (want("topk")) {
        printf("topk (normal(0, 1e-3) data; the bound is one streaming read of x, cublasSasum):\n");
        bench_topk();
    }
    if (want("h2d")) {
        printf("host to device:\n");
        bench_h2d();
    }
#ifdef SD_BENCH_NCCL
    if (want("nccl")) {
        printf("nccl:\n");
        bench_nccl();
    }
#endif
    sd_backend_destroy(&cpu);
    sd_backend_destroy(&gpu);
    if (g_failed) {
        printf("scadles-bench_gpu: %d validation failure(s); timings above are not to be trusted\n", g_failed);
        return 1;
    }
    return 0;
}

#else /* no CUDA in this build */
int main(void) {
    printf("scadles-bench_gpu: skipped: no CUDA device (this build has no CUDA backend)\n");
    return 0;
}
#endif
