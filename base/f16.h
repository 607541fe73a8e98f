/* f16.h: IEEE binary16 conversions, exact and deterministic, usable from C and from CUDA device
 * code (the compressor's f16 wire values, comm/compress.h, and their CPU and CUDA kernels must
 * round alike, bit for bit). Round to nearest even; overflow gives +-inf, NaN stays NaN (sign and
 * top payload bits kept), subnormals are exact to 2^-24. sd_f16_wire is what a value becomes on
 * the wire: saturated to +-65504 (SD_F16_MAX), then rounded. */
#ifndef SD_BASE_F16_H
#define SD_BASE_F16_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define SD_HOST_DEVICE __host__ __device__
#else
#define SD_HOST_DEVICE
#endif

#define SD_F16_MAX 65504.0f

static inline SD_HOST_DEVICE uint32_t sd_f32_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static inline SD_HOST_DEVICE float sd_bits_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static inline SD_HOST_DEVICE uint16_t sd_f32_to_f16(float f) {
    const uint32_t x = sd_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x1ffu)); /* quiet NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf (and inf) */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal or zero */
        if (ax <= 0x33000000u) return (uint16_t)sign;          /* <= 2^-25: rounds to 0 (tie to even) */
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e; /* 14..24: value / 2^-24 = m / 2^shift */
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r); /* r = 0x400 is the smallest normal: still right */
    }
    const uint32_t r = ax - 0x38000000u; /* rebias the exponent 127 -> 15 */
    uint32_t h = r >> 13;
    const uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static inline SD_HOST_DEVICE float sd_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) return sd_bits_f32(sign | 0x7f800000u | (m << 13));
    return sd_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* The value a float becomes on the wire: saturated to +-65504 and rounded to binary16. */
static inline SD_HOST_DEVICE float sd_f16_wire(float v) {
    if (v > SD_F16_MAX) v = SD_F16_MAX;
    else if (v < -SD_F16_MAX) v = -SD_F16_MAX;
    return sd_f16_to_f32(sd_f32_to_f16(v));
}

#ifdef __cplusplus
}
#endif

#endif
