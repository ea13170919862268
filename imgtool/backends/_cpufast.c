/* The cpu backend's fast paths for the blur: the kernels' arithmetic in plain C.
 *
 * Pillow has no exact [1 2 1] blur faster than its general 3x3 float filter,
 * which costs a fifth of a photo's whole processing time; these loops do the
 * same integer sums in a few hundredths of it.  Both functions take and give
 * contiguous buffers of h * w * c bytes, c = 3 or 4 (straight alpha), do the
 * premultiplication of RGBA themselves exactly as Pillow's RGBA <-> RGBa
 * conversions do, and run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static inline uint8_t muldiv255(unsigned v, unsigned a) {
    unsigned t = v * a + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

/* One source row, premultiplied when it has alpha, into dst (w * c bytes). */
static void load_row(const uint8_t *src, uint8_t *dst, Py_ssize_t w, int c) {
    if (c == 3) {
        memcpy(dst, src, (size_t)w * 3);
        return;
    }
    for (Py_ssize_t x = 0; x < w; x++) {
        unsigned a = src[4 * x + 3];
        dst[4 * x + 0] = muldiv255(src[4 * x + 0], a);
        dst[4 * x + 1] = muldiv255(src[4 * x + 1], a);
        dst[4 * x + 2] = muldiv255(src[4 * x + 2], a);
        dst[4 * x + 3] = (uint8_t)a;
    }
}

/* Line y of src as the sums read it: RGB in place, RGBA premultiplied into row. */
static const uint8_t *line_of(const uint8_t *src, uint8_t *row, Py_ssize_t y, Py_ssize_t w, int c) {
    const uint8_t *line = src + y * w * c;
    if (c == 3)
        return line;
    load_row(line, row, w, c);
    return row;
}

/* Premultiplied -> straight, as Pillow's RGBa -> RGBA. */
static void unpremultiply_row(uint8_t *row, Py_ssize_t w) {
    for (Py_ssize_t x = 0; x < w; x++) {
        unsigned a = row[4 * x + 3];
        if (a == 0 || a == 255)
            continue;
        for (int k = 0; k < 3; k++) {
            unsigned v = 255u * row[4 * x + k] / a;
            row[4 * x + k] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

/* [1 2 1] along a row with clamped ends, into 16-bit sums. */
static void hsum121(const uint8_t *p, uint16_t *out, Py_ssize_t w, int c) {
    Py_ssize_t n = w * c;
    if (w == 1) {
        for (int k = 0; k < c; k++)
            out[k] = (uint16_t)(4 * p[k]);
        return;
    }
    for (int k = 0; k < c; k++) {
        out[k] = (uint16_t)(3 * p[k] + p[c + k]);
        out[n - c + k] = (uint16_t)(p[n - 2 * c + k] + 3 * p[n - c + k]);
    }
    for (Py_ssize_t i = c; i < n - c; i++)
        out[i] = (uint16_t)(p[i - c] + 2 * p[i] + p[i + c]);
}

static int blur121(const uint8_t *src, uint8_t *dst, Py_ssize_t w, Py_ssize_t h, int c) {
    Py_ssize_t n = w * c;
    uint8_t *row = malloc((size_t)n);
    uint16_t *ring = malloc((size_t)n * 3 * sizeof(uint16_t));
    if (!row || !ring) {
        free(row);
        free(ring);
        return -1;
    }
    uint16_t *rows[3] = {ring, ring + n, ring + 2 * n};
    /* rows[0] = sums of line y-1, rows[1] = line y, rows[2] = line y+1 (clamped). */
    hsum121(line_of(src, row, 0, w, c), rows[1], w, c);
    memcpy(rows[0], rows[1], (size_t)n * sizeof(uint16_t));
    for (Py_ssize_t y = 0; y < h; y++) {
        if (y + 1 < h) {
            hsum121(line_of(src, row, y + 1, w, c), rows[2], w, c);
        } else {
            memcpy(rows[2], rows[1], (size_t)n * sizeof(uint16_t));
        }
        uint8_t *out = dst + y * n;
        const uint16_t *a = rows[0], *b = rows[1], *d = rows[2];
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = (uint8_t)((a[i] + 2 * b[i] + d[i] + 8) >> 4);
        if (c == 4)
            unpremultiply_row(out, w);
        uint16_t *t = rows[0];
        rows[0] = rows[1];
        rows[1] = rows[2];
        rows[2] = t;
    }
    free(row);
    free(ring);
    return 0;
}

/* float32 taps along a row with clamped ends; taps summed in order, as numpy does. */
static void hgauss(const uint8_t *p, float *out, Py_ssize_t w, int c, const float *taps, int r) {
    for (Py_ssize_t x = 0; x < w; x++) {
        for (int k = 0; k < c; k++) {
            float s = 0.0f;
            for (int t = 0; t <= 2 * r; t++) {
                Py_ssize_t xx = x + t - r;
                xx = xx < 0 ? 0 : (xx >= w ? w - 1 : xx);
                float prod = (float)p[xx * c + k] * taps[t];
                s = s + prod;
            }
            out[x * c + k] = s;
        }
    }
}

static int gauss(const uint8_t *src, uint8_t *dst, Py_ssize_t w, Py_ssize_t h, int c,
                 const float *taps, int r) {
    Py_ssize_t n = w * c;
    int span = 2 * r + 1;
    /* Horizontal sums of every line the vertical taps reach, in a ring. */
    Py_ssize_t keep = span < h ? span : h;
    uint8_t *row = malloc((size_t)n);
    float *ring = malloc((size_t)n * keep * sizeof(float));
    float *acc = malloc((size_t)n * sizeof(float));
    if (!row || !ring || !acc) {
        free(row);
        free(ring);
        free(acc);
        return -1;
    }
    /* Line l's sums live in slot l % keep; with keep = min(span, h) every
       line a window needs is still there (windows clamp to 0..h-1). */
    Py_ssize_t loaded = 0;
    for (Py_ssize_t y = 0; y < h; y++) {
        Py_ssize_t need = y + r < h - 1 ? y + r : h - 1;
        while (loaded <= need) {
            hgauss(line_of(src, row, loaded, w, c), ring + (loaded % keep) * n, w, c, taps, r);
            loaded++;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            acc[i] = 0.0f;
        for (int t = 0; t < span; t++) {
            Py_ssize_t yy = y + t - r;
            yy = yy < 0 ? 0 : (yy >= h ? h - 1 : yy);
            const float *line = ring + (yy % keep) * n;
            float tap = taps[t];
            for (Py_ssize_t i = 0; i < n; i++) {
                float prod = line[i] * tap;
                acc[i] = acc[i] + prod;
            }
        }
        uint8_t *out = dst + y * n;
        for (Py_ssize_t i = 0; i < n; i++) {
            float v = floorf(acc[i] + 0.5f);
            out[i] = (uint8_t)(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
        }
        if (c == 4)
            unpremultiply_row(out, w);
    }
    free(row);
    free(ring);
    free(acc);
    return 0;
}

/* The buffers of src and dst: contiguous buffers of width * height * channels
 * bytes.  With dst None a new bytes object is made (not zeroed: every byte is
 * written) and returned through *made. */
static int get_buffers(PyObject *src_obj, PyObject *dst_obj, Py_ssize_t w, Py_ssize_t h, int c,
                       Py_buffer *src, Py_buffer *dst, PyObject **made) {
    *made = NULL;
    if (w < 1 || h < 1 || (c != 3 && c != 4)) {
        PyErr_SetString(PyExc_ValueError, "width and height must be >= 1 and channels 3 or 4");
        return -1;
    }
    if (PyObject_GetBuffer(src_obj, src, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (src->len != w * h * c) {
        PyErr_SetString(PyExc_ValueError, "src must hold width * height * channels bytes");
        PyBuffer_Release(src);
        return -1;
    }
    if (dst_obj == Py_None) {
        *made = PyBytes_FromStringAndSize(NULL, src->len);
        if (!*made) {
            PyBuffer_Release(src);
            return -1;
        }
        dst_obj = *made;
        /* A fresh bytes object nobody else has seen yet: filling it is safe. */
        if (PyBuffer_FillInfo(dst, NULL, PyBytes_AS_STRING(*made), src->len, 0, PyBUF_SIMPLE) < 0) {
            Py_CLEAR(*made);
            PyBuffer_Release(src);
            return -1;
        }
        return 0;
    }
    if (PyObject_GetBuffer(dst_obj, dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(src);
        return -1;
    }
    if (dst->len != src->len) {
        PyErr_SetString(PyExc_ValueError, "dst must hold width * height * channels bytes");
        PyBuffer_Release(src);
        PyBuffer_Release(dst);
        return -1;
    }
    return 0;
}

/* What a blur returns: the bytes it made, or None when it wrote into dst. */
static PyObject *done(int rc, PyObject *made) {
    if (rc < 0) {
        Py_XDECREF(made);
        return PyErr_NoMemory();
    }
    if (made)
        return made;
    Py_RETURN_NONE;
}

static PyObject *py_blur121(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj;
    Py_ssize_t w, h;
    int c, rc;
    Py_buffer src, dst;
    if (!PyArg_ParseTuple(args, "OOnni", &src_obj, &dst_obj, &w, &h, &c))
        return NULL;
    PyObject *made;
    if (get_buffers(src_obj, dst_obj, w, h, c, &src, &dst, &made) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = blur121(src.buf, dst.buf, w, h, c);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return done(rc, made);
}

static PyObject *py_gaussian(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj, *taps_obj;
    Py_ssize_t w, h;
    int c, rc;
    Py_buffer src, dst, taps;
    if (!PyArg_ParseTuple(args, "OOnniO", &src_obj, &dst_obj, &w, &h, &c, &taps_obj))
        return NULL;
    if (PyObject_GetBuffer(taps_obj, &taps, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    Py_ssize_t ntaps = taps.len / (Py_ssize_t)sizeof(float);
    if (taps.itemsize != 4 || !taps.format || strcmp(taps.format, "f") != 0 || ntaps % 2 != 1) {
        PyErr_SetString(PyExc_ValueError, "taps must be an odd number of float32 values");
        PyBuffer_Release(&taps);
        return NULL;
    }
    PyObject *made;
    if (get_buffers(src_obj, dst_obj, w, h, c, &src, &dst, &made) < 0) {
        PyBuffer_Release(&taps);
        return NULL;
    }
    int r = (int)(ntaps / 2);
    Py_BEGIN_ALLOW_THREADS
    rc = gauss(src.buf, dst.buf, w, h, c, taps.buf, r);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&taps);
    return done(rc, made);
}

static PyObject *py_halfsize(PyObject *self, PyObject *args) {
    PyObject *src_obj;
    Py_ssize_t w, h;
    int c;
    Py_buffer src;
    if (!PyArg_ParseTuple(args, "Onni", &src_obj, &w, &h, &c))
        return NULL;
    if (w < 1 || h < 1 || (c != 3 && c != 4)) {
        PyErr_SetString(PyExc_ValueError, "width and height must be >= 1 and channels 3 or 4");
        return NULL;
    }
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (src.len != w * h * c) {
        PyErr_SetString(PyExc_ValueError, "src must hold width * height * channels bytes");
        PyBuffer_Release(&src);
        return NULL;
    }
    Py_ssize_t ow = w / 2 > 0 ? w / 2 : 1, oh = h / 2 > 0 ? h / 2 : 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, ow * oh * c);
    if (!out) {
        PyBuffer_Release(&src);
        return NULL;
    }
    const uint8_t *in = src.buf;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t y = 0; y < oh; y++) {
        Py_ssize_t sy = 2 * y + 1 < h ? 2 * y + 1 : h - 1;
        const uint8_t *row = in + sy * w * c;
        for (Py_ssize_t x = 0; x < ow; x++) {
            Py_ssize_t sx = 2 * x + 1 < w ? 2 * x + 1 : w - 1;
            memcpy(o, row + sx * c, (size_t)c);
            o += c;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    return out;
}

static PyMethodDef methods[] = {
    {"halfsize", py_halfsize, METH_VARARGS,
     "halfsize(src, width, height, channels) -> bytes: pixel (2x+1, 2y+1) of each 2x2 block, clamped."},
    {"blur121", py_blur121, METH_VARARGS,
     "blur121(src, dst, width, height, channels): dst None returns new bytes.  The [1 2 1] x [1 2 1] / 16 blur, clamped edges,\n"
     "premultiplied alpha; src and dst are contiguous buffers of straight RGB/RGBA pixels."},
    {"gaussian", py_gaussian, METH_VARARGS,
     "gaussian(src, dst, width, height, channels, taps): dst None returns new bytes.  A separable float32 Gaussian (taps: float32\n"
     "buffer of 2r+1 values), clamped edges, premultiplied alpha."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cpufast", "The cpu backend's C fast paths.", -1, methods,
};

PyMODINIT_FUNC PyInit__cpufast(void) { return PyModule_Create(&module); }
