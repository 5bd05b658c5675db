/* SecAgg+ protocol tests: Shamir sharing, the neighbour graph, exact sums under dropouts,
 * aborts below threshold, uniformity of a masked vector, and refusal of bad messages. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/secagg.h"
#include "secagg/secagg_internal.h"

static fedc_secagg_params make_params(uint32_t n, uint32_t k, uint32_t t, size_t len,
                                      uint32_t bits)
{
    fedc_secagg_params p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.k = k;
    p.t = t;
    p.len = len;
    p.bits = bits;
    p.round = 7;
    for (int i = 0; i < FEDC_SECAGG_SEED_BYTES; i++)
        p.seed[i] = (unsigned char)(i * 13 + n);
    return p;
}

static void test_shamir(void **state)
{
    (void)state;
    assert_int_equal(sodium_init() >= 0, 1);
    unsigned char secret[SA_KEY], back[SA_KEY];
    randombytes_buf(secret, sizeof secret);
    secret[31] = 0xff; /* exercise the top byte of every element */
    secret[6] = 0xff;
    uint64_t xs[7] = {1, 5, 9, 100, 2000000000, SA_P - 1, 77};
    uint64_t sh[7 * SA_ELEMS];
    fedci_sa_split(secret, 4, xs, 7, sh);
    /* any 4 shares reconstruct it */
    int subsets[3][4] = {{0, 1, 2, 3}, {6, 5, 4, 3}, {0, 2, 4, 6}};
    for (int s = 0; s < 3; s++) {
        uint64_t sx[4], sy[4 * SA_ELEMS];
        for (int i = 0; i < 4; i++) {
            sx[i] = xs[subsets[s][i]];
            memcpy(sy + i * SA_ELEMS, sh + subsets[s][i] * SA_ELEMS, sizeof(uint64_t) * SA_ELEMS);
        }
        memset(back, 0, sizeof back);
        assert_int_equal(fedci_sa_combine(4, sx, sy, back), 0);
        assert_memory_equal(back, secret, SA_KEY);
    }
    /* 3 shares (below threshold) do not give the secret */
    int rc = fedci_sa_combine(3, xs, sh, back);
    assert_true(rc != 0 || memcmp(back, secret, SA_KEY) != 0);
    /* a corrupted share gives a wrong or invalid secret */
    sh[SA_ELEMS] ^= 1;
    rc = fedci_sa_combine(4, xs, sh, back);
    assert_true(rc != 0 || memcmp(back, secret, SA_KEY) != 0);
}

static void test_graph(void **state)
{
    (void)state;
    fedc_secagg_params p = make_params(100, 0, 0, 10, 32);
    assert_int_equal(fedc_secagg_params_check(&p, NULL), FEDC_OK);
    assert_int_equal(p.k, 14); /* 2 * ceil(log2 100) */
    assert_int_equal(p.t, 8);
    uint32_t *nb = malloc(100 * 14 * sizeof *nb);
    for (uint32_t u = 0; u < 100; u++)
        fedc_secagg_neighbors(&p, u, nb + u * 14);
    for (uint32_t u = 0; u < 100; u++)
        for (int j = 0; j < 14; j++) {
            uint32_t v = nb[u * 14 + j];
            assert_true(v < 100 && v != u);
            if (j) assert_true(v > nb[u * 14 + j - 1]); /* sorted, distinct */
            int found = 0; /* symmetric */
            for (int i = 0; i < 14; i++)
                found |= nb[v * 14 + i] == u;
            assert_true(found);
        }
    /* another seed, another graph; the same seed, the same graph */
    uint32_t a[14], b[14];
    fedc_secagg_params q = p;
    q.seed[0] ^= 1;
    int differ = 0;
    for (uint32_t u = 0; u < 100; u++) {
        fedc_secagg_neighbors(&q, u, a);
        fedc_secagg_neighbors(&p, u, b);
        differ |= memcmp(a, b, sizeof a) != 0;
        assert_memory_equal(b, nb + u * 14, sizeof b);
    }
    assert_true(differ);
    free(nb);
    /* bad parameters */
    fedc_err err;
    fedc_secagg_params bad = make_params(10, 5, 0, 10, 32);
    assert_int_equal(fedc_secagg_params_check(&bad, &err), FEDC_ERR_INVALID); /* odd k */
    bad = make_params(10, 4, 5, 10, 32);
    assert_int_equal(fedc_secagg_params_check(&bad, &err), FEDC_ERR_INVALID); /* t > k */
    bad = make_params(10, 4, 2, 10, 33);
    assert_int_equal(fedc_secagg_params_check(&bad, &err), FEDC_ERR_INVALID);
    bad = make_params(1, 0, 0, 10, 32);
    assert_int_equal(fedc_secagg_params_check(&bad, &err), FEDC_ERR_INVALID);
}

/* Random inputs below 2^bits for n clients. */
static uint32_t **make_inputs(uint32_t n, size_t len, uint32_t bits, unsigned seed)
{
    uint32_t **xs = malloc(n * sizeof *xs);
    fedc_rng r;
    fedc_rng_init(&r, seed, 0, 0, FEDC_RNG_DATA);
    for (uint32_t u = 0; u < n; u++) {
        xs[u] = malloc(len * sizeof **xs);
        for (size_t i = 0; i < len; i++)
            xs[u][i] = bits == 32 ? fedc_rng_u32(&r) : fedc_rng_u32(&r) >> (32 - bits);
    }
    return xs;
}

static void free_inputs(uint32_t **xs, uint32_t n)
{
    for (uint32_t u = 0; u < n; u++)
        free(xs[u]);
    free(xs);
}

static void check_round(uint32_t n, uint32_t k, uint32_t t, double drop, size_t len,
                        uint32_t bits)
{
    fedc_secagg_params p = make_params(n, k, t, len, bits);
    uint32_t **xs = make_inputs(n, len, bits, n * 31 + (unsigned)(drop * 100));
    fedc_secagg_sim_opts o = {{drop, drop, drop}, 1234 + n, NULL};
    uint32_t *sum = calloc(len, sizeof *sum);
    unsigned char *surv = calloc(n, 1);
    fedc_secagg_sim_stats stats;
    fedc_err err;
    fedc_status st = fedc_secagg_simulate(&p, (const uint32_t *const *)xs, &o, sum, surv,
                                          &stats, &err);
    if (st != FEDC_OK) fail_msg("n=%u drop=%g: %s", n, drop, err.msg);
    /* the expected number of survivors: floor(drop * alive) vanish before stages 2 and 3 */
    uint32_t alive = n;
    alive -= (uint32_t)floor(drop * alive);
    alive -= (uint32_t)floor(drop * alive);
    assert_int_equal(stats.survivors, alive);
    uint32_t cnt = 0;
    uint32_t mask = bits == 32 ? UINT32_MAX : (UINT32_C(1) << bits) - 1;
    for (size_t i = 0; i < len; i++) {
        uint32_t want = 0;
        for (uint32_t u = 0; u < n; u++)
            if (surv[u]) want += xs[u][i];
        if ((want & mask) != sum[i])
            fail_msg("n=%u drop=%g: sum[%zu] = %u, expected %u", n, drop, i, sum[i],
                     want & mask);
    }
    for (uint32_t u = 0; u < n; u++)
        cnt += surv[u];
    assert_int_equal(cnt, alive);
    if (drop > 0 && n >= 10) assert_true(alive < n);
    free(sum);
    free(surv);
    free_inputs(xs, n);
}

static void test_exact_sum(void **state)
{
    (void)state;
    static const uint32_t ns[3] = {3, 10, 100};
    static const double drops[3] = {0, 0.1, 0.3};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            uint32_t n = ns[a], k = 0, t = 0;
            if (drops[b] > 0.2) { /* ~34% of neighbours left at stage 4: wider graph, lower t */
                k = n <= 10 ? n - 1 : 40;
                t = n <= 10 ? 2 : 5;
            } else if (drops[b] > 0) {
                t = n <= 10 ? 2 : 5;
            }
            check_round(n, k, t, drops[b], n == 100 ? 300 : 257, 32);
        }
    check_round(10, 9, 0, 0, 100, 20); /* a smaller ring, the complete graph (SecAgg) */
    check_round(50, 0, 0, 0, 64, 1);
}

static void test_below_threshold_aborts(void **state)
{
    (void)state;
    /* too few clients left: 10 -> 7 -> 5 survivors, threshold 6 */
    fedc_secagg_params p = make_params(10, 9, 6, 50, 32);
    uint32_t **xs = make_inputs(10, 50, 32, 5);
    fedc_secagg_sim_opts o = {{0.3, 0.3, 0.3}, 99, NULL};
    uint32_t sum[50];
    for (int i = 0; i < 50; i++)
        sum[i] = 0xdeadbeef;
    fedc_err err;
    assert_int_equal(fedc_secagg_simulate(&p, (const uint32_t *const *)xs, &o, sum, NULL, NULL,
                                          &err),
                     FEDC_ERR_ABORTED);
    assert_non_null(strstr(err.msg, "threshold"));
    for (int i = 0; i < 50; i++)
        assert_int_equal(sum[i], 0xdeadbeef);

    /* enough masked inputs, but too few unmasking answers: abort at the end, no sum */
    fedc_secagg_server *s;
    fedc_secagg_client *c[10];
    assert_int_equal(fedc_secagg_server_create(&p, &s, &err), FEDC_OK);
    for (uint32_t u = 0; u < 10; u++) {
        unsigned char *m;
        size_t ml;
        assert_int_equal(fedc_secagg_client_create(&p, u, &c[u], &err), FEDC_OK);
        assert_int_equal(fedc_secagg_client_advertise(c[u], &m, &ml, &err), FEDC_OK);
        assert_int_equal(fedc_secagg_server_recv(s, u, m, ml, &err), FEDC_OK);
        fedc_free(m);
    }
    for (int stage = 1; stage <= 3; stage++) {
        assert_int_equal(fedc_secagg_server_close_stage(s, &err), FEDC_OK);
        uint32_t answering = stage == 3 ? 5 : 10; /* 5 unmasking answers < t = 6 */
        for (uint32_t u = 0; u < answering; u++) {
            unsigned char *in, *m;
            size_t il, ml;
            assert_int_equal(fedc_secagg_server_message(s, u, &in, &il, &err), FEDC_OK);
            fedc_status st = stage == 1 ? fedc_secagg_client_share(c[u], in, il, &m, &ml, &err) :
                             stage == 2 ? fedc_secagg_client_masked(c[u], in, il, xs[u], &m,
                                                                    &ml, &err) :
                                          fedc_secagg_client_unmask(c[u], in, il, &m, &ml, &err);
            assert_int_equal(st, FEDC_OK);
            assert_int_equal(fedc_secagg_server_recv(s, u, m, ml, &err), FEDC_OK);
            fedc_free(in);
            fedc_free(m);
        }
    }
    assert_int_equal(fedc_secagg_server_close_stage(s, &err), FEDC_ERR_ABORTED);
    assert_int_equal(fedc_secagg_server_stage(s), FEDC_SECAGG_ABORTED);
    assert_null(fedc_secagg_server_sum(s));
    for (uint32_t u = 0; u < 10; u++)
        fedc_secagg_client_destroy(c[u]);
    fedc_secagg_server_destroy(s);
    free_inputs(xs, 10);
}

/* Chi-square of a byte histogram against uniform. */
static double chi2_bytes(const unsigned char *b, size_t n)
{
    double cnt[256] = {0};
    for (size_t i = 0; i < n; i++)
        cnt[b[i]]++;
    double e = (double)n / 256, x = 0;
    for (int i = 0; i < 256; i++)
        x += (cnt[i] - e) * (cnt[i] - e) / e;
    return x;
}

static void test_masked_uniform(void **state)
{
    (void)state;
    /* One client's masked vector of an all-zero input (the most structured input there is):
     * chi-square over its 65536 bytes, 255 degrees of freedom, against the 0.999 quantile
     * 330.5: a correct implementation fails this test with probability 0.1%. The top byte of
     * each word alone: the same test over 16384 bytes. */
    const size_t len = 16384;
    fedc_secagg_params p = make_params(5, 4, 3, len, 32);
    fedc_err err;
    fedc_secagg_server *s;
    fedc_secagg_client *c[5];
    uint32_t *zero = calloc(len, sizeof *zero);
    assert_int_equal(fedc_secagg_server_create(&p, &s, &err), FEDC_OK);
    for (uint32_t u = 0; u < 5; u++) {
        unsigned char *m;
        size_t ml;
        assert_int_equal(fedc_secagg_client_create(&p, u, &c[u], &err), FEDC_OK);
        assert_int_equal(fedc_secagg_client_advertise(c[u], &m, &ml, &err), FEDC_OK);
        assert_int_equal(fedc_secagg_server_recv(s, u, m, ml, &err), FEDC_OK);
        fedc_free(m);
    }
    unsigned char *masked0 = NULL;
    for (int stage = 1; stage <= 2; stage++) {
        assert_int_equal(fedc_secagg_server_close_stage(s, &err), FEDC_OK);
        for (uint32_t u = 0; u < 5; u++) {
            unsigned char *in, *m;
            size_t il, ml;
            assert_int_equal(fedc_secagg_server_message(s, u, &in, &il, &err), FEDC_OK);
            if (stage == 1)
                assert_int_equal(fedc_secagg_client_share(c[u], in, il, &m, &ml, &err), FEDC_OK);
            else
                assert_int_equal(fedc_secagg_client_masked(c[u], in, il, zero, &m, &ml, &err),
                                 FEDC_OK);
            assert_int_equal(fedc_secagg_server_recv(s, u, m, ml, &err), FEDC_OK);
            fedc_free(in);
            if (stage == 2 && u == 0) masked0 = m;
            else fedc_free(m);
        }
    }
    const unsigned char *y = masked0 + SA_HDR;
    double x_all = chi2_bytes(y, 4 * len);
    unsigned char *top = malloc(len);
    for (size_t i = 0; i < len; i++)
        top[i] = y[4 * i + 3];
    double x_top = chi2_bytes(top, len);
    if (x_all > 330.5 || x_top > 330.5)
        fail_msg("masked vector not uniform: chi2 = %.1f (bytes), %.1f (top bytes)", x_all,
                 x_top);
    /* and it is not the input */
    size_t zeros = 0;
    for (size_t i = 0; i < 4 * len; i++)
        zeros += y[i] == 0;
    assert_true(zeros < 4 * len / 100);
    free(top);
    free(zero);
    fedc_free(masked0);
    for (uint32_t u = 0; u < 5; u++)
        fedc_secagg_client_destroy(c[u]);
    fedc_secagg_server_destroy(s);
}

/* A protocol driven by hand for the refusal tests: n = 6 clients, complete graph, t = 2. */
typedef struct hand {
    fedc_secagg_params p;
    fedc_secagg_server *s;
    fedc_secagg_client *c[6];
    uint32_t *x[6];
} hand;

static void hand_init(hand *h)
{
    fedc_err err;
    h->p = make_params(6, 5, 2, 33, 32);
    assert_int_equal(fedc_secagg_server_create(&h->p, &h->s, &err), FEDC_OK);
    for (uint32_t u = 0; u < 6; u++) {
        assert_int_equal(fedc_secagg_client_create(&h->p, u, &h->c[u], &err), FEDC_OK);
        h->x[u] = malloc(33 * sizeof(uint32_t));
        for (int i = 0; i < 33; i++)
            h->x[u][i] = (uint32_t)(u * 1000003u + (unsigned)i * 7919u);
    }
}

static void hand_fini(hand *h)
{
    for (uint32_t u = 0; u < 6; u++) {
        fedc_secagg_client_destroy(h->c[u]);
        free(h->x[u]);
    }
    fedc_secagg_server_destroy(h->s);
}

static void test_refusals(void **state)
{
    (void)state;
    hand h;
    hand_init(&h);
    fedc_err err;
    unsigned char *m[6], *in, *out;
    size_t ml[6], il, ol;

    /* stage 1: keys */
    for (uint32_t u = 0; u < 6; u++)
        assert_int_equal(fedc_secagg_client_advertise(h.c[u], &m[u], &ml[u], &err), FEDC_OK);
    assert_int_equal(fedc_secagg_client_advertise(h.c[0], &out, &ol, &err), FEDC_ERR_STATE);
    assert_int_equal(fedc_secagg_server_recv(h.s, 1, m[0], ml[0], &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "misrouted"));
    assert_int_equal(fedc_secagg_server_recv(h.s, 0, m[0], ml[0] - 1, &err), FEDC_ERR_FORMAT);
    assert_int_equal(fedc_secagg_server_recv(h.s, 9, m[0], ml[0], &err), FEDC_ERR_FORMAT);
    m[0][8] ^= 1; /* another round */
    assert_int_equal(fedc_secagg_server_recv(h.s, 0, m[0], ml[0], &err), FEDC_ERR_FORMAT);
    m[0][8] ^= 1;
    m[0][4] = FEDC_SECAGG_MASKED; /* wrong stage */
    assert_int_equal(fedc_secagg_server_recv(h.s, 0, m[0], ml[0], &err), FEDC_ERR_STATE);
    m[0][4] = FEDC_SECAGG_ADVERTISE;
    for (uint32_t u = 0; u < 6; u++) {
        assert_int_equal(fedc_secagg_server_recv(h.s, u, m[u], ml[u], &err), FEDC_OK);
        if (u == 0) /* duplicate */
            assert_int_equal(fedc_secagg_server_recv(h.s, 0, m[0], ml[0], &err), FEDC_ERR_STATE);
    }
    for (uint32_t u = 0; u < 6; u++)
        fedc_free(m[u]);
    assert_int_equal(fedc_secagg_server_close_stage(h.s, &err), FEDC_OK);

    /* stage 2: shares; a client called out of order is refused */
    assert_int_equal(fedc_secagg_client_masked(h.c[0], NULL, 0, h.x[0], &out, &ol, &err),
                     FEDC_ERR_STATE);
    for (uint32_t u = 0; u < 6; u++) {
        assert_int_equal(fedc_secagg_server_message(h.s, u, &in, &il, &err), FEDC_OK);
        assert_int_equal(fedc_secagg_client_share(h.c[u], in, il, &m[u], &ml[u], &err), FEDC_OK);
        fedc_free(in);
    }
    /* a share addressed to a non-neighbour (itself) is refused, the message unchanged */
    memcpy(m[1] + SA_HDR + 4, "\x01\0\0\0", 4);
    assert_int_equal(fedc_secagg_server_recv(h.s, 1, m[1], ml[1], &err), FEDC_ERR_FORMAT);
    memcpy(m[1] + SA_HDR + 4, "\0\0\0\0", 4);
    for (uint32_t u = 0; u < 6; u++) {
        assert_int_equal(fedc_secagg_server_recv(h.s, u, m[u], ml[u], &err), FEDC_OK);
        fedc_free(m[u]);
    }
    assert_int_equal(fedc_secagg_server_close_stage(h.s, &err), FEDC_OK);

    /* stage 3: client 0 gets a tampered share, client 1 a misrouted message, client 2 a
     * message re-addressed to it: each refuses and aborts; the others go on */
    assert_int_equal(fedc_secagg_server_message(h.s, 0, &in, &il, &err), FEDC_OK);
    in[il - 1] ^= 0x40;
    assert_int_equal(fedc_secagg_client_masked(h.c[0], in, il, h.x[0], &out, &ol, &err),
                     FEDC_ERR_CRYPTO);
    assert_int_equal(fedc_secagg_client_masked(h.c[0], in, il, h.x[0], &out, &ol, &err),
                     FEDC_ERR_STATE); /* aborted for good */
    fedc_free(in);
    assert_int_equal(fedc_secagg_server_message(h.s, 3, &in, &il, &err), FEDC_OK);
    assert_int_equal(fedc_secagg_client_masked(h.c[1], in, il, h.x[1], &out, &ol, &err),
                     FEDC_ERR_FORMAT);
    in[12] = 2; /* header now says client 2: the shares were encrypted for client 3 */
    /* the list names client 2 itself as a sender: refused before decryption, or by the AEAD */
    fedc_status st = fedc_secagg_client_masked(h.c[2], in, il, h.x[2], &out, &ol, &err);
    assert_true(st == FEDC_ERR_CRYPTO || st == FEDC_ERR_FORMAT);
    fedc_free(in);
    for (uint32_t u = 3; u < 6; u++) {
        assert_int_equal(fedc_secagg_server_message(h.s, u, &in, &il, &err), FEDC_OK);
        assert_int_equal(fedc_secagg_client_masked(h.c[u], in, il, h.x[u], &m[u], &ml[u], &err),
                         FEDC_OK);
        fedc_free(in);
        assert_int_equal(fedc_secagg_server_recv(h.s, u, m[u], ml[u], &err), FEDC_OK);
    }
    assert_int_equal(fedc_secagg_server_recv(h.s, 3, m[3], ml[3], &err), FEDC_ERR_STATE);
    assert_non_null(strstr(err.msg, "duplicate"));
    for (uint32_t u = 3; u < 6; u++)
        fedc_free(m[u]);
    assert_int_equal(fedc_secagg_server_close_stage(h.s, &err), FEDC_OK);
    /* a client that vanished may not come back */
    assert_int_equal(fedc_secagg_server_message(h.s, 0, &in, &il, &err), FEDC_ERR_STATE);

    /* stage 4: survivors 3, 4, 5; dropped after sharing 0, 1, 2 */
    for (uint32_t u = 3; u < 6; u++) {
        assert_int_equal(fedc_secagg_server_message(h.s, u, &in, &il, &err), FEDC_OK);
        assert_int_equal(fedc_secagg_client_unmask(h.c[u], in, il, &m[u], &ml[u], &err),
                         FEDC_OK);
        assert_int_equal(fedc_secagg_client_unmask(h.c[u], in, il, &out, &ol, &err),
                         FEDC_ERR_STATE); /* answers once */
        fedc_free(in);
    }
    /* client 3 tries to reveal the other kind for its first neighbour (client 0, dropped) */
    unsigned char *e = m[3] + SA_HDR + 4;
    assert_int_equal(sa_get32(e), 0);
    assert_int_equal(e[4], SA_KIND_S);
    e[4] = SA_KIND_B;
    assert_int_equal(fedc_secagg_server_recv(h.s, 3, m[3], ml[3], &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "never both"));
    e[4] = SA_KIND_S;
    for (uint32_t u = 3; u < 6; u++) {
        assert_int_equal(fedc_secagg_server_recv(h.s, u, m[u], ml[u], &err), FEDC_OK);
        fedc_free(m[u]);
    }
    assert_int_equal(fedc_secagg_server_close_stage(h.s, &err), FEDC_OK);
    const uint32_t *sum = fedc_secagg_server_sum(h.s);
    assert_non_null(sum);
    for (int i = 0; i < 33; i++)
        assert_int_equal(sum[i], h.x[3][i] + h.x[4][i] + h.x[5][i]);
    assert_int_equal(fedc_secagg_server_recv(h.s, 3, m[3], 0, &err), FEDC_ERR_STATE);
    hand_fini(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shamir),
        cmocka_unit_test(test_graph),
        cmocka_unit_test(test_exact_sum),
        cmocka_unit_test(test_below_threshold_aborts),
        cmocka_unit_test(test_masked_uniform),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
