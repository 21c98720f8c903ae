"""How long a replicated metadata service stops taking changes when its
leader dies.

    python3 bench/failover_gap.py GATEWAY_URL SECONDS KILL_AT LEADER_PID [--idle]

Through GATEWAY_URL (a gateway that is not a member), PUTs one small object
after another for SECONDS through the Swift API as the root account
(STRATA_ROOT_SECRET_KEY in the environment is its key), and SIGKILLs
LEADER_PID KILL_AT seconds in. With --idle, nothing is sent before the kill
(the group may hibernate meanwhile): the PUTs start with it. Prints one JSON
line: PUTs answered and failed, and the time from the kill to the first PUT
acknowledged after it.
"""

import http.client
import json
import os
import signal
import sys
import time
import urllib.parse


def main():
    url, seconds, kill_at, leader_pid = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    idle = "--idle" in sys.argv[5:]
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", "/auth/v1.0", headers={
        "X-Auth-User": "admin:admin",
        "X-Auth-Key": os.environ["STRATA_ROOT_SECRET_KEY"],
    })
    response = conn.getresponse()
    response.read()
    token = response.getheader("X-Auth-Token")
    storage = urllib.parse.urlsplit(response.getheader("X-Storage-Url")).path
    headers = {"X-Auth-Token": token}
    conn.request("PUT", f"{storage}/failover", headers=headers)
    conn.getresponse().read()

    started = time.monotonic()
    if idle:
        time.sleep(kill_at)
    killed_at = None
    first_ok_after_kill = None
    answered = failed = 0
    n = 0
    while time.monotonic() - started < seconds:
        now = time.monotonic()
        if killed_at is None and now - started >= kill_at:
            os.kill(leader_pid, signal.SIGKILL)
            killed_at = now
        n += 1
        try:
            conn.request("PUT", f"{storage}/failover/key-{n}", body=b"x" * 1024, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = response.status == 201
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
            ok = False
        if ok:
            answered += 1
            if killed_at is not None and first_ok_after_kill is None:
                first_ok_after_kill = time.monotonic()
        else:
            failed += 1
            time.sleep(0.05)
    recovery_ms = None
    if killed_at is not None and first_ok_after_kill is not None:
        recovery_ms = round((first_ok_after_kill - killed_at) * 1000)
    print(json.dumps({"answered": answered, "failed": failed, "recovery_ms": recovery_ms}))


if __name__ == "__main__":
    main()
