"""QEMU as pure functions and a checked binary: topology -> machine argv (:mod:`.argv`), the boot
part a direct kernel boot adds (:mod:`.bootargs`: kernel, initrd, append, serial console, QMP,
network; the KVM probe's and the benchmark's bare boots), QEMU's option syntax and the options
the harness reserves (:mod:`.options`), the ids it gives QEMU objects (:mod:`.ids`), host and QEMU limits (:mod:`.limits`), and what
the installed QEMU supports (:mod:`.preflight`, with the feature table ``features.yaml``).

Owns: every QEMU command line the harness writes, option syntax and escaping, reserved ids,
device and property names, minimum versions. Must not know: how a VM is launched or supervised
(that is :mod:`harness.vm`, which calls :mod:`.bootargs`), YAML files (it takes a ``Topology``),
the guest's kernel parameters (the caller composes ``append``).
"""
