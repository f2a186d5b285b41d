#!/usr/bin/env python3
"""SDK conformance test for `bucketfs emulator` (issue 3, point 6).

For each dialect this starts the emulator binary on 127.0.0.1 (port 0, fresh
credentials) and drives it with the vendor's official Python SDK:

* s3  -- boto3 (SigV4, path-style addressing)
* oss -- oss2 with `oss2.Auth` (V1) and `oss2.AuthV4` (V4); oss2 uses path
         style for an IP endpoint
* obs -- esdk-obs-python with signature='obs', signature='v2' and the default
         signature negotiation, each on the IP endpoint (path style, where the
         SDK always signs AWS-V2) and on `localhost:PORT` (virtual-hosted
         `BUCKET.localhost`, where it signs natively and negotiates)
* cos -- cos-python-sdk-v5, always virtual-hosted: via CosConfig(IP=, Port=)
         (Host `BUCKET-APPID.cos.REGION.myqcloud.com`) and via
         CosConfig(Endpoint='cos.REGION.localhost:PORT')

Every client runs the same scenario: put with user metadata, head, ranged
get, append (OSS/OBS/COS) including a wrong position, paginated listing with
and without a delimiter over awkward keys, multipart upload, the SDK's own
transfer helpers (multipart upload_file, parallel ranged download_file), copy
with metadata replacement, delete, batch delete, and a client with a wrong
secret. Per dialect, the emulator's counters must show no request it could
not classify (a 501 NotImplemented).

Traffic goes to 127.0.0.1 only: name resolution is patched so that only
127.0.0.1, `localhost` and `*.localhost` resolve (all to 127.0.0.1).

Standalone: Python 3.11 stdlib plus the four SDKs. Prints one line per check
on stdout (context lines starting with `#` go to stderr) and ends with
`N passed, M failed`; the exit status is non-zero when anything failed.
Environment: BUCKETFS_BIN (default target/debug/bucketfs); CONFORMANCE_TRACE=1
prints a traceback for each failure.

Usage: python tests/sdk/conformance.py [s3|oss|obs|cos ...]
"""

import os
import random
import re
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("BUCKETFS_BIN", "target/debug/bucketfs")
START_DEADLINE = 30.0  # seconds to wait for the emulator's URL line
STOP_DEADLINE = 10.0  # seconds to wait after SIGTERM before SIGKILL
LOCAL = "127.0.0.1"

# --------------------------------------------------------------------------
# Traffic goes to 127.0.0.1 only: no proxies from the environment, `localhost`
# and `*.localhost` (virtual-hosted buckets, RFC 6761) resolve to 127.0.0.1,
# and any other name resolution is refused outright.

for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"
# boto3 must not look for credentials or configuration outside this script.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if host not in (LOCAL, "localhost") and not host.endswith(".localhost"):
        raise OSError(f"conformance: refusing to resolve {host!r}: traffic is for 127.0.0.1 only")
    return _real_getaddrinfo(LOCAL, *args, **kwargs)


socket.getaddrinfo = _loopback_only

# --------------------------------------------------------------------------
# Results


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, label, fn):
        """Runs `fn`; it passes unless it raises. Returns fn's value or None."""
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            detail = f"{type(e).__name__}: {e}".replace("\n", " | ")
            if len(detail) > 600:
                detail = detail[:600] + "..."
            print(f"FAIL {label}: {detail}", flush=True)
            if os.environ.get("CONFORMANCE_TRACE"):
                traceback.print_exc()
            return None
        self.passed += 1
        print(f"PASS {label}", flush=True)
        return value

    def fail(self, label, why):
        self.failed += 1
        print(f"FAIL {label}: {why}", flush=True)


def info(text):
    """Context (emulator URL, operation counts): stderr, so that stdout holds
    only the check lines and the summary."""
    print(f"# {text}", file=sys.stderr, flush=True)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


# --------------------------------------------------------------------------
# The emulator process


class Emulator:
    """`bucketfs emulator` in a child process; use as a context manager."""

    def __init__(self, dialect, buckets):
        self.dialect = dialect
        self.buckets = buckets
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.proc = None
        self.url = None
        self.port = None
        self._stderr = None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _start(self):
        args = [BIN, "emulator", "--dialect", self.dialect]
        for b in self.buckets:
            args += ["--bucket", b]
        args += ["--listen", f"{LOCAL}:0"]
        # Keys go through the environment: `ps` does not show them, and a
        # random secret that starts with '-' is not mistaken for a flag.
        env = dict(os.environ)
        env["BUCKETFS_EMULATOR_ACCESS_KEY"] = self.access_key
        env["BUCKETFS_EMULATOR_SECRET_KEY"] = self.secret_key
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        line = self._read_line(START_DEADLINE)
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"no URL in the emulator's first line {line!r}{self._stderr_tail()}")
        self.url = m.group(0)
        self.port = int(m.group(1))

    def _read_line(self, timeout):
        """The first stdout line, waiting at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"emulator printed no URL within {timeout}s{self._stderr_tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=STOP_DEADLINE)
                raise RuntimeError(
                    f"emulator exited ({self.proc.returncode}) before printing its URL"
                    f"{self._stderr_tail()}"
                )
            buf += chunk
        return buf.split(b"\n", 1)[0].decode("utf-8", "replace")

    def _stderr_tail(self):
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; stderr: {text[-800:]}" if text else ""

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_DEADLINE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_DEADLINE)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# --------------------------------------------------------------------------
# Scenario data

BODY = b"The quick brown fox jumps over the lazy dog. 0123456789"
META = {"color": "blue", "owner": "conformance"}
NEW_META = {"color": "red", "stage": "copied"}
# Listed under LIST_PREFIX; the delimiter listing sees 4 keys and 3 prefixes.
LIST_KEYS = [
    "list/a b.txt",
    "list/c+d.txt",
    "list/plain",
    "list/\u00e9t\u00e9 \u65e5\u672c.txt",
    "list/dir1/x",
    "list/dir1/y z",
    "list/dir2/+plus",
    "list/sp ace dir/q",
]
LIST_PREFIX = "list/"
DELIM_KEYS = ["list/a b.txt", "list/c+d.txt", "list/plain", "list/\u00e9t\u00e9 \u65e5\u672c.txt"]
DELIM_PREFIXES = ["list/dir1/", "list/dir2/", "list/sp ace dir/"]
PART1 = bytes(range(256)) * 1024 * 21  # 5.25 MiB: a real-world minimum part size
PART2 = b"tail of the multipart object"
# For the SDKs' own transfer helpers (multipart upload, parallel ranged download).
BIG = random.Random(6).randbytes(11 * 1024 * 1024 + 12345)


def scenario(results, label, c):
    """Runs every check against adapter `c`."""
    key = "obj/hello world+\u00fc.txt"
    check = lambda name, fn: results.check(f"[{label}] {name}", fn)  # noqa: E731

    check("put object with user metadata", lambda: c.put(key, BODY, META))

    def head():
        size, meta = c.head(key)
        expect_eq(size, len(BODY), "Content-Length")
        for k, v in META.items():
            expect_eq(meta.get(k), v, f"metadata {k}")

    check("head object returns size and metadata", head)
    check(
        "ranged get returns the bytes asked for",
        lambda: expect_eq(c.get(key, (4, 18)), BODY[4:19], "bytes 4-18"),
    )
    check("whole get returns the object", lambda: expect_eq(c.get(key), BODY, "body"))
    check("head of a missing key is 404", lambda: expect_eq(c.exists("obj/missing"), False, "exists"))

    if c.appendable:
        akey = "app/log \u00e4.txt"

        def append_chain():
            n1 = c.append(akey, 0, b"first;")
            expect_eq(n1, 6, "next position after append at 0")
            n2 = c.append(akey, n1, b"second;")
            expect_eq(n2, 13, "next position after append at next position")
            expect_eq(c.get(akey), b"first;second;", "appended object")

        check("append at 0, then at the returned next position", append_chain)

        def appendable_head():
            appendable, next_pos = c.append_info(akey)
            expect_eq(appendable, True, "object reported appendable")
            if next_pos is not None:
                expect_eq(next_pos, 13, "next append position on head")

        check("head of an appended object says appendable", appendable_head)

        def wrong_position():
            code, next_pos = c.append_wrong(akey, 3, b"oops")
            expect_eq(code, "PositionNotEqualToLength", "error code")
            if next_pos is not None:
                expect_eq(next_pos, 13, "next position carried by the error")
            expect_eq(c.get(akey), b"first;second;", "object after the refused append")

        check("append at a wrong position gives the position error", wrong_position)

    def put_list_keys():
        for k in LIST_KEYS:
            c.put(k, k.encode(), {})

    check("put keys with spaces, '+' and UTF-8", put_list_keys)
    for mode in c.list_modes:

        def delimited(mode=mode):
            keys, prefixes, pages = paginate(c, mode, LIST_PREFIX, "/", 2)
            expect_eq(keys, DELIM_KEYS, "keys")
            expect_eq(prefixes, DELIM_PREFIXES, "common prefixes")
            expect(pages >= 4, f"expected 4 pages of 2, got {pages}")

        def flat(mode=mode):
            keys, prefixes, pages = paginate(c, mode, LIST_PREFIX, None, 3)
            expect_eq(keys, sorted(LIST_KEYS, key=lambda k: k.encode()), "keys")
            expect_eq(prefixes, [], "common prefixes")
            expect(pages >= 3, f"expected 3 pages of 3, got {pages}")

        check(f"list {mode} with delimiter '/' over pages of 2", delimited)
        check(f"list {mode} without delimiter over pages of 3", flat)

    mkey = "multi/part object \u00df.bin"

    def multipart():
        c.multipart(mkey, [PART1, PART2], META)
        size, meta = c.head(mkey)
        expect_eq(size, len(PART1) + len(PART2), "size of the completed object")
        got = c.get(mkey)
        expect(got == PART1 + PART2, f"read back {len(got)} bytes that differ from the parts")
        edge = len(PART1)
        expect_eq(c.get(mkey, (edge - 2, edge + 3)), (PART1 + PART2)[edge - 2 : edge + 4], "range across the parts")

    check("multipart: initiate, 2 parts, complete, read back", multipart)

    tkey = "transfer/big file \u00f8.bin"

    def transfer():
        with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
            src = os.path.join(tmp, "upload.bin")
            dst = os.path.join(tmp, "download.bin")
            with open(src, "wb") as f:
                f.write(BIG)
            c.upload_file(tkey, src, tmp)
            size, _ = c.head(tkey)
            expect_eq(size, len(BIG), "size after the SDK's upload")
            c.download_file(tkey, dst, tmp)
            with open(dst, "rb") as f:
                got = f.read()
            expect(got == BIG, f"downloaded {len(got)} bytes that differ from the {len(BIG)} uploaded")

    check("SDK transfer helpers: multipart upload_file, ranged download_file", transfer)

    ckey = "copy/dest +\u00e5.txt"

    def copy():
        c.copy(key, ckey, NEW_META)
        size, meta = c.head(ckey)
        expect_eq(size, len(BODY), "size of the copy")
        for k, v in NEW_META.items():
            expect_eq(meta.get(k), v, f"replaced metadata {k}")
        expect("owner" not in meta, f"metadata not replaced: {meta}")
        expect_eq(c.get(ckey), BODY, "copied body")
        _, src_meta = c.head(key)
        expect_eq(src_meta.get("color"), "blue", "source metadata after the copy")

    check("copy with metadata replacement", copy)

    def delete():
        c.delete(key)
        expect_eq(c.exists(key), False, "exists after delete")

    check("delete object", delete)

    def batch_delete():
        doomed = LIST_KEYS + [ckey, mkey, tkey]
        if c.appendable:
            doomed.append("app/log \u00e4.txt")
        deleted = c.delete_many(doomed)
        if deleted is not None:
            expect_eq(sorted(deleted), sorted(doomed), "keys reported deleted")
        for k in doomed:
            expect_eq(c.exists(k), False, f"exists({k!r}) after batch delete")
        keys, prefixes, _ = paginate(c, c.list_modes[0], "", None, 100)
        expect_eq((keys, prefixes), ([], []), "bucket listing after batch delete")

    check("batch delete", batch_delete)

    def wrong_secret():
        status, code = c.wrong_secret()
        expect_eq((status, code), (403, "SignatureDoesNotMatch"), "status and code")

    check("wrong secret gets 403 SignatureDoesNotMatch", wrong_secret)


def paginate(c, mode, prefix, delimiter, max_keys):
    keys, prefixes, pages, token = [], [], 0, None
    while True:
        pages += 1
        expect(pages <= 50, "listing does not end")
        k, p, truncated, token = c.list_page(mode, prefix, delimiter, max_keys, token)
        expect(len(k) + len(p) <= max_keys, f"page {pages} has more than {max_keys} entries")
        keys += k
        prefixes += [x for x in p if x not in prefixes]
        if not truncated:
            return keys, prefixes, pages
        expect(token, f"truncated page {pages} without a continuation")


# --------------------------------------------------------------------------
# boto3


class Boto3Client:
    appendable = False
    list_modes = ["v2", "v1"]

    def __init__(self, emu, bucket, secret=None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.emu = emu
        self.s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=emu.url,
            region_name="us-east-1",
            aws_access_key_id=emu.access_key,
            aws_secret_access_key=secret or emu.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=10,
                read_timeout=30,
            ),
        )

    def put(self, key, data, meta):
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=meta, ContentType="text/plain")

    def head(self, key):
        r = self.s3.head_object(Bucket=self.bucket, Key=key)
        return r["ContentLength"], r["Metadata"]

    def exists(self, key):
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise

    def get(self, key, rng=None):
        kw = {"Range": f"bytes={rng[0]}-{rng[1]}"} if rng else {}
        r = self.s3.get_object(Bucket=self.bucket, Key=key, **kw)
        return r["Body"].read()

    def list_page(self, mode, prefix, delimiter, max_keys, token):
        kw = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kw["Delimiter"] = delimiter
        if mode == "v2":
            if token:
                kw["ContinuationToken"] = token
            r = self.s3.list_objects_v2(**kw)
            nxt = r.get("NextContinuationToken")
        else:
            if token:
                kw["Marker"] = token
            r = self.s3.list_objects(**kw)
            # S3 sends NextMarker only with a delimiter; like boto3's own
            # paginator, continue after the last key otherwise.
            nxt = r.get("NextMarker") or (r["Contents"][-1]["Key"] if r.get("Contents") else None)
        keys = [o["Key"] for o in r.get("Contents", [])]
        prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        return keys, prefixes, r["IsTruncated"], nxt

    def multipart(self, key, parts, meta):
        up = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=meta)
        uid = up["UploadId"]
        done = []
        for n, data in enumerate(parts, 1):
            r = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=uid, PartNumber=n, Body=data)
            done.append({"PartNumber": n, "ETag": r["ETag"]})
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": done}
        )

    @staticmethod
    def _transfer_config():
        from boto3.s3.transfer import TransferConfig

        mib = 1024 * 1024
        return TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib, max_concurrency=2)

    def upload_file(self, key, path, tmp):
        self.s3.upload_file(path, self.bucket, key, Config=self._transfer_config())

    def download_file(self, key, path, tmp):
        self.s3.download_file(self.bucket, key, path, Config=self._transfer_config())

    def copy(self, src, dst, meta):
        self.s3.copy_object(
            Bucket=self.bucket,
            Key=dst,
            CopySource={"Bucket": self.bucket, "Key": src},
            MetadataDirective="REPLACE",
            Metadata=meta,
        )

    def delete(self, key):
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def delete_many(self, keys):
        r = self.s3.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False}
        )
        expect(not r.get("Errors"), f"errors: {r.get('Errors')}")
        return [d["Key"] for d in r.get("Deleted", [])]

    def wrong_secret(self):
        from botocore.exceptions import ClientError

        bad = Boto3Client(self.emu, self.bucket, secret="wrong-" + self.emu.secret_key)
        try:
            bad.s3.list_objects_v2(Bucket=self.bucket)
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
        raise AssertionError("a wrong secret was accepted")


def run_s3(results):
    bucket = "conformance-s3"
    with Emulator("s3", [bucket]) as emu:
        info(f"s3: emulator at {emu.url}")
        c = results.check("[s3/boto3] client", lambda: Boto3Client(emu, bucket))
        if c:
            scenario(results, "s3/boto3", c)
        check_operations(results, "s3", emu)


# --------------------------------------------------------------------------
# oss2


class OssClient:
    appendable = True
    list_modes = ["v2", "v1"]

    def __init__(self, emu, bucket, v4, secret=None):
        import oss2

        self.oss2 = oss2
        self.emu, self.bucket_name, self.v4 = emu, bucket, v4
        sk = secret or emu.secret_key
        if v4:
            auth = oss2.AuthV4(emu.access_key, sk)
            self.b = oss2.Bucket(auth, emu.url, bucket, region="cn-hangzhou", connect_timeout=30)
        else:
            auth = oss2.Auth(emu.access_key, sk)
            self.b = oss2.Bucket(auth, emu.url, bucket, connect_timeout=30)

    def put(self, key, data, meta):
        headers = {f"x-oss-meta-{k}": v for k, v in meta.items()}
        headers["Content-Type"] = "text/plain"
        self.b.put_object(key, data, headers=headers)

    @staticmethod
    def _meta(headers):
        return {k.lower()[len("x-oss-meta-"):]: v for k, v in headers.items() if k.lower().startswith("x-oss-meta-")}

    def head(self, key):
        r = self.b.head_object(key)
        return r.content_length, self._meta(r.headers)

    def exists(self, key):
        return self.b.object_exists(key)

    def get(self, key, rng=None):
        return self.b.get_object(key, byte_range=rng).read()

    def append(self, key, pos, data):
        return self.b.append_object(key, pos, data).next_position

    def append_info(self, key):
        r = self.b.head_object(key)
        nxt = r.headers.get("x-oss-next-append-position")
        return r.object_type == "Appendable", None if nxt is None else int(nxt)

    def append_wrong(self, key, pos, data):
        try:
            self.b.append_object(key, pos, data)
        except self.oss2.exceptions.PositionNotEqualToLength as e:
            return e.code, e.next_position
        raise AssertionError("append at a wrong position succeeded")

    def list_page(self, mode, prefix, delimiter, max_keys, token):
        if mode == "v2":
            r = self.b.list_objects_v2(
                prefix=prefix, delimiter=delimiter or "", continuation_token=token or "", max_keys=max_keys
            )
            nxt = r.next_continuation_token
        else:
            r = self.b.list_objects(prefix=prefix, delimiter=delimiter or "", marker=token or "", max_keys=max_keys)
            nxt = r.next_marker
        return [o.key for o in r.object_list], list(r.prefix_list), r.is_truncated, nxt

    def multipart(self, key, parts, meta):
        headers = {f"x-oss-meta-{k}": v for k, v in meta.items()}
        uid = self.b.init_multipart_upload(key, headers=headers).upload_id
        done = []
        for n, data in enumerate(parts, 1):
            r = self.b.upload_part(key, uid, n, data)
            done.append(self.oss2.models.PartInfo(n, r.etag))
        self.b.complete_multipart_upload(key, uid, done)

    def upload_file(self, key, path, tmp):
        store = self.oss2.ResumableStore(root=tmp)
        self.oss2.resumable_upload(
            self.b, key, path, store=store, multipart_threshold=1024 * 1024, part_size=4 * 1024 * 1024, num_threads=2
        )

    def download_file(self, key, path, tmp):
        store = self.oss2.ResumableDownloadStore(root=tmp)
        self.oss2.resumable_download(
            self.b, key, path, store=store, multiget_threshold=1024 * 1024, part_size=4 * 1024 * 1024, num_threads=2
        )

    def copy(self, src, dst, meta):
        headers = {f"x-oss-meta-{k}": v for k, v in meta.items()}
        headers["x-oss-metadata-directive"] = "REPLACE"
        self.b.copy_object(self.bucket_name, src, dst, headers=headers)

    def delete(self, key):
        self.b.delete_object(key)

    def delete_many(self, keys):
        return self.b.batch_delete_objects(keys).deleted_keys

    def wrong_secret(self):
        bad = OssClient(self.emu, self.bucket_name, self.v4, secret="wrong-" + self.emu.secret_key)
        try:  # a GET: a HEAD error has no body to carry the code
            bad.b.list_objects_v2(max_keys=1)
        except self.oss2.exceptions.ServerError as e:
            return e.status, e.code
        raise AssertionError("a wrong secret was accepted")


def run_oss(results):
    # One bucket per client, so each scenario starts from an empty bucket.
    buckets = {False: "conformance-oss-v1", True: "conformance-oss-v4"}
    with Emulator("oss", list(buckets.values())) as emu:
        info(f"oss: emulator at {emu.url}")
        for v4, bucket in buckets.items():
            label = "oss/oss2-" + ("v4" if v4 else "v1")
            c = results.check(f"[{label}] client", lambda: OssClient(emu, bucket, v4))
            if c:
                scenario(results, label, c)
        check_operations(results, "oss", emu)


# --------------------------------------------------------------------------
# esdk-obs-python


class ObsError(Exception):
    def __init__(self, what, resp):
        self.status = resp.status
        self.code = resp.errorCode
        super().__init__(f"{what}: HTTP {resp.status} {resp.errorCode} {resp.errorMessage} (reason {resp.reason})")


class ObsSdkClient:
    appendable = True
    list_modes = ["v1"]

    def __init__(self, emu, bucket, signature, virtual=False, secret=None):
        from obs import ObsClient

        self.emu, self.bucket, self.signature, self.virtual = emu, bucket, signature, virtual
        kw = {}
        if signature != "negotiate":
            kw["signature"] = signature
            kw["is_signature_negotiation"] = False
        # An IP endpoint makes the SDK use path style, where it always signs
        # AWS-V2 and never negotiates; `localhost` gives virtual-hosted
        # `BUCKET.localhost:PORT`, where OBS signing and negotiation happen.
        server = f"http://localhost:{emu.port}" if virtual else emu.url
        self.c = ObsClient(
            access_key_id=emu.access_key,
            secret_access_key=secret or emu.secret_key,
            server=server,
            max_retry_count=0,
            timeout=30,
            **kw,
        )

    @staticmethod
    def ok(what, resp):
        if resp.status >= 300:
            raise ObsError(what, resp)
        return resp

    def put(self, key, data, meta):
        from obs import PutObjectHeader

        headers = PutObjectHeader(contentType="text/plain")
        self.ok("putContent", self.c.putContent(self.bucket, key, content=data, metadata=meta, headers=headers))

    def head(self, key):
        r = self.ok("getObjectMetadata", self.c.getObjectMetadata(self.bucket, key))
        return r.body.contentLength, {k: v for k, v in r.header}

    def exists(self, key):
        r = self.c.getObjectMetadata(self.bucket, key)
        if r.status == 404:
            return False
        self.ok("getObjectMetadata", r)
        return True

    def get(self, key, rng=None):
        from obs import GetObjectHeader

        headers = GetObjectHeader(range=f"{rng[0]}-{rng[1]}") if rng else None
        r = self.ok("getObject", self.c.getObject(self.bucket, key, headers=headers, loadStreamInMemory=True))
        return r.body.buffer

    def append(self, key, pos, data):
        from obs import AppendObjectContent

        content = AppendObjectContent(content=data, position=pos)
        r = self.ok("appendObject", self.c.appendObject(self.bucket, key, content=content))
        return r.body.nextPosition

    def append_info(self, key):
        r = self.ok("getObjectMetadata", self.c.getObjectMetadata(self.bucket, key))
        return r.body.isAppendable, r.body.nextPosition

    def append_wrong(self, key, pos, data):
        from obs import AppendObjectContent

        r = self.c.appendObject(self.bucket, key, content=AppendObjectContent(content=data, position=pos))
        expect(r.status >= 300, "append at a wrong position succeeded")
        expect_eq(r.status, 409, "status")
        nxt = dict(r.header or []).get("next-append-position")
        return r.errorCode, None if nxt is None else int(nxt)

    def list_page(self, mode, prefix, delimiter, max_keys, token):
        r = self.ok(
            "listObjects",
            self.c.listObjects(self.bucket, prefix=prefix, marker=token, max_keys=max_keys, delimiter=delimiter),
        )
        b = r.body
        expect(b is not None, "the SDK could not parse the listing")
        keys = [o.key for o in b.contents or []]
        prefixes = [p.prefix for p in b.commonPrefixs or []]
        return keys, prefixes, bool(b.is_truncated), b.next_marker

    def multipart(self, key, parts, meta):
        from obs import CompleteMultipartUploadRequest, CompletePart

        r = self.ok("initiateMultipartUpload", self.c.initiateMultipartUpload(self.bucket, key, metadata=meta))
        uid = r.body.uploadId
        done = []
        for n, data in enumerate(parts, 1):
            r = self.ok("uploadPart", self.c.uploadPart(self.bucket, key, n, uid, object=data))
            done.append(CompletePart(partNum=n, etag=r.body.etag))
        self.ok(
            "completeMultipartUpload",
            self.c.completeMultipartUpload(self.bucket, key, uid, CompleteMultipartUploadRequest(parts=done)),
        )

    def upload_file(self, key, path, tmp):
        r = self.c.uploadFile(self.bucket, key, path, partSize=4 * 1024 * 1024, taskNum=2)
        self.ok("uploadFile", r)

    def download_file(self, key, path, tmp):
        r = self.c.downloadFile(self.bucket, key, downloadFile=path, partSize=4 * 1024 * 1024, taskNum=2)
        self.ok("downloadFile", r)

    def copy(self, src, dst, meta):
        from obs import CopyObjectHeader

        self.ok(
            "copyObject",
            self.c.copyObject(self.bucket, src, self.bucket, dst, metadata=meta, headers=CopyObjectHeader(directive="REPLACE")),
        )

    def delete(self, key):
        self.ok("deleteObject", self.c.deleteObject(self.bucket, key))

    def delete_many(self, keys):
        from obs import DeleteObjectsRequest, Object

        r = self.ok(
            "deleteObjects",
            self.c.deleteObjects(self.bucket, DeleteObjectsRequest(quiet=False, objects=[Object(key=k) for k in keys])),
        )
        expect(r.body is not None, "the SDK could not parse the DeleteResult")
        expect(not r.body.error, f"errors: {r.body.error}")
        return [d.key for d in r.body.deleted or []]

    def wrong_secret(self):
        bad = ObsSdkClient(
            self.emu, self.bucket, self.signature, self.virtual, secret="wrong-" + self.emu.secret_key
        )
        r = bad.c.listObjects(self.bucket, max_keys=1)
        expect(r.status >= 300, "a wrong secret was accepted")
        return r.status, r.errorCode

    def close(self):
        self.c.close()


def run_obs(results):
    # One bucket per client, so each scenario starts from an empty bucket.
    clients = [
        (sig, virtual, f"conformance-obs-{sig}-{'virtual' if virtual else 'path'}")
        for virtual in (False, True)
        for sig in ("obs", "v2", "negotiate")
    ]
    with Emulator("obs", [bucket for _, _, bucket in clients]) as emu:
        info(f"obs: emulator at {emu.url}")
        for sig, virtual, bucket in clients:
            label = f"obs/esdk-{sig}-{'virtual' if virtual else 'path'}"
            c = results.check(f"[{label}] client", lambda: ObsSdkClient(emu, bucket, sig, virtual))
            if c:
                try:
                    scenario(results, label, c)
                finally:
                    c.close()
        check_operations(results, "obs", emu)


# --------------------------------------------------------------------------
# cos-python-sdk-v5


class CosClient:
    appendable = True
    list_modes = ["v1"]
    REGION = "ap-guangzhou"

    def __init__(self, emu, bucket, how, secret=None):
        from qcloud_cos import CosConfig, CosS3Client

        self.emu, self.bucket, self.how = emu, bucket, how
        # COS is always virtual-hosted (Host: BUCKET-APPID.cos.REGION...).
        # "ip": IP/Port make the SDK connect to the emulator while sending
        # Host: BUCKET-APPID.cos.REGION.myqcloud.com (the port-less host is
        # signed). "endpoint": Endpoint=cos.REGION.localhost:PORT gives
        # Host: BUCKET-APPID.cos.REGION.localhost:PORT, signed without the port.
        if how == "ip":
            where = {"IP": LOCAL, "Port": emu.port}
        else:
            where = {"Endpoint": f"cos.{self.REGION}.localhost:{emu.port}"}
        config = CosConfig(
            Region=self.REGION,
            SecretId=emu.access_key,
            SecretKey=secret or emu.secret_key,
            Scheme="http",
            Timeout=30,
            **where,
        )
        self.c = CosS3Client(config, retry=0)

    def put(self, key, data, meta):
        self.c.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="text/plain",
            Metadata={f"x-cos-meta-{k}": v for k, v in meta.items()},
        )

    @staticmethod
    def _meta(headers):
        return {k.lower()[len("x-cos-meta-"):]: v for k, v in headers.items() if k.lower().startswith("x-cos-meta-")}

    def head(self, key):
        r = self.c.head_object(Bucket=self.bucket, Key=key)
        return int(r["Content-Length"]), self._meta(r)

    def exists(self, key):
        return self.c.object_exists(Bucket=self.bucket, Key=key)

    def get(self, key, rng=None):
        kw = {"Range": f"bytes={rng[0]}-{rng[1]}"} if rng else {}
        r = self.c.get_object(Bucket=self.bucket, Key=key, **kw)
        return r["Body"].get_raw_stream().read()

    def append(self, key, pos, data):
        r = self.c.append_object(Bucket=self.bucket, Key=key, Position=pos, Data=data)
        return int(r["x-cos-next-append-position"])

    def append_info(self, key):
        r = self.c.head_object(Bucket=self.bucket, Key=key)
        nxt = r.get("x-cos-next-append-position")
        return r.get("x-cos-object-type") == "appendable", None if nxt is None else int(nxt)

    def append_wrong(self, key, pos, data):
        from qcloud_cos import CosServiceError

        try:
            self.c.append_object(Bucket=self.bucket, Key=key, Position=pos, Data=data)
        except CosServiceError as e:
            expect_eq(e.get_status_code(), 409, "status")
            return e.get_error_code(), None
        raise AssertionError("append at a wrong position succeeded")

    def list_page(self, mode, prefix, delimiter, max_keys, token):
        kw = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kw["Delimiter"] = delimiter
        if token:
            kw["Marker"] = token
        r = self.c.list_objects(**kw)
        keys = [o["Key"] for o in r.get("Contents", [])]
        prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        return keys, prefixes, r.get("IsTruncated") == "true", r.get("NextMarker")

    def multipart(self, key, parts, meta):
        r = self.c.create_multipart_upload(
            Bucket=self.bucket, Key=key, Metadata={f"x-cos-meta-{k}": v for k, v in meta.items()}
        )
        uid = r["UploadId"]
        done = []
        for n, data in enumerate(parts, 1):
            r = self.c.upload_part(Bucket=self.bucket, Key=key, Body=data, PartNumber=n, UploadId=uid)
            done.append({"PartNumber": n, "ETag": r["ETag"]})
        self.c.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uid, MultipartUpload={"Part": done})

    def upload_file(self, key, path, tmp):
        self.c.upload_file(Bucket=self.bucket, Key=key, LocalFilePath=path, PartSize=4, MAXThread=2)

    def download_file(self, key, path, tmp):
        self.c.download_file(
            Bucket=self.bucket, Key=key, DestFilePath=path, PartSize=4, MAXThread=2, DumpRecordDir=tmp
        )

    def copy(self, src, dst, meta):
        self.c.copy_object(
            Bucket=self.bucket,
            Key=dst,
            CopySource={"Bucket": self.bucket, "Key": src, "Region": self.REGION},
            CopyStatus="Replaced",
            Metadata={f"x-cos-meta-{k}": v for k, v in meta.items()},
        )

    def delete(self, key):
        self.c.delete_object(Bucket=self.bucket, Key=key)

    def delete_many(self, keys):
        r = self.c.delete_objects(
            Bucket=self.bucket, Delete={"Object": [{"Key": k} for k in keys], "Quiet": "false"}
        )
        expect(not r.get("Error"), f"errors: {r.get('Error')}")
        return [d["Key"] for d in r.get("Deleted", [])]

    def wrong_secret(self):
        from qcloud_cos import CosServiceError

        bad = CosClient(self.emu, self.bucket, self.how, secret="wrong-" + self.emu.secret_key)
        try:
            bad.c.list_objects(Bucket=self.bucket, MaxKeys=1)
        except CosServiceError as e:
            return e.get_status_code(), e.get_error_code()
        raise AssertionError("a wrong secret was accepted")


def run_cos(results):
    # One bucket per client, so each scenario starts from an empty bucket.
    clients = {"ip": "demo-1250000000", "endpoint": "demo2-1250000000"}
    with Emulator("cos", list(clients.values())) as emu:
        info(f"cos: emulator at {emu.url}")
        for how, bucket in clients.items():
            label = f"cos/cos-python-sdk-v5-{how}"
            c = results.check(f"[{label}] client", lambda: CosClient(emu, bucket, how))
            if c:
                scenario(results, label, c)
        check_operations(results, "cos", emu)


# --------------------------------------------------------------------------

def operation_counts(emu):
    """The emulator's per-operation request counters (`GET /-/stats`)."""
    import json
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{emu.url}/-/stats", timeout=10) as r:
        return {op: c["requests"] for op, c in json.load(r).items()}


def check_operations(results, label, emu):
    """Every SDK request was one the emulator knows (none fell to 501)."""

    def known():
        counts = operation_counts(emu)
        info(f"{label} operations: " + ", ".join(f"{op}={n}" for op, n in sorted(counts.items())))
        expect_eq(counts.get("Unknown", 0), 0, "requests the emulator answered 501 NotImplemented")

    results.check(f"[{label}] every SDK request was a known operation", known)


RUNNERS = {"s3": run_s3, "oss": run_oss, "obs": run_obs, "cos": run_cos}


def main(argv):
    wanted = argv[1:] or list(RUNNERS)
    unknown = [w for w in wanted if w not in RUNNERS]
    if unknown:
        print(f"unknown dialect(s) {unknown}; choose from {list(RUNNERS)}", file=sys.stderr)
        return 2
    # SDK loggers stay quiet unless asked for.
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    results = Results()
    for name in wanted:
        try:
            RUNNERS[name](results)
        except Exception as e:  # noqa: BLE001 - the emulator did not start, or a harness bug
            results.fail(f"[{name}] emulator run", f"{type(e).__name__}: {e}")
    print(f"{results.passed} passed, {results.failed} failed", flush=True)
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
