/* crc32c.h: CRC-32C (Castagnoli), the checksum of stream messages (docs/stream-format.md). Reflected
 * polynomial 0x82F63B78, initial value 0xFFFFFFFF, final xor 0xFFFFFFFF: the CRC of iSCSI, ext4 and
 * Kafka record batches; the check value of "123456789" is 0xE3069283. Uses carry-less multiply
 * folding (AVX-512 VPCLMULQDQ) or the SSE4.2 crc32 instruction on three interleaved streams when
 * the CPU has them (detected at run time, whatever -march the build used), slicing-by-8 tables
 * otherwise. */
#ifndef SD_STREAM_CRC32C_H
#define SD_STREAM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Continues a CRC-32C over n more bytes: crc = sd_crc32c(0, a, na) then crc = sd_crc32c(crc, b, nb)
 * equals sd_crc32c(0, a||b, na+nb). Start from 0. */
uint32_t sd_crc32c(uint32_t crc, const void *data, size_t n);

/* Copies n bytes from src to dst (not overlapping) and continues the CRC over them in the same
 * pass: the encoder and the ingest path read each payload once instead of twice. */
uint32_t sd_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t n);

/* The portable table-driven path (slicing-by-8), the same function; the tests compare the two. */
uint32_t sd_crc32c_sw(uint32_t crc, const void *data, size_t n);

/* Which implementation sd_crc32c uses, chosen at the first call from what the CPU has:
 * 2 = AVX-512 VPCLMULQDQ folding (inputs of 319 bytes or more; the crc32 instruction below),
 * 1 = the SSE4.2 crc32 instruction on three streams, 0 = slicing-by-8 tables. */
int sd_crc32c_hw(void);

/* For tests and benchmarks: uses implementation `level` (clamped to what the CPU has; < 0: the
 * best) from now on and returns the level in effect. Not thread-safe against concurrent CRCs. */
int sd_crc32c_select(int level);

#ifdef __cplusplus
}
#endif

#endif
