"""An FTP upload whose data connection is reset mid-transfer must leave
nothing under its name, and an existing file keeps its old content; a second
client's complete upload of the same name wins.

usage: ftp_interrupted_upload.py FTP_URL LOGIN PASSWORD CONTAINER
"""

import ftplib
import io
import socket
import struct
import sys
import urllib.parse


def connect(url, login, password):
    parsed = urllib.parse.urlsplit(url)
    ftp = ftplib.FTP()
    ftp.connect(parsed.hostname, parsed.port, timeout=20)
    ftp.login(login, password)
    return ftp


def reset_mid_upload(ftp, path, n_sent):
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd(f"STOR {path}")
    data.sendall(b"x" * n_sent)
    # SO_LINGER 0: close() sends RST, the way a crashed client or a cut
    # network ends a transfer, instead of a clean end of file.
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    data.close()
    try:
        ftp.voidresp()
    except ftplib.Error as error:
        return str(error)
    return "226"


def names(ftp, directory):
    return sorted(name.rsplit("/", 1)[-1] for name in ftp.nlst(directory))


def main():
    url, login, password, container = sys.argv[1:5]
    ftp = connect(url, login, password)
    ftp.storbinary(f"STOR /{container}/kept.txt", io.BytesIO(b"old content"))

    reply = reset_mid_upload(ftp, f"/{container}/new.bin", 2 * 1024 * 1024)
    print("reset upload of a new name answered:", reply)
    reply = reset_mid_upload(ftp, f"/{container}/kept.txt", 1024 * 1024)
    print("reset upload over an existing name answered:", reply)

    listed = names(ftp, f"/{container}")
    assert "new.bin" not in listed, f"a reset upload left new.bin: {listed}"
    kept = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/kept.txt", kept.write)
    assert kept.getvalue() == b"old content", f"kept.txt changed: {kept.getvalue()[:40]!r}"

    # Two clients, one name: both complete, the last one wins whole.
    other = connect(url, login, password)
    ftp.storbinary(f"STOR /{container}/race.bin", io.BytesIO(b"a" * 300_000))
    other.storbinary(f"STOR /{container}/race.bin", io.BytesIO(b"b" * 200_000))
    raced = io.BytesIO()
    ftp.retrbinary(f"RETR /{container}/race.bin", raced.write)
    assert raced.getvalue() == b"b" * 200_000, "the last complete upload must win"
    other.quit()

    # The server still serves this session.
    ftp.voidcmd("NOOP")
    ftp.quit()
    print("ok")


if __name__ == "__main__":
    main()
