/* bench_conv_onednn.c: our convolutions (the CPU backend's conv2d_fwd / conv2d_bwd, kernels/cpu/conv.c)
 * against oneDNN's (C API, dnnl.h) per layer of the Fashion-MNIST CNN and ResNet-20 at batch 64
 * (docs/performance.md). Our tensors are NCHW / OIHW; oneDNN picks its own (blocked) layouts
 * (format "any"), so it is timed twice: "excl" runs only its convolution primitives on data already
 * in its layouts, "incl" adds the reorders from and to our layouts that an engine keeping NCHW
 * would pay. Backward = weight (and bias) gradient, plus the input gradient where the engine asks
 * for it (not for a network's first layer). Validates every output against ours first; repetitions
 * rotate ours / oneDNN excl / oneDNN incl. Usage: bench_conv_onednn THREADS [REPS]. Not a ctest test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "base/clock.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/bench/bench_stats.h"

#define DN(expr)                                                                                                   \
    do {                                                                                                           \
        dnnl_status_t st_ = (expr);                                                                                \
        if (st_ != dnnl_success) bs_die("oneDNN call failed (status %d): %s", (int)st_, #expr);                    \
    } while (0)

typedef struct layer { const char *label; int c, h, k, kh, s, p, bias, dx, count; } layer;

/* One argument of a oneDNN primitive: our buffer (user layout), the primitive's memory and the
 * reorder between them (NULL when the layouts agree and the two are the same memory). */
typedef struct port { int arg, out; dnnl_memory_t user, inner; dnnl_primitive_t reorder; } port;
typedef struct prim { dnnl_primitive_t p; port ports[5]; int np; } prim;

static dnnl_engine_t eng;
static dnnl_stream_t strm;

static void add_port(prim *pr, const_dnnl_primitive_desc_t pd, dnnl_query_t what, int index,
                     const dnnl_memory_desc_t *user_md, float *user, int arg, int out) {
    port *pt = &pr->ports[pr->np++];
    pt->arg = arg;
    pt->out = out;
    pt->reorder = NULL;
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, index);
    DN(dnnl_memory_create(&pt->user, user_md, eng, user));
    if (dnnl_memory_desc_equal(md, user_md)) {
        pt->inner = pt->user;
        return;
    }
    DN(dnnl_memory_create(&pt->inner, md, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd;
    DN(out ? dnnl_reorder_primitive_desc_create(&rpd, md, eng, user_md, eng, NULL)
           : dnnl_reorder_primitive_desc_create(&rpd, user_md, eng, md, eng, NULL));
    DN(dnnl_primitive_create(&pt->reorder, rpd));
    DN(dnnl_primitive_desc_destroy(rpd));
}

static void run_prim(const prim *pr, int include_reorders) {
    dnnl_exec_arg_t args[5];
    for (int i = 0; i < pr->np; i++) {
        const port *pt = &pr->ports[i];
        args[i] = (dnnl_exec_arg_t){pt->arg, pt->inner};
        if (include_reorders && pt->reorder && !pt->out) {
            dnnl_exec_arg_t ra[2] = {{DNNL_ARG_SRC, pt->user}, {DNNL_ARG_DST, pt->inner}};
            DN(dnnl_primitive_execute(pt->reorder, strm, 2, ra));
        }
    }
    DN(dnnl_primitive_execute(pr->p, strm, pr->np, args));
    for (int i = 0; include_reorders && i < pr->np; i++) {
        const port *pt = &pr->ports[i];
        if (pt->reorder && pt->out) {
            dnnl_exec_arg_t ra[2] = {{DNNL_ARG_SRC, pt->inner}, {DNNL_ARG_DST, pt->user}};
            DN(dnnl_primitive_execute(pt->reorder, strm, 2, ra));
        }
    }
    DN(dnnl_stream_wait(strm));
}

static void free_prim(prim *pr) {
    for (int i = 0; i < pr->np; i++) {
        port *pt = &pr->ports[i];
        if (pt->reorder) {
            dnnl_primitive_destroy(pt->reorder);
            dnnl_memory_destroy(pt->inner);
        }
        dnnl_memory_destroy(pt->user);
    }
    if (pr->p) dnnl_primitive_destroy(pr->p);
}

static const char *impl_of(const_dnnl_primitive_desc_t pd) {
    const char *s = "?";
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success) s = "?";
    return s;
}

static double nmse(const float *x, const float *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - ref[i];
        e += d * d;
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? e / r : e;
}

static float *alloc_f(size_t n) {
    void *p = NULL;
    if (sd_cpu_alloc(n * sizeof(float), &p) != SD_OK) bs_die("out of memory (%zu floats)", n);
    return p;
}

static void fill(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 40) / 16777216.0f - 0.5f;
}

static void check(const char *layer, const char *what, const float *got, const float *want, size_t n) {
    double e = nmse(got, want, n);
    if (!(e < 1e-8)) bs_die("%s: oneDNN's %s differs from ours (NMSE %.3g)", layer, what, e);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0, reps = argc > 2 ? atoi(argv[2]) : 7;
    if (threads < 1 || threads > 64 || reps < 1 || reps > 1000) bs_die("usage: %s THREADS(1..64) [REPS 1..1000]", argv[0]);
    const int n = 64;
    const layer layers[] = {
        {"cnn conv1 1->16 5x5 @28", 1, 28, 16, 5, 1, 2, 1, 0, 1},
        {"cnn conv2 16->32 5x5 @14", 16, 14, 32, 5, 1, 2, 1, 1, 1},
        {"r20 stem 3->16 3x3 @32", 3, 32, 16, 3, 1, 1, 0, 0, 1},
        {"r20 16->16 3x3 @32", 16, 32, 16, 3, 1, 1, 0, 1, 6},
        {"r20 16->32 3x3 s2 @32", 16, 32, 32, 3, 2, 1, 0, 1, 1},
        {"r20 sc 16->32 1x1 s2 @32", 16, 32, 32, 1, 2, 0, 0, 1, 1},
        {"r20 32->32 3x3 @16", 32, 16, 32, 3, 1, 1, 0, 1, 5},
        {"r20 32->64 3x3 s2 @16", 32, 16, 64, 3, 2, 1, 0, 1, 1},
        {"r20 sc 32->64 1x1 s2 @16", 32, 16, 64, 1, 2, 0, 0, 1, 1},
        {"r20 64->64 3x3 @8", 64, 8, 64, 3, 1, 1, 0, 1, 5},
    };
    sd_kctx *kc = NULL;
    if (sd_cpu_kctx_create(threads, &kc) != SD_OK) bs_die("cannot create the CPU kernel context");
    /* "ours" is our kernels whatever the build's default (the engine calls oneDNN through
     * kernels/cpu/conv_dnnl.c where it has it; this benchmark drives oneDNN itself) */
    if (sd_cpu_kctx_set_conv(kc, SD_CPU_CONV_OURS) != SD_OK) bs_die("cannot choose our convolutions");
    omp_set_num_threads(threads); /* oneDNN's threads (the same libgomp pool as ours) */
    DN(dnnl_engine_create(&eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    const dnnl_version_t *v = dnnl_version();
    printf("conv: ours vs oneDNN %d.%d.%d (%s), batch %d, %d threads; GFLOP/s median [min-max] over %d reps\n", v->major,
           v->minor, v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime", n, threads, reps);
    printf("load before %.2f\n", bs_load1());
    printf("%-26s %-4s %-22s %-22s %-22s %-10s %s\n", "layer (count in model)", "pass", "ours", "oneDNN excl",
           "oneDNN incl", "ours/excl", "ours/incl");
    for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
        const layer *L = &layers[li];
        sd_conv2d_params p;
        if (sd_conv2d_params_make(&p, n, L->c, L->h, L->h, L->k, L->kh, L->kh, L->s, L->s, L->p, L->p, L->bias) != SD_OK)
            bs_die("%s: bad convolution parameters", L->label);
        size_t xs = (size_t)n * p.c * p.h * p.w, ws = (size_t)p.k * p.c * p.kh * p.kw, ys = (size_t)n * p.k * p.oh * p.ow;
        float *x = alloc_f(xs), *w = alloc_f(ws), *b = alloc_f(p.k), *dy = alloc_f(ys);
        float *y = alloc_f(ys), *dx = alloc_f(xs), *dw = alloc_f(ws), *db = alloc_f(p.k);
        float *y2 = alloc_f(ys), *dx2 = alloc_f(xs), *dw2 = alloc_f(ws), *db2 = alloc_f(p.k);
        fill(x, xs, 1 + li);
        fill(w, ws, 100 + li);
        fill(b, p.k, 200 + li);
        fill(dy, ys, 300 + li);

        /* oneDNN: descriptors in our layouts, primitives in the layouts it prefers */
        dnnl_memory_desc_t x_md, w_md, b_md, y_md, any_x, any_w, any_y;
        dnnl_dims_t xd = {n, p.c, p.h, p.w}, wd = {p.k, p.c, p.kh, p.kw}, bd = {p.k}, yd = {n, p.k, p.oh, p.ow};
        dnnl_dims_t strides = {p.sh, p.sw}, pad = {p.ph, p.pw};
        DN(dnnl_memory_desc_init_by_tag(&x_md, 4, xd, dnnl_f32, dnnl_nchw));
        DN(dnnl_memory_desc_init_by_tag(&w_md, 4, wd, dnnl_f32, dnnl_oihw));
        DN(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x));
        DN(dnnl_memory_desc_init_by_tag(&y_md, 4, yd, dnnl_f32, dnnl_nchw));
        DN(dnnl_memory_desc_init_by_tag(&any_x, 4, xd, dnnl_f32, dnnl_format_tag_any));
        DN(dnnl_memory_desc_init_by_tag(&any_w, 4, wd, dnnl_f32, dnnl_format_tag_any));
        DN(dnnl_memory_desc_init_by_tag(&any_y, 4, yd, dnnl_f32, dnnl_format_tag_any));
        /* PyTorch-style padding: the right/bottom padding is what the output size implies */
        dnnl_dims_t pad_r = {(p.oh - 1) * p.sh + p.kh - p.h - p.ph, (p.ow - 1) * p.sw + p.kw - p.w - p.pw};
        dnnl_convolution_desc_t fd, bdd, bwd;
        DN(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &any_x, &any_w,
                                              L->bias ? &b_md : NULL, &any_y, strides, pad, pad_r));
        dnnl_primitive_desc_t fpd, dpd = NULL, wpd;
        DN(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL));
        DN(dnnl_convolution_backward_weights_desc_init(&bwd, dnnl_convolution_direct, &any_x, &any_w,
                                                       L->bias ? &b_md : NULL, &any_y, strides, pad, pad_r));
        DN(dnnl_primitive_desc_create(&wpd, &bwd, NULL, eng, fpd));
        if (L->dx) {
            DN(dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct, &any_x, &any_w, &any_y, strides,
                                                        pad, pad_r));
            DN(dnnl_primitive_desc_create(&dpd, &bdd, NULL, eng, fpd));
        }
        prim pf = {0}, pw = {0}, pd = {0};
        DN(dnnl_primitive_create(&pf.p, fpd));
        add_port(&pf, fpd, dnnl_query_src_md, 0, &x_md, x, DNNL_ARG_SRC, 0);
        add_port(&pf, fpd, dnnl_query_weights_md, 0, &w_md, w, DNNL_ARG_WEIGHTS, 0);
        if (L->bias) add_port(&pf, fpd, dnnl_query_weights_md, 1, &b_md, b, DNNL_ARG_BIAS, 0);
        add_port(&pf, fpd, dnnl_query_dst_md, 0, &y_md, y2, DNNL_ARG_DST, 1);
        DN(dnnl_primitive_create(&pw.p, wpd));
        add_port(&pw, wpd, dnnl_query_src_md, 0, &x_md, x, DNNL_ARG_SRC, 0);
        add_port(&pw, wpd, dnnl_query_diff_dst_md, 0, &y_md, dy, DNNL_ARG_DIFF_DST, 0);
        add_port(&pw, wpd, dnnl_query_diff_weights_md, 0, &w_md, dw2, DNNL_ARG_DIFF_WEIGHTS, 1);
        if (L->bias) add_port(&pw, wpd, dnnl_query_diff_weights_md, 1, &b_md, db2, DNNL_ARG_DIFF_BIAS, 1);
        if (L->dx) {
            DN(dnnl_primitive_create(&pd.p, dpd));
            add_port(&pd, dpd, dnnl_query_weights_md, 0, &w_md, w, DNNL_ARG_WEIGHTS, 0);
            add_port(&pd, dpd, dnnl_query_diff_dst_md, 0, &y_md, dy, DNNL_ARG_DIFF_DST, 0);
            add_port(&pd, dpd, dnnl_query_diff_src_md, 0, &x_md, dx2, DNNL_ARG_DIFF_SRC, 1);
        }
        printf("  [%s] oneDNN fwd %s, bwd-w %s%s%s\n", L->label, impl_of(fpd), impl_of(wpd), L->dx ? ", bwd-d " : "",
               L->dx ? impl_of(dpd) : "");

        /* validate: ours against oneDNN (reorders included, so its results land in our layouts) */
        if (sd_cpu_conv2d_fwd(kc, &p, x, w, L->bias ? b : NULL, y) != SD_OK ||
            sd_cpu_conv2d_bwd(kc, &p, x, w, dy, L->dx ? dx : NULL, dw, L->bias ? db : NULL) != SD_OK)
            bs_die("%s: our convolution failed", L->label);
        run_prim(&pf, 1);
        run_prim(&pw, 1);
        if (L->dx) run_prim(&pd, 1);
        check(L->label, "forward output", y2, y, ys);
        check(L->label, "weight gradient", dw2, dw, ws);
        if (L->bias) check(L->label, "bias gradient", db2, db, p.k);
        if (L->dx) check(L->label, "input gradient", dx2, dx, xs);

        double fl = 2.0 * ys * p.c * p.kh * p.kw, flb = fl * (L->dx ? 2 : 1);
        double g[2][3][1000];
        int inner = 1;
        while (inner < 512 && fl * inner < 5e8) inner *= 2; /* a few ms and more per sample */
        for (int r = 0; r < reps + 1; r++)
            for (int j = 0; j < 3; j++) {
                int which = (r + j) % 3; /* 0 ours, 1 oneDNN excl, 2 oneDNN incl */
                double t0 = sd_clock_now();
                for (int i = 0; i < inner; i++) {
                    if (which == 0) (void)sd_cpu_conv2d_fwd(kc, &p, x, w, L->bias ? b : NULL, y);
                    else run_prim(&pf, which == 2);
                }
                double t1 = sd_clock_now();
                for (int i = 0; i < inner; i++) {
                    if (which == 0) {
                        (void)sd_cpu_conv2d_bwd(kc, &p, x, w, dy, L->dx ? dx : NULL, dw, L->bias ? db : NULL);
                    } else {
                        run_prim(&pw, which == 2);
                        if (L->dx) run_prim(&pd, which == 2);
                    }
                }
                double t2 = sd_clock_now();
                if (r == 0) continue; /* warm-up round */
                g[0][which][r - 1] = fl * inner / (t1 - t0) / 1e9;
                g[1][which][r - 1] = flb * inner / (t2 - t1) / 1e9;
            }
        for (int pass = 0; pass < 2; pass++) {
            bs_summary s[3];
            for (int j = 0; j < 3; j++) s[j] = bs_summarize(g[pass][j], reps);
            char lbl[48];
            snprintf(lbl, sizeof lbl, "%s (x%d)", L->label, L->count);
            printf("%-26s %-4s %6.1f [%6.1f-%6.1f]   %6.1f [%6.1f-%6.1f]   %6.1f [%6.1f-%6.1f]   %5.2fx     %5.2fx\n",
                   pass ? "" : lbl, pass ? (L->dx ? "bwd" : "bwdw") : "fwd", s[0].median, s[0].min, s[0].max,
                   s[1].median, s[1].min, s[1].max, s[2].median, s[2].min, s[2].max, s[0].median / s[1].median,
                   s[0].median / s[2].median);
        }
        free_prim(&pf);
        free_prim(&pw);
        free_prim(&pd);
        dnnl_primitive_desc_destroy(fpd);
        dnnl_primitive_desc_destroy(wpd);
        if (dpd) dnnl_primitive_desc_destroy(dpd);
        float *bufs[] = {x, w, b, dy, y, dx, dw, db, y2, dx2, dw2, db2};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    }
    printf("load after %.2f\n", bs_load1());
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    sd_cpu_kctx_destroy(kc);
    return 0;
}
