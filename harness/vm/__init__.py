"""One VM's life on the host: launch and supervise QEMU (:mod:`.machine`), attach to a background
VM by its state directory (:mod:`.attached`), both over one guest link (:mod:`.link`), follow its serial
console (:mod:`.console`), talk QMP (:mod:`.qmp`) and SSH (:mod:`.ssh`, logging in with the
VM's own key pair from :mod:`.keys`; commands over one long-lived channel, :mod:`.channel`),
save and restore snapshots (:mod:`.snapshot`), pick the accelerator
(:mod:`.accel`) and a loopback port (:mod:`.ports`).

Owns: processes, sockets, timeouts, the guarantee that no QEMU outlives its owner. Must not know:
topologies or YAML (it boots a ready argv), what the guest is asked to do.
"""
