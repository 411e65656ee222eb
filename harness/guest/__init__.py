"""Everything about the inside of the guest: the files that run there (``files/``: ``init``, shell
programs and ``lib.sh``, the shell library they source; ``programs/``: C workload sources), the
host<->guest protocol, and, on the host side, pure planners (topology -> what to do in the guest)
and parsers (guest output -> typed results): :mod:`.setup`, :mod:`.expect`, :mod:`.workloads`
(the programs' command lines and typed results), :mod:`.background` (holding a program),
:mod:`.dmesg` (kernel log marks), :mod:`.upload` (copying a file in), :mod:`.cgroup`, :mod:`.services` and :mod:`.node_memory` (what
the contract turns in the guest), :mod:`.state`, :mod:`.cxl` (``vm.cxl``: CXL poison and hot-plug; QEMU
is reached only through the ``qmp`` callable and the plug arguments it is given). The guest's node view is read once, by
:mod:`harness.stats` (``files/snapshot.sh``).

Must not know: how the guest is reached (a VM or any object with ``run``), YAML, QEMU options.
"""
