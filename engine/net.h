/* net.h: networks as a graph of layers over the backend interface.
 *
 * A model is built by calls that each add one node and return its id (a DAG in creation order,
 * which is also a valid execution order); a residual block is two paths joined by sd_net_add.
 * Builder errors are sticky: the first one is kept and sd_net_finalize reports it, so model code
 * reads as a list of layers.
 *
 * Memory: trainable parameters live in one block (and their gradients in a second block of the
 * same layout: the fused gradient bucket the collectives reduce); BN running statistics in a
 * buffer block. Activations come from an arena sized for the largest batch seen so far: a smaller
 * batch reuses it, a larger one grows it once (sd_net_reserve). Names follow PyTorch's state_dict. */
#ifndef SD_ENGINE_NET_H
#define SD_ENGINE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_layer_kind {
    SD_LAYER_INPUT,
    SD_LAYER_CONV2D,
    SD_LAYER_BATCHNORM2D,
    SD_LAYER_RELU,
    SD_LAYER_MAXPOOL2D,
    SD_LAYER_AVGPOOL2D,
    SD_LAYER_GLOBAL_AVGPOOL,
    SD_LAYER_FLATTEN,
    SD_LAYER_LINEAR,
    SD_LAYER_ADD,
    SD_LAYER_DROPOUT
} sd_layer_kind;

#define SD_NAME_MAX 96

/* A named tensor of the model: a trainable parameter or a buffer (BN running statistics). */
typedef struct sd_param {
    char name[SD_NAME_MAX]; /* PyTorch state_dict key, e.g. "layer1.0.conv1.weight" */
    int ndim;
    int shape[SD_MAX_NDIM];
    size_t count;
    size_t offset;  /* in floats, into sd_net.params/grads (trainable) or sd_net.buffers */
    bool trainable;
    float init_bound; /* uniform init bound from fan-in (0 for BN and buffers) */
} sd_param;

typedef struct sd_net sd_net;

sd_status sd_net_create(sd_backend *be, int in_c, int in_h, int in_w, sd_net **out);
void sd_net_destroy(sd_net *net);

/* ---- builder: each returns the new node id, or -1 after an error (kept for finalize) ---- */
int sd_net_input(const sd_net *net); /* id of the input node (0) */
int sd_net_conv2d(sd_net *net, int in, const char *name, int out_ch, int kernel, int stride, int pad, bool bias);
int sd_net_batchnorm2d(sd_net *net, int in, const char *name);
int sd_net_relu(sd_net *net, int in);
int sd_net_maxpool2d(sd_net *net, int in, int kernel, int stride, int pad);
int sd_net_avgpool2d(sd_net *net, int in, int kernel, int stride, int pad);
int sd_net_global_avgpool(sd_net *net, int in);
int sd_net_flatten(sd_net *net, int in);
int sd_net_linear(sd_net *net, int in, const char *name, int out, bool bias);
int sd_net_add(sd_net *net, int a, int b);
int sd_net_dropout(sd_net *net, int in, float p);

/* Ends building: the last node is the output (it must be [classes] per sample), parameters are
 * allocated and initialised from `seed` (PyTorch's default init: uniform(+-1/sqrt(fan_in)) for
 * conv/linear weights and biases; BN weight 1, bias 0, running mean 0, var 1). */
sd_status sd_net_finalize(sd_net *net, uint64_t seed);

/* ---- running ---- */
/* Makes room for batches up to max_n (done on demand by forward; call it to pre-size). */
sd_status sd_net_reserve(sd_net *net, int max_n);
/* x: [n, in_c, in_h, in_w] in backend memory; must stay valid until backward returns. */
sd_status sd_net_forward(sd_net *net, const float *x, int n, bool train);
/* Softmax cross-entropy of the output against labels (backend memory, n of them). Writes the
 * mean loss to *loss and seeds the output gradient with (p - onehot) * grad_scale
 * (grad_scale = 1/n gives the gradient of the mean loss). */
sd_status sd_net_loss(sd_net *net, const int32_t *labels, float grad_scale, float *loss);
/* Backpropagates from the output gradient, writing sd_net_grads (overwritten each step). */
sd_status sd_net_backward(sd_net *net);

/* ---- introspection ---- */
int sd_net_batch(const sd_net *net);
int sd_net_classes(const sd_net *net);
const float *sd_net_output(const sd_net *net);  /* logits [n, classes], backend memory */
const float *sd_net_probs(const sd_net *net);   /* softmax after sd_net_loss */
size_t sd_net_param_count(const sd_net *net);   /* trainable floats */
size_t sd_net_buffer_count(const sd_net *net);  /* buffer floats */
float *sd_net_params(sd_net *net);              /* trainable block, backend memory */
float *sd_net_grads(sd_net *net);               /* gradient block, same layout */
float *sd_net_buffers(sd_net *net);             /* BN running statistics */
int sd_net_num_tensors(const sd_net *net);      /* named tensors (params and buffers) */
const sd_param *sd_net_tensor(const sd_net *net, int i);
/* The trainable tensors (weights and biases separately, as PyTorch's model.parameters()) as
 * (offset, count) pairs of the parameter block: writes up to cap of them (offset/count may be NULL
 * when cap is 0) and returns how many there are. A compressor's per-layer layout (comm/compress.h). */
int sd_net_trainable_layout(const sd_net *net, size_t *offset, size_t *count, int cap);
/* Data of a named tensor in backend memory, or NULL. */
float *sd_net_tensor_data(sd_net *net, const sd_param *p);
const sd_param *sd_net_find(const sd_net *net, const char *name);
sd_backend *sd_net_backend(const sd_net *net);
/* Number of BN layers' forward passes in training mode (PyTorch's num_batches_tracked). */
int64_t sd_net_batches_tracked(const sd_net *net);
void sd_net_set_batches_tracked(sd_net *net, int64_t value); /* on checkpoint load */
/* Bytes of activation memory reserved, and how often that block was (re)allocated. */
size_t sd_net_activation_bytes(const sd_net *net);
unsigned sd_net_activation_grows(const sd_net *net);
/* Floating-point operations of the dense math (convolutions and linear layers, 2 per multiply-add)
 * per sample: `forward` for one forward pass, `train` for forward plus backward (the weight gradient
 * of every such layer and the input gradient of those whose input needs one; the first layer's input
 * gradient is never computed). What a step's speed is compared with the sgemm bound by. */
void sd_net_flops(const sd_net *net, double *forward, double *train);
/* Fused passes (on by default): at finalize, a ReLU whose input is a batch norm or a residual add
 * read by nothing else runs inside that layer's forward and backward (sd_bn_params.relu and
 * bn_relu_bwd; add_relu_fwd) and shares its memory; the results are bitwise those of the layers
 * apart. false before
 * sd_net_finalize runs every layer apart (the reference the fused graph is tested against). */
sd_status sd_net_set_fusion(sd_net *net, bool on);
int sd_net_fused_count(const sd_net *net); /* how many layers run inside another's pass */
/* Per-layer time, to see where a step goes: with profiling on, every forward and backward adds each
 * layer's wall time (host clock around its ops) to that layer's row. On the CPU backend that is
 * the layer's compute; CUDA ops are asynchronous, so there the rows show launch time only.
 * Switching it on clears the rows. A ReLU run inside another layer's pass (fused_into: that
 * layer's node) takes no time of its own. scadles-bench --one MODEL --layers prints the table. */
typedef struct sd_layer_time {
    int node;
    sd_layer_kind kind;
    int c, h, w;    /* per-sample output shape */
    int fused_into; /* 0, or the node whose pass runs this layer */
    double fwd_s, bwd_s;
} sd_layer_time;
void sd_net_set_profile(sd_net *net, bool on);
/* Up to max rows, one per layer in graph order (node 1 on); returns how many. */
int sd_net_layer_times(const sd_net *net, sd_layer_time *out, int max);
const char *sd_layer_kind_name(sd_layer_kind kind);
/* Dropout masks are a function of (seed, step): set the seed used by dropout layers. */
void sd_net_set_dropout_seed(sd_net *net, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif
