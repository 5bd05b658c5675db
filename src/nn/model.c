/*
 * Models: the spec grammar and presets, shape inference layer by layer, the parameter layout,
 * deterministic initialisation, and the human summary. A model holds no parameter values
 * and nothing mutable: it is shared read-only by every workspace and thread.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/rng.h"
#include "nn/nn_internal.h"

static const fedci_layer_ops *const ops_table[] = {
    [FEDCI_DENSE] = &fedci_dense_ops,         [FEDCI_CONV] = &fedci_conv_ops,
    [FEDCI_MAXPOOL] = &fedci_maxpool_ops,     [FEDCI_AVGPOOL] = &fedci_avgpool_ops,
    [FEDCI_RELU] = &fedci_relu_ops,           [FEDCI_TANH] = &fedci_tanh_ops,
    [FEDCI_SIGMOID] = &fedci_sigmoid_ops,     [FEDCI_DROPOUT] = &fedci_dropout_ops,
    [FEDCI_FLATTEN] = &fedci_flatten_ops,     [FEDCI_EMBED] = &fedci_embed_ops,
    [FEDCI_LSTM] = &fedci_lstm_ops,           [FEDCI_GROUPNORM] = &fedci_groupnorm_ops,
};
_Static_assert(sizeof ops_table / sizeof ops_table[0] == FEDCI_LAYER_KIND_COUNT,
               "one ops entry per layer kind");

const fedci_layer_ops *fedci_layer_ops_get(fedci_layer_kind kind)
{
    assert(kind >= 0 && kind < FEDCI_LAYER_KIND_COUNT);
    return ops_table[kind];
}

size_t fedci_layer_scratch(const fedci_layer *L, int B)
{
    return L->scratch_c + L->scratch_ps * (size_t)B;
}

/* ---- presets ---- */

typedef struct preset {
    const char *name;
    const char *fmt; /* %1$d = num_outputs */
    const char *about;
} preset;

static const preset presets[] = {
    {"logreg", "dense(%d)", "multinomial logistic regression"},
    {"mlp", "dense(200) relu dense(200) relu dense(%d)",
     "the FedAvg paper's 2NN (McMahan et al. 2017): 199,210 params at 784 in, 10 out"},
    {"cnn",
     "conv(32,5,same) relu maxpool(2) conv(64,5,same) relu maxpool(2) dense(512) relu dense(%d)",
     "the FedAvg paper's CNN: 1,663,370 params at 1x28x28, 10 out"},
    {"femnist-cnn",
     "conv(32,5,same) relu maxpool(2) conv(64,5,same) relu maxpool(2) dense(2048) relu "
     "dense(%d)",
     "LEAF's FEMNIST CNN: 6,603,710 params at 1x28x28, 62 out"},
    {"shakespeare-lstm", "embed(%d,8) lstm(256,seq) lstm(256) dense(%d)",
     "LEAF's Shakespeare LSTM: 817,872 params at vocabulary 80, sequence 80"},
};

/* ---- tokens ---- */

#define TOK_ARGS 6
#define TOK_ARG_LEN 32

typedef struct token {
    int number;          /* 1-based position in the spec */
    size_t col;          /* 1-based column of its first character */
    char text[48];       /* the token as written (truncated), for messages */
    char name[24];       /* lower-cased */
    int nargs;
    char args[TOK_ARGS][TOK_ARG_LEN];
} token;

static fedc_status tok_err(fedc_err *err, fedc_status code, const token *t, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static fedc_status tok_err(fedc_err *err, fedc_status code, const token *t, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fedc_err_set(err, code, "model spec: token %d '%s' (column %zu): %s", t->number,
                        t->text, t->col, msg);
}

/* Reads the next token from *pp. Returns FEDC_OK with t->name[0] == 0 at the end. */
static fedc_status next_token(const char *spec, const char **pp, int number, token *t,
                              fedc_err *err)
{
    const char *p = *pp;
    while (isspace((unsigned char)*p)) p++;
    memset(t, 0, sizeof *t);
    t->number = number;
    t->col = (size_t)(p - spec) + 1;
    if (!*p) {
        *pp = p;
        return FEDC_OK;
    }
    const char *start = p;
    /* The raw text up to the end of the token, for messages. */
    const char *q = p;
    int depth = 0;
    while (*q && (depth > 0 || !isspace((unsigned char)*q))) {
        if (*q == '(') depth++;
        if (*q == ')') depth--;
        q++;
    }
    size_t tl = (size_t)(q - start);
    if (tl >= sizeof t->text) tl = sizeof t->text - 1;
    memcpy(t->text, start, tl);
    t->text[tl] = '\0';

    if (!isalpha((unsigned char)*p))
        return tok_err(err, FEDC_ERR_INVALID, t, "expected a layer name, found '%c'", *p);
    size_t n = 0;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == '-') {
        if (n + 1 >= sizeof t->name)
            return tok_err(err, FEDC_ERR_INVALID, t, "layer name is too long");
        t->name[n++] = (char)tolower((unsigned char)*p);
        p++;
    }
    t->name[n] = '\0';
    const char *after = p;
    while (*after == ' ' || *after == '\t') after++;
    if (*after == '(') {
        p = after + 1;
        for (;;) {
            while (isspace((unsigned char)*p)) p++;
            if (*p == ')' && t->nargs == 0) {
                p++;
                break;
            }
            if (t->nargs == TOK_ARGS)
                return tok_err(err, FEDC_ERR_INVALID, t, "too many arguments");
            char *a = t->args[t->nargs];
            size_t k = 0;
            while (*p && *p != ',' && *p != ')' && !isspace((unsigned char)*p)) {
                if (k + 1 >= TOK_ARG_LEN)
                    return tok_err(err, FEDC_ERR_INVALID, t, "argument %d is too long",
                                   t->nargs + 1);
                a[k++] = (char)tolower((unsigned char)*p);
                p++;
            }
            a[k] = '\0';
            while (isspace((unsigned char)*p)) p++;
            if (k == 0)
                return tok_err(err, FEDC_ERR_INVALID, t, "argument %d is empty", t->nargs + 1);
            t->nargs++;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == ')') {
                p++;
                break;
            }
            if (!*p) return tok_err(err, FEDC_ERR_INVALID, t, "missing ')'");
            return tok_err(err, FEDC_ERR_INVALID, t, "unexpected '%c' in the arguments", *p);
        }
    }
    if (*p && !isspace((unsigned char)*p))
        return tok_err(err, FEDC_ERR_INVALID, t, "unexpected '%c' after the layer", *p);
    *pp = p;
    return FEDC_OK;
}

static fedc_status arg_int(const token *t, int i, const char *what, int *out, fedc_err *err)
{
    const char *a = t->args[i];
    const char *eq = strchr(a, '=');
    if (eq) a = eq + 1;
    char *end;
    errno = 0;
    long v = strtol(a, &end, 10);
    if (end == a || *end || errno)
        return tok_err(err, FEDC_ERR_INVALID, t, "%s '%s' is not an integer", what, t->args[i]);
    if (v < 1 || v > FEDCI_MAX_DIM)
        return tok_err(err, FEDC_ERR_RANGE, t, "%s %ld is out of range [1, %d]", what, v,
                       FEDCI_MAX_DIM);
    *out = (int)v;
    return FEDC_OK;
}

static fedc_status want_args(const token *t, int lo, int hi, const char *usage, fedc_err *err)
{
    if (t->nargs < lo || t->nargs > hi)
        return tok_err(err, FEDC_ERR_INVALID, t, "expected %s", usage);
    return FEDC_OK;
}

/* Fills L from token t (hyper-parameters only). */
static fedc_status layer_from_token(const token *t, fedci_layer *L, fedc_err *err)
{
    memset(L, 0, sizeof *L);
    const char *n = t->name;
    if (!strcmp(n, "dense") || !strcmp(n, "linear")) {
        L->kind = FEDCI_DENSE;
        FEDC_TRY(want_args(t, 1, 1, "dense(UNITS)", err));
        return arg_int(t, 0, "units", &L->units, err);
    }
    if (!strcmp(n, "conv") || !strcmp(n, "conv2d")) {
        L->kind = FEDCI_CONV;
        FEDC_TRY(want_args(t, 2, 4, "conv(FILTERS,KERNEL[,same|valid][,STRIDE])", err));
        FEDC_TRY(arg_int(t, 0, "filters", &L->units, err));
        FEDC_TRY(arg_int(t, 1, "kernel size", &L->k, err));
        L->stride = 1;
        int seen_pad = 0, seen_stride = 0;
        for (int i = 2; i < t->nargs; i++) {
            const char *a = t->args[i];
            if (!strcmp(a, "same") || !strcmp(a, "valid")) {
                if (seen_pad) return tok_err(err, FEDC_ERR_INVALID, t, "padding given twice");
                L->same = !strcmp(a, "same");
                seen_pad = 1;
            } else {
                if (seen_stride)
                    return tok_err(err, FEDC_ERR_INVALID, t,
                                   "argument '%s' is neither same, valid nor a stride", a);
                FEDC_TRY(arg_int(t, i, "stride", &L->stride, err));
                seen_stride = 1;
            }
        }
        return FEDC_OK;
    }
    if (!strcmp(n, "maxpool") || !strcmp(n, "avgpool")) {
        L->kind = n[0] == 'm' ? FEDCI_MAXPOOL : FEDCI_AVGPOOL;
        FEDC_TRY(want_args(t, 1, 2, "maxpool(WINDOW[,STRIDE])", err));
        FEDC_TRY(arg_int(t, 0, "window", &L->k, err));
        L->stride = L->k;
        if (t->nargs == 2) FEDC_TRY(arg_int(t, 1, "stride", &L->stride, err));
        return FEDC_OK;
    }
    static const struct {
        const char *name;
        fedci_layer_kind kind;
    } plain[] = {{"relu", FEDCI_RELU},
                 {"tanh", FEDCI_TANH},
                 {"sigmoid", FEDCI_SIGMOID},
                 {"flatten", FEDCI_FLATTEN}};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        if (!strcmp(n, plain[i].name)) {
            L->kind = plain[i].kind;
            char usage[32];
            snprintf(usage, sizeof usage, "no arguments: %s", plain[i].name);
            return want_args(t, 0, 0, usage, err);
        }
    if (!strcmp(n, "dropout")) {
        L->kind = FEDCI_DROPOUT;
        FEDC_TRY(want_args(t, 1, 1, "dropout(P) with 0 <= P < 1", err));
        char *end;
        double p = strtod(t->args[0], &end);
        if (end == t->args[0] || *end || !(p >= 0.0 && p < 1.0))
            return tok_err(err, FEDC_ERR_INVALID, t, "probability '%s' is not in [0, 1)",
                           t->args[0]);
        L->p = (float)p;
        return FEDC_OK;
    }
    if (!strcmp(n, "embed") || !strcmp(n, "embedding")) {
        L->kind = FEDCI_EMBED;
        FEDC_TRY(want_args(t, 2, 2, "embed(VOCABULARY,DIMS)", err));
        FEDC_TRY(arg_int(t, 0, "vocabulary", &L->vocab, err));
        return arg_int(t, 1, "dims", &L->units, err);
    }
    if (!strcmp(n, "lstm")) {
        L->kind = FEDCI_LSTM;
        FEDC_TRY(want_args(t, 1, 2, "lstm(UNITS[,last|seq])", err));
        FEDC_TRY(arg_int(t, 0, "units", &L->units, err));
        if (t->nargs == 2) {
            if (!strcmp(t->args[1], "seq"))
                L->seq = 1;
            else if (strcmp(t->args[1], "last"))
                return tok_err(err, FEDC_ERR_INVALID, t, "'%s' is neither last nor seq",
                               t->args[1]);
        }
        return FEDC_OK;
    }
    if (!strcmp(n, "groupnorm") || !strcmp(n, "gn")) {
        L->kind = FEDCI_GROUPNORM;
        FEDC_TRY(want_args(t, 1, 1, "groupnorm(GROUPS)", err));
        return arg_int(t, 0, "groups", &L->units, err);
    }
    if (!strcmp(n, "batchnorm") || !strcmp(n, "bn"))
        return tok_err(err, FEDC_ERR_UNSUPPORTED, t,
                       "batch norm is not offered (batch statistics break with small non-IID "
                       "client batches and under DP-SGD): use groupnorm(G)");
    return tok_err(err, FEDC_ERR_INVALID, t,
                   "unknown layer '%s' (known: dense conv maxpool avgpool relu tanh sigmoid "
                   "dropout flatten embed lstm groupnorm loss)",
                   n);
}

/* The canonical text of a layer ("conv(32,5,same)"). */
static void layer_desc(const fedci_layer *L, char *buf, size_t size)
{
    switch (L->kind) {
    case FEDCI_DENSE: snprintf(buf, size, "dense(%d)", L->units); break;
    case FEDCI_CONV:
        if (L->stride != 1)
            snprintf(buf, size, "conv(%d,%d,%s,%d)", L->units, L->k, L->same ? "same" : "valid",
                     L->stride);
        else
            snprintf(buf, size, "conv(%d,%d,%s)", L->units, L->k, L->same ? "same" : "valid");
        break;
    case FEDCI_MAXPOOL:
    case FEDCI_AVGPOOL:
        if (L->stride != L->k)
            snprintf(buf, size, "%s(%d,%d)", fedci_layer_ops_get(L->kind)->name, L->k, L->stride);
        else
            snprintf(buf, size, "%s(%d)", fedci_layer_ops_get(L->kind)->name, L->k);
        break;
    case FEDCI_DROPOUT: snprintf(buf, size, "dropout(%g)", (double)L->p); break;
    case FEDCI_EMBED: snprintf(buf, size, "embed(%d,%d)", L->vocab, L->units); break;
    case FEDCI_LSTM: snprintf(buf, size, "lstm(%d%s)", L->units, L->seq ? ",seq" : ""); break;
    case FEDCI_GROUPNORM: snprintf(buf, size, "groupnorm(%d)", L->units); break;
    default: snprintf(buf, size, "%s", fedci_layer_ops_get(L->kind)->name); break;
    }
}

/* ---- creation ---- */

static fedc_status expand_preset(const char *name, int num_outputs, char *out, size_t size,
                                 int *is_preset, fedc_err *err)
{
    *is_preset = 0;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(name, presets[i].name) != 0) continue;
        *is_preset = 1;
        if (num_outputs < 1)
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "model preset '%s' needs the number of outputs (classes; the "
                                "vocabulary for shakespeare-lstm)",
                                name);
        if (num_outputs > FEDCI_MAX_DIM)
            return fedc_err_set(err, FEDC_ERR_RANGE, "model preset '%s': %d outputs is too many",
                                name, num_outputs);
        /* Every %d of a preset is the number of outputs. */
        const char *f = presets[i].fmt;
        size_t o = 0;
        for (; *f && o + 16 < size; f++) {
            if (f[0] == '%' && f[1] == 'd') {
                o += (size_t)snprintf(out + o, size - o, "%d", num_outputs);
                f++;
            } else {
                out[o++] = *f;
            }
        }
        out[o] = '\0';
        return FEDC_OK;
    }
    return FEDC_OK;
}

static void model_free(fedc_model *m)
{
    if (!m) return;
    fedc_free(m->layers);
    fedc_layout_destroy(m->layout);
    fedc_free(m->spec);
    fedc_free(m);
}

void fedc_model_destroy(fedc_model *model)
{
    model_free(model);
}

/* Builds the canonical spec text. */
static fedc_status build_spec_text(fedc_model *m)
{
    size_t cap = 64 + m->nlayers * 32, len = 0;
    char *s = fedc_malloc(cap);
    if (!s) return FEDC_ERR_NOMEM;
    s[0] = '\0';
    for (size_t i = 0; i < m->nlayers; i++) {
        char d[96];
        layer_desc(&m->layers[i], d, sizeof d);
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? " " : "", d);
    }
    if (m->loss != FEDC_LOSS_CE)
        snprintf(s + len, cap - len, " loss(%s)", fedci_loss_name(m->loss));
    m->spec = s;
    return FEDC_OK;
}

static int shape_text(char *buf, size_t size, int ndim, const int *d)
{
    if (ndim == 1) return snprintf(buf, size, "%d", d[0]);
    if (ndim == 2) return snprintf(buf, size, "%dx%d", d[0], d[1]);
    return snprintf(buf, size, "%dx%dx%d", d[0], d[1], d[2]);
}

fedc_status fedc_model_create(const char *spec, const int64_t *input_shape, int ndim,
                              int num_outputs, fedc_model **out, fedc_err *err)
{
    assert(out);
    *out = NULL;
    if (!spec) return fedc_err_set(err, FEDC_ERR_INVALID, "model spec is missing");
    if (strlen(spec) > FEDC_NN_SPEC_MAX)
        return fedc_err_set(err, FEDC_ERR_INVALID, "model spec is longer than %d characters",
                            FEDC_NN_SPEC_MAX);
    if (ndim < 1 || ndim > 3 || !input_shape)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "model input shape must have 1 to 3 dimensions, got %d", ndim);
    for (int i = 0; i < ndim; i++)
        if (input_shape[i] < 1 || input_shape[i] > FEDCI_MAX_DIM)
            return fedc_err_set(err, FEDC_ERR_SHAPE,
                                "model input dimension %d is %lld, outside [1, %d]", i + 1,
                                (long long)input_shape[i], FEDCI_MAX_DIM);
    if (num_outputs < 0)
        return fedc_err_set(err, FEDC_ERR_INVALID, "number of outputs is negative (%d)",
                            num_outputs);

    /* A preset name stands for its spec. */
    char trimmed[64] = {0};
    {
        const char *a = spec;
        while (isspace((unsigned char)*a)) a++;
        size_t l = strlen(a);
        while (l > 0 && isspace((unsigned char)a[l - 1])) l--;
        if (l < sizeof trimmed) {
            memcpy(trimmed, a, l);
            trimmed[l] = '\0';
        }
    }
    char expanded[512];
    int is_preset;
    FEDC_TRY(expand_preset(trimmed, num_outputs, expanded, sizeof expanded, &is_preset, err));
    const char *text = is_preset ? expanded : spec;

    fedc_model *m = fedc_calloc(1, sizeof *m);
    if (!m) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a model");
    m->loss = FEDC_LOSS_CE;
    m->in_ndim = ndim;
    m->in_n = 1;
    for (int i = 0; i < ndim; i++) {
        m->in_shape[i] = input_shape[i];
        m->in_n *= (size_t)input_shape[i];
    }
    if (m->in_n > FEDCI_MAX_SAMPLE) {
        model_free(m);
        return fedc_err_set(err, FEDC_ERR_RANGE, "model input of %zu values is too large",
                            m->in_n);
    }
    fedc_status st = FEDC_OK;
    size_t cap = 8;
    m->layers = fedc_calloc(cap, sizeof *m->layers);
    if (!m->layers) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a model");

    /* 1. Tokens to layers. */
    const char *p = text;
    int number = 0, loss_seen = 0;
    token t;
    while (st == FEDC_OK) {
        st = next_token(text, &p, number + 1, &t, err);
        if (st != FEDC_OK || !t.name[0]) break;
        number++;
        if (loss_seen) {
            st = tok_err(err, FEDC_ERR_INVALID, &t, "nothing may follow loss(...)");
            break;
        }
        if (!strcmp(t.name, "loss")) {
            st = want_args(&t, 1, 1, "loss(ce|bce|mse)", err);
            if (st != FEDC_OK) break;
            if (!strcmp(t.args[0], "ce"))
                m->loss = FEDC_LOSS_CE;
            else if (!strcmp(t.args[0], "bce"))
                m->loss = FEDC_LOSS_BCE;
            else if (!strcmp(t.args[0], "mse"))
                m->loss = FEDC_LOSS_MSE;
            else
                st = tok_err(err, FEDC_ERR_INVALID, &t, "unknown loss '%s' (ce, bce, mse)",
                             t.args[0]);
            loss_seen = 1;
            continue;
        }
        if (m->nlayers == FEDC_NN_MAX_LAYERS) {
            st = tok_err(err, FEDC_ERR_RANGE, &t, "more than %d layers", FEDC_NN_MAX_LAYERS);
            break;
        }
        if (m->nlayers == cap) {
            fedci_layer *nl = fedc_realloc(m->layers, 2 * cap * sizeof *nl);
            if (!nl) {
                st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a model");
                break;
            }
            m->layers = nl;
            cap *= 2;
        }
        fedci_layer *L = &m->layers[m->nlayers];
        st = layer_from_token(&t, L, err);
        if (st != FEDC_OK) break;
        L->index = (int)m->nlayers;
        if (L->kind == FEDCI_EMBED && m->nlayers != 0) {
            st = tok_err(err, FEDC_ERR_SHAPE, &t, "embed must be the first layer");
            break;
        }
        m->nlayers++;
    }
    if (st == FEDC_OK && m->nlayers == 0)
        st = fedc_err_set(err, FEDC_ERR_INVALID, "model spec has no layers");

    /* 2. Shapes, tensors and needs, layer by layer. */
    int cur_ndim = ndim, cur[3] = {1, 1, 1};
    for (int i = 0; i < ndim; i++) cur[i] = (int)input_shape[i];
    size_t total = 0;
    for (size_t i = 0; st == FEDC_OK && i < m->nlayers; i++) {
        fedci_layer *L = &m->layers[i];
        L->relu_after = i + 1 < m->nlayers && m->layers[i + 1].kind == FEDCI_RELU;
        L->in_ndim = cur_ndim;
        memcpy(L->in, cur, sizeof cur);
        L->in_n = (size_t)cur[0] * cur[1] * cur[2];
        char where[160], d[96];
        layer_desc(L, d, sizeof d);
        snprintf(where, sizeof where, "model spec: layer %zu '%s'", i, d);
        st = fedci_layer_ops_get(L->kind)->setup(L, where, err);
        if (st != FEDC_OK) break;
        double outn = (double)L->out[0] * L->out[1] * L->out[2];
        if (L->out[0] < 1 || L->out[1] < 1 || L->out[2] < 1) {
            st = fedc_err_set(err, FEDC_ERR_SHAPE, "%s: output would be empty", where);
            break;
        }
        if (outn > (double)FEDCI_MAX_SAMPLE || L->out[0] > FEDCI_MAX_DIM) {
            st = fedc_err_set(err, FEDC_ERR_RANGE, "%s: output of %.0f values is too large",
                              where, outn);
            break;
        }
        L->out_n = (size_t)outn;
        double np = 0.0;
        for (int k = 0; k < L->nt; k++) {
            double numel = 1.0;
            for (int j = 0; j < L->tndim[k]; j++) numel *= (double)L->tshape[k][j];
            np += numel;
        }
        if (np + (double)total > (double)FEDCI_MAX_PARAMS) {
            st = fedc_err_set(err, FEDC_ERR_RANGE, "%s: the model would exceed %zu parameters",
                              where, FEDCI_MAX_PARAMS);
            break;
        }
        L->nparams = (size_t)np;
        total += L->nparams;
        m->flops += 2.0 * L->macs_ps;
        cur_ndim = L->out_ndim;
        memcpy(cur, L->out, sizeof cur);
        if (L->kind == FEDCI_EMBED) {
            m->tokens = 1;
            m->vocab = L->vocab;
        }
    }
    if (st == FEDC_OK) {
        size_t last_n = m->layers[m->nlayers - 1].out_n;
        if (last_n > FEDCI_MAX_DIM) {
            st = fedc_err_set(err, FEDC_ERR_RANGE, "model outputs %zu values: too many", last_n);
        } else {
            m->out_n = (int)last_n;
            if (num_outputs > 0 && m->out_n != num_outputs)
                st = fedc_err_set(err, FEDC_ERR_SHAPE,
                                  "model spec outputs %d values per sample but the data has %d "
                                  "classes (end the spec with dense(%d))",
                                  m->out_n, num_outputs, num_outputs);
            else if (m->loss == FEDC_LOSS_CE && m->out_n < 2)
                st = fedc_err_set(err, FEDC_ERR_SHAPE,
                                  "model spec outputs 1 value: softmax cross-entropy needs 2 or "
                                  "more (use loss(bce) for a binary output)");
        }
    }

    /* 3. Layout. */
    if (st == FEDC_OK) {
        m->layout = fedc_layout_create();
        if (!m->layout) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a model");
    }
    m->first_param_layer = m->nlayers;
    m->ghost = 1;
    /* Tensors are named like the equivalent PyTorch nn.Sequential ("3.weight"): its module
     * index counts every layer, plus the nn.Flatten() PyTorch needs where a dense layer takes
     * a multi-dimensional input (fedc's dense flattens implicitly). */
    size_t torch_index = 0;
    for (size_t i = 0; st == FEDC_OK && i < m->nlayers; i++, torch_index++) {
        fedci_layer *L = &m->layers[i];
        if (L->kind == FEDCI_DENSE && L->in_ndim > 1 && L->in_n != (size_t)L->in[L->in_ndim - 1])
            torch_index++; /* the implicit nn.Flatten() */
        if (L->nt > 0) {
            if (m->first_param_layer == m->nlayers) m->first_param_layer = i;
            if (!fedci_layer_ops_get(L->kind)->ghost) m->ghost = 0;
        }
        for (int k = 0; k < L->nt && st == FEDC_OK; k++) {
            char name[FEDC_TENSOR_NAME_MAX];
            snprintf(name, sizeof name, "%zu.%s", torch_index, L->tname[k]);
            st = fedc_layout_add(m->layout, name, L->tndim[k], L->tshape[k], err);
            if (st == FEDC_OK) L->toff[k] = m->layout->tensors[m->layout->count - 1].offset;
        }
    }
    if (st == FEDC_OK && build_spec_text(m) != FEDC_OK)
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a model");
    if (st != FEDC_OK) {
        model_free(m);
        return st;
    }
    *out = m;
    return FEDC_OK;
}

/* ---- accessors ---- */

const fedc_layout *fedc_model_layout(const fedc_model *model)
{
    assert(model);
    return model->layout;
}

size_t fedc_model_param_count(const fedc_model *model)
{
    assert(model);
    return model->layout->total;
}

size_t fedc_model_input_size(const fedc_model *model)
{
    assert(model);
    return model->in_n;
}

int fedc_model_input_shape(const fedc_model *model, int64_t shape[3])
{
    assert(model);
    for (int i = 0; i < 3; i++) shape[i] = i < model->in_ndim ? model->in_shape[i] : 1;
    return model->in_ndim;
}

int fedc_model_output_size(const fedc_model *model)
{
    assert(model);
    return model->out_n;
}

fedc_loss_kind fedc_model_loss(const fedc_model *model)
{
    assert(model);
    return model->loss;
}

int fedc_model_takes_tokens(const fedc_model *model)
{
    assert(model);
    return model->tokens;
}

const char *fedc_model_spec(const fedc_model *model)
{
    assert(model);
    return model->spec;
}

double fedc_model_forward_flops(const fedc_model *model)
{
    assert(model);
    return model->flops;
}

size_t fedc_model_layer_count(const fedc_model *model)
{
    assert(model);
    return model->nlayers;
}

void fedc_model_layer_info(const fedc_model *model, size_t i, fedc_layer_info *info)
{
    assert(model && info && i < model->nlayers);
    const fedci_layer *L = &model->layers[i];
    memset(info, 0, sizeof *info);
    info->kind = fedci_layer_ops_get(L->kind)->name;
    layer_desc(L, info->desc, sizeof info->desc);
    info->out_ndim = L->out_ndim;
    for (int k = 0; k < 3; k++) info->out_shape[k] = k < L->out_ndim ? L->out[k] : 1;
    info->params = L->nparams;
    info->flops = 2.0 * L->macs_ps;
}

/* ---- summary ---- */

typedef struct sbuf {
    char *buf;
    size_t size, len;
} sbuf;

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = s->len < s->size ? s->buf + s->len : NULL;
    size_t room = s->len < s->size ? s->size - s->len : 0;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0) s->len += (size_t)n;
}

/* 1663370 -> "1,663,370" */
static const char *group_digits(size_t v, char *buf, size_t size)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%zu", v);
    size_t o = 0;
    for (int i = 0; i < n && o + 1 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0 && o + 2 < size) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

size_t fedc_model_summary(const fedc_model *model, char *buf, size_t size)
{
    assert(model);
    sbuf s = {buf, size, 0};
    if (size) buf[0] = '\0';
    char shp[48], num[32];
    int in[3] = {1, 1, 1};
    for (int i = 0; i < model->in_ndim; i++) in[i] = (int)model->in_shape[i];
    sb_printf(&s, "%4s  %-22s %-14s %12s\n", "#", "layer", "output", "params");
    shape_text(shp, sizeof shp, model->in_ndim, in);
    sb_printf(&s, "%4s  %-22s %-14s %12s\n", "", model->tokens ? "input (tokens)" : "input", shp,
              "");
    for (size_t i = 0; i < model->nlayers; i++) {
        const fedci_layer *L = &model->layers[i];
        char d[96];
        layer_desc(L, d, sizeof d);
        shape_text(shp, sizeof shp, L->out_ndim, L->out);
        sb_printf(&s, "%4zu  %-22s %-14s %12s\n", i, d, shp,
                  group_digits(L->nparams, num, sizeof num));
    }
    size_t P = fedc_model_param_count(model);
    sb_printf(&s, "params: %s (%.2f MB as float32); forward %.3g MFLOP per sample; loss %s\n",
              group_digits(P, num, sizeof num), (double)P * 4.0 / 1e6, model->flops / 1e6,
              fedci_loss_name(model->loss));
    return s.len;
}

fedc_status fedc_model_print(const fedc_model *model, FILE *out)
{
    size_t n = fedc_model_summary(model, NULL, 0);
    char *buf = fedc_malloc(n + 1);
    if (!buf) return FEDC_ERR_NOMEM;
    fedc_model_summary(model, buf, n + 1);
    int bad = fputs(buf, out) == EOF;
    fedc_free(buf);
    return bad ? FEDC_ERR_IO : FEDC_OK;
}

/* ---- initialisation ---- */

void fedc_model_init_params(const fedc_model *model, float *params, uint64_t seed)
{
    assert(model && params);
    uint32_t ti = 0;
    for (size_t i = 0; i < model->nlayers; i++) {
        const fedci_layer *L = &model->layers[i];
        for (int k = 0; k < L->nt; k++, ti++) {
            const fedc_tensor_info *info = &model->layout->tensors[ti];
            float *w = params + info->offset;
            size_t n = info->numel;
            fedc_rng rng;
            fedc_rng_init(&rng, seed, FEDC_RNG_ANY, ti, FEDC_RNG_INIT);
            double limit = 0.0;
            switch (L->tinit[k]) {
            case FEDCI_INIT_ZERO: memset(w, 0, n * sizeof *w); continue;
            case FEDCI_INIT_ONE:
                for (size_t j = 0; j < n; j++) w[j] = 1.0f;
                continue;
            case FEDCI_INIT_LSTM_BIAS:
                for (size_t j = 0; j < n; j++) w[j] = (j >= n / 4 && j < n / 2) ? 1.0f : 0.0f;
                continue;
            case FEDCI_INIT_GLOROT: limit = sqrt(6.0 / (L->fan_in[k] + L->fan_out[k])); break;
            case FEDCI_INIT_HE: limit = sqrt(6.0 / L->fan_in[k]); break;
            }
            for (size_t j = 0; j < n; j++)
                w[j] = (float)((2.0 * fedc_rng_uniform(&rng) - 1.0) * limit);
        }
    }
}
