// resample.cu - one pass of a separable resampling filter (the thumbnail's Lanczos-3).
//
// The arithmetic is Pillow's 8-bit resampler: per output position, int32 fixed
// point coefficients (22 fraction bits) over `count` consecutive inputs from
// `first`, accumulated from 1 << 21 (rounding) and shifted back, clipped to
// 0..255.  Coefficients come from imgtool.backends.filters.lanczos_coefficients:
// bounds[2*i] = first input, bounds[2*i+1] = count, coeffs[i*ksize + j].
// Two passes (horizontal into a uint8 intermediate, then vertical; Pillow's order)
// make a thumbnail; the first premultiplies alpha as it reads, the last
// unpremultiplies as it writes.
//
// Prelude: CHANNELS, BLOCK_X, BLOCK_Y.  One thread per output pixel, the grid's
// y dimension strides over rows so any height fits in 65535 blocks.
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
