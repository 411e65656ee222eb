"""The guest image: a busybox initramfs written as a cpio archive by an ordinary user, holding
dropbear, the NUMA and CXL tools, the kernel's modules, the guest files (:mod:`harness.guest`)
and the built guest programs; cached by a hash of its inputs.

:mod:`.cpio` (archive writer and image tree, pure), :mod:`.modules` (which kernel modules,
pure), :mod:`.host` (what is taken from the host), :mod:`.build` (inputs, layout, building),
:mod:`.cache` (cached images, their manifests, the check before use).

Owns: what goes into the image and the cache of built images. Must not know: topologies, QEMU,
how the image is booted.
"""
