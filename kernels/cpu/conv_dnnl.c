/* conv_dnnl.c: the CPU backend's 2-D convolutions through oneDNN (C API; Debian libdnnl-dev 2.6,
 * built on OpenMP, the same libgomp as our kernels): convolution_forward (forward_training),
 * convolution_backward_weights (with diff_bias when the layer has a bias) and
 * convolution_backward_data (run only when the caller wants dx). conv.c hands calls here when the
 * context says so (SCADLES_CONV, context.c) and keeps its kernels as the fallback and the
 * reference; docs/performance.md has the measurement behind the switch.
 *
 * Layouts. Our tensors are NCHW / OIHW. Each primitive is created with format "any" and picks its
 * own (blocked) layouts, so a call reorders its inputs in and its outputs back (docs/performance.md
 * measured that as "incl"); a backward call reorders dy once when both primitives want it in the
 * same layout.
 *
 * Per context (sd_kctx.dnnl): one engine, one stream and a cache of shapes, most recently used
 * first, each holding the primitive descriptors, primitives, reorders and memory objects of one
 * convolution shape and thread count (creating them takes milliseconds). The memory objects are
 * made without buffers: each call points those in our layouts at the caller's tensors, and the
 * reordered copies and the primitives' scratchpads (user scratchpad mode) at the context's scratch
 * (sd_cpu_scratch), which every shape shares and which grows only past its high-water mark. After a
 * shape's first call this file allocates nothing (oneDNN's execute may, inside its C++ runtime). A
 * context is used by one thread at a time (each device of the engine has its own), so the cache
 * takes no lock; oneDNN's own primitive cache is process-wide and locks itself.
 *
 * Algorithm. 3x3 stride-1 shapes run oneDNN's Winograd F(4x4, 3x3) (its AVX-512 f32 kernels, forward,
 * backward data and backward weights) when the context's mode asks for it (SCADLES_WINOGRAD,
 * sd_cpu_conv_wants_winograd): 2.25-4x fewer multiplications where channels are wide enough for the
 * tile transforms to pay; the direct algorithm elsewhere, and wherever oneDNN has no Winograd
 * kernel (the shape falls back to direct). The algorithm is part of the cache key.
 *
 * Threads. oneDNN sizes a primitive's parallel work when it creates it, from the calling thread's
 * omp_get_max_threads(), and runs it on that many OpenMP threads. Around creation and execution
 * this file sets the calling thread's OpenMP thread count to the context's (1 for convolutions
 * too small to share, SD_CONV_PAR_MIN_MACS, as conv.c does) and then restores it; the count is
 * part of the cache key. With the same thread count the results are bitwise the same from run to
 * run (tests/test_conv.c checks it). */
#include "kernels/cpu/cpu_kernels.h"

#ifdef SCADLES_HAVE_DNNL

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#define DNNL_CHECK(expr) CHECK_GEN(expr, dnnl_success, dnnl_status2str, SD_ERR_RUNTIME)

/* Shapes kept per context. A training run meets a few per layer (the batch size changes: the last
 * batch of an epoch, ScaDLES's windows, evaluation); past this many the least recently used is
 * dropped (oneDNN's process-wide primitive cache, 1024 by default, still makes a re-creation cheap). */
#define SD_DNNL_SHAPES 64

/* The caller's tensors of one call, by role. */
enum { T_X, T_W, T_B, T_Y, T_DY, T_DX, T_DW, T_DB, T_COUNT };

/* One tensor argument of a primitive: the memory in our layout (the caller's buffer), the memory
 * in the primitive's layout (the same object when the layouts agree, else a piece of the scratch)
 * and the reorder between them. */
typedef struct dn_port {
    int arg;                        /* DNNL_ARG_* */
    int out;                        /* written by the primitive: reordered after it, else before */
    int tensor;                     /* T_* */
    dnnl_memory_t user, inner;      /* inner == user: no reorder */
    dnnl_primitive_t reorder;       /* NULL when inner == user */
    dnnl_memory_t rpad;             /* the reorder's scratchpad (NULL: it needs none) */
    size_t inner_bytes, rpad_bytes;
    const struct dn_port *alias;    /* an earlier port whose reordered copy this one reads */
    size_t at;                      /* this call: offset of inner in the scratch */
} dn_port;

typedef struct dn_prim {
    dnnl_primitive_t p;
    dnnl_memory_t pad; /* scratchpad (NULL: none) */
    size_t pad_bytes;
    dn_port port[5];
    int np;
} dn_prim;

typedef struct dn_shape {
    sd_conv2d_params p;
    int threads;
    int want_winograd;         /* the context's choice for this shape (part of the cache key) */
    int winograd;              /* made with oneDNN's Winograd algorithm (else direct) */
    int declined;              /* oneDNN has no implementation: conv.c computes this shape */
    dnnl_primitive_desc_t dpd; /* backward data, until its primitive is made (first call with dx) */
    dnnl_memory_desc_t x_md, w_md, b_md, y_md;
    dn_prim fwd, bw, bd;
} dn_shape;

struct sd_dnnl_ctx {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_primitive_attr_t attr; /* user scratchpad */
    dn_shape *shape[SD_DNNL_SHAPES];
    int n;
};

bool sd_cpu_conv_dnnl_available(void) { return true; }

bool sd_cpu_conv_wants_winograd(const sd_kctx *k, const sd_conv2d_params *p) {
    if (k->conv != SD_CPU_CONV_DNNL || k->winograd == SD_CPU_WINO_OFF) return false;
    if (p->kh != 3 || p->kw != 3 || p->sh != 1 || p->sw != 1) return false;
    return k->winograd == SD_CPU_WINO_ON ||
           (p->c >= SD_WINOGRAD_MIN_CH && p->k >= SD_WINOGRAD_MIN_CH && p->oh >= 4 && p->ow >= 4);
}

static size_t round64(size_t v) { return (v + 63) & ~(size_t)63; }

/* ---- building ------------------------------------------------------------------------------ */

static void prim_free(dn_prim *pr) {
    for (int i = 0; i < pr->np; i++) {
        dn_port *pt = &pr->port[i];
        if (pt->reorder) dnnl_primitive_destroy(pt->reorder);
        if (pt->rpad) dnnl_memory_destroy(pt->rpad);
        if (pt->inner && pt->inner != pt->user) dnnl_memory_destroy(pt->inner);
        if (pt->user) dnnl_memory_destroy(pt->user);
    }
    if (pr->pad) dnnl_memory_destroy(pr->pad);
    if (pr->p) dnnl_primitive_destroy(pr->p);
    memset(pr, 0, sizeof *pr);
}

static void shape_free(dn_shape *s) {
    if (!s) return;
    prim_free(&s->fwd);
    prim_free(&s->bw);
    prim_free(&s->bd);
    if (s->dpd) dnnl_primitive_desc_destroy(s->dpd);
    free(s);
}

/* The scratchpad size of pd and, when it has one, a memory object for it (no buffer yet). */
static sd_status scratchpad_of(sd_dnnl_ctx *d, const_dnnl_primitive_desc_t pd, dnnl_memory_t *mem, size_t *bytes) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    *bytes = md ? dnnl_memory_desc_get_size(md) : 0;
    if (*bytes) DNNL_CHECK(dnnl_memory_create(mem, md, d->eng, DNNL_MEMORY_NONE));
    return SD_OK;
}

static sd_status prim_make(sd_dnnl_ctx *d, dn_prim *pr, const_dnnl_primitive_desc_t pd) {
    DNNL_CHECK(dnnl_primitive_create(&pr->p, pd));
    return scratchpad_of(d, pd, &pr->pad, &pr->pad_bytes);
}

/* Adds the argument `arg` of pd (its memory descriptor: query what, index) for the caller's
 * tensor `tensor`, laid out as user_md; a reorder when the primitive wants another layout, unless
 * `alias` (an input already reordered for an earlier primitive of the same call) has it. */
static sd_status port_add(sd_dnnl_ctx *d, dn_prim *pr, const_dnnl_primitive_desc_t pd, dnnl_query_t what, int index,
                          const dnnl_memory_desc_t *user_md, int tensor, int arg, int out, const dn_port *alias) {
    dn_port *pt = &pr->port[pr->np++];
    *pt = (dn_port){.arg = arg, .out = out, .tensor = tensor};
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, index);
    if (!md) return SD_FAIL(SD_ERR_RUNTIME, "oneDNN: the primitive has no argument %d", arg);
    DNNL_CHECK(dnnl_memory_create(&pt->user, user_md, d->eng, DNNL_MEMORY_NONE));
    if (dnnl_memory_desc_equal(md, user_md)) {
        pt->inner = pt->user;
        return SD_OK;
    }
    DNNL_CHECK(dnnl_memory_create(&pt->inner, md, d->eng, DNNL_MEMORY_NONE));
    pt->inner_bytes = dnnl_memory_desc_get_size(md);
    if (alias && !alias->out && alias->inner != alias->user) {
        const dnnl_memory_desc_t *amd = NULL;
        DNNL_CHECK(dnnl_memory_get_memory_desc(alias->inner, &amd));
        if (dnnl_memory_desc_equal(md, amd)) {
            pt->alias = alias;
            return SD_OK;
        }
    }
    dnnl_primitive_desc_t rpd = NULL;
    DNNL_CHECK(out ? dnnl_reorder_primitive_desc_create(&rpd, md, d->eng, user_md, d->eng, d->attr)
                   : dnnl_reorder_primitive_desc_create(&rpd, user_md, d->eng, md, d->eng, d->attr));
    dnnl_status_t st = dnnl_primitive_create(&pt->reorder, rpd);
    sd_status s = st == dnnl_success ? scratchpad_of(d, rpd, &pt->rpad, &pt->rpad_bytes)
                                     : SD_FAIL(SD_ERR_RUNTIME, "oneDNN: reorder creation failed: %s", dnnl_status2str(st));
    dnnl_primitive_desc_destroy(rpd);
    return s;
}

static const dn_port *port_of(const dn_prim *pr, int tensor) {
    for (int i = 0; i < pr->np; i++)
        if (pr->port[i].tensor == tensor) return &pr->port[i];
    return NULL;
}

/* Backward data's primitive and ports, from the kept descriptor (the first call that wants dx);
 * on failure nothing of it is kept, so a later call tries again. */
static sd_status bd_build(sd_dnnl_ctx *d, dn_shape *s) {
    const_dnnl_primitive_desc_t pd = s->dpd;
    TRY(prim_make(d, &s->bd, pd));
    TRY(port_add(d, &s->bd, pd, dnnl_query_weights_md, 0, &s->w_md, T_W, DNNL_ARG_WEIGHTS, 0, NULL));
    TRY(port_add(d, &s->bd, pd, dnnl_query_diff_dst_md, 0, &s->y_md, T_DY, DNNL_ARG_DIFF_DST, 0,
                 port_of(&s->bw, T_DY)));
    TRY(port_add(d, &s->bd, pd, dnnl_query_diff_src_md, 0, &s->x_md, T_DX, DNNL_ARG_DIFF_SRC, 1, NULL));
    return SD_OK;
}

static sd_status bd_make(sd_dnnl_ctx *d, dn_shape *s) {
    sd_status r = bd_build(d, s);
    if (r != SD_OK) {
        prim_free(&s->bd);
        return r;
    }
    dnnl_primitive_desc_destroy(s->dpd);
    s->dpd = NULL;
    return SD_OK;
}

/* The descriptors of shape s, and the forward and backward-weights primitives; s->declined when
 * oneDNN implements none of them for this shape. */
static sd_status shape_make(sd_dnnl_ctx *d, dn_shape *s) {
    const sd_conv2d_params *p = &s->p;
    dnnl_dims_t xd = {p->n, p->c, p->h, p->w}, wd = {p->k, p->c, p->kh, p->kw}, bd = {p->k}, yd = {p->n, p->k, p->oh, p->ow};
    dnnl_dims_t strides = {p->sh, p->sw}, pad_l = {p->ph, p->pw};
    /* PyTorch's output size: the right/bottom padding is what it implies (negative when the last
     * input rows or columns are never read) */
    dnnl_dims_t pad_r = {(p->oh - 1) * p->sh + p->kh - p->h - p->ph, (p->ow - 1) * p->sw + p->kw - p->w - p->pw};
    dnnl_memory_desc_t ax, aw, ay;
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&s->x_md, 4, xd, dnnl_f32, dnnl_nchw));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&s->w_md, 4, wd, dnnl_f32, dnnl_oihw));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&s->b_md, 1, bd, dnnl_f32, dnnl_x));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&s->y_md, 4, yd, dnnl_f32, dnnl_nchw));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&ax, 4, xd, dnnl_f32, dnnl_format_tag_any));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&aw, 4, wd, dnnl_f32, dnnl_format_tag_any));
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&ay, 4, yd, dnnl_f32, dnnl_format_tag_any));
    const dnnl_memory_desc_t *bias = p->has_bias ? &s->b_md : NULL;
    dnnl_convolution_desc_t fd, wdsc, ddsc;
    const dnnl_alg_kind_t alg = s->winograd ? dnnl_convolution_winograd : dnnl_convolution_direct;
    DNNL_CHECK(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, alg, &ax, &aw, bias,
                                                  &ay, strides, pad_l, pad_r));
    DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(&wdsc, alg, &ax, &aw, bias, &ay, strides,
                                                           pad_l, pad_r));
    DNNL_CHECK(dnnl_convolution_backward_data_desc_init(&ddsc, alg, &ax, &aw, &ay, strides, pad_l,
                                                        pad_r));
    dnnl_primitive_desc_t fpd = NULL, wpd = NULL;
    dnnl_status_t st = dnnl_primitive_desc_create(&fpd, &fd, d->attr, d->eng, NULL);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&wpd, &wdsc, d->attr, d->eng, fpd);
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&s->dpd, &ddsc, d->attr, d->eng, fpd);
    sd_status r = SD_OK;
    if (st == dnnl_unimplemented && s->winograd) {
        /* no Winograd implementation on this CPU (it needs AVX-512) or for this shape: direct */
        if (fpd) dnnl_primitive_desc_destroy(fpd);
        if (wpd) dnnl_primitive_desc_destroy(wpd);
        if (s->dpd) dnnl_primitive_desc_destroy(s->dpd);
        s->dpd = NULL;
        s->winograd = 0;
        return shape_make(d, s);
    }
    if (st == dnnl_unimplemented) {
        s->declined = 1;
    } else if (st != dnnl_success) {
        r = SD_FAIL(SD_ERR_RUNTIME, "oneDNN: convolution descriptor creation failed: %s", dnnl_status2str(st));
    } else {
        if ((r = prim_make(d, &s->fwd, fpd)) == SD_OK &&
            (r = port_add(d, &s->fwd, fpd, dnnl_query_src_md, 0, &s->x_md, T_X, DNNL_ARG_SRC, 0, NULL)) == SD_OK &&
            (r = port_add(d, &s->fwd, fpd, dnnl_query_weights_md, 0, &s->w_md, T_W, DNNL_ARG_WEIGHTS, 0, NULL)) == SD_OK &&
            (!p->has_bias ||
             (r = port_add(d, &s->fwd, fpd, dnnl_query_weights_md, 1, &s->b_md, T_B, DNNL_ARG_BIAS, 0, NULL)) == SD_OK) &&
            (r = port_add(d, &s->fwd, fpd, dnnl_query_dst_md, 0, &s->y_md, T_Y, DNNL_ARG_DST, 1, NULL)) == SD_OK &&
            (r = prim_make(d, &s->bw, wpd)) == SD_OK &&
            (r = port_add(d, &s->bw, wpd, dnnl_query_src_md, 0, &s->x_md, T_X, DNNL_ARG_SRC, 0, NULL)) == SD_OK &&
            (r = port_add(d, &s->bw, wpd, dnnl_query_diff_dst_md, 0, &s->y_md, T_DY, DNNL_ARG_DIFF_DST, 0, NULL)) == SD_OK &&
            (r = port_add(d, &s->bw, wpd, dnnl_query_diff_weights_md, 0, &s->w_md, T_DW, DNNL_ARG_DIFF_WEIGHTS, 1,
                          NULL)) == SD_OK &&
            p->has_bias)
            r = port_add(d, &s->bw, wpd, dnnl_query_diff_weights_md, 1, &s->b_md, T_DB, DNNL_ARG_DIFF_BIAS, 1, NULL);
    }
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    return r;
}

static bool same_params(const sd_conv2d_params *a, const sd_conv2d_params *b) {
    return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->k == b->k && a->kh == b->kh &&
           a->kw == b->kw && a->sh == b->sh && a->sw == b->sw && a->ph == b->ph && a->pw == b->pw &&
           a->has_bias == b->has_bias;
}

static sd_status ctx_get(sd_kctx *k, sd_dnnl_ctx **out) {
    if (!k->dnnl) {
        sd_dnnl_ctx *d = calloc(1, sizeof *d);
        if (!d) return SD_FAIL(SD_ERR_OOM, "oneDNN context: allocation failed");
        k->dnnl = d; /* freed with the context, whatever fails below */
        DNNL_CHECK(dnnl_engine_create(&d->eng, dnnl_cpu, 0));
        DNNL_CHECK(dnnl_stream_create(&d->strm, d->eng, dnnl_stream_default_flags));
        DNNL_CHECK(dnnl_primitive_attr_create(&d->attr));
        DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(d->attr, dnnl_scratchpad_mode_user));
    }
    if (!k->dnnl->eng || !k->dnnl->strm || !k->dnnl->attr)
        return SD_FAIL(SD_ERR_RUNTIME, "oneDNN context: the engine, stream or attributes failed to build earlier");
    *out = k->dnnl;
    return SD_OK;
}

/* The cached shape for p on `threads` threads (moved to the front), made on first use. Called
 * with the OpenMP thread count already set to `threads`. */
static sd_status shape_get(sd_dnnl_ctx *d, const sd_conv2d_params *p, int threads, int wino, dn_shape **out) {
    for (int i = 0; i < d->n; i++) {
        dn_shape *s = d->shape[i];
        if (s->threads == threads && s->want_winograd == wino && same_params(&s->p, p)) {
            memmove(&d->shape[1], &d->shape[0], (size_t)i * sizeof d->shape[0]);
            d->shape[0] = s;
            *out = s;
            return SD_OK;
        }
    }
    dn_shape *s = calloc(1, sizeof *s);
    if (!s) return SD_FAIL(SD_ERR_OOM, "oneDNN: shape cache entry");
    s->p = *p;
    s->threads = threads;
    s->want_winograd = s->winograd = wino;
    sd_status r = shape_make(d, s);
    if (r != SD_OK) {
        shape_free(s);
        return r;
    }
    if (d->n == SD_DNNL_SHAPES) shape_free(d->shape[--d->n]);
    memmove(&d->shape[1], &d->shape[0], (size_t)d->n * sizeof d->shape[0]);
    d->shape[0] = s;
    d->n++;
    *out = s;
    return SD_OK;
}

/* ---- running ------------------------------------------------------------------------------- */

/* Scratch bytes of the primitives prs[0..n): their reordered copies one after another, then one
 * scratchpad area as large as the largest (they run one at a time). */
static size_t scratch_need(dn_prim *const *prs, int n, size_t *pad_bytes) {
    size_t total = 0, pad = 0;
    for (int j = 0; j < n; j++) {
        const dn_prim *pr = prs[j];
        if (pr->pad_bytes > pad) pad = pr->pad_bytes;
        for (int i = 0; i < pr->np; i++) {
            const dn_port *pt = &pr->port[i];
            if (pt->inner != pt->user && !pt->alias) total += round64(pt->inner_bytes);
            if (pt->rpad_bytes > pad) pad = pt->rpad_bytes;
        }
    }
    *pad_bytes = round64(pad);
    return total + *pad_bytes;
}

/* Points the memory objects of prs[0..n) at the caller's tensors and at pieces of the scratch
 * (laid out as scratch_need says). */
static sd_status bind(sd_dnnl_ctx *d, dn_prim *const *prs, int n, void *const *t, char *scratch, size_t pad_at) {
    size_t cur = 0;
    char *pad = scratch + pad_at;
    for (int j = 0; j < n; j++) {
        dn_prim *pr = prs[j];
        if (pr->pad) DNNL_CHECK(dnnl_memory_set_data_handle_v2(pr->pad, pad, d->strm));
        for (int i = 0; i < pr->np; i++) {
            dn_port *pt = &pr->port[i];
            DNNL_CHECK(dnnl_memory_set_data_handle_v2(pt->user, t[pt->tensor], d->strm));
            if (pt->inner == pt->user) continue;
            if (pt->alias) {
                pt->at = pt->alias->at;
            } else {
                pt->at = cur;
                cur += round64(pt->inner_bytes);
            }
            DNNL_CHECK(dnnl_memory_set_data_handle_v2(pt->inner, scratch + pt->at, d->strm));
            if (pt->rpad) DNNL_CHECK(dnnl_memory_set_data_handle_v2(pt->rpad, pad, d->strm));
        }
    }
    return SD_OK;
}

static sd_status reorder(sd_dnnl_ctx *d, const dn_port *pt) {
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, pt->out ? pt->inner : pt->user},
                            {DNNL_ARG_TO, pt->out ? pt->user : pt->inner},
                            {DNNL_ARG_SCRATCHPAD, pt->rpad}};
    DNNL_CHECK(dnnl_primitive_execute(pt->reorder, d->strm, pt->rpad ? 3 : 2, a));
    return SD_OK;
}

/* Inputs reordered in, the primitive, outputs reordered back. */
static sd_status run(sd_dnnl_ctx *d, const dn_prim *pr) {
    dnnl_exec_arg_t a[6];
    int na = 0;
    for (int i = 0; i < pr->np; i++) {
        const dn_port *pt = &pr->port[i];
        if (!pt->out && pt->reorder) TRY(reorder(d, pt));
        a[na++] = (dnnl_exec_arg_t){pt->arg, pt->inner};
    }
    if (pr->pad) a[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, pr->pad};
    DNNL_CHECK(dnnl_primitive_execute(pr->p, d->strm, na, a));
    for (int i = 0; i < pr->np; i++)
        if (pr->port[i].out && pr->port[i].reorder) TRY(reorder(d, &pr->port[i]));
    return SD_OK;
}

/* What a call runs, on the thread count already set. */
static sd_status call(sd_kctx *k, const sd_conv2d_params *p, int threads, void *const *t, bool bwd, bool *done) {
    sd_dnnl_ctx *d = NULL;
    dn_shape *s = NULL;
    TRY(ctx_get(k, &d));
    TRY(shape_get(d, p, threads, sd_cpu_conv_wants_winograd(k, p), &s));
    if (s->declined) return SD_OK;
    const bool want_dx = bwd && t[T_DX];
    if (want_dx && !s->bd.p) TRY(bd_make(d, s));
    dn_prim *prs[2] = {bwd ? &s->bw : &s->fwd, &s->bd};
    const int n = want_dx ? 2 : 1;
    size_t pad_bytes;
    const size_t need = scratch_need(prs, n, &pad_bytes);
    void *scratch = NULL;
    TRY(sd_cpu_scratch(k, need < 64 ? 64 : need, &scratch)); /* never NULL, even when nothing is reordered */
    TRY(bind(d, prs, n, t, scratch, need - pad_bytes));
    for (int j = 0; j < n; j++) TRY(run(d, prs[j]));
    DNNL_CHECK(dnnl_stream_wait(d->strm));
    *done = true;
    return SD_OK;
}

/* The thread count of a shape: the context's, or 1 below SD_CONV_PAR_MIN_MACS (conv.c's rule,
 * on the forward's multiply-adds, so that the three primitives of a shape share it). */
static int shape_threads(const sd_kctx *k, const sd_conv2d_params *p) {
    const int64_t macs = (int64_t)p->n * p->k * p->oh * p->ow * p->c * p->kh * p->kw;
    return k->threads > 1 && macs >= SD_CONV_PAR_MIN_MACS ? k->threads : 1;
}

/* call() with the calling thread's OpenMP thread count set to the shape's and restored after. */
static sd_status call_on_threads(sd_kctx *k, const sd_conv2d_params *p, void *const *t, bool bwd, bool *done) {
    *done = false;
    const int threads = shape_threads(k, p), before = omp_get_max_threads();
    if (before != threads) omp_set_num_threads(threads);
    sd_status s = call(k, p, threads, t, bwd, done);
    if (before != threads) omp_set_num_threads(before);
    if (s != SD_OK) sd_add_context(__func__, __FILE__, __LINE__);
    return s;
}

sd_status sd_cpu_dnnl_conv2d_fwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                 const float *b, float *y, bool *done) {
    void *t[T_COUNT] = {[T_X] = (void *)x, [T_W] = (void *)w, [T_B] = (void *)b, [T_Y] = y};
    return call_on_threads(k, p, t, false, done);
}

sd_status sd_cpu_dnnl_conv2d_bwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, bool *done) {
    void *t[T_COUNT] = {[T_X] = (void *)x, [T_W] = (void *)w, [T_DY] = (void *)dy, [T_DX] = dx, [T_DW] = dw,
                        [T_DB] = db};
    return call_on_threads(k, p, t, true, done);
}

void sd_cpu_dnnl_ctx_destroy(sd_dnnl_ctx *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) shape_free(d->shape[i]);
    if (d->attr) dnnl_primitive_attr_destroy(d->attr);
    if (d->strm) dnnl_stream_destroy(d->strm);
    if (d->eng) dnnl_engine_destroy(d->eng);
    free(d);
}

#else /* no oneDNN in this build: conv.c never calls these (the context cannot choose dnnl) */

bool sd_cpu_conv_dnnl_available(void) { return false; }

bool sd_cpu_conv_wants_winograd(const sd_kctx *k, const sd_conv2d_params *p) {
    (void)k, (void)p;
    return false;
}

sd_status sd_cpu_dnnl_conv2d_fwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                 const float *b, float *y, bool *done) {
    (void)k, (void)p, (void)x, (void)w, (void)b, (void)y;
    *done = false;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "conv2d: this build has no oneDNN");
}

sd_status sd_cpu_dnnl_conv2d_bwd(sd_kctx *k, const sd_conv2d_params *p, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, bool *done) {
    (void)k, (void)p, (void)x, (void)w, (void)dy, (void)dx, (void)dw, (void)db;
    *done = false;
    return SD_FAIL(SD_ERR_UNSUPPORTED, "conv2d: this build has no oneDNN");
}

void sd_cpu_dnnl_ctx_destroy(sd_dnnl_ctx *d) { (void)d; }

#endif
