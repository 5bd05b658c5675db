/*
 * Federated partitions: which samples each client owns, then each client's train/test split.
 *
 * Schemes (all seeded by the run seed, stream FEDC_RNG_PARTITION; all assign every sample to
 * exactly one client):
 * - iid: a random permutation cut into num_clients near-equal pieces.
 * - dirichlet (Hsu, Qi, Brown 2019; the NIID-Bench and Flower Datasets form): for each class in
 *   turn, its samples in random order are cut among the clients by proportions drawn from
 *   Dirichlet(alpha, ..., alpha); the whole draw is repeated until every client has at least
 *   min_size training samples (at most max_attempts draws). With min_size 0 the first draw
 *   stands, and clients may be empty (many clients, small alpha).
 * - shards (McMahan et al. 2017): a random permutation stably sorted by label, cut into
 *   num_clients * shards_per_client near-equal shards; each client gets shards_per_client
 *   shards chosen at random.
 * - natural: by the dataset's user ids, one client per user that has samples (in user-id
 *   order); with fewer clients than users, users are dealt to clients at random, near-equal
 *   numbers of users each.
 * - quantity: IID labels, client sizes proportional to LogNormal(0, sigma) weights on top of a
 *   floor giving every client min_size training samples (largest-remainder rounding).
 * Then client k's samples are shuffled with stream FEDC_RNG_SPLIT (seed, ANY, k) and the first
 * round(test_fraction * size) (at most size - 1) become its test set. Both lists are sorted.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"

struct fedc_partition {
    uint32_t num_clients;
    int32_t num_classes;
    size_t n;        /* samples */
    uint32_t *idx;   /* n: client 0 train, client 0 test, client 1 train, ... */
    size_t *off;     /* 2 * num_clients + 1 */
    uint32_t *counts; /* num_clients * 2 * num_classes */
};

static const char *const scheme_names[FEDC_PARTITION_SCHEME_COUNT_] = {
    [FEDC_PARTITION_IID] = "iid",
    [FEDC_PARTITION_DIRICHLET] = "dirichlet",
    [FEDC_PARTITION_SHARDS] = "shards",
    [FEDC_PARTITION_NATURAL] = "natural",
    [FEDC_PARTITION_QUANTITY] = "quantity",
};

const char *fedc_partition_scheme_name(fedc_partition_scheme scheme)
{
    if ((int)scheme < 0 || scheme >= FEDC_PARTITION_SCHEME_COUNT_) return "unknown";
    return scheme_names[scheme];
}

int fedc_partition_scheme_parse(const char *name, fedc_partition_scheme *out)
{
    for (int i = 0; i < FEDC_PARTITION_SCHEME_COUNT_; i++)
        if (strcmp(name, scheme_names[i]) == 0) {
            *out = (fedc_partition_scheme)i;
            return 0;
        }
    return -1;
}

void fedc_partition_opts_init(fedc_partition_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->scheme = FEDC_PARTITION_IID;
    opts->num_clients = 100;
    opts->seed = 0;
    opts->test_fraction = 0.1;
    opts->alpha = 0.5;
    opts->min_size = 10;
    opts->max_attempts = 100;
    opts->shards_per_client = 2;
    opts->sigma = 1.0;
}

/* Test samples of a client of `size` samples. */
static size_t test_count(size_t size, double f)
{
    if (size == 0) return 0;
    size_t t = (size_t)floor(f * (double)size + 0.5);
    return t > size - 1 ? size - 1 : t;
}

/* The smallest client size whose training part is at least m. */
static size_t size_for_train(size_t m, double f)
{
    if (m == 0) return 0;
    if (m > FEDC_DATA_MAX_SAMPLES) return SIZE_MAX; /* unreachable: callers report it */
    size_t s = m;
    while (s - test_count(s, f) < m) s++;
    return s;
}

/* ---- schemes: fill owner[i] with the client of sample i ---------------------------------- */

/* Cuts perm into pieces of the given sizes (summing to n) and records owners. */
static void deal(const uint32_t *perm, const size_t *sizes, uint32_t k, uint32_t *owner)
{
    size_t pos = 0;
    for (uint32_t c = 0; c < k; c++)
        for (size_t i = 0; i < sizes[c]; i++) owner[perm[pos++]] = c;
}

static fedc_status scheme_iid(const fedc_dataset *ds, uint32_t k, fedc_rng *rng, uint32_t *perm,
                              uint32_t *owner, fedc_err *err)
{
    fedc_rng_permutation(rng, perm, ds->n);
    for (uint32_t c = 0; c < k; c++) {
        size_t lo = (size_t)((uint64_t)c * ds->n / k), hi = (size_t)((uint64_t)(c + 1) * ds->n / k);
        for (size_t i = lo; i < hi; i++) owner[perm[i]] = c;
    }
    (void)err;
    return FEDC_OK;
}

static fedc_status scheme_quantity(const fedc_dataset *ds, const fedc_partition_opts *o,
                                   fedc_rng *rng, uint32_t *perm, uint32_t *owner, fedc_err *err)
{
    uint32_t k = o->num_clients;
    size_t floor_size = size_for_train(o->min_size, o->test_fraction);
    if (floor_size > ds->n / k)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "quantity partition: %zu samples cannot give %u clients %zu training "
                            "samples each (min_size)",
                            ds->n, k, o->min_size);
    double *w = fedc_malloc(k * sizeof *w);
    size_t *sizes = fedc_malloc(k * sizeof *sizes);
    if (!w || !sizes) {
        fedc_free(w);
        fedc_free(sizes);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
    }
    double sum = 0;
    for (uint32_t c = 0; c < k; c++) sum += (w[c] = fedc_rng_lognormal(rng, 0.0, o->sigma));
    size_t rest = ds->n - floor_size * k, given = 0;
    for (uint32_t c = 0; c < k; c++) {
        w[c] = w[c] / sum * (double)rest;
        sizes[c] = (size_t)floor(w[c]);
        given += sizes[c];
        w[c] -= (double)sizes[c]; /* remainder */
    }
    /* Largest remainders get the leftover samples (ties: lower client id). */
    while (given < rest) {
        uint32_t best = 0;
        for (uint32_t c = 1; c < k; c++)
            if (w[c] > w[best]) best = c;
        sizes[best]++;
        w[best] = -1;
        given++;
    }
    for (uint32_t c = 0; c < k; c++) sizes[c] += floor_size;
    fedc_rng_permutation(rng, perm, ds->n);
    deal(perm, sizes, k, owner);
    fedc_free(w);
    fedc_free(sizes);
    return FEDC_OK;
}

/* perm := a random permutation stably sorted by label; starts[c] = first position of class c. */
static fedc_status sort_by_label(const fedc_dataset *ds, fedc_rng *rng, uint32_t *perm,
                                 size_t *starts, fedc_err *err)
{
    size_t nc = (size_t)ds->num_classes;
    uint32_t *tmp = fedc_malloc((ds->n ? ds->n : 1) * sizeof *tmp);
    if (!tmp) return fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
    fedc_rng_permutation(rng, tmp, ds->n);
    memset(starts, 0, (nc + 1) * sizeof *starts);
    for (size_t i = 0; i < ds->n; i++) starts[ds->y[i] + 1]++;
    for (size_t c = 0; c < nc; c++) starts[c + 1] += starts[c];
    size_t *pos = fedc_malloc((nc ? nc : 1) * sizeof *pos);
    if (!pos) {
        fedc_free(tmp);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
    }
    memcpy(pos, starts, nc * sizeof *pos);
    for (size_t i = 0; i < ds->n; i++) perm[pos[ds->y[tmp[i]]]++] = tmp[i];
    fedc_free(pos);
    fedc_free(tmp);
    return FEDC_OK;
}

static fedc_status scheme_shards(const fedc_dataset *ds, const fedc_partition_opts *o,
                                 fedc_rng *rng, uint32_t *perm, uint32_t *owner, fedc_err *err)
{
    uint32_t k = o->num_clients;
    uint64_t shards = (uint64_t)k * o->shards_per_client;
    if (o->shards_per_client == 0)
        return fedc_err_set(err, FEDC_ERR_INVALID, "shards partition: shards_per_client is 0");
    if (shards > ds->n)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "shards partition: %llu shards (%u clients x %u) but only %zu samples",
                            (unsigned long long)shards, k, o->shards_per_client, ds->n);
    size_t *starts = fedc_malloc(((size_t)ds->num_classes + 1) * sizeof *starts);
    uint32_t *sp = fedc_malloc((size_t)shards * sizeof *sp);
    fedc_status st = starts && sp ? FEDC_OK : fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
    if (st == FEDC_OK) st = sort_by_label(ds, rng, perm, starts, err);
    if (st == FEDC_OK) {
        fedc_rng_permutation(rng, sp, (size_t)shards);
        for (uint64_t j = 0; j < shards; j++) {
            uint32_t client = (uint32_t)(j / o->shards_per_client);
            uint64_t s = sp[j];
            size_t lo = (size_t)(s * ds->n / shards), hi = (size_t)((s + 1) * ds->n / shards);
            for (size_t i = lo; i < hi; i++) owner[perm[i]] = client;
        }
    }
    fedc_free(starts);
    fedc_free(sp);
    return st;
}

static fedc_status scheme_dirichlet(const fedc_dataset *ds, const fedc_partition_opts *o,
                                    fedc_rng *rng, uint32_t *perm, uint32_t *owner, fedc_err *err)
{
    uint32_t k = o->num_clients;
    size_t nc = (size_t)ds->num_classes;
    size_t need = size_for_train(o->min_size, o->test_fraction);
    if (need > ds->n / k)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "dirichlet partition: %zu samples cannot give %u clients %zu training "
                            "samples each (min_size)",
                            ds->n, k, o->min_size);
    size_t *starts = fedc_malloc((nc + 1) * sizeof *starts);
    double *alpha = fedc_malloc(k * sizeof *alpha);
    double *p = fedc_malloc(k * sizeof *p);
    size_t *sizes = fedc_malloc(k * sizeof *sizes);
    fedc_status st = starts && alpha && p && sizes
                         ? FEDC_OK
                         : fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
    if (st == FEDC_OK) st = sort_by_label(ds, rng, perm, starts, err);
    for (uint32_t c = 0; st == FEDC_OK && c < k; c++) alpha[c] = o->alpha;
    uint32_t attempt = 0;
    size_t smallest = 0;
    while (st == FEDC_OK) {
        if (attempt == o->max_attempts) {
            st = fedc_err_set(err, FEDC_ERR_RANGE,
                              "dirichlet partition: after %u draws some client still had fewer "
                              "than %zu training samples (min_size; smallest client %zu samples); "
                              "lower min_size, raise alpha or use fewer clients",
                              attempt, o->min_size, smallest);
            break;
        }
        attempt++;
        memset(sizes, 0, k * sizeof *sizes);
        for (size_t cls = 0; cls < nc; cls++) {
            size_t lo = starts[cls], len = starts[cls + 1] - lo;
            /* The class's samples are already in random order (sort_by_label); each draw
             * re-shuffles them so that a redraw is a fresh split. */
            fedc_rng_shuffle_u32(rng, perm + lo, len);
            fedc_rng_dirichlet(rng, alpha, k, p);
            double cum = 0;
            size_t prev = 0;
            for (uint32_t c = 0; c < k; c++) {
                cum += p[c];
                size_t cut = c + 1 == k ? len : (size_t)floor(cum * (double)len);
                if (cut > len) cut = len;
                if (cut < prev) cut = prev;
                for (size_t i = prev; i < cut; i++) owner[perm[lo + i]] = c;
                sizes[c] += cut - prev;
                prev = cut;
            }
        }
        smallest = sizes[0];
        for (uint32_t c = 1; c < k; c++)
            if (sizes[c] < smallest) smallest = sizes[c];
        if (smallest >= need) break; /* min_size 0: clients may be empty */
    }
    fedc_free(starts);
    fedc_free(alpha);
    fedc_free(p);
    fedc_free(sizes);
    return st;
}

/* The users with at least one sample in ds: returns their count and lists them in id order in
 * list (may be NULL). seen: num_users bytes of scratch. */
static size_t present_users(const fedc_dataset *ds, uint32_t *list, uint8_t *seen)
{
    memset(seen, 0, ds->num_users);
    for (size_t i = 0; i < ds->n; i++) seen[ds->user_ids[i]] = 1;
    size_t m = 0;
    for (size_t u = 0; u < ds->num_users; u++)
        if (seen[u]) {
            if (list) list[m] = (uint32_t)u;
            m++;
        }
    return m;
}

/* Clients are the users that have samples in ds (a LEAF test file may name users the training
 * file lacks), in user-id order; with fewer clients, users are dealt at random. */
static fedc_status scheme_natural(const fedc_dataset *ds, uint32_t k, fedc_rng *rng,
                                  uint32_t *owner, fedc_err *err)
{
    size_t nu = ds->num_users;
    uint32_t *client_of = fedc_malloc(nu * sizeof *client_of);
    uint32_t *users = fedc_malloc(nu * sizeof *users);
    uint8_t *seen = fedc_malloc(nu);
    if (!client_of || !users || !seen) {
        fedc_free(client_of);
        fedc_free(users);
        fedc_free(seen);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
    }
    size_t m = present_users(ds, users, seen);
    assert(k <= m);
    if (k < m) fedc_rng_shuffle_u32(rng, users, m);
    for (uint32_t c = 0; c < k; c++) {
        size_t lo = (size_t)((uint64_t)c * m / k), hi = (size_t)((uint64_t)(c + 1) * m / k);
        for (size_t i = lo; i < hi; i++) client_of[users[i]] = c;
    }
    for (size_t i = 0; i < ds->n; i++) owner[i] = client_of[ds->user_ids[i]];
    fedc_free(client_of);
    fedc_free(users);
    fedc_free(seen);
    return FEDC_OK;
}

/* ---- building the partition ------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static fedc_status check_opts(const fedc_dataset *ds, const fedc_partition_opts *o, uint32_t *k,
                              fedc_err *err)
{
    *k = o->num_clients;
    if ((int)o->scheme < 0 || o->scheme >= FEDC_PARTITION_SCHEME_COUNT_)
        return fedc_err_set(err, FEDC_ERR_INVALID, "partition: unknown scheme %d", (int)o->scheme);
    if (!(o->test_fraction >= 0 && o->test_fraction < 1))
        return fedc_err_set(err, FEDC_ERR_INVALID, "partition: test_fraction %g not in [0, 1)",
                            o->test_fraction);
    if (o->scheme == FEDC_PARTITION_NATURAL) {
        if (!ds->user_ids)
            return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                                "natural partition: dataset %s has no user ids (LEAF and synthetic "
                                "datasets have them)",
                                ds->name);
        uint8_t *seen = fedc_malloc(ds->num_users);
        if (!seen) return fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
        size_t m = present_users(ds, NULL, seen);
        fedc_free(seen);
        if (*k == 0) *k = (uint32_t)m;
        if (*k > m)
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "natural partition: %u clients but dataset %s has only %zu users "
                                "with samples",
                                *k, ds->name, m);
    }
    if (*k == 0) return fedc_err_set(err, FEDC_ERR_INVALID, "partition: 0 clients");
    if (*k > ds->n)
        return fedc_err_set(err, FEDC_ERR_INVALID, "partition: %u clients but only %zu samples", *k,
                            ds->n);
    if (o->scheme == FEDC_PARTITION_DIRICHLET && !(o->alpha > 0 && isfinite(o->alpha)))
        return fedc_err_set(err, FEDC_ERR_INVALID, "dirichlet partition: alpha %g must be > 0",
                            o->alpha);
    if (o->scheme == FEDC_PARTITION_DIRICHLET && o->max_attempts == 0)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dirichlet partition: max_attempts is 0");
    if (o->scheme == FEDC_PARTITION_QUANTITY && !(o->sigma >= 0 && o->sigma <= 20))
        return fedc_err_set(err, FEDC_ERR_INVALID, "quantity partition: sigma %g not in [0, 20]",
                            o->sigma);
    return FEDC_OK;
}

fedc_status fedc_partition_create(const fedc_dataset *ds, const fedc_partition_opts *opts,
                                  fedc_partition **out, fedc_err *err)
{
    assert(ds && opts && out);
    *out = NULL;
    uint32_t k;
    FEDC_TRY(check_opts(ds, opts, &k, err));
    size_t n = ds->n, nc = (size_t)ds->num_classes;
    fedc_partition *p = fedc_calloc(1, sizeof *p);
    uint32_t *owner = fedc_malloc(n * sizeof *owner);
    uint32_t *perm = fedc_malloc(n * sizeof *perm);
    fedc_status st = FEDC_OK;
    if (p) {
        p->num_clients = k;
        p->num_classes = ds->num_classes;
        p->n = n;
        p->idx = fedc_malloc(n * sizeof *p->idx);
        p->off = fedc_calloc(2 * (size_t)k + 1, sizeof *p->off);
        p->counts = fedc_calloc((size_t)k * 2 * nc, sizeof *p->counts);
    }
    if (!p || !owner || !perm || !p->idx || !p->off || !p->counts)
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory for %zu samples", n);

    fedc_rng rng;
    fedc_rng_init(&rng, opts->seed, FEDC_RNG_ANY, FEDC_RNG_ANY, FEDC_RNG_PARTITION);
    if (st == FEDC_OK) {
        for (size_t i = 0; i < n; i++) owner[i] = UINT32_MAX;
        switch (opts->scheme) {
        case FEDC_PARTITION_IID: st = scheme_iid(ds, k, &rng, perm, owner, err); break;
        case FEDC_PARTITION_DIRICHLET: st = scheme_dirichlet(ds, opts, &rng, perm, owner, err); break;
        case FEDC_PARTITION_SHARDS: st = scheme_shards(ds, opts, &rng, perm, owner, err); break;
        case FEDC_PARTITION_NATURAL: st = scheme_natural(ds, k, &rng, owner, err); break;
        case FEDC_PARTITION_QUANTITY: st = scheme_quantity(ds, opts, &rng, perm, owner, err); break;
        default: st = fedc_err_set(err, FEDC_ERR_INVALID, "partition: unknown scheme"); break;
        }
    }
    if (st == FEDC_OK) {
        /* Counting sort by owner: client c's samples, ascending, at p->idx[start[c]..]. */
        size_t *start = p->off; /* reuse: off[2c] = start of client c for now */
        size_t *sizes = fedc_calloc(k, sizeof *sizes);
        if (!sizes) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "partition: out of memory");
        } else {
            for (size_t i = 0; i < n; i++) {
                assert(owner[i] < k && "every sample must be assigned");
                sizes[owner[i]]++;
            }
            size_t pos = 0;
            for (uint32_t c = 0; c < k; c++) {
                start[2 * c] = pos;
                pos += sizes[c];
            }
            start[2 * (size_t)k] = n;
            memset(sizes, 0, k * sizeof *sizes);
            for (size_t i = 0; i < n; i++) {
                uint32_t c = owner[i];
                p->idx[start[2 * c] + sizes[c]++] = (uint32_t)i;
            }
            /* Per client: shuffle with its split stream, test first, then sort both parts
             * and store train first. */
            for (uint32_t c = 0; c < k; c++) {
                size_t lo = start[2 * c], m = sizes[c];
                uint32_t *v = p->idx + lo;
                size_t t = test_count(m, opts->test_fraction);
                if (t > 0) {
                    fedc_rng srng;
                    fedc_rng_init(&srng, opts->seed, FEDC_RNG_ANY, c, FEDC_RNG_SPLIT);
                    fedc_rng_shuffle_u32(&srng, v, m);
                    /* v[0..t) test, v[t..m) train -> rotate into train then test */
                    memcpy(perm, v, t * sizeof *v);
                    memmove(v, v + t, (m - t) * sizeof *v);
                    memcpy(v + (m - t), perm, t * sizeof *v);
                    qsort(v, m - t, sizeof *v, cmp_u32);
                    qsort(v + (m - t), t, sizeof *v, cmp_u32);
                }
                p->off[2 * c + 1] = lo + (m - t);
                for (int s = 0; s < 2; s++) {
                    uint32_t *cnt = p->counts + ((size_t)c * 2 + (size_t)s) * nc;
                    size_t a = s == 0 ? lo : lo + (m - t), b = s == 0 ? lo + (m - t) : lo + m;
                    for (size_t i = a; i < b; i++) cnt[ds->y[p->idx[i]]]++;
                }
            }
            fedc_free(sizes);
        }
    }
    fedc_free(owner);
    fedc_free(perm);
    if (st != FEDC_OK) {
        fedc_partition_destroy(p);
        return st;
    }
    *out = p;
    return FEDC_OK;
}

void fedc_partition_destroy(fedc_partition *p)
{
    if (!p) return;
    fedc_free(p->idx);
    fedc_free(p->off);
    fedc_free(p->counts);
    fedc_free(p);
}

uint32_t fedc_partition_num_clients(const fedc_partition *p) { return p->num_clients; }
int32_t fedc_partition_num_classes(const fedc_partition *p) { return p->num_classes; }

const uint32_t *fedc_partition_indices(const fedc_partition *p, uint32_t k, fedc_split split,
                                       size_t *n)
{
    assert(k < p->num_clients && (split == FEDC_SPLIT_TRAIN || split == FEDC_SPLIT_TEST));
    size_t a = p->off[2 * (size_t)k + (size_t)split], b = p->off[2 * (size_t)k + (size_t)split + 1];
    if (n) *n = b - a;
    return p->idx + a;
}

size_t fedc_partition_size(const fedc_partition *p, uint32_t k, fedc_split split)
{
    size_t n;
    fedc_partition_indices(p, k, split, &n);
    return n;
}

const uint32_t *fedc_partition_label_counts(const fedc_partition *p, uint32_t k,
                                            fedc_split split)
{
    assert(k < p->num_clients && (split == FEDC_SPLIT_TRAIN || split == FEDC_SPLIT_TEST));
    return p->counts + ((size_t)k * 2 + (size_t)split) * (size_t)p->num_classes;
}

void fedc_partition_get_stats(const fedc_partition *p, fedc_partition_stats *out)
{
    memset(out, 0, sizeof *out);
    size_t nc = (size_t)p->num_classes, k = p->num_clients;
    double *global = fedc_calloc(nc ? nc : 1, sizeof *global);
    double sum = 0, sum2 = 0, classes = 0, tv = 0;
    out->min_size = SIZE_MAX;
    for (size_t c = 0; c < k; c++) {
        const uint32_t *tr = p->counts + c * 2 * nc, *te = tr + nc;
        for (size_t j = 0; j < nc; j++)
            if (global) global[j] += tr[j] + te[j];
    }
    for (size_t c = 0; c < k; c++) {
        const uint32_t *tr = p->counts + c * 2 * nc, *te = tr + nc;
        size_t size = p->off[2 * c + 2] - p->off[2 * c];
        sum += (double)size;
        sum2 += (double)size * (double)size;
        if (size < out->min_size) out->min_size = size;
        if (size > out->max_size) out->max_size = size;
        double d = 0;
        for (size_t j = 0; j < nc; j++) {
            uint32_t m = tr[j] + te[j];
            if (m) classes += 1;
            if (global && size) d += fabs((double)m / (double)size - global[j] / (double)p->n);
        }
        tv += 0.5 * d;
    }
    out->mean_size = sum / (double)k;
    double var = sum2 / (double)k - out->mean_size * out->mean_size;
    out->std_size = var > 0 ? sqrt(var) : 0;
    out->mean_classes = classes / (double)k;
    out->mean_tv = tv / (double)k;
    fedc_free(global);
}
