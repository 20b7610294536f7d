/* test/unit/test_tls_tickets.c - the session ticket keys of proxy/tls.c:
 * a ticket of the current key resumes, one of the previous key (one
 * rotation ago) still does, one older does not; every success asks for a
 * fresh ticket. The file is included to reach its static functions; time
 * is moved by ageing the keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/tls.c"

#define ROTATE_MS (60u * 1000)

struct fixture {
    struct wg_tls *t;
    SSL_CTX *ctx;
    SSL *ssl;
    EVP_MAC *mac;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->t = calloc(1, sizeof(*f->t));
    assert_non_null(f->t);
    f->t->rotate_ms = ROTATE_MS;
    f->t->refs = 1;
    assert_int_equal(uv_mutex_init(&f->t->keys_lock), 0);
    assert_int_equal(uv_rwlock_init(&f->t->certs_lock), 0);
    f->t->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    assert_non_null(f->t->ticket_cipher);
    f->ctx = ctx_new(f->t);
    assert_non_null(f->ctx);
    f->ssl = SSL_new(f->ctx);
    assert_non_null(f->ssl);
    f->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    assert_non_null(f->mac);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    EVP_MAC_free(f->mac);
    SSL_free(f->ssl);
    SSL_CTX_free(f->ctx);
    wg_tls_free(f->t);
    free(f);
    return 0;
}

/* One call of the callback, with fresh cipher and MAC contexts. */
static int call(struct fixture *f, unsigned char name[16], int enc)
{
    unsigned char iv[EVP_MAX_IV_LENGTH] = {0};
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(f->mac);
    int r;

    assert_non_null(c);
    assert_non_null(h);
    r = ticket_cb(f->ssl, name, iv, c, h, enc);
    EVP_MAC_CTX_free(h);
    EVP_CIPHER_CTX_free(c);
    return r;
}

static void age(struct fixture *f, int64_t ms)
{
    f->t->keys[0].created_ms -= ms;
    f->t->keys[1].created_ms -= ms;
}

static void test_rotation_keeps_one_previous_key(void **state)
{
    struct fixture *f = *state;
    unsigned char first[16], second[16], third[16];

    /* The first ticket makes the first key. */
    assert_int_equal(call(f, first, 1), 1);
    assert_int_equal(call(f, first, 0), 2);

    /* One period later: a new key encrypts; the first still decrypts. */
    age(f, ROTATE_MS);
    assert_int_equal(call(f, second, 1), 1);
    assert_memory_not_equal(first, second, 16);
    assert_int_equal(call(f, second, 0), 2);
    assert_int_equal(call(f, first, 0), 2);

    /* Another period: the first key is gone, the second still decrypts. */
    age(f, ROTATE_MS);
    assert_int_equal(call(f, third, 1), 1);
    assert_int_equal(call(f, first, 0), 0);
    assert_int_equal(call(f, second, 0), 2);
    assert_int_equal(call(f, third, 0), 2);

    /* Idle for two periods: nothing older is kept. */
    age(f, 2 * ROTATE_MS);
    assert_int_equal(call(f, first, 0), 0);
    assert_int_equal(call(f, second, 0), 0);
    assert_int_equal(call(f, third, 0), 0);

    /* A name never issued: a full handshake. */
    unsigned char junk[16] = {1, 2, 3};
    assert_int_equal(call(f, junk, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotation_keeps_one_previous_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
