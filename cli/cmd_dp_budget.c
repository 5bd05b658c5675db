/*
 * fedc dp-budget: the privacy spent by the sampled Gaussian mechanism (eps and the best RDP
 * order for q, z, steps, delta), or with --target-epsilon the noise multiplier that spends a
 * given eps. The same accountant as the round engine's (include/fedc/privacy.h).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fedc/privacy.h"

#define CMD "dp-budget"

/* A finite double from the whole of text. */
/* A JSON number, or null for +inf (JSON has no infinity). */
static json_t *json_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

int cmd_dp_budget(int argc, char **argv)
{
    enum { OPT_ORDERS = 256, OPT_TARGET, OPT_JSON };
    static const struct option opts[] = {
        {"sample-rate", required_argument, NULL, 'q'},
        {"noise-multiplier", required_argument, NULL, 'z'},
        {"steps", required_argument, NULL, 't'},
        {"delta", required_argument, NULL, 'd'},
        {"orders", required_argument, NULL, OPT_ORDERS},
        {"target-epsilon", required_argument, NULL, OPT_TARGET},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    const char *q_s = NULL, *z_s = NULL, *t_s = NULL, *d_s = NULL, *e_s = NULL;
    const char *orders_spec = FEDC_RDP_ORDERS_DEFAULT;
    int json = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":q:z:t:d:", opts, NULL)) != -1) {
        switch (c) {
        case 'q': q_s = optarg; break;
        case 'z': z_s = optarg; break;
        case 't': t_s = optarg; break;
        case 'd': d_s = optarg; break;
        case OPT_ORDERS: orders_spec = optarg; break;
        case OPT_TARGET: e_s = optarg; break;
        case OPT_JSON: json = 1; break;
        case ':': return cli_usage_error(CMD, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(CMD, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!q_s) return cli_usage_error(CMD, "missing --sample-rate Q");
    if (!t_s) return cli_usage_error(CMD, "missing --steps T");
    if (!d_s) return cli_usage_error(CMD, "missing --delta D");
    if (!z_s && !e_s)
        return cli_usage_error(CMD, "missing --noise-multiplier Z (or --target-epsilon E)");
    if (z_s && e_s)
        return cli_usage_error(CMD, "--noise-multiplier and --target-epsilon exclude each other: "
                                    "--target-epsilon computes the noise multiplier");

    double q, z = 0.0, delta, target = 0.0;
    uint64_t steps;
    if (cli_parse_double(q_s, &q) != 0 || !(q > 0.0 && q <= 1.0))
        return cli_usage_error(CMD, "--sample-rate '%s': must be a number in (0, 1]", q_s);
    if (z_s && (cli_parse_double(z_s, &z) != 0 || !(z > 0.0)))
        return cli_usage_error(CMD, "--noise-multiplier '%s': must be a number > 0", z_s);
    if (cli_parse_u64(t_s, &steps) != 0 || steps == 0)
        return cli_usage_error(CMD, "--steps '%s': must be an integer >= 1", t_s);
    if (cli_parse_double(d_s, &delta) != 0 || !(delta > 0.0 && delta < 1.0))
        return cli_usage_error(CMD, "--delta '%s': must be a number in (0, 1)", d_s);
    if (e_s && (cli_parse_double(e_s, &target) != 0 || !(target > 0.0)))
        return cli_usage_error(CMD, "--target-epsilon '%s': must be a number > 0", e_s);

    fedc_err err;
    fedc_err_clear(&err);
    double *orders = NULL;
    size_t norders = 0;
    fedc_status st = fedc_rdp_orders_parse(orders_spec, &orders, &norders, &err);
    if (st != FEDC_OK) {
        if (st == FEDC_ERR_NOMEM) return cli_fail(CMD, "%s", fedc_err_message(&err));
        return cli_usage_error(CMD, "--orders: %s", fedc_err_message(&err));
    }

    double eps = 0.0, order = 0.0;
    if (e_s)
        st = fedc_dp_noise_multiplier(q, steps, delta, target, orders, norders, &z, &eps, &order,
                                      &err);
    else
        st = fedc_dp_epsilon(q, z, steps, delta, orders, norders, &eps, &order, &err);
    fedc_free(orders);
    if (st != FEDC_OK) return cli_fail(CMD, "%s", fedc_err_message(&err));

    if (json) {
        json_t *o = json_object();
        if (e_s) {
            json_object_set_new(o, "noise_multiplier", json_real(z));
            json_object_set_new(o, "target_epsilon", json_real(target));
        }
        json_object_set_new(o, "epsilon", json_num(eps));
        json_object_set_new(o, "order", json_real(order));
        json_object_set_new(o, "delta", json_real(delta));
        json_object_set_new(o, "sample_rate", json_real(q));
        if (!e_s) json_object_set_new(o, "noise_multiplier", json_real(z));
        json_object_set_new(o, "steps", json_integer((json_int_t)steps));
        json_object_set_new(o, "orders", json_string(orders_spec));
        json_object_set_new(o, "order_count", json_integer((json_int_t)norders));
        cli_json_print(o);
        return CLI_EXIT_OK;
    }
    if (e_s) {
        printf("noise multiplier %.8g gives epsilon %.8g (target %g, delta %g) after %llu steps "
               "at sampling rate %g\n",
               z, eps, target, delta, (unsigned long long)steps, q);
        printf("best RDP order %g of %zu (orders: %s); the noise multiplier is within 1e-6 "
               "(relative) of the smallest that meets the target\n",
               order, norders, orders_spec);
    } else {
        if (isfinite(eps))
            printf("epsilon %.6g (delta %g) after %llu steps at sampling rate %g, noise "
                   "multiplier %g\n",
                   eps, delta, (unsigned long long)steps, q, z);
        else
            printf("epsilon inf (delta %g): no finite guarantee at these orders\n", delta);
        printf("best RDP order %g of %zu (orders: %s)\n", order, norders, orders_spec);
    }
    return CLI_EXIT_OK;
}
