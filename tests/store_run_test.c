/*
 * The run store (src/store/store.c): schema and reopening, the allow-list's stable ids, runs
 * found again by their fingerprint and refused with another, rounds committed in order with
 * their metrics and participants, checkpoints pruned, crash leftovers removed, and a database
 * that is not fedc's refused.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fedc/fedc.h"
#include "fedc/store.h"

static void random_key(uint8_t pk[32])
{
    fedc_key *k;
    assert_int_equal(fedc_key_generate(&k, NULL), FEDC_OK);
    fedc_key_public(k, pk);
    fedc_key_destroy(k);
}

static void test_allow_list(void **state)
{
    (void)state;
    char *dir = tu_tempdir("store");
    char sdir[4096];
    snprintf(sdir, sizeof sdir, "%s/state", dir);
    fedc_store *st;
    fedc_err err;
    assert_int_equal(fedc_store_open(sdir, &st, &err), FEDC_OK);
    struct stat sb;
    assert_int_equal(stat(sdir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    uint8_t pk[3][32];
    for (int i = 0; i < 3; i++) random_key(pk[i]);
    uint32_t id;
    int added;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fedc_store_allow(st, pk[i], i == 1 ? "bob" : NULL, &id, &added, &err),
                         FEDC_OK);
        assert_int_equal(id, (uint32_t)i);
        assert_int_equal(added, 1);
    }
    assert_int_equal(fedc_store_allow(st, pk[1], "again", &id, &added, &err), FEDC_OK);
    assert_int_equal(id, 1);
    assert_int_equal(added, 0);
    fedc_store_close(st);

    /* a file: new keys get the next ids, known keys keep theirs; a bad line keeps nothing */
    uint8_t more[2][32];
    random_key(more[0]);
    random_key(more[1]);
    char h[4][FEDC_KEY_PUBLIC_HEX], text[1024], path[4096];
    fedc_key_public_to_hex(more[0], h[0]);
    fedc_key_public_to_hex(pk[0], h[1]);
    fedc_key_public_to_hex(more[1], h[2]);
    snprintf(path, sizeof path, "%s/allow.txt", dir);
    snprintf(text, sizeof text, "# clients\n%s  carol\n\n%s\n%s dave\n", h[0], h[1], h[2]);
    tu_write_file(path, text, strlen(text));
    assert_int_equal(fedc_store_open(sdir, &st, &err), FEDC_OK);
    size_t n_added;
    assert_int_equal(fedc_store_allow_file(st, path, &n_added, &err), FEDC_OK);
    assert_int_equal(n_added, 2);
    fedc_store_client *cl;
    size_t n;
    assert_int_equal(fedc_store_clients(st, &cl, &n, &err), FEDC_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(cl[3].pk, more[0], 32);
    assert_string_equal(cl[3].label, "carol");
    assert_memory_equal(cl[4].pk, more[1], 32);
    assert_string_equal(cl[4].label, "dave");
    assert_string_equal(cl[1].label, "bob");
    for (size_t i = 0; i < n; i++) assert_int_equal(cl[i].id, (uint32_t)i);
    fedc_free(cl);
    snprintf(text, sizeof text, "%s\nnot-a-key\n", h[0]);
    uint8_t fresh[32];
    random_key(fresh);
    fedc_key_public_to_hex(fresh, h[3]);
    snprintf(text, sizeof text, "%s\nnot-a-key\n", h[3]);
    tu_write_file(path, text, strlen(text));
    assert_int_equal(fedc_store_allow_file(st, path, &n_added, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "allow.txt:2"));
    assert_int_equal(fedc_store_clients(st, &cl, &n, &err), FEDC_OK);
    assert_int_equal(n, 5); /* the good first line was not kept either */
    fedc_free(cl);
    fedc_store_close(st);
    tu_rmtree(dir);
    free(dir);
}

static fedc_store_round make_round(uint32_t r)
{
    fedc_store_round sr;
    memset(&sr, 0, sizeof sr);
    sr.rec.round = r;
    sr.rec.selected = 5;
    sr.rec.participants = 4;
    sr.rec.rejected = 1;
    sr.rec.examples = 1000 + r;
    sr.rec.train_loss = 1.0 / r;
    sr.rec.test_loss = r % 2 ? NAN : 0.5;
    sr.rec.test_accuracy = r % 2 ? NAN : 0.25 * r;
    sr.rec.evaluated = r % 2 == 0;
    sr.rec.fed_loss = sr.rec.fed_accuracy = NAN;
    sr.rec.bytes_up = 4096 * r;
    sr.rec.update_norm = 0.5;
    sr.rec.seconds = 1.5;
    sr.attempt = r == 2 ? 1 : 0;
    snprintf(sr.model_sha256, sizeof sr.model_sha256, "%064u", r);
    snprintf(sr.checkpoint, sizeof sr.checkpoint, "round-%08u.safetensors", r);
    return sr;
}

typedef struct seen {
    int n;
    fedc_store_round r[8];
} seen;

static int collect(void *user, const fedc_store_round *r)
{
    seen *s = user;
    if (s->n < 8) s->r[s->n] = *r;
    s->n++;
    return 0;
}

static int count_parts(void *user, const fedc_store_participant *p)
{
    int *n = user;
    if (*n == 1) {
        assert_string_equal(p->status, "refused");
        assert_string_equal(p->detail, "NaN at 3");
    }
    (*n)++;
    return 0;
}

static void test_runs_and_rounds(void **state)
{
    (void)state;
    char *dir = tu_tempdir("store");
    fedc_store *st;
    fedc_err err;
    assert_int_equal(fedc_store_open(dir, &st, &err), FEDC_OK);
    fedc_store_run run;
    int resumed;
    assert_int_equal(fedc_store_run_get(st, &run, &err), FEDC_ERR_NOTFOUND);
    assert_int_equal(fedc_store_run_open(st, "[run]\n", "fp1", 10, &run, &resumed, &err), FEDC_OK);
    assert_int_equal(resumed, 0);
    assert_int_equal(run.last_round, 0);
    assert_int_equal(strlen(run.run_id), 32);
    char run_id[33];
    memcpy(run_id, run.run_id, sizeof run_id);
    /* rounds: in order only */
    fedc_store_round r1 = make_round(1), r3 = make_round(3), r2 = make_round(2);
    fedc_store_participant parts[2] = {
        {0, "accepted", 500, 0.7, 0.1, 4096, NULL},
        {3, "refused", 0, NAN, 0, 4096, "NaN at 3"},
    };
    /* the checkpoint files the rounds name */
    for (uint32_t r = 1; r <= 3; r++) {
        char path[4096];
        fedc_store_checkpoint_path(st, r, path, sizeof path);
        tu_write_file(path, "x", 1);
    }
    assert_int_equal(fedc_store_commit_round(st, &r1, parts, 2, &err), FEDC_OK);
    assert_int_equal(fedc_store_commit_round(st, &r3, NULL, 0, &err), FEDC_ERR_STATE);
    assert_int_equal(fedc_store_commit_round(st, &r1, NULL, 0, &err), FEDC_ERR_STATE);
    assert_int_equal(fedc_store_commit_round(st, &r2, parts, 1, &err), FEDC_OK);
    assert_int_equal(fedc_store_commit_round(st, &r3, NULL, 0, &err), FEDC_OK);
    fedc_store_close(st);

    /* reopened: the same run, resumed after round 3, with everything as committed */
    assert_int_equal(fedc_store_open(dir, &st, &err), FEDC_OK);
    assert_int_equal(fedc_store_run_open(st, "[run]\n", "fp1", 10, &run, &resumed, &err), FEDC_OK);
    assert_int_equal(resumed, 1);
    assert_string_equal(run.run_id, run_id);
    assert_int_equal(run.last_round, 3);
    assert_string_equal(run.model_sha256, r3.model_sha256);
    assert_non_null(strstr(run.checkpoint, "/checkpoints/round-00000003.safetensors"));
    assert_int_equal(run.finished, 0);
    seen s = {0};
    assert_int_equal(fedc_store_rounds(st, collect, &s, &err), FEDC_OK);
    assert_int_equal(s.n, 3);
    for (int i = 0; i < 3; i++) {
        fedc_store_round want = make_round((uint32_t)i + 1);
        const fedc_store_round *got = &s.r[i];
        assert_int_equal(got->rec.round, want.rec.round);
        assert_int_equal(got->attempt, want.attempt);
        assert_int_equal(got->rec.participants, 4);
        assert_int_equal(got->rec.examples, want.rec.examples);
        assert_true(got->rec.train_loss == want.rec.train_loss);
        assert_int_equal(isnan(got->rec.test_loss), isnan(want.rec.test_loss));
        if (!isnan(want.rec.test_accuracy))
            assert_true(got->rec.test_accuracy == want.rec.test_accuracy);
        assert_int_equal(got->rec.evaluated, want.rec.evaluated);
        assert_int_equal(got->rec.bytes_up, want.rec.bytes_up);
        assert_string_equal(got->model_sha256, want.model_sha256);
        assert_string_equal(got->checkpoint, want.checkpoint);
    }
    int np = 0;
    assert_int_equal(fedc_store_participants(st, 1, count_parts, &np, &err), FEDC_OK);
    assert_int_equal(np, 2);
    /* prune: keep the newest 1 */
    assert_int_equal(fedc_store_prune_checkpoints(st, 1, &err), FEDC_OK);
    char path[4096];
    fedc_store_checkpoint_path(st, 1, path, sizeof path);
    assert_int_equal(access(path, F_OK), -1);
    fedc_store_checkpoint_path(st, 2, path, sizeof path);
    assert_int_equal(access(path, F_OK), -1);
    fedc_store_checkpoint_path(st, 3, path, sizeof path);
    assert_int_equal(access(path, F_OK), 0);
    /* another configuration in the same directory: refused */
    assert_int_equal(fedc_store_run_open(st, "[run]\n", "fp2", 10, &run, &resumed, &err),
                     FEDC_ERR_STATE);
    assert_non_null(strstr(err.msg, run_id));
    /* finished */
    assert_int_equal(fedc_store_run_open(st, "[run]\n", "fp1", 10, &run, &resumed, &err), FEDC_OK);
    assert_int_equal(fedc_store_run_finish(st, r3.model_sha256, &err), FEDC_OK);
    fedc_store_close(st);
    /* a crash leftover of a checkpoint write is removed on open */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/checkpoints/round-00000004.safetensors.tmp-123", dir);
    tu_write_file(tmp, "partial", 7);
    assert_int_equal(fedc_store_open(dir, &st, &err), FEDC_OK);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(fedc_store_run_get(st, &run, &err), FEDC_OK);
    assert_int_equal(run.finished, 1);
    assert_int_equal(run.last_round, 3);
    fedc_store_close(st);
    tu_rmtree(dir);
    free(dir);
}

static void test_not_a_database(void **state)
{
    (void)state;
    char *dir = tu_tempdir("store");
    char db[4096];
    snprintf(db, sizeof db, "%s/fedc.db", dir);
    char junk[4096];
    memset(junk, 'z', sizeof junk);
    tu_write_file(db, junk, sizeof junk);
    fedc_store *st = NULL;
    fedc_err err;
    assert_int_not_equal(fedc_store_open(dir, &st, &err), FEDC_OK);
    assert_null(st);
    assert_non_null(strstr(err.msg, "fedc.db"));
    tu_rmtree(dir);
    free(dir);
    assert_int_equal(fedc_store_open("/proc/fedc-cannot-create", &st, &err), FEDC_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_runs_and_rounds),
        cmocka_unit_test(test_not_a_database),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
