"""The control plane (the ip_vs_ctl.c and ipvsadm roles): rules, the director object that
configures the engine from them, and the ipvsadm-shaped listings."""
