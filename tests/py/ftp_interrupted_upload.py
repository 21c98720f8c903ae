"""An FTP client that dies mid-upload (its connections reset) must leave
nothing under the name it was writing, and an existing file keeps its old
content; of two clients' complete uploads of one name, the last one wins.

usage: ftp_interrupted_upload.py FTP_URL LOGIN PASSWORD CONTAINER
"""

import io
import socket
import struct
import sys
import time

from strata_env import ftp_connect


def crash_mid_upload(url, login, password, path, n_sent):
    """A client that dies mid-upload: its data connection and then its
    control connection end with RST, without waiting for any reply."""
    ftp = ftp_connect(url, login, password)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd(f"STOR {path}")
    data.sendall(b"x" * n_sent)
    # SO_LINGER 0: close() sends RST, the way a crashed client or a cut
    # network ends a transfer, instead of a clean end of file.
    for sock in (data, ftp.sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def names(ftp, directory):
    return sorted(name.rsplit("/", 1)[-1] for name in ftp.nlst(directory))


def main():
    url, login, password, container = sys.argv[1:5]
    ftp = ftp_connect(url, login, password)
    ftp.storbinary(f"STOR /{container}/kept.txt", io.BytesIO(b"old content"))

    crash_mid_upload(url, login, password, f"/{container}/new.bin", 2 * 1024 * 1024)
    crash_mid_upload(url, login, password, f"/{container}/kept.txt", 1024 * 1024)

    # A new session sees neither upload. The server notices the resets
    # asynchronously: give it a moment, so that a server that would commit
    # a cut upload has done so before we look (and we look again at the end).
    time.sleep(0.5)
    ftp.quit()
    ftp = ftp_connect(url, login, password)
    listed = names(ftp, f"/{container}")
    assert "new.bin" not in listed, f"a reset upload left new.bin: {listed}"
    kept = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/kept.txt", kept.write)
    assert kept.getvalue() == b"old content", f"kept.txt changed: {kept.getvalue()[:40]!r}"

    # Two clients, one name: both complete, the last one wins whole.
    other = ftp_connect(url, login, password)
    ftp.storbinary(f"STOR /{container}/race.bin", io.BytesIO(b"a" * 300_000))
    other.storbinary(f"STOR /{container}/race.bin", io.BytesIO(b"b" * 200_000))
    raced = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/race.bin", raced.write)
    assert raced.getvalue() == b"b" * 200_000, "the last complete upload must win"
    other.quit()

    assert "new.bin" not in names(ftp, f"/{container}"), "a reset upload appeared late"
    # The server still serves this session.
    ftp.voidcmd("NOOP")
    ftp.quit()
    print("ok")


if __name__ == "__main__":
    main()
