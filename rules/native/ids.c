/* Records and ids: SHA-256 (with the CPU's SHA extensions where present), delta ids and
 * the delta records (record).
 *
 * Part of rules/_native.c, which includes it: one translation unit, so the parts share
 * their static functions and types, and their order there is the order of definition.
 */

/* -- SHA-256 (FIPS 180-4), for delta ids ---------------------------------------------- */

typedef struct {
    uint32_t h[8];
} Sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
sha256_block_c(Sha256 *s, const unsigned char *b)
{
    uint32_t w[64], a, bb, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | (uint32_t)b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; bb = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                      K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = bb; bb = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += bb; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_PATH 1

/* The same compression with the CPU's SHA extensions (checked at import). */
__attribute__((target("sha,sse4.1,ssse3"))) static void
sha256_block_ni(Sha256 *s, const unsigned char *b)
{
    const __m128i order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&s->h[0]);      /* a b c d */
    __m128i state1 = _mm_loadu_si128((const __m128i *)&s->h[4]);   /* e f g h */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                             /* c d a b */
    state1 = _mm_shuffle_epi32(state1, 0x1B);                       /* h g f e */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);               /* a b e f */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);                    /* c d g h */
    __m128i abef = state0, cdgh = state1, w[4];
    for (int g = 0; g < 16; g++) {
        __m128i m;
        if (g < 4) {
            m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16 * g)), order);
        }
        else {
            m = _mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]);
            m = _mm_add_epi32(m, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
            m = _mm_sha256msg2_epu32(m, w[(g + 3) & 3]);
        }
        w[g & 3] = m;
        __m128i k = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&K256[4 * g]));
        state1 = _mm_sha256rnds2_epu32(state1, state0, k);
        state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(k, 0x0E));
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
    tmp = _mm_shuffle_epi32(state0, 0x1B);                          /* f e b a */
    state1 = _mm_shuffle_epi32(state1, 0xB1);                       /* d c h g */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);                    /* d c b a */
    state1 = _mm_alignr_epi8(state1, tmp, 8);                       /* h g f e */
    _mm_storeu_si128((__m128i *)&s->h[0], state0);
    _mm_storeu_si128((__m128i *)&s->h[4], state1);
}

static int
cpu_has_sha(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_SHA) != 0;
}
#endif

static void (*sha256_block)(Sha256 *, const unsigned char *) = sha256_block_c;

/* The SHA-256 of the n bytes at `message`, which has room for 72 more after them: the
 * padding goes there and the blocks are hashed in place. */
static void
sha256_message(unsigned char *message, size_t n, unsigned char out[32])
{
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    Sha256 s;
    memcpy(s.h, init, sizeof init);
    uint64_t bits = (uint64_t)n * 8;
    size_t padded = (n + 9 + 63) / 64 * 64;
    message[n] = 0x80;
    memset(message + n + 1, 0, padded - n - 9);
    for (int i = 0; i < 8; i++)
        message[padded - 8 + i] = (unsigned char)(bits >> (56 - 8 * i));
    for (size_t at = 0; at < padded; at += 64)
        sha256_block(&s, message + at);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s.h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s.h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s.h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s.h[i];
    }
}

/* The delta id of schemas.records.make_delta: the first 32 hex digits of the SHA-256 of
 * tenant, lead, list, action and cause (and salt, when not None) joined by \x1f, each in
 * UTF-8 ('surrogatepass', as make_delta encodes). The message is laid out in one buffer
 * and hashed there. */
static PyObject *
delta_id(PyObject *tenant, PyObject *lead, PyObject *list_id, PyObject *action,
         PyObject *cause, PyObject *salt_text)
{
    static const char hex[] = "0123456789abcdef";
    PyObject *parts[6] = {tenant, lead, list_id, action, cause, salt_text};
    PyObject *encoded[6] = {NULL};
    const char *bytes[6];
    Py_ssize_t sizes[6];
    int count = salt_text == NULL ? 5 : 6;
    size_t n = (size_t)count - 1;  /* the separators */
    PyObject *result = NULL;
    for (int k = 0; k < count; k++) {
        if (!PyUnicode_Check(parts[k])) {
            PyErr_SetString(PyExc_TypeError, "a delta id is made of text");
            goto done;
        }
        if (PyUnicode_IS_ASCII(parts[k])) {
            bytes[k] = PyUnicode_DATA(parts[k]);
            sizes[k] = PyUnicode_GET_LENGTH(parts[k]);
        }
        else {
            encoded[k] = PyUnicode_AsEncodedString(parts[k], "utf-8", "surrogatepass");
            if (encoded[k] == NULL)
                goto done;
            bytes[k] = PyBytes_AS_STRING(encoded[k]);
            sizes[k] = PyBytes_GET_SIZE(encoded[k]);
        }
        n += (size_t)sizes[k];
    }
    unsigned char stack[512], digest[32];
    unsigned char *message = n + 72 <= sizeof stack ? stack : PyMem_Malloc(n + 72);
    if (message == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t at = 0;
    for (int k = 0; k < count; k++) {
        if (k)
            message[at++] = 0x1f;
        memcpy(message + at, bytes[k], (size_t)sizes[k]);
        at += (size_t)sizes[k];
    }
    sha256_message(message, n, digest);
    if (message != stack)
        PyMem_Free(message);
    if ((result = PyUnicode_New(32, 127)) != NULL) {
        Py_UCS1 *text = PyUnicode_1BYTE_DATA(result);
        for (int k = 0; k < 16; k++) {
            text[2 * k] = (Py_UCS1)hex[digest[k] >> 4];
            text[2 * k + 1] = (Py_UCS1)hex[digest[k] & 15];
        }
    }
done:
    for (int k = 0; k < count; k++)
        Py_XDECREF(encoded[k]);
    return result;
}

/* record(found, members, tenant, lead, when, cause, seq, salt, Delta) -> (deltas, seq)
 *
 * CompiledTenant/LeadProcessor's _record: each (list id, added, depth) of `found`
 * updates `members` (list id -> since) and becomes a Delta numbered from seq + 1. */
static PyObject *
native_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "record(found, members, tenant, lead, when, cause, seq, salt, Delta)");
        return NULL;
    }
    PyObject *found = args[0], *members = args[1], *tenant = args[2], *lead = args[3];
    PyObject *when = args[4], *cause = args[5], *salt = args[7];
    PyTypeObject *delta_type = (PyTypeObject *)args[8];
    if (!PyDict_Check(members) || !PyType_Check(args[8]) ||
        !PyType_IsSubtype(delta_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "members is a dict and Delta a tuple type");
        return NULL;
    }
    Py_ssize_t seq = PyLong_AsSsize_t(args[6]);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    PyObject *salt_text = NULL;
    if (salt != Py_None && (salt_text = PyObject_Str(salt)) == NULL)
        return NULL;
    /* a copy: its rows stay alive whatever happens to `found` meanwhile */
    PyObject *rows = PySequence_Tuple(found);
    if (rows == NULL) {
        Py_XDECREF(salt_text);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(rows);
    PyObject *deltas = PyList_New(n);
    if (deltas == NULL)
        goto error;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *row = PyTuple_GET_ITEM(rows, k);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 3) {
            PyErr_SetString(PyExc_TypeError, "a change is (list id, added, depth)");
            goto error;
        }
        PyObject *list_id = PyTuple_GET_ITEM(row, 0), *depth = PyTuple_GET_ITEM(row, 2);
        int added = PyObject_IsTrue(PyTuple_GET_ITEM(row, 1));
        if (added < 0)
            goto error;
        if (added) {
            if (PyDict_SetItem(members, list_id, when) < 0)
                goto error;
        }
        else if (PyDict_DelItem(members, list_id) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                goto error;
            PyErr_Clear();
        }
        seq++;
        PyObject *action = added ? ADDED : REMOVED;
        PyObject *id = delta_id(tenant, lead, list_id, action, cause, salt_text);
        if (id == NULL)
            goto error;
        PyObject *number = PyLong_FromSsize_t(seq);
        PyObject *delta = number ? delta_type->tp_alloc(delta_type, 9) : NULL;
        if (delta == NULL) {
            Py_DECREF(id);
            Py_XDECREF(number);
            goto error;
        }
        PyObject *items[9] = {id, tenant, lead, list_id, action, when, cause, depth, number};
        for (int f = 0; f < 9; f++) {
            if (f != 0 && f != 8)
                Py_INCREF(items[f]);
            PyTuple_SET_ITEM(delta, f, items[f]);
        }
        untrack_atomic(delta);
        PyList_SET_ITEM(deltas, k, delta);
    }
    Py_DECREF(rows);
    Py_XDECREF(salt_text);
    PyObject *result = Py_BuildValue("(Nn)", deltas, seq);
    return result;
error:
    Py_DECREF(rows);
    Py_XDECREF(salt_text);
    Py_XDECREF(deltas);
    return NULL;
}

/* delta_id(tenant, lead, list_id, action, cause, salt) -> str, for the tests */
static PyObject *
native_delta_id(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "delta_id(tenant, lead, list_id, action, cause, salt)");
        return NULL;
    }
    PyObject *salt_text = NULL;
    if (args[5] != Py_None && (salt_text = PyObject_Str(args[5])) == NULL)
        return NULL;
    PyObject *id = delta_id(args[0], args[1], args[2], args[3], args[4], salt_text);
    Py_XDECREF(salt_text);
    return id;
}
