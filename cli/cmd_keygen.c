/*
 * fedc keygen: a client's Ed25519 identity. Writes the secret key file (mode 0600, never
 * overwritten) and prints the public key, which the server's operator adds to the allow-list
 * (`fedc server allow PUBKEY --state DIR`). --show prints the public key of an existing file.
 */
#include <getopt.h>
#include <string.h>

#include "cli.h"
#include "fedc/net.h"

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},
        {"show", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *show = NULL;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:s:j", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 's': show = optarg; break;
        case 'j': json = 1; break;
        default:
            return cli_usage_error("keygen", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
    if (!out == !show) return cli_usage_error("keygen", "give --out FILE (new key) or --show FILE");
    fedc_err err;
    fedc_err_clear(&err);
    fedc_key *key = NULL;
    if (show) {
        if (fedc_key_read(show, &key, &err) != FEDC_OK)
            return cli_fail("keygen", "%s", fedc_err_message(&err));
    } else {
        if (fedc_key_generate(&key, &err) != FEDC_OK || fedc_key_write(key, out, &err) != FEDC_OK) {
            fedc_key_destroy(key);
            return cli_fail("keygen", "%s", fedc_err_message(&err));
        }
    }
    char pk[FEDC_KEY_PUBLIC_HEX];
    fedc_key_public_hex(key, pk);
    fedc_key_destroy(key);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "public_key", json_string(pk));
        json_object_set_new(o, "file", json_string(show ? show : out));
        cli_json_print(o);
    } else {
        printf("%s\n", pk);
        if (out)
            fprintf(stderr,
                    "secret key written to %s (mode 0600); public key above: add it with\n"
                    "  fedc server allow %s --state DIR\n",
                    out, pk);
    }
    return CLI_EXIT_OK;
}
