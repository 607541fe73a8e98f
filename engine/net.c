/* net.c: the layer graph: building, parameter blocks, activation arena, forward, loss, backward.
 * Every op goes through the backend table, so the same graph runs on the CPU and CUDA backends. */
#include "engine/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/rng.h"

#define SD_MAX_NODES 1024
#define SD_MAX_PARAMS 2048

typedef struct sd_node {
    sd_layer_kind kind;
    int in[2];          /* input node ids (-1 unused) */
    int c, h, w;        /* per-sample output shape */
    int consumers;      /* how many nodes read this one */
    bool needs_grad;    /* false for the input and anything computed from it alone without params */
    int fused_relu;     /* batch norm or add: the ReLU node run inside its pass (its only reader), 0 none */
    bool folded;        /* ReLU: runs inside the batch norm or add before it; shares its y and dy */
    int p_weight, p_bias;        /* indices into net->tensors (-1 none) */
    int b_mean, b_var;           /* BN buffers */
    int k, stride, pad;          /* conv/pool kernel, stride, padding */
    int out_ch;                  /* conv / linear outputs */
    bool bias;
    float drop_p;
    /* per-forward state */
    union {
        sd_conv2d_params conv;
        sd_bn_params bn;
        sd_pool2d_params pool;
        sd_linear_params lin;
        sd_dropout_params drop;
    } op;
    float *y, *dy;
    float *save_mean, *save_invstd;
    int32_t *argmax;
    uint8_t *mask;
} sd_node;

struct sd_net {
    sd_backend *be;
    sd_node nodes[SD_MAX_NODES];
    int num_nodes;
    sd_param tensors[SD_MAX_PARAMS];
    int num_tensors;
    size_t param_count, buffer_count;
    sd_status error; /* sticky builder error */
    bool finalized;
    bool no_fusion;                  /* sd_net_set_fusion(net, false): every layer runs apart */
    float *params, *grads, *buffers; /* one allocation each, backend memory */
    sd_arena act;                    /* activations, sized for `capacity` samples */
    int capacity;
    int n;                           /* current batch */
    bool train;                      /* mode of the last forward */
    float *probs, *tmp;              /* [capacity, classes]; the largest activation */
    size_t tmp_count;
    int64_t batches_tracked;
    uint64_t dropout_seed, dropout_step;
    bool *grad_ready;                /* per node, during backward */
    /* Gradient memory (plan_gradients): node i's dy is slot dy_slot[i] (-1: none or a folded
     * ReLU's, which is its batch norm's); slot s holds slot_elems[s] floats per sample. */
    int dy_slot[SD_MAX_NODES];
    size_t slot_elems[SD_MAX_NODES];
    float *slot_ptr[SD_MAX_NODES];
    int num_slots;
    bool profile;                    /* sd_net_set_profile: per-layer times in prof_s[fwd/bwd][node] */
    double prof_s[2][SD_MAX_NODES];
};

/* Adds the time since *t0 to node i's forward (d = 0) or backward (d = 1) row and restarts *t0. */
static void prof_lap(sd_net *net, int d, int i, double *t0) {
    const double t = sd_clock_now();
    net->prof_s[d][i] += t - *t0;
    *t0 = t;
}

/* ---------------------------------------------------------------------------------------------
 * building
 * ------------------------------------------------------------------------------------------- */

sd_status sd_net_create(sd_backend *be, int in_c, int in_h, int in_w, sd_net **out) {
    if (!out || !be || !be->ops) return SD_FAIL(SD_ERR_INVALID, "net: NULL backend or output");
    if (in_c <= 0 || in_h <= 0 || in_w <= 0 || in_c > 65536 || in_h > 65536 || in_w > 65536)
        return SD_FAIL(SD_ERR_SHAPE, "net: input shape [%d,%d,%d] must be positive", in_c, in_h, in_w);
    sd_net *net = calloc(1, sizeof *net);
    if (!net) return SD_FAIL(SD_ERR_OOM, "net: allocation failed");
    net->be = be;
    net->num_nodes = 1;
    sd_node *in = &net->nodes[0];
    in->kind = SD_LAYER_INPUT;
    in->in[0] = in->in[1] = -1;
    in->c = in_c; in->h = in_h; in->w = in_w;
    in->p_weight = in->p_bias = in->b_mean = in->b_var = -1;
    net->dropout_seed = 0x5eed;
    *out = net;
    return SD_OK;
}

void sd_net_destroy(sd_net *net) {
    if (!net) return;
    sd_backend *be = net->be;
    if (net->params) be->ops->free(be->ctx, net->params);
    if (net->grads) be->ops->free(be->ctx, net->grads);
    if (net->buffers) be->ops->free(be->ctx, net->buffers);
    sd_arena_release(&net->act);
    free(net->grad_ready);
    free(net);
}

int sd_net_input(const sd_net *net) {
    (void)net;
    return 0;
}

/* Records the first builder error and returns -1. */
#define BUILD_FAIL(net, status, ...)                                                   \
    do {                                                                               \
        if ((net)->error == SD_OK) (net)->error = SD_FAIL((status), __VA_ARGS__);      \
        return -1;                                                                     \
    } while (0)

static sd_node *new_node(sd_net *net, sd_layer_kind kind, int in0, int in1, const char *what, int *id) {
    if (net->error != SD_OK) return NULL;
    if (net->finalized) {
        net->error = SD_FAIL(SD_ERR_INVALID, "net: %s added after finalize", what);
        return NULL;
    }
    if (net->num_nodes >= SD_MAX_NODES) {
        net->error = SD_FAIL(SD_ERR_INVALID, "net: more than %d layers at %s", SD_MAX_NODES, what);
        return NULL;
    }
    int ins[2] = {in0, in1};
    for (int i = 0; i < 2; i++) {
        if (ins[i] == -2) continue; /* unused slot */
        if (ins[i] < 0 || ins[i] >= net->num_nodes) {
            net->error = SD_FAIL(SD_ERR_INVALID, "net: %s reads node %d, which does not exist (have %d)", what,
                                 ins[i], net->num_nodes);
            return NULL;
        }
    }
    *id = net->num_nodes++;
    sd_node *n = &net->nodes[*id];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->in[0] = in0;
    n->in[1] = in1 == -2 ? -1 : in1;
    n->p_weight = n->p_bias = n->b_mean = n->b_var = -1;
    n->needs_grad = true;
    for (int i = 0; i < 2; i++)
        if (n->in[i] >= 0) net->nodes[n->in[i]].consumers++;
    return n;
}

static int add_tensor(sd_net *net, const char *prefix, const char *suffix, int ndim, const int *shape,
                      bool trainable, float bound) {
    if (net->num_tensors >= SD_MAX_PARAMS) {
        net->error = SD_FAIL(SD_ERR_INVALID, "net: more than %d named tensors at %s", SD_MAX_PARAMS, prefix);
        return -1;
    }
    sd_param *p = &net->tensors[net->num_tensors];
    memset(p, 0, sizeof *p);
    int len = snprintf(p->name, sizeof p->name, "%s.%s", prefix, suffix);
    if (len < 0 || (size_t)len >= sizeof p->name) {
        net->error = SD_FAIL(SD_ERR_INVALID, "net: tensor name '%s.%s' longer than %d characters", prefix, suffix,
                             SD_NAME_MAX - 1);
        return -1;
    }
    for (int i = 0; i < net->num_tensors; i++)
        if (strcmp(net->tensors[i].name, p->name) == 0) {
            net->error = SD_FAIL(SD_ERR_INVALID, "net: two tensors named '%s'; give layers distinct names", p->name);
            return -1;
        }
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->trainable = trainable;
    p->init_bound = bound;
    if (trainable) {
        p->offset = net->param_count;
        net->param_count += p->count;
    } else {
        p->offset = net->buffer_count;
        net->buffer_count += p->count;
    }
    return net->num_tensors++;
}

static bool name_ok(sd_net *net, const char *name, const char *what) {
    if (!name || !name[0]) {
        if (net->error == SD_OK) net->error = SD_FAIL(SD_ERR_INVALID, "net: %s needs a non-empty name", what);
        return false;
    }
    return true;
}

int sd_net_conv2d(sd_net *net, int in, const char *name, int out_ch, int kernel, int stride, int pad, bool bias) {
    int id;
    if (!name_ok(net, name, "conv2d")) return -1;
    sd_node *n = new_node(net, SD_LAYER_CONV2D, in, -2, "conv2d", &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[in];
    sd_conv2d_params p;
    if (sd_conv2d_params_make(&p, 1, x->c, x->h, x->w, out_ch, kernel, kernel, stride, stride, pad, pad, bias) != SD_OK)
        BUILD_FAIL(net, SD_ERR_SHAPE, "net: conv2d '%s' on input [%d,%d,%d]: %s", name, x->c, x->h, x->w, sd_last_error());
    n->c = out_ch; n->h = p.oh; n->w = p.ow;
    n->k = kernel; n->stride = stride; n->pad = pad; n->out_ch = out_ch; n->bias = bias;
    int fan_in = x->c * kernel * kernel;
    float bound = 1.0f / sqrtf((float)fan_in);
    int ws[4] = {out_ch, x->c, kernel, kernel};
    n->p_weight = add_tensor(net, name, "weight", 4, ws, true, bound);
    if (bias) n->p_bias = add_tensor(net, name, "bias", 1, &out_ch, true, bound);
    return net->error == SD_OK ? id : -1;
}

int sd_net_batchnorm2d(sd_net *net, int in, const char *name) {
    int id;
    if (!name_ok(net, name, "batchnorm2d")) return -1;
    sd_node *n = new_node(net, SD_LAYER_BATCHNORM2D, in, -2, "batchnorm2d", &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[in];
    n->c = x->c; n->h = x->h; n->w = x->w;
    n->p_weight = add_tensor(net, name, "weight", 1, &x->c, true, 0);
    n->p_bias = add_tensor(net, name, "bias", 1, &x->c, true, 0);
    n->b_mean = add_tensor(net, name, "running_mean", 1, &x->c, false, 0);
    n->b_var = add_tensor(net, name, "running_var", 1, &x->c, false, 0);
    return net->error == SD_OK ? id : -1;
}

static int same_shape_layer(sd_net *net, sd_layer_kind kind, int in, const char *what) {
    int id;
    sd_node *n = new_node(net, kind, in, -2, what, &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[in];
    n->c = x->c; n->h = x->h; n->w = x->w;
    return id;
}

int sd_net_relu(sd_net *net, int in) { return same_shape_layer(net, SD_LAYER_RELU, in, "relu"); }

static int pool_layer(sd_net *net, sd_layer_kind kind, int in, int kernel, int stride, int pad, const char *what) {
    int id;
    sd_node *n = new_node(net, kind, in, -2, what, &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[in];
    sd_pool2d_params p;
    if (sd_pool2d_params_make(&p, 1, x->c, x->h, x->w, kernel, kernel, stride, stride, pad, pad) != SD_OK)
        BUILD_FAIL(net, SD_ERR_SHAPE, "net: %s on input [%d,%d,%d]: %s", what, x->c, x->h, x->w, sd_last_error());
    n->c = x->c; n->h = p.oh; n->w = p.ow;
    n->k = kernel; n->stride = stride; n->pad = pad;
    return id;
}

int sd_net_maxpool2d(sd_net *net, int in, int kernel, int stride, int pad) {
    return pool_layer(net, SD_LAYER_MAXPOOL2D, in, kernel, stride, pad, "maxpool2d");
}

int sd_net_avgpool2d(sd_net *net, int in, int kernel, int stride, int pad) {
    return pool_layer(net, SD_LAYER_AVGPOOL2D, in, kernel, stride, pad, "avgpool2d");
}

int sd_net_global_avgpool(sd_net *net, int in) {
    int id;
    sd_node *n = new_node(net, SD_LAYER_GLOBAL_AVGPOOL, in, -2, "global_avgpool", &id);
    if (!n) return -1;
    n->c = net->nodes[in].c; n->h = 1; n->w = 1;
    return id;
}

int sd_net_flatten(sd_net *net, int in) {
    int id;
    sd_node *n = new_node(net, SD_LAYER_FLATTEN, in, -2, "flatten", &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[in];
    n->c = x->c * x->h * x->w; n->h = 1; n->w = 1;
    return id;
}

int sd_net_linear(sd_net *net, int in, const char *name, int out, bool bias) {
    int id;
    if (!name_ok(net, name, "linear")) return -1;
    sd_node *n = new_node(net, SD_LAYER_LINEAR, in, -2, "linear", &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[in];
    int fan_in = x->c * x->h * x->w;
    sd_linear_params p;
    if (sd_linear_params_make(&p, 1, fan_in, out, bias) != SD_OK)
        BUILD_FAIL(net, SD_ERR_SHAPE, "net: linear '%s': %s", name, sd_last_error());
    n->c = out; n->h = 1; n->w = 1;
    n->out_ch = out; n->bias = bias;
    float bound = 1.0f / sqrtf((float)fan_in);
    int ws[2] = {out, fan_in};
    n->p_weight = add_tensor(net, name, "weight", 2, ws, true, bound);
    if (bias) n->p_bias = add_tensor(net, name, "bias", 1, &out, true, bound);
    return net->error == SD_OK ? id : -1;
}

int sd_net_add(sd_net *net, int a, int b) {
    int id;
    sd_node *n = new_node(net, SD_LAYER_ADD, a, b, "add", &id);
    if (!n) return -1;
    const sd_node *x = &net->nodes[a], *y = &net->nodes[b];
    if (x->c != y->c || x->h != y->h || x->w != y->w)
        BUILD_FAIL(net, SD_ERR_SHAPE, "net: add of [%d,%d,%d] (node %d) and [%d,%d,%d] (node %d): shapes differ", x->c,
                   x->h, x->w, a, y->c, y->h, y->w, b);
    n->c = x->c; n->h = x->h; n->w = x->w;
    return id;
}

int sd_net_dropout(sd_net *net, int in, float p) {
    if (!(p >= 0.0f && p < 1.0f)) {
        if (net->error == SD_OK) net->error = SD_FAIL(SD_ERR_INVALID, "net: dropout probability %g must be in [0, 1)", (double)p);
        return -1;
    }
    int id = same_shape_layer(net, SD_LAYER_DROPOUT, in, "dropout");
    if (id >= 0) net->nodes[id].drop_p = p;
    return id;
}

/* ---------------------------------------------------------------------------------------------
 * gradient memory plan
 * ------------------------------------------------------------------------------------------- */

/* The node whose dy holds node i's gradient: a folded ReLU's is its batch norm's. */
static int dy_owner(const sd_net *net, int i) { return net->nodes[i].folded ? net->nodes[i].in[0] : i; }

/* Backward visits nodes from the last to the first. Node v's gradient is first written while the
 * highest-numbered node reading v is visited (through a folded ReLU: that ReLU's readers; the last
 * node's by the loss, before the walk) and read for the last time when v itself is visited, so it
 * lives over the visits first[v] down to v. Gradients whose spans do not meet share a slot: a
 * chain needs two, a residual block keeps its input's gradient alive across the block. Slots are
 * handed out greedily in visiting order, each to the free slot closest in size (growing the
 * largest free one when none is big enough), so a network needs a few gradient buffers instead
 * of one per layer; the values computed are the same. */
static void plan_gradients(sd_net *net) {
    const int nn = net->num_nodes;
    int first[SD_MAX_NODES], order[SD_MAX_NODES], nv = 0;
    for (int v = 0; v < nn; v++) first[v] = v;
    first[nn - 1] = nn;
    for (int j = 1; j < nn; j++) {
        /* a folded ReLU writes nothing (its readers write its batch norm's dy), but zeroes that dy
         * when nothing reads it: its visit counts as a write either way */
        for (int t = 0; t < 2; t++) {
            int src = net->nodes[j].in[t];
            if (src < 0 || !net->nodes[src].needs_grad) continue;
            int v = dy_owner(net, src);
            if (j > first[v]) first[v] = j;
        }
    }
    for (int v = 1; v < nn; v++) {
        net->dy_slot[v] = -1;
        if (net->nodes[v].needs_grad && !net->nodes[v].folded) order[nv++] = v;
    }
    net->dy_slot[0] = -1;
    /* visiting order: latest first write first (insertion sort; a few dozen nodes) */
    for (int a = 1; a < nv; a++) {
        int v = order[a], b = a - 1;
        while (b >= 0 && (first[order[b]] < first[v] || (first[order[b]] == first[v] && order[b] < v))) {
            order[b + 1] = order[b];
            b--;
        }
        order[b + 1] = v;
    }
    int holder[SD_MAX_NODES]; /* per slot: the node whose gradient it holds last (-1 none yet) */
    net->num_slots = 0;
    for (int a = 0; a < nv; a++) {
        int v = order[a];
        size_t e = (size_t)net->nodes[v].c * net->nodes[v].h * net->nodes[v].w;
        int fit = -1, big = -1;
        for (int sl = 0; sl < net->num_slots; sl++) {
            if (holder[sl] <= first[v]) continue; /* its gradient is still live while v's is written */
            if (net->slot_elems[sl] >= e && (fit < 0 || net->slot_elems[sl] < net->slot_elems[fit])) fit = sl;
            if (big < 0 || net->slot_elems[sl] > net->slot_elems[big]) big = sl;
        }
        int sl = fit >= 0 ? fit : big;
        if (sl < 0) {
            sl = net->num_slots++;
            net->slot_elems[sl] = 0;
        }
        if (net->slot_elems[sl] < e) net->slot_elems[sl] = e;
        holder[sl] = v;
        net->dy_slot[v] = sl;
    }
}

/* ---------------------------------------------------------------------------------------------
 * finalize: parameter blocks and initialisation
 * ------------------------------------------------------------------------------------------- */

sd_status sd_net_finalize(sd_net *net, uint64_t seed) {
    if (!net) return SD_FAIL(SD_ERR_INVALID, "net: NULL");
    if (net->error != SD_OK) return net->error; /* message already recorded by the builder */
    if (net->finalized) return SD_FAIL(SD_ERR_INVALID, "net: finalize called twice");
    if (net->num_nodes < 2) return SD_FAIL(SD_ERR_INVALID, "net: no layers were added");
    if (net->param_count == 0) return SD_FAIL(SD_ERR_INVALID, "net: the model has no trainable parameters");
    sd_node *out = &net->nodes[net->num_nodes - 1];
    if (out->h != 1 || out->w != 1)
        return SD_FAIL(SD_ERR_SHAPE, "net: the output must be one vector of logits per sample, got [%d,%d,%d]; end with linear",
                       out->c, out->h, out->w);
    /* Nodes reached only from the input through parameter-free layers need no gradient. */
    net->nodes[0].needs_grad = false;
    for (int i = 1; i < net->num_nodes; i++) {
        sd_node *n = &net->nodes[i];
        bool from_grad = false;
        for (int j = 0; j < 2; j++)
            if (n->in[j] >= 0 && net->nodes[n->in[j]].needs_grad) from_grad = true;
        n->needs_grad = from_grad || n->p_weight >= 0;
    }
    /* Fusion: a ReLU whose input is a batch norm or a residual add read by nothing else runs inside
     * that layer's passes (sd_bn_params.relu and bn_relu_bwd; add_relu_fwd, and relu_bwd in place
     * before the add's backward) and shares its activation and gradient memory. */
    for (int i = 1; i < net->num_nodes && !net->no_fusion; i++) {
        sd_node *n = &net->nodes[i], *s = &net->nodes[n->in[0]];
        if (n->kind == SD_LAYER_RELU && (s->kind == SD_LAYER_BATCHNORM2D || s->kind == SD_LAYER_ADD) &&
            s->consumers == 1) {
            s->fused_relu = i;
            n->folded = true;
        }
    }
    plan_gradients(net);
    sd_backend *be = net->be;
    TRY(be->ops->alloc(be->ctx, net->param_count * sizeof(float), (void **)&net->params));
    TRY(be->ops->alloc(be->ctx, net->param_count * sizeof(float), (void **)&net->grads));
    TRY(be->ops->zero(be->ctx, net->grads, net->param_count * sizeof(float)));
    if (net->buffer_count) TRY(be->ops->alloc(be->ctx, net->buffer_count * sizeof(float), (void **)&net->buffers));
    net->grad_ready = calloc((size_t)net->num_nodes, sizeof(bool));
    if (!net->grad_ready) return SD_FAIL(SD_ERR_OOM, "net: allocation failed");

    /* Initialise on the host, then upload. */
    float *hp = malloc(net->param_count * sizeof(float));
    float *hb = net->buffer_count ? malloc(net->buffer_count * sizeof(float)) : NULL;
    if (!hp || (net->buffer_count && !hb)) {
        free(hp);
        free(hb);
        return SD_FAIL(SD_ERR_OOM, "net: host staging for %zu parameters failed", net->param_count);
    }
    sd_rng rng;
    sd_rng_seed(&rng, seed);
    for (int t = 0; t < net->num_tensors; t++) {
        const sd_param *p = &net->tensors[t];
        const char *suffix = strrchr(p->name, '.') + 1;
        float *dst = p->trainable ? hp + p->offset : hb + p->offset;
        for (size_t i = 0; i < p->count; i++) {
            if (p->init_bound > 0) dst[i] = (2.0f * sd_rng_float(&rng) - 1.0f) * p->init_bound;
            else if (!strcmp(suffix, "weight") || !strcmp(suffix, "running_var")) dst[i] = 1.0f;
            else dst[i] = 0.0f;
        }
    }
    sd_status st = be->ops->upload(be->ctx, net->params, hp, net->param_count * sizeof(float));
    if (st == SD_OK && hb) st = be->ops->upload(be->ctx, net->buffers, hb, net->buffer_count * sizeof(float));
    free(hp);
    free(hb);
    TRY(st);
    net->finalized = true;
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * activation memory
 * ------------------------------------------------------------------------------------------- */

static size_t node_elems(const sd_node *n, int batch) { return (size_t)batch * n->c * n->h * n->w; }

/* Walks the nodes computing (carve = false) or carving (carve = true) activation memory. */
static sd_status layout_activations(sd_net *net, int cap, bool carve, size_t *total) {
    size_t bytes = 0, biggest = 0;
    sd_arena *a = &net->act;
#define TAKE(ptr, nbytes)                                                   \
    do {                                                                    \
        size_t nb_ = (nbytes);                                              \
        if (carve) TRY(sd_arena_take(a, nb_, (void **)&(ptr)));             \
        bytes += sd_arena_round(nb_);                                       \
    } while (0)
    for (int i = 1; i < net->num_nodes; i++) {
        sd_node *n = &net->nodes[i];
        size_t e = node_elems(n, cap);
        if (e > biggest) biggest = e;
        if (n->folded) { /* the batch norm before it writes its output and reads its gradient */
            if (carve) n->y = net->nodes[n->in[0]].y;
            continue;
        }
        TAKE(n->y, e * sizeof(float));
        n->dy = NULL; /* set from its slot below */
        if (n->kind == SD_LAYER_BATCHNORM2D) {
            TAKE(n->save_mean, (size_t)n->c * sizeof(float));
            TAKE(n->save_invstd, (size_t)n->c * sizeof(float));
        } else if (n->kind == SD_LAYER_MAXPOOL2D) {
            TAKE(n->argmax, e * sizeof(int32_t));
        } else if (n->kind == SD_LAYER_DROPOUT) {
            TAKE(n->mask, e);
        }
    }
    for (int sl = 0; sl < net->num_slots; sl++) TAKE(net->slot_ptr[sl], (size_t)cap * net->slot_elems[sl] * sizeof(float));
    for (int i = 1; i < net->num_nodes && carve; i++)
        if (net->dy_slot[i] >= 0) net->nodes[i].dy = net->slot_ptr[net->dy_slot[i]];
    for (int i = 1; i < net->num_nodes && carve; i++)
        if (net->nodes[i].folded) net->nodes[i].dy = net->nodes[net->nodes[i].in[0]].dy;
    const sd_node *out = &net->nodes[net->num_nodes - 1];
    TAKE(net->probs, node_elems(out, cap) * sizeof(float));
    TAKE(net->tmp, biggest * sizeof(float));
    net->tmp_count = biggest;
#undef TAKE
    *total = bytes;
    return SD_OK;
}

sd_status sd_net_reserve(sd_net *net, int max_n) {
    if (!net || !net->finalized) return SD_FAIL(SD_ERR_INVALID, "net: reserve before finalize");
    if (max_n <= 0) return SD_FAIL(SD_ERR_SHAPE, "net: batch %d must be positive", max_n);
    if (max_n <= net->capacity) return SD_OK;
    size_t total = 0;
    TRY(layout_activations(net, max_n, false, &total));
    TRY(sd_arena_reserve(&net->act, net->be, total));
    TRY(layout_activations(net, max_n, true, &total));
    net->capacity = max_n;
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * forward
 * ------------------------------------------------------------------------------------------- */

static const float *node_y(const sd_net *net, int id, const float *x) { return id == 0 ? x : net->nodes[id].y; }

sd_status sd_net_forward(sd_net *net, const float *x, int n, bool train) {
    if (!net || !net->finalized) return SD_FAIL(SD_ERR_INVALID, "net: forward before finalize");
    if (!x) return SD_FAIL(SD_ERR_INVALID, "net: forward input is NULL");
    if (n <= 0) return SD_FAIL(SD_ERR_SHAPE, "net: batch %d must be positive", n);
    TRY(sd_net_reserve(net, n));
    net->n = n;
    net->train = train;
    net->nodes[0].y = (float *)x;
    const sd_backend_ops *o = net->be->ops;
    sd_kctx *k = net->be->ctx;
    if (train) net->dropout_step++;
    double t0 = net->profile ? sd_clock_now() : 0;
    for (int i = 1; i < net->num_nodes; i++) {
        if (net->profile && i > 1) prof_lap(net, 0, i - 1, &t0);
        sd_node *d = &net->nodes[i];
        const sd_node *s = &net->nodes[d->in[0]];
        const float *in = node_y(net, d->in[0], x);
        size_t count = node_elems(d, n);
        switch (d->kind) {
        case SD_LAYER_CONV2D: {
            TRY(sd_conv2d_params_make(&d->op.conv, n, s->c, s->h, s->w, d->out_ch, d->k, d->k, d->stride, d->stride,
                                      d->pad, d->pad, d->bias));
            const float *b = d->p_bias >= 0 ? net->params + net->tensors[d->p_bias].offset : NULL;
            TRY(o->conv2d_fwd(k, &d->op.conv, in, net->params + net->tensors[d->p_weight].offset, b, d->y));
            break;
        }
        case SD_LAYER_BATCHNORM2D: {
            TRY(sd_bn_params_make(&d->op.bn, n, s->c, s->h, s->w, 1e-5f, 0.1f));
            d->op.bn.relu = d->fused_relu > 0;
            const float *g = net->params + net->tensors[d->p_weight].offset;
            const float *b = net->params + net->tensors[d->p_bias].offset;
            float *rm = net->buffers + net->tensors[d->b_mean].offset;
            float *rv = net->buffers + net->tensors[d->b_var].offset;
            if (train) TRY(o->bn_fwd_train(k, &d->op.bn, in, g, b, d->y, rm, rv, d->save_mean, d->save_invstd));
            else TRY(o->bn_fwd_eval(k, &d->op.bn, in, g, b, rm, rv, d->y));
            break;
        }
        case SD_LAYER_RELU:
            if (!d->folded) TRY(o->relu_fwd(k, count, in, d->y));
            break;
        case SD_LAYER_MAXPOOL2D:
        case SD_LAYER_AVGPOOL2D:
            TRY(sd_pool2d_params_make(&d->op.pool, n, s->c, s->h, s->w, d->k, d->k, d->stride, d->stride, d->pad, d->pad));
            if (d->kind == SD_LAYER_MAXPOOL2D) TRY(o->maxpool_fwd(k, &d->op.pool, in, d->y, d->argmax));
            else TRY(o->avgpool_fwd(k, &d->op.pool, in, d->y));
            break;
        case SD_LAYER_GLOBAL_AVGPOOL:
            TRY(sd_pool2d_params_make(&d->op.pool, n, s->c, s->h, s->w, 1, 1, 1, 1, 0, 0));
            TRY(o->gap_fwd(k, &d->op.pool, in, d->y));
            break;
        case SD_LAYER_FLATTEN: TRY(o->copy(k, d->y, in, count * sizeof(float))); break;
        case SD_LAYER_LINEAR: {
            TRY(sd_linear_params_make(&d->op.lin, n, s->c * s->h * s->w, d->out_ch, d->bias));
            const float *b = d->p_bias >= 0 ? net->params + net->tensors[d->p_bias].offset : NULL;
            TRY(o->linear_fwd(k, &d->op.lin, in, net->params + net->tensors[d->p_weight].offset, b, d->y));
            break;
        }
        case SD_LAYER_ADD:
            if (d->fused_relu) TRY(o->add_relu_fwd(k, count, in, node_y(net, d->in[1], x), d->y));
            else TRY(o->add(k, count, in, node_y(net, d->in[1], x), d->y));
            break;
        case SD_LAYER_DROPOUT:
            if (train && d->drop_p > 0.0f) {
                TRY(sd_dropout_params_make(&d->op.drop, count, d->drop_p, net->dropout_seed + (uint64_t)i,
                                           net->dropout_step << 32));
                TRY(o->dropout_fwd(k, &d->op.drop, in, d->y, d->mask));
            } else {
                TRY(o->copy(k, d->y, in, count * sizeof(float)));
            }
            break;
        case SD_LAYER_INPUT: break;
        }
    }
    if (net->profile) prof_lap(net, 0, net->num_nodes - 1, &t0);
    if (train) net->batches_tracked++;
    return SD_OK;
}

sd_status sd_net_loss(sd_net *net, const int32_t *labels, float grad_scale, float *loss) {
    if (!net || net->n <= 0) return SD_FAIL(SD_ERR_INVALID, "net: loss before forward");
    if (!labels || !loss) return SD_FAIL(SD_ERR_INVALID, "net: loss needs labels and an output");
    sd_node *out = &net->nodes[net->num_nodes - 1];
    sd_xent_params p;
    TRY(sd_xent_params_make(&p, net->n, out->c));
    const sd_backend_ops *o = net->be->ops;
    TRY(o->xent_fwd(net->be->ctx, &p, out->y, labels, net->probs, loss));
    TRY(o->xent_bwd(net->be->ctx, &p, net->probs, labels, grad_scale, out->dy));
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * backward
 * ------------------------------------------------------------------------------------------- */

/* Where the gradient for input `id` goes: its dy when this is the first contribution, else the
 * shared tmp buffer (to be added afterwards). NULL when that input needs no gradient. */
static float *grad_dst(sd_net *net, int id, bool *accumulate) {
    sd_node *n = &net->nodes[id];
    *accumulate = false;
    if (!n->needs_grad) return NULL;
    if (!net->grad_ready[id]) {
        net->grad_ready[id] = true;
        return n->dy;
    }
    *accumulate = true;
    return net->tmp;
}

static sd_status grad_finish(sd_net *net, int id, bool accumulate) {
    if (!accumulate) return SD_OK;
    sd_node *n = &net->nodes[id];
    return net->be->ops->add(net->be->ctx, node_elems(n, net->n), n->dy, net->tmp, n->dy);
}

sd_status sd_net_backward(sd_net *net) {
    if (!net || net->n <= 0) return SD_FAIL(SD_ERR_INVALID, "net: backward before forward");
    if (!net->train) return SD_FAIL(SD_ERR_INVALID, "net: backward after an evaluation forward; run forward with train=true");
    const sd_backend_ops *o = net->be->ops;
    sd_kctx *k = net->be->ctx;
    const float *x = net->nodes[0].y;
    int n = net->n;
    memset(net->grad_ready, 0, (size_t)net->num_nodes * sizeof(bool));
    net->grad_ready[net->num_nodes - 1] = true;
    double t0 = net->profile ? sd_clock_now() : 0;
    for (int i = net->num_nodes - 1; i >= 1; i--) {
        if (net->profile && i < net->num_nodes - 1) prof_lap(net, 1, i + 1, &t0);
        sd_node *d = &net->nodes[i];
        if (!d->needs_grad) continue;
        if (!net->grad_ready[i]) {
            /* A node nothing downstream reads (a dead branch): its gradient is zero. */
            TRY(o->zero(k, d->dy, node_elems(d, n) * sizeof(float)));
        }
        int src = d->in[0];
        if (d->folded) { /* its gradient is its source's, which masks it (bn_relu_bwd; the add's relu_bwd) */
            net->grad_ready[src] = true;
            continue;
        }
        const float *in = node_y(net, src, x);
        size_t count = node_elems(d, n);
        bool acc = false;
        float *dx = NULL;
        switch (d->kind) {
        case SD_LAYER_CONV2D: {
            dx = grad_dst(net, src, &acc);
            float *db = d->p_bias >= 0 ? net->grads + net->tensors[d->p_bias].offset : NULL;
            TRY(o->conv2d_bwd(k, &d->op.conv, in, net->params + net->tensors[d->p_weight].offset, d->dy, dx,
                              net->grads + net->tensors[d->p_weight].offset, db));
            break;
        }
        case SD_LAYER_BATCHNORM2D:
            dx = grad_dst(net, src, &acc); /* NULL: input gradient not needed */
            if (d->fused_relu)
                TRY(o->bn_relu_bwd(k, &d->op.bn, in, d->y, net->params + net->tensors[d->p_weight].offset,
                                   d->save_mean, d->save_invstd, d->dy, dx,
                                   net->grads + net->tensors[d->p_weight].offset,
                                   net->grads + net->tensors[d->p_bias].offset));
            else
                TRY(o->bn_bwd(k, &d->op.bn, in, net->params + net->tensors[d->p_weight].offset, d->save_mean,
                              d->save_invstd, d->dy, dx, net->grads + net->tensors[d->p_weight].offset,
                              net->grads + net->tensors[d->p_bias].offset));
            break;
        case SD_LAYER_LINEAR: {
            dx = grad_dst(net, src, &acc);
            float *db = d->p_bias >= 0 ? net->grads + net->tensors[d->p_bias].offset : NULL;
            TRY(o->linear_bwd(k, &d->op.lin, in, net->params + net->tensors[d->p_weight].offset, d->dy, dx,
                              net->grads + net->tensors[d->p_weight].offset, db));
            break;
        }
        case SD_LAYER_RELU:
            if ((dx = grad_dst(net, src, &acc))) TRY(o->relu_bwd(k, count, d->y, d->dy, dx));
            break;
        case SD_LAYER_MAXPOOL2D:
            if ((dx = grad_dst(net, src, &acc))) TRY(o->maxpool_bwd(k, &d->op.pool, d->dy, d->argmax, dx));
            break;
        case SD_LAYER_AVGPOOL2D:
            if ((dx = grad_dst(net, src, &acc))) TRY(o->avgpool_bwd(k, &d->op.pool, d->dy, dx));
            break;
        case SD_LAYER_GLOBAL_AVGPOOL:
            if ((dx = grad_dst(net, src, &acc))) TRY(o->gap_bwd(k, &d->op.pool, d->dy, dx));
            break;
        case SD_LAYER_FLATTEN:
            if ((dx = grad_dst(net, src, &acc))) TRY(o->copy(k, dx, d->dy, count * sizeof(float)));
            break;
        case SD_LAYER_DROPOUT:
            if ((dx = grad_dst(net, src, &acc))) {
                if (d->drop_p > 0.0f) TRY(o->dropout_bwd(k, &d->op.drop, d->dy, d->mask, dx));
                else TRY(o->copy(k, dx, d->dy, count * sizeof(float)));
            }
            break;
        case SD_LAYER_ADD:
            /* a fused ReLU: its gradient (in this dy) masked in place, then the add's */
            if (d->fused_relu) TRY(o->relu_bwd(k, count, d->y, d->dy, d->dy));
            for (int j = 0; j < 2; j++) {
                if ((dx = grad_dst(net, d->in[j], &acc))) {
                    TRY(o->copy(k, dx, d->dy, count * sizeof(float)));
                    TRY(grad_finish(net, d->in[j], acc));
                }
            }
            acc = false;
            break;
        case SD_LAYER_INPUT: break;
        }
        if (dx && d->kind != SD_LAYER_ADD) TRY(grad_finish(net, src, acc));
    }
    if (net->profile) prof_lap(net, 1, 1, &t0);
    return SD_OK;
}

/* ---------------------------------------------------------------------------------------------
 * introspection
 * ------------------------------------------------------------------------------------------- */

int sd_net_batch(const sd_net *net) { return net->n; }
int sd_net_classes(const sd_net *net) { return net->nodes[net->num_nodes - 1].c; }
const float *sd_net_output(const sd_net *net) { return net->nodes[net->num_nodes - 1].y; }
const float *sd_net_probs(const sd_net *net) { return net->probs; }
size_t sd_net_param_count(const sd_net *net) { return net->param_count; }
size_t sd_net_buffer_count(const sd_net *net) { return net->buffer_count; }
float *sd_net_params(sd_net *net) { return net->params; }
float *sd_net_grads(sd_net *net) { return net->grads; }
float *sd_net_buffers(sd_net *net) { return net->buffers; }
int sd_net_num_tensors(const sd_net *net) { return net->num_tensors; }
const sd_param *sd_net_tensor(const sd_net *net, int i) {
    return (i >= 0 && i < net->num_tensors) ? &net->tensors[i] : NULL;
}

int sd_net_trainable_layout(const sd_net *net, size_t *offset, size_t *count, int cap) {
    int nl = 0;
    for (int i = 0; i < sd_net_num_tensors(net); i++) {
        const sd_param *p = sd_net_tensor(net, i);
        if (!p->trainable || p->count == 0) continue;
        if (nl < cap) {
            offset[nl] = p->offset;
            count[nl] = p->count;
        }
        nl++;
    }
    return nl;
}
float *sd_net_tensor_data(sd_net *net, const sd_param *p) {
    if (!p) return NULL;
    return (p->trainable ? net->params : net->buffers) + p->offset;
}
const sd_param *sd_net_find(const sd_net *net, const char *name) {
    for (int i = 0; i < net->num_tensors; i++)
        if (!strcmp(net->tensors[i].name, name)) return &net->tensors[i];
    return NULL;
}
sd_backend *sd_net_backend(const sd_net *net) { return net->be; }
int64_t sd_net_batches_tracked(const sd_net *net) { return net->batches_tracked; }
void sd_net_set_batches_tracked(sd_net *net, int64_t value) { net->batches_tracked = value; }
size_t sd_net_activation_bytes(const sd_net *net) { return net->act.capacity; }
unsigned sd_net_activation_grows(const sd_net *net) { return net->act.grows; }
void sd_net_set_dropout_seed(sd_net *net, uint64_t seed) { net->dropout_seed = seed; }
sd_status sd_net_set_fusion(sd_net *net, bool on) {
    if (!net) return SD_FAIL(SD_ERR_INVALID, "net: NULL");
    if (net->finalized) return SD_FAIL(SD_ERR_INVALID, "net: fusion is decided at finalize; set it before");
    net->no_fusion = !on;
    return SD_OK;
}
const char *sd_layer_kind_name(sd_layer_kind kind) {
    static const char *const names[] = {"input",   "conv2d",  "batchnorm2d", "relu",   "maxpool2d", "avgpool2d",
                                        "gap",     "flatten", "linear",      "add",    "dropout"};
    return (int)kind >= 0 && (size_t)kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

void sd_net_set_profile(sd_net *net, bool on) {
    if (!net) return;
    net->profile = on;
    if (on) memset(net->prof_s, 0, sizeof net->prof_s);
}

int sd_net_layer_times(const sd_net *net, sd_layer_time *out, int max) {
    if (!net || !out) return 0;
    int n = 0;
    for (int i = 1; i < net->num_nodes && n < max; i++, n++) {
        const sd_node *d = &net->nodes[i];
        out[n] = (sd_layer_time){.node = i, .kind = d->kind, .c = d->c, .h = d->h, .w = d->w,
                                 .fused_into = d->folded ? d->in[0] : 0, .fwd_s = net->prof_s[0][i],
                                 .bwd_s = net->prof_s[1][i]};
    }
    return n;
}

int sd_net_fused_count(const sd_net *net) {
    int k = 0;
    for (int i = 1; i < net->num_nodes; i++) k += net->nodes[i].folded;
    return k;
}
void sd_net_flops(const sd_net *net, double *forward, double *train) {
    double f = 0, t = 0;
    for (int i = 1; i < net->num_nodes; i++) {
        const sd_node *d = &net->nodes[i], *s = &net->nodes[d->in[0]];
        double macs;
        if (d->kind == SD_LAYER_CONV2D) macs = (double)d->c * d->h * d->w * s->c * d->k * d->k;
        else if (d->kind == SD_LAYER_LINEAR) macs = (double)s->c * s->h * s->w * d->out_ch;
        else continue;
        f += 2 * macs;
        t += 2 * macs * (s->needs_grad ? 3 : 2); /* forward, weight gradient, input gradient */
    }
    if (forward) *forward = f;
    if (train) *train = t;
}
