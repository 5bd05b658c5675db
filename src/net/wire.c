/*
 * Wire messages: protobuf-c on fedc's allocator, length-delimited framing, and the vector
 * streams (model download, result upload) that carry float32 vectors (or one encoded message)
 * as bounded Chunks, copied straight into the destination when their framing is canonical.
 * See wire.h for the contracts; docs/PROTOCOL.md for the format.
 */
#include "net/wire.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fedc/alloc.h"

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return fedc_malloc(size);
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    fedc_free(ptr);
}

ProtobufCAllocator fedci_pb_allocator = {pb_alloc, pb_free, NULL};

/* ---- buffers ---- */

void fedci_buf_fini(fedci_buf *b)
{
    fedc_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

fedc_status fedci_buf_reserve(fedci_buf *b, size_t extra, fedc_err *err)
{
    if (extra <= b->cap - b->len) return FEDC_OK;
    if (extra > SIZE_MAX / 2 - b->len)
        return fedc_err_set(err, FEDC_ERR_NOMEM, "buffer of %zu + %zu bytes is too large", b->len,
                            extra);
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) cap *= 2;
    uint8_t *p = fedc_realloc(b->data, cap);
    if (!p) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for a %zu-byte buffer", cap);
    b->data = p;
    b->cap = cap;
    return FEDC_OK;
}

fedc_status fedci_buf_append(fedci_buf *b, const void *data, size_t n, fedc_err *err)
{
    FEDC_TRY(fedci_buf_reserve(b, n, err));
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    return FEDC_OK;
}

/* ---- messages ---- */

fedc_status fedci_pack(const ProtobufCMessage *msg, fedci_buf *b, fedc_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    FEDC_TRY(fedci_buf_reserve(b, n + 1, err)); /* + 1: never a NULL buffer, even for n = 0 */
    size_t w = protobuf_c_message_pack(msg, b->data + b->len);
    if (w != n)
        return fedc_err_set(err, FEDC_ERR_INTERNAL, "protobuf pack wrote %zu bytes, not %zu", w, n);
    b->len += n;
    return FEDC_OK;
}

fedc_status fedci_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                         const char *what, ProtobufCMessage **out, fedc_err *err)
{
    *out = protobuf_c_message_unpack(desc, &fedci_pb_allocator, len, data);
    if (!*out)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: %zu bytes are not a valid %s message", what,
                            len, desc->short_name);
    return FEDC_OK;
}

void fedci_unpacked_free(ProtobufCMessage *msg)
{
    if (msg) protobuf_c_message_free_unpacked(msg, &fedci_pb_allocator);
}

/* ---- framing ---- */

size_t fedci_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t fedci_varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

fedc_status fedci_frame_append(const ProtobufCMessage *msg, fedci_buf *b, fedc_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    FEDC_TRY(fedci_buf_reserve(b, n + 10, err));
    b->len += fedci_varint_put(b->data + b->len, n);
    size_t w = protobuf_c_message_pack(msg, b->data + b->len);
    if (w != n)
        return fedc_err_set(err, FEDC_ERR_INTERNAL, "protobuf pack wrote %zu bytes, not %zu", w, n);
    b->len += n;
    return FEDC_OK;
}

void fedci_framer_init(fedci_framer *f, size_t max_frame)
{
    memset(f, 0, sizeof *f);
    f->max_frame = max_frame;
}

void fedci_framer_fini(fedci_framer *f)
{
    fedc_free(f->buf);
    f->buf = NULL;
}

int fedci_framer_at_boundary(const fedci_framer *f) { return !f->in_body && f->varint_bytes == 0; }

fedc_status fedci_framer_feed(fedci_framer *f, const uint8_t *data, size_t n, fedci_frame_fn fn,
                              void *user, fedc_err *err)
{
    size_t i = 0;
    while (i < n) {
        if (!f->in_body) {
            uint8_t byte = data[i++];
            if (f->varint_bytes == 0) {
                f->frame_start = f->consumed;
                f->want = 0;
            }
            f->consumed++;
            f->want |= (uint64_t)(byte & 0x7f) << (7 * f->varint_bytes);
            f->varint_bytes++;
            if (byte & 0x80) {
                if (f->varint_bytes >= 5)
                    return fedc_err_set(err, FEDC_ERR_FORMAT,
                                        "stream byte %" PRIu64 ": frame length prefix is too long",
                                        f->frame_start);
                continue;
            }
            f->varint_bytes = 0;
            if (f->want > f->max_frame)
                return fedc_err_set(err, FEDC_ERR_RANGE,
                                    "stream byte %" PRIu64 ": a %" PRIu64
                                    "-byte message exceeds the limit of %zu bytes",
                                    f->frame_start, f->want, f->max_frame);
            f->have = 0;
            if (f->want == 0) {
                FEDC_TRY(fn(user, (const uint8_t *)"", 0, f->frame_start, err));
                continue;
            }
            f->in_body = 1;
            continue;
        }
        size_t avail = n - i;
        if (f->have == 0 && avail >= f->want) {
            size_t len = (size_t)f->want;
            f->consumed += len;
            i += len;
            f->in_body = 0;
            FEDC_TRY(fn(user, data + i - len, len, f->frame_start, err));
            continue;
        }
        if (!f->buf) {
            f->buf = fedc_malloc(f->max_frame ? f->max_frame : 1);
            if (!f->buf)
                return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for a %zu-byte frame",
                                    f->max_frame);
        }
        size_t take = (size_t)f->want - f->have;
        if (take > avail) take = avail;
        memcpy(f->buf + f->have, data + i, take);
        f->have += take;
        f->consumed += take;
        i += take;
        if (f->have == f->want) {
            f->in_body = 0;
            size_t len = f->have;
            f->have = 0;
            FEDC_TRY(fn(user, f->buf, len, f->frame_start, err));
        }
    }
    return FEDC_OK;
}

/* ---- vector streams ---- */

#define CHUNK_OVERHEAD 32 /* tags and varints of a Chunk around its data */

static const char *vs_name(fedci_vs_kind kind)
{
    return kind == FEDCI_VS_MODEL ? "model stream" : "result stream";
}

void fedci_vstream_init(fedci_vstream *vs, fedci_vs_kind kind, size_t max_header,
                        uint32_t max_chunk, fedci_header_fn on_header, void *user)
{
    memset(vs, 0, sizeof *vs);
    size_t max_frame = (size_t)max_chunk + CHUNK_OVERHEAD;
    if (max_header > max_frame) max_frame = max_header;
    fedci_framer_init(&vs->framer, max_frame);
    vs->kind = kind;
    vs->max_header = max_header;
    vs->max_chunk = max_chunk;
    vs->on_header = on_header;
    vs->user = user;
    vs->nonfinite_at = UINT64_MAX;
    vs->unit = 4;
}

void fedci_vstream_fini(fedci_vstream *vs)
{
    fedci_framer_fini(&vs->framer);
    fedci_unpacked_free(vs->header);
    vs->header = NULL;
}

/* A varint of at most `max` bytes at *p (< end). 0, or -1 when malformed. */
static int get_varint(const uint8_t **p, const uint8_t *end, int max, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < max && *p < end; i++) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

int fedci_chunk_parse(const uint8_t *msg, size_t len, uint64_t *offset, const uint8_t **data,
                      size_t *dlen)
{
    const uint8_t *p = msg, *end = msg + len;
    *offset = 0;
    *data = NULL;
    *dlen = 0;
    while (p < end) {
        uint64_t tag, v;
        if (get_varint(&p, end, 5, &tag) != 0 || tag > 0xffffffffu || (tag >> 3) == 0) return -1;
        uint64_t field = tag >> 3;
        unsigned wt = (unsigned)(tag & 7);
        switch (wt) {
        case 0:
            if (get_varint(&p, end, 10, &v) != 0) return -1;
            if (field == 1)
                *offset = v;
            else if (field == 2)
                return -1;
            break;
        case 1:
            if (field == 1 || field == 2 || end - p < 8) return -1;
            p += 8;
            break;
        case 2:
            if (get_varint(&p, end, 10, &v) != 0 || v > (uint64_t)(end - p) || field == 1)
                return -1;
            if (field == 2) {
                *data = p;
                *dlen = (size_t)v;
            }
            p += v;
            break;
        case 5:
            if (field == 1 || field == 2 || end - p < 4) return -1;
            p += 4;
            break;
        default: return -1; /* groups and invalid wire types */
        }
    }
    return 0;
}

/* The rules for a Chunk of dlen bytes at offset (stream byte at), against what came before. */
static fedc_status chunk_check(const fedci_vstream *vs, uint64_t at, uint64_t offset, size_t dlen,
                               fedc_err *err)
{
    const char *name = vs_name(vs->kind);
    if (offset != vs->filled)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s byte %" PRIu64 ": chunk offset %" PRIu64 ", expected %" PRIu64,
                            name, at, offset, vs->filled);
    if (dlen == 0 || dlen % vs->unit != 0 || dlen > vs->max_chunk)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s byte %" PRIu64
                            ": chunk of %zu data bytes (must be a multiple of %u in %u..%u)",
                            name, at, dlen, vs->unit, vs->unit, vs->max_chunk);
    if (dlen > vs->dest_bytes - vs->filled)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s byte %" PRIu64 ": chunk at offset %" PRIu64 " runs past the end of "
                            "the %" PRIu64 "-%s vector",
                            name, at, offset, vs->dest_bytes / vs->unit,
                            vs->unit == 4 ? "float" : "byte");
    return FEDC_OK;
}

/* scan_finite: the floats completed since the last scan (while they are in cache). */
static void scan_new(fedci_vstream *vs)
{
    if (!vs->scan_finite) return; /* scanned stays: fedci_vstream_scan_resume starts there */
    uint64_t end = vs->filled & ~(uint64_t)3;
    if (vs->unit == 4 && vs->nonfinite_at == UINT64_MAX && end > vs->scanned) {
        ptrdiff_t bad = fedc_vec_find_nonfinite((size_t)(end - vs->scanned) / 4,
                                                (const float *)(vs->dest + vs->scanned));
        if (bad >= 0) vs->nonfinite_at = vs->scanned / 4 + (uint64_t)bad;
    }
    if (end > vs->scanned) vs->scanned = end;
}

void fedci_vstream_scan_resume(fedci_vstream *vs)
{
    vs->scan_finite = 1;
    scan_new(vs);
}

static fedc_status vs_frame(void *user, const uint8_t *msg, size_t len, uint64_t at, fedc_err *err)
{
    fedci_vstream *vs = user;
    const char *name = vs_name(vs->kind);
    if (!vs->header) {
        if (len > vs->max_header)
            return fedc_err_set(err, FEDC_ERR_RANGE,
                                "%s: header of %zu bytes exceeds the limit of %zu", name, len,
                                vs->max_header);
        const ProtobufCMessageDescriptor *d = vs->kind == FEDCI_VS_MODEL
                                                  ? &fedc__v1__model_header__descriptor
                                                  : &fedc__v1__result_header__descriptor;
        FEDC_TRY(fedci_unpack(d, msg, len, name, &vs->header, err));
        float *dest = NULL;
        uint64_t nf = 0;
        FEDC_TRY(vs->on_header(vs->user, vs->header, &dest, &nf, err));
        if (nf > SIZE_MAX / 8)
            return fedc_err_set(err, FEDC_ERR_RANGE, "%s: %" PRIu64 " floats is too many", name,
                                nf);
        vs->dest = (uint8_t *)dest;
        vs->dest_bytes = nf * vs->unit;
        vs->filled = 0;
        return FEDC_OK;
    }
    if (len > (size_t)vs->max_chunk + CHUNK_OVERHEAD)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "%s byte %" PRIu64 ": chunk message of %zu bytes exceeds the limit "
                            "of %u data bytes",
                            name, at, len, vs->max_chunk);
    uint64_t offset = 0;
    const uint8_t *data = NULL;
    size_t dlen = 0;
    if (fedci_chunk_parse(msg, len, &offset, &data, &dlen) != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s byte %" PRIu64 ": %zu bytes are not a valid Chunk message", name,
                            at, len);
    FEDC_TRY(chunk_check(vs, at, offset, dlen, err));
    memcpy(vs->dest + vs->filled, data, dlen);
    vs->filled += dlen;
    scan_new(vs);
    return FEDC_OK;
}

/* The fast path for Chunks: when a Chunk frame starts in this piece with its framing whole and
 * canonical (length, [offset], data tag and length, then the data up to the frame's end: what
 * protobuf encoders write) and passes chunk_check, its data is copied straight into the vector
 * as it arrives, instead of being assembled in the framer's buffer first and copied again.
 * Anything else goes through the framer and vs_frame, which give the same result (the fuzz
 * target checks that any split of a stream is read alike). Returns the framing bytes taken, 0
 * for the slow path. */
static size_t direct_start(fedci_vstream *vs, const uint8_t *p, size_t n)
{
    const uint8_t *q = p, *end = p + n;
    uint64_t msg, off = 0, dlen;
    if (get_varint(&q, end, 5, &msg) != 0) return 0;
    const uint8_t *m0 = q;
    if (q < end && *q == 0x08) {
        q++;
        if (get_varint(&q, end, 10, &off) != 0 || off == 0) return 0;
    }
    if (q >= end || *q != 0x12) return 0;
    q++;
    if (get_varint(&q, end, 10, &dlen) != 0) return 0;
    if (msg > (size_t)vs->max_chunk + CHUNK_OVERHEAD || (uint64_t)(q - m0) + dlen != msg)
        return 0;
    if (chunk_check(vs, 0, off, (size_t)dlen, NULL) != FEDC_OK) return 0;
    vs->direct_left = dlen;
    return (size_t)(q - p);
}

fedc_status fedci_vstream_feed(fedci_vstream *vs, const uint8_t *data, size_t n, fedc_err *err)
{
    size_t i = 0;
    while (i < n) {
        if (vs->direct_left) {
            size_t take = n - i < vs->direct_left ? n - i : (size_t)vs->direct_left;
            memcpy(vs->dest + vs->filled, data + i, take);
            vs->filled += take;
            vs->direct_left -= take;
            vs->framer.consumed += take;
            i += take;
            scan_new(vs);
            continue;
        }
        size_t k = 0;
        if (vs->header && fedci_framer_at_boundary(&vs->framer))
            k = direct_start(vs, data + i, n - i);
        if (k) {
            vs->framer.consumed += k;
            i += k;
            continue;
        }
        return fedci_framer_feed(&vs->framer, data + i, n - i, vs_frame, vs, err);
    }
    return FEDC_OK;
}

fedc_status fedci_vstream_finish(fedci_vstream *vs, fedc_err *err)
{
    const char *name = vs_name(vs->kind);
    if (!fedci_framer_at_boundary(&vs->framer) || vs->direct_left)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: truncated: the body ends inside a message at byte %" PRIu64, name,
                            vs->framer.consumed);
    if (!vs->header)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: empty: no header message", name);
    if (vs->filled != vs->dest_bytes)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: truncated: %" PRIu64 " of %" PRIu64 " %s received", name,
                            vs->filled / vs->unit, vs->dest_bytes / vs->unit,
                            vs->unit == 4 ? "floats" : "bytes");
    return FEDC_OK;
}

fedc_status fedci_vstream_encode(const ProtobufCMessage *header, const float *x, size_t n,
                                 uint32_t chunk_bytes, fedci_buf *b, fedc_err *err)
{
    chunk_bytes &= ~3u;
    if (chunk_bytes == 0) chunk_bytes = 4;
    return fedci_vstream_encode_bytes(header, x, n * 4, chunk_bytes, b, err);
}

fedc_status fedci_vstream_encode_bytes(const ProtobufCMessage *header, const void *x, size_t total,
                                       uint32_t chunk_bytes, fedci_buf *b, fedc_err *err)
{
    if (chunk_bytes == 0) chunk_bytes = 1;
    size_t nchunks = (total + chunk_bytes - 1) / chunk_bytes;
    FEDC_TRY(fedci_buf_reserve(b, total + nchunks * CHUNK_OVERHEAD + 64, err));
    FEDC_TRY(fedci_frame_append(header, b, err));
    for (size_t off = 0; off < total; off += chunk_bytes) {
        size_t len = total - off < chunk_bytes ? total - off : chunk_bytes;
        Fedc__V1__Chunk c = FEDC__V1__CHUNK__INIT;
        c.offset = off;
        c.data.len = len;
        c.data.data = (uint8_t *)x + off;
        FEDC_TRY(fedci_frame_append(&c.base, b, err));
    }
    return FEDC_OK;
}

/* ---- settings ---- */

int fedci_setting_is_sent(const char *section, const char *name)
{
    if (!strcmp(section, "train") || !strcmp(section, "model") || !strcmp(section, "dp") ||
        !strcmp(section, "attack"))
        return 1;
    if (!strcmp(section, "run") && !strcmp(name, "seed")) return 1;
    if (!strcmp(section, "clients") && !strcmp(name, "count")) return 1;
    return 0;
}

void fedci_config_value_text(const fedc_config *cfg, const fedc_config_key *k, char *buf,
                             size_t size)
{
    char dotted[128];
    snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->name);
    switch (k->type) {
    case FEDC_CFG_INT: snprintf(buf, size, "%lld", (long long)fedc_config_int(cfg, dotted)); break;
    case FEDC_CFG_DOUBLE: snprintf(buf, size, "%.17g", fedc_config_double(cfg, dotted)); break;
    case FEDC_CFG_BOOL:
        snprintf(buf, size, "%s", fedc_config_bool(cfg, dotted) ? "true" : "false");
        break;
    default: snprintf(buf, size, "%s", fedc_config_str(cfg, dotted)); break;
    }
}

/* ---- misc ---- */

int fedci_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s) return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

uint64_t fedci_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double fedci_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
