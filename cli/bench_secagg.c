/*
 * fedc bench secagg: the cost of one SecAgg+ round run in-process (fedc_secagg_simulate) over
 * a clients x vector-length grid and dropout rates: server time, client time (mean per
 * client, all four stages), bytes each client sends and the expansion against a plain float32
 * update. Dropout F: that fraction of the clients vanishes after sharing its keys and before
 * sending its masked input, the case that costs the server most (as in Bonawitz et al. 2017).
 * Everything runs on one core, one process. Each case checks that the unmasked sum is exact.
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fedc/secagg.h"

static int run_case(uint32_t n, size_t len, double drop, uint32_t k, uint32_t t, int json,
                    FILE *h)
{
    fedc_secagg_params p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.k = k;
    p.bits = 32;
    p.len = len;
    p.round = 1;
    for (int i = 0; i < FEDC_SECAGG_SEED_BYTES; i++)
        p.seed[i] = (unsigned char)(i + 1);
    fedc_err err;
    fedc_err_clear(&err);
    if (fedc_secagg_params_check(&p, &err) != FEDC_OK)
        return cli_fail("bench", "secagg: %s", fedc_err_message(&err));
    /* t: by default a third of the neighbours, so that 30% dropout rarely starves a secret */
    p.t = t ? t : (p.k / 3 > 2 ? p.k / 3 : 2);
    if (p.t > p.k) p.t = p.k;
    /* every client sends the same input: memory O(len) at any n; the sum is checkable */
    uint32_t *x = malloc(len * sizeof *x), *sum = malloc(len * sizeof *sum);
    const uint32_t **xs = malloc(n * sizeof *xs);
    if (!x || !sum || !xs) {
        free(x);
        free(sum);
        free(xs);
        return cli_fail("bench", "secagg: out of memory");
    }
    fedc_rng rng;
    fedc_rng_init(&rng, 1, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < len; i++)
        x[i] = fedc_rng_u32(&rng);
    for (uint32_t u = 0; u < n; u++)
        xs[u] = x;
    fedc_secagg_sim_opts o = {{0, drop, 0}, 7, NULL};
    fedc_secagg_sim_stats st;
    fedc_status s = fedc_secagg_simulate(&p, xs, &o, sum, NULL, &st, &err);
    int rc = CLI_EXIT_OK;
    if (s != FEDC_OK) {
        rc = cli_fail("bench", "secagg: %u clients, %zu params, dropout %g: %s", n, len, drop,
                      fedc_err_message(&err));
    } else {
        for (size_t i = 0; i < len; i++)
            if (sum[i] != x[i] * st.survivors) {
                rc = cli_fail("bench", "secagg: WRONG SUM at %zu (%u clients, dropout %g)", i,
                              n, drop);
                break;
            }
    }
    if (rc == CLI_EXIT_OK) {
        fprintf(h, "  %5u clients x %8zu params, dropout %2.0f%% (k %u, t %u): server %.3f s, "
                   "client %.3f s, %.0f bytes up per client, expansion %.4fx\n",
                n, len, 100 * drop, p.k, p.t, st.server_seconds, st.client_seconds,
                (double)st.client_bytes_up, st.expansion);
        if (json) {
            json_t *j = json_object();
            json_object_set_new(j, "case", json_string("secagg"));
            json_object_set_new(j, "clients", json_integer(n));
            json_object_set_new(j, "params", json_integer((json_int_t)len));
            json_object_set_new(j, "dropout", json_real(drop));
            json_object_set_new(j, "neighbors", json_integer(p.k));
            json_object_set_new(j, "threshold", json_integer(p.t));
            json_object_set_new(j, "survivors", json_integer(st.survivors));
            json_object_set_new(j, "server_s", json_real(st.server_seconds));
            json_object_set_new(j, "client_s", json_real(st.client_seconds));
            json_object_set_new(j, "bytes_up", json_integer((json_int_t)st.client_bytes_up));
            json_object_set_new(j, "expansion", json_real(st.expansion));
            cli_json_print(j);
        }
    }
    free(x);
    free(sum);
    free(xs);
    return rc;
}

int bench_secagg(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                          {"clients", required_argument, NULL, 'n'},
                                          {"params", required_argument, NULL, 'p'},
                                          {"dropout", required_argument, NULL, 'd'},
                                          {"neighbors", required_argument, NULL, 'k'},
                                          {"threshold", required_argument, NULL, 't'},
                                          {NULL, 0, NULL, 0}};
    int json = 0, c;
    long clients = 0, params = 0, k = 0, t = 0;
    double dropout = -1;
    char *end;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "jn:p:d:k:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'n':
            clients = strtol(optarg, &end, 10);
            if (*end || clients < 2 || clients > (long)FEDC_SECAGG_MAX_CLIENTS)
                return cli_usage_error("bench", "secagg: --clients '%s': need 2..%u", optarg,
                                       FEDC_SECAGG_MAX_CLIENTS);
            break;
        case 'p':
            params = strtol(optarg, &end, 10);
            if (*end || params < 1 || params > (1L << 30))
                return cli_usage_error("bench", "secagg: --params '%s': need 1..2^30", optarg);
            break;
        case 'd':
            dropout = strtod(optarg, &end);
            if (*end || !(dropout >= 0 && dropout < 1))
                return cli_usage_error("bench", "secagg: --dropout '%s': need [0, 1)", optarg);
            break;
        case 'k':
            k = strtol(optarg, &end, 10);
            if (*end || k < 0) return cli_usage_error("bench", "secagg: bad --neighbors");
            break;
        case 't':
            t = strtol(optarg, &end, 10);
            if (*end || t < 0) return cli_usage_error("bench", "secagg: bad --threshold");
            break;
        default:
            return cli_usage_error("bench", "secagg: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("bench", "secagg: unexpected argument '%s'", argv[optind]);
    FILE *h = cli_human(json);
    static const uint32_t grid_n[2] = {100, 500};
    static const double grid_d[3] = {0, 0.1, 0.3};
    size_t nn = clients ? 1 : 2, nd = dropout >= 0 ? 1 : 3;
    size_t len = params ? (size_t)params : 100000;
    fprintf(h, "fedc bench secagg: one SecAgg+ round in-process, one core; dropout = clients "
               "vanishing before the masked input\n");
    for (size_t a = 0; a < nn; a++)
        for (size_t b = 0; b < nd; b++) {
            uint32_t n = clients ? (uint32_t)clients : grid_n[a];
            double d = dropout >= 0 ? dropout : grid_d[b];
            int rc = run_case(n, len, d, (uint32_t)k, (uint32_t)t, json, h);
            if (rc != CLI_EXIT_OK) return rc;
        }
    return CLI_EXIT_OK;
}
