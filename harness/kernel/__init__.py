"""Guest kernels: Debian's packaged kernels (the default, and ``debian:X.Y``; fetched and cached), a user's bzImage or
build tree (:mod:`.debian`, :mod:`.user`; the :class:`~.model.Kernel` they return; :mod:`.config` checks), what a topology needs from a kernel (:mod:`.needs`), and the
config fragments a user merges into their own kernel (``configs/``).

Owns: kernel images, modules trees, ``.config`` checks. Must not know: QEMU, SSH, the guest image.
"""
