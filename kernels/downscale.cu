// downscale.cu - the low-quality placeholder: half size, nearest neighbour.
//
// out[y][x] = in[min(2y+1, h-1)][min(2x+1, w-1)], every channel as is (no
// premultiplication: nothing is mixed).  Prelude: CHANNELS, BLOCK_X, BLOCK_Y.
#include "imgtool.cuh"

extern "C" __global__ void __launch_bounds__(BLOCK_X * BLOCK_Y)
halfsize(const u8* __restrict__ src, u8* __restrict__ dst, int width, int height, int out_w, int out_h) {
    const int x = blockIdx.x * BLOCK_X + threadIdx.x;
    if (x >= out_w) return;
    const int sx = min(2 * x + 1, width - 1);
    for (int y = blockIdx.y * BLOCK_Y + threadIdx.y; y < out_h; y += gridDim.y * BLOCK_Y) {
        const int sy = min(2 * y + 1, height - 1);
        const u8* __restrict__ p = src + pixel_offset(sx, sy, width);
        u8* __restrict__ q = dst + pixel_offset(x, y, out_w);
#pragma unroll
        for (int c = 0; c < CHANNELS; ++c) q[c] = p[c];
    }
}
