/* scadles.h: the umbrella header of the ScaDLES engine for programs that use it as a library
 * (#include <scadles/scadles.h>; docs/install.md): experiment files and the distributed runner,
 * models and the layer graph, the compute backends, the collectives and gradient compression, and
 * the streams (replay, Kafka, MQTT). Each header it pulls in can also be included alone, written
 * from the layer ("engine/experiment.h"). Usable from C11 and from C++ (every header declares its
 * functions extern "C"); comm/comm_mpi.h and comm/comm_nccl.h declare their API only where the
 * library was built with MPI / NCCL (SCADLES_HAVE_MPI, SCADLES_HAVE_NCCL, which the CMake package
 * and scadles.pc define for what links the engine). */
#ifndef SCADLES_SCADLES_H
#define SCADLES_SCADLES_H

/* engine/distributed.h, engine/signals.h and engine/train.h name C11's atomic_int (the stop flag),
 * which C++ has in <stdatomic.h> only from C++23 on; g++ before C++23 gets std::atomic<int>, whose
 * layout is that of atomic_int (clang++ takes C's <stdatomic.h> as an extension). */
#if defined(__cplusplus) && __cplusplus <= 202002L && !defined(__clang__)
#include <atomic>
typedef std::atomic<int> atomic_int;
#endif

/* ---- base: status codes and messages, the version, the random generator ---- */
#include "base/rng.h"
#include "base/status.h"
#include "base/version.h"

/* ---- kernels: the backends (CPU; CUDA where built with it) and their ops ---- */
#include "kernels/backend.h"

/* ---- comm: collectives (local threads, MPI, NCCL, TCP), link shaping, gradient compression ---- */
#include "comm/comm.h"
#include "comm/comm_local.h"
#include "comm/comm_mpi.h"
#include "comm/comm_nccl.h"
#include "comm/comm_tcp.h"
#include "comm/compress.h"
#include "comm/cost.h"
#include "comm/shaper.h"

/* ---- stream: messages, ring buffers, ingest, sources, datasets, partitions, injection ---- */
#include "stream/augment.h"
#include "stream/dataset.h"
#include "stream/ingest.h"
#include "stream/inject.h"
#include "stream/kafka.h"
#include "stream/message.h"
#include "stream/mqtt.h"
#include "stream/partition.h"
#include "stream/rate.h"
#include "stream/replay.h"
#include "stream/ring.h"
#include "stream/source.h"

/* ---- engine: tensors, nets and models, optimizer, checkpoints, experiments and their runs ---- */
#include "engine/checkpoint.h"
#include "engine/distributed.h"
#include "engine/experiment.h"
#include "engine/models.h"
#include "engine/net.h"
#include "engine/optim.h"
#include "engine/profile.h"
#include "engine/report.h"
#include "engine/safetensors.h"
#include "engine/signals.h"
#include "engine/tensor.h"
#include "engine/trace.h"
#include "engine/train.h"

#endif
