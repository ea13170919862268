// imgtool.cuh - pixel arithmetic shared by imgtool's kernels.
//
// Every kernel is compiled with a generated prelude that defines CHANNELS
// (3: RGB, 4: RGBA with straight alpha) and its block geometry.  Images are
// interleaved uint8 rows, width * CHANNELS bytes each.  Resampling and blurring
// work on premultiplied alpha with Pillow's rounding (RGBA -> RGBa -> RGBA), so
// the kernels agree with the cpu backend bit for bit.
#pragma once

#ifndef CHANNELS
#error "the prelude must define CHANNELS (3 or 4)"
#endif
#if CHANNELS != 3 && CHANNELS != 4
#error "CHANNELS must be 3 or 4"
#endif

typedef unsigned char u8;

// Pillow's MULDIV255: round(c * a / 255) without a division.
__device__ __forceinline__ int muldiv255(int c, int a) {
    const int t = c * a + 128;
    return ((t >> 8) + t) >> 8;
}

// Pillow's RGBa -> RGBA: colour of a fully transparent or opaque pixel is kept.
__device__ __forceinline__ int unpremultiply_channel(int c, int a) {
    return (a == 0 || a == 255) ? c : min(255, (255 * c) / a);
}

__device__ __forceinline__ int clamp_index(int i, int n) {
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

__device__ __forceinline__ int clip8(int v) {
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

// Reads one pixel, premultiplied when the image has alpha.
__device__ __forceinline__ void load_premultiplied(const u8* __restrict__ p, int out[CHANNELS]) {
#if CHANNELS == 4
    const int a = p[3];
    out[0] = muldiv255(p[0], a);
    out[1] = muldiv255(p[1], a);
    out[2] = muldiv255(p[2], a);
    out[3] = a;
#else
    out[0] = p[0];
    out[1] = p[1];
    out[2] = p[2];
#endif
}

// Writes one premultiplied pixel (each value already 0..255) as straight alpha.
__device__ __forceinline__ void store_unpremultiplied(u8* __restrict__ p, const int v[CHANNELS]) {
#if CHANNELS == 4
    const int a = v[3];
    p[0] = (u8)unpremultiply_channel(v[0], a);
    p[1] = (u8)unpremultiply_channel(v[1], a);
    p[2] = (u8)unpremultiply_channel(v[2], a);
    p[3] = (u8)a;
#else
    p[0] = (u8)v[0];
    p[1] = (u8)v[1];
    p[2] = (u8)v[2];
#endif
}

// Offset of pixel (x, y) in an interleaved image; 64-bit, images may pass 2^31 bytes.
__device__ __forceinline__ size_t pixel_offset(int x, int y, int width) {
    return ((size_t)y * (size_t)width + (size_t)x) * CHANNELS;
}
