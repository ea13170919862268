// resample.cu - the thumbnail: Pillow's integer box reduce, then one pass at a
// time of a separable resampling filter (Lanczos-3).
//
// The arithmetic is Pillow's Image.resize(..., LANCZOS, reducing_gap=3.0) on
// 8-bit images (imgtool.backends.filters has the host side of it):
//
// reduce_box: Pillow's ImagingReduce by (fx, fy).  Output pixel (x, y) is the
// block of inputs [x*fx, min((x+1)*fx, in_w)) x [y*fy, min((y+1)*fy, in_h)) -
// the last column and row are partial blocks when the size is not a multiple
// of the factor - of n pixels: ((sum + n/2) * m) >> 24 in uint32, where m is
// Pillow's division_UINT32(n, 8), given per block kind (full, last column,
// last row, corner) by filters.reduce_multiplier.
//
// resample_h / resample_v: Pillow's 8-bit resampler: per output position, int32
// fixed point coefficients (22 fraction bits) over `count` consecutive inputs
// from `first`, accumulated from 1 << 21 (rounding) and shifted back, clipped to
// 0..255.  Coefficients come from imgtool.backends.filters.lanczos_coefficients
// (with the fractional box the reduce leaves): bounds[2*i] = first input,
// bounds[2*i+1] = count, coeffs[i*ksize + j].
//
// Every stage reads and writes uint8 images; the first premultiplies alpha as
// it reads, the last unpremultiplies as it writes (Pillow: RGBA -> RGBa once,
// reduce and resample, RGBa -> RGBA once).
//
// Prelude: CHANNELS, BLOCK_X, BLOCK_Y.  One thread per output pixel, the grid's
// y dimension strides over rows so any height fits in 65535 blocks.  No shared
// memory, no barriers.
#include "imgtool.cuh"

#define ROUNDING (1 << 21)
#define PRECISION_BITS 22

__device__ __forceinline__ void finish_pixel(u8* __restrict__ out, const int ss[CHANNELS], int unpremultiply_out) {
    int v[CHANNELS];
#pragma unroll
    for (int c = 0; c < CHANNELS; ++c) v[c] = clip8(ss[c] >> PRECISION_BITS);
    if (unpremultiply_out) {
        store_unpremultiplied(out, v);
    } else {
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) out[c] = (u8)v[c];
    }
}

// src: in_w x rows, dst: out_w x rows.
extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
resample_h(const u8* __restrict__ src, u8* __restrict__ dst, int in_w, int rows, int out_w,
           const int* __restrict__ bounds, const int* __restrict__ coeffs, int ksize,
           int premultiply_in, int unpremultiply_out) {
    const int x = blockIdx.x * BLOCK_X + threadIdx.x;
    if (x >= out_w) return;
    const int first = bounds[2 * x];
    const int count = bounds[2 * x + 1];
    const int* __restrict__ k = coeffs + (size_t)x * ksize;
    for (int y = blockIdx.y * BLOCK_Y + threadIdx.y; y < rows; y += gridDim.y * BLOCK_Y) {
        const u8* __restrict__ p = src + pixel_offset(first, y, in_w);
        int ss[CHANNELS];
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) ss[c] = ROUNDING;
        if (CHANNELS == 4 && premultiply_in) {
            for (int i = 0; i < count; ++i, p += CHANNELS) {
                int v[CHANNELS];
                load_premultiplied(p, v);
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) ss[c] += v[c] * k[i];
            }
        } else {
            for (int i = 0; i < count; ++i, p += CHANNELS) {
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) ss[c] += (int)p[c] * k[i];
            }
        }
        finish_pixel(dst + pixel_offset(x, y, out_w), ss, unpremultiply_out);
    }
}

// src: width x in_h, dst: width x out_h.
extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
resample_v(const u8* __restrict__ src, u8* __restrict__ dst, int width, int in_h, int out_h,
           const int* __restrict__ bounds, const int* __restrict__ coeffs, int ksize,
           int premultiply_in, int unpremultiply_out) {
    (void)in_h;  // the coefficients' bounds stay inside it: lanczos_coefficients(in_h, out_h)
    const int x = blockIdx.x * BLOCK_X + threadIdx.x;
    if (x >= width) return;
    const size_t stride = (size_t)width * CHANNELS;
    for (int y = blockIdx.y * BLOCK_Y + threadIdx.y; y < out_h; y += gridDim.y * BLOCK_Y) {
        const int first = bounds[2 * y];
        const int count = bounds[2 * y + 1];
        const int* __restrict__ k = coeffs + (size_t)y * ksize;
        const u8* __restrict__ p = src + pixel_offset(x, first, width);
        int ss[CHANNELS];
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) ss[c] = ROUNDING;
        if (CHANNELS == 4 && premultiply_in) {
            for (int i = 0; i < count; ++i, p += stride) {
                int v[CHANNELS];
                load_premultiplied(p, v);
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) ss[c] += v[c] * k[i];
            }
        } else {
            for (int i = 0; i < count; ++i, p += stride) {
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) ss[c] += (int)p[c] * k[i];
            }
        }
        finish_pixel(dst + pixel_offset(x, y, width), ss, unpremultiply_out);
    }
}

// src: in_w x in_h, dst: out_w x out_h = ceil(in_w / fx) x ceil(in_h / fy).
extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
reduce_box(const u8* __restrict__ src, u8* __restrict__ dst, int in_w, int in_h, int fx, int fy,
           int out_w, int out_h, unsigned int mult_full, unsigned int mult_last_col,
           unsigned int mult_last_row, unsigned int mult_corner,
           int premultiply_in, int unpremultiply_out) {
    const int x = blockIdx.x * BLOCK_X + threadIdx.x;
    if (x >= out_w) return;
    const int x0 = x * fx;
    const int bw = min(fx, in_w - x0);
    for (int y = blockIdx.y * BLOCK_Y + threadIdx.y; y < out_h; y += gridDim.y * BLOCK_Y) {
        const int y0 = y * fy;
        const int bh = min(fy, in_h - y0);
        const unsigned int mult = bw == fx ? (bh == fy ? mult_full : mult_last_row)
                                           : (bh == fy ? mult_last_col : mult_corner);
        const unsigned int amend = (unsigned int)(bw * bh / 2);
        unsigned int ss[CHANNELS];
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) ss[c] = amend;
        for (int yy = y0; yy < y0 + bh; ++yy) {
            const u8* __restrict__ p = src + pixel_offset(x0, yy, in_w);
            if (CHANNELS == 4 && premultiply_in) {
                for (int i = 0; i < bw; ++i, p += CHANNELS) {
                    int v[CHANNELS];
                    load_premultiplied(p, v);
#pragma unroll
                    for (int c = 0; c < CHANNELS; ++c) ss[c] += (unsigned int)v[c];
                }
            } else {
                for (int i = 0; i < bw; ++i, p += CHANNELS) {
#pragma unroll
                    for (int c = 0; c < CHANNELS; ++c) ss[c] += p[c];
                }
            }
        }
        int v[CHANNELS];
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) v[c] = (int)((ss[c] * mult) >> 24);  // <= 255
        u8* __restrict__ q = dst + pixel_offset(x, y, out_w);
        if (unpremultiply_out) {
            store_unpremultiplied(q, v);
        } else {
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) q[c] = (u8)v[c];
        }
    }
}
