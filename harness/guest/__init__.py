"""Everything about the inside of the guest: the files that run there (``files/``: ``init`` and
shell programs; ``programs/``: C workload sources), the host<->guest protocol, and, on the host
side, pure planners (topology -> what to do in the guest) and parsers (guest output -> typed
results): :mod:`.nodes`, :mod:`.setup`, :mod:`.expect`, :mod:`.workloads` (the programs'
command lines and typed results).

Must not know: how the guest is reached (a VM or any object with ``run``), YAML, QEMU options.
"""
