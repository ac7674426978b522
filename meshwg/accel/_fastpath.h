/* meshwg.accel._fastpath: what its two translation units share (_fastpath.c: the cipher
 * objects, runs, offloads and the replay window; _crossing.c: the lone crossing). */
#ifndef MESHWG_FASTPATH_H
#define MESHWG_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <openssl/evp.h>

#define HEADER_SIZE 16
#define TAG_SIZE 16
#define MIN_TRANSPORT (HEADER_SIZE + TAG_SIZE)
#define MESSAGE_TRANSPORT 4
#define RING_BLOCKS 128
#define RING_BYTES (RING_BLOCKS * 8)

/* A Sealer or Opener: one ChaCha20-Poly1305 key's OpenSSL context. */
typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    int encrypt;
    int busy;          /* a call is using ctx with the GIL released */
} Cipher;

typedef struct { uint64_t ring[RING_BLOCKS]; uint64_t last; uint64_t limit; } ReplayState;

extern PyTypeObject SealerType, OpenerType;

uint32_t fp_get_le32(const unsigned char *p);
uint64_t fp_get_le64(const unsigned char *p);
Py_ssize_t fp_padding(Py_ssize_t n, Py_ssize_t mtu);
void fp_write_header(unsigned char *p, uint32_t receiver, uint64_t counter);
int fp_seal_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *in, Py_ssize_t n,
                Py_ssize_t pad, unsigned char *out);
int fp_open_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *in, Py_ssize_t clen,
                unsigned char *out);
int fp_parse_u64(PyObject *obj, uint64_t *value);
int fp_replay_apply(ReplayState *w, uint64_t counter);

/* _crossing.c */
extern PyTypeObject CrossingType;
int crossing_ready(void);

#endif
