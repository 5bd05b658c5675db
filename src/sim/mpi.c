/*
 * The MPI transport (include/fedc/mpi.h, docs/SCALING.md): one federation over R ranks, each
 * running the same round engine on the same data, each training its share of every round's
 * clients with its own worker threads; the shares' partial aggregates meet in collectives.
 *
 * One round, on every rank:
 *   fedc_engine_round_begin          the same clients everywhere (seeded selection)
 *   compress.download                every rank encodes and decodes the model alike
 *   fedc_mpi_assign                  this rank's share, balanced by example counts (SCAFFOLD,
 *                                    error feedback: each client has a fixed home rank, where
 *                                    its c_i or residual lives)
 *   worker threads                   the client step (fit, DP, compression) + submit: this
 *                                    rank's partial aggregate
 *   MPI_Barrier                      (timed apart: waiting for the slowest rank)
 *   MPI_Allreduce(int64, SUM)        failure flag, upload bytes, engine counters, per-rank
 *                                    counts, central DP's exact sum and adaptive count, and the
 *                                    strategy's partial sums (linear: the exact P-word sum)
 *   DP: MPI_Allgatherv               every result's charge (replayed on the other ranks: the
 *                                    privacy accounts stay the same everywhere) and central
 *                                    DP's per-client statistics; the noise is drawn once, at
 *                                    rank 0, inside round_end, and broadcast (release_bcast)
 *   linear: MPI_Allgatherv records   then every rank installs the combined partial and runs
 *                                    fedc_engine_round_end: identical inputs, identical code,
 *                                    identical model (checked below by a digest)
 *   robust: MPI_Gatherv records and held updates to rank 0, which runs the round, then
 *           MPI_Bcast of its outcome and of the new model; the others adopt it
 *   evaluation                       central on rank 0; federated split over the ranks, results
 *                                    summed to rank 0 in client order (MPI_Reduce of values
 *                                    each owned by one rank: exact)
 *   MPI_Allreduce(int64, MAX)        the verdict: any failure, rank 0's stop, model digests
 * Errors on any rank travel in the next collective, so all ranks stop together and rank 0
 * reports which rank failed and why (fedc_mpi_agree). A rank that dies is caught by mpirun,
 * which ends the others.
 *
 * Each rank trains its share with the worker pool of fedc_sim_run (src/sim/worker.c): the same
 * per-client step (DP's client step, compression with error feedback, SCAFFOLD); only the list
 * of clients differs.
 */
#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fedc/alloc.h"
#include "fedc/config_build.h"
#include "fedc/log.h"
#include "fedc/mpi.h"
#include "fedc/strategy.h"
#include "sim/checkpoint.h"
#include "sim/worker.h"

#if FEDC_HAVE_MPI
#include <mpi.h>
#endif

static const char install_hint[] =
    "this fedc was built without MPI. Install OpenMPI (Debian/Ubuntu: apt-get install "
    "libopenmpi-dev openmpi-bin), then configure and build fedc again: cmake finds MPI by "
    "itself (sanitizer builds never use it); `fedc version` shows whether a build has it";

int fedc_mpi_available(void)
{
    return FEDC_HAVE_MPI;
}

const char *fedc_mpi_install_hint(void)
{
    return install_hint;
}

int fedc_mpi_launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

/* ---- assignment of clients to ranks (works without MPI) ---- */

typedef struct cost_item {
    uint64_t cost;
    size_t idx;
} cost_item;

static int cost_cmp(const void *a, const void *b)
{
    const cost_item *x = a, *y = b;
    if (x->cost != y->cost) return x->cost > y->cost ? -1 : 1; /* decreasing cost */
    return (x->idx > y->idx) - (x->idx < y->idx);              /* then by index */
}

/* The ranks as a binary min-heap ordered by (load, rank): the least loaded at the top, the
 * lowest rank first on ties. */
static int heap_less(const uint64_t *load, int a, int b)
{
    return load[a] < load[b] || (load[a] == load[b] && a < b);
}

static void heap_down(int *heap, int size, const uint64_t *load, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < size && heap_less(load, heap[l], heap[m])) m = l;
        if (r < size && heap_less(load, heap[r], heap[m])) m = r;
        if (m == i) return;
        int t = heap[i];
        heap[i] = heap[m];
        heap[m] = t;
        i = m;
    }
}

fedc_status fedc_mpi_assign(size_t n, const uint64_t *cost, int ranks, int *owner,
                            uint64_t *load, fedc_err *err)
{
    assert((cost && owner) || n == 0);
    assert(ranks >= 1);
    uint64_t *ld = fedc_calloc((size_t)ranks, sizeof *ld);
    int *heap = fedc_malloc((size_t)ranks * sizeof *heap);
    cost_item *items = fedc_malloc((n ? n : 1) * sizeof *items);
    if (!ld || !heap || !items) {
        fedc_free(ld);
        fedc_free(heap);
        fedc_free(items);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "assigning %zu clients to %d ranks", n, ranks);
    }
    for (size_t i = 0; i < n; i++) items[i] = (cost_item){cost[i], i};
    qsort(items, n, sizeof *items, cost_cmp);
    for (int r = 0; r < ranks; r++) heap[r] = r; /* all loads 0: already a heap */
    for (size_t i = 0; i < n; i++) {
        int best = heap[0];
        owner[items[i].idx] = best;
        ld[best] += items[i].cost;
        heap_down(heap, ranks, ld, 0);
    }
    if (load) memcpy(load, ld, (size_t)ranks * sizeof *ld);
    fedc_free(ld);
    fedc_free(heap);
    fedc_free(items);
    return FEDC_OK;
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

#if !FEDC_HAVE_MPI

/* ---- without MPI: every entry point says how to get it ---- */

fedc_status fedc_mpi_init(fedc_err *err)
{
    return fedc_err_set(err, FEDC_ERR_UNSUPPORTED, "%s", install_hint);
}

int fedc_mpi_rank(void)
{
    return 0;
}

int fedc_mpi_size(void)
{
    return 1;
}

int fedc_mpi_default_threads(void)
{
    return online_cores();
}

void fedc_mpi_finalize(void)
{
}

void fedc_mpi_abort(int code)
{
    (void)code;
}

fedc_status fedc_mpi_agree(fedc_status local, const fedc_err *local_err, fedc_err *err)
{
    if (err && local != FEDC_OK) {
        if (local_err)
            *err = *local_err;
        else
            fedc_err_set(err, local, "%s", fedc_strerror(local));
    }
    return local;
}

fedc_status fedc_mpi_run(fedc_engine *engine, const fedc_trainer *trainer, const fedc_config *cfg,
                         const fedc_sim_opts *opts, fedc_mpi_stats *stats, fedc_err *err)
{
    (void)engine;
    (void)trainer;
    (void)cfg;
    (void)opts;
    if (stats) memset(stats, 0, sizeof *stats);
    return fedc_err_set(err, FEDC_ERR_UNSUPPORTED, "%s", install_hint);
}

#else /* FEDC_HAVE_MPI */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- process-wide MPI state ---- */

static int g_inited;      /* fedc_mpi_init succeeded */
static int g_started;     /* ... and called MPI_Init_thread itself */
static int g_rank, g_size = 1, g_node_size = 1;
static MPI_Comm g_comm = MPI_COMM_NULL; /* a duplicate of MPI_COMM_WORLD returning errors */

static fedc_status mpi_error(int rc, const char *what, uint32_t round, fedc_err *err)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", rc);
    return fedc_err_set(err, FEDC_ERR_NETWORK,
                        "MPI: %s failed on rank %d of %d (round %u): %s; did another rank die? "
                        "mpirun's message names it",
                        what, g_rank, g_size, round, msg);
}

fedc_status fedc_mpi_init(fedc_err *err)
{
    if (g_inited) return FEDC_OK;
    int flag = 0, rc;
    MPI_Initialized(&flag);
    if (!flag) {
        int provided = 0;
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Init_thread", 0, err);
        g_started = 1;
        if (provided < MPI_THREAD_FUNNELED)
            fedc_log(FEDC_LOG_WARN, "mpi",
                     "MPI provides thread level %d, below MPI_THREAD_FUNNELED: fedc calls MPI "
                     "from one thread only, which works with every common MPI",
                     provided);
    }
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &g_comm)) != MPI_SUCCESS)
        return mpi_error(rc, "MPI_Comm_dup", 0, err);
    MPI_Comm_set_errhandler(g_comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g_comm, &g_rank);
    MPI_Comm_size(g_comm, &g_size);
    MPI_Comm node;
    if (MPI_Comm_split_type(g_comm, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &g_node_size);
        MPI_Comm_free(&node);
    }
    g_inited = 1;
    fedc_log(FEDC_LOG_DEBUG, "mpi", "rank %d of %d (%d on this node)", g_rank, g_size,
             g_node_size);
    return FEDC_OK;
}

int fedc_mpi_rank(void)
{
    return g_inited ? g_rank : 0;
}

int fedc_mpi_size(void)
{
    return g_inited ? g_size : 1;
}

int fedc_mpi_default_threads(void)
{
    int t = online_cores() / (g_inited && g_node_size > 0 ? g_node_size : 1);
    return t > 0 ? t : 1;
}

void fedc_mpi_finalize(void)
{
    if (!g_inited) return;
    MPI_Comm_free(&g_comm);
    g_inited = 0;
    if (g_started) {
        int done = 0;
        MPI_Finalized(&done);
        if (!done) MPI_Finalize();
    }
}

void fedc_mpi_abort(int code)
{
    int flag = 0;
    MPI_Initialized(&flag);
    if (flag) MPI_Abort(MPI_COMM_WORLD, code);
}

fedc_status fedc_mpi_agree(fedc_status local, const fedc_err *local_err, fedc_err *err)
{
    fedc_err mine;
    fedc_err_clear(&mine);
    if (local != FEDC_OK) {
        if (local_err && local_err->code != FEDC_OK)
            mine = *local_err;
        else
            fedc_err_set(&mine, local, "%s", fedc_strerror(local));
        mine.code = local;
    }
    if (!g_inited) {
        if (err && local != FEDC_OK) *err = mine;
        return local;
    }
    /* No buffer grows with the number of ranks: the lowest failing rank speaks for all. */
    int first = local != FEDC_OK ? g_rank : INT_MAX, nfailed = local != FEDC_OK, rc;
    if ((rc = MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, g_comm)) != MPI_SUCCESS)
        return mpi_error(rc, "MPI_Allreduce (agreement)", 0, err);
    if (first == INT_MAX) return FEDC_OK;
    rc = MPI_Allreduce(MPI_IN_PLACE, &nfailed, 1, MPI_INT, MPI_SUM, g_comm);
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(&mine, (int)sizeof mine, MPI_BYTE, first, g_comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "agreement", 0, err);
    if (first == 0)
        fedc_err_set(err, mine.code, "%s", mine.msg);
    else if (nfailed == 1)
        fedc_err_set(err, mine.code, "rank %d: %s", first, mine.msg);
    else
        fedc_err_set(err, mine.code, "rank %d: %s (%d ranks failed)", first, mine.msg, nfailed);
    return mine.code;
}

/* ---- the run ---- */


/* Header words of the round's sum: failure count, encoded upload bytes (compression), engine
 * counters, then per rank three counts: strategy records, central DP's statistics, submitted
 * results (DP's per-client charges). The DP run's partial, then the strategy's partial sums
 * follow. */
#define H_FAIL 0
#define H_UPBYTES 1
#define H_COUNTERS 2
#define H_COUNTS (H_COUNTERS + FEDC_ENGINE_COUNTERS)
#define H_DPCOUNTS(size) (H_COUNTS + (size))
#define H_SUBCOUNTS(size) (H_COUNTS + 2 * (size))

/* The verdict (MAX over ranks): any failure, rank 0 stops, the model digest and its negation
 * (equal maxima of d and -d mean every rank has the same d). */
enum { V_FAIL, V_STOP, V_DIGEST, V_NDIGEST, V_WORDS };

typedef struct mpi_run {
    fedc_engine *engine;
    fedc_strategy *strategy;
    const fedc_trainer *trainer;
    const fedc_config *cfg;
    size_t n;          /* parameters */
    uint32_t num_clients, per_round;
    int rank, size, linear;
    fedci_pool pool;        /* workers, per-client state, codecs (src/sim/worker.c) */
    int *home;              /* clients with state (SCAFFOLD, error feedback): home ranks */
    MPI_Datatype update_type; /* n contiguous floats */
    int have_type;

    uint32_t round;
    size_t nmine;      /* this rank's clients of the current job (in mine) */

    /* round buffers, sized once */
    uint64_t *cost;    /* per selected client (and per federated-evaluation client) */
    int *owner;
    uint32_t *mine;    /* this rank's clients of the job */
    uint64_t *load;    /* size entries */
    size_t hdr, dp_len, sums_len; /* header, DP partial and strategy sums words */
    int64_t *sums;     /* hdr + dp_len + sums_len */
    fedc_dp_run *dp;   /* the engine's DP run, NULL without DP */
    unsigned char *dpbuf; /* central DP's statistics, per_round records */
    fedci_submission *subbuf; /* every rank's submitted results (DP charges), per_round */
    unsigned char *recbuf;
    int *counts, *displs; /* size entries */
    float *model;         /* robust: the broadcast model */
    /* federated evaluation */
    size_t *eval_pos;     /* where this rank's clients sit in the job's list (evaluation results) */
    fedc_eval_out *eval_out;
    fedc_status *eval_status;
    double *eval_buf;     /* 4 per client: loss, accuracy, examples, status */
    size_t eval_cap;      /* federated-evaluation clients per round */

    fedc_mpi_stats stats;
} mpi_run;

/* Trains this rank's share of the round (run->mine) with the pool; a fatal error names the
 * rank. */
static fedc_status rank_fit(mpi_run *run, fedc_err *err)
{
    fedc_status st = fedci_pool_fit(&run->pool, run->mine, run->nmine, err);
    if (st != FEDC_OK) fedc_err_prefix(err, "rank %d: ", run->rank);
    return st;
}

static uint64_t client_cost(const mpi_run *run, uint32_t client)
{
    const fedc_trainer_ops *ops = run->trainer->ops;
    uint64_t c = ops->num_examples ? ops->num_examples(run->trainer->shared, client) : 0;
    return c + 1; /* + 1: a client with no data still costs a task */
}

/* This rank's share of `ids` (n clients) into run->mine / run->nmine, by cost (or by home rank
 * when homes are given); *imbalance (may be NULL) gets max load / mean load. */
static fedc_status share(mpi_run *run, const uint32_t *ids, size_t n, const int *home,
                         double *imbalance, fedc_err *err)
{
    for (size_t i = 0; i < n; i++) run->cost[i] = client_cost(run, ids[i]);
    if (home) {
        memset(run->load, 0, (size_t)run->size * sizeof *run->load);
        for (size_t i = 0; i < n; i++) {
            run->owner[i] = home[ids[i]];
            run->load[run->owner[i]] += run->cost[i];
        }
    } else {
        FEDC_TRY(fedc_mpi_assign(n, run->cost, run->size, run->owner, run->load, err));
    }
    run->nmine = 0;
    for (size_t i = 0; i < n; i++)
        if (run->owner[i] == run->rank) {
            run->eval_pos[run->nmine] = i;
            run->mine[run->nmine++] = ids[i];
        }
    if (imbalance) {
        uint64_t total = 0, max = 0;
        for (int r = 0; r < run->size; r++) {
            total += run->load[r];
            if (run->load[r] > max) max = run->load[r];
        }
        *imbalance = total ? (double)max * run->size / (double)total : 1.0;
    }
    return FEDC_OK;
}

/* Element-wise int64 sum over ranks, in place, in pieces that fit an int count. */
static fedc_status allreduce_i64(mpi_run *run, int64_t *buf, size_t len, MPI_Op op,
                                 fedc_err *err)
{
    const size_t piece = (size_t)1 << 28;
    for (size_t off = 0; off < len; off += piece) {
        size_t m = len - off < piece ? len - off : piece;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)m, MPI_INT64_T, op, g_comm);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Allreduce", run->round, err);
    }
    run->stats.comm_bytes += len * sizeof *buf;
    return FEDC_OK;
}

/* FNV-1a over the model's bits: cheap, and equal iff the models are (for our purpose). */
static int64_t model_digest(const float *x, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        h = (h ^ b) * 0x100000001b3ull;
    }
    return (int64_t)(h >> 1); /* 63 bits: its negation cannot overflow */
}

/* Compression: the record's bytes as encoded (the single process's sim.c does the same). */
static void round_bytes(const mpi_run *run, const int64_t *h, fedc_round_record *rec)
{
    if (run->pool.down) rec->bytes_down = (uint64_t)rec->selected * run->pool.down_bytes;
    if (run->pool.workers[0].up) rec->bytes_up = (uint64_t)h[H_UPBYTES];
}

/* Gathers `count[r]` fixed-size items of every rank into buf (all ranks), in rank order; mine
 * are already at their place. */
static fedc_status allgather_items(mpi_run *run, const int64_t *count, size_t item, void *buf,
                                   const char *what, size_t *total, fedc_err *err)
{
    int bc[run->size], bd[run->size];
    size_t t = 0;
    for (int r = 0; r < run->size; r++) {
        bc[r] = (int)((size_t)count[r] * item);
        bd[r] = (int)(t * item);
        t += (size_t)count[r];
    }
    *total = t;
    if (t > run->per_round)
        return fedc_err_set(err, FEDC_ERR_INTERNAL, "round %u: %zu %s for %u clients", run->round,
                            t, what, run->per_round);
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, bc, bd, MPI_BYTE, g_comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Allgatherv", run->round, err);
    run->stats.comm_bytes += (size_t)count[run->rank] * item;
    return FEDC_OK;
}

/* DP: combines the round's DP side on every rank (after the allreduce of h): every result's
 * charge to its client's privacy account is replayed on the ranks that did not train it, and
 * central DP's exact sum, adaptive count and statistics are installed. The noise is drawn once,
 * at rank 0, inside fedc_engine_round_end (the release hook below). *end gets a failure of
 * the combination (the same on every rank); the return value is an MPI failure. */
static fedc_status combine_dp(mpi_run *run, const int64_t *h, fedc_status *end,
                              fedc_err *end_err, fedc_err *err)
{
    double t0 = now_seconds();
    const int64_t *subs = h + H_SUBCOUNTS(run->size), *stats = h + H_DPCOUNTS(run->size);
    size_t before = 0, total = 0;
    for (int r = 0; r < run->rank; r++) before += (size_t)subs[r];
    size_t mine = (size_t)subs[run->rank];
    if (before + mine <= run->per_round && mine)
        memmove(run->subbuf + before, run->pool.subs, mine * sizeof *run->subbuf);
    FEDC_TRY(allgather_items(run, subs, sizeof *run->subbuf, run->subbuf, "results", &total, err));
    size_t sbefore = 0, stotal = 0;
    for (int r = 0; r < run->rank; r++) sbefore += (size_t)stats[r];
    size_t smine = (size_t)stats[run->rank];
    if (smine && sbefore + smine <= run->per_round)
        fedc_engine_dp_stats(run->engine, run->dpbuf + sbefore * FEDC_ENGINE_DP_STAT_BYTES);
    FEDC_TRY(allgather_items(run, stats, FEDC_ENGINE_DP_STAT_BYTES, run->dpbuf, "DP records",
                             &stotal, err));
    run->stats.comm_seconds += now_seconds() - t0;
    *end = FEDC_OK;
    for (size_t i = 0; i < total && *end == FEDC_OK; i++) {
        if (i >= before && i < before + mine) continue; /* charged here, on submission */
        const fedci_submission *sb = &run->subbuf[i];
        *end = fedc_dp_run_charge(run->dp, sb->client, sb->num_examples, sb->steps, end_err);
    }
    if (*end == FEDC_OK) *end = fedc_dp_run_partial_set(run->dp, h + run->hdr, end_err);
    if (*end == FEDC_OK) *end = fedc_engine_dp_stats_set(run->engine, run->dpbuf, stotal, end_err);
    return FEDC_OK;
}

/* The DP release hook (fedc_dp_run_set_release_hook): rank 0 drew the noise; everyone takes
 * its noised mean and adaptive clip. */
static fedc_status release_bcast(void *user, float *mean, size_t n, double shared[2],
                                 fedc_err *err)
{
    mpi_run *run = user;
    double t0 = now_seconds();
    int rc = MPI_Bcast(mean, 1, run->update_type, 0, g_comm);
    if (rc == MPI_SUCCESS) rc = MPI_Bcast(shared, 2, MPI_DOUBLE, 0, g_comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Bcast (DP noised mean)", run->round, err);
    run->stats.comm_seconds += now_seconds() - t0;
    run->stats.comm_bytes += run->rank == 0 ? n * sizeof(float) + 2 * sizeof(double) : 0;
    return FEDC_OK;
}

/* Combines the round's partials and finishes the round (linear: on every rank; robust: on rank
 * 0, then everyone adopts its model). *end gets fedc_engine_round_end's status (OK, ABORTED
 * or a failure, with its message in end_err); the return value is an MPI failure (which ends
 * the run at once) or FEDC_OK. *failed is set when some rank failed before combining. */
static fedc_status combine(mpi_run *run, int local_failed, fedc_round_record *rec,
                           fedc_status *end, fedc_err *end_err, int *failed, fedc_err *err)
{
    int64_t *h = run->sums;
    const size_t words = run->hdr + run->dp_len + run->sums_len;
    memset(h, 0, words * sizeof *h);
    size_t mycount = 0;
    h[H_FAIL] = local_failed;
    if (!local_failed) {
        fedc_engine_round_counters(run->engine, h + H_COUNTERS);
        h[H_UPBYTES] = (int64_t)atomic_load(&run->pool.up_bytes);
        mycount = fedc_strategy_partial_count(run->strategy);
        h[H_COUNTS + run->rank] = (int64_t)mycount;
        fedc_strategy_partial_sums(run->strategy, h + run->hdr + run->dp_len);
        if (run->dp) {
            h[H_DPCOUNTS(run->size) + run->rank] = (int64_t)fedc_engine_dp_stats_count(run->engine);
            h[H_SUBCOUNTS(run->size) + run->rank] = (int64_t)atomic_load(&run->pool.nsubs);
            fedc_dp_run_partial(run->dp, h + run->hdr);
        }
    }
    double t0 = now_seconds();
    FEDC_TRY(allreduce_i64(run, h, words, MPI_SUM, err));
    run->stats.comm_seconds += now_seconds() - t0;
    *failed = h[H_FAIL] > 0;
    *end = FEDC_ERR_ABORTED;
    if (*failed) return FEDC_OK;

    size_t total = 0;
    for (int r = 0; r < run->size; r++) {
        run->counts[r] = (int)h[H_COUNTS + r];
        run->displs[r] = (int)total;
        total += (size_t)h[H_COUNTS + r];
    }
    const int rb = FEDC_STRATEGY_RECORD_BYTES;
    unsigned char *recs = run->recbuf;
    fedc_strategy_partial_records(run->strategy, recs + (size_t)run->displs[run->rank] * rb);
    int bcounts[run->size], bdispls[run->size];
    for (int r = 0; r < run->size; r++) {
        bcounts[r] = run->counts[r] * rb;
        bdispls[r] = run->displs[r] * rb;
    }
    int rc;
    fedc_err_clear(end_err);
    if (run->dp) {
        FEDC_TRY(combine_dp(run, h, end, end_err, err));
        if (*end != FEDC_OK) return FEDC_OK; /* every rank alike: the inputs are the same */
        *end = FEDC_ERR_ABORTED;
    }
    if (run->linear) {
        t0 = now_seconds();
        rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recs, bcounts, bdispls, MPI_BYTE,
                            g_comm);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Allgatherv (records)", run->round, err);
        run->stats.comm_seconds += now_seconds() - t0;
        run->stats.comm_bytes += mycount * (size_t)rb;
        t0 = now_seconds();
        fedc_engine_set_round_counters(run->engine, h + H_COUNTERS);
        *end = fedc_strategy_partial_set(run->strategy, h + run->hdr + run->dp_len, recs, total,
                                         NULL, end_err);
        if (*end == FEDC_OK) *end = fedc_engine_round_end(run->engine, rec, end_err);
        round_bytes(run, h, rec);
        run->stats.server_seconds += now_seconds() - t0;
        return FEDC_OK;
    }

    /* Robust: rank 0 makes room for every held update, then receives them in place. */
    t0 = now_seconds();
    float *area = NULL;
    int64_t ready = 1;
    if (run->rank == 0) {
        area = fedc_strategy_partial_held_reserve(run->strategy, total, end_err);
        ready = area != NULL;
    }
    if ((rc = MPI_Bcast(&ready, 1, MPI_INT64_T, 0, g_comm)) != MPI_SUCCESS)
        return mpi_error(rc, "MPI_Bcast", run->round, err);
    if (!ready) {
        /* Rank 0 could not hold the round: its message is in end_err; everyone stops. */
        run->stats.comm_seconds += now_seconds() - t0;
        *end = run->rank == 0 && end_err ? end_err->code : FEDC_ERR_ABORTED;
        return FEDC_OK;
    }
    const float *held = fedc_strategy_partial_held(run->strategy);
    if (run->rank == 0) {
        rc = MPI_Gatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recs, bcounts, bdispls, MPI_BYTE, 0,
                         g_comm);
        if (rc == MPI_SUCCESS)
            rc = MPI_Gatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, area, run->counts, run->displs,
                             run->update_type, 0, g_comm);
    } else {
        rc = MPI_Gatherv(recs + (size_t)run->displs[run->rank] * rb, (int)mycount * rb, MPI_BYTE,
                         NULL, NULL, NULL, MPI_BYTE, 0, g_comm);
        if (rc == MPI_SUCCESS)
            rc = MPI_Gatherv(held, (int)mycount, run->update_type, NULL, NULL, NULL,
                             run->update_type, 0, g_comm);
    }
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Gatherv (held updates)", run->round, err);
    run->stats.comm_bytes += mycount * ((size_t)rb + run->n * sizeof(float));
    run->stats.comm_seconds += now_seconds() - t0;

    int64_t outcome = FEDC_ERR_ABORTED;
    if (run->rank == 0) {
        t0 = now_seconds();
        fedc_engine_set_round_counters(run->engine, h + H_COUNTERS);
        *end = fedc_strategy_partial_set(run->strategy, h + run->hdr + run->dp_len, recs, total,
                                         area, end_err);
        if (*end == FEDC_OK) *end = fedc_engine_round_end(run->engine, rec, end_err);
        round_bytes(run, h, rec);
        outcome = *end;
        run->stats.server_seconds += now_seconds() - t0;
    }
    t0 = now_seconds();
    if ((rc = MPI_Bcast(&outcome, 1, MPI_INT64_T, 0, g_comm)) != MPI_SUCCESS)
        return mpi_error(rc, "MPI_Bcast", run->round, err);
    if (outcome == FEDC_OK) {
        float *model = run->rank == 0 ? (float *)fedc_engine_global(run->engine) : run->model;
        if ((rc = MPI_Bcast(model, 1, run->update_type, 0, g_comm)) != MPI_SUCCESS)
            return mpi_error(rc, "MPI_Bcast (model)", run->round, err);
        run->stats.comm_bytes += run->rank == 0 ? run->n * sizeof(float) : 0;
    }
    run->stats.comm_seconds += now_seconds() - t0;
    if (run->rank != 0) {
        if (outcome == FEDC_OK || outcome == FEDC_ERR_ABORTED) {
            /* Aborted below quorum: the model is unchanged; the round still closes. */
            const float *g = outcome == FEDC_OK ? run->model : fedc_engine_global(run->engine);
            fedc_status st = fedc_engine_round_adopt(run->engine, g, end_err);
            *end = st == FEDC_OK ? (fedc_status)outcome : st;
        } else {
            *end = (fedc_status)outcome; /* rank 0 failed: it reports */
            fedc_err_set(end_err, *end, "rank 0 failed to finish round %u", run->round);
        }
        memset(rec, 0, sizeof *rec);
    }
    return FEDC_OK;
}

/* Central evaluation on rank 0; federated evaluation split over the ranks and summed on rank 0
 * in client order. Collective. A local failure goes to *local (with lerr). */
static fedc_status evaluate(mpi_run *run, fedc_round_record *rec, fedc_status *local,
                            fedc_err *lerr, fedc_err *err)
{
    uint32_t round = run->round;
    /* DP: a run stopped by its budget ends here: evaluate its last model too */
    if (run->rank == 0 && *local == FEDC_OK) { /* as the threads-only simulation does */
        fedc_err e;
        fedc_err_clear(&e);
        fedc_status st = fedci_pool_eval_central(&run->pool, rec, rec->dp_budget_stop, &e);
        if (st != FEDC_OK) {
            *local = st;
            *lerr = e;
        }
    }
    const uint32_t *ids;
    size_t k;
    fedc_engine_eval_clients(run->engine, round, &ids, &k); /* the same on every rank */
    if (k == 0) return FEDC_OK;
    /* k is the same on every rank (config), and the buffers were sized for it at the start. */
    if (k > run->eval_cap)
        return fedc_err_set(err, FEDC_ERR_INTERNAL, "%zu federated-evaluation clients, room for %zu",
                            k, run->eval_cap);
    double *b = run->eval_buf;
    memset(b, 0, 4 * k * sizeof *b);
    if (*local == FEDC_OK) {
        fedc_status st = share(run, ids, k, NULL, NULL, lerr);
        if (st == FEDC_OK) {
            st = fedci_pool_eval(&run->pool, round, run->mine, run->nmine, run->eval_pos,
                                 run->eval_out, run->eval_status, lerr);
            if (st != FEDC_OK) fedc_err_prefix(lerr, "rank %d: ", run->rank);
        }
        if (st != FEDC_OK) {
            *local = st;
        } else {
            /* Each client's values come from exactly one rank (zeros elsewhere), so the sum
             * over ranks reproduces them exactly, in any order. */
            for (size_t j = 0; j < run->nmine; j++) {
                size_t at = run->eval_pos[j];
                const fedc_eval_out *o = &run->eval_out[at];
                int ok = run->eval_status[at] == FEDC_OK && o->num_examples > 0;
                b[4 * at] = ok ? o->loss : 0;
                b[4 * at + 1] = ok ? o->accuracy : 0;
                b[4 * at + 2] = ok ? (double)o->num_examples : 0;
                b[4 * at + 3] = ok;
            }
        }
    }
    double t0 = now_seconds();
    int rc = MPI_Reduce(run->rank == 0 ? MPI_IN_PLACE : b, run->rank == 0 ? b : NULL,
                        (int)(4 * k), MPI_DOUBLE, MPI_SUM, 0, g_comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Reduce (evaluation)", round, err);
    run->stats.comm_seconds += now_seconds() - t0;
    run->stats.comm_bytes += 4 * k * sizeof(double);
    if (run->rank != 0) return FEDC_OK;
    /* weighted by examples, summed in client order: as fedc_sim_run */
    double loss = 0, acc = 0;
    uint64_t total = 0;
    uint32_t used = 0;
    for (size_t i = 0; i < k; i++) {
        if (b[4 * i + 3] != 1) continue;
        double ne = b[4 * i + 2];
        loss += b[4 * i] * ne;
        acc += b[4 * i + 1] * ne;
        total += (uint64_t)ne;
        used++;
    }
    if (total > 0) {
        rec->fed_evaluated = 1;
        rec->fed_clients = used;
        rec->fed_loss = loss / (double)total;
        rec->fed_accuracy = acc / (double)total;
    }
    return FEDC_OK;
}

static void run_fini(mpi_run *run)
{
    fedci_pool_fini(&run->pool);
    if (run->dp) fedc_dp_run_set_release_hook(run->dp, NULL, NULL, 1);
    fedc_free(run->subbuf);
    fedc_free(run->dpbuf);
    if (run->have_type) MPI_Type_free(&run->update_type);
    fedc_free(run->home);
    fedc_free(run->cost);
    fedc_free(run->owner);
    fedc_free(run->mine);
    fedc_free(run->load);
    fedc_free(run->sums);
    fedc_free(run->recbuf);
    fedc_free(run->counts);
    fedc_free(run->displs);
    fedc_free(run->model);
    fedc_free(run->eval_pos);
    fedc_free(run->eval_out);
    fedc_free(run->eval_status);
    fedc_free(run->eval_buf);
}

/* Everything a rank allocates once for the run (a local step: agreed by the caller). */
static fedc_status run_init(mpi_run *run, int threads, fedc_err *err)
{
    const size_t R = (size_t)run->size;
    /* Federated evaluation clients per round, as fedc_engine_eval_clients computes them. */
    double frac = fedc_config_double(run->cfg, "eval.fraction");
    size_t E = frac > 0 ? (size_t)ceil(frac * run->num_clients) : 0;
    if (E > run->num_clients) E = run->num_clients;
    run->eval_cap = E;
    const size_t K = run->per_round > E ? run->per_round : E; /* clients of a job, at most */
    if (E) {
        run->eval_out = fedc_malloc(E * sizeof *run->eval_out);
        run->eval_status = fedc_malloc(E * sizeof *run->eval_status);
        run->eval_buf = fedc_malloc(4 * E * sizeof *run->eval_buf);
        if (!run->eval_out || !run->eval_status || !run->eval_buf)
            return fedc_err_set(err, FEDC_ERR_NOMEM,
                                "rank %d: out of memory for federated evaluation", run->rank);
    }
    run->cost = fedc_malloc(K * sizeof *run->cost);
    run->owner = fedc_malloc(K * sizeof *run->owner);
    run->mine = fedc_malloc(K * sizeof *run->mine);
    run->eval_pos = fedc_malloc(K * sizeof *run->eval_pos);
    run->load = fedc_malloc(R * sizeof *run->load);
    run->sums = fedc_malloc((run->hdr + run->dp_len + run->sums_len) * sizeof *run->sums);
    run->recbuf = fedc_malloc(run->per_round * FEDC_STRATEGY_RECORD_BYTES);
    run->counts = fedc_malloc(R * sizeof *run->counts);
    run->displs = fedc_malloc(R * sizeof *run->displs);
    if (!run->linear && run->rank != 0) run->model = fedc_malloc(run->n * sizeof(float));
    if (!run->cost || !run->owner || !run->mine || !run->eval_pos ||
        !run->load || !run->sums || !run->recbuf || !run->counts || !run->displs ||
        (!run->linear && run->rank != 0 && !run->model))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "rank %d: out of memory for the run's buffers",
                            run->rank);
    FEDC_TRY(fedci_pool_init(&run->pool, run->engine, run->trainer, run->cfg, threads, err));
    if (run->dp) { /* DP: the results' charges are replayed on the other ranks */
        FEDC_TRY(fedci_pool_log_submissions(&run->pool, run->per_round, err));
        run->subbuf = fedc_malloc(run->per_round * sizeof *run->subbuf);
        run->dpbuf = fedc_malloc(run->per_round * FEDC_ENGINE_DP_STAT_BYTES);
        if (!run->subbuf || !run->dpbuf)
            return fedc_err_set(err, FEDC_ERR_NOMEM, "rank %d: out of memory for DP", run->rank);
    }
    if (fedci_pool_clients_have_state(&run->pool)) {
        /* SCAFFOLD's c_i and error feedback's residual stay where the client lives: fixed home
         * ranks, balanced over all clients by examples (a round's share is then balanced only
         * on average). */
        run->home = fedc_malloc((size_t)run->num_clients * sizeof *run->home);
        uint64_t *c = fedc_malloc((size_t)run->num_clients * sizeof *c);
        if (!run->home || !c) {
            fedc_free(c);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "rank %d: out of memory for client homes",
                                run->rank);
        }
        for (uint32_t i = 0; i < run->num_clients; i++) c[i] = client_cost(run, i);
        fedc_status st = fedc_mpi_assign(run->num_clients, c, run->size, run->home, NULL, err);
        fedc_free(c);
        FEDC_TRY(st);
    }
    return FEDC_OK;
}

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Digest of the configuration's values, without the keys that may differ between ranks
 * (run.threads, run.log_level). */
static int64_t config_digest(const fedc_config *cfg)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (strcmp(k->section, "run") == 0 &&
            (strcmp(k->name, "threads") == 0 || strcmp(k->name, "log_level") == 0))
            continue;
        char dotted[128];
        snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->name);
        h = fnv_bytes(h, dotted, strlen(dotted) + 1);
        switch (k->type) {
        case FEDC_CFG_INT: {
            int64_t v = fedc_config_int(cfg, dotted);
            h = fnv_bytes(h, &v, sizeof v);
            break;
        }
        case FEDC_CFG_DOUBLE: {
            double v = fedc_config_double(cfg, dotted);
            h = fnv_bytes(h, &v, sizeof v);
            break;
        }
        case FEDC_CFG_BOOL: {
            int v = fedc_config_bool(cfg, dotted);
            h = fnv_bytes(h, &v, sizeof v);
            break;
        }
        case FEDC_CFG_STRING:
        case FEDC_CFG_CHOICE: {
            const char *v = fedc_config_str(cfg, dotted);
            h = fnv_bytes(h, v, strlen(v) + 1);
            break;
        }
        }
    }
    return (int64_t)(h >> 1);
}

/* Collective: checks that every rank runs the same federation (configuration, initial model,
 * clients' data sizes, round), so that a mistake in the launch fails at once and clearly
 * instead of silently training a different model. */
static fedc_status check_same_run(mpi_run *run, fedc_err *err)
{
    enum { F_CONFIG, F_MODEL, F_DATA, F_ROUND, F_COUNT };
    int64_t f[2 * F_COUNT];
    f[F_CONFIG] = config_digest(run->cfg);
    f[F_MODEL] = model_digest(fedc_engine_global(run->engine), run->n);
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t c = 0; c < run->num_clients; c++) {
        uint64_t e = client_cost(run, c);
        h = fnv_bytes(h, &e, sizeof e);
    }
    f[F_DATA] = (int64_t)(h >> 1);
    f[F_ROUND] = fedc_engine_last_round(run->engine);
    for (int i = 0; i < F_COUNT; i++) f[F_COUNT + i] = -f[i];
    FEDC_TRY(allreduce_i64(run, f, 2 * F_COUNT, MPI_MAX, err));
    static const char *const what[F_COUNT] = {
        "configurations differ (every rank must get the same CONFIG file and --set options)",
        "initial models differ (a different fedc build or model?)",
        "clients' data differ (every node must hold the same dataset files)",
        "last completed rounds differ (restored from different checkpoints?)",
    };
    for (int i = 0; i < F_COUNT; i++)
        if (f[i] != -f[F_COUNT + i])
            return fedc_err_set(err, FEDC_ERR_CONFIG,
                                "the %d MPI ranks do not run the same federation: their %s",
                                run->size, what[i]);
    return FEDC_OK;
}

/* Collective: resumes every rank from the newest checkpoint in dir (rank 0 finds it; every
 * rank reads it: a shared file system, or identical copies). Each rank keeps the client state
 * of its home clients. */
static fedc_status mpi_resume(mpi_run *run, const char *dir, fedc_err *err)
{
    fedc_status local = FEDC_OK;
    fedc_err lerr;
    fedc_err_clear(&lerr);
    uint32_t round = 0;
    if (run->rank == 0) local = fedc_sim_checkpoint_latest(dir, &round, &lerr);
    int64_t r = round;
    int rc = MPI_Bcast(&r, 1, MPI_INT64_T, 0, g_comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Bcast (resume)", 0, err);
    round = (uint32_t)r;
    if (local == FEDC_OK && round > 0) {
        char path[4096];
        size_t n = 0;
        local = fedci_ckpt_manifest(dir, round, &n, &lerr);
        fedci_ckpt_path(path, sizeof path, dir, round, 0, "engine.safetensors");
        if (local == FEDC_OK) local = fedc_engine_checkpoint_load(run->engine, path, &lerr);
        fedci_ckpt_path(path, sizeof path, dir, round, 0, "clients.safetensors");
        if (local == FEDC_OK && n)
            local = fedci_pool_state_load(&run->pool, path, n, run->home, run->rank, &lerr);
    }
    FEDC_TRY(fedc_mpi_agree(local, &lerr, err));
    if (round == 0)
        fedc_log(FEDC_LOG_INFO, "mpi", "resume: no checkpoint in %s: starting at round 1", dir);
    else
        fedc_log(FEDC_LOG_INFO, "mpi", "resumed from %s/round-%08u", dir, round);
    return FEDC_OK;
}

/* Collective: a checkpoint of the last round. Rank 0 writes the engine's state; every rank's
 * client state (its home clients' c_i and residuals) is gathered to rank 0, which writes the
 * sidecar and commits. */
static fedc_status mpi_checkpoint(mpi_run *run, const char *dir, fedc_err *err)
{
    uint32_t round = fedc_engine_last_round(run->engine);
    fedc_status local = FEDC_OK;
    fedc_err lerr;
    fedc_err_clear(&lerr);
    char path[4096];
    const size_t P = run->n;
    size_t mine = fedci_pool_state_count(&run->pool);
    uint32_t *ids = fedc_malloc((2 * mine + 1) * sizeof *ids);
    float *data = fedc_malloc((mine * P + 1) * sizeof *data);
    if (!ids || !data)
        local = fedc_err_set(&lerr, FEDC_ERR_NOMEM, "checkpoint: out of memory for the state of "
                             "%zu clients", mine);
    else
        fedci_pool_state_pack(&run->pool, ids, data);
    if (local == FEDC_OK && mine > INT_MAX / 2)
        local = fedc_err_set(&lerr, FEDC_ERR_RANGE, "checkpoint: %zu client vectors on one rank",
                             mine);
    if (local == FEDC_OK && run->rank == 0) {
        local = fedci_ckpt_begin(dir, round, &lerr);
        fedci_ckpt_path(path, sizeof path, dir, round, 1, "engine.safetensors");
        if (local == FEDC_OK) local = fedc_engine_checkpoint_save(run->engine, path, &lerr);
    }
    fedc_status st = fedc_mpi_agree(local, &lerr, err);
    int counts[run->size], displs[run->size], icounts[run->size], idispls[run->size];
    uint32_t *all_ids = NULL;
    float *all = NULL;
    size_t total = 0;
    int64_t ready = 1;
    if (st == FEDC_OK) {
        int m = (int)mine, rc = MPI_Gather(&m, 1, MPI_INT, counts, 1, MPI_INT, 0, g_comm);
        if (rc != MPI_SUCCESS) st = mpi_error(rc, "MPI_Gather (checkpoint)", round, err);
    }
    if (st == FEDC_OK && run->rank == 0) {
        for (int r = 0; r < run->size; r++) {
            displs[r] = (int)total;
            icounts[r] = 2 * counts[r];
            idispls[r] = 2 * (int)total;
            total += (size_t)counts[r];
        }
        all_ids = fedc_malloc((2 * total + 1) * sizeof *all_ids);
        all = fedc_malloc((total * P + 1) * sizeof *all);
        if (!all_ids || !all || 2 * total > INT_MAX) {
            ready = 0;
            local = fedc_err_set(&lerr, FEDC_ERR_NOMEM,
                                 "checkpoint: out of memory for the state of %zu clients", total);
        }
    }
    if (st == FEDC_OK) {
        int rc = MPI_Bcast(&ready, 1, MPI_INT64_T, 0, g_comm);
        if (rc != MPI_SUCCESS) st = mpi_error(rc, "MPI_Bcast (checkpoint)", round, err);
    }
    if (st == FEDC_OK && ready) {
        int rc = MPI_Gatherv(ids, 2 * (int)mine, MPI_UINT32_T, all_ids, icounts, idispls,
                             MPI_UINT32_T, 0, g_comm);
        if (rc == MPI_SUCCESS)
            rc = MPI_Gatherv(data, (int)mine, run->update_type, all, counts, displs,
                             run->update_type, 0, g_comm);
        if (rc != MPI_SUCCESS) st = mpi_error(rc, "MPI_Gatherv (client state)", round, err);
        run->stats.comm_bytes += mine * (P * sizeof(float) + 8);
    }
    if (st == FEDC_OK && run->rank == 0 && ready) {
        fedci_ckpt_path(path, sizeof path, dir, round, 1, "clients.safetensors");
        if (total) local = fedci_ckpt_write_clients(path, P, total, all_ids, all, round, &lerr);
        if (local == FEDC_OK)
            local = fedci_ckpt_commit(dir, round, total,
                                      (int)fedc_config_int(run->cfg, "run.keep_checkpoints"),
                                      &lerr);
    }
    fedc_free(ids);
    fedc_free(data);
    fedc_free(all_ids);
    fedc_free(all);
    if (st != FEDC_OK) return st;
    return fedc_mpi_agree(local, &lerr, err);
}

/* One round, collective. *stop: rank 0 asked to stop (on_round). */
static fedc_status run_round(mpi_run *run, const fedc_sim_opts *opts, int *stop, fedc_err *err)
{
    double t_round = now_seconds();
    fedc_status local = FEDC_OK;
    fedc_err lerr;
    fedc_err_clear(&lerr);
    const uint32_t *clients;
    size_t k = 0;
    run->round = fedc_engine_last_round(run->engine) + 1;
    local = fedc_engine_round_begin(run->engine, &clients, &k, &lerr);
    if (local == FEDC_OK) local = fedci_pool_download(&run->pool, &lerr); /* compression */
    if (local == FEDC_OK) {
        double imb = 1;
        local = share(run, clients, k, run->home, &imb, &lerr);
        run->stats.imbalance += imb;
        if (local == FEDC_OK) local = rank_fit(run, &lerr);
    }
    double t = now_seconds();
    run->stats.train_seconds += t - t_round;
    int rc = MPI_Barrier(g_comm);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "MPI_Barrier", run->round, err);
    run->stats.wait_seconds += now_seconds() - t;

    fedc_round_record rec;
    memset(&rec, 0, sizeof rec);
    fedc_status end = FEDC_ERR_ABORTED;
    fedc_err end_err;
    int failed = 0;
    FEDC_TRY(combine(run, local != FEDC_OK, &rec, &end, &end_err, &failed, err));
    if (!failed) {
        if (end == FEDC_ERR_ABORTED) {
            fedc_log(FEDC_LOG_WARN, "mpi", "round %u: %s", run->round,
                     fedc_err_message(&end_err));
        } else if (end != FEDC_OK && local == FEDC_OK) {
            local = end;
            lerr = end_err;
        }
        double t0 = now_seconds();
        FEDC_TRY(evaluate(run, &rec, &local, &lerr, err));
        run->stats.eval_seconds += now_seconds() - t0;
    }

    int64_t v[V_WORDS] = {local != FEDC_OK || failed, 0, 0, 0};
    if (!v[V_FAIL] && run->rank == 0) {
        rec.seconds = now_seconds() - t_round;
        if (opts && opts->on_round && opts->on_round(opts->user, &rec)) v[V_STOP] = 1;
        if (rec.dp_budget_stop) { /* DP: the next round would exceed dp.epsilon_budget */
            fedc_log(FEDC_LOG_INFO, "mpi",
                     "round %u: stopping: the next round would spend epsilon %g, more than "
                     "dp.epsilon_budget",
                     rec.round, rec.dp_next_epsilon);
            v[V_STOP] = 1;
        }
    }
    if (!v[V_FAIL]) {
        v[V_DIGEST] = model_digest(fedc_engine_global(run->engine), run->n);
        v[V_NDIGEST] = -v[V_DIGEST];
    }
    /* The others wait here while rank 0 evaluates and reports: waiting, not communication. */
    t = now_seconds();
    if ((rc = MPI_Barrier(g_comm)) != MPI_SUCCESS)
        return mpi_error(rc, "MPI_Barrier", run->round, err);
    run->stats.wait_seconds += now_seconds() - t;
    t = now_seconds();
    FEDC_TRY(allreduce_i64(run, v, V_WORDS, MPI_MAX, err));
    run->stats.comm_seconds += now_seconds() - t;
    if (v[V_FAIL]) return fedc_mpi_agree(local, &lerr, err);
    if (v[V_DIGEST] != -v[V_NDIGEST])
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "round %u: the ranks' models differ after the server step; every "
                            "rank must run the same fedc build on CPUs with the same "
                            "floating-point behaviour (docs/SCALING.md)",
                            run->round);
    run->stats.rounds++;
    *stop = (int)v[V_STOP];
    return FEDC_OK;
}

fedc_status fedc_mpi_run(fedc_engine *engine, const fedc_trainer *trainer, const fedc_config *cfg,
                         const fedc_sim_opts *opts, fedc_mpi_stats *stats, fedc_err *err)
{
    assert(engine && trainer && cfg);
    if (stats) memset(stats, 0, sizeof *stats);
    if (!g_inited)
        return fedc_err_set(err, FEDC_ERR_STATE, "fedc_mpi_run: call fedc_mpi_init first");
    /* The config is the same on every rank, so every rank refuses alike. */
    if (fedc_config_bool(cfg, "secagg.enabled"))
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "secure aggregation (secagg.enabled) does not run under MPI: its "
                            "protocol needs every client's masked update in one process, and "
                            "splitting the clients over ranks would need the masks' shares "
                            "exchanged between ranks (docs/SCALING.md); run `fedc sim` without "
                            "mpirun");
    size_t n = fedc_engine_num_params(engine);
    if (n > INT_MAX)
        return fedc_err_set(err, FEDC_ERR_RANGE, "MPI: %zu parameters do not fit one MPI count",
                            n);

    mpi_run run;
    memset(&run, 0, sizeof run);
    run.engine = engine;
    run.strategy = fedc_engine_strategy(engine);
    run.trainer = trainer;
    run.cfg = cfg;
    run.n = n;
    run.num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    run.per_round = (uint32_t)fedc_config_int(cfg, "clients.per_round");
    run.rank = g_rank;
    run.size = g_size;
    run.linear = fedc_strategy_is_streaming(run.strategy);
    run.hdr = H_COUNTS + 3 * (size_t)g_size;
    run.sums_len = fedc_strategy_partial_sums_len(run.strategy);
    run.dp = fedc_engine_dp(engine);
    run.dp_len = run.dp ? fedc_dp_run_partial_len(run.dp) : 0;
    int threads = opts && opts->threads > 0 ? opts->threads
                                            : (int)fedc_config_int(cfg, "run.threads");
    if (threads <= 0) threads = fedc_mpi_default_threads();
    run.stats.ranks = g_size;
    run.stats.threads = threads;

    fedc_err lerr;
    fedc_err_clear(&lerr);
    fedc_status st = run_init(&run, threads, &lerr);
    if (st == FEDC_OK) {
        int rc = MPI_Type_contiguous((int)n, MPI_FLOAT, &run.update_type);
        if (rc == MPI_SUCCESS) rc = MPI_Type_commit(&run.update_type);
        if (rc == MPI_SUCCESS)
            run.have_type = 1;
        else
            st = mpi_error(rc, "MPI_Type_contiguous", 0, &lerr);
    }
    /* DP: the noise of a release is drawn once, at rank 0, and broadcast */
    if (st == FEDC_OK && run.dp)
        fedc_dp_run_set_release_hook(run.dp, release_bcast, &run, g_rank == 0);
    st = fedc_mpi_agree(st, &lerr, err);
    const char *ckpt = fedc_config_str(cfg, "run.checkpoint_dir");
    if (!ckpt[0]) ckpt = NULL;
    if (st == FEDC_OK && fedc_config_bool(cfg, "run.resume"))
        st = ckpt ? mpi_resume(&run, ckpt, err)
                  : fedc_err_set(err, FEDC_ERR_CONFIG,
                                 "resume: no checkpoint directory (run.checkpoint_dir)");
    if (st == FEDC_OK) st = check_same_run(&run, err);
    if (st == FEDC_OK)
        fedc_log(FEDC_LOG_INFO, "mpi", "%d ranks x %d threads, %s strategy %s", g_size, threads,
                 run.linear ? "linear" : "robust", fedc_strategy_name(run.strategy));
    uint32_t rounds = (uint32_t)fedc_config_int(cfg, "run.rounds");
    uint32_t every = (uint32_t)fedc_config_int(cfg, "run.checkpoint_every");
    int stop = 0;
    while (st == FEDC_OK && !stop && fedc_engine_last_round(engine) < rounds) {
        st = run_round(&run, opts, &stop, err);
        uint32_t r = fedc_engine_last_round(engine);
        if (st == FEDC_OK && ckpt && (stop || r % every == 0 || r >= rounds))
            st = mpi_checkpoint(&run, ckpt, err);
    }

    if (st == FEDC_OK) {
        double mean[3] = {run.stats.train_seconds, run.stats.wait_seconds, run.stats.comm_seconds};
        int rc = MPI_Allreduce(MPI_IN_PLACE, mean, 3, MPI_DOUBLE, MPI_SUM, g_comm);
        if (rc != MPI_SUCCESS) {
            st = mpi_error(rc, "MPI_Allreduce (statistics)", fedc_engine_last_round(engine), err);
        } else {
            run.stats.mean_train_seconds = mean[0] / g_size;
            run.stats.mean_wait_seconds = mean[1] / g_size;
            run.stats.mean_comm_seconds = mean[2] / g_size;
        }
    }
    if (run.stats.rounds) run.stats.imbalance /= run.stats.rounds;
    if (stats) *stats = run.stats;
    run_fini(&run);
    return st;
}

#endif /* FEDC_HAVE_MPI */
