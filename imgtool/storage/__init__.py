"""The I/O seam: every read and write of inputs and outputs goes through a store."""
