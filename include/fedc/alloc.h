/*
 * The one allocation path of libfedc. Every block is 64-byte aligned (cache lines, AVX-512),
 * counted (current and peak bytes) and can be made to fail on purpose, for tests that check
 * that every allocation failure ends in a clean error and no leak (curl's "torture" mode).
 * Thread-safe.
 */
#ifndef FEDC_ALLOC_H
#define FEDC_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_ALIGN 64

/* malloc/calloc/realloc/free look-alikes. Sizes of 0 return a valid unique pointer.
 * Blocks must be freed with fedc_free (never free()). fedc_free(NULL) does nothing. */
void *fedc_malloc(size_t size);
void *fedc_calloc(size_t count, size_t size); /* zeroed; NULL when count*size overflows */
void *fedc_realloc(void *ptr, size_t size);
void fedc_free(void *ptr);
char *fedc_strdup(const char *s);

typedef struct fedc_alloc_stats {
    size_t current_bytes; /* bytes in blocks not yet freed */
    size_t peak_bytes;    /* high-water mark of current_bytes since the last reset */
    uint64_t allocations; /* successful allocations since the last reset */
    uint64_t failures;    /* allocations that failed (real or injected) */
} fedc_alloc_stats;

void fedc_alloc_get_stats(fedc_alloc_stats *out);
/* Resets peak to current and the counters to 0. */
void fedc_alloc_reset_stats(void);

/* Fault injection for tests: the n-th allocation from now fails (n = 1: the next one);
 * with `sticky`, every allocation after it fails too. n = 0 turns injection off. */
void fedc_alloc_fail_after(uint64_t n, int sticky);

#ifdef __cplusplus
}
#endif
#endif
