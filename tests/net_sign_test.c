/*
 * Identities and request signing (src/net/sign.c): key files (mode, format, corruption), the
 * Authorization header's format and its strict parser, signatures bound to method, path,
 * timestamp, nonce and body, and the body hash (BLAKE2b-256, one-shot = streamed).
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fedc/fedc.h"
#include "fedc/net.h"
#include "net/sign.h"

static void test_keys(void **state)
{
    (void)state;
    char *dir = tu_tempdir("sign");
    char path[4096], path2[4096];
    snprintf(path, sizeof path, "%s/a.key", dir);
    fedc_err err;
    fedc_key *k = NULL, *k2 = NULL;
    assert_int_equal(fedc_key_generate(&k, &err), FEDC_OK);
    assert_int_equal(fedc_key_write(k, path, &err), FEDC_OK);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(fedc_key_write(k, path, &err), FEDC_ERR_IO); /* never overwritten */
    assert_int_equal(fedc_key_read(path, &k2, &err), FEDC_OK);
    char h1[FEDC_KEY_PUBLIC_HEX], h2[FEDC_KEY_PUBLIC_HEX];
    fedc_key_public_hex(k, h1);
    fedc_key_public_hex(k2, h2);
    assert_string_equal(h1, h2);
    assert_int_equal(strlen(h1), 64);
    uint8_t pk[32], pk2[32];
    assert_int_equal(fedc_key_public_parse(h1, pk, &err), FEDC_OK);
    fedc_key_public(k, pk2);
    assert_memory_equal(pk, pk2, 32);
    fedc_key_destroy(k2);
    k2 = NULL;
    /* too open */
    chmod(path, 0644);
    assert_int_equal(fedc_key_read(path, &k2, &err), FEDC_ERR_AUTH);
    assert_non_null(strstr(err.msg, "too open"));
    /* corrupt files: a bad line, a bad secret, a public line that does not match */
    size_t n;
    char *text = tu_read_file(path, &n);
    snprintf(path2, sizeof path2, "%s/b.key", dir);
    const char *bad[] = {"hello\n", "fedc-ed25519-secret-v1 abc\n", "# only a comment\n", NULL};
    for (int i = 0; bad[i]; i++) {
        unlink(path2);
        tu_write_file(path2, bad[i], strlen(bad[i]));
        chmod(path2, 0600);
        assert_int_equal(fedc_key_read(path2, &k2, &err), FEDC_ERR_FORMAT);
        assert_non_null(strstr(err.msg, path2));
    }
    char *pub = strstr(text, "public ");
    assert_non_null(pub);
    pub[7] = pub[7] == 'a' ? 'b' : 'a';
    unlink(path2);
    tu_write_file(path2, text, n);
    chmod(path2, 0600);
    assert_int_equal(fedc_key_read(path2, &k2, &err), FEDC_ERR_CRYPTO);
    free(text);
    assert_int_equal(fedc_key_read("/nonexistent/key", &k2, &err), FEDC_ERR_IO);
    /* public keys: hex, length, and a valid curve point */
    assert_int_equal(fedc_key_public_parse("  \n", pk, &err), FEDC_ERR_FORMAT);
    assert_int_equal(fedc_key_public_parse("abcd", pk, &err), FEDC_ERR_FORMAT);
    char zeros[65];
    memset(zeros, '0', 64);
    zeros[64] = '\0';
    assert_int_equal(fedc_key_public_parse(zeros, pk, &err), FEDC_ERR_FORMAT);
    char padded[80];
    snprintf(padded, sizeof padded, "  %s\n", h1);
    assert_int_equal(fedc_key_public_parse(padded, pk, &err), FEDC_OK);
    fedc_key_destroy(k);
    tu_rmtree(dir);
    free(dir);
}

static void test_sign_verify(void **state)
{
    (void)state;
    fedc_key *k;
    assert_int_equal(fedc_key_generate(&k, NULL), FEDC_OK);
    uint8_t h[FEDCI_HASH_BYTES];
    fedci_body_hash("body", 4, h);
    fedci_auth a, b;
    fedci_auth_sign(k, "POST", "/v1/checkin", h, 1700000000123ull, &a);
    assert_int_equal(fedci_auth_verify(&a, "POST", "/v1/checkin"), 0);
    assert_int_equal(fedci_auth_verify(&a, "GET", "/v1/checkin"), -1);
    assert_int_equal(fedci_auth_verify(&a, "POST", "/v1/checkin2"), -1);
    b = a;
    b.ts_ms++;
    assert_int_equal(fedci_auth_verify(&b, "POST", "/v1/checkin"), -1);
    b = a;
    b.nonce[0] ^= 1;
    assert_int_equal(fedci_auth_verify(&b, "POST", "/v1/checkin"), -1);
    b = a;
    b.body_hash[31] ^= 1;
    assert_int_equal(fedci_auth_verify(&b, "POST", "/v1/checkin"), -1);
    b = a;
    b.sig[63] ^= 1;
    assert_int_equal(fedci_auth_verify(&b, "POST", "/v1/checkin"), -1);
    /* two signatures of the same request differ by their nonce */
    fedci_auth_sign(k, "POST", "/v1/checkin", h, 1700000000123ull, &b);
    assert_memory_not_equal(a.nonce, b.nonce, sizeof a.nonce);
    /* format -> parse round trip */
    char txt[FEDCI_AUTH_MAX];
    fedci_auth_format(&a, txt, sizeof txt);
    assert_true(strncmp(txt, "FEDC-Ed25519 key=", 17) == 0);
    assert_true(strlen(txt) < FEDCI_AUTH_MAX);
    fedci_auth p;
    assert_int_equal(fedci_auth_parse(txt, strlen(txt), &p, NULL), FEDC_OK);
    assert_memory_equal(&p, &a, sizeof p);
    assert_int_equal(fedci_auth_verify(&p, "POST", "/v1/checkin"), 0);
    fedc_key_destroy(k);
}

static void test_parse_strict(void **state)
{
    (void)state;
    fedc_key *k;
    assert_int_equal(fedc_key_generate(&k, NULL), FEDC_OK);
    uint8_t h[FEDCI_HASH_BYTES] = {0};
    fedci_auth a, p;
    fedci_auth_sign(k, "GET", "/v1/run", h, 5, &a);
    char good[FEDCI_AUTH_MAX];
    fedci_auth_format(&a, good, sizeof good);
    /* parameters in another order, without spaces: accepted */
    char *key = strstr(good, "key="), *ts = strstr(good, ", ts=");
    char reordered[FEDCI_AUTH_MAX];
    snprintf(reordered, sizeof reordered, "FEDC-Ed25519 %s,%.*s", ts + 2, (int)(ts - key), key);
    assert_int_equal(fedci_auth_parse(reordered, strlen(reordered), &p, NULL), FEDC_OK);
    assert_memory_equal(&p, &a, sizeof p);
    fedc_err err;
    char buf[1024];
    struct {
        const char *desc, *text;
    } bad[] = {
        {"scheme", "Bearer abc"},
        {"empty", ""},
        {"scheme only", "FEDC-Ed25519 "},
        {"missing", "FEDC-Ed25519 ts=5"},
        {"unknown", "FEDC-Ed25519 foo=1"},
        {"no value", "FEDC-Ed25519 key"},
        {"bad ts", "FEDC-Ed25519 ts=12x"},
        {"huge ts", "FEDC-Ed25519 ts=123456789012345678901234"},
        {"short key", "FEDC-Ed25519 key=abcd"},
        {"no comma", "FEDC-Ed25519 ts=5 ts=6"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (fedci_auth_parse(bad[i].text, strlen(bad[i].text), &p, &err) != FEDC_ERR_FORMAT)
            fail_msg("accepted: %s", bad[i].desc);
    }
    /* a duplicate parameter */
    snprintf(buf, sizeof buf, "%s, ts=6", good);
    assert_int_equal(fedci_auth_parse(buf, strlen(buf), &p, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "given twice"));
    /* one hex digit too many / not hex */
    char *sig = strstr(good, "sig=");
    snprintf(buf, sizeof buf, "%.*sf", (int)strlen(good), good);
    assert_int_equal(fedci_auth_parse(buf, strlen(buf), &p, &err), FEDC_ERR_FORMAT);
    snprintf(buf, sizeof buf, "%s", good);
    buf[(sig - good) + 6] = 'g';
    assert_int_equal(fedci_auth_parse(buf, strlen(buf), &p, &err), FEDC_ERR_FORMAT);
    /* a NUL inside, and a header that is too long */
    memcpy(buf, good, strlen(good));
    buf[20] = '\0';
    assert_int_equal(fedci_auth_parse(buf, strlen(good), &p, &err), FEDC_ERR_FORMAT);
    char longh[FEDCI_AUTH_MAX + 10];
    memset(longh, 'a', sizeof longh);
    assert_int_equal(fedci_auth_parse(longh, sizeof longh, &p, &err), FEDC_ERR_FORMAT);
    assert_int_equal(fedci_auth_parse(NULL, 0, &p, &err), FEDC_ERR_FORMAT);
    fedc_key_destroy(k);
}

static void test_body_hash(void **state)
{
    (void)state;
    uint8_t data[10000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    uint8_t one[32], streamed[32], empty[32];
    fedci_body_hash(data, sizeof data, one);
    fedci_hash_state st;
    fedci_body_hash_init(&st);
    for (size_t off = 0; off < sizeof data; off += 333)
        fedci_body_hash_update(&st, data + off, sizeof data - off < 333 ? sizeof data - off : 333);
    fedci_body_hash_final(&st, streamed);
    assert_memory_equal(one, streamed, 32);
    /* BLAKE2b-256 of the empty string (RFC 7693 parameters, 32-byte digest) */
    fedci_body_hash("", 0, empty);
    char hex[65];
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", empty[i]);
    assert_string_equal(hex, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_parse_strict),
        cmocka_unit_test(test_body_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
