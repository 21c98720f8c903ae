"""An FTP session ends with its user's keys: it works, says `ready`, waits
until GO_FILE exists (the test revokes the user's tokens meanwhile), and
then every command that touches files is refused (550).

usage: ftp_revoked.py FTP_URL LOGIN PASSWORD CONTAINER GO_FILE
"""

import ftplib
import io
import os
import sys
import time

from strata_env import ftp_script_session


def main():
    ftp, container = ftp_script_session()
    go_file = sys.argv[5]
    ftp.mkd(f"/{container}")
    ftp.storbinary(f"STOR /{container}/before.txt", io.BytesIO(b"before"))
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        assert time.monotonic() < deadline, "never told to go on"
        time.sleep(0.05)
    refused = {
        "STOR": lambda: ftp.storbinary(
            f"STOR /{container}/after.txt", io.BytesIO(b"after")
        ),
        "RETR": lambda: ftp.retrbinary(f"RETR /{container}/before.txt", print),
        "DELE": lambda: ftp.delete(f"/{container}/before.txt"),
        "SIZE": lambda: ftp.size(f"/{container}/before.txt"),
        "CWD": lambda: ftp.cwd(f"/{container}"),
    }
    for command, call in refused.items():
        try:
            answer = call()
            raise AssertionError(f"{command} after revocation answered {answer!r}")
        except ftplib.error_perm as error:
            assert str(error).startswith("550"), f"{command}: {error}"
    print("ok", flush=True)


if __name__ == "__main__":
    main()
