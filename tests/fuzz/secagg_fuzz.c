/*
 * Fuzz target: the SecAgg+ parsers that read untrusted bytes (issue 8). Byte 0 picks one:
 *   0     the body of POST /v1/tasks/{id}/secagg (fedci_secagg_parse_post: a SecAggMessage,
 *         then Chunks of the masked vector; byte 1 says whether a vector is expected)
 *   1..4  a client message to the server collecting stage 1..4 (fedc_secagg_server_recv,
 *         from the client named by byte 1), the earlier stages run honestly, then the stage
 *         closed (reconstruction included)
 *   5..7  a server message to a client: the keys list (fedc_secagg_client_share), the shares
 *         (fedc_secagg_client_masked), the survivors (fedc_secagg_client_unmask)
 * Properties: no crash, no leak, every refusal a status (never an assert); a refused message
 * changes nothing the server reports. (The protocol's keys come from the CSPRNG, so a run is
 * not bit-for-bit repeatable; the message formats are.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/secagg.h"
#include "net/wire.h"

#ifndef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

#define SAF_N 3
#define SAF_LEN 6

/* The fixed public parameters of the fuzzed round. */
static void saf_params(fedc_secagg_params *p)
{
    memset(p, 0, sizeof *p);
    p->n = SAF_N;
    p->k = 2;
    p->t = 2;
    p->bits = 16;
    p->len = SAF_LEN;
    p->round = 1;
    for (int i = 0; i < FEDC_SECAGG_SEED_BYTES; i++) p->seed[i] = (unsigned char)i;
}

typedef struct saf_round {
    fedc_secagg_server *srv;
    fedc_secagg_client *cl[SAF_N];
} saf_round;

static void saf_free(saf_round *r)
{
    fedc_secagg_server_destroy(r->srv);
    for (int i = 0; i < SAF_N; i++) fedc_secagg_client_destroy(r->cl[i]);
}

/* Runs stages 1..upto-1 honestly (every client answers them; stage upto-1 is closed): the
 * server then collects stage `upto` and each client waits for the server's message of stage
 * upto-1. 0 on success. */
static int saf_setup(saf_round *r, int upto)
{
    memset(r, 0, sizeof *r);
    fedc_secagg_params p;
    saf_params(&p);
    if (fedc_secagg_server_create(&p, &r->srv, NULL) != FEDC_OK) return -1;
    uint32_t x[SAF_LEN] = {1, 2, 3, 4, 5, 6};
    for (uint32_t u = 0; u < SAF_N; u++) {
        unsigned char *m;
        size_t ml;
        if (fedc_secagg_client_create(&p, u, &r->cl[u], NULL) != FEDC_OK) return -1;
        if (fedc_secagg_client_advertise(r->cl[u], &m, &ml, NULL) != FEDC_OK) return -1;
        fedc_status st = upto > 1 ? fedc_secagg_server_recv(r->srv, u, m, ml, NULL) : FEDC_OK;
        fedc_free(m);
        if (st != FEDC_OK) return -1;
    }
    for (int stage = 1; stage < upto; stage++) {
        if (fedc_secagg_server_close_stage(r->srv, NULL) != FEDC_OK) return -1;
        if (stage + 1 == upto) break;
        for (uint32_t u = 0; u < SAF_N; u++) {
            unsigned char *in, *m;
            size_t il, ml;
            if (fedc_secagg_server_message(r->srv, u, &in, &il, NULL) != FEDC_OK) return -1;
            fedc_secagg_client *c = r->cl[u];
            fedc_status st = stage == 1   ? fedc_secagg_client_share(c, in, il, &m, &ml, NULL)
                             : stage == 2 ? fedc_secagg_client_masked(c, in, il, x, &m, &ml, NULL)
                                          : fedc_secagg_client_unmask(c, in, il, &m, &ml, NULL);
            fedc_free(in);
            if (st != FEDC_OK) return -1;
            st = fedc_secagg_server_recv(r->srv, u, m, ml, NULL);
            fedc_free(m);
            if (st != FEDC_OK) return -1;
        }
    }
    return 0;
}

int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size);
int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int which = data[0] % 8;
    if (which == 0) {
        Fedc__V1__SecAggMessage *m = NULL;
        uint8_t *vec = NULL;
        size_t vb = data[1] & 1 ? 16 + 4 * SAF_LEN : 0;
        fedc_status st = fedci_secagg_parse_post(data + 2, size - 2, 4096, 16, vb, &m, &vec, NULL);
        if (st == FEDC_OK) {
            if (!m) abort();
            if (vec && m->stage != FEDC__V1__STAGE__STAGE_SECAGG_MASKED) abort();
        } else if (m || vec) {
            abort();
        }
        fedci_unpacked_free(m ? &m->base : NULL);
        fedc_free(vec);
        return 0;
    }
    saf_round r;
    if (which <= 4) {
        /* the server collecting stage `which`, a message from client data[1] % n */
        if (saf_setup(&r, which) == 0) {
            uint32_t from = data[1] % SAF_N;
            uint32_t before = fedc_secagg_server_alive_count(r.srv);
            uint64_t in_before = fedc_secagg_server_bytes_in(r.srv);
            fedc_status st = fedc_secagg_server_recv(r.srv, from, data + 2, size - 2, NULL);
            if (st != FEDC_OK && fedc_secagg_server_bytes_in(r.srv) != in_before) abort();
            if (fedc_secagg_server_alive_count(r.srv) != before) abort();
            st = fedc_secagg_server_close_stage(r.srv, NULL);
            if (st == FEDC_OK && fedc_secagg_server_stage(r.srv) == FEDC_SECAGG_DONE &&
                !fedc_secagg_server_sum(r.srv))
                abort();
            if (st != FEDC_OK && fedc_secagg_server_sum(r.srv)) abort(); /* no partial output */
        }
        saf_free(&r);
        return 0;
    }
    /* client 0 receiving a server message of stage 1..3 */
    int stage = which - 4;
    if (saf_setup(&r, stage + 1) == 0) {
        unsigned char *m = NULL;
        size_t ml = 0;
        uint32_t x[SAF_LEN] = {0};
        fedc_secagg_client *c = r.cl[0];
        /* client 0 has answered stages 1..stage honestly: the fuzz input is what it gets next */
        fedc_status st = stage == 1   ? fedc_secagg_client_share(c, data + 1, size - 1, &m, &ml,
                                                                 NULL)
                         : stage == 2 ? fedc_secagg_client_masked(c, data + 1, size - 1, x, &m,
                                                                  &ml, NULL)
                                      : fedc_secagg_client_unmask(c, data + 1, size - 1, &m, &ml,
                                                                  NULL);
        if (st == FEDC_OK && (!m || ml == 0)) abort();
        if (st != FEDC_OK && m) abort();
        fedc_free(m);
    }
    saf_free(&r);
    return 0;
}
