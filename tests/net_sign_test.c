/*
 * Identities and request signing (src/net/sign.c): key files (mode, format, corruption), the
 * Authorization header's format and its strict parser, signatures bound to method, path,
 * timestamp, nonce and body, and the body hash (BLAKE2b-256, one-shot = streamed); session
 * mode: key agreement, the per-request Poly1305 MAC and its signature; the MAC's two
 * implementations (OpenSSL's, libsodium's) against a reference, for many lengths and splits.
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

/* Session mode: both ends derive the same key; a tag binds body, key and nonce; the signature
 * binds the tag and does not verify in the other mode; the header round-trips. */
static void test_session_mac(void **state)
{
    (void)state;
    fedc_key *k, *other;
    assert_int_equal(fedc_key_generate(&k, NULL), FEDC_OK);
    assert_int_equal(fedc_key_generate(&other, NULL), FEDC_OK);
    uint8_t spk[FEDCI_KX_BYTES], ssk[FEDCI_KX_BYTES], spk2[FEDCI_KX_BYTES], ssk2[FEDCI_KX_BYTES];
    fedci_kx_keypair(spk, ssk);
    fedci_kx_keypair(spk2, ssk2);
    uint8_t kc[32], ks[32], ko[32], k2[32], pk[32], opk[32];
    fedc_key_public(k, pk);
    fedc_key_public(other, opk);
    assert_int_equal(fedci_session_client(k, spk, kc, NULL), FEDC_OK);
    assert_int_equal(fedci_session_server(spk, ssk, pk, ks, NULL), FEDC_OK);
    assert_memory_equal(kc, ks, 32);
    /* another client, or another server run: another key */
    assert_int_equal(fedci_session_server(spk, ssk, opk, ko, NULL), FEDC_OK);
    assert_memory_not_equal(kc, ko, 32);
    assert_int_equal(fedci_session_client(k, spk2, k2, NULL), FEDC_OK);
    assert_memory_not_equal(kc, k2, 32);
    /* a low-order server key is refused (all-zero point) */
    uint8_t zero[32] = {0};
    fedc_err err;
    assert_int_equal(fedci_session_client(k, zero, k2, &err), FEDC_ERR_CRYPTO);

    /* the MAC: one-shot = streamed; depends on body, key and nonce */
    static uint8_t body[100000];
    for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)(i * 13 + 1);
    uint8_t nonce[16] = {1, 2, 3}, t1[16], t2[16], t3[16];
    fedci_mac_state ms;
    fedci_mac_init(&ms, kc, nonce);
    fedci_mac_update(&ms, body, sizeof body);
    fedci_mac_final(&ms, t1);
    fedci_mac_init(&ms, ks, nonce);
    for (size_t off = 0; off < sizeof body; off += 4097)
        fedci_mac_update(&ms, body + off, sizeof body - off < 4097 ? sizeof body - off : 4097);
    fedci_mac_final(&ms, t2);
    assert_memory_equal(t1, t2, 16);
    body[50000] ^= 1;
    fedci_mac_init(&ms, kc, nonce);
    fedci_mac_update(&ms, body, sizeof body);
    fedci_mac_final(&ms, t3);
    assert_memory_not_equal(t1, t3, 16);
    body[50000] ^= 1;
    nonce[15] = 9;
    fedci_mac_init(&ms, kc, nonce);
    fedci_mac_update(&ms, body, sizeof body);
    fedci_mac_final(&ms, t3);
    assert_memory_not_equal(t1, t3, 16);
    fedci_mac_init(&ms, ko, nonce);
    fedci_mac_update(&ms, body, sizeof body);
    fedci_mac_final(&ms, t2);
    assert_memory_not_equal(t2, t3, 16);

    /* the signed header in session mode */
    fedci_auth a, b;
    fedci_auth_begin(k, 1700000000123ull, &a);
    fedci_mac_init(&ms, kc, a.nonce);
    fedci_mac_update(&ms, body, sizeof body);
    fedci_mac_final(&ms, a.mac);
    fedci_auth_finish_mac(k, "POST", "/v1/tasks/x/result", &a);
    assert_int_equal(a.mode, FEDCI_AUTH_MAC);
    assert_int_equal(fedci_auth_verify_any(&a, "POST", "/v1/tasks/x/result"), 0);
    assert_int_equal(fedci_auth_verify_any(&a, "POST", "/v1/tasks/y/result"), -1);
    /* the hash-mode check never accepts a session-mode signature, nor the reverse */
    assert_int_equal(fedci_auth_verify(&a, "POST", "/v1/tasks/x/result"), -1);
    b = a;
    b.mac[0] ^= 1;
    assert_int_equal(fedci_auth_verify_any(&b, "POST", "/v1/tasks/x/result"), -1);
    char txt[FEDCI_AUTH_MAX];
    fedci_auth_format(&a, txt, sizeof txt);
    assert_non_null(strstr(txt, ", mac="));
    assert_null(strstr(txt, "body="));
    fedci_auth p;
    assert_int_equal(fedci_auth_parse(txt, strlen(txt), &p, NULL), FEDC_OK);
    assert_int_equal(p.mode, FEDCI_AUTH_MAC);
    assert_memory_equal(p.mac, a.mac, 16);
    assert_int_equal(fedci_auth_verify_any(&p, "POST", "/v1/tasks/x/result"), 0);
    /* body and mac together, or neither: refused */
    char both[FEDCI_AUTH_MAX + 80];
    snprintf(both, sizeof both, "%s, body=%064d", txt, 0);
    assert_int_equal(fedci_auth_parse(both, strlen(both), &p, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "both"));
    char *m = strstr(txt, ", mac=");
    memmove(m, m + 6 + 32, strlen(m + 6 + 32) + 1);
    assert_int_equal(fedci_auth_parse(txt, strlen(txt), &p, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "missing"));
    /* a hash-mode signature does not verify as a session one either */
    uint8_t h[32];
    fedci_body_hash(body, sizeof body, h);
    fedci_auth_sign(k, "POST", "/v1/tasks/x/result", h, 1700000000123ull, &b);
    assert_int_equal(fedci_auth_verify_any(&b, "POST", "/v1/tasks/x/result"), 0);
    b.mode = FEDCI_AUTH_MAC;
    assert_int_equal(fedci_auth_verify_any(&b, "POST", "/v1/tasks/x/result"), -1);
    fedc_key_destroy(k);
    fedc_key_destroy(other);
}

/* The reference MAC, written from the protocol text: Poly1305 (libsodium's crypto_onetimeauth,
 * one shot) under BLAKE2b-256(key = session, "fedc-v1 body mac" || nonce). */
static void ref_mac(const uint8_t session[32], const uint8_t nonce[16], const uint8_t *body,
                    size_t n, uint8_t out[16])
{
    uint8_t in[16 + 16], otk[32];
    memcpy(in, "fedc-v1 body mac", 16);
    memcpy(in + 16, nonce, 16);
    crypto_generichash(otk, sizeof otk, in, sizeof in, session, 32);
    crypto_onetimeauth(out, body, n, otk);
}

/* Both implementations (OpenSSL's EVP_MAC when built in, libsodium's) give the reference tag for
 * random keys and nonces, bodies of many lengths around Poly1305's 16-byte blocks and the
 * implementations' internal buffers, fed in one call and in random splits (empty pieces too). */
static void test_mac_impls(void **state)
{
    (void)state;
    assert_int_equal(fedci_sodium_init(), 0);
#if FEDC_HAVE_LIBCRYPTO
    assert_string_equal(fedci_mac_impl(), "openssl");
#else
    assert_string_equal(fedci_mac_impl(), "libsodium");
#endif
    static const size_t lens[] = {0,     1,     2,     15,    16,    17,     31,     32,
                                  33,    63,    64,    65,    127,   128,    129,    255,
                                  256,   257,   1023,  1024,  1025,  4095,   4096,   4097,
                                  16383, 16384, 16385, 65535, 65537, 100003, 1048579};
    const size_t nmax = 1048579; /* 1 MiB + 3 */
    uint8_t *body = malloc(nmax);
    assert_non_null(body);
    uint8_t seed[randombytes_SEEDBYTES] = {42};
    randombytes_buf_deterministic(body, nmax, seed);
    uint32_t x = 12345; /* split points: xorshift32 */
    size_t checked = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t n = lens[li];
        uint8_t session[32], nonce[16], ref[16], t[16];
        seed[1] = (uint8_t)li;
        randombytes_buf_deterministic(session, sizeof session, seed);
        seed[2] = 1;
        randombytes_buf_deterministic(nonce, sizeof nonce, seed);
        seed[2] = 0;
        const uint8_t *b = body + (li * 7) % 64; /* unaligned starts too */
        if (b + n > body + nmax) b = body;
        ref_mac(session, nonce, b, n, ref);
        for (int impl = 0; impl < 2; impl++) {
            fedci_mac_state ms;
            /* one call */
            fedci_mac_init_with(&ms, session, nonce, impl);
            fedci_mac_update(&ms, b, n);
            fedci_mac_final(&ms, t);
            assert_memory_equal(t, ref, 16);
            assert_null(ms.ossl); /* _final released it */
            /* random splits, with empty pieces */
            for (int rep = 0; rep < 3; rep++) {
                fedci_mac_init_with(&ms, session, nonce, impl);
                size_t off = 0;
                while (off < n) {
                    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                    size_t cap = rep == 0 ? 17 : rep == 1 ? 300 : 70000;
                    size_t k = x % cap;
                    if (k > n - off) k = n - off;
                    fedci_mac_update(&ms, b + off, k);
                    off += k;
                }
                fedci_mac_update(&ms, b, 0);
                fedci_mac_final(&ms, t);
                assert_memory_equal(t, ref, 16);
                checked++;
            }
            /* the public entry point agrees */
            if (impl == 1) {
                fedci_mac_init(&ms, session, nonce);
                fedci_mac_update(&ms, b, n);
                fedci_mac_final(&ms, t);
                assert_memory_equal(t, ref, 16);
            }
        }
        /* a changed byte or nonce changes the tag */
        if (n) {
            uint8_t nb = b[n / 2];
            body[(size_t)(b - body) + n / 2] ^= 0x80;
            fedci_mac_state ms;
            fedci_mac_init(&ms, session, nonce);
            fedci_mac_update(&ms, b, n);
            fedci_mac_final(&ms, t);
            assert_memory_not_equal(t, ref, 16);
            body[(size_t)(b - body) + n / 2] = nb;
        }
    }
    assert_int_equal(checked, 6 * (sizeof lens / sizeof lens[0]));
    /* a state abandoned mid-body is released by _free (LeakSanitizer checks), twice is harmless,
     * and a zeroed state may be freed */
    fedci_mac_state ms;
    uint8_t session[32] = {1}, nonce[16] = {2};
    fedci_mac_init(&ms, session, nonce);
    fedci_mac_update(&ms, body, 1000);
    fedci_mac_free(&ms);
    fedci_mac_free(&ms);
    assert_null(ms.ossl);
    fedci_mac_state z;
    memset(&z, 0, sizeof z);
    fedci_mac_free(&z);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_parse_strict),
        cmocka_unit_test(test_body_hash),
        cmocka_unit_test(test_session_mac),
        cmocka_unit_test(test_mac_impls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
