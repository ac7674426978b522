/* meshwg.accel._fastpath.Crossing: the lone-packet crossing in one compiled call.
 *
 * A lone packet (a ping, an ACK after an idle spell) costs what the code it runs costs
 * on a cold CPU. meshwg.core.lone decides such a packet with a few lines of Python; this
 * does the same work without running any: one call reads the TUN device, routes the
 * packet by the protocol's own tables, seals it and sends it (Crossing.tun), or receives
 * a datagram, opens it, checks its counter and inner source, writes it to the TUN device
 * and, when the kernel has queued its answer by then (a ping's echo), reads, seals and
 * sends that too (Crossing.udp). The system calls run with the GIL released.
 *
 * Python keeps every decision: the state read here is the protocol's (the route memo
 * AllowedIPs.recent, and AllowedIPs.lookup_recent on a miss; peer.current,
 * peer.endpoint, keypair.created, keypair.send_next, keypair.replay, the timers'
 * reject_after_time and reject_after_messages, protocol.mtu), read at each call, and the
 * checks are meshwg.core.lone's (seal_lone, open_lone), in the same order. Where lone.py
 * would hand a packet to the batch path, so does this, before any state changed: the
 * packet goes back to Python (the caller runs the Python path on it, which counts and
 * decides it). The bookkeeping after a packet (timers, counters, roaming) stays Python's
 * (meshwg.core.lone.finish_lone), called with what this returns.
 *
 * Every length is checked against its buffer; input from the network never sizes an
 * allocation. The caller holds the device lock for the whole call. */

#include "_fastpath.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define RECV_SIZE 65535
#define MAX_LONE 4096                 /* bound on the lone sizes a caller may ask for */

/* outcomes of an opened lone datagram (Crossing.udp's `outcome`) */
enum { WRITTEN = 0, KEEPALIVE = 1, INNER_MALFORMED = 2, INNER_NOT_ALLOWED = 3 };

static PyObject *S_allowed_ips, *S_recent, *S_lookup_recent, *S_keypairs_by_index, *S_timers,
    *S_mtu, *S_reject_after_time, *S_reject_after_messages, *S_current, *S_endpoint,
    *S_created, *S_send_next, *S_remote_index, *S_sealer, *S_opener, *S_replay, *S_ring,
    *S_last, *S_limit, *S_peer, *S_acquire, *S_release;

int crossing_ready(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(S_allowed_ips, "allowed_ips"); INTERN(S_recent, "recent");
    INTERN(S_lookup_recent, "lookup_recent"); INTERN(S_keypairs_by_index, "keypairs_by_index");
    INTERN(S_timers, "timers"); INTERN(S_mtu, "mtu");
    INTERN(S_reject_after_time, "reject_after_time");
    INTERN(S_reject_after_messages, "reject_after_messages");
    INTERN(S_current, "current"); INTERN(S_endpoint, "endpoint"); INTERN(S_created, "created");
    INTERN(S_send_next, "send_next"); INTERN(S_remote_index, "remote_index");
    INTERN(S_sealer, "_sealer"); INTERN(S_opener, "_opener"); INTERN(S_replay, "replay");
    INTERN(S_ring, "ring"); INTERN(S_last, "last"); INTERN(S_limit, "limit");
    INTERN(S_peer, "peer"); INTERN(S_acquire, "acquire"); INTERN(S_release, "release");
#undef INTERN
    return PyType_Ready(&CrossingType);
}

typedef struct {
    PyObject_HEAD
    PyObject *protocol;
    PyObject *frame;              /* the TUN device's frame buffer (a bytearray) */
    int tun_fd, hdr, udp_fd, v6, gro;
    Py_ssize_t tun_stop, udp_stop;
    unsigned char *rbuf;          /* one received datagram */
    unsigned char *obuf;          /* hdr zero bytes, then an opened packet */
    unsigned char *sbuf;          /* one sealed lone packet */
} Crossing;

/* What one call reads of the protocol: owned references, dropped by limits_clear. */
typedef struct {
    PyObject *allowed_ips, *recent, *timers;
    double reject_after_time;
    uint64_t reject_after_messages;
    Py_ssize_t mtu;
} Limits;

static void limits_clear(Limits *l) {
    Py_CLEAR(l->allowed_ips);
    Py_CLEAR(l->recent);
    Py_CLEAR(l->timers);
}

static int limits_load(Crossing *self, Limits *l) {
    memset(l, 0, sizeof *l);
    PyObject *v;
    if ((l->allowed_ips = PyObject_GetAttr(self->protocol, S_allowed_ips)) == NULL) goto fail;
    if ((l->recent = PyObject_GetAttr(l->allowed_ips, S_recent)) == NULL) goto fail;
    if (!PyDict_Check(l->recent)) {
        PyErr_SetString(PyExc_TypeError, "AllowedIPs.recent is not a dict");
        goto fail;
    }
    if ((l->timers = PyObject_GetAttr(self->protocol, S_timers)) == NULL) goto fail;
    if ((v = PyObject_GetAttr(l->timers, S_reject_after_time)) == NULL) goto fail;
    l->reject_after_time = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (l->reject_after_time == -1.0 && PyErr_Occurred()) goto fail;
    if ((v = PyObject_GetAttr(l->timers, S_reject_after_messages)) == NULL) goto fail;
    int rc = fp_parse_u64(v, &l->reject_after_messages);
    Py_DECREF(v);
    if (rc < 0) goto fail;
    if ((v = PyObject_GetAttr(self->protocol, S_mtu)) == NULL) goto fail;
    l->mtu = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (l->mtu == -1 && PyErr_Occurred()) goto fail;
    return 0;
fail:
    limits_clear(l);
    return -1;
}

/* The peer routed to a raw 4- or 16-byte address: lookup_recent (its memo first, the
 * method on a miss). A new reference, Py_None when none, NULL with an exception set. */
static PyObject *route(const Limits *l, const unsigned char *address, Py_ssize_t n) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)address, n);
    if (key == NULL) return NULL;
    PyObject *peer = PyDict_GetItemWithError(l->recent, key);
    if (peer != NULL) {
        Py_INCREF(peer);
    } else if (!PyErr_Occurred()) {
        peer = PyObject_CallMethodOneArg(l->allowed_ips, S_lookup_recent, key);
    }
    Py_DECREF(key);
    return peer;
}

/* A keypair's float `created` (seconds). -1 with an exception set on error. */
static int keypair_age_ok(PyObject *kp, double now, const Limits *l, int *ok) {
    PyObject *v = PyObject_GetAttr(kp, S_created);
    if (v == NULL) return -1;
    double created = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (created == -1.0 && PyErr_Occurred()) return -1;
    *ok = now - created < l->reject_after_time;
    return 0;
}

/* endpoint (host, port) as the socket's address: 1 made, 0 not one this path sends to
 * (the caller declines: Python's send takes it), -1 error. */
static int endpoint_address(Crossing *self, PyObject *endpoint, struct sockaddr_storage *sa,
                            socklen_t *salen) {
    if (!PyTuple_CheckExact(endpoint) || PyTuple_GET_SIZE(endpoint) != 2) return 0;
    PyObject *host_obj = PyTuple_GET_ITEM(endpoint, 0), *port_obj = PyTuple_GET_ITEM(endpoint, 1);
    if (!PyUnicode_Check(host_obj) || !PyLong_Check(port_obj)) return 0;
    long port = PyLong_AsLong(port_obj);
    if (port == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
    if (port < 0 || port > 65535) return 0;
    Py_ssize_t hlen;
    const char *host = PyUnicode_AsUTF8AndSize(host_obj, &hlen);
    if (host == NULL) { PyErr_Clear(); return 0; }
    if (hlen > 45 || strchr(host, '%') != NULL) return 0;   /* a scoped address: Python's */
    memset(sa, 0, sizeof *sa);
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        if (self->v6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)port);
            s6->sin6_addr.s6_addr[10] = 0xff;
            s6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&s6->sin6_addr.s6_addr[12], &a4, 4);
            *salen = sizeof *s6;
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)port);
            s4->sin_addr = a4;
            *salen = sizeof *s4;
        }
        return 1;
    }
    if (self->v6 && inet_pton(AF_INET6, host, &a6) == 1) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        s6->sin6_addr = a6;
        *salen = sizeof *s6;
        return 1;
    }
    return 0;
}

/* The source of a received datagram as recv_one gives it: (host, port), an IPv4-mapped
 * address as plain IPv4, a scoped IPv6 address with its "%interface" as the socket module
 * writes it. NULL with an exception set on error. */
static PyObject *source_tuple(const struct sockaddr_storage *sa) {
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    int port;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &s4->sin_addr, text, sizeof text) == NULL) goto bad;
        port = ntohs(s4->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            if (inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], text, sizeof text) == NULL) goto bad;
        } else if (inet_ntop(AF_INET6, &s6->sin6_addr, text, INET6_ADDRSTRLEN) == NULL) {
            goto bad;
        } else if (s6->sin6_scope_id) {
            char name[IF_NAMESIZE];
            size_t at = strlen(text);
            if (if_indextoname(s6->sin6_scope_id, name) != NULL)
                snprintf(text + at, sizeof text - at, "%%%s", name);
            else
                snprintf(text + at, sizeof text - at, "%%%u", (unsigned)s6->sin6_scope_id);
        }
        port = ntohs(s6->sin6_port);
    } else {
        goto bad;
    }
    return Py_BuildValue("(si)", text, port);
bad:
    PyErr_SetString(PyExc_ValueError, "received from an address of an unknown family");
    return NULL;
}

/* sendto with the GIL released; a full buffer or an unreachable endpoint drops the
 * datagram (meshwg.conn.udp.UdpSocket.send). 0, or -1 with OSError set. */
static int send_datagram(int fd, const unsigned char *buf, Py_ssize_t n,
                         const struct sockaddr_storage *sa, socklen_t salen) {
    ssize_t rc;
    int err;
    do {
        Py_BEGIN_ALLOW_THREADS
        rc = sendto(fd, buf, (size_t)n, 0, (const struct sockaddr *)sa, salen);
        err = errno;
        Py_END_ALLOW_THREADS
    } while (rc < 0 && err == EINTR);
    if (rc >= 0) return 0;
    switch (err) {
    case EAGAIN: case ENETUNREACH: case EHOSTUNREACH: case EAFNOSUPPORT:
    case EINVAL: case ECONNREFUSED: case EPERM: case EADDRNOTAVAIL:
        return 0;
    }
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* The packet at frame[hdr:n] back to Python as a view (the caller's lone path takes it). */
static PyObject *frame_view(Crossing *self, Py_ssize_t n) {
    PyObject *view = PyMemoryView_FromObject(self->frame);
    if (view == NULL) return NULL;
    PyObject *start = PyLong_FromSsize_t(self->hdr), *stop = PyLong_FromSsize_t(n);
    PyObject *slice = start && stop ? PySlice_New(start, stop, NULL) : NULL;
    PyObject *result = NULL;
    if (slice != NULL) result = PyObject_GetItem(view, slice);
    Py_XDECREF(slice);
    Py_XDECREF(start);
    Py_XDECREF(stop);
    Py_DECREF(view);
    return result;
}

/* Read the TUN device once and cross a lone packet: see Crossing.tun's doc. */
static PyObject *cross_tun(Crossing *self, double now, const Limits *l) {
    if (!PyByteArray_CheckExact(self->frame) || PyByteArray_GET_SIZE(self->frame) < self->hdr + 1) {
        PyErr_SetString(PyExc_ValueError, "frame buffer too small");
        return NULL;
    }
    unsigned char *frame = (unsigned char *)PyByteArray_AS_STRING(self->frame);
    size_t room = (size_t)PyByteArray_GET_SIZE(self->frame);
    ssize_t got;
    int err;
    Py_BEGIN_ALLOW_THREADS
    got = read(self->tun_fd, frame, room);
    err = errno;
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (err == EAGAIN || err == EINTR) Py_RETURN_NONE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_ssize_t n = got;
    if (n == 0) Py_RETURN_NONE;               /* no frame (a hang-up): nothing read */
    if (n <= self->hdr || n > self->tun_stop + self->hdr || (self->hdr && (frame[0] || frame[1])))
        return PyLong_FromSsize_t(n);         /* not lone: the batch path's, read */
    const unsigned char *packet = frame + self->hdr;
    Py_ssize_t plen = n - self->hdr;
    int version = packet[0] >> 4;
    const unsigned char *dst;
    Py_ssize_t alen;
    if (version == 4 && plen >= 20) { dst = packet + 16; alen = 4; }
    else if (version == 6 && plen >= 40) { dst = packet + 24; alen = 16; }
    else return frame_view(self, n);          /* malformed: Python's to decide */

    PyObject *peer = NULL, *kp = NULL, *endpoint = NULL, *sealer = NULL, *v = NULL, *result = NULL;
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    uint64_t counter;
    uint32_t remote;
    int ok;
    if ((peer = route(l, dst, alen)) == NULL) goto done;
    if (peer == Py_None) goto decline;
    if ((kp = PyObject_GetAttr(peer, S_current)) == NULL) goto done;
    if ((endpoint = PyObject_GetAttr(peer, S_endpoint)) == NULL) goto done;
    if (kp == Py_None || endpoint == Py_None) goto decline;
    if (keypair_age_ok(kp, now, l, &ok) < 0) goto done;
    if (!ok) goto decline;
    if ((v = PyObject_GetAttr(kp, S_send_next)) == NULL || fp_parse_u64(v, &counter) < 0) goto done;
    Py_CLEAR(v);
    if (counter >= l->reject_after_messages) goto decline;
    if ((sealer = PyObject_GetAttr(kp, S_sealer)) == NULL) goto done;
    if (Py_TYPE(sealer) != &SealerType || ((Cipher *)sealer)->ctx == NULL
            || ((Cipher *)sealer)->busy) goto decline;     /* not made yet: Python makes it */
    int made = endpoint_address(self, endpoint, &sa, &salen);
    if (made < 0) goto done;
    if (!made) goto decline;
    if ((v = PyObject_GetAttr(kp, S_remote_index)) == NULL) goto done;
    unsigned long r = PyLong_AsUnsignedLong(v);
    if (r == (unsigned long)-1 && PyErr_Occurred()) goto done;
    if (r > 0xFFFFFFFFUL) goto decline;
    remote = (uint32_t)r;
    Py_CLEAR(v);
    /* the counter is taken (Keypair.next_counter) */
    if ((v = PyLong_FromUnsignedLongLong(counter + 1)) == NULL) goto done;
    if (PyObject_SetAttr(kp, S_send_next, v) < 0) goto done;
    Py_CLEAR(v);
    Py_ssize_t pad = fp_padding(plen, l->mtu);
    Py_ssize_t size = plen + pad + MIN_TRANSPORT;
    fp_write_header(self->sbuf, remote, counter);
    if (fp_seal_one(((Cipher *)sealer)->ctx, counter, packet, plen, pad, self->sbuf + HEADER_SIZE) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 seal failed");
        goto done;
    }
    if (send_datagram(self->udp_fd, self->sbuf, size, &sa, salen) < 0) goto done;
    result = Py_BuildValue("(OOnKO)", peer, kp, size, (unsigned long long)counter, endpoint);
    goto done;
decline:
    result = frame_view(self, n);
done:
    Py_XDECREF(v);
    Py_XDECREF(sealer);
    Py_XDECREF(endpoint);
    Py_XDECREF(kp);
    Py_XDECREF(peer);
    return result;
}

static double parse_now(PyObject *args) {
    double now;
    if (!PyArg_ParseTuple(args, "d", &now)) return -1.0;
    return now;
}

PyDoc_STRVAR(crossing_tun_doc,
"tun(now) -> None | int | memoryview | (peer, keypair, size, counter, endpoint)\n\n"
"Read the TUN device once (now: the protocol's time, seconds). None: nothing was ready.\n"
"An int n: a frame of n bytes (virtio header included) that is not a lone packet (longer\n"
"than tun_stop, or with offload work) was read into the frame buffer: the batch path's.\n"
"A memoryview: a lone packet (in the frame buffer) this path declines as seal_lone would\n"
"(no route, keypair or endpoint; keypair too old or out of counters; a sealer not made\n"
"yet; an endpoint it cannot address), with nothing changed: Python's lone path takes it.\n"
"A tuple: the packet was sealed under the peer's current keypair with the counter taken\n"
"from it and sent to its endpoint (a full socket buffer or an unreachable endpoint\n"
"drops it, as UdpSocket.send does); finish_lone's bookkeeping is the caller's.\n"
"OSError from the read or send as os.read and UdpSocket.send raise them.");

static PyObject *do_tun(Crossing *self, double now) {
    Limits l;
    if (limits_load(self, &l) < 0) return NULL;
    PyObject *result = cross_tun(self, now, &l);
    limits_clear(&l);
    return result;
}

/* The received datagram back to Python as recv_one gives it: (data, size, source). */
static PyObject *batch_tuple(Crossing *self, Py_ssize_t n, Py_ssize_t size, PyObject *source) {
    return Py_BuildValue("(y#nO)", (const char *)self->rbuf, n, size, source);
}

/* Open the lone transport datagram rbuf[:n] (open_lone's checks in its order) into
 * obuf[hdr:]; on success *peer_out, *kp_out (new references), *counter_out, *outcome and,
 * for WRITTEN, *inner_len (the inner packet's bytes). 1 opened, 0 declined (nothing
 * changed), -1 error. */
static int open_datagram(Crossing *self, Py_ssize_t n, double now, const Limits *l,
                         PyObject *by_index, PyObject **peer_out, PyObject **kp_out,
                         uint64_t *counter_out, int *outcome, Py_ssize_t *inner_len) {
    const unsigned char *d = self->rbuf;
    PyObject *kp = NULL, *opener = NULL, *replay = NULL, *ring = NULL, *v = NULL, *peer = NULL;
    Py_buffer ring_buf = {0};
    int rc = -1, ok;
    if (n < MIN_TRANSPORT || fp_get_le32(d) != MESSAGE_TRANSPORT) return 0;
    uint32_t receiver = fp_get_le32(d + 4);
    uint64_t counter = fp_get_le64(d + 8);
    PyObject *key = PyLong_FromUnsignedLong(receiver);
    if (key == NULL) return -1;
    kp = PyDict_GetItemWithError(by_index, key);
    Py_DECREF(key);
    if (kp == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(kp);
    if (keypair_age_ok(kp, now, l, &ok) < 0) goto done;
    if (!ok || counter >= l->reject_after_messages) { rc = 0; goto done; }
    if ((opener = PyObject_GetAttr(kp, S_opener)) == NULL) goto done;
    if (Py_TYPE(opener) != &OpenerType || ((Cipher *)opener)->ctx == NULL
            || ((Cipher *)opener)->busy) { rc = 0; goto done; }
    Py_ssize_t plen = n - MIN_TRANSPORT;
    if (!fp_open_one(((Cipher *)opener)->ctx, counter, d + HEADER_SIZE, n - HEADER_SIZE,
                     self->obuf + self->hdr)) { rc = 0; goto done; }
    /* the replay window, after the tag (ReplayWindow.check on its state) */
    if ((replay = PyObject_GetAttr(kp, S_replay)) == NULL) goto done;
    if ((ring = PyObject_GetAttr(replay, S_ring)) == NULL) goto done;
    if (PyObject_GetBuffer(ring, &ring_buf, PyBUF_WRITABLE) < 0) goto done;
    if (ring_buf.len != RING_BYTES) {
        PyErr_SetString(PyExc_ValueError, "replay ring is not 128 blocks of 8 bytes");
        goto done;
    }
    ReplayState w;
    if ((v = PyObject_GetAttr(replay, S_last)) == NULL || fp_parse_u64(v, &w.last) < 0) goto done;
    Py_CLEAR(v);
    if ((v = PyObject_GetAttr(replay, S_limit)) == NULL || fp_parse_u64(v, &w.limit) < 0) goto done;
    Py_CLEAR(v);
    memcpy(w.ring, ring_buf.buf, RING_BYTES);
    if (!fp_replay_apply(&w, counter)) { rc = 0; goto done; }
    if ((v = PyLong_FromUnsignedLongLong(w.last)) == NULL) goto done;
    if (PyObject_SetAttr(replay, S_last, v) < 0) goto done;
    memcpy(ring_buf.buf, w.ring, RING_BYTES);
    /* authentic and new: from here on every outcome is this path's */
    if ((peer = PyObject_GetAttr(kp, S_peer)) == NULL) goto done;
    if (plen == 0) {
        *outcome = KEEPALIVE;
    } else {
        const unsigned char *p = self->obuf + self->hdr;
        int version = p[0] >> 4;
        Py_ssize_t length = 0, alen = 0;
        const unsigned char *src = NULL;
        if (version == 4 && plen >= 20) { length = ((Py_ssize_t)p[2] << 8) | p[3]; src = p + 12; alen = 4; }
        else if (version == 6 && plen >= 40) { length = (((Py_ssize_t)p[4] << 8) | p[5]) + 40; src = p + 8; alen = 16; }
        if (length > plen || length < 20) {
            *outcome = INNER_MALFORMED;
        } else {
            PyObject *owner = route(l, src, alen);
            if (owner == NULL) goto done;
            int allowed = owner == peer;
            Py_DECREF(owner);
            *outcome = allowed ? WRITTEN : INNER_NOT_ALLOWED;
            *inner_len = length;
        }
    }
    *peer_out = peer;
    peer = NULL;
    *kp_out = kp;
    kp = NULL;
    *counter_out = counter;
    rc = 1;
done:
    if (ring_buf.obj != NULL) PyBuffer_Release(&ring_buf);
    Py_XDECREF(v);
    Py_XDECREF(ring);
    Py_XDECREF(replay);
    Py_XDECREF(opener);
    Py_XDECREF(peer);
    Py_XDECREF(kp);
    return rc;
}

PyDoc_STRVAR(crossing_udp_doc,
"udp(now, answer=True) -> None | (data, size, source)\n"
"    | (peer, keypair, size, counter, source, outcome, reply)\n\n"
"Receive one datagram (now: the protocol's time, seconds). None: nothing was ready, or\n"
"the call reported an earlier send's ICMP error. (data, size, source), as\n"
"UdpSocket.recv_one gives them: a datagram this path does not take (not a lone transport\n"
"message, or one open_lone would decline: unknown receiver, keypair too old, counter out\n"
"of range, opener not made yet, a tag that does not verify, a replayed counter), with\n"
"nothing changed: the batch path's. A 7-tuple: it was opened under `keypair` and its\n"
"counter recorded in the replay window; outcome 0: its inner packet was written to the\n"
"TUN device; 1: a keepalive; 2: a malformed inner packet; 3: an inner source not routed\n"
"to the peer (2 and 3 dropped: the caller counts them). After a write, when the keypair\n"
"is the peer's current one and the datagram came from its endpoint, the TUN device is\n"
"read once more (the kernel's answer is often queued by then): reply is what tun(now)\n"
"returns for that read, else None. answer=False skips that read (the caller keeps a\n"
"frame in the frame buffer the read would overwrite: TunDevice.pending).");

static PyObject *do_udp(Crossing *self, double now, int answer) {
    struct sockaddr_storage sa;
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct iovec iov = {self->rbuf, RECV_SIZE};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_name = &sa;
    msg.msg_namelen = sizeof sa;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (self->gro) {
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
    }
    ssize_t got;
    int err;
    Py_BEGIN_ALLOW_THREADS
    got = recvmsg(self->udp_fd, &msg, 0);
    err = errno;
    Py_END_ALLOW_THREADS
    if (got < 0) {
        if (err == EAGAIN || err == EINTR || err == ECONNREFUSED || err == EHOSTUNREACH
                || err == ENETUNREACH)
            Py_RETURN_NONE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_ssize_t n = got, size = got;
    if (self->gro) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int segment = 0;
                size_t len = c->cmsg_len - CMSG_LEN(0);
                if (len >= sizeof(int)) memcpy(&segment, CMSG_DATA(c), sizeof(int));
                else if (len >= 2) { uint16_t s16; memcpy(&s16, CMSG_DATA(c), 2); segment = s16; }
                if (segment > 0) size = segment;
                break;
            }
        }
    }
    PyObject *source = source_tuple(&sa);
    if (source == NULL) return NULL;
    PyObject *result = NULL, *peer = NULL, *kp = NULL, *by_index = NULL, *reply = NULL,
        *current = NULL, *endpoint = NULL;
    Limits l = {0};
    if (n < 1 || size < n || n > self->udp_stop || self->rbuf[0] != MESSAGE_TRANSPORT) {
        result = batch_tuple(self, n, size, source);
        goto done;
    }
    if (limits_load(self, &l) < 0) goto done;
    if ((by_index = PyObject_GetAttr(self->protocol, S_keypairs_by_index)) == NULL) goto done;
    if (!PyDict_Check(by_index)) {
        PyErr_SetString(PyExc_TypeError, "keypairs_by_index is not a dict");
        goto done;
    }
    uint64_t counter = 0;
    int outcome = 0;
    Py_ssize_t length = 0;
    int opened = open_datagram(self, n, now, &l, by_index, &peer, &kp, &counter, &outcome, &length);
    if (opened < 0) goto done;
    if (opened == 0) {
        result = batch_tuple(self, n, size, source);
        goto done;
    }
    if (outcome == WRITTEN) {
        ssize_t w;
        Py_BEGIN_ALLOW_THREADS
        w = write(self->tun_fd, self->obuf, (size_t)(self->hdr + length));
        err = errno;
        Py_END_ALLOW_THREADS
        if (w < 0 && err != EAGAIN && err != EINTR && err != EIO && err != EINVAL && err != ENOBUFS) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        /* the kernel's answer: read at once when nothing it depends on differs */
        if ((current = PyObject_GetAttr(peer, S_current)) == NULL) goto done;
        if ((endpoint = PyObject_GetAttr(peer, S_endpoint)) == NULL) goto done;
        int same = current == kp ? PyObject_RichCompareBool(source, endpoint, Py_EQ) : 0;
        if (same < 0) goto done;
        if (same && answer && (reply = cross_tun(self, now, &l)) == NULL) goto done;
    }
    result = Py_BuildValue("(OOnKOiO)", peer, kp, n, (unsigned long long)counter, source, outcome,
                           reply ? reply : Py_None);
done:
    limits_clear(&l);
    Py_XDECREF(current);
    Py_XDECREF(endpoint);
    Py_XDECREF(reply);
    Py_XDECREF(by_index);
    Py_XDECREF(peer);
    Py_XDECREF(kp);
    Py_DECREF(source);
    return result;
}

static PyObject *crossing_tun(Crossing *self, PyObject *args) {
    double now = parse_now(args);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    return do_tun(self, now);
}

static PyObject *crossing_udp(Crossing *self, PyObject *args) {
    double now;
    int answer = 1;
    if (!PyArg_ParseTuple(args, "d|p", &now, &answer)) return NULL;
    return do_udp(self, now, answer);
}

enum { READY_TUN = 1, READY_UDP = 2, READY_WAKE = 4 };

PyDoc_STRVAR(crossing_poll_doc,
"poll(lock, wake_fd, timeout=-1) -> (ready, locked, result, now)\n\n"
"Wait (GIL released) until the TUN device, the UDP socket or wake_fd is readable, or\n"
"for at most timeout milliseconds when timeout >= 0. ready is their bitmask (1 TUN,\n"
"2 UDP, 4 wake_fd; an error or hang-up counts as readable; 0 after the timeout or an\n"
"interrupted wait). When exactly one of TUN and UDP is ready, and wake_fd is not, the\n"
"lone crossing runs at once: `lock` (the device lock) is acquired, now read\n"
"(time.monotonic's clock, seconds) and tun(now) or udp(now) called; locked is True,\n"
"result what it returned, and the caller must release the lock (when that call raises,\n"
"the lock is released here and the exception propagates). Otherwise locked is False,\n"
"result None, now 0.0, and the caller reads what is ready. Call it only when no frame\n"
"is kept in the frame buffer (TunDevice.pending false): udp(now)'s answer read, like\n"
"tun(now), reads into it.");

static PyObject *crossing_poll(Crossing *self, PyObject *args) {
    PyObject *lock;
    int wake_fd, timeout = -1;
    if (!PyArg_ParseTuple(args, "Oi|i", &lock, &wake_fd, &timeout)) return NULL;
    struct pollfd fds[3] = {{self->tun_fd, POLLIN, 0}, {self->udp_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int rc, err;
    Py_BEGIN_ALLOW_THREADS
    rc = poll(fds, 3, timeout < 0 ? -1 : timeout);
    err = errno;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        if (err == EINTR) return Py_BuildValue("(iOOd)", 0, Py_False, Py_None, 0.0);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int ready = (fds[0].revents ? READY_TUN : 0) | (fds[1].revents ? READY_UDP : 0)
        | (fds[2].revents ? READY_WAKE : 0);
    if (ready != READY_TUN && ready != READY_UDP)
        return Py_BuildValue("(iOOd)", ready, Py_False, Py_None, 0.0);
    PyObject *held = PyObject_CallMethodNoArgs(lock, S_acquire);
    if (held == NULL) return NULL;
    Py_DECREF(held);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    PyObject *result = ready == READY_TUN ? do_tun(self, now) : do_udp(self, now, 1);
    PyObject *out = result == NULL ? NULL : Py_BuildValue("(iOOd)", ready, Py_True, result, now);
    Py_XDECREF(result);
    if (out == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject *released = PyObject_CallMethodNoArgs(lock, S_release);
        Py_XDECREF(released);
        if (released == NULL) PyErr_Clear();
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------------ the type */

static int crossing_init(Crossing *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"protocol", "tun_fd", "vnet_hdr", "frame", "udp_fd", "ipv6", "gro",
                             "tun_stop", "udp_stop", NULL};
    PyObject *protocol, *frame;
    int tun_fd, vnet, udp_fd, v6, gro;
    Py_ssize_t tun_stop, udp_stop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OipYippnn", kwlist, &protocol, &tun_fd, &vnet,
                                     &frame, &udp_fd, &v6, &gro, &tun_stop, &udp_stop))
        return -1;
    if (tun_fd < 0 || udp_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "file descriptors must be >= 0");
        return -1;
    }
    if (tun_stop < 1 || tun_stop > MAX_LONE || udp_stop < MIN_TRANSPORT || udp_stop > MAX_LONE + MIN_TRANSPORT) {
        PyErr_Format(PyExc_ValueError, "lone sizes: tun_stop 1..%d, udp_stop %d..%d bytes",
                     MAX_LONE, MIN_TRANSPORT, MAX_LONE + MIN_TRANSPORT);
        return -1;
    }
    int hdr = vnet ? 10 : 0;
    if (PyByteArray_GET_SIZE(frame) < hdr + tun_stop) {
        PyErr_SetString(PyExc_ValueError, "frame buffer shorter than a lone frame");
        return -1;
    }
    PyMem_Free(self->rbuf);
    PyMem_Free(self->obuf);
    PyMem_Free(self->sbuf);
    self->rbuf = PyMem_Malloc(RECV_SIZE);
    self->obuf = PyMem_Calloc(1, (size_t)(hdr + udp_stop));
    self->sbuf = PyMem_Malloc((size_t)(tun_stop + MIN_TRANSPORT + 16));
    if (self->rbuf == NULL || self->obuf == NULL || self->sbuf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_INCREF(frame);
    Py_XSETREF(self->frame, frame);
    self->tun_fd = tun_fd;
    self->hdr = hdr;
    self->udp_fd = udp_fd;
    self->v6 = v6;
    self->gro = gro;
    self->tun_stop = tun_stop;
    self->udp_stop = udp_stop;
    return 0;
}

static int crossing_traverse(Crossing *self, visitproc visit, void *arg) {
    Py_VISIT(self->protocol);
    Py_VISIT(self->frame);
    return 0;
}

static int crossing_clear(Crossing *self) {
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->frame);
    return 0;
}

static void crossing_dealloc(Crossing *self) {
    PyObject_GC_UnTrack(self);
    crossing_clear(self);
    PyMem_Free(self->rbuf);
    PyMem_Free(self->obuf);
    PyMem_Free(self->sbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef crossing_methods[] = {
    {"tun", (PyCFunction)crossing_tun, METH_VARARGS, crossing_tun_doc},
    {"udp", (PyCFunction)crossing_udp, METH_VARARGS, crossing_udp_doc},
    {"poll", (PyCFunction)crossing_poll, METH_VARARGS, crossing_poll_doc},
    {NULL}
};

PyDoc_STRVAR(crossing_doc,
"Crossing(protocol, tun_fd, vnet_hdr, frame, udp_fd, ipv6, gro, tun_stop, udp_stop)\n\n"
"The lone-packet crossing of one device (meshwg.device.device's data loop) between its\n"
"TUN descriptor (with a 10-byte virtio header on every frame when vnet_hdr) and its UDP\n"
"socket (AF_INET6 dual-stack when ipv6; UDP_GRO control messages when gro), over the\n"
"WireGuardProtocol `protocol`'s state. frame is the TUN device's read buffer (a bytearray\n"
"the batch path reads kept frames from); tun_stop and udp_stop the largest lone packet\n"
"and datagram (bytes). The caller holds the device lock around each call.");

PyTypeObject CrossingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "meshwg.accel._fastpath.Crossing",
    .tp_basicsize = sizeof(Crossing),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = crossing_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)crossing_init,
    .tp_dealloc = (destructor)crossing_dealloc,
    .tp_traverse = (traverseproc)crossing_traverse,
    .tp_clear = (inquiry)crossing_clear,
    .tp_methods = crossing_methods,
};
