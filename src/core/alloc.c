/*
 * The allocation path: 64-byte aligned blocks with a header that records the size, so that
 * current and peak bytes are exact; fault injection for tests.
 *
 * Layout of a block: [pad | header (size, magic) | user data]; the header sits in the 64 bytes
 * just before the user pointer, so the user pointer stays 64-byte aligned.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>

#include "fedc/alloc.h"

#define HDR FEDC_ALIGN
#define MAGIC 0xfedcA110c8ULL

typedef struct block_header {
    size_t size;
    uint64_t magic;
} block_header;

static atomic_size_t cur_bytes;
static atomic_size_t peak_bytes;
static atomic_uint_fast64_t n_allocs;
static atomic_uint_fast64_t n_failures;
static atomic_uint_fast64_t fail_countdown; /* 0 = off */
static atomic_int fail_sticky;
static atomic_int failing; /* sticky failure has triggered */

static int should_fail(void)
{
    if (atomic_load_explicit(&failing, memory_order_relaxed)) return 1;
    uint_fast64_t c = atomic_load(&fail_countdown);
    while (c > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) {
            if (c == 1) {
                if (atomic_load(&fail_sticky)) atomic_store(&failing, 1);
                return 1;
            }
            return 0;
        }
    }
    return 0;
}

static void account(size_t add)
{
    size_t now = atomic_fetch_add(&cur_bytes, add) + add;
    size_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
    }
    atomic_fetch_add(&n_allocs, 1);
}

static block_header *header_of(void *p)
{
    block_header *h = (block_header *)((char *)p - sizeof(block_header));
    assert(h->magic == MAGIC && "fedc_free/realloc of a pointer not from fedc_malloc");
    return h;
}

void *fedc_malloc(size_t size)
{
    if (should_fail() || size > SIZE_MAX - HDR) {
        atomic_fetch_add(&n_failures, 1);
        return NULL;
    }
    void *raw = NULL;
    if (posix_memalign(&raw, FEDC_ALIGN, HDR + size) != 0) {
        atomic_fetch_add(&n_failures, 1);
        return NULL;
    }
    char *user = (char *)raw + HDR;
    block_header *h = (block_header *)(user - sizeof(block_header));
    h->size = size;
    h->magic = MAGIC;
    account(size);
    return user;
}

void *fedc_calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) {
        atomic_fetch_add(&n_failures, 1);
        return NULL;
    }
    void *p = fedc_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void fedc_free(void *ptr)
{
    if (!ptr) return;
    block_header *h = header_of(ptr);
    atomic_fetch_sub(&cur_bytes, h->size);
    h->magic = 0;
    free((char *)ptr - HDR);
}

void *fedc_realloc(void *ptr, size_t size)
{
    if (!ptr) return fedc_malloc(size);
    block_header *h = header_of(ptr);
    if (size <= h->size && size >= h->size / 2) {
        /* shrink in place: keep the block, account the difference */
        atomic_fetch_sub(&cur_bytes, h->size - size);
        h->size = size;
        return ptr;
    }
    void *p = fedc_malloc(size);
    if (!p) return NULL; /* the old block stays valid, as with realloc */
    memcpy(p, ptr, h->size < size ? h->size : size);
    fedc_free(ptr);
    return p;
}

char *fedc_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = fedc_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void fedc_alloc_get_stats(fedc_alloc_stats *out)
{
    out->current_bytes = atomic_load(&cur_bytes);
    out->peak_bytes = atomic_load(&peak_bytes);
    out->allocations = atomic_load(&n_allocs);
    out->failures = atomic_load(&n_failures);
}

void fedc_alloc_reset_stats(void)
{
    atomic_store(&peak_bytes, atomic_load(&cur_bytes));
    atomic_store(&n_allocs, 0);
    atomic_store(&n_failures, 0);
}

void fedc_alloc_fail_after(uint64_t n, int sticky)
{
    atomic_store(&failing, 0);
    atomic_store(&fail_sticky, sticky);
    atomic_store(&fail_countdown, n);
}
