"""numa-harness: boot emulated NUMA/CXL topologies in QEMU and test kernels on them."""

__version__ = "0.1.0"
