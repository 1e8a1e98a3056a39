"""Health checkers with keepalived's semantics, run off the data path.

- :mod:`fastvs.health.state` — the state machine (retries, alpha, inhibit_on_failure,
  quorum/hysteresis, sorry server, misc_dynamic weights) and the IPVS table it implies;
- :mod:`fastvs.health.checks` — TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK attempts;
- :mod:`fastvs.health.monitor` — :class:`HealthMonitor`, the checkers in a thread of
  their own, publishing every change of the table; :func:`check_once` for one round;
- :mod:`fastvs.health.process` — :class:`HealthProcess`, the same from a child process,
  for a process that forwards (a thread would share its GIL);
- :mod:`fastvs.health.report` — :func:`format_states`; ``python -m fastvs.health``.

The configuration comes from :func:`fastvs.control.keepalived.read_keepalived`.

Using it from a forwarder (what ``fastvs forward -r keepalived.conf`` needs)::

    config = read_keepalived_file(path)           # warnings: unsupported checker kinds
    director = Director(config.initial_rules(order), ...)   # the start table
    health = HealthProcess(config, order=order, log=log)    # or HealthMonitor in a
    health.start()                                # process that does not forward
    while running:                                # the batch loop
        ...process a batch...
        change = health.take()                    # never blocks
        if change is not None:
            director.reload(change.rules)         # keeps connections; logs its lines
    health.stop()

On SIGHUP: ``health.reload(read_keepalived_file(path))`` (states are kept, as keepalived
keeps them); the table arrives through ``take()`` as any change — do not reload the
Director from the file, which would put failed servers back. Several worker processes:
one monitor in the parent, each change sent to every worker (``change.rules_text()``,
``ipvsadm -S -n`` lines that ``parse_rules`` reads back, or ``change.edit_lines()``), each
worker applying ``director.reload(rules)`` between batches.
"""

from fastvs.health.monitor import Change, HealthMonitor, check_once
from fastvs.health.process import HealthProcess
from fastvs.health.report import format_states
from fastvs.health.state import CheckResult, Edit, HealthState, Transition

__all__ = ["Change", "CheckResult", "Edit", "HealthMonitor", "HealthProcess", "HealthState",
           "Transition", "check_once", "format_states"]
