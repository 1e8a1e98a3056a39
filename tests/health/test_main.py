"""``python -m fastvs.health FILE``: one round of checks printed, the exit status saying
whether every real server is up (the reference for ``fastvs check``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .servers import Listener


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastvs.health", *args], capture_output=True,
                          text=True, timeout=120)


def test_check_once_prints_states_and_the_table(tmp_path: Path) -> None:
    up, down = Listener(), Listener()
    down.close()
    conf = tmp_path / "keepalived.conf"
    conf.write_text(f"""
virtual_server 10.0.0.1 80 {{
  protocol TCP
  real_server 127.0.0.1 {up.port} {{
    TCP_CHECK {{
      connect_timeout 2
    }}
  }}
  real_server 127.0.0.1 {down.port} {{
    weight 2
    inhibit_on_failure
    TCP_CHECK {{
      connect_timeout 2
    }}
  }}
  real_server 10.1.0.3 80 {{
    SMTP_CHECK {{
    }}
  }}
}}
""")
    out = run(str(conf))
    assert out.returncode == 1, out.stderr
    w = max(len(f"127.0.0.1:{up.port}"), len(f"127.0.0.1:{down.port}"))
    assert out.stdout == (
        "TCP 10.0.0.1:80 (quorum up)\n"
        f"  {f'127.0.0.1:{up.port}':<{w}}  up    weight 1  in table, weight 1\n"
        f"    TCP_CHECK 127.0.0.1:{up.port}: up, connected to 127.0.0.1:{up.port}\n"
        f"  {f'127.0.0.1:{down.port}':<{w}}  down  weight 2  in table, weight 0\n"
        f"    TCP_CHECK 127.0.0.1:{down.port}: down, connect to 127.0.0.1:{down.port} failed: "
        "Connection refused\n"
        f"  {'10.1.0.3:80':<{w}}  up    weight 1  in table, weight 1\n"
        "    SMTP_CHECK: not run by fastvs, held up\n"
        "\n"
        "-A -t 10.0.0.1:80 -s wlc\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 1\n"
        f"-a -t 10.0.0.1:80 -r 127.0.0.1:{min(up.port, down.port)} -m -w "
        f"{1 if up.port < down.port else 0}\n"
        f"-a -t 10.0.0.1:80 -r 127.0.0.1:{max(up.port, down.port)} -m -w "
        f"{0 if up.port < down.port else 1}\n"
    )
    assert out.stderr == (f"fastvs: warning: {conf}:17: the SMTP_CHECK health check is not run "
                          "by fastvs: real servers start as passing them (failing, in alpha "
                          "mode) and stay so\n")
    js = json.loads(run(str(conf), "--json").stdout)
    assert [s["state"] for s in js["servers"]] == ["up", "down", "up"]
    down.open()
    assert run(str(conf)).returncode == 0
    up.close()
    down.close()


def test_a_bad_configuration_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("virtual_server 10.0.0.1 80 {\n")
    out = run(str(conf))
    assert out.returncode == 2
    assert out.stderr == f"fastvs: {conf}:1: block 'virtual_server' is not closed\n"


def test_watch_prints_transitions_until_interrupted(tmp_path: Path) -> None:
    import select
    import signal
    import time

    lis = Listener()
    conf = tmp_path / "keepalived.conf"
    conf.write_text(f"""
virtual_server 10.0.0.1 80 {{
  protocol TCP
  real_server 127.0.0.1 {lis.port} {{
    TCP_CHECK {{
      delay_loop 0.2
      warmup 0
      retry 0
      connect_timeout 2
    }}
  }}
}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "fastvs.health", str(conf), "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # running: nothing to say while the server listens
        lis.close()
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)  # never hang the suite
        assert ready, "no transition printed within 60 s"
        line = proc.stdout.readline()
        assert line.endswith(f"TCP 10.0.0.1:80 127.0.0.1:{lis.port}: up -> down (removed): "
                             f"TCP_CHECK connect to 127.0.0.1:{lis.port} failed: Connection "
                             "refused, 1st failure\n")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
