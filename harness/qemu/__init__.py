"""QEMU as a pure function and a checked binary: topology -> argv (:mod:`.argv`), and what the
installed QEMU supports (:mod:`.preflight`, with the feature table ``features.yaml``).

Owns: option syntax, device and property names, minimum versions. Must not know: how a VM is
launched or supervised (that is :mod:`harness.vm`), YAML files (it takes a ``Topology``).
"""
