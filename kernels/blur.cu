// blur.cu - the blur: the default [1 2 1] x [1 2 1] / 16 and a separable Gaussian.
//
// Both work on premultiplied alpha (alpha itself is blurred too) and clamp to
// the edge, so a radius larger than the image still reads only real pixels.
//
// box121: integer [1 2 1] sums both ways, out = (sum + 8) >> 4, from one shared
//   tile of the block's pixels plus a one-pixel apron; each thread makes
//   BOX_PIXELS outputs of its column, BOX_BLOCK_Y apart.
// gauss_h: float32 sum of taps[t] * pixel(x + t - RADIUS) into a float32
//   intermediate, from a shared row tile plus the 2*RADIUS apron.
// gauss_v: float32 sum down the columns of that intermediate, from a shared
//   column tile plus its apron, then floor(v + 0.5) clipped to 0..255 and
//   unpremultiplied.
// Taps are summed in order t = 0 .. 2*RADIUS, as the cpu backend does; compiled
// without FMA contraction (nvcc --fmad=false) the sums are the same bits.
//
// Prelude: CHANNELS, RADIUS, BOX_BLOCK_X/Y and BOX_PIXELS (box121), H_BLOCK_X/Y and H_PIXELS
// (gauss_h: each thread makes H_PIXELS outputs of its row, H_BLOCK_X apart),
// V_BLOCK_X/Y and V_PIXELS (gauss_v: each thread makes V_PIXELS outputs of its
// column, V_BLOCK_Y apart).  The host picks them so that the static shared
// memory stays within 48 KiB.  Every block loops over its rows (grid y strides),
// so barriers are reached by all threads of a block alike.
#include "imgtool.cuh"

#define TAPS (2 * RADIUS + 1)

// ---- [1 2 1] x [1 2 1] / 16 --------------------------------------------------

#define BOX_ROWS (BOX_BLOCK_Y * BOX_PIXELS)
#define BOX_TILE_W (BOX_BLOCK_X + 2)
#define BOX_TILE_H (BOX_ROWS + 2)

extern "C" __global__ void __launch_bounds__(BOX_BLOCK_X * BOX_BLOCK_Y)
box121(const u8* __restrict__ src, u8* __restrict__ dst, int width, int height) {
    __shared__ int tile[BOX_TILE_H][BOX_TILE_W * CHANNELS];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * BOX_BLOCK_X + tx;
    const int x0 = blockIdx.x * BOX_BLOCK_X;
    const int x = x0 + tx;
    for (int y0 = blockIdx.y * BOX_ROWS; y0 < height; y0 += gridDim.y * BOX_ROWS) {
        for (int i = tid; i < BOX_TILE_H * BOX_TILE_W; i += BOX_BLOCK_X * BOX_BLOCK_Y) {
            const int r = i / BOX_TILE_W, q = i % BOX_TILE_W;
            const int gx = clamp_index(x0 - 1 + q, width), gy = clamp_index(y0 - 1 + r, height);
            int v[CHANNELS];
            load_premultiplied(src + pixel_offset(gx, gy, width), v);
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) tile[r][q * CHANNELS + c] = v[c];
        }
        __syncthreads();
        if (x < width) {
#pragma unroll
            for (int p = 0; p < BOX_PIXELS; ++p) {
                const int ly = ty + p * BOX_BLOCK_Y;
                const int y = y0 + ly;
                if (y >= height) break;
                int v[CHANNELS];
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) {
                    int rows[3];
#pragma unroll
                    for (int r = 0; r < 3; ++r) {
                        const int* t = &tile[ly + r][tx * CHANNELS + c];
                        rows[r] = t[0] + 2 * t[CHANNELS] + t[2 * CHANNELS];
                    }
                    v[c] = (rows[0] + 2 * rows[1] + rows[2] + 8) >> 4;
                }
                store_unpremultiplied(dst + pixel_offset(x, y, width), v);
            }
        }
        __syncthreads();  // the next rows overwrite the tile
    }
}

// ---- Gaussian, horizontal ----------------------------------------------------

#define H_TILE_W (H_BLOCK_X * H_PIXELS)
#define H_SPAN (H_TILE_W + 2 * RADIUS)

extern "C" __global__ void __launch_bounds__(H_BLOCK_X * H_BLOCK_Y)
gauss_h(const u8* __restrict__ src, float* __restrict__ dst, int width, int height,
        const float* __restrict__ taps) {
    __shared__ float s_taps[TAPS];
    __shared__ float row[H_BLOCK_Y][H_SPAN * CHANNELS];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * H_BLOCK_X + tx;
    for (int i = tid; i < TAPS; i += H_BLOCK_X * H_BLOCK_Y) s_taps[i] = taps[i];
    const int x0 = blockIdx.x * H_TILE_W;
    for (int y0 = blockIdx.y * H_BLOCK_Y; y0 < height; y0 += gridDim.y * H_BLOCK_Y) {
        const int y = y0 + ty;
        const int ly = min(y, height - 1);  // rows past the end load, but do not store
        for (int i = tx; i < H_SPAN; i += H_BLOCK_X) {
            int v[CHANNELS];
            load_premultiplied(src + pixel_offset(clamp_index(x0 - RADIUS + i, width), ly, width), v);
#pragma unroll
            for (int c = 0; c < CHANNELS; ++c) row[ty][i * CHANNELS + c] = (float)v[c];
        }
        __syncthreads();
        if (y < height) {
#pragma unroll
            for (int p = 0; p < H_PIXELS; ++p) {
                const int lx = tx + p * H_BLOCK_X;
                const int x = x0 + lx;
                if (x >= width) break;
                float acc[CHANNELS];
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) acc[c] = 0.0f;
                const float* r = &row[ty][lx * CHANNELS];
                for (int t = 0; t < TAPS; ++t) {
                    const float w = s_taps[t];
#pragma unroll
                    for (int c = 0; c < CHANNELS; ++c) acc[c] += w * r[t * CHANNELS + c];
                }
                float* out = dst + pixel_offset(x, y, width);
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) out[c] = acc[c];
            }
        }
        __syncthreads();
    }
}

// ---- Gaussian, vertical --------------------------------------------------------

#define V_TILE_H (V_BLOCK_Y * V_PIXELS)
#define V_SPAN (V_TILE_H + 2 * RADIUS)
#define V_ROW (V_BLOCK_X * CHANNELS)

extern "C" __global__ void __launch_bounds__(V_BLOCK_X * V_BLOCK_Y)
gauss_v(const float* __restrict__ src, u8* __restrict__ dst, int width, int height,
        const float* __restrict__ taps) {
    __shared__ float s_taps[TAPS];
    __shared__ float col[V_SPAN][V_ROW];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * V_BLOCK_X + tx;
    for (int i = tid; i < TAPS; i += V_BLOCK_X * V_BLOCK_Y) s_taps[i] = taps[i];
    const int x0 = blockIdx.x * V_BLOCK_X;
    const int x = x0 + tx;
    for (int y0 = blockIdx.y * V_TILE_H; y0 < height; y0 += gridDim.y * V_TILE_H) {
        // consecutive threads read consecutive floats of a row: coalesced
        for (int i = tid; i < V_SPAN * V_ROW; i += V_BLOCK_X * V_BLOCK_Y) {
            const int r = i / V_ROW, e = i % V_ROW;
            const int gx = min(x0 + e / CHANNELS, width - 1);
            const int gy = clamp_index(y0 - RADIUS + r, height);
            col[r][e] = src[pixel_offset(gx, gy, width) + e % CHANNELS];
        }
        __syncthreads();
        if (x < width) {
#pragma unroll
            for (int p = 0; p < V_PIXELS; ++p) {
                const int ly = ty + p * V_BLOCK_Y;
                const int y = y0 + ly;
                if (y >= height) break;
                float acc[CHANNELS];
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) acc[c] = 0.0f;
                for (int t = 0; t < TAPS; ++t) {
                    const float w = s_taps[t];
                    const float* r = &col[ly + t][tx * CHANNELS];
#pragma unroll
                    for (int c = 0; c < CHANNELS; ++c) acc[c] += w * r[c];
                }
                int v[CHANNELS];
#pragma unroll
                for (int c = 0; c < CHANNELS; ++c) {
                    const float f = floorf(acc[c] + 0.5f);
                    v[c] = f <= 0.0f ? 0 : (f >= 255.0f ? 255 : (int)f);
                }
                store_unpremultiplied(dst + pixel_offset(x, y, width), v);
            }
        }
        __syncthreads();
    }
}
