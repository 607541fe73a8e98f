/* rng.h: the engine's deterministic random numbers (xoshiro256** seeded by splitmix64). Every
 * random choice in the engine (initialisation, shuffles, augmentation, rate models) draws from
 * an sd_rng with an explicit seed, so runs are reproducible and the state can be checkpointed. */
#ifndef SD_ENGINE_RNG_H
#define SD_ENGINE_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_rng {
    uint64_t s[4];
} sd_rng;

void sd_rng_seed(sd_rng *r, uint64_t seed);
uint64_t sd_rng_u64(sd_rng *r);
/* Uniform in [0, 1) with 24 bits (float) or 53 bits (double). */
float sd_rng_float(sd_rng *r);
double sd_rng_double(sd_rng *r);
/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t sd_rng_below(sd_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double sd_rng_normal(sd_rng *r);

#ifdef __cplusplus
}
#endif

#endif
