/*
 * fedc inspect: what a safetensors model file holds: tensors (name, dtype, shape, size),
 * metadata, and model_sha256, the SHA-256 of the whole flat float32 parameter buffer in layout
 * order (fedc_vec_sha256_hex), checked against the file's own model_sha256 metadata if any.
 * An engine checkpoint (fedc_engine_checkpoint_save) also holds the engine's state tensors,
 * named "__fedc__.*" and stored after the model's: they are listed as state, and the model
 * figures (parameters, model_sha256) cover the model tensors only.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fedc/safetensors.h"

#define CMD "inspect"

static void format_shape(const fedc_tensor_info *t, char *buf, size_t size)
{
    size_t at = 0;
    at += (size_t)snprintf(buf + at, size - at, "[");
    for (int d = 0; d < t->ndim && at < size; d++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", d ? ", " : "",
                               (long long)t->shape[d]);
    if (at < size) snprintf(buf + at, size - at, "]");
}

int cmd_inspect(int argc, char **argv)
{
    enum { OPT_JSON = 256 };
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    int json = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = 1; break;
        case ':': return cli_usage_error(CMD, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(CMD, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage_error(CMD, "missing FILE");
    if (optind + 1 < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind + 1]);
    const char *path = argv[optind];

    fedc_err err;
    fedc_err_clear(&err);
    fedc_safetensors *st = NULL;
    if (fedc_safetensors_read(path, FEDC_ST_ALLOW_NONFINITE, &st, &err) != FEDC_OK)
        return cli_fail(CMD, "%s", fedc_err_message(&err));
    const fedc_layout *L = st->layout;
    size_t nmodel = 0; /* the model's tensors: those before the first "__fedc__." one */
    while (nmodel < L->count && strncmp(L->tensors[nmodel].name, "__fedc__.", 9) != 0) nmodel++;
    size_t model_total = nmodel < L->count ? L->tensors[nmodel].offset : L->total;
    char sha[65];
    fedc_vec_sha256_hex(model_total, st->data, sha);
    size_t nonfinite = 0;
    for (size_t i = 0; i < L->total; i++)
        if (!isfinite(st->data[i])) nonfinite++;
    const char *meta_sha = fedc_safetensors_meta(st, "model_sha256");
    int mismatch = meta_sha && strcmp(meta_sha, sha) != 0;

    if (json) {
        json_t *o = json_object(), *tensors = json_array(), *meta = json_object();
        json_object_set_new(o, "file", json_string(path));
        for (size_t t = 0; t < L->count; t++) {
            const fedc_tensor_info *ti = &L->tensors[t];
            json_t *e = json_object(), *shape = json_array();
            for (int d = 0; d < ti->ndim; d++)
                json_array_append_new(shape, json_integer((json_int_t)ti->shape[d]));
            json_object_set_new(e, "name", json_string(ti->name));
            json_object_set_new(e, "dtype", json_string("F32"));
            json_object_set_new(e, "shape", shape);
            json_object_set_new(e, "numel", json_integer((json_int_t)ti->numel));
            json_object_set_new(e, "offset", json_integer((json_int_t)ti->offset));
            if (t >= nmodel) json_object_set_new(e, "state", json_true());
            json_array_append_new(tensors, e);
        }
        json_object_set_new(o, "tensors", tensors);
        json_object_set_new(o, "parameters", json_integer((json_int_t)model_total));
        if (nmodel < L->count)
            json_object_set_new(o, "state_values",
                                json_integer((json_int_t)(L->total - model_total)));
        for (size_t i = 0; i < st->nmeta; i++)
            json_object_set_new(meta, st->meta[i].key, json_string(st->meta[i].value));
        json_object_set_new(o, "metadata", meta);
        json_object_set_new(o, "nonfinite", json_integer((json_int_t)nonfinite));
        json_object_set_new(o, "model_sha256", json_string(sha));
        if (meta_sha) json_object_set_new(o, "model_sha256_matches", json_boolean(!mismatch));
        cli_json_print(o);
    } else {
        size_t w = 4;
        for (size_t t = 0; t < L->count; t++)
            if (strlen(L->tensors[t].name) > w) w = strlen(L->tensors[t].name);
        printf("%s: %zu tensors, %zu parameters (F32)", path, nmodel, model_total);
        if (nmodel < L->count)
            printf(" + engine state: %zu tensors, %zu values", L->count - nmodel,
                   L->total - model_total);
        printf("\n");
        if (L->count)
            printf("  %-*s  %-5s  %-20s  %s\n", (int)w, "name", "dtype", "shape", "numel");
        for (size_t t = 0; t < L->count; t++) {
            char shape[160];
            format_shape(&L->tensors[t], shape, sizeof shape);
            printf("  %-*s  %-5s  %-20s  %zu%s\n", (int)w, L->tensors[t].name, "F32", shape,
                   L->tensors[t].numel, t >= nmodel ? "  (state)" : "");
        }
        if (st->nmeta) printf("metadata:\n");
        for (size_t i = 0; i < st->nmeta; i++)
            printf("  %s = %s\n", st->meta[i].key, st->meta[i].value);
        if (nonfinite) printf("warning: %zu parameters are NaN or Inf\n", nonfinite);
        printf("model_sha256: %s%s\n", sha,
               !meta_sha  ? ""
               : mismatch ? " (DOES NOT MATCH the file's metadata)"
                          : " (matches metadata)");
    }
    int rc = CLI_EXIT_OK;
    if (mismatch) /* before destroy: meta_sha points into st */
        rc = cli_fail(CMD, "%s: model_sha256 in the metadata is %s but the parameters hash to %s",
                      path, meta_sha, sha);
    fedc_safetensors_destroy(st);
    return rc;
}
