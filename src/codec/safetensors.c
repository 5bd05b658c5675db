/*
 * safetensors model files: write (atomic: temp file, fsync, rename, fsync dir) and read with
 * full validation. The format and the rules checked on read follow the reference
 * implementation (huggingface/safetensors): header length bound, UTF-8 JSON object, dtype,
 * shape, data_offsets contiguous from 0 and covering the data section exactly.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fedc/alloc.h"
#include "fedc/safetensors.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_BIG_ENDIAN 1
#else
#define ST_BIG_ENDIAN 0
#endif

#define META_KEY "__metadata__"

static uint64_t load_le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static void store_le64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

#if ST_BIG_ENDIAN
static void swap_floats(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        u = __builtin_bswap32(u);
        memcpy(&x[i], &u, 4);
    }
}
#endif

/* The index of the tensor holding flat element i (layout order). */
static const fedc_tensor_info *tensor_at(const fedc_layout *layout, size_t i)
{
    for (size_t t = 0; t < layout->count; t++)
        if (i < layout->tensors[t].offset + layout->tensors[t].numel) return &layout->tensors[t];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------------------------- */

/* The header JSON (unpadded) as a new string (free()), or NULL with err set. */
static char *build_header(const char *path, const fedc_layout *layout, const fedc_st_meta *meta,
                          size_t nmeta, fedc_err *err)
{
    json_t *root = json_object();
    if (!root) goto nomem;
    if (nmeta > 0) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, META_KEY, m) != 0) goto nomem;
        for (size_t i = 0; i < nmeta; i++) {
            if (!meta[i].key || !meta[i].key[0] || !meta[i].value) {
                fedc_err_set(err, FEDC_ERR_INVALID, "%s: metadata entry %zu has an empty key or "
                             "no value", path, i);
                goto fail;
            }
            if (json_object_get(m, meta[i].key)) {
                fedc_err_set(err, FEDC_ERR_INVALID, "%s: duplicate metadata key '%s'", path,
                             meta[i].key);
                goto fail;
            }
            json_t *v = json_string(meta[i].value);
            if (!v) {
                fedc_err_set(err, FEDC_ERR_INVALID,
                             "%s: metadata value of '%s' is not valid UTF-8", path, meta[i].key);
                goto fail;
            }
            if (json_object_set_new(m, meta[i].key, v) != 0) {
                fedc_err_set(err, FEDC_ERR_INVALID,
                             "%s: metadata key '%s' is not valid UTF-8", path, meta[i].key);
                goto fail;
            }
        }
    }
    for (size_t t = 0; t < layout->count; t++) {
        const fedc_tensor_info *ti = &layout->tensors[t];
        if (strcmp(ti->name, META_KEY) == 0) {
            fedc_err_set(err, FEDC_ERR_INVALID,
                         "%s: a tensor cannot be named '%s' in a safetensors file", path,
                         META_KEY);
            goto fail;
        }
        json_t *info = json_object(), *shape = json_array(), *offs = json_array();
        if (!info || !shape || !offs) {
            json_decref(info);
            json_decref(shape);
            json_decref(offs);
            goto nomem;
        }
        int bad = json_object_set_new(info, "dtype", json_string("F32"));
        for (int d = 0; d < ti->ndim; d++)
            bad |= json_array_append_new(shape, json_integer((json_int_t)ti->shape[d]));
        bad |= json_object_set_new(info, "shape", shape);
        json_int_t begin = (json_int_t)(ti->offset * 4), end = begin + (json_int_t)(ti->numel * 4);
        bad |= json_array_append_new(offs, json_integer(begin));
        bad |= json_array_append_new(offs, json_integer(end));
        bad |= json_object_set_new(info, "data_offsets", offs);
        if (bad) {
            json_decref(info);
            goto nomem;
        }
        if (json_object_set_new(root, ti->name, info) != 0) {
            fedc_err_set(err, FEDC_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8", path,
                         ti->name);
            goto fail;
        }
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s) fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for the header", path);
    return s;
nomem:
    fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for the header", path);
fail:
    json_decref(root);
    return NULL;
}

static fedc_status write_all(int fd, const void *buf, size_t n, const char *tmp, fedc_err *err)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return fedc_err_set(err, FEDC_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return FEDC_OK;
}

static fedc_status write_floats(int fd, const float *data, size_t n, const char *tmp,
                                fedc_err *err)
{
#if ST_BIG_ENDIAN
    float chunk[4096];
    while (n > 0) {
        size_t k = n < 4096 ? n : 4096;
        memcpy(chunk, data, k * sizeof *chunk);
        swap_floats(chunk, k);
        FEDC_TRY(write_all(fd, chunk, k * sizeof *chunk, tmp, err));
        data += k;
        n -= k;
    }
    return FEDC_OK;
#else
    return write_all(fd, data, n * sizeof *data, tmp, err);
#endif
}

/* fsyncs the directory holding path, so that a rename in it is durable. */
static fedc_status sync_dir(const char *path, fedc_err *err)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t len = (size_t)(slash - path);
        if (len >= sizeof dir)
            return fedc_err_set(err, FEDC_ERR_IO, "%s: directory name too long", path);
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fedc_err_set(err, FEDC_ERR_IO, "%s: cannot open its directory %s to sync: %s",
                            path, dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) /* some file systems cannot fsync directories */
        return fedc_err_set(err, FEDC_ERR_IO, "%s: fsync of directory %s failed: %s", path, dir,
                            strerror(e));
    return FEDC_OK;
}

static atomic_uint tmp_counter;

fedc_status fedc_safetensors_write(const char *path, const fedc_layout *layout, const float *data,
                                   const fedc_st_meta *meta, size_t nmeta, fedc_err *err)
{
    assert(path && layout && (data || layout->total == 0) && (meta || nmeta == 0));
    ptrdiff_t bad = fedc_vec_find_nonfinite(layout->total, data);
    if (bad >= 0) {
        const fedc_tensor_info *ti = tensor_at(layout, (size_t)bad);
        return fedc_err_set(err, FEDC_ERR_NONFINITE,
                            "%s: not written: tensor '%s' element %zu is %s", path,
                            ti ? ti->name : "?", ti ? (size_t)bad - ti->offset : (size_t)bad,
                            isnan(data[bad]) ? "NaN" : "Inf");
    }
    char *hdr = build_header(path, layout, meta, nmeta, err);
    if (!hdr) return err ? err->code : FEDC_ERR_INVALID;
    size_t hlen = strlen(hdr);
    size_t padded = (hlen + 7) / 8 * 8; /* 8 + padded is a multiple of 8 */
    unsigned char *head = fedc_malloc(8 + padded);
    if (!head) {
        free(hdr);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    store_le64(head, (uint64_t)padded);
    memcpy(head + 8, hdr, hlen);
    memset(head + 8 + hlen, ' ', padded - hlen);
    free(hdr);

    size_t plen = strlen(path);
    char *tmp = fedc_malloc(plen + 64);
    if (!tmp) {
        fedc_free(head);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", path);
    }
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, plen + 64, "%s.tmp-%ld-%u", path, (long)getpid(),
                 atomic_fetch_add(&tmp_counter, 1u));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    fedc_status st = FEDC_OK;
    if (fd < 0) {
        st = fedc_err_set(err, FEDC_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp,
                          strerror(errno));
        goto out;
    }
    st = write_all(fd, head, 8 + padded, tmp, err);
    if (st == FEDC_OK) st = write_floats(fd, data, layout->total, tmp, err);
    if (st == FEDC_OK && fsync(fd) != 0)
        st = fedc_err_set(err, FEDC_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == FEDC_OK)
        st = fedc_err_set(err, FEDC_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == FEDC_OK && rename(tmp, path) != 0)
        st = fedc_err_set(err, FEDC_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp,
                          strerror(errno));
    if (st != FEDC_OK) {
        unlink(tmp);
        goto out;
    }
    st = sync_dir(path, err);
out:
    fedc_free(tmp);
    fedc_free(head);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------------------------- */

void fedc_safetensors_destroy(fedc_safetensors *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->nmeta; i++) {
        fedc_free((char *)st->meta[i].key);
        fedc_free((char *)st->meta[i].value);
    }
    fedc_free(st->meta);
    fedc_free(st->data);
    fedc_layout_destroy(st->layout);
    fedc_free(st);
}

const char *fedc_safetensors_meta(const fedc_safetensors *st, const char *key)
{
    assert(st && key);
    for (size_t i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

typedef struct entry {
    const char *name; /* points into the JSON */
    uint64_t begin, end;
    int ndim;
    int64_t shape[FEDC_TENSOR_MAX_DIMS];
    size_t index; /* position in the header, for a stable sort */
} entry;

static int entry_cmp(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* A JSON integer >= 0 into *out. */
static int get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

static fedc_status parse_meta(const char *name, json_t *m, fedc_safetensors *st, fedc_err *err)
{
    if (!json_is_object(m))
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: header: \"%s\" must be an object of strings", name, META_KEY);
    size_t n = json_object_size(m);
    st->meta = fedc_calloc(n ? n : 1, sizeof *st->meta);
    if (!st->meta) return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", name);
    const char *key;
    json_t *v;
    json_object_foreach(m, key, v)
    {
        if (!json_is_string(v))
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "%s: header: metadata value of '%s' is not a string", name, key);
        char *k = fedc_strdup(key), *s = fedc_strdup(json_string_value(v));
        if (!k || !s) {
            fedc_free(k);
            fedc_free(s);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", name);
        }
        st->meta[st->nmeta].key = k;
        st->meta[st->nmeta].value = s;
        st->nmeta++;
    }
    return FEDC_OK;
}

static fedc_status parse_entry(const char *name, const char *key, json_t *info, entry *e,
                               fedc_err *err)
{
    if (!json_is_object(info))
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: header: tensor '%s' is not an object",
                            name, key);
    json_t *dtype = json_object_get(info, "dtype");
    json_t *shape = json_object_get(info, "shape");
    json_t *offs = json_object_get(info, "data_offsets");
    if (!json_is_string(dtype))
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: header: tensor '%s' has no string \"dtype\"",
                            name, key);
    if (!json_is_array(shape))
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: header: tensor '%s' has no array \"shape\"",
                            name, key);
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        get_uint(json_array_get(offs, 0), &e->begin) != 0 ||
        get_uint(json_array_get(offs, 1), &e->end) != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: header: tensor '%s': \"data_offsets\" must be [begin, end] with "
                            "integers >= 0",
                            name, key);
    if (strcmp(json_string_value(dtype), "F32") != 0)
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "%s: tensor '%s' has dtype %s: only F32 is supported", name, key,
                            json_string_value(dtype));
    if (strlen(key) >= FEDC_TENSOR_NAME_MAX)
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "%s: tensor name '%s' is longer than %d bytes", name, key,
                            FEDC_TENSOR_NAME_MAX - 1);
    size_t nd = json_array_size(shape);
    uint64_t bytes = 4, dims[FEDC_TENSOR_MAX_DIMS];
    for (size_t d = 0; d < nd; d++) {
        uint64_t v;
        if (get_uint(json_array_get(shape, d), &v) != 0)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "%s: header: tensor '%s': shape entry %zu is not an integer >= 0",
                                name, key, d);
        if (d < FEDC_TENSOR_MAX_DIMS) dims[d] = v;
        if (v == 0)
            return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                                "%s: tensor '%s' is empty (dimension %zu is 0)", name, key, d);
        if (__builtin_mul_overflow(bytes, v, &bytes) || v > INT64_MAX)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: header: tensor '%s': shape too large",
                                name, key);
    }
    if (nd == 0)
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "%s: tensor '%s' is a scalar (shape []): not supported", name, key);
    if (nd > FEDC_TENSOR_MAX_DIMS)
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "%s: tensor '%s' has %zu dimensions (at most %d supported)", name,
                            key, nd, FEDC_TENSOR_MAX_DIMS);
    if (e->end < e->begin)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                            "] end before they begin",
                            name, key, e->begin, e->end);
    if (e->end - e->begin != bytes)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: tensor '%s': its shape needs %" PRIu64
                            " bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
                            name, key, bytes, e->begin, e->end, e->end - e->begin);
    e->name = key;
    e->ndim = (int)nd;
    for (size_t d = 0; d < nd; d++) e->shape[d] = (int64_t)dims[d];
    return FEDC_OK;
}

/* Parses and checks the header against a data section of data_len bytes; fills st->layout and
 * st->meta. */
static fedc_status parse_header(const char *name, const unsigned char *hdr, size_t hlen,
                                uint64_t data_len, fedc_safetensors *st, fedc_err *err)
{
    if (hlen == 0 || hdr[0] != '{')
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: header (%zu bytes at offset 8) does not start with '{'", name,
                            hlen);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: header is not valid JSON: %s (header byte %d, file offset %d)",
                            name, jerr.text, jerr.position, jerr.position + 8);
    fedc_status s = FEDC_OK;
    entry *ents = NULL;
    if (!json_is_object(root)) {
        s = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: header is not a JSON object", name);
        goto out;
    }
    size_t n = json_object_size(root);
    ents = fedc_calloc(n ? n : 1, sizeof *ents);
    st->layout = fedc_layout_create();
    if (!ents || !st->layout) {
        s = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", name);
        goto out;
    }
    size_t ne = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, META_KEY) == 0) {
            if ((s = parse_meta(name, v, st, err)) != FEDC_OK) goto out;
            continue;
        }
        if ((s = parse_entry(name, key, v, &ents[ne], err)) != FEDC_OK) goto out;
        ents[ne].index = ne;
        ne++;
    }
    qsort(ents, ne, sizeof *ents, entry_cmp);
    uint64_t at = 0;
    for (size_t i = 0; i < ne; i++) {
        const entry *e = &ents[i];
        if (e->begin < at) {
            s = fedc_err_set(err, FEDC_ERR_FORMAT,
                             "%s: tensor '%s' (data bytes %" PRIu64 "..%" PRIu64
                             ") overlaps tensor '%s' (which ends at %" PRIu64 ")",
                             name, e->name, e->begin, e->end, ents[i - 1].name, at);
            goto out;
        }
        if (e->begin > at) {
            s = fedc_err_set(err, FEDC_ERR_FORMAT,
                             "%s: %" PRIu64 " unused data bytes (%" PRIu64 "..%" PRIu64
                             ") before tensor '%s': offsets must be contiguous",
                             name, e->begin - at, at, e->begin, e->name);
            goto out;
        }
        if (e->end > data_len) {
            s = fedc_err_set(err, FEDC_ERR_FORMAT,
                             "%s: file truncated: tensor '%s' ends at data byte %" PRIu64
                             " but the data section has only %" PRIu64 " bytes",
                             name, e->name, e->end, data_len);
            goto out;
        }
        at = e->end;
        fedc_err lerr;
        fedc_err_clear(&lerr);
        if (fedc_layout_add(st->layout, e->name, e->ndim, e->shape, &lerr) != FEDC_OK) {
            s = fedc_err_set(err, lerr.code == FEDC_ERR_NOMEM ? FEDC_ERR_NOMEM : FEDC_ERR_FORMAT,
                             "%s: tensor '%s': %s", name, e->name, fedc_err_message(&lerr));
            goto out;
        }
    }
    if (at < data_len)
        s = fedc_err_set(err, FEDC_ERR_FORMAT,
                         "%s: %" PRIu64 " trailing bytes after the last tensor (data section "
                         "is %" PRIu64 " bytes, tensors cover %" PRIu64 ")",
                         name, data_len - at, data_len, at);
out:
    fedc_free(ents);
    json_decref(root);
    return s;
}

/* Validates the 8-byte prefix: header length against the total size. */
static fedc_status check_prefix(const char *name, const unsigned char *b, uint64_t size,
                                uint64_t *hlen, fedc_err *err)
{
    uint64_t n = load_le64(b);
    if (n > FEDC_SAFETENSORS_MAX_HEADER)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: header length %" PRIu64 " exceeds the limit of %u bytes", name,
                            n, FEDC_SAFETENSORS_MAX_HEADER);
    if (n > size - 8)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: header length %" PRIu64 " exceeds the %" PRIu64
                            " bytes after the length field (truncated or not safetensors)",
                            name, n, size - 8);
    *hlen = n;
    return FEDC_OK;
}

/* Checks the data once it is in memory: finite values, and the metadata's model_sha256. */
static fedc_status check_data(const char *name, const fedc_safetensors *st, unsigned flags,
                              fedc_err *err)
{
    if (flags & FEDC_ST_VERIFY_SHA256) {
        const char *want = fedc_safetensors_meta(st, "model_sha256");
        if (want) {
            char got[65];
            fedc_vec_sha256_hex(st->layout->total, st->data, got);
            if (strcmp(want, got) != 0)
                return fedc_err_set(err, FEDC_ERR_FORMAT,
                                    "%s: model_sha256 mismatch: metadata says %.64s, the "
                                    "parameters hash to %s",
                                    name, want, got);
        }
    }
    if (flags & FEDC_ST_ALLOW_NONFINITE) return FEDC_OK;
    ptrdiff_t bad = fedc_vec_find_nonfinite(st->layout->total, st->data);
    if (bad < 0) return FEDC_OK;
    const fedc_tensor_info *ti = tensor_at(st->layout, (size_t)bad);
    return fedc_err_set(err, FEDC_ERR_NONFINITE, "%s: tensor '%s' element %zu is %s", name,
                        ti ? ti->name : "?", ti ? (size_t)bad - ti->offset : (size_t)bad,
                        isnan(st->data[bad]) ? "NaN" : "Inf");
}

static fedc_safetensors *new_handle(void)
{
    return fedc_calloc(1, sizeof(fedc_safetensors));
}

fedc_status fedc_safetensors_decode(const void *bytes, size_t len, const char *name,
                                    unsigned flags, fedc_safetensors **out, fedc_err *err)
{
    assert((bytes || len == 0) && name && out);
    *out = NULL;
    const unsigned char *b = bytes;
    if (len < 8)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: %zu bytes: too short for the 8-byte header length", name, len);
    uint64_t hlen;
    FEDC_TRY(check_prefix(name, b, len, &hlen, err));
    fedc_safetensors *st = new_handle();
    if (!st) return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", name);
    uint64_t data_len = len - 8 - hlen;
    fedc_status s = parse_header(name, b + 8, (size_t)hlen, data_len, st, err);
    if (s == FEDC_OK) {
        st->data = fedc_malloc(st->layout->total * sizeof(float));
        if (!st->data) s = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for data", name);
    }
    if (s == FEDC_OK) {
        memcpy(st->data, b + 8 + hlen, st->layout->total * sizeof(float));
#if ST_BIG_ENDIAN
        swap_floats(st->data, st->layout->total);
#endif
        s = check_data(name, st, flags, err);
    }
    if (s != FEDC_OK) {
        fedc_safetensors_destroy(st);
        return s;
    }
    *out = st;
    return FEDC_OK;
}

static fedc_status read_exact(FILE *f, void *buf, size_t n, const char *path, fedc_err *err)
{
    if (n > 0 && fread(buf, 1, n, f) != n)
        return fedc_err_set(err, ferror(f) ? FEDC_ERR_IO : FEDC_ERR_FORMAT,
                            "%s: %s", path, ferror(f) ? strerror(errno) : "file truncated");
    return FEDC_OK;
}

fedc_status fedc_safetensors_read(const char *path, unsigned flags, fedc_safetensors **out,
                                  fedc_err *err)
{
    assert(path && out);
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fedc_err_set(err, FEDC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fedc_status s = FEDC_OK;
    fedc_safetensors *st = NULL;
    unsigned char *hdr = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        s = fedc_err_set(err, FEDC_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char prefix[8];
    if (size < 8) {
        s = fedc_err_set(err, FEDC_ERR_FORMAT,
                         "%s: %" PRIu64 " bytes: too short for the 8-byte header length", path,
                         size);
        goto out;
    }
    uint64_t hlen;
    if ((s = read_exact(f, prefix, 8, path, err)) != FEDC_OK) goto out;
    if ((s = check_prefix(path, prefix, size, &hlen, err)) != FEDC_OK) goto out;
    hdr = fedc_malloc((size_t)hlen);
    st = new_handle();
    if (!hdr || !st) {
        s = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    if ((s = read_exact(f, hdr, (size_t)hlen, path, err)) != FEDC_OK) goto out;
    if ((s = parse_header(path, hdr, (size_t)hlen, size - 8 - hlen, st, err)) != FEDC_OK)
        goto out;
    st->data = fedc_malloc(st->layout->total * sizeof(float));
    if (!st->data) {
        s = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for %zu floats", path,
                         st->layout->total);
        goto out;
    }
    if ((s = read_exact(f, st->data, st->layout->total * sizeof(float), path, err)) != FEDC_OK)
        goto out;
#if ST_BIG_ENDIAN
    swap_floats(st->data, st->layout->total);
#endif
    s = check_data(path, st, flags, err);
out:
    fclose(f);
    fedc_free(hdr);
    if (s != FEDC_OK) {
        fedc_safetensors_destroy(st);
        return s;
    }
    *out = st;
    return FEDC_OK;
}
