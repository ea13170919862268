// boxblur.cu - the large-sigma Gaussian: a cascade of extended box passes in integers.
//
// The arithmetic of imgtool/backends/boxblur.py, which the cpu backend's C and
// numpy paths share, so the results are the same bytes: a pass (r, W, A)
// turns its input x into
//     (W * sum(x[j-r .. j+r]) + A * (x[j-r-1] + x[j+r+1]) + half) >> shift
// with W (2r + 1) + 2A = 2**16.  Values between passes are 8.6 fixed point in
// 16 bits; the first pass of an axis reads 8-bit pixels (premultiplied here
// when the image has alpha), the last writes 8-bit ones.  An axis of n pixels
// is read as n + 2 * EXT, the end pixels repeated EXT times (EXT = the sum of
// r + 1 over the passes: the clamp to the edge of the other Gaussian), and
// each pass is r + 1 shorter at each end, so the last gives n again.
//
// One launch per pass.  Rows first: level buffers of `rows` lines of `n_in`
// pixels, the last pass into an 8-bit image (premultiplied); then the columns
// of that image, the last pass into dst (unpremultiplied).  Each thread makes
// SEGMENT consecutive outputs of one line for all CHANNELS: a window sum
// (2r + 1 reads) to start, then a running sum (O(1) a pixel).  Along rows a
// block is BLOCK_X segments of BLOCK_Y rows; down columns, BLOCK_X adjacent
// columns (consecutive threads read consecutive pixels) of BLOCK_Y segments.
// Blocks loop over the grid's y (rows, or segments down columns), so any
// height fits the 65535 limit.  Integer sums: no rounding mode, no FMA question.
//
// Prelude: CHANNELS, BLOCK_X, BLOCK_Y, SEGMENT.
#include "imgtool.cuh"

typedef unsigned short u16;

// The pass's input along its line: an 8-bit image (clamped to its n pixels,
// after `pad` virtual ones; the source premultiplied here, the rows' result
// already is) or a 16-bit level.
template <bool PREMULTIPLY>
struct FromImage {
    const u8* __restrict__ p;
    int n, pad;
    size_t line_stride, step;  // in bytes, between lines and between pixels
    __device__ __forceinline__ void get(size_t line, int j, unsigned v[CHANNELS]) const {
        const u8* q = p + line * line_stride + (size_t)clamp_index(j - pad, n) * step;
        if (PREMULTIPLY) {
            int px[CHANNELS];
            load_premultiplied(q, px);
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) v[c] = (unsigned)px[c];
        } else {
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) v[c] = q[c];
        }
    }
};

struct FromLevel {
    const u16* __restrict__ p;
    size_t line_stride, step;  // in values
    __device__ __forceinline__ void get(size_t line, int j, unsigned v[CHANNELS]) const {
        const u16* q = p + line * line_stride + (size_t)j * step;
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) v[c] = q[c];
    }
};

struct ToLevel {
    u16* __restrict__ p;
    size_t line_stride, step;
    __device__ __forceinline__ void put(size_t line, int j, const unsigned v[CHANNELS]) const {
        u16* q = p + line * line_stride + (size_t)j * step;
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) q[c] = (u16)v[c];
    }
};

template <bool UNPREMULTIPLY>
struct ToImage {
    u8* __restrict__ p;
    size_t line_stride, step;
    __device__ __forceinline__ void put(size_t line, int j, const unsigned v[CHANNELS]) const {
        u8* q = p + line * line_stride + (size_t)j * step;
        if (UNPREMULTIPLY) {
            int px[CHANNELS];
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) px[c] = (int)v[c];
            store_unpremultiplied(q, px);
        } else {
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) q[c] = (u8)v[c];
        }
    }
};

// Outputs j0 .. j1-1 of line `line`: output j reads inputs j .. j + 2r + 2.
template <typename In, typename Out>
__device__ __forceinline__ void box_segment(const In& in, const Out& out, size_t line, int j0, int j1, int r,
                                            unsigned w, unsigned a, int shift) {
    const unsigned half = 1u << (shift - 1);
    const int e = r + 1;
    unsigned sum[CHANNELS], v[CHANNELS], near[CHANNELS], far[CHANNELS], res[CHANNELS];
#pragma unroll
    for (int c = 0; c < CHANNELS; ++c) sum[c] = 0;
    for (int t = j0 + 1; t <= j0 + 2 * r + 1; ++t) {
        in.get(line, t, v);
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) sum[c] += v[c];
    }
    in.get(line, j0, near);
    for (int j = j0; j < j1; ++j) {
        in.get(line, j + 2 * e, far);
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) res[c] = (w * sum[c] + a * (near[c] + far[c]) + half) >> shift;
        out.put(line, j, res);
        if (j + 1 < j1) {
            in.get(line, j + 1, near);  // leaves the window, and is the next output's near end
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) sum[c] += far[c] - near[c];
        }
    }
}

// Along rows: thread (segment, row).  n_out outputs a row.
template <typename In, typename Out>
__device__ __forceinline__ void rows_pass(const In& in, const Out& out, int rows, int n_out, int r, unsigned w,
                                          unsigned a, int shift) {
    const int j0 = (blockIdx.x * BLOCK_X + threadIdx.x) * SEGMENT;
    if (j0 >= n_out) return;
    const int j1 = min(j0 + SEGMENT, n_out);
    for (int y = blockIdx.y * BLOCK_Y + threadIdx.y; y < rows; y += gridDim.y * BLOCK_Y)
        box_segment(in, out, (size_t)y, j0, j1, r, w, a, shift);
}

// Down columns: thread (column, segment).  n_out outputs a column.
template <typename In, typename Out>
__device__ __forceinline__ void cols_pass(const In& in, const Out& out, int cols, int n_out, int r, unsigned w,
                                          unsigned a, int shift) {
    const int x = blockIdx.x * BLOCK_X + threadIdx.x;
    if (x >= cols) return;
    for (int s = blockIdx.y * BLOCK_Y + threadIdx.y; s * SEGMENT < n_out; s += gridDim.y * BLOCK_Y) {
        const int j0 = s * SEGMENT;
        box_segment(in, out, (size_t)x, j0, min(j0 + SEGMENT, n_out), r, w, a, shift);
    }
}

// ---- rows: the image (width x height) -> levels of n_in = n_out + 2(r+1) pixels a row -> 8-bit image

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
boxes_rows_first(const u8* __restrict__ src, u16* __restrict__ dst, int width, int height, int pad, int n_out,
                 int r, unsigned w, unsigned a, int shift) {
    const FromImage<true> in{src, width, pad, (size_t)width * CHANNELS, CHANNELS};
    const ToLevel out{dst, (size_t)n_out * CHANNELS, CHANNELS};
    rows_pass(in, out, height, n_out, r, w, a, shift);
}

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
boxes_rows_mid(const u16* __restrict__ src, u16* __restrict__ dst, int height, int n_out, int r, unsigned w,
               unsigned a, int shift) {
    const FromLevel in{src, (size_t)(n_out + 2 * (r + 1)) * CHANNELS, CHANNELS};
    const ToLevel out{dst, (size_t)n_out * CHANNELS, CHANNELS};
    rows_pass(in, out, height, n_out, r, w, a, shift);
}

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
boxes_rows_last(const u16* __restrict__ src, u8* __restrict__ dst, int height, int n_out, int r, unsigned w,
                unsigned a, int shift) {
    const FromLevel in{src, (size_t)(n_out + 2 * (r + 1)) * CHANNELS, CHANNELS};
    const ToImage<false> out{dst, (size_t)n_out * CHANNELS, CHANNELS};
    rows_pass(in, out, height, n_out, r, w, a, shift);
}

// ---- columns: the rows' 8-bit image -> levels of n_in rows of width pixels -> dst

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
boxes_cols_first(const u8* __restrict__ src, u16* __restrict__ dst, int width, int height, int pad, int n_out,
                 int r, unsigned w, unsigned a, int shift) {
    const FromImage<false> in{src, height, pad, CHANNELS, (size_t)width * CHANNELS};
    const ToLevel out{dst, CHANNELS, (size_t)width * CHANNELS};
    cols_pass(in, out, width, n_out, r, w, a, shift);
}

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
boxes_cols_mid(const u16* __restrict__ src, u16* __restrict__ dst, int width, int n_out, int r, unsigned w,
               unsigned a, int shift) {
    const FromLevel in{src, CHANNELS, (size_t)width * CHANNELS};
    const ToLevel out{dst, CHANNELS, (size_t)width * CHANNELS};
    cols_pass(in, out, width, n_out, r, w, a, shift);
}

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
boxes_cols_last(const u16* __restrict__ src, u8* __restrict__ dst, int width, int n_out, int r, unsigned w,
                unsigned a, int shift) {
    const FromLevel in{src, CHANNELS, (size_t)width * CHANNELS};
    const ToImage<true> out{dst, CHANNELS, (size_t)width * CHANNELS};
    cols_pass(in, out, width, n_out, r, w, a, shift);
}
