"""imgtool: thumbnails, blurs and placeholders for uploaded images, on the GPU or the CPU."""

__version__ = "0.1.0"
