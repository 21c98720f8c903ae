"""SIZE answers for files only (RFC 3659 4): a file's byte count, 550 for a
folder or a container, which has no size (213 0 read as an empty file).

usage: ftp_size.py FTP_URL LOGIN PASSWORD CONTAINER
"""

import ftplib
import io

from strata_env import ftp_script_session


def main():
    ftp, container = ftp_script_session()
    ftp.storbinary(f"STOR /{container}/docs/ten.txt", io.BytesIO(b"0123456789"))
    assert ftp.size(f"/{container}/docs/ten.txt") == 10
    for folder in (f"/{container}/docs", f"/{container}"):
        try:
            answer = ftp.sendcmd(f"SIZE {folder}")
            raise AssertionError(f"SIZE {folder} answered {answer!r}")
        except ftplib.error_perm as refused:
            assert str(refused).startswith("550"), f"SIZE {folder}: {refused}"
    ftp.quit()
    print("ok")


if __name__ == "__main__":
    main()
