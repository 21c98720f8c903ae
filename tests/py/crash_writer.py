"""Crash-test load: PUTs obj-00000, obj-00001, … from 8 threads, content
from strata_env.crash_object(n, generation), and prints `ACK n` (flushed)
after each 200. Even n go with the default checksum header, odd n as
aws-chunked with a CRC trailer. The Rust test SIGKILLs the server at some
point; every request from then on fails and the threads stop quietly.

usage: crash_writer.py BUCKET GENERATION [MAX_OBJECTS]
"""

import sys
import threading

from strata_env import client, crash_key, crash_object, force_trailer_checksums

N_THREADS = 8


def main():
    bucket = sys.argv[1]
    generation = int(sys.argv[2])
    max_objects = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000

    plain = client(connect_timeout=2, read_timeout=60)
    chunked = force_trailer_checksums(client(connect_timeout=2, read_timeout=60))
    next_n = iter(range(max_objects))
    next_lock = threading.Lock()
    print_lock = threading.Lock()
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            with next_lock:
                n = next(next_n, None)
            if n is None:
                return
            body = crash_object(n, generation)
            s3 = chunked if n % 2 else plain
            try:
                s3.put_object(Bucket=bucket, Key=crash_key(n), Body=body)
            except Exception as error:  # noqa: BLE001 - expected once the server is killed
                stop.set()
                with print_lock:
                    sys.stderr.write(f"ERR {n}: {type(error).__name__}: {error}\n")
                    sys.stderr.flush()
                return
            with print_lock:
                sys.stdout.write(f"ACK {n}\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
