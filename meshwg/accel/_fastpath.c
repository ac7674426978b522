/* meshwg.accel._fastpath: WireGuard's transport data path in compiled code.
 *
 * ChaCha20-Poly1305 (RFC 8439) comes from OpenSSL's libcrypto (EVP); nothing here is a
 * cipher. What this module adds is the per-packet work around it, done without a Python
 * call per packet: the transport header (type 4, receiver index, counter; whitepaper
 * section 5.4.6), the counter nonce, padding to a multiple of 16, and runs of packets
 * sealed or opened in one call with the GIL released. Internet checksums (RFC 1071) of
 * many pieces of one buffer serve the TUN offloads (meshwg.tun.checksum).
 *
 * Python keeps every decision: keys, counters, the replay window, routing, timers.
 * Every length is checked against the buffers it refers to; input from the network
 * never sizes an allocation. */

#include "_fastpath.h"
#include <string.h>
#include <openssl/crypto.h>

#define PADDING_MULTIPLE 16
#define MAX_PLAINTEXT 65535          /* an IP packet's length limit */
#define MAX_RUN 4096                 /* packets or datagrams per run call */
#define MAX_PIECES 65536             /* pieces per piece_sums call */

static const unsigned char ZEROS[PADDING_MULTIPLE];

/* ------------------------------------------------------------------ helpers */

static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = v & 0xff; p[1] = (v >> 8) & 0xff; p[2] = (v >> 16) & 0xff; p[3] = (v >> 24) & 0xff;
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (v >> (8 * i)) & 0xff;
}

uint32_t fp_get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t fp_get_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* The 12-byte nonce: four zero bytes, then the counter little-endian. */
static void counter_nonce(unsigned char nonce[12], uint64_t counter) {
    memset(nonce, 0, 4);
    put_le64(nonce + 4, counter);
}

/* Zero bytes appended to a plaintext of n bytes: up to a multiple of 16, never past the
 * MTU (whitepaper 5.4.6; meshwg.core.send.padding). */
Py_ssize_t fp_padding(Py_ssize_t n, Py_ssize_t mtu) {
    Py_ssize_t pad = (PADDING_MULTIPLE - n % PADDING_MULTIPLE) % PADDING_MULTIPLE;
    if (pad && n + pad > mtu) {
        pad = mtu - n;
        if (pad < 0) pad = 0;
    }
    return pad;
}

static int overlaps(const unsigned char *a, Py_ssize_t alen, const unsigned char *b, Py_ssize_t blen) {
    return a < b + blen && b < a + alen;
}

/* Where `size` bytes of output go: out[offset:offset + size], which must lie in `out` and
 * not overlap the input (in, inlen). NULL with ValueError set otherwise. */
static unsigned char *output_at(Py_buffer *out, Py_ssize_t offset, Py_ssize_t size,
                                const void *in, Py_ssize_t inlen) {
    if (offset < 0 || offset > out->len || out->len - offset < size) {
        PyErr_SetString(PyExc_ValueError, "transport message does not fit in the buffer");
        return NULL;
    }
    unsigned char *dst = (unsigned char *)out->buf + offset;
    if (overlaps(dst, size, in, inlen)) {
        PyErr_SetString(PyExc_ValueError, "packet and output overlap");
        return NULL;
    }
    return dst;
}

/* 0 when counters counter .. counter + count - 1 stay below 2**64, else -1 with
 * OverflowError set. */
static int counters_fit(uint64_t counter, Py_ssize_t count) {
    if (count && counter + (uint64_t)(count - 1) < counter) {
        PyErr_SetString(PyExc_OverflowError, "counters past 2**64");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the cipher object */

static int cipher_take(Cipher *self) {
    if (self->ctx == NULL) {
        PyErr_SetString(PyExc_ValueError, "cipher has no key");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "cipher in use by another thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static int cipher_init(Cipher *self, PyObject *args, PyObject *kwds, int encrypt) {
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*", &key)) return -1;
    if (key.len != 32) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "ChaCha20-Poly1305 key must be 32 bytes");
        return -1;
    }
    if (self->ctx == NULL) self->ctx = EVP_CIPHER_CTX_new();
    if (self->ctx == NULL) {
        PyBuffer_Release(&key);
        PyErr_NoMemory();
        return -1;
    }
    int ok = EVP_CipherInit_ex(self->ctx, EVP_chacha20_poly1305(), NULL, key.buf, NULL, encrypt);
    PyBuffer_Release(&key);
    if (ok != 1) {
        PyErr_SetString(PyExc_RuntimeError, "EVP_CipherInit_ex failed");
        return -1;
    }
    self->encrypt = encrypt;
    self->busy = 0;
    return 0;
}

static void cipher_dealloc(Cipher *self) {
    if (self->ctx != NULL) EVP_CIPHER_CTX_free(self->ctx);   /* clears the key schedule */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Seal n plaintext bytes plus pad zero bytes into out (n + pad + 16 bytes). 0 on success. */
int fp_seal_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *in, Py_ssize_t n,
                    Py_ssize_t pad, unsigned char *out) {
    unsigned char nonce[12];
    int len;
    counter_nonce(nonce, counter);
    if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, -1) != 1) return -1;
    if (n && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1) return -1;
    if (pad && EVP_CipherUpdate(ctx, out + n, &len, ZEROS, (int)pad) != 1) return -1;
    if (EVP_CipherFinal_ex(ctx, out + n + pad, &len) != 1) return -1;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_SIZE, out + n + pad) == 1 ? 0 : -1;
}

/* Open clen bytes (ciphertext + tag) into out (clen - 16 bytes). 1 authentic, 0 not. */
int fp_open_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *in, Py_ssize_t clen,
                    unsigned char *out) {
    unsigned char nonce[12];
    unsigned char tag[TAG_SIZE];
    int len;
    Py_ssize_t plen = clen - TAG_SIZE;
    counter_nonce(nonce, counter);
    memcpy(tag, in + plen, TAG_SIZE);     /* in and out may be the same buffer */
    if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, -1) != 1) return 0;
    if (plen && EVP_CipherUpdate(ctx, out, &len, in, (int)plen) != 1) return 0;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_SIZE, tag) != 1) return 0;
    return EVP_CipherFinal_ex(ctx, out + plen, &len) == 1;
}

void fp_write_header(unsigned char *p, uint32_t receiver, uint64_t counter) {
    put_le32(p, MESSAGE_TRANSPORT);
    put_le32(p + 4, receiver);
    put_le64(p + 8, counter);
}

int fp_parse_u64(PyObject *obj, uint64_t *value) {
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *value = v;
    return 0;
}

static int parse_u32(PyObject *obj, uint32_t *value) {
    unsigned long v = PyLong_AsUnsignedLong(obj);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return -1;
    if (v > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "receiver index above 32 bits");
        return -1;
    }
    *value = (uint32_t)v;
    return 0;
}

/* obj as a PySequence_Fast of at most max items (its size in *count); NULL with an
 * exception set when it is not a sequence or longer ("more than <max> <what>"). */
static PyObject *bounded_sequence(PyObject *obj, Py_ssize_t max, const char *what, Py_ssize_t *count) {
    PyObject *seq = PySequence_Fast(obj, "expected a sequence");
    if (seq == NULL) return NULL;
    *count = PySequence_Fast_GET_SIZE(seq);
    if (*count > max) {
        PyErr_Format(PyExc_ValueError, "more than %zd %s", max, what);
        Py_DECREF(seq);
        return NULL;
    }
    return seq;
}

/* ------------------------------------------------------------------ Sealer */

PyDoc_STRVAR(sealer_seal_doc,
"seal(out, offset, receiver, counter, packet, mtu) -> int\n\n"
"Write one transport message at out[offset:]: header (type 4, receiver, counter),\n"
"then packet padded with zeros to a multiple of 16 (never past mtu), sealed, with its\n"
"16-byte tag. Returns its size (len(packet) + padding + 32). ValueError when it does\n"
"not fit or packet is longer than 65535 bytes.");

static PyObject *sealer_seal(Cipher *self, PyObject *args) {
    Py_buffer out, packet;
    Py_ssize_t offset, mtu;
    PyObject *receiver_obj, *counter_obj;
    uint32_t receiver;
    uint64_t counter;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*nOOy*n", &out, &offset, &receiver_obj, &counter_obj, &packet, &mtu))
        return NULL;
    if (parse_u32(receiver_obj, &receiver) < 0 || fp_parse_u64(counter_obj, &counter) < 0) goto done;
    Py_ssize_t n = packet.len;
    if (n > MAX_PLAINTEXT) {
        PyErr_SetString(PyExc_ValueError, "packet longer than 65535 bytes");
        goto done;
    }
    Py_ssize_t size = n + fp_padding(n, mtu) + MIN_TRANSPORT;
    unsigned char *dst = output_at(&out, offset, size, packet.buf, n);
    if (dst == NULL || cipher_take(self) < 0) goto done;
    fp_write_header(dst, receiver, counter);
    int rc = fp_seal_one(self->ctx, counter, packet.buf, n, size - n - MIN_TRANSPORT, dst + HEADER_SIZE);
    self->busy = 0;
    if (rc < 0) {
        PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 seal failed");
        goto done;
    }
    result = PyLong_FromSsize_t(size);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&packet);
    return result;
}

PyDoc_STRVAR(sealer_seal_run_doc,
"seal_run(out, offset, receiver, counter, packets, mtu) -> list[int]\n\n"
"seal() for each packet of the sequence `packets` (at most 4096), counters counter,\n"
"counter + 1, ..., the messages back to back from out[offset:], in one call with the\n"
"GIL released. Returns the size of each message. Checks everything (sizes, room,\n"
"counter range) before writing anything.");

static PyObject *sealer_seal_run(Cipher *self, PyObject *args) {
    Py_buffer out;
    Py_ssize_t offset, mtu;
    PyObject *receiver_obj, *counter_obj, *packets_obj;
    uint32_t receiver;
    uint64_t counter;
    PyObject *seq = NULL, *result = NULL;
    Py_buffer *bufs = NULL;
    Py_ssize_t *sizes = NULL;
    Py_ssize_t count = 0, got = 0;
    if (!PyArg_ParseTuple(args, "w*nOOOn", &out, &offset, &receiver_obj, &counter_obj, &packets_obj, &mtu))
        return NULL;
    if (parse_u32(receiver_obj, &receiver) < 0 || fp_parse_u64(counter_obj, &counter) < 0) goto done;
    seq = bounded_sequence(packets_obj, MAX_RUN, "packets in one run", &count);
    if (seq == NULL || counters_fit(counter, count) < 0) goto done;
    bufs = PyMem_Calloc(count ? count : 1, sizeof(Py_buffer));
    sizes = PyMem_Calloc(count ? count : 1, sizeof(Py_ssize_t));
    if (bufs == NULL || sizes == NULL) { PyErr_NoMemory(); goto done; }
    if (offset < 0 || offset > out.len) {
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
        goto done;
    }
    Py_ssize_t room = out.len - offset, total = 0;
    for (got = 0; got < count; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) < 0) goto done;
        Py_ssize_t n = bufs[got].len;
        if (n > MAX_PLAINTEXT) {
            got++;
            PyErr_SetString(PyExc_ValueError, "packet longer than 65535 bytes");
            goto done;
        }
        sizes[got] = n + fp_padding(n, mtu) + MIN_TRANSPORT;
        total += sizes[got];
        if (total > room) {
            got++;
            PyErr_SetString(PyExc_ValueError, "transport messages do not fit in the buffer");
            goto done;
        }
    }
    unsigned char *base = (unsigned char *)out.buf + offset;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (overlaps(base, total, bufs[i].buf, bufs[i].len)) {
            PyErr_SetString(PyExc_ValueError, "packet and output overlap");
            goto done;
        }
    }
    if (cipher_take(self) < 0) goto done;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char *dst = base;
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        Py_ssize_t n = bufs[i].len;
        fp_write_header(dst, receiver, counter + i);
        failed = fp_seal_one(self->ctx, counter + i, bufs[i].buf, n, sizes[i] - n - MIN_TRANSPORT,
                          dst + HEADER_SIZE) < 0;
        dst += sizes[i];
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 seal failed");
        goto done;
    }
    result = PyList_New(count);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *v = PyLong_FromSsize_t(sizes[i]);
        if (v == NULL) { Py_CLEAR(result); goto done; }
        PyList_SET_ITEM(result, i, v);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(sizes);
    Py_XDECREF(seq);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(sealer_seal_segments_doc,
"seal_segments(out, offset, receiver, counter, data, segment, mtu) -> int\n\n"
"seal_run() of the packets lying back to back in `data`, each `segment` bytes but the\n"
"last (the segments of one TSO frame, as tcp_split returns them; at most 4096; a\n"
"segment longer than data is one packet), under\n"
"counters counter, counter + 1, ...: one call, the GIL released, no sequence of packets\n"
"to build. Returns the bytes written (the messages back to back from out[offset:]).\n"
"Checks everything (sizes, room, counter range) before writing anything.");

static PyObject *sealer_seal_segments(Cipher *self, PyObject *args) {
    Py_buffer out, data;
    Py_ssize_t offset, segment, mtu;
    PyObject *receiver_obj, *counter_obj;
    uint32_t receiver;
    uint64_t counter;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*nOOy*nn", &out, &offset, &receiver_obj, &counter_obj, &data,
                          &segment, &mtu))
        return NULL;
    if (parse_u32(receiver_obj, &receiver) < 0 || fp_parse_u64(counter_obj, &counter) < 0) goto done;
    Py_ssize_t len = data.len;
    if (segment > len) segment = len;        /* one packet: the whole of data */
    if (segment < (len ? 1 : 0) || segment > MAX_PLAINTEXT) {
        PyErr_SetString(PyExc_ValueError, "segment size out of range");
        goto done;
    }
    Py_ssize_t count = len ? (len + segment - 1) / segment : 0;
    if (count > MAX_RUN) {
        PyErr_Format(PyExc_ValueError, "more than %d packets in one run", MAX_RUN);
        goto done;
    }
    if (counters_fit(counter, count) < 0) goto done;
    Py_ssize_t tail = count ? len - (count - 1) * segment : 0;
    Py_ssize_t full = segment + fp_padding(segment, mtu) + MIN_TRANSPORT;
    Py_ssize_t total = count ? (count - 1) * full + tail + fp_padding(tail, mtu) + MIN_TRANSPORT : 0;
    unsigned char *base = output_at(&out, offset, total, data.buf, len);
    if (base == NULL || cipher_take(self) < 0) goto done;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char *dst = base;
    const unsigned char *src = data.buf;
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        Py_ssize_t n = i == count - 1 ? tail : segment;
        Py_ssize_t pad = fp_padding(n, mtu);
        fp_write_header(dst, receiver, counter + i);
        failed = fp_seal_one(self->ctx, counter + i, src, n, pad, dst + HEADER_SIZE) < 0;
        dst += n + pad + MIN_TRANSPORT;
        src += n;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 seal failed");
        goto done;
    }
    result = PyLong_FromSsize_t(total);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------------------ replay window */

/* The sliding window of meshwg.core.replay.ReplayWindow (RFC 6479, as the Linux kernel and
 * wireguard-go): a ring of 128 blocks of 64 bits, the newest counter `last`. Python owns
 * the state (its ring is an array('Q') of 128 blocks); a call copies it in, applies the
 * run's counters in order and copies it back, so the C and Python checks are one window. */
#define BLOCK_BITS_LOG 6
#define WINDOW_SIZE ((RING_BLOCKS - 1) * 64)

static int replay_load(ReplayState *w, Py_buffer *ring, PyObject *last_obj, PyObject *limit_obj) {
    if (ring->len != RING_BYTES) {
        PyErr_SetString(PyExc_ValueError, "replay ring is not 128 blocks of 8 bytes");
        return -1;
    }
    if (fp_parse_u64(last_obj, &w->last) < 0 || fp_parse_u64(limit_obj, &w->limit) < 0) return -1;
    memcpy(w->ring, ring->buf, RING_BYTES);
    return 0;
}

static void replay_store(const ReplayState *w, Py_buffer *ring) {
    memcpy(ring->buf, w->ring, RING_BYTES);
}

/* ReplayWindow.check: 1 when counter is fresh (and now recorded), 0 when not. */
int fp_replay_apply(ReplayState *w, uint64_t counter) {
    if (counter >= w->limit) return 0;
    uint64_t block = counter >> BLOCK_BITS_LOG;
    if (counter > w->last) {
        uint64_t current = w->last >> BLOCK_BITS_LOG;
        uint64_t advance = block - current;
        if (advance > RING_BLOCKS) advance = RING_BLOCKS;
        for (uint64_t i = 1; i <= advance; i++) w->ring[(current + i) & (RING_BLOCKS - 1)] = 0;
        w->last = counter;
    } else if (w->last - counter > WINDOW_SIZE) {
        return 0;
    }
    uint64_t *slot = &w->ring[block & (RING_BLOCKS - 1)];
    uint64_t bit = (uint64_t)1 << (counter & 63);
    if (*slot & bit) return 0;
    *slot |= bit;
    return 1;
}

PyDoc_STRVAR(replay_run_doc,
"replay_run(ring, last, limit, counters) -> (last, fresh)\n\n"
"ReplayWindow.check for each counter of the sequence `counters` (at most 4096), in\n"
"order, over the window state passed in: ring (a writable buffer of 128 native 64-bit\n"
"blocks, updated in place), last (the newest counter seen) and limit (counters at or\n"
"above it are refused). Returns the new last and one bool per counter, True when it\n"
"was fresh.");

static PyObject *replay_run(PyObject *module, PyObject *args) {
    Py_buffer ring;
    PyObject *last_obj, *limit_obj, *counters_obj, *seq = NULL, *fresh = NULL, *result = NULL;
    ReplayState w;
    if (!PyArg_ParseTuple(args, "w*OOO", &ring, &last_obj, &limit_obj, &counters_obj)) return NULL;
    if (replay_load(&w, &ring, last_obj, limit_obj) < 0) goto done;
    Py_ssize_t count;
    seq = bounded_sequence(counters_obj, MAX_RUN, "counters in one run", &count);
    if (seq == NULL) goto done;
    fresh = PyList_New(count);
    if (fresh == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t counter;
        if (fp_parse_u64(PySequence_Fast_GET_ITEM(seq, i), &counter) < 0) goto done;
        PyObject *b = fp_replay_apply(&w, counter) ? Py_True : Py_False;
        Py_INCREF(b);
        PyList_SET_ITEM(fresh, i, b);
    }
    replay_store(&w, &ring);   /* only when every counter was valid: all or nothing */
    result = Py_BuildValue("(KO)", (unsigned long long)w.last, fresh);
done:
    Py_XDECREF(fresh);
    Py_XDECREF(seq);
    PyBuffer_Release(&ring);
    return result;
}

/* ------------------------------------------------------------------ Opener */

PyDoc_STRVAR(opener_open_doc,
"open(counter, data, offset, length, out, out_offset) -> bool\n\n"
"Open data[offset:offset + length] (ciphertext and its 16-byte tag, the message after\n"
"its header) sealed under `counter`, the plaintext (length - 16 bytes) into\n"
"out[out_offset:]. True when the tag verified; False when not (out's bytes are then\n"
"undefined). ValueError for lengths outside the buffers or below 16.");

static PyObject *opener_open(Cipher *self, PyObject *args) {
    Py_buffer data, out;
    Py_ssize_t offset, length, out_offset;
    PyObject *counter_obj;
    uint64_t counter;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "Oy*nnw*n", &counter_obj, &data, &offset, &length, &out, &out_offset))
        return NULL;
    if (fp_parse_u64(counter_obj, &counter) < 0) goto done;
    if (offset < 0 || length < TAG_SIZE || offset > data.len || data.len - offset < length
            || length - TAG_SIZE > MAX_PLAINTEXT) {
        PyErr_SetString(PyExc_ValueError, "ciphertext outside the buffer or shorter than a tag");
        goto done;
    }
    if (out_offset < 0 || out_offset > out.len || out.len - out_offset < length - TAG_SIZE) {
        PyErr_SetString(PyExc_ValueError, "plaintext does not fit in the buffer");
        goto done;
    }
    const unsigned char *src = (const unsigned char *)data.buf + offset;
    unsigned char *dst = (unsigned char *)out.buf + out_offset;
    if (src != dst && overlaps(src, length, dst, length - TAG_SIZE)) {
        PyErr_SetString(PyExc_ValueError, "ciphertext and output overlap");
        goto done;
    }
    if (cipher_take(self) < 0) goto done;
    int ok = fp_open_one(self->ctx, counter, src, length, dst);
    self->busy = 0;
    result = PyBool_FromLong(ok);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(opener_open_run_doc,
"open_run(data, offset, end, size, receiver, out, out_offset) -> (stop, results)\n\n"
"Open the transport messages laid back to back in data[offset:end], each `size` bytes\n"
"but the last (a UDP GRO run), for as long as each is a transport message (type 4,\n"
"reserved bytes zero, at least 32 bytes) to `receiver` and its plaintext fits in out;\n"
"at most 4096, with the GIL released. Plaintexts go to out[out_offset:], each at a\n"
"multiple of 16 bytes after the one before. Returns where it stopped (offset of the\n"
"first datagram not taken, `end` when all were) and one (counter, plaintext offset,\n"
"plaintext length) per datagram taken, the length -1 when its tag did not verify.\n\n"
"open_run(..., ring, last, limit, expire) -> (stop, results, last) also applies the\n"
"caller's replay window (replay_run's ring, last and limit, the state passed in and\n"
"handed back) to each authentic message's counter: length -2 when the window refused\n"
"it (its plaintext not kept); a message whose counter is >= expire is not opened and\n"
"gets length -3. Without them, replay and expiry checks are the caller's.\n\n"
"open_run(..., ring, last, limit, expire, inner=True) -> (stop, results, last) also reads\n"
"each kept plaintext's inner IP header: every result is (counter, plaintext offset,\n"
"plaintext length, inner length, inner source). Inner length is the header's total length\n"
"(IPv4: bytes 2-3; IPv6: payload length + 40) and inner source its source address\n"
"(IPv4: 4 bytes; IPv6: 16), or -1 and None when the plaintext is not at least an IPv4\n"
"(20 bytes, version 4) or IPv6 (40 bytes, version 6) header, or was not kept. Consecutive\n"
"packets with the same source share one bytes object. The header is only read: whether\n"
"a length is valid or a source allowed is the caller's decision.");

typedef struct {
    uint64_t counter; Py_ssize_t at; Py_ssize_t plen;
    Py_ssize_t length;     /* inner length read from the header, -1: no IPv4/IPv6 header */
    int src_len;           /* inner source: 4, 16, or 0 (none) */
    int src_new;           /* its source differs from the previous kept packet's */
} OpenResult;

/* Read the inner IP header of a kept plaintext (plen > 0) into r; r->src_new compares its
   source with prev's (the previous result with a source, or NULL). */
static void inner_header(OpenResult *r, const unsigned char *o, const OpenResult *prev) {
    const unsigned char *p = o + r->at;
    int version = p[0] >> 4;
    const unsigned char *src;
    if (version == 4 && r->plen >= 20) {
        r->length = ((Py_ssize_t)p[2] << 8) | p[3];
        r->src_len = 4;
        src = p + 12;
    } else if (version == 6 && r->plen >= 40) {
        r->length = (((Py_ssize_t)p[4] << 8) | p[5]) + 40;
        r->src_len = 16;
        src = p + 8;
    } else {
        r->length = -1;
        r->src_len = 0;
        return;
    }
    r->src_new = prev == NULL || prev->src_len != r->src_len
        || memcmp(src, o + prev->at + (prev->src_len == 4 ? 12 : 8), r->src_len) != 0;
}

static PyObject *opener_open_run(Cipher *self, PyObject *args) {
    Py_buffer data, out, ring_buf = {0};
    Py_ssize_t offset, end, size, out_offset;
    PyObject *receiver_obj, *last_obj = NULL, *limit_obj = NULL, *expire_obj = NULL;
    uint32_t receiver;
    PyObject *results = NULL, *result = NULL;
    OpenResult *res = NULL;
    Py_ssize_t count = 0, stop;
    ReplayState window;
    uint64_t expire = UINT64_MAX;
    int inner = 0;
    if (!PyArg_ParseTuple(args, "y*nnnOw*n|w*OOOp", &data, &offset, &end, &size, &receiver_obj, &out,
                          &out_offset, &ring_buf, &last_obj, &limit_obj, &expire_obj, &inner))
        return NULL;
    int windowed = ring_buf.obj != NULL;
    if (parse_u32(receiver_obj, &receiver) < 0) goto done;
    if (windowed) {
        if (last_obj == NULL || limit_obj == NULL || expire_obj == NULL) {
            PyErr_SetString(PyExc_TypeError, "ring needs last, limit and expire");
            goto done;
        }
        if (replay_load(&window, &ring_buf, last_obj, limit_obj) < 0 || fp_parse_u64(expire_obj, &expire) < 0)
            goto done;
    }
    if (offset < 0 || end < offset || end > data.len || size <= 0) {
        PyErr_SetString(PyExc_ValueError, "run outside the buffer or size not positive");
        goto done;
    }
    if (out_offset < 0 || out_offset > out.len) {
        PyErr_SetString(PyExc_ValueError, "out_offset outside the buffer");
        goto done;
    }
    if (overlaps((const unsigned char *)data.buf + offset, end - offset,
                 (unsigned char *)out.buf + out_offset, out.len - out_offset)) {
        PyErr_SetString(PyExc_ValueError, "run and output overlap");
        goto done;
    }
    res = PyMem_Calloc(MAX_RUN, sizeof(OpenResult));
    if (res == NULL) { PyErr_NoMemory(); goto done; }
    if (cipher_take(self) < 0) goto done;
    stop = offset;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *d = data.buf;
    unsigned char *o = out.buf;
    Py_ssize_t po = out_offset;
    const OpenResult *prev = NULL;   /* the last kept result with an inner source (inner) */
    while (stop < end && count < MAX_RUN) {
        Py_ssize_t dlen = end - stop < size ? end - stop : size;
        const unsigned char *msg = d + stop;
        if (dlen < MIN_TRANSPORT || fp_get_le32(msg) != MESSAGE_TRANSPORT || fp_get_le32(msg + 4) != receiver)
            break;
        Py_ssize_t plen = dlen - MIN_TRANSPORT;
        if (plen > MAX_PLAINTEXT || out.len - po < plen) break;
        uint64_t counter = fp_get_le64(msg + 8);
        res[count].counter = counter;
        res[count].at = po;
        if (counter >= expire) {
            res[count++].plen = -3;
            stop += dlen;
            continue;
        }
        int ok = fp_open_one(self->ctx, counter, msg + HEADER_SIZE, dlen - HEADER_SIZE, o + po);
        if (ok && windowed && !fp_replay_apply(&window, counter)) {
            res[count++].plen = -2;
            stop += dlen;
            continue;
        }
        res[count].plen = ok ? plen : -1;
        if (inner && ok && plen > 0) {
            inner_header(&res[count], o, prev);
            if (res[count].src_len) prev = &res[count];
        }
        count++;
        if (ok) {
            Py_ssize_t step = (plen + 15) & ~(Py_ssize_t)15;
            po = out.len - po < step ? out.len : po + step;
        }
        stop += dlen;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    results = PyList_New(count);
    if (results == NULL) goto done;
    PyObject *src = NULL;   /* the current inner source, shared by consecutive packets */
    for (Py_ssize_t i = 0; i < count; i++) {
        OpenResult *r = &res[i];
        PyObject *t = PyTuple_New(inner ? 5 : 3);
        if (t == NULL) { Py_XDECREF(src); goto done; }
        PyList_SET_ITEM(results, i, t);
        PyObject *item[5] = {PyLong_FromUnsignedLongLong(r->counter), PyLong_FromSsize_t(r->at),
                             PyLong_FromSsize_t(r->plen), NULL, NULL};
        if (inner) {
            if (r->plen <= 0 || !r->src_len) {
                item[3] = PyLong_FromLong(-1);
                item[4] = Py_NewRef(Py_None);
            } else {
                if (r->src_new || src == NULL) {
                    Py_XDECREF(src);
                    src = PyBytes_FromStringAndSize(
                        (const char *)out.buf + r->at + (r->src_len == 4 ? 12 : 8), r->src_len);
                }
                item[3] = PyLong_FromSsize_t(r->length);
                item[4] = Py_XNewRef(src);
            }
        }
        int failed = 0;
        for (int k = 0; k < (inner ? 5 : 3); k++) {
            if (item[k] == NULL) failed = 1;
            else PyTuple_SET_ITEM(t, k, item[k]);
        }
        if (failed) { Py_XDECREF(src); goto done; }
    }
    Py_XDECREF(src);
    if (windowed) {
        replay_store(&window, &ring_buf);
        result = Py_BuildValue("(nOK)", stop, results, (unsigned long long)window.last);
    } else {
        result = Py_BuildValue("(nO)", stop, results);
    }
done:
    Py_XDECREF(results);
    PyMem_Free(res);
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (ring_buf.obj != NULL) PyBuffer_Release(&ring_buf);
    return result;
}

/* ------------------------------------------------------------------ types */

static int sealer_init(Cipher *self, PyObject *args, PyObject *kwds) { return cipher_init(self, args, kwds, 1); }
static int opener_init(Cipher *self, PyObject *args, PyObject *kwds) { return cipher_init(self, args, kwds, 0); }

static PyMethodDef sealer_methods[] = {
    {"seal", (PyCFunction)sealer_seal, METH_VARARGS, sealer_seal_doc},
    {"seal_run", (PyCFunction)sealer_seal_run, METH_VARARGS, sealer_seal_run_doc},
    {"seal_segments", (PyCFunction)sealer_seal_segments, METH_VARARGS, sealer_seal_segments_doc},
    {NULL}
};

static PyMethodDef opener_methods[] = {
    {"open", (PyCFunction)opener_open, METH_VARARGS, opener_open_doc},
    {"open_run", (PyCFunction)opener_open_run, METH_VARARGS, opener_open_run_doc},
    {NULL}
};

/* The two cipher types differ in name, documentation, direction and methods only. */
#define CIPHER_TYPE(NAME, DOC, INIT, METHODS) {                        \
    PyVarObject_HEAD_INIT(NULL, 0)                                      \
    .tp_name = "meshwg.accel._fastpath." NAME,                          \
    .tp_doc = DOC,                                                      \
    .tp_basicsize = sizeof(Cipher),                                     \
    .tp_flags = Py_TPFLAGS_DEFAULT,                                     \
    .tp_new = PyType_GenericNew,                                        \
    .tp_init = (initproc)INIT,                                          \
    .tp_dealloc = (destructor)cipher_dealloc,                           \
    .tp_methods = METHODS,                                              \
}

PyTypeObject SealerType = CIPHER_TYPE(
    "Sealer", "Sealer(key): WireGuard transport messages sealed under one 32-byte key "
    "(one EVP_CIPHER_CTX, key schedule set up once). Not for two threads at once.",
    sealer_init, sealer_methods);

PyTypeObject OpenerType = CIPHER_TYPE(
    "Opener", "Opener(key): WireGuard transport messages opened under one 32-byte key "
    "(one EVP_CIPHER_CTX). Not for two threads at once.",
    opener_init, opener_methods);

/* ------------------------------------------------------------------ checksums */

/* The one's-complement sum of the 16-bit big-endian words of p[0:n] (odd: a zero byte
 * appended), reduced modulo 0xFFFF as meshwg.tun.checksum.ones_sum reduces it. Words are
 * added eight bytes at a time in the machine's byte order and the folded sum swapped at
 * the end (RFC 1071 section 2 (B): the sum is independent of byte order up to a swap). */
static uint64_t ones_sum(const unsigned char *p, Py_ssize_t n) {
    uint64_t sum = 0;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        sum += (w & 0xFFFFFFFFu) + (w >> 32);     /* < 2**33 per step: no overflow below 2**60 bytes */
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        sum += w;
        p += 2;
        n -= 2;
    }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n) sum += p[0];                   /* the padded last word, read little-endian */
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    sum = ((sum & 0xFF) << 8) | (sum >> 8);
#else
    if (n) sum += (uint64_t)p[0] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
#endif
    return sum % 0xFFFF;
}

PyDoc_STRVAR(piece_sums_doc,
"piece_sums(buf, starts) -> list[int]\n\n"
"meshwg.tun.checksum.ones_sum of each piece buf[starts[i]:starts[i + 1]] (the last to\n"
"the end of buf): RFC 1071 sums reduced modulo 0xFFFF. starts: a sequence of\n"
"non-decreasing offsets within buf, at most 65536.");

static PyObject *piece_sums(PyObject *module, PyObject *args) {
    Py_buffer buf;
    PyObject *starts_obj, *seq = NULL, *result = NULL;
    Py_ssize_t *starts = NULL;
    if (!PyArg_ParseTuple(args, "y*O", &buf, &starts_obj)) return NULL;
    Py_ssize_t count;
    seq = bounded_sequence(starts_obj, MAX_PIECES, "pieces", &count);
    if (seq == NULL) goto done;
    starts = PyMem_Calloc(count + 1, sizeof(Py_ssize_t));
    if (starts == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t s = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i), PyExc_OverflowError);
        if (s == -1 && PyErr_Occurred()) goto done;
        if (s < 0 || s > buf.len || (i && s < starts[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "starts must be non-decreasing offsets within the buffer");
            goto done;
        }
        starts[i] = s;
    }
    starts[count] = buf.len;
    result = PyList_New(count);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(
            ones_sum((const unsigned char *)buf.buf + starts[i], starts[i + 1] - starts[i]));
        if (v == NULL) { Py_CLEAR(result); goto done; }
        PyList_SET_ITEM(result, i, v);
    }
done:
    PyMem_Free(starts);
    Py_XDECREF(seq);
    PyBuffer_Release(&buf);
    return result;
}

/* ------------------------------------------------------------------ TSO split */

static uint32_t get_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be16(unsigned char *p, uint32_t v) { p[0] = (v >> 8) & 0xff; p[1] = v & 0xff; }

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

/* The checksum field for a sum (meshwg.tun.checksum.checksum_from_sum: -total % 0xFFFF). */
static uint32_t checksum_of(uint64_t total) {
    uint64_t t = total % 0xFFFF;
    return t ? (uint32_t)(0xFFFF - t) : 0;
}

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80

PyDoc_STRVAR(tcp_split_doc,
"tcp_split(packet, l4_start, mss) -> bytes\n\n"
"TSO in software (meshwg.tun.tso): the IPv4 or IPv6 TCP packet cut into segments of at\n"
"most `mss` payload bytes, back to back in one bytes object, each the headers plus mss\n"
"bytes but the last. Each segment gets its IP length (IPv4: ID + i and the header\n"
"checksum), sequence number and TCP checksum; FIN and PSH stay on the last segment,\n"
"CWR on the first, as the kernel's TSO does. ValueError for headers that do not fit.");

static PyObject *tcp_split(PyObject *module, PyObject *args) {
    Py_buffer pkt;
    Py_ssize_t l4, mss;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*nn", &pkt, &l4, &mss)) return NULL;
    const unsigned char *in = pkt.buf;
    Py_ssize_t len = pkt.len;
    if (len < 1 || len > MAX_PLAINTEXT || mss < 1 || mss > MAX_PLAINTEXT) {
        PyErr_SetString(PyExc_ValueError, "TSO packet or segment size out of range");
        goto done;
    }
    int version = in[0] >> 4;
    if (!((version == 4 && l4 >= 20 && l4 == (in[0] & 0x0F) * 4) || (version == 6 && l4 >= 40))
            || l4 + 20 > len) {
        PyErr_SetString(PyExc_ValueError, "IP header does not match csum_start");
        goto done;
    }
    Py_ssize_t thl = (in[l4 + 12] >> 4) * 4;
    Py_ssize_t hlen = l4 + thl;
    if (thl < 20 || hlen > len) {
        PyErr_SetString(PyExc_ValueError, "bad TCP header length");
        goto done;
    }
    Py_ssize_t payload = len - hlen;
    Py_ssize_t count = payload ? (payload + mss - 1) / mss : 1;
    result = PyBytes_FromStringAndSize(NULL, count * hlen + payload);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    uint32_t seq0 = get_be32(in + l4 + 4);
    unsigned flags = in[l4 + 13];
    uint32_t ip_id0 = (uint32_t)in[4] << 8 | in[5];
    /* the pseudo-header's addresses and protocol */
    uint64_t addr_sum = version == 4 ? ones_sum(in + 12, 8) : ones_sum(in + 8, 32);
    addr_sum += 6;
    Py_BEGIN_ALLOW_THREADS
    unsigned char *o = out;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n = i == count - 1 ? payload - i * mss : mss;
        int last = i == count - 1;
        memcpy(o, in, hlen);
        memcpy(o + hlen, in + hlen + i * mss, n);
        if (version == 4) {
            put_be16(o + 2, (uint32_t)(hlen + n));
            put_be16(o + 4, (ip_id0 + (uint32_t)i) & 0xFFFF);
            o[10] = o[11] = 0;
            put_be16(o + 10, checksum_of(ones_sum(o, l4)));
        } else {
            put_be16(o + 4, (uint32_t)(hlen - 40 + n));
        }
        put_be32(o + l4 + 4, seq0 + (uint32_t)(i * mss));
        unsigned f = flags;
        if (!last) f &= ~(unsigned)(TCP_FIN | TCP_PSH);
        if (i) f &= ~(unsigned)TCP_CWR;
        o[l4 + 13] = (unsigned char)f;
        o[l4 + 16] = o[l4 + 17] = 0;
        uint64_t total = addr_sum + (uint64_t)(thl + n) + ones_sum(o + l4, thl + n);
        put_be16(o + l4 + 16, checksum_of(total));
        o += hlen + n;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&pkt);
    return result;
}

/* ------------------------------------------------------------------ GRO coalescing */

#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define NOT_COALESCABLE (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_ECE | TCP_CWR)
#define MAX_COALESCED 65535
#define VNET_SIZE 10

typedef struct {
    const unsigned char *p;      /* the packet */
    Py_ssize_t len, hlen, l4, payload;
    uint32_t seq;
    int psh, candidate;
    Py_ssize_t next;             /* next packet of its group, -1 at the end */
} GroPacket;

typedef struct {
    Py_ssize_t first, last, count;
    Py_ssize_t mss, length;
    uint32_t next_seq;
    int closed, psh;
} GroGroup;

/* A TCP segment GRO may merge (meshwg.tun.gro._tcp_candidate): IPv4 without options or
 * fragments and with DF, or IPv6 without extension headers; lengths that agree; ACK, no
 * SYN/FIN/RST/URG/ECE/CWR; a payload. */
static int gro_candidate(GroPacket *g) {
    const unsigned char *p = g->p;
    Py_ssize_t n = g->len;
    if (n < 1) return 0;
    if (p[0] == 0x45) {
        if (n < 40 || p[9] != 6 || (p[6] & 0xBF) || p[7] || !(p[6] & 0x40)) return 0;
        if (((Py_ssize_t)p[2] << 8 | p[3]) != n) return 0;
        g->l4 = 20;
    } else if (p[0] >> 4 == 6) {
        if (n < 60 || p[6] != 6 || ((Py_ssize_t)p[4] << 8 | p[5]) + 40 != n) return 0;
        g->l4 = 40;
    } else {
        return 0;
    }
    Py_ssize_t thl = (p[g->l4 + 12] >> 4) * 4;
    unsigned flags = p[g->l4 + 13];
    g->hlen = g->l4 + thl;
    g->payload = n - g->hlen;
    if (thl < 20 || g->payload <= 0 || (flags & NOT_COALESCABLE) || !(flags & TCP_ACK)) return 0;
    g->seq = get_be32(p + g->l4 + 4);
    g->psh = (flags & TCP_PSH) != 0;
    return 1;
}

static int gro_varying(Py_ssize_t i, Py_ssize_t l4) {
    if (l4 == 20 && (i == 2 || i == 3 || i == 4 || i == 5 || i == 10 || i == 11)) return 1;
    if (l4 == 40 && (i == 4 || i == 5)) return 1;
    return (i >= l4 + 4 && i <= l4 + 7) || i == l4 + 13 || i == l4 + 16 || i == l4 + 17;
}

/* Do two candidates share every header byte but lengths, IDs, checksums, seq and flags? */
static int gro_match(const GroPacket *a, const GroPacket *b) {
    if (a->hlen != b->hlen || a->l4 != b->l4) return 0;
    for (Py_ssize_t i = 0; i < a->hlen; i++)
        if (a->p[i] != b->p[i] && !gro_varying(i, a->l4)) return 0;
    return 1;
}

static const unsigned char *gro_flow(const GroPacket *g, Py_ssize_t *len) {
    *len = g->l4 == 20 ? 12 : 36;
    return g->p + (g->l4 == 20 ? 12 : 8);
}

static uint64_t gro_hash(const unsigned char *f, Py_ssize_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < len; i++) h = (h ^ f[i]) * 1099511628211ULL;
    return h;
}

static int gro_group_valid(const GroPacket *pk, const GroGroup *gr) {
    const GroPacket *first = &pk[gr->first];
    Py_ssize_t l4 = first->l4;
    uint64_t addr = (l4 == 20 ? ones_sum(first->p + 12, 8) : ones_sum(first->p + 8, 32)) + 6;
    for (Py_ssize_t i = gr->first; i >= 0; i = pk[i].next) {
        const GroPacket *g = &pk[i];
        if (l4 == 20 && ones_sum(g->p, 20)) return 0;
        if ((addr + (uint64_t)(g->len - l4) + ones_sum(g->p + l4, g->len - l4)) % 0xFFFF) return 0;
    }
    return 1;
}

static PyObject *gro_plain(const GroPacket *g) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, VNET_SIZE + g->len);
    if (b == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(b);
    memset(o, 0, VNET_SIZE);
    memcpy(o + VNET_SIZE, g->p, g->len);
    return b;
}

/* One packet with a GSO virtio_net_hdr for a group (meshwg.tun.gro._finish). */
static PyObject *gro_finish(const GroPacket *pk, const GroGroup *gr) {
    const GroPacket *first = &pk[gr->first];
    Py_ssize_t l4 = first->l4, hlen = first->hlen, total = gr->length;
    PyObject *b = PyBytes_FromStringAndSize(NULL, VNET_SIZE + total);
    if (b == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(b);
    uint8_t flags = 1, gso_type = l4 == 20 ? 1 : 4;       /* NEEDS_CSUM; GSO_TCPV4 / TCPV6 */
    uint16_t hdr_len = (uint16_t)hlen, gso_size = (uint16_t)gr->mss, cstart = (uint16_t)l4, coff = 16;
    o[0] = flags;
    o[1] = gso_type;
    memcpy(o + 2, &hdr_len, 2);                           /* native byte order, as the kernel's */
    memcpy(o + 4, &gso_size, 2);
    memcpy(o + 6, &cstart, 2);
    memcpy(o + 8, &coff, 2);
    unsigned char *h = o + VNET_SIZE;
    memcpy(h, first->p, hlen);
    uint64_t addr;
    if (l4 == 20) {
        put_be16(h + 2, (uint32_t)total);
        h[10] = h[11] = 0;
        put_be16(h + 10, checksum_of(ones_sum(h, 20)));
        addr = ones_sum(h + 12, 8);
    } else {
        put_be16(h + 4, (uint32_t)(total - 40));
        addr = ones_sum(h + 8, 32);
    }
    if (gr->psh) h[l4 + 13] |= TCP_PSH;
    uint64_t partial = (addr + 6 + (uint64_t)(total - l4)) % 0xFFFF;   /* CHECKSUM_PARTIAL */
    put_be16(h + l4 + 16, partial ? (uint32_t)partial : 0xFFFF);
    unsigned char *o2 = h + hlen;
    for (Py_ssize_t i = gr->first; i >= 0; i = pk[i].next) {
        memcpy(o2, pk[i].p + pk[i].hlen, pk[i].payload);
        o2 += pk[i].payload;
    }
    return b;
}

PyDoc_STRVAR(coalesce_doc,
"coalesce(packets, verify_checksums) -> list[bytes]\n\n"
"GRO in software: meshwg.tun.gro.coalesce_packets in one call, with the same result:\n"
"TUN writes (each with its virtio_net_hdr) for IP packets about to enter the kernel,\n"
"consecutive in-order TCP segments of one flow merged under a GSO header, everything else\n"
"passed through with an empty header; with verify_checksums a group with a wrong IPv4\n"
"header or TCP checksum is written packet by packet.");

static PyObject *coalesce(PyObject *module, PyObject *args) {
    PyObject *packets_obj, *seq = NULL, *result = NULL;
    int verify;
    Py_buffer *bufs = NULL;
    GroPacket *pk = NULL;
    GroGroup *groups = NULL;
    Py_ssize_t *items = NULL, *table = NULL;
    Py_ssize_t count = 0, got = 0, ngroups = 0, nitems = 0;
    if (!PyArg_ParseTuple(args, "Op", &packets_obj, &verify)) return NULL;
    seq = PySequence_Fast(packets_obj, "packets must be a sequence");
    if (seq == NULL) return NULL;
    count = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t slots = 16;
    while (slots < 2 * count) slots <<= 1;
    bufs = PyMem_Calloc(count + 1, sizeof(Py_buffer));
    pk = PyMem_Calloc(count + 1, sizeof(GroPacket));
    groups = PyMem_Calloc(count + 1, sizeof(GroGroup));
    items = PyMem_Calloc(count + 1, sizeof(Py_ssize_t));  /* >= 0 packet, < 0: group -1-i */
    table = PyMem_Malloc(slots * sizeof(Py_ssize_t));
    if (!bufs || !pk || !groups || !items || !table) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < slots; i++) table[i] = -1;
    for (got = 0; got < count; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) < 0) goto done;
        pk[got].p = bufs[got].buf;
        pk[got].len = bufs[got].len;
        pk[got].next = -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        GroPacket *g = &pk[i];
        if (!gro_candidate(g)) {
            items[nitems++] = i;
            continue;
        }
        Py_ssize_t flen;
        const unsigned char *flow = gro_flow(g, &flen);
        Py_ssize_t slot = (Py_ssize_t)(gro_hash(flow, flen) & (uint64_t)(slots - 1));
        GroGroup *gr = NULL;
        for (; table[slot] >= 0; slot = (slot + 1) & (slots - 1)) {
            const GroPacket *f = &pk[groups[table[slot]].first];
            Py_ssize_t flen2;
            const unsigned char *flow2 = gro_flow(f, &flen2);
            if (flen2 == flen && memcmp(flow, flow2, flen) == 0) {
                gr = &groups[table[slot]];
                break;
            }
        }
        if (gr != NULL && !gr->closed && g->seq == gr->next_seq && gro_match(g, &pk[gr->first])
                && g->payload <= gr->mss && gr->length + g->payload <= MAX_COALESCED) {
            pk[gr->last].next = i;
            gr->last = i;
            gr->count++;
            gr->length += g->payload;
            gr->next_seq = g->seq + (uint32_t)g->payload;
            if (g->payload < gr->mss || g->psh) {
                gr->closed = 1;
                gr->psh = g->psh;
            }
            continue;
        }
        GroGroup *ng = &groups[ngroups];
        ng->first = ng->last = i;
        ng->count = 1;
        ng->mss = g->payload;
        ng->length = g->len;
        ng->next_seq = g->seq + (uint32_t)g->payload;
        ng->psh = ng->closed = g->psh;
        table[slot] = ngroups;               /* the flow's open group from now on */
        items[nitems++] = -1 - ngroups;
        ngroups++;
    }
    result = PyList_New(0);
    if (result == NULL) goto done;
    for (Py_ssize_t k = 0; k < nitems; k++) {
        if (items[k] >= 0) {
            PyObject *b = gro_plain(&pk[items[k]]);
            if (b == NULL || PyList_Append(result, b) < 0) { Py_XDECREF(b); Py_CLEAR(result); goto done; }
            Py_DECREF(b);
            continue;
        }
        GroGroup *gr = &groups[-1 - items[k]];
        if (gr->count > 1 && (!verify || gro_group_valid(pk, gr))) {
            PyObject *b = gro_finish(pk, gr);
            if (b == NULL || PyList_Append(result, b) < 0) { Py_XDECREF(b); Py_CLEAR(result); goto done; }
            Py_DECREF(b);
            continue;
        }
        for (Py_ssize_t i = gr->first; i >= 0; i = pk[i].next) {
            PyObject *b = gro_plain(&pk[i]);
            if (b == NULL || PyList_Append(result, b) < 0) { Py_XDECREF(b); Py_CLEAR(result); goto done; }
            Py_DECREF(b);
        }
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(pk);
    PyMem_Free(groups);
    PyMem_Free(items);
    PyMem_Free(table);
    Py_XDECREF(seq);
    return result;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef module_methods[] = {
    {"piece_sums", piece_sums, METH_VARARGS, piece_sums_doc},
    {"tcp_split", tcp_split, METH_VARARGS, tcp_split_doc},
    {"coalesce", coalesce, METH_VARARGS, coalesce_doc},
    {"replay_run", replay_run, METH_VARARGS, replay_run_doc},
    {NULL}
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "meshwg.accel._fastpath",
    "WireGuard's transport data path over OpenSSL's libcrypto (meshwg.accel).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&SealerType) < 0 || PyType_Ready(&OpenerType) < 0 || crossing_ready() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL) return NULL;
    Py_INCREF(&SealerType);
    if (PyModule_AddObject(m, "Sealer", (PyObject *)&SealerType) < 0) goto fail;
    Py_INCREF(&OpenerType);
    if (PyModule_AddObject(m, "Opener", (PyObject *)&OpenerType) < 0) goto fail;
    Py_INCREF(&CrossingType);
    if (PyModule_AddObject(m, "Crossing", (PyObject *)&CrossingType) < 0) goto fail;
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "MAX_RUN", MAX_RUN) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
