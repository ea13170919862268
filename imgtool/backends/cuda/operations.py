"""What the cuda backend runs for each operation: a CudaKernel per operation, registered with the registry.

A CudaKernel's ``prepare`` runs on the caller's thread (argument checks, the
launch's parameters); its ``enqueue`` runs on the dispatcher thread and queues
the operation's kernels on a slot's stream, from the image uploaded once for
every operation of the job.  Adding an operation to the cuda backend is one
more ``ops.implement(CUDA, name, CudaKernel(...))`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ... import ops
from ...ops import Settings
from ...ops.blur import BLUR, blur_radius
from ...ops.low_quality import LOW_QUALITY, half_size
from ...ops.thumbnail import THUMBNAIL
from ..boxblur import uses_boxes
from ..filters import gaussian_weights, lanczos_coefficients, reduce_multiplier, reduced_size
from . import plan
from .dispatcher import Dispatcher, Slot

#: The backend's name, under which its kernels are registered.
CUDA = "cuda"

#: What ``CudaKernel.prepare`` returns when the output is the input itself (no launch).
KEEP_INPUT = object()


@dataclass(frozen=True)
class CudaKernel:
    """What the cuda backend runs for one operation (registered with ``ops.implement("cuda", ...)``).

    ``prepare(settings, w, h)`` runs on the caller's thread, before the job
    reaches the GPU: it checks the arguments and returns the launch's
    parameters (or KEEP_INPUT), or, for an operation with several outputs,
    a dict of them by output key (one launch each).  ``enqueue(dispatcher, slot, src, w, h, c,
    params)`` runs on the dispatcher thread and queues the kernels on the
    slot's stream from the uploaded image ``src``; it returns the device
    buffer of the output and its (width, height).
    """

    prepare: Callable
    enqueue: Callable


# ---- the launches, on the dispatcher thread ---------------------------------


def thumbnail_launch(d: Dispatcher, slot: Slot, src, w: int, h: int, c: int, ow: int, oh: int,
                     tag: str = "thumb"):
    # ``tag`` names this thumbnail's device buffers: each width of a job has its own.
    mod = d.module("resample.cu", c)
    stages = plan.thumbnail_stages(w, h, ow, oh)
    bx, by = plan.RESAMPLE_BLOCK
    cur, cw, ch = src, w, h
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        premul, unpremul = np.int32(c == 4 and i == 0), np.int32(c == 4 and last)
        kind = stage[0]
        if kind == "reduce":
            fx, fy = stage[1], stage[2]
            nw, nh = reduced_size(cw, ch, fx, fy)
        elif kind == "h":
            bounds, coeffs, ksize = lanczos_coefficients(cw, ow, stage[1], stage[2])
            nw, nh = ow, ch
        else:
            bounds, coeffs, ksize = lanczos_coefficients(ch, oh, stage[1], stage[2])
            nw, nh = cw, oh
        dst = slot.device_buffer(tag if last else f"{tag}{i}", nw * nh * c)
        if kind == "reduce":
            rx, ry = cw % fx, ch % fy  # the last column's and row's partial blocks
            mults = [np.uint32(reduce_multiplier(n)) for n in (fx * fy, rx * fy, fx * ry, rx * ry)]
            mod.get_function("reduce_box")(
                cur, dst, np.int32(cw), np.int32(ch), np.int32(fx), np.int32(fy), np.int32(nw), np.int32(nh),
                *mults, premul, unpremul,
                block=(bx, by, 1), grid=plan.grid(nw, bx, nh, by), stream=slot.stream,
            )
        else:  # one Lanczos pass: horizontal to ow columns, or vertical to oh rows
            d_bounds = slot.upload(f"{tag}:bounds{i}", bounds)
            d_coeffs = slot.upload(f"{tag}:coeffs{i}", coeffs)
            out_len, grid = (ow, plan.grid(ow, bx, ch, by)) if kind == "h" else (oh, plan.grid(cw, bx, oh, by))
            mod.get_function(f"resample_{kind}")(
                cur, dst, np.int32(cw), np.int32(ch), np.int32(out_len), d_bounds, d_coeffs,
                np.int32(ksize), premul, unpremul,
                block=(bx, by, 1), grid=grid, stream=slot.stream,
            )
        cur, cw, ch = dst, nw, nh
    return cur


def blur_launch(d: Dispatcher, slot: Slot, src, w: int, h: int, c: int, sigma: float | None):
    dst = slot.device_buffer("blur", w * h * c)
    if uses_boxes(sigma):  # the box cascade, O(1) a pixel whatever the sigma
        from ..cudaboxes import enqueue_boxes

        mod = d.module("boxblur.cu", c)
        return enqueue_boxes(mod.get_function, slot.device_buffer, src, dst, w, h, c, sigma, slot.stream)
    if sigma is None:
        mod = d.module("blur.cu", c, 1)
        bx, by = plan.BOX_BLOCK
        mod.get_function("box121")(
            src, dst, np.int32(w), np.int32(h),
            block=(bx, by, 1), grid=plan.grid(w, bx, h, by * plan.BOX_PIXELS), stream=slot.stream,
        )
        return dst
    radius = blur_radius(sigma)
    geo = plan.gauss_geometry(radius, c)
    mod = d.module("blur.cu", c, radius)
    taps = slot.upload("taps", gaussian_weights(sigma))
    mid = slot.device_buffer("blur_mid", w * h * c * 4)
    hx, hy = geo["H_BLOCK_X"], geo["H_BLOCK_Y"]
    mod.get_function("gauss_h")(
        src, mid, np.int32(w), np.int32(h), taps,
        block=(hx, hy, 1), grid=plan.grid(w, hx * geo["H_PIXELS"], h, hy), stream=slot.stream,
    )
    vx, vy = geo["V_BLOCK_X"], geo["V_BLOCK_Y"]
    mod.get_function("gauss_v")(
        mid, dst, np.int32(w), np.int32(h), taps,
        block=(vx, vy, 1), grid=plan.grid(w, vx, h, vy * geo["V_PIXELS"]), stream=slot.stream,
    )
    return dst


def halfsize_launch(d: Dispatcher, slot: Slot, src, w: int, h: int, c: int):
    ow, oh = half_size(w, h)
    dst = slot.device_buffer("half", ow * oh * c)
    mod = d.module("downscale.cu", c)
    bx, by = plan.HALFSIZE_BLOCK
    mod.get_function("halfsize")(
        src, dst, np.int32(w), np.int32(h), np.int32(ow), np.int32(oh),
        block=(bx, by, 1), grid=plan.grid(ow, bx, oh, by), stream=slot.stream,
    )
    return dst


# ---- the registrations -----------------------------------------------------


def _thumbnail_params(settings: Settings, w: int, h: int) -> dict:
    # One launch per width, each from the uploaded full image; by output key.
    made, _skipped = ops.get(THUMBNAIL).outputs(settings, w, h)
    return {key: KEEP_INPUT if (tw, th) == (w, h) else (tw, th, f"thumb:{key}")
            for key, (tw, th) in made.items()}


ops.implement(CUDA, THUMBNAIL, CudaKernel(
    prepare=_thumbnail_params,
    enqueue=lambda d, slot, src, w, h, c, params: (thumbnail_launch(d, slot, src, w, h, c, *params), params[:2]),
))
ops.implement(CUDA, BLUR, CudaKernel(
    prepare=lambda settings, w, h: (plan.check_sigma(ops.get(BLUR).sigma(settings, w, h)),),
    enqueue=lambda d, slot, src, w, h, c, params: (blur_launch(d, slot, src, w, h, c, params[0]), (w, h)),
))
ops.implement(CUDA, LOW_QUALITY, CudaKernel(
    prepare=lambda settings, w, h: (),
    enqueue=lambda d, slot, src, w, h, c, params: (halfsize_launch(d, slot, src, w, h, c), half_size(w, h)),
))
