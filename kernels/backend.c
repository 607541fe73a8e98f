/* backend.c: backend-independent helpers of the backend interface. */
#include "kernels/backend.h"

#include <stddef.h>

void sd_backend_destroy(sd_backend *be) {
    if (!be || !be->ops) return;
    if (be->ops->destroy) be->ops->destroy(be->ctx);
    be->ops = NULL;
    be->ctx = NULL;
}

sd_status sd_backend_require(const sd_backend *be, sd_op op, const void *params) {
    if (!be || !be->ops) return SD_FAIL(SD_ERR_INVALID, "backend is not initialised");
    if (!be->ops->supports_op(be->ctx, op, params))
        return SD_FAIL(SD_ERR_UNSUPPORTED, "backend '%s' does not support op %s with these parameters",
                       be->ops->name, sd_op_name(op));
    return SD_OK;
}

#ifndef SCADLES_HAVE_CUDA
sd_status sd_backend_cuda_create(sd_backend *be, int device) {
    (void)be;
    return SD_FAIL(SD_ERR_UNSUPPORTED,
                   "CUDA device %d requested but this build has no CUDA backend; reconfigure on a machine "
                   "with nvcc, cuBLAS and cuDNN (configure prints what it found) or use the cpu backend",
                   device);
}
#endif
