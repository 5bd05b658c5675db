/*
 * fedc model PRESET|SPEC [--input SHAPE] [--outputs N] [--json]: builds a model from a preset
 * or a layer spec and prints its layers, output shapes and parameter count (with --json, one
 * object with the spec, params, FLOPs, layers and the parameter layout).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static json_t *shape_json(int ndim, const int64_t *shape)
{
    json_t *a = json_array();
    for (int i = 0; i < ndim; i++) json_array_append_new(a, json_integer(shape[i]));
    return a;
}

static json_t *model_json(const fedc_model *m)
{
    json_t *o = json_object();
    int64_t in[3];
    int in_nd = fedc_model_input_shape(m, in);
    size_t P = fedc_model_param_count(m);
    static const char *const losses[] = {"ce", "bce", "mse"};
    json_object_set_new(o, "spec", json_string(fedc_model_spec(m)));
    json_object_set_new(o, "input", shape_json(in_nd, in));
    json_object_set_new(o, "tokens", json_boolean(fedc_model_takes_tokens(m)));
    json_object_set_new(o, "outputs", json_integer(fedc_model_output_size(m)));
    json_object_set_new(o, "loss", json_string(losses[fedc_model_loss(m)]));
    json_object_set_new(o, "params", json_integer((json_int_t)P));
    json_object_set_new(o, "param_bytes", json_integer((json_int_t)(P * sizeof(float))));
    json_object_set_new(o, "flops_per_sample", json_real(fedc_model_forward_flops(m)));
    json_t *layers = json_array();
    for (size_t i = 0; i < fedc_model_layer_count(m); i++) {
        fedc_layer_info li;
        fedc_model_layer_info(m, i, &li);
        json_t *l = json_object();
        json_object_set_new(l, "index", json_integer((json_int_t)i));
        json_object_set_new(l, "layer", json_string(li.desc));
        json_object_set_new(l, "kind", json_string(li.kind));
        json_object_set_new(l, "output", shape_json(li.out_ndim, li.out_shape));
        json_object_set_new(l, "params", json_integer((json_int_t)li.params));
        json_object_set_new(l, "flops", json_real(li.flops));
        json_array_append_new(layers, l);
    }
    json_object_set_new(o, "layers", layers);
    const fedc_layout *L = fedc_model_layout(m);
    json_t *tensors = json_array();
    for (size_t i = 0; i < L->count; i++) {
        const fedc_tensor_info *t = &L->tensors[i];
        json_t *j = json_object();
        json_object_set_new(j, "name", json_string(t->name));
        json_object_set_new(j, "shape", shape_json(t->ndim, t->shape));
        json_object_set_new(j, "offset", json_integer((json_int_t)t->offset));
        json_array_append_new(tensors, j);
    }
    json_object_set_new(o, "tensors", tensors);
    return o;
}

int cmd_model(int argc, char **argv)
{
    static const struct option opts[] = {{"input", required_argument, NULL, 'i'},
                                         {"outputs", required_argument, NULL, 'o'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *input = NULL;
    long outputs = -1;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "i:o:j", opts, NULL)) != -1) {
        switch (c) {
        case 'i': input = optarg; break;
        case 'o': {
            char *end;
            outputs = strtol(optarg, &end, 10);
            if (end == optarg || *end || outputs < 0 || outputs > 1000000)
                return cli_usage_error("model", "--outputs wants a count, got '%s'", optarg);
            break;
        }
        case 'j': json = 1; break;
        default:
            return cli_usage_error("model", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage_error("model", "missing PRESET or SPEC");
    /* The spec may come as several words: `fedc model 'dense(200)' relu 'dense(10)'`. */
    size_t len = 1;
    for (int i = optind; i < argc; i++) len += strlen(argv[i]) + 1;
    char *spec = malloc(len);
    if (!spec) return cli_fail("model", "out of memory");
    spec[0] = '\0';
    for (int i = optind; i < argc; i++) {
        if (i > optind) strcat(spec, " ");
        strcat(spec, argv[i]);
    }
    /* Defaults: an image of 1x28x28 (MNIST-like) with 10 classes, or for token models a
     * sequence of 80 characters over a vocabulary of 80 (LEAF Shakespeare). */
    int token_model = strstr(spec, "shakespeare") != NULL || strstr(spec, "embed") != NULL;
    int is_preset = strchr(spec, '(') == NULL && strchr(spec, ' ') == NULL;
    long long dims[3] = {1, 28, 28};
    int ndim = 3;
    if (token_model) {
        dims[0] = 80;
        ndim = 1;
    }
    if (input) {
        ndim = cli_parse_shape(input, dims, 3);
        if (ndim < 1) {
            free(spec);
            return cli_usage_error("model", "--input wants a shape such as 1,28,28, got '%s'",
                                   input);
        }
    }
    if (outputs < 0) outputs = is_preset ? (token_model ? 80 : 10) : 0;
    int64_t shape[3];
    for (int i = 0; i < ndim; i++) shape[i] = dims[i];
    fedc_model *m = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_model_create(spec, shape, ndim, (int)outputs, &m, &err);
    free(spec);
    if (st != FEDC_OK) return cli_fail("model", "%s", fedc_err_message(&err));
    if (json) {
        cli_json_print(model_json(m));
    } else {
        printf("%s\n", fedc_model_spec(m));
        if (fedc_model_print(m, stdout) != FEDC_OK) {
            fedc_model_destroy(m);
            return cli_fail("model", "cannot write the summary");
        }
    }
    fedc_model_destroy(m);
    return CLI_EXIT_OK;
}
