"""ABOR cancels an upload in flight (RFC 959 4.1.3): nothing of it is
stored, the file it would have replaced keeps its bytes, the aborted STOR
gets 426 and ABOR 226, and the session goes on.

A command sent during a transfer is answered too (it waits for the
transfer, or, sent before the data connection came, goes first), and a
transfer runs in the directory it was sent in, whatever CWD comes before
its data connection.

Two clients' ways of sending ABOR: Python ftplib's `abort()`, the whole
line as urgent data, and BSD ftp's, Telnet IP and Synch (IAC IP IAC DM)
before the line, the last IAC urgent. Each ABOR is sent while the data
connection is still open, so the server cannot take the upload as ended.

usage: ftp_abort.py FTP_URL LOGIN PASSWORD CONTAINER
"""

import ftplib
import io
import socket

from strata_env import ftp_read, ftp_script_session

ORIGINAL = b"the file as it was before the cancelled uploads\n" * 64


def cancelled_upload(ftp, path, send_abor):
    """Starts STOR of `path`, sends part of a body, aborts, and returns the
    two replies the abort got; closes the data connection only after them."""
    data = ftp.transfercmd(f"STOR {path}")
    data.sendall(b"first part of an upload that is cancelled\n" * 2048)
    first = send_abor(ftp)
    second = ftp.getmultiline()
    data.close()
    return first, second


def ftplib_abort(ftp):
    return ftp.abort()


def bsd_ftp_abort(ftp):
    # IAC IP, then IAC as urgent data, then DM and the command.
    ftp.sock.sendall(b"\xff\xf4")
    ftp.sock.sendall(b"\xff", socket.MSG_OOB)
    ftp.sock.sendall(b"\xf2ABOR\r\n")
    return ftp.getmultiline()


def main():
    ftp, container = ftp_script_session()
    path = f"/{container}/kept.txt"
    ftp.storbinary(f"STOR {path}", io.BytesIO(ORIGINAL))

    for send_abor in (ftplib_abort, bsd_ftp_abort):
        first, second = cancelled_upload(ftp, path, send_abor)
        assert first.startswith("426"), f"{send_abor.__name__}: STOR got {first!r}"
        assert second.startswith("226"), f"{send_abor.__name__}: ABOR got {second!r}"
        assert ftp.voidcmd("NOOP").startswith("200")
        got = ftp_read(ftp, path)
        assert got == ORIGINAL, f"{send_abor.__name__}: the file became {got[:60]!r}… ({len(got)} bytes)"

    # A cancelled upload of a new name leaves no file behind.
    first, _ = cancelled_upload(ftp, f"/{container}/never.txt", ftplib_abort)
    assert first.startswith("426"), f"STOR of a new name got {first!r}"
    assert "never.txt" not in ftp.nlst(f"/{container}"), "a cancelled upload left a file"

    # ABOR before the data connection came: the STOR waiting for it is
    # cancelled; after a PASV alone there is nothing to cancel.
    ftp.sendcmd("PASV")
    assert ftp.sendcmd(f"STOR /{container}/unconnected.txt").startswith("150")
    first, second = ftp.abort(), ftp.getmultiline()
    assert (first[:3], second[:3]) == ("426", "226"), f"unconnected STOR: {first!r}, {second!r}"
    ftp.sendcmd("PASV")
    assert ftp.abort().startswith("226")

    # A command sent during an upload is answered as well as the upload.
    data = ftp.transfercmd(f"STOR /{container}/during.txt")
    data.sendall(b"written while CWD waits\n")
    ftp.putcmd(f"CWD /{container}")
    data.close()
    replies = sorted([ftp.getmultiline()[:3], ftp.getmultiline()[:3]])
    assert replies == ["226", "250"], f"STOR and CWD: {replies}"
    assert ftp_read(ftp, f"/{container}/during.txt") == b"written while CWD waits\n"

    # STOR of a relative name, then CWD before the data connection comes:
    # the file goes where the STOR was sent.
    ftp.cwd(f"/{container}")
    ftp.mkd("a")
    ftp.mkd("b")
    ftp.cwd(f"/{container}/a")
    host, port = ftplib.parse227(ftp.sendcmd("PASV"))
    ftp.putcmd("STOR relative.txt")
    assert ftp.getmultiline().startswith("150")
    assert ftp.sendcmd(f"CWD /{container}/b").startswith("250")
    with socket.create_connection((host, port), timeout=20) as data:
        data.sendall(b"sent in a")
    assert ftp.getmultiline().startswith("226")
    assert ftp_read(ftp, f"/{container}/a/relative.txt") == b"sent in a"
    assert "relative.txt" not in ftp.nlst(f"/{container}/b")

    # ABOR with no transfer running is answered 226 and changes nothing.
    assert ftp.sendcmd("ABOR").startswith("226")
    assert "unconnected.txt" not in ftp.nlst(f"/{container}")
    ftp.storbinary(f"STOR {path}", io.BytesIO(b"replaced on purpose"))
    assert ftp_read(ftp, path) == b"replaced on purpose"
    ftp.quit()
    print("ok")


if __name__ == "__main__":
    main()
