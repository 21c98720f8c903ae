"""A file never takes a folder's name, nor a folder a file's (a POSIX
server's rename(2) and open(2) refuse both: the client gets 550), and of
two appends to one file at once, the one that ends second is refused (450)
rather than drop the other's bytes.

usage: ftp_clashes.py FTP_URL LOGIN PASSWORD CONTAINER
"""

import ftplib
import io
import sys
import time

from strata_env import ftp_connect, ftp_read, ftp_script_session


def refused(ftp, command, code):
    try:
        answer = ftp.sendcmd(command)
    except ftplib.Error as error:
        assert str(error).startswith(code), f"{command}: {error}"
        return
    raise AssertionError(f"{command} answered {answer!r}")


def store_refused(ftp, path):
    try:
        ftp.storbinary(f"STOR {path}", io.BytesIO(b"hides the folder"))
    except ftplib.error_perm as error:
        assert str(error).startswith("550"), f"STOR {path}: {error}"
        return
    raise AssertionError(f"STOR {path} was accepted")


def main():
    ftp, container = ftp_script_session()
    root = f"/{container}"
    ftp.storbinary(f"STOR {root}/docs/a.txt", io.BytesIO(b"a"))
    ftp.storbinary(f"STOR {root}/file.txt", io.BytesIO(b"file"))

    # A file onto a folder's name: by upload, and by rename.
    store_refused(ftp, f"{root}/docs")
    ftp.sendcmd(f"RNFR {root}/file.txt")
    refused(ftp, f"RNTO {root}/docs", "550")
    # A folder onto a file's name.
    ftp.sendcmd(f"RNFR {root}/docs")
    refused(ftp, f"RNTO {root}/file.txt", "550")
    ftp.cwd(f"{root}/docs")
    assert ftp.nlst() == ["a.txt"], ftp.nlst()
    assert ftp_read(ftp, f"{root}/file.txt") == b"file"

    # Two appends at once: the first holds its data connection open while
    # the second completes.
    url, login, password = sys.argv[1:4]
    other = ftp_connect(url, login, password)
    other.voidcmd("TYPE I")
    first = ftp.transfercmd(f"APPE {root}/file.txt")
    first.sendall(b"+first")
    # Time for the server to begin the first: it has read the version it
    # appends to.
    time.sleep(0.5)
    other.storbinary(f"APPE {root}/file.txt", io.BytesIO(b"+second"))
    first.close()
    try:
        answer = ftp.voidresp()
        raise AssertionError(f"the append that ended second answered {answer!r}")
    except ftplib.error_temp as error:
        assert str(error).startswith("450"), error
    assert ftp_read(ftp, f"{root}/file.txt") == b"file+second"
    other.quit()
    ftp.quit()
    print("ok")


if __name__ == "__main__":
    main()
