/*
 * Codec specs: the text form of an encoding ("topk:1%+q8+zstd"), its canonical spelling, its
 * properties, and the [compress] configuration check (which encodings may be combined with
 * which privacy settings).
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec_internal.h"
#include "fedc/config.h"

#define QSGD_DEFAULT_LEVELS 15
#define QSGD_DEFAULT_BLOCK 512
#define ZSTD_DEFAULT_LEVEL 3

static void spec_defaults(fedc_codec_spec *s)
{
    memset(s, 0, sizeof *s);
    s->sparse = FEDC_SPARSE_NONE;
    s->values = FEDC_VALUES_F32;
    s->groups = FEDC_GROUPS_WHOLE;
}

/* Parses a fraction "0.01" or a percentage "1%" into (0, 1]. Returns 0 on success. */
static int parse_fraction(const char *t, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(t, &end);
    if (end == t || errno) return -1;
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (*end != '\0' || !(v > 0.0) || !(v <= 1.0)) return -1;
    *out = v;
    return 0;
}

/* Parses a decimal integer in [lo, hi]. Returns 0 on success. */
static int parse_uint(const char *t, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (*t < '0' || *t > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(t, &end, 10);
    if (*end != '\0' || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static fedc_status bad(fedc_err *err, const char *text, const char *what, const char *tok)
{
    return fedc_err_set(err, FEDC_ERR_CONFIG, "encoding '%s': %s '%s'", text, what, tok);
}

/* Options of q8/q4/qsgd: grouping, nearest, s=. */
static fedc_status parse_quant_opts(const char *text, char *opts, fedc_codec_spec *s, fedc_err *err)
{
    for (char *save = NULL, *o = opts ? strtok_r(opts, ",", &save) : NULL; o;
         o = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (strcmp(o, "tensor") == 0) {
            s->groups = FEDC_GROUPS_TENSOR;
        } else if (strcmp(o, "whole") == 0) {
            s->groups = FEDC_GROUPS_WHOLE;
        } else if (strncmp(o, "b=", 2) == 0) {
            if (parse_uint(o + 2, 1, 0x7fffffff, &v) != 0)
                return bad(err, text, "block size must be an integer in 1..2147483647:", o);
            s->groups = FEDC_GROUPS_BLOCK;
            s->block = (uint32_t)v;
        } else if (strcmp(o, "nearest") == 0 && s->values != FEDC_VALUES_QSGD) {
            s->nearest = 1;
        } else if (strncmp(o, "s=", 2) == 0 && s->values == FEDC_VALUES_QSGD) {
            if (parse_uint(o + 2, 1, 32767, &v) != 0)
                return bad(err, text, "qsgd levels must be an integer in 1..32767:", o);
            s->levels = (uint32_t)v;
        } else {
            return bad(err, text,
                       s->values == FEDC_VALUES_QSGD
                           ? "unknown qsgd option (expected s=N, tensor, whole, b=N):"
                           : "unknown option (expected tensor, whole, b=N, nearest):",
                       o);
        }
    }
    return FEDC_OK;
}

fedc_status fedc_codec_parse(const char *text, fedc_codec_spec *spec, fedc_err *err)
{
    assert(text && spec);
    fedc_codec_spec s;
    spec_defaults(&s);
    size_t len = strlen(text);
    if (len == 0) return fedc_err_set(err, FEDC_ERR_CONFIG, "encoding: empty spec");
    if (len > 200) return fedc_err_set(err, FEDC_ERR_CONFIG, "encoding: spec too long");
    char copy[256];
    memcpy(copy, text, len + 1);
    enum { STAGE_NONE, STAGE_SPARSE, STAGE_VALUES, STAGE_ZSTD } last = STAGE_NONE;
    int saw_none = 0, stages = 0;
    for (char *save = NULL, *tok = strtok_r(copy, "+", &save); tok;
         tok = strtok_r(NULL, "+", &save)) {
        stages++;
        char *opts = strchr(tok, ':');
        if (opts) *opts++ = '\0';
        int stage;
        if (strcmp(tok, "topk") == 0 || strcmp(tok, "mask") == 0) {
            stage = STAGE_SPARSE;
            int topk = tok[0] == 't';
            s.sparse = topk ? FEDC_SPARSE_TOPK : FEDC_SPARSE_MASK;
            if (!opts || !*opts)
                return bad(err, text,
                           topk ? "topk needs a fraction, percentage or count, e.g. topk:1% or "
                                  "topk:k=1000; got"
                                : "mask needs a keep probability, e.g. mask:10%; got",
                           tok);
            if (topk && strncmp(opts, "k=", 2) == 0) {
                if (parse_uint(opts + 2, 1, FEDC_CODEC_MAX_N, &s.count) != 0)
                    return bad(err, text, "topk count must be an integer >= 1:", opts);
            } else if (parse_fraction(opts, &s.fraction) != 0 || (!topk && !(s.fraction < 1.0))) {
                return bad(err, text,
                           topk ? "topk fraction must be in (0, 1] (or a percentage, or k=N):"
                                : "mask keep probability must be in (0, 1):",
                           opts);
            }
        } else if (strcmp(tok, "zstd") == 0) {
            stage = STAGE_ZSTD;
            s.zstd_level = ZSTD_DEFAULT_LEVEL;
            if (opts) {
                uint64_t v;
                if (parse_uint(opts, 1, 19, &v) != 0)
                    return bad(err, text, "zstd level must be an integer in 1..19:", opts);
                s.zstd_level = (int)v;
            }
        } else {
            stage = STAGE_VALUES;
            if (strcmp(tok, "none") == 0 || strcmp(tok, "f32") == 0) {
                saw_none |= tok[0] == 'n';
                s.values = FEDC_VALUES_F32;
            } else if (strcmp(tok, "f16") == 0 || strcmp(tok, "fp16") == 0) {
                s.values = FEDC_VALUES_F16;
            } else if (strcmp(tok, "bf16") == 0) {
                s.values = FEDC_VALUES_BF16;
            } else if (strcmp(tok, "q8") == 0 || strcmp(tok, "q4") == 0) {
                s.values = tok[1] == '8' ? FEDC_VALUES_Q8 : FEDC_VALUES_Q4;
                s.groups = FEDC_GROUPS_TENSOR;
                FEDC_TRY(parse_quant_opts(text, opts, &s, err));
                opts = NULL;
            } else if (strcmp(tok, "qsgd") == 0) {
                s.values = FEDC_VALUES_QSGD;
                s.levels = QSGD_DEFAULT_LEVELS;
                s.groups = FEDC_GROUPS_BLOCK;
                s.block = QSGD_DEFAULT_BLOCK;
                FEDC_TRY(parse_quant_opts(text, opts, &s, err));
                opts = NULL;
            } else {
                return bad(err, text,
                           "unknown stage (expected none, f32, f16, bf16, q8, q4, qsgd, topk, "
                           "mask, zstd):",
                           tok);
            }
            if (opts) return bad(err, text, "this stage takes no options:", tok);
        }
        if ((int)stage <= (int)last)
            return bad(err, text,
                       "stages must come in the order sparsifier + values + zstd, each at most "
                       "once; misplaced:",
                       tok);
        last = stage;
    }
    if (stages == 0) return fedc_err_set(err, FEDC_ERR_CONFIG, "encoding '%s': no stage", text);
    if (saw_none && stages > 1)
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "encoding '%s': 'none' stands alone (use f32 to compose)", text);
    *spec = s;
    return FEDC_OK;
}

void fedc_codec_format(const fedc_codec_spec *s, char *buf, size_t size)
{
    assert(s && buf && size > 0);
    char out[160] = "";
    size_t o = 0;
#define APPEND(...) o += (size_t)snprintf(out + o, o < sizeof out ? sizeof out - o : 0, __VA_ARGS__)
    if (s->sparse == FEDC_SPARSE_TOPK) {
        if (s->count)
            APPEND("topk:k=%llu+", (unsigned long long)s->count);
        else
            APPEND("topk:%.6g%%+", s->fraction * 100.0);
    } else if (s->sparse == FEDC_SPARSE_MASK) {
        APPEND("mask:%.6g%%+", s->fraction * 100.0);
    }
    static const char *const names[] = {"f32", "f16", "bf16", "q8", "q4", "qsgd"};
    int plain = s->sparse == FEDC_SPARSE_NONE && s->values == FEDC_VALUES_F32 && !s->zstd_level;
    if (plain)
        APPEND("none");
    else
        APPEND("%s", (unsigned)s->values < 6 ? names[s->values] : "?");
    if (s->values >= FEDC_VALUES_Q8 && s->values <= FEDC_VALUES_QSGD) {
        char sep = ':';
        if (s->values == FEDC_VALUES_QSGD) {
            APPEND("%cs=%u", sep, s->levels);
            sep = ',';
        }
        if (s->groups == FEDC_GROUPS_BLOCK)
            APPEND("%cb=%u", sep, s->block);
        else
            APPEND("%c%s", sep, s->groups == FEDC_GROUPS_WHOLE ? "whole" : "tensor");
        if (s->nearest) APPEND(",nearest");
    }
    if (s->zstd_level) APPEND("+zstd:%d", s->zstd_level);
#undef APPEND
    snprintf(buf, size, "%s", out);
}

int fedc_codec_is_lossy(const fedc_codec_spec *s)
{
    return s->sparse != FEDC_SPARSE_NONE || s->values != FEDC_VALUES_F32;
}

int fedc_codec_keeps_norm_bound(const fedc_codec_spec *s)
{
    /* top-k zeroes coordinates and sends the others exactly; a mask scales by 1/p, rounding
     * and stochastic quantization can move a value away from zero. */
    return s->values == FEDC_VALUES_F32 && s->sparse != FEDC_SPARSE_MASK;
}

/* ---- configuration ---- */

/* Secure aggregation is on when its module registered a key saying so ("secagg.enabled" or a
 * "secagg.mode" other than "off"); without such a key this build has no SecAgg. */
static int secagg_on(const fedc_config *cfg, const char **key)
{
    const fedc_config_key *k = fedc_config_key_find("secagg.enabled");
    if (k && k->type == FEDC_CFG_BOOL && fedc_config_bool(cfg, "secagg.enabled")) {
        *key = "secagg.enabled = true";
        return 1;
    }
    k = fedc_config_key_find("secagg.mode");
    if (k && (k->type == FEDC_CFG_STRING || k->type == FEDC_CFG_CHOICE) &&
        strcmp(fedc_config_str(cfg, "secagg.mode"), "off") != 0) {
        *key = "secagg.mode";
        return 1;
    }
    return 0;
}

int fedc_codec_config_error_feedback(const fedc_config *cfg)
{
    const char *ef = fedc_config_str(cfg, "compress.error_feedback");
    if (strcmp(ef, "on") == 0) return 1;
    if (strcmp(ef, "off") == 0) return 0;
    fedc_codec_spec s;
    if (fedc_codec_parse(fedc_config_str(cfg, "compress.upload"), &s, NULL) != FEDC_OK) return 0;
    return s.sparse == FEDC_SPARSE_TOPK;
}

fedc_status fedc_codec_config_check(const fedc_config *cfg, fedc_err *err)
{
    assert(cfg);
    fedc_codec_spec up, down;
    const char *up_text = fedc_config_str(cfg, "compress.upload");
    fedc_status st = fedc_codec_parse(up_text, &up, err);
    if (st != FEDC_OK) {
        fedc_err_prefix(err, "compress.upload: ");
        return st;
    }
    st = fedc_codec_parse(fedc_config_str(cfg, "compress.download"), &down, err);
    if (st != FEDC_OK) {
        fedc_err_prefix(err, "compress.download: ");
        return st;
    }
    char canon[96];
    fedc_codec_format(&up, canon, sizeof canon);
    int ef = fedc_codec_config_error_feedback(cfg);
    int lossy = fedc_codec_is_lossy(&up);
    if (ef && !lossy)
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "compress.error_feedback = on needs a lossy compress.upload "
                            "(it is '%s': nothing is dropped)",
                            canon);
    const char *sa_key = NULL;
    if (lossy && secagg_on(cfg, &sa_key))
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "compress.upload = '%s' with %s: secure aggregation quantizes "
                            "updates itself (its own stochastic quantizer into the modular "
                            "field) and masks every coordinate, so a lossy upload encoding "
                            "would quantize twice and sparsity would be lost; use "
                            "compress.upload = none or zstd",
                            canon, sa_key);
    const char *mode = fedc_config_str(cfg, "dp.mode");
    const char *clip_on = fedc_config_str(cfg, "dp.clip_on");
    if (strcmp(mode, "central") == 0 && strcmp(clip_on, "client") == 0 && lossy &&
        (ef || !fedc_codec_keeps_norm_bound(&up)))
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "compress.upload = '%s'%s with dp.mode = central and dp.clip_on = "
                            "client: the encoding runs after the client's clipping and can "
                            "send an update whose norm exceeds dp.clip, so the sensitivity the "
                            "accountant assumes would not hold; use dp.clip_on = server (the "
                            "server clips what it decodes), dp.mode = local (noise before "
                            "encoding), or a top-k upload of float32 values without error "
                            "feedback",
                            canon, ef ? " with error feedback" : "");
    return FEDC_OK;
}
