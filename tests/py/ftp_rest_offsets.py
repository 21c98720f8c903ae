"""A REST offset is for the next transfer only, whatever its outcome: after
a RETR or STOR that failed, the following transfers start at 0 (a kept
offset served later files truncated and spliced uploads onto old heads).

usage: ftp_rest_offsets.py FTP_URL LOGIN PASSWORD CONTAINER
"""

import ftplib
import io

from strata_env import ftp_script_session


def main():
    ftp, container = ftp_script_session()
    ftp.storbinary(f"STOR /{container}/ten.txt", io.BytesIO(b"0123456789"))

    # A resumed download that fails: the offset must not outlive it.
    ftp.sendcmd("REST 5")
    try:
        ftp.retrbinary(f"RETR /{container}/missing.txt", lambda _: None)
        raise AssertionError("RETR of a missing file succeeded")
    except ftplib.error_perm:
        pass
    got = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/ten.txt", got.write)
    assert got.getvalue() == b"0123456789", f"RETR after a failed REST: {got.getvalue()!r}"

    # A resumed upload that fails: the next upload is whole and new.
    ftp.sendcmd("REST 4")
    try:
        ftp.storbinary(f"STOR /{container}/absent.txt", io.BytesIO(b"tail"))
        raise AssertionError("a STOR resumed at 4 on a missing file succeeded")
    except ftplib.error_perm:
        pass
    ftp.storbinary(f"STOR /{container}/fresh.txt", io.BytesIO(b"abc"))
    got = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/fresh.txt", got.write)
    assert got.getvalue() == b"abc", f"STOR after a failed REST: {got.getvalue()!r}"

    # A REST used by a transfer that succeeded is gone too.
    ftp.sendcmd("REST 2")
    got = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/ten.txt", got.write)
    assert got.getvalue() == b"23456789", f"a resumed RETR: {got.getvalue()!r}"
    got = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/ten.txt", got.write)
    assert got.getvalue() == b"0123456789", f"the RETR after it: {got.getvalue()!r}"
    ftp.quit()
    print("ok")


if __name__ == "__main__":
    main()
