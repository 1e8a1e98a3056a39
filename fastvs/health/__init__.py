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
"""

from fastvs.health.monitor import Change, HealthMonitor, check_once
from fastvs.health.process import HealthProcess
from fastvs.health.report import format_states
from fastvs.health.state import CheckResult, Edit, HealthState, Transition

__all__ = ["Change", "CheckResult", "Edit", "HealthMonitor", "HealthProcess", "HealthState",
           "Transition", "check_once", "format_states"]
