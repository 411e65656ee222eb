"""Kernel selftests in the guest: the KTAP parser (``ktap``), and running a directory of
KTAP scripts or a built kselftest target in a booted guest over SSH (``run``)."""
