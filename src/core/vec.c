/* Flat float32 vectors and the layouts that name their pieces. */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <nettle/sha2.h>
#include <sodium.h>

#include "fedc/alloc.h"
#include "fedc/config_build.h"
#include "fedc/vec.h"

#if FEDC_WITH_BLAS
#include <cblas.h>
#endif

/* ---- layouts ---- */

fedc_layout *fedc_layout_create(void)
{
    return fedc_calloc(1, sizeof(fedc_layout));
}

void fedc_layout_destroy(fedc_layout *layout)
{
    if (!layout) return;
    fedc_free(layout->tensors);
    fedc_free(layout);
}

const fedc_tensor_info *fedc_layout_find(const fedc_layout *layout, const char *name)
{
    for (size_t i = 0; i < layout->count; i++)
        if (strcmp(layout->tensors[i].name, name) == 0) return &layout->tensors[i];
    return NULL;
}

fedc_status fedc_layout_add(fedc_layout *layout, const char *name, int ndim, const int64_t *shape,
                            fedc_err *err)
{
    size_t len = strlen(name);
    if (len == 0 || len >= FEDC_TENSOR_NAME_MAX)
        return fedc_err_set(err, FEDC_ERR_INVALID, "tensor name '%s': must be 1 to %d characters",
                            name, FEDC_TENSOR_NAME_MAX - 1);
    if (ndim < 1 || ndim > FEDC_TENSOR_MAX_DIMS)
        return fedc_err_set(err, FEDC_ERR_INVALID, "tensor '%s': %d dimensions (allowed 1 to %d)",
                            name, ndim, FEDC_TENSOR_MAX_DIMS);
    if (fedc_layout_find(layout, name))
        return fedc_err_set(err, FEDC_ERR_INVALID, "tensor '%s' is already in the layout", name);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0)
            return fedc_err_set(err, FEDC_ERR_INVALID, "tensor '%s': dimension %d is %lld", name,
                                d, (long long)shape[d]);
        if ((uint64_t)shape[d] > SIZE_MAX / numel)
            return fedc_err_set(err, FEDC_ERR_RANGE, "tensor '%s': too many elements", name);
        numel *= (size_t)shape[d];
    }
    if (numel > SIZE_MAX / sizeof(float) - layout->total)
        return fedc_err_set(err, FEDC_ERR_RANGE, "tensor '%s': layout too large", name);
    if (layout->count == layout->capacity_) {
        size_t cap = layout->capacity_ ? 2 * layout->capacity_ : 8;
        fedc_tensor_info *t = fedc_realloc(layout->tensors, cap * sizeof *t);
        if (!t) return fedc_err_set(err, FEDC_ERR_NOMEM, "layout: out of memory");
        layout->tensors = t;
        layout->capacity_ = cap;
    }
    fedc_tensor_info *t = &layout->tensors[layout->count++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, len + 1);
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->offset = layout->total;
    t->numel = numel;
    layout->total += numel;
    return FEDC_OK;
}

fedc_layout *fedc_layout_copy(const fedc_layout *layout)
{
    fedc_layout *c = fedc_layout_create();
    if (!c) return NULL;
    if (layout->count) {
        c->tensors = fedc_malloc(layout->count * sizeof *c->tensors);
        if (!c->tensors) {
            fedc_free(c);
            return NULL;
        }
        memcpy(c->tensors, layout->tensors, layout->count * sizeof *c->tensors);
    }
    c->count = c->capacity_ = layout->count;
    c->total = layout->total;
    return c;
}

int fedc_layout_equal(const fedc_layout *a, const fedc_layout *b)
{
    if (a->count != b->count || a->total != b->total) return 0;
    for (size_t i = 0; i < a->count; i++) {
        const fedc_tensor_info *x = &a->tensors[i], *y = &b->tensors[i];
        if (strcmp(x->name, y->name) != 0 || x->ndim != y->ndim || x->offset != y->offset ||
            x->numel != y->numel)
            return 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d]) return 0;
    }
    return 1;
}

/* ---- vectors ---- */

fedc_vec *fedc_vec_create(size_t n)
{
    fedc_vec *v = fedc_malloc(sizeof *v);
    if (!v) return NULL;
    v->data = fedc_calloc(n ? n : 1, sizeof(float));
    if (!v->data) {
        fedc_free(v);
        return NULL;
    }
    v->n = n;
    return v;
}

fedc_vec *fedc_vec_dup(const fedc_vec *src)
{
    fedc_vec *v = fedc_vec_create(src->n);
    if (v) fedc_vec_copy(src->n, src->data, v->data);
    return v;
}

void fedc_vec_destroy(fedc_vec *v)
{
    if (!v) return;
    fedc_free(v->data);
    fedc_free(v);
}

void fedc_vec_copy(size_t n, const float *src, float *dst)
{
    if (n && src != dst) memcpy(dst, src, n * sizeof(float));
}

void fedc_vec_zero(size_t n, float *x)
{
    if (n) memset(x, 0, n * sizeof(float));
}

void fedc_vec_fill(size_t n, float value, float *x)
{
    for (size_t i = 0; i < n; i++) x[i] = value;
}

void fedc_vec_scale(size_t n, float a, float *x)
{
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

void fedc_vec_axpy(size_t n, float a, const float *x, float *y)
{
#if FEDC_WITH_BLAS
    if (n > 4096 && n <= (size_t)INT32_MAX) {
        cblas_saxpy((int)n, a, x, 1, y, 1);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void fedc_vec_sub(size_t n, const float *a, const float *b, float *out)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] - b[i];
}

void fedc_vec_add(size_t n, const float *a, const float *b, float *out)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* Sums in double over 8 interleaved partial sums: a fixed order (deterministic for a given n
 * whatever the thread count) with enough independent chains to keep the FPU busy. */
double fedc_vec_dot(size_t n, const float *x, const float *y)
{
    double s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += (double)x[i + k] * (double)y[i + k];
    for (; i < n; i++) s[0] += (double)x[i] * (double)y[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

double fedc_vec_norm2(size_t n, const float *x)
{
    return sqrt(fedc_vec_dot(n, x, x));
}

/* The scan runs on every update received and every fused SGD block: AVX-512 and AVX2 versions
 * next to the baseline one, picked at load time (GCC function multiversioning, glibc ifunc;
 * not under ThreadSanitizer, whose instrumented resolvers crash at load). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) &&   \
    !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
ptrdiff_t fedc_vec_find_nonfinite(size_t n, const float *x)
{
    /* Branch-free over blocks of 64: (bits & exponent mask) + one exponent unit carries into
     * bit 31 iff the exponent is all ones (Inf or NaN); OR-ing those vectorizes (~4x the old
     * per-block sum of x * 0). The first bad block is then searched element by element. */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t acc = 0;
        for (size_t l = 0; l < 64; l++) {
            uint32_t u;
            memcpy(&u, &x[i + l], sizeof u);
            acc |= (u & 0x7f800000u) + 0x00800000u;
        }
        if (acc & 0x80000000u) break;
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) return (ptrdiff_t)i;
    }
    return -1;
}

float fedc_vec_max_abs_diff(size_t n, const float *a, const float *b)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

/* SHA-256 through nettle rather than libsodium: nettle picks its SHA-NI code at run time on CPUs
 * that have it (5 ms instead of 30-40 ms for the 6.65 MB cnn model here), and every model
 * download check, commit and publish hashes a whole model. Same digest either way
 * (strategy_accum_test compares them on a multi-megabyte vector). */
void fedc_vec_sha256_hex(size_t n, const float *x, char out[65])
{
    unsigned char digest[SHA256_DIGEST_SIZE];
    struct sha256_ctx st;
    sha256_init(&st);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    sha256_update(&st, n * sizeof(float), (const uint8_t *)x);
#else
    unsigned char le[4 * 256];
    for (size_t i = 0; i < n; i += 256) {
        size_t m = n - i < 256 ? n - i : 256;
        for (size_t j = 0; j < m; j++) {
            uint32_t u;
            memcpy(&u, &x[i + j], 4);
            le[4 * j] = (unsigned char)u;
            le[4 * j + 1] = (unsigned char)(u >> 8);
            le[4 * j + 2] = (unsigned char)(u >> 16);
            le[4 * j + 3] = (unsigned char)(u >> 24);
        }
        sha256_update(&st, 4 * m, le);
    }
#endif
    sha256_digest(&st, sizeof digest, digest);
    sodium_bin2hex(out, 65, digest, sizeof digest);
}
