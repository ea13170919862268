/* The cpu backend's fast paths for the blur: the kernels' arithmetic in plain C.
 *
 * Pillow has no exact [1 2 1] blur faster than its general 3x3 float filter,
 * which costs a fifth of a photo's whole processing time; these loops do the
 * same integer sums in a few hundredths of it.  They take a contiguous buffer
 * of h * w * c bytes, c = 3 or 4 (straight alpha), or Pillow's Arrow export
 * of the image (read in place, 4 bytes a pixel), give h * w * c bytes, do the
 * premultiplication of RGBA themselves exactly as Pillow's RGBA <-> RGBa
 * conversions do, and run without the GIL.  Where the CPU has them, the RGB
 * blur and the thumbnail's box reduce run AVX2 loops and its Lanczos passes
 * SSE4.1 ones, each the plain loops' integer arithmetic (IMGTOOL_NO_SIMD=1
 * runs the plain ones).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_X86_SIMD 1
/* Whether this CPU runs a vector loop; IMGTOOL_NO_SIMD=1 turns them all off
   (the plain C loops, what other CPUs run), for the tests. */
static int simd_allowed(void) {
    static int known = -1;
    if (known < 0) {
        const char *off = getenv("IMGTOOL_NO_SIMD");
        known = !(off && *off && strcmp(off, "0") != 0);
    }
    return known;
}
static int use_sse41(void) {
    static int known = -1;
    if (known < 0)
        known = simd_allowed() && __builtin_cpu_supports("sse4.1");
    return known;
}
static int use_avx2(void) {
    static int known = -1;
    if (known < 0)
        known = simd_allowed() && __builtin_cpu_supports("avx2");
    return known;
}
#else
#define HAVE_X86_SIMD 0
static int use_sse41(void) { return 0; }
static int use_avx2(void) { return 0; }
#endif

static inline uint8_t muldiv255(unsigned v, unsigned a) {
    unsigned t = v * a + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

/* One source row (sp bytes a pixel: c, or 4 from a padded RGBX/RGBA image)
   into dst as c channels, premultiplied when it has alpha. */
static void load_row(const uint8_t *src, uint8_t *dst, Py_ssize_t w, int c, int sp) {
    if (c == 3) {
        if (sp == 3) {
            memcpy(dst, src, (size_t)w * 3);
            return;
        }
        for (Py_ssize_t x = 0; x < w; x++) {
            dst[3 * x + 0] = src[sp * x + 0];
            dst[3 * x + 1] = src[sp * x + 1];
            dst[3 * x + 2] = src[sp * x + 2];
        }
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

/* Line y of src as the sums read it: packed RGB in place, else converted into row. */
static const uint8_t *line_of(const uint8_t *src, uint8_t *row, Py_ssize_t y, Py_ssize_t w, int c, int sp) {
    const uint8_t *line = src + y * w * sp;
    if (c == 3 && sp == 3)
        return line;
    load_row(line, row, w, c, sp);
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

static int blur121(const uint8_t *src, uint8_t *dst, Py_ssize_t w, Py_ssize_t h, int c, int sp) {
    /* The sums run over the source's own pixel layout where that needs no
       conversion: RGB packed (3), or RGB padded to 4 bytes (the padding byte
       is summed and dropped on output), which reads the rows in place.
       RGBA is premultiplied into a row buffer first. */
    int k = (c == 3) ? sp : 4; /* channels the sums carry */
    Py_ssize_t n = w * k;
    uint8_t *row = malloc((size_t)w * 4);
    uint16_t *ring = malloc((size_t)n * 3 * sizeof(uint16_t));
    if (!row || !ring) {
        free(row);
        free(ring);
        return -1;
    }
    uint16_t *rows[3] = {ring, ring + n, ring + 2 * n};
    /* rows[0] = sums of line y-1, rows[1] = line y, rows[2] = line y+1 (clamped). */
#define LINE(y) (c == 3 ? src + (y) * w * sp : line_of(src, row, (y), w, c, sp))
    hsum121(LINE(0), rows[1], w, k);
    memcpy(rows[0], rows[1], (size_t)n * sizeof(uint16_t));
    for (Py_ssize_t y = 0; y < h; y++) {
        if (y + 1 < h) {
            hsum121(LINE(y + 1), rows[2], w, k);
        } else {
            memcpy(rows[2], rows[1], (size_t)n * sizeof(uint16_t));
        }
        uint8_t *out = dst + y * w * c;
        const uint16_t *a = rows[0], *b = rows[1], *d = rows[2];
        if (k == c) {
            for (Py_ssize_t i = 0; i < n; i++)
                out[i] = (uint8_t)((a[i] + 2 * b[i] + d[i] + 8) >> 4);
        } else { /* 4 summed, 3 kept: whole pixels into row, then packed */
            for (Py_ssize_t i = 0; i < n; i++)
                row[i] = (uint8_t)((a[i] + 2 * b[i] + d[i] + 8) >> 4);
            /* 4-byte stores, each overlapping the next pixel's: one fast loop. */
            for (Py_ssize_t x = 0; x + 1 < w; x++)
                memcpy(out + 3 * x, row + 4 * x, 4);
            memcpy(out + 3 * (w - 1), row + 4 * (w - 1), 3);
        }
        if (c == 4)
            unpremultiply_row(out, w);
        uint16_t *t = rows[0];
        rows[0] = rows[1];
        rows[1] = rows[2];
        rows[2] = t;
    }
#undef LINE
    free(row);
    free(ring);
    return 0;
}

#if HAVE_X86_SIMD
/* blur121 of RGB (sp 3: packed, or 4: RGBX read in place) with AVX2, the
   same integer sums in the other order: down the three lines first (byte by
   byte, so the layout does not matter), then [1 2 1] across, 16 lanes at a
   time.  Every sum is at most 16 * 255 + 8: 16-bit lanes hold it. */
__attribute__((target("avx2"))) static int blur121_rgb_avx2(const uint8_t *src, uint8_t *dst, Py_ssize_t w,
                                                            Py_ssize_t h, int sp) {
    Py_ssize_t n = w * sp;
    uint16_t *v = malloc((size_t)n * sizeof(uint16_t));
    if (!v)
        return -1;
    /* RGBX lanes to RGB bytes within each 128-bit half: 12 bytes kept, 4 zeroed. */
    const __m256i drop_x = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                            0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    const __m256i eight = _mm256_set1_epi16(8);
    for (Py_ssize_t y = 0; y < h; y++) {
        const uint8_t *a = src + (y > 0 ? y - 1 : 0) * n, *b = src + y * n, *c = src + (y + 1 < h ? y + 1 : y) * n;
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __m256i va = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a + i)));
            __m256i vb = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + i)));
            __m256i vc = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(c + i)));
            __m256i sum = _mm256_add_epi16(_mm256_add_epi16(va, vc), _mm256_slli_epi16(vb, 1));
            _mm256_storeu_si256((__m256i *)(v + i), sum);
        }
        for (; i < n; i++)
            v[i] = (uint16_t)(a[i] + 2 * b[i] + c[i]);

        uint8_t *out = dst + y * w * 3;
        if (w == 1) {
            for (int k = 0; k < 3; k++)
                out[k] = (uint8_t)((4 * v[k] + 8) >> 4);
            continue;
        }
        Py_ssize_t x = 1; /* pixel 0 and from x on: the plain loop below */
        if (sp == 4) {
            /* 8 pixels: lanes 4x .. 4x + 31, reading one pixel beyond each end
               (x + 9 <= w), and bytes 3x .. 3x + 27 stored (the last 4 belong to
               pixels x + 8 and x + 9, written after): x + 10 <= w. */
            for (; x + 10 <= w; x += 8) {
                const uint16_t *m = v + 4 * x;
                __m256i s0 = _mm256_add_epi16(
                    _mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(m - 4)),
                                     _mm256_loadu_si256((const __m256i *)(m + 4))),
                    _mm256_add_epi16(_mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)m), 1), eight));
                __m256i s1 = _mm256_add_epi16(
                    _mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(m + 12)),
                                     _mm256_loadu_si256((const __m256i *)(m + 20))),
                    _mm256_add_epi16(_mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)(m + 16)), 1), eight));
                __m256i px = _mm256_packus_epi16(_mm256_srli_epi16(s0, 4), _mm256_srli_epi16(s1, 4));
                px = _mm256_permute4x64_epi64(px, _MM_SHUFFLE(3, 1, 2, 0)); /* pixels x .. x + 7 in order */
                px = _mm256_shuffle_epi8(px, drop_x);
                _mm_storeu_si128((__m128i *)(out + 3 * x), _mm256_castsi256_si128(px));
                _mm_storeu_si128((__m128i *)(out + 3 * x + 12), _mm256_extracti128_si256(px, 1));
            }
        } else {
            /* 16 lanes from 3x, reading 3 beyond each end: 3x + 19 <= n. */
            for (; 3 * x + 19 <= n; x += 5) {
                /* x steps by 5 pixels (15 lanes) so each store starts on a pixel;
                   the 16th byte is the next pixel's first, rewritten after. */
                const uint16_t *m = v + 3 * x;
                __m256i s0 = _mm256_add_epi16(
                    _mm256_add_epi16(_mm256_loadu_si256((const __m256i *)(m - 3)),
                                     _mm256_loadu_si256((const __m256i *)(m + 3))),
                    _mm256_add_epi16(_mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)m), 1), eight));
                s0 = _mm256_srli_epi16(s0, 4);
                __m128i px = _mm_packus_epi16(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
                _mm_storeu_si128((__m128i *)(out + 3 * x), px);
            }
        }
        for (int k = 0; k < 3; k++)
            out[k] = (uint8_t)((3 * v[k] + v[sp + k] + 8) >> 4);
        for (; x < w - 1; x++)
            for (int k = 0; k < 3; k++) {
                Py_ssize_t j = x * sp + k;
                out[3 * x + k] = (uint8_t)((v[j - sp] + 2 * v[j] + v[j + sp] + 8) >> 4);
            }
        for (int k = 0; k < 3; k++) {
            Py_ssize_t j = (w - 1) * sp + k;
            out[3 * (w - 1) + k] = (uint8_t)((v[j - sp] + 3 * v[j] + 8) >> 4);
        }
    }
    free(v);
    return 0;
}
#endif

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

static int gauss(const uint8_t *src, uint8_t *dst, Py_ssize_t w, Py_ssize_t h, int c, int sp,
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
            hgauss(line_of(src, row, loaded, w, c, sp), ring + (loaded % keep) * n, w, c, taps, r);
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

/* ---- The large-sigma Gaussian: a cascade of extended boxes (boxblur.py) ----
 *
 * Each pass (r, W, A) maps its input x to (W * sum(x[j-r .. j+r]) + A *
 * (x[j-r-1] + x[j+r+1]) + half) >> shift, in integers, with W (2r + 1) + 2A =
 * 2**16; values between passes are 8.6 fixed point (at most 16320, so every
 * sum is below 2**30).  Each axis is first extended by the cascade's extent
 * (the sum of r + 1) with copies of its end pixels, and each pass shortens it
 * by r + 1 at each end: the clamp to the edge of the other Gaussian, exactly.
 * Rows first, rounded to 8 bits (premultiplied) in dst; then the columns, in
 * strips of BOX_STRIP pixels, in place.  Integer sums give the same bits in
 * any order, so the rows use prefix sums (their differences, exact modulo
 * 2**32, are the window sums) and the columns a running sum across the strip:
 * both inner loops are independent lanes the compiler vectorises, built once
 * plain and once for AVX2. */

#define BOX_WEIGHT_BITS 16
#define BOX_FRAC_BITS 6
#define BOX_MAX_PASSES 8
#define BOX_STRIP 64 /* pixels a column strip is wide */

typedef struct {
    Py_ssize_t r;
    uint32_t w, a;
    int shift;
} BoxPass;

/* One pass along a row of n_in pixels of c interleaved channels (in, 16-bit),
   into n_in - 2 (r + 1) pixels: 16-bit, or 8-bit when out8 is set.  pre holds
   (n_in + 1) * c prefix sums. */
static inline __attribute__((always_inline)) void box_row_pass(const uint16_t *in, Py_ssize_t n_in, int c,
                                                               const BoxPass *p, uint32_t *pre, uint16_t *out,
                                                               uint8_t *out8) {
    Py_ssize_t m = n_in * c, span = 2 * (p->r + 1) * c;
    /* The running sums in registers: through memory, each add would wait for
       the store c values back. */
    uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    pre[0] = pre[1] = pre[2] = 0;
    if (c == 4) {
        pre[3] = 0;
        for (Py_ssize_t i = 0; i < m; i += 4) {
            pre[i + 4] = s0 += in[i];
            pre[i + 5] = s1 += in[i + 1];
            pre[i + 6] = s2 += in[i + 2];
            pre[i + 7] = s3 += in[i + 3];
        }
    } else {
        for (Py_ssize_t i = 0; i < m; i += 3) {
            pre[i + 3] = s0 += in[i];
            pre[i + 4] = s1 += in[i + 1];
            pre[i + 5] = s2 += in[i + 2];
        }
    }
    Py_ssize_t n_out = m - span;
    uint32_t w = p->w, a = p->a, half = 1u << (p->shift - 1);
    int shift = p->shift;
    const uint32_t *hi = pre + span, *lo = pre + c;
    const uint16_t *far = in + span;
    if (out8) {
        for (Py_ssize_t i = 0; i < n_out; i++)
            out8[i] = (uint8_t)((w * (hi[i] - lo[i]) + a * ((uint32_t)in[i] + far[i]) + half) >> shift);
    } else {
        for (Py_ssize_t i = 0; i < n_out; i++)
            out[i] = (uint16_t)((w * (hi[i] - lo[i]) + a * ((uint32_t)in[i] + far[i]) + half) >> shift);
    }
}

/* One pass down a strip: rows of n values, n_in rows in, n_in - 2 (r + 1) out,
   16-bit (out) or 8-bit (out8, row stride stride8). */
static inline __attribute__((always_inline)) void box_column_pass(const uint16_t *in, Py_ssize_t n_in,
                                                                  Py_ssize_t n, const BoxPass *p, uint32_t *sum,
                                                                  uint16_t *out, uint8_t *out8,
                                                                  Py_ssize_t stride8) {
    Py_ssize_t e = p->r + 1, n_out = n_in - 2 * e;
    uint32_t w = p->w, a = p->a, half = 1u << (p->shift - 1);
    int shift = p->shift;
    /* The window of output row 0 is input rows 1 .. 2r + 1. */
    for (Py_ssize_t i = 0; i < n; i++)
        sum[i] = 0;
    for (Py_ssize_t t = 1; t <= 2 * p->r + 1; t++) {
        const uint16_t *row = in + t * n;
        for (Py_ssize_t i = 0; i < n; i++)
            sum[i] += row[i];
    }
    for (Py_ssize_t k = 0; k < n_out; k++) {
        const uint16_t *near = in + k * n, *far = in + (k + 2 * e) * n, *leave = in + (k + 1) * n;
        if (out8) {
            uint8_t *o = out8 + k * stride8;
            for (Py_ssize_t i = 0; i < n; i++)
                o[i] = (uint8_t)((w * sum[i] + a * ((uint32_t)near[i] + far[i]) + half) >> shift);
        } else {
            uint16_t *o = out + k * n;
            for (Py_ssize_t i = 0; i < n; i++)
                o[i] = (uint16_t)((w * sum[i] + a * ((uint32_t)near[i] + far[i]) + half) >> shift);
        }
        for (Py_ssize_t i = 0; i < n; i++)
            sum[i] += (uint32_t)far[i] - leave[i];
    }
}

static inline __attribute__((always_inline)) int boxes_body(const uint8_t *src, uint8_t *dst, Py_ssize_t w,
                                                            Py_ssize_t h, int c, int sp, const BoxPass *passes,
                                                            int np) {
    Py_ssize_t ext = 0;
    for (int i = 0; i < np; i++)
        ext += passes[i].r + 1;
    Py_ssize_t row_n = (w + 2 * ext) * c, strip_n = (Py_ssize_t)BOX_STRIP * c, col_rows = h + 2 * ext;
    uint8_t *line = malloc((size_t)w * 4);
    uint16_t *ra = malloc((size_t)row_n * sizeof(uint16_t)), *rb = malloc((size_t)row_n * sizeof(uint16_t));
    uint32_t *pre = malloc((size_t)(row_n + c) * sizeof(uint32_t));
    uint16_t *ca = malloc((size_t)col_rows * strip_n * sizeof(uint16_t));
    uint16_t *cb = malloc((size_t)col_rows * strip_n * sizeof(uint16_t));
    uint32_t *sum = malloc((size_t)strip_n * sizeof(uint32_t));
    int rc = -1;
    if (!line || !ra || !rb || !pre || !ca || !cb || !sum)
        goto end;
    /* Rows: extended, then every pass, the last into dst (8-bit, premultiplied). */
    for (Py_ssize_t y = 0; y < h; y++) {
        const uint8_t *px = line_of(src, line, y, w, c, sp);
        for (Py_ssize_t j = 0; j < ext; j++)
            for (int k = 0; k < c; k++) {
                ra[j * c + k] = px[k];
                ra[(ext + w + j) * c + k] = px[(w - 1) * c + k];
            }
        for (Py_ssize_t i = 0; i < w * c; i++)
            ra[ext * c + i] = px[i];
        uint16_t *in = ra, *out = rb;
        Py_ssize_t n = w + 2 * ext;
        for (int i = 0; i < np; i++) {
            int last = i == np - 1;
            box_row_pass(in, n, c, &passes[i], pre, out, last ? dst + y * w * c : NULL);
            n -= 2 * (passes[i].r + 1);
            uint16_t *t = in;
            in = out;
            out = t;
        }
    }
    /* Columns, a strip at a time, in place in dst. */
    for (Py_ssize_t x0 = 0; x0 < w; x0 += BOX_STRIP) {
        Py_ssize_t sw = w - x0 < BOX_STRIP ? w - x0 : BOX_STRIP, n = sw * c;
        for (Py_ssize_t j = 0; j < col_rows; j++) {
            Py_ssize_t y = j - ext < 0 ? 0 : (j - ext >= h ? h - 1 : j - ext);
            const uint8_t *p = dst + (y * w + x0) * c;
            uint16_t *o = ca + j * n;
            for (Py_ssize_t i = 0; i < n; i++)
                o[i] = p[i];
        }
        uint16_t *in = ca, *out = cb;
        Py_ssize_t rows = col_rows;
        for (int i = 0; i < np; i++) {
            int last = i == np - 1;
            box_column_pass(in, rows, n, &passes[i], sum, out, last ? dst + x0 * c : NULL, w * c);
            rows -= 2 * (passes[i].r + 1);
            uint16_t *t = in;
            in = out;
            out = t;
        }
        if (c == 4)
            for (Py_ssize_t y = 0; y < h; y++)
                unpremultiply_row(dst + (y * w + x0) * 4, sw);
    }
    rc = 0;
end:
    free(line);
    free(ra);
    free(rb);
    free(pre);
    free(ca);
    free(cb);
    free(sum);
    return rc;
}

static int boxes_plain(const uint8_t *src, uint8_t *dst, Py_ssize_t w, Py_ssize_t h, int c, int sp,
                       const BoxPass *passes, int np) {
    return boxes_body(src, dst, w, h, c, sp, passes, np);
}

#if HAVE_X86_SIMD
__attribute__((target("avx2"))) static int boxes_avx2(const uint8_t *src, uint8_t *dst, Py_ssize_t w, Py_ssize_t h,
                                                      int c, int sp, const BoxPass *passes, int np) {
    return boxes_body(src, dst, w, h, c, sp, passes, np);
}
#endif

/* The Arrow C data interface's structures (a stable ABI), as Pillow exports an image. */
struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

/* A source image: any contiguous buffer of w * h * c bytes, or the
 * (schema, array) capsules of Pillow's Arrow export, whose pixels are 4
 * bytes each (RGBX or RGBA) and read where they lie. */
typedef struct {
    const uint8_t *pixels;
    int sp; /* bytes a source pixel */
    Py_buffer view;
    int has_view;
} Source;

static int get_source(PyObject *obj, Py_ssize_t w, Py_ssize_t h, int c, Source *src) {
    src->has_view = 0;
    if (w < 1 || h < 1 || (c != 3 && c != 4)) {
        PyErr_SetString(PyExc_ValueError, "width and height must be >= 1 and channels 3 or 4");
        return -1;
    }
    if (PyTuple_Check(obj)) {
        PyObject *sc, *ac;
        if (!PyArg_ParseTuple(obj, "OO", &sc, &ac))
            return -1;
        struct ArrowSchema *schema = PyCapsule_GetPointer(sc, "arrow_schema");
        struct ArrowArray *array = schema ? PyCapsule_GetPointer(ac, "arrow_array") : NULL;
        if (!schema || !array)
            return -1;
        struct ArrowArray *child = array->n_children == 1 ? array->children[0] : NULL;
        if (!schema->format || strcmp(schema->format, "+w:4") != 0 || schema->n_children != 1 ||
            !schema->children[0]->format || strcmp(schema->children[0]->format, "C") != 0 || !child ||
            array->length != w * h || array->offset != 0 || child->offset != 0 ||
            child->length != w * h * 4 || child->n_buffers != 2 || !child->buffers[1]) {
            PyErr_SetString(PyExc_ValueError, "not an Arrow export of w x h pixels of 4 bytes");
            return -1;
        }
        src->pixels = child->buffers[1];
        src->sp = 4;
        return 0;
    }
    if (PyObject_GetBuffer(obj, &src->view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    src->has_view = 1;
    if (src->view.len != w * h * c) {
        PyErr_SetString(PyExc_ValueError, "src must hold width * height * channels bytes");
        PyBuffer_Release(&src->view);
        src->has_view = 0;
        return -1;
    }
    src->pixels = src->view.buf;
    src->sp = c;
    return 0;
}

static void release_source(Source *src) {
    if (src->has_view)
        PyBuffer_Release(&src->view);
    src->has_view = 0;
}

/* Where a result goes: dst (a writable buffer of n bytes), or with dst None a
 * new bytes object (not zeroed: every byte is written) returned through *made. */
static int get_dest(PyObject *dst_obj, Py_ssize_t n, Py_buffer *dst, PyObject **made) {
    *made = NULL;
    if (dst_obj == Py_None) {
        *made = PyBytes_FromStringAndSize(NULL, n);
        if (!*made)
            return -1;
        /* A fresh bytes object nobody else has seen yet: filling it is safe. */
        if (PyBuffer_FillInfo(dst, NULL, PyBytes_AS_STRING(*made), n, 0, PyBUF_SIMPLE) < 0) {
            Py_CLEAR(*made);
            return -1;
        }
        return 0;
    }
    if (PyObject_GetBuffer(dst_obj, dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
        return -1;
    if (dst->len != n) {
        PyErr_Format(PyExc_ValueError, "dst must hold %zd bytes, not %zd", n, dst->len);
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
    PyObject *src_obj, *dst_obj, *made;
    Py_ssize_t w, h;
    int c, rc;
    Source src;
    Py_buffer dst;
    if (!PyArg_ParseTuple(args, "OOnni", &src_obj, &dst_obj, &w, &h, &c))
        return NULL;
    if (get_source(src_obj, w, h, c, &src) < 0)
        return NULL;
    if (get_dest(dst_obj, w * h * c, &dst, &made) < 0) {
        release_source(&src);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
#if HAVE_X86_SIMD
    if (c == 3 && use_avx2())
        rc = blur121_rgb_avx2(src.pixels, dst.buf, w, h, src.sp);
    else
#endif
        rc = blur121(src.pixels, dst.buf, w, h, c, src.sp);
    Py_END_ALLOW_THREADS
    release_source(&src);
    PyBuffer_Release(&dst);
    return done(rc, made);
}

static PyObject *py_gaussian(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj, *taps_obj, *made;
    Py_ssize_t w, h;
    int c, rc;
    Source src;
    Py_buffer dst, taps;
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
    if (get_source(src_obj, w, h, c, &src) < 0) {
        PyBuffer_Release(&taps);
        return NULL;
    }
    if (get_dest(dst_obj, w * h * c, &dst, &made) < 0) {
        release_source(&src);
        PyBuffer_Release(&taps);
        return NULL;
    }
    int r = (int)(ntaps / 2);
    Py_BEGIN_ALLOW_THREADS
    rc = gauss(src.pixels, dst.buf, w, h, c, src.sp, taps.buf, r);
    Py_END_ALLOW_THREADS
    release_source(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&taps);
    return done(rc, made);
}

static PyObject *py_boxes(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj, *params_obj, *made;
    Py_ssize_t w, h;
    int c, rc;
    Source src;
    Py_buffer dst, params;
    BoxPass passes[BOX_MAX_PASSES];
    if (!PyArg_ParseTuple(args, "OOnniO", &src_obj, &dst_obj, &w, &h, &c, &params_obj))
        return NULL;
    if (PyObject_GetBuffer(params_obj, &params, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    Py_ssize_t nvals = params.len / 4;
    const int32_t *pv = params.buf;
    int ok = params.itemsize == 4 && params.format && (strcmp(params.format, "i") == 0 || strcmp(params.format, "=i") == 0 ||
                                                        strcmp(params.format, "<i") == 0) &&
             nvals % 3 == 0 && nvals >= 3 && nvals <= 3 * BOX_MAX_PASSES;
    int np = ok ? (int)(nvals / 3) : 0;
    for (int i = 0; ok && i < np; i++) {
        int32_t r = pv[3 * i], pw = pv[3 * i + 1], pa = pv[3 * i + 2];
        /* The weights of a pass sum to 2**16 (so no sum passes 2**30), r at most 1000. */
        ok = r >= 0 && r <= 1000 && pw > 0 && pa >= 0 &&
             (int64_t)pw * (2 * r + 1) + 2 * (int64_t)pa == (1 << BOX_WEIGHT_BITS);
        int f_in = i == 0 ? 0 : BOX_FRAC_BITS, f_out = i == np - 1 ? 0 : BOX_FRAC_BITS;
        passes[i] = (BoxPass){r, (uint32_t)pw, (uint32_t)pa, BOX_WEIGHT_BITS + f_in - f_out};
    }
    PyBuffer_Release(&params);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError,
                        "params must be 1 to 8 int32 rows (r, W, A) with 0 <= r <= 1000 and W (2r + 1) + 2A = 65536");
        return NULL;
    }
    if (get_source(src_obj, w, h, c, &src) < 0)
        return NULL;
    if (get_dest(dst_obj, w * h * c, &dst, &made) < 0) {
        release_source(&src);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
#if HAVE_X86_SIMD
    if (use_avx2())
        rc = boxes_avx2(src.pixels, dst.buf, w, h, c, src.sp, passes, np);
    else
#endif
        rc = boxes_plain(src.pixels, dst.buf, w, h, c, src.sp, passes, np);
    Py_END_ALLOW_THREADS
    release_source(&src);
    PyBuffer_Release(&dst);
    return done(rc, made);
}

/* Pixel (2x+1, 2y+1) of each 2x2 block (clamped where the image is 1 wide or
   high), sp bytes a source pixel, c bytes an output pixel. */
static void halfsize(const uint8_t *in, uint8_t *o, Py_ssize_t w, Py_ssize_t h, int c, int sp) {
    Py_ssize_t ow = w / 2 > 0 ? w / 2 : 1, oh = h / 2 > 0 ? h / 2 : 1;
    for (Py_ssize_t y = 0; y < oh; y++) {
        Py_ssize_t sy = 2 * y + 1 < h ? 2 * y + 1 : h - 1;
        const uint8_t *row = in + sy * w * sp;
        if (w < 2) {
            memcpy(o, row, (size_t)c);
            o += c;
            continue;
        }
        /* 2x + 1 < w for every x < w / 2: no clamp on the way. */
        const uint8_t *p = row + sp;
        if (c == sp) {
            for (Py_ssize_t x = 0; x < ow; x++, p += 2 * sp, o += c)
                memcpy(o, p, c == 4 ? 4 : 3);
        } else { /* 4 bytes in, 3 out: 4-byte stores, each overlapping the next pixel */
            for (Py_ssize_t x = 0; x + 1 < ow; x++, p += 8, o += 3)
                memcpy(o, p, 4);
            memcpy(o, p, 3);
            o += 3;
        }
    }
}

static PyObject *py_halfsize(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj, *made;
    Py_ssize_t w, h;
    int c;
    Source src;
    Py_buffer dst;
    if (!PyArg_ParseTuple(args, "OOnni", &src_obj, &dst_obj, &w, &h, &c))
        return NULL;
    if (get_source(src_obj, w, h, c, &src) < 0)
        return NULL;
    Py_ssize_t ow = w / 2 > 0 ? w / 2 : 1, oh = h / 2 > 0 ? h / 2 : 1;
    if (get_dest(dst_obj, ow * oh * c, &dst, &made) < 0) {
        release_source(&src);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    halfsize(src.pixels, dst.buf, w, h, c, src.sp);
    Py_END_ALLOW_THREADS
    release_source(&src);
    PyBuffer_Release(&dst);
    return done(0, made);
}

/* ---- Lanczos-3 resampling, as Pillow's 8-bit resampler (Resample.c) ------
 *
 * The thumbnail's resize of an RGB image, bit for bit what Image.resize(size,
 * LANCZOS, box) gives: the coefficients in double precision in the same
 * order (libm's sin, no FMA contraction: setup.py builds with
 * -ffp-contract=off), rounded to 22-bit fixed point; int sums from 1 << 21,
 * shifted back and clipped; Pillow's pass order and the rows its first pass
 * skips.  The source is read as 4 bytes a pixel (Pillow's RGBX, through its
 * Arrow export); the result is packed RGB.  The loops run over whole 4-byte
 * pixels so the compiler can vectorise them (the padding lane is summed and
 * dropped). */

#define RS_BITS 22
#define RS_ROUND (1 << (RS_BITS - 1))

static double sinc(double x) {
    if (x == 0.0)
        return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) {
    if (-3.0 <= x && x < 3.0)
        return sinc(x) * sinc(x / 3);
    return 0.0;
}

typedef struct {
    int ksize;
    int *bounds; /* first input, count: per output */
    int32_t *k;  /* ksize per output, fixed point */
} Coeffs;

static void free_coeffs(Coeffs *c) {
    free(c->bounds);
    free(c->k);
    c->bounds = NULL;
    c->k = NULL;
}

static int make_coeffs(int in_size, float in0, float in1, int out_size, Coeffs *c) {
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = malloc((size_t)out_size * 2 * sizeof(int));
    c->k = malloc((size_t)out_size * ksize * sizeof(int32_t));
    double *w = malloc((size_t)ksize * sizeof(double));
    if (!c->bounds || !c->k || !w) {
        free(w);
        free_coeffs(c);
        return -1;
    }
    double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = lanczos3((x + xmin - center + 0.5) * inv_filterscale);
            ww += w[x];
        }
        int32_t *k = c->k + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = 0.0;
            if (x < xmax)
                v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << RS_BITS) : 0.5 + v * (1 << RS_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return 0;
}

static inline uint8_t clip_sum(int32_t v) {
    v >>= RS_BITS;
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* rows x in_w RGBX -> rows x out_w; out_c = 4 (RGBX) or 3 (packed). */
static void pass_h(const uint8_t *src, Py_ssize_t in_w, uint8_t *dst, int out_w, int out_c, int rows,
                   const Coeffs *c) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *line = src + (Py_ssize_t)y * in_w * 4;
        uint8_t *out = dst + (Py_ssize_t)y * out_w * out_c;
        for (int xx = 0; xx < out_w; xx++) {
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            const uint8_t *p = line + (Py_ssize_t)c->bounds[2 * xx] * 4;
            int n = c->bounds[2 * xx + 1];
            int32_t s[4] = {RS_ROUND, RS_ROUND, RS_ROUND, RS_ROUND};
            for (int x = 0; x < n; x++, p += 4)
                for (int j = 0; j < 4; j++)
                    s[j] += p[j] * k[x];
            for (int j = 0; j < out_c; j++)
                out[xx * out_c + j] = clip_sum(s[j]);
        }
    }
}

/* width x (rows the bounds reach) RGBX -> width x out_h; out_c 4 or 3. */
static void pass_v(const uint8_t *src, int width, uint8_t *dst, int out_h, int out_c, const Coeffs *c,
                   int32_t *acc) {
    Py_ssize_t n = (Py_ssize_t)width * 4;
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        const uint8_t *p = src + (Py_ssize_t)c->bounds[2 * yy] * n;
        int taps = c->bounds[2 * yy + 1];
        for (Py_ssize_t i = 0; i < n; i++)
            acc[i] = RS_ROUND;
        for (int t = 0; t < taps; t++, p += n) {
            int32_t kt = k[t];
            for (Py_ssize_t i = 0; i < n; i++)
                acc[i] += p[i] * kt;
        }
        uint8_t *out = dst + (Py_ssize_t)yy * width * out_c;
        if (out_c == 4) {
            for (Py_ssize_t i = 0; i < n; i++)
                out[i] = clip_sum(acc[i]);
        } else {
            for (int x = 0; x < width; x++)
                for (int j = 0; j < 3; j++)
                    out[3 * x + j] = clip_sum(acc[4 * x + j]);
        }
    }
}

#if HAVE_X86_SIMD

/* The same sums, four lanes at a time (SSE4.1's 32-bit multiply): one pixel's
   four bytes per tap across, or four bytes of a row per tap down. */
__attribute__((target("sse4.1"))) static inline void store_px(uint8_t *out, __m128i s, int out_c) {
    __m128i v = _mm_srai_epi32(s, RS_BITS);
    v = _mm_packus_epi16(_mm_packs_epi32(v, v), v); /* clamps to 0..255 as clip_sum */
    uint32_t px = (uint32_t)_mm_cvtsi128_si32(v);
    memcpy(out, &px, (size_t)out_c);
}

__attribute__((target("sse4.1"))) static void pass_h_sse41(const uint8_t *src, Py_ssize_t in_w, uint8_t *dst,
                                                            int out_w, int out_c, int rows, const Coeffs *c) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *line = src + (Py_ssize_t)y * in_w * 4;
        uint8_t *out = dst + (Py_ssize_t)y * out_w * out_c;
        for (int xx = 0; xx < out_w; xx++) {
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            const uint8_t *p = line + (Py_ssize_t)c->bounds[2 * xx] * 4;
            int n = c->bounds[2 * xx + 1];
            __m128i s = _mm_set1_epi32(RS_ROUND);
            for (int x = 0; x < n; x++, p += 4) {
                int32_t px;
                memcpy(&px, p, 4);
                __m128i v = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(px));
                s = _mm_add_epi32(s, _mm_mullo_epi32(v, _mm_set1_epi32(k[x])));
            }
            store_px(out + (Py_ssize_t)xx * out_c, s, out_c);
        }
    }
}

__attribute__((target("sse4.1"))) static void pass_v_sse41(const uint8_t *src, int width, uint8_t *dst, int out_h,
                                                            int out_c, const Coeffs *c) {
    Py_ssize_t n = (Py_ssize_t)width * 4;
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        const uint8_t *first = src + (Py_ssize_t)c->bounds[2 * yy] * n;
        int taps = c->bounds[2 * yy + 1];
        uint8_t *out = dst + (Py_ssize_t)yy * width * out_c;
        /* Four pixels of the row at a time, every tap, then the next four. */
        int x = 0;
        for (; x + 4 <= width; x += 4) {
            __m128i s0 = _mm_set1_epi32(RS_ROUND), s1 = s0, s2 = s0, s3 = s0;
            const uint8_t *p = first + (Py_ssize_t)x * 4;
            for (int t = 0; t < taps; t++, p += n) {
                __m128i kt = _mm_set1_epi32(k[t]);
                __m128i b = _mm_loadu_si128((const __m128i *)p);
                s0 = _mm_add_epi32(s0, _mm_mullo_epi32(_mm_cvtepu8_epi32(b), kt));
                s1 = _mm_add_epi32(s1, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 4)), kt));
                s2 = _mm_add_epi32(s2, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 8)), kt));
                s3 = _mm_add_epi32(s3, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(b, 12)), kt));
            }
            store_px(out + (Py_ssize_t)(x + 0) * out_c, s0, out_c);
            store_px(out + (Py_ssize_t)(x + 1) * out_c, s1, out_c);
            store_px(out + (Py_ssize_t)(x + 2) * out_c, s2, out_c);
            store_px(out + (Py_ssize_t)(x + 3) * out_c, s3, out_c);
        }
        for (; x < width; x++) {
            __m128i s = _mm_set1_epi32(RS_ROUND);
            const uint8_t *p = first + (Py_ssize_t)x * 4;
            for (int t = 0; t < taps; t++, p += n) {
                int32_t px;
                memcpy(&px, p, 4);
                s = _mm_add_epi32(s, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(px)), _mm_set1_epi32(k[t])));
            }
            store_px(out + (Py_ssize_t)x * out_c, s, out_c);
        }
    }
}

#endif

static void pass_h_any(const uint8_t *src, Py_ssize_t in_w, uint8_t *dst, int out_w, int out_c, int rows,
                       const Coeffs *c) {
#if HAVE_X86_SIMD
    if (use_sse41()) {
        pass_h_sse41(src, in_w, dst, out_w, out_c, rows, c);
        return;
    }
#endif
    pass_h(src, in_w, dst, out_w, out_c, rows, c);
}

static int pass_v_any(const uint8_t *src, int width, uint8_t *dst, int out_h, int out_c, const Coeffs *c) {
#if HAVE_X86_SIMD
    if (use_sse41()) {
        pass_v_sse41(src, width, dst, out_h, out_c, c);
        return 0;
    }
#endif
    int32_t *acc = malloc((size_t)width * 4 * sizeof(int32_t));
    if (!acc)
        return -1;
    pass_v(src, width, dst, out_h, out_c, c, acc);
    free(acc);
    return 0;
}

/* ---- Pillow's integer box reduce (Reduce.c), before the Lanczos passes ----
 *
 * Image.reduce((fx, fy)) of RGBX into RGBX, ceil(w / fx) x ceil(h / fy): each
 * output pixel is the block of inputs [x*fx, min((x+1)*fx, w)) x [y*fy,
 * min((y+1)*fy, h)) of n pixels, ((sum + n / 2) * m) >> 24 in uint32, m being
 * Pillow's division_UINT32(n, 8) in single precision (the last column and
 * row are partial blocks with their own n).  The padding byte is summed
 * like the others and never read after. */
static uint32_t reduce_mult(uint32_t n) {
    uint32_t dividend = 256u * n;
    if (!dividend)
        return 0;
    float q = 4294967296.0f / (float)dividend;
    return (uint32_t)q;
}

/* Sums down rows y0 .. y0 + bh - 1 of every byte lane, into col. */
static void reduce_column_sums(const uint8_t *src, Py_ssize_t n, Py_ssize_t y0, int bh, uint32_t *col) {
    const uint8_t *p = src + y0 * n;
    for (Py_ssize_t i = 0; i < n; i++)
        col[i] = p[i];
    for (int r = 1; r < bh; r++) {
        p += n;
        for (Py_ssize_t i = 0; i < n; i++)
            col[i] += p[i];
    }
}

#if HAVE_X86_SIMD
/* The same sums 16 lanes at a time in 16 bits (bh <= 257: 257 * 255 fits). */
__attribute__((target("avx2"))) static void reduce_column_sums_avx2(const uint8_t *src, Py_ssize_t n, Py_ssize_t y0,
                                                                    int bh, uint32_t *col) {
    const uint8_t *top = src + y0 * n;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const uint8_t *p = top + i;
        __m256i sum = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
        for (int r = 1; r < bh; r++) {
            p += n;
            sum = _mm256_add_epi16(sum, _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p)));
        }
        _mm256_storeu_si256((__m256i *)(col + i), _mm256_cvtepu16_epi32(_mm256_castsi256_si128(sum)));
        _mm256_storeu_si256((__m256i *)(col + i + 8), _mm256_cvtepu16_epi32(_mm256_extracti128_si256(sum, 1)));
    }
    for (; i < n; i++) {
        const uint8_t *p = top + i;
        uint32_t v = 0;
        for (int r = 0; r < bh; r++, p += n)
            v += *p;
        col[i] = v;
    }
}

/* Whole blocks across (the first `blocks` output pixels), a pixel's four
   lanes at a time: the same uint32 sums, multiply and shift. */
__attribute__((target("avx2"))) static void reduce_across_avx2(const uint32_t *col, Py_ssize_t blocks, int fx,
                                                               uint32_t amend, uint32_t m, uint8_t *out) {
    const __m128i a = _mm_set1_epi32((int)amend), mm = _mm_set1_epi32((int)m);
    for (Py_ssize_t ox = 0; ox < blocks; ox++) {
        const uint32_t *c = col + ox * fx * 4;
        __m128i s = a;
        for (int i = 0; i < fx; i++)
            s = _mm_add_epi32(s, _mm_loadu_si128((const __m128i *)(c + 4 * i)));
        s = _mm_srli_epi32(_mm_mullo_epi32(s, mm), 24);
        s = _mm_packus_epi16(_mm_packus_epi32(s, s), s);
        uint32_t px = (uint32_t)_mm_cvtsi128_si32(s);
        memcpy(out + 4 * ox, &px, 4);
    }
}
#endif

static int reduce_rgbx(const uint8_t *src, Py_ssize_t w, Py_ssize_t h, int fx, int fy, uint8_t *dst) {
    Py_ssize_t ow = (w - 1) / fx + 1, oh = (h - 1) / fy + 1, n = w * 4;
    int rx = (int)(w % fx), ry = (int)(h % fy); /* the partial last column and row, 0 when none */
    uint32_t ufx = (uint32_t)fx, ufy = (uint32_t)fy, urx = (uint32_t)rx, ury = (uint32_t)ry;
    uint32_t m_full = reduce_mult(ufx * ufy), m_col = reduce_mult(urx * ufy);
    uint32_t m_row = reduce_mult(ufx * ury), m_corner = reduce_mult(urx * ury);
    uint32_t *col = malloc((size_t)n * sizeof(uint32_t));
    if (!col)
        return -1;
    for (Py_ssize_t oy = 0; oy < oh; oy++) {
        Py_ssize_t y0 = oy * fy;
        int bh = (int)(h - y0 < fy ? h - y0 : fy);
#if HAVE_X86_SIMD
        if (bh <= 257 && use_avx2())
            reduce_column_sums_avx2(src, n, y0, bh, col);
        else
#endif
            reduce_column_sums(src, n, y0, bh, col);
        uint8_t *out = dst + oy * ow * 4;
        Py_ssize_t ox = 0;
#if HAVE_X86_SIMD
        if (use_avx2()) {
            ox = w / fx; /* the whole blocks */
            reduce_across_avx2(col, ox, fx, (uint32_t)fx * (uint32_t)bh / 2, bh == fy ? m_full : m_row, out);
        }
#endif
        for (; ox < ow; ox++) {
            Py_ssize_t x0 = ox * fx;
            int bw = (int)(w - x0 < fx ? w - x0 : fx);
            uint32_t m = bw == fx ? (bh == fy ? m_full : m_row) : (bh == fy ? m_col : m_corner);
            uint32_t amend = (uint32_t)bw * (uint32_t)bh / 2;
            const uint32_t *c = col + x0 * 4;
            uint32_t s0 = amend, s1 = amend, s2 = amend, s3 = amend;
            for (int i = 0; i < bw; i++, c += 4) {
                s0 += c[0];
                s1 += c[1];
                s2 += c[2];
                s3 += c[3];
            }
            out[4 * ox + 0] = (uint8_t)((s0 * m) >> 24);
            out[4 * ox + 1] = (uint8_t)((s1 * m) >> 24);
            out[4 * ox + 2] = (uint8_t)((s2 * m) >> 24);
            out[4 * ox + 3] = (uint8_t)((s3 * m) >> 24);
        }
    }
    free(col);
    return 0;
}

/* Pillow's ImagingResampleInner for one RGBX image into packed RGB. */
static int lanczos_rgb(const uint8_t *src, int in_w, int in_h, uint8_t *dst, int out_w, int out_h,
                       const float box[4]) {
    int need_h = out_w != in_w || box[0] || box[2] != out_w;
    int need_v = out_h != in_h || box[1] || box[3] != out_h;
    int h_first = !((in_h - out_h) > 0 && (in_h - out_h) > (in_w - out_w) * 2);
    Coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    int rc = -1;
    if ((need_h && make_coeffs(in_w, box[0], box[2], out_w, &ch) < 0) ||
        (need_v && make_coeffs(in_h, box[1], box[3], out_h, &cv) < 0))
        goto end;
    if (!need_h && !need_v) {
        for (Py_ssize_t i = 0; i < (Py_ssize_t)in_w * in_h; i++)
            memcpy(dst + 3 * i, src + 4 * i, 3);
        rc = 0;
    } else if (need_h && need_v && h_first) {
        /* Only the rows the vertical pass reads, its bounds shifted to them. */
        int first = cv.bounds[0];
        int last = cv.bounds[2 * out_h - 2] + cv.bounds[2 * out_h - 1];
        for (int i = 0; i < out_h; i++)
            cv.bounds[2 * i] -= first;
        tmp = malloc((size_t)out_w * (last - first) * 4);
        if (tmp) {
            pass_h_any(src + (Py_ssize_t)first * in_w * 4, in_w, tmp, out_w, 4, last - first, &ch);
            rc = pass_v_any(tmp, out_w, dst, out_h, 3, &cv);
        }
    } else if (need_h && need_v) {
        tmp = malloc((size_t)in_w * out_h * 4);
        if (tmp && pass_v_any(src, in_w, tmp, out_h, 4, &cv) == 0) {
            pass_h_any(tmp, in_w, dst, out_w, 3, out_h, &ch);
            rc = 0;
        }
    } else if (need_h) {
        pass_h_any(src, in_w, dst, out_w, 3, in_h, &ch);
        rc = 0;
    } else {
        rc = pass_v_any(src, in_w, dst, out_h, 3, &cv);
    }
end:
    free_coeffs(&ch);
    free_coeffs(&cv);
    free(tmp);
    return rc;
}

/* ---- placeholders' sums (imgtool/placeholders.py) ---------------------------
 *
 * The per-pixel part of ThumbHash and BlurHash: the colours in 0..1 (atop
 * their alpha-weighted average where some alpha is below 255), ThumbHash's
 * L, P, Q (and A) channels and BlurHash's linear colours, and their cosine
 * sums, in double precision and in the order of the numpy path's products:
 * first down the rows (cos over y times the channel), then along them, each
 * sum in ascending index, divided by w * h at the end.  The quantisation is
 * in Python. */

#define PH_MAX 100

/* out[k * n + i] = cos(pi / n * k * (i + half)), as the numpy path's table (libm's cos). */
static void ph_cosines(int n, int count, double half, double *out) {
    for (int k = 0; k < count; k++)
        for (int i = 0; i < n; i++)
            out[k * n + i] = cos(M_PI / n * (double)k * ((double)i + half));
}

/* out[cy * nx + cx] = sum_x (sum_y fy[cy][y] x[y][x]) fx[cx][x] / (w * h); x[y][x] at x[(y * w + x) * stride];
 * fy, fx: ph_cosines(h, ny) and ph_cosines(w, nx). */
static void ph_project(const double *x, int stride, int w, int h, int nx, int ny, const double *fy, const double *fx,
                       double *out) {
    double down[PH_MAX];
    double area = (double)w * (double)h;
    for (int cy = 0; cy < ny; cy++) {
        /* Each column's sum in ascending y, the columns side by side (independent: they pipeline). */
        for (int i = 0; i < w; i++)
            down[i] = 0.0;
        for (int y = 0; y < h; y++) {
            double k = fy[cy * h + y];
            const double *row = x + (Py_ssize_t)y * w * stride;
            for (int i = 0; i < w; i++)
                down[i] += k * row[i * stride];
        }
        for (int cx = 0; cx < nx; cx++) {
            double s = 0.0;
            for (int i = 0; i < w; i++)
                s += down[i] * fx[cx * w + i];
            out[cy * nx + cx] = s / area;
        }
    }
}

static PyObject *ph_list(const double *v, int n) {
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *f = PyFloat_FromDouble(v[i]);
        if (f == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, f);
    }
    return list;
}

static PyObject *py_placeholder_sums(PyObject *self, PyObject *args) {
    Py_buffer src;
    int w, h, c, lx, ly, lxa, lya, bx, by;
    if (!PyArg_ParseTuple(args, "y*iii(ii)(ii)(ii)", &src, &w, &h, &c, &lx, &ly, &lxa, &lya, &bx, &by))
        return NULL;
    if (w < 1 || h < 1 || w > PH_MAX || h > PH_MAX || (c != 3 && c != 4) || lx < 1 || ly < 1 || lx > 9 || ly > 9
        || lxa < 1 || lya < 1 || lxa > 9 || lya > 9 || bx < 1 || by < 1 || bx > 9 || by > 9) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "placeholder_sums: 1 to 100 pixels a side, 3 or 4 channels, grids 1 to 9");
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)w * h;
    if (src.len != n * c) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "placeholder_sums: the buffer is not width * height * channels bytes");
        return NULL;
    }
    double *mem = PyMem_Malloc(sizeof(double) * (size_t)n * 11);
    if (mem == NULL) {
        PyBuffer_Release(&src);
        return PyErr_NoMemory();
    }
    double *rgb = mem, *lin = mem + 3 * n, *chan = mem + 6 * n;  /* chan: L, P, Q, A */
    double l[81], p[9], q[9], a[25], f[81 * 3], table[256];
    const uint8_t *px = src.buf;
    int has_alpha = 0;
    Py_BEGIN_ALLOW_THREADS
    long long alpha_sum = 0;
    if (c == 4)
        for (Py_ssize_t i = 0; i < n; i++)
            alpha_sum += px[i * 4 + 3];
    has_alpha = c == 4 && alpha_sum < 255LL * n;
    if (has_alpha) {
        /* weighted = alpha / 255 * value with alpha = a / 255; the average over alpha's (exact) sum. */
        double total = (double)alpha_sum / 255.0, sum[3] = {0.0, 0.0, 0.0}, avg[3] = {0.0, 0.0, 0.0};
        for (Py_ssize_t i = 0; i < n; i++) {
            double alpha = px[i * 4 + 3] / 255.0, k = alpha / 255.0;
            chan[3 * n + i] = alpha;
            for (int ch = 0; ch < 3; ch++) {
                rgb[i * 3 + ch] = k * (double)px[i * 4 + ch];
                sum[ch] += rgb[i * 3 + ch];
            }
        }
        if (total > 0)
            for (int ch = 0; ch < 3; ch++)
                avg[ch] = sum[ch] / total;
        for (Py_ssize_t i = 0; i < n; i++)
            for (int ch = 0; ch < 3; ch++)
                rgb[i * 3 + ch] = avg[ch] * (1.0 - chan[3 * n + i]) + rgb[i * 3 + ch];
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            for (int ch = 0; ch < 3; ch++)
                rgb[i * 3 + ch] = px[i * c + ch] / 255.0;
    }
    for (int v = 0; v < 256; v++) {
        double s = v / 255.0;
        table[v] = s <= 0.04045 ? s / 12.92 : pow((s + 0.055) / 1.055, 2.4);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double r = rgb[i * 3], g = rgb[i * 3 + 1], b = rgb[i * 3 + 2];
        chan[i] = (r + g + b) / 3.0;
        chan[n + i] = (r + g) / 2.0 - b;
        chan[2 * n + i] = r - g;
        for (int ch = 0; ch < 3; ch++) {
            int v;
            if (has_alpha) {
                double e = floor(rgb[i * 3 + ch] * 255.0 + 0.5);
                v = e < 0 ? 0 : e > 255 ? 255 : (int)e;
            } else {
                v = px[i * c + ch];
            }
            lin[i * 3 + ch] = table[v];
        }
    }
    if (has_alpha) {
        lx = lxa;
        ly = lya;
    }
    /* ThumbHash's cosines once, for the most terms a channel takes: a table of k terms is the first k rows. */
    int most = lx > ly ? lx : ly;
    most = most > 5 ? most : 5;
    double cy_half[9 * PH_MAX], cx_half[9 * PH_MAX], cy_whole[9 * PH_MAX], cx_whole[9 * PH_MAX];
    ph_cosines(h, most, 0.5, cy_half);
    ph_cosines(w, most, 0.5, cx_half);
    ph_cosines(h, by, 0.0, cy_whole);
    ph_cosines(w, bx, 0.0, cx_whole);
    ph_project(chan, 1, w, h, lx, ly, cy_half, cx_half, l);
    ph_project(chan + n, 1, w, h, 3, 3, cy_half, cx_half, p);
    ph_project(chan + 2 * n, 1, w, h, 3, 3, cy_half, cx_half, q);
    if (has_alpha)
        ph_project(chan + 3 * n, 1, w, h, 5, 5, cy_half, cx_half, a);
    /* f[(cy * 3 + ch) * bx + cx]: the numpy path's (cy, 3, cx) factors. */
    for (int ch = 0; ch < 3; ch++) {
        double one[81];
        ph_project(lin + ch, 3, w, h, bx, by, cy_whole, cx_whole, one);
        for (int cy = 0; cy < by; cy++)
            for (int cx = 0; cx < bx; cx++)
                f[(cy * 3 + ch) * bx + cx] = one[cy * bx + cx];
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(mem);
    PyBuffer_Release(&src);
    PyObject *ls = ph_list(l, lx * ly), *ps = ph_list(p, 9), *qs = ph_list(q, 9);
    PyObject *as = has_alpha ? ph_list(a, 25) : (Py_INCREF(Py_None), Py_None), *fs = ph_list(f, bx * by * 3);
    PyObject *out = NULL;
    if (ls && ps && qs && as && fs)
        out = Py_BuildValue("(OOOOOO)", has_alpha ? Py_True : Py_False, ls, ps, qs, as, fs);
    Py_XDECREF(ls);
    Py_XDECREF(ps);
    Py_XDECREF(qs);
    Py_XDECREF(as);
    Py_XDECREF(fs);
    return out;
}

static PyObject *py_simd(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(use_sse41());
}

static PyObject *py_lanczos(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj, *made;
    Py_ssize_t w, h;
    int ow, oh;
    float box[4];
    int fx = 1, fy = 1;
    Source src;
    Py_buffer dst;
    if (!PyArg_ParseTuple(args, "OOnnii(ffff)|(ii)", &src_obj, &dst_obj, &w, &h, &ow, &oh, &box[0], &box[1],
                          &box[2], &box[3], &fx, &fy))
        return NULL;
    if (ow < 1 || oh < 1 || w > INT32_MAX || h > INT32_MAX || fx < 1 || fy < 1 || fx > 65535 || fy > 65535) {
        PyErr_SetString(PyExc_ValueError, "output sizes must be >= 1 and reduce factors 1 to 65535");
        return NULL;
    }
    /* The box is in the reduced image's coordinates. */
    Py_ssize_t rw = (w - 1) / fx + 1, rh = (h - 1) / fy + 1;
    if (!(box[0] >= 0 && box[1] >= 0 && box[2] <= rw && box[3] <= rh && box[2] - box[0] >= 0 &&
          box[3] - box[1] >= 0)) {
        PyErr_SetString(PyExc_ValueError, "the box must lie inside the image");
        return NULL;
    }
    if (get_source(src_obj, w, h, 3, &src) < 0)
        return NULL;
    if (src.sp != 4) {
        release_source(&src);
        PyErr_SetString(PyExc_ValueError, "lanczos reads an image's Arrow export (4 bytes a pixel)");
        return NULL;
    }
    if (get_dest(dst_obj, (Py_ssize_t)ow * oh * 3, &dst, &made) < 0) {
        release_source(&src);
        return NULL;
    }
    int rc = -1;
    Py_BEGIN_ALLOW_THREADS
    if (fx == 1 && fy == 1) {
        rc = lanczos_rgb(src.pixels, (int)w, (int)h, dst.buf, ow, oh, box);
    } else {
        uint8_t *reduced = malloc((size_t)rw * rh * 4);
        if (reduced && reduce_rgbx(src.pixels, w, h, fx, fy, reduced) == 0)
            rc = lanczos_rgb(reduced, (int)rw, (int)rh, dst.buf, ow, oh, box);
        free(reduced);
    }
    Py_END_ALLOW_THREADS
    release_source(&src);
    PyBuffer_Release(&dst);
    return done(rc, made);
}

static PyMethodDef methods[] = {
    {"halfsize", py_halfsize, METH_VARARGS,
     "halfsize(src, dst, width, height, channels): dst None returns new bytes.  Pixel (2x+1, 2y+1) of each 2x2 block,\n"
     "clamped; dst holds max(1, width // 2) * max(1, height // 2) * channels bytes."},
    {"simd", py_simd, METH_NOARGS, "simd() -> bool: whether lanczos runs its vector loops here (else plain C, slower than Pillow's)."},
    {"lanczos", py_lanczos, METH_VARARGS,
     "lanczos(src, dst, width, height, out_width, out_height, (x0, y0, x1, y1)[, (fx, fy)]): dst None returns new\n"
     "bytes.  Image.resize((out_width, out_height), LANCZOS, box) of an RGB image's Arrow export, bit for bit, as packed\n"
     "RGB; with (fx, fy), of its Image.reduce((fx, fy)) instead, the box in the reduced image's coordinates."},
    {"blur121", py_blur121, METH_VARARGS,
     "blur121(src, dst, width, height, channels): dst None returns new bytes.  The [1 2 1] x [1 2 1] / 16 blur, clamped edges,\n"
     "premultiplied alpha; src and dst are contiguous buffers of straight RGB/RGBA pixels."},
    {"gaussian", py_gaussian, METH_VARARGS,
     "gaussian(src, dst, width, height, channels, taps): dst None returns new bytes.  A separable float32 Gaussian (taps: float32\n"
     "buffer of 2r+1 values), clamped edges, premultiplied alpha."},
    {"boxes", py_boxes, METH_VARARGS,
     "boxes(src, dst, width, height, channels, params): dst None returns new bytes.  The Gaussian as a cascade of\n"
     "extended boxes (boxblur.py): params an int32 buffer of rows (r, W, A), rows then columns, clamped edges,\n"
     "premultiplied alpha, integer arithmetic (the numpy path and kernels/boxblur.cu give the same bytes)."},
    {"placeholder_sums", py_placeholder_sums, METH_VARARGS,
     "placeholder_sums(src, width, height, channels, (lx, ly), (lx_alpha, ly_alpha), (bx, by)) -> (has_alpha, L, P, Q,\n"
     "A or None, factors): the cosine sums of imgtool.placeholders (ThumbHash's channels on an ly x lx grid, or the\n"
     "alpha one where some alpha is below 255, P and Q 3 x 3, A 5 x 5; BlurHash's by x 3 x bx), each / (w * h),\n"
     "as lists of floats; src holds width * height * channels bytes (straight RGB/RGBA), at most 100 a side."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cpufast", "The cpu backend's C fast paths.", -1, methods,
};

PyMODINIT_FUNC PyInit__cpufast(void) { return PyModule_Create(&module); }
