"""Corpus listing: a local folder or `s3://bucket/prefix` into `manifest.parquet`.

Listing streams: S3 keys come page by page from the ListObjectsV2 paginator and local
files from a sorted directory walk; rows go to Parquet in row groups, so a 1,000,000-key
prefix never sits in the driver's memory. Labels (DFDC `metadata.json` files anywhere
under the root, or one `labels.csv` of `filename,label`) are found during the same walk
and joined in a second streaming pass over the rows; only the label map is held.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from dfray import storage
from dfray.config import StorageConfig
from dfray.listing_report import ListingReport
from dfray.redact import RedactedMessage

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
LABEL_FILES = ("metadata.json", "labels.csv")
ROW_GROUP = 50_000


class CorpusError(RedactedMessage, ValueError):
    """The corpus root or its labels cannot be used; the message says why."""


@dataclass(frozen=True)
class Entry:
    key: str  # path relative to the corpus root, '/'-separated
    uri: str
    size: int
    etag: str


def manifest_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("video_id", pa.string()),
            ("uri", pa.string()),
            ("label", pa.int8()),
            ("size_bytes", pa.int64()),
            ("etag", pa.string()),
        ]
    )


def iter_entries(
    root: str, cfg: StorageConfig, page_size: int = 1000, client=None,
    report: ListingReport | None = None,
) -> Iterator[Entry]:
    """Every object under root, in key order, one page at a time. Local entries that cannot
    be read never stop the listing: a video one is still yielded (size 0, etag
    `unreadable`), so extraction records it as a `read_error` row with the OS's message;
    anything else skipped is counted in `report`."""
    if storage.is_s3(root):
        yield from _iter_s3(root, cfg, page_size, client)
    else:
        yield from _iter_local(root, report if report is not None else ListingReport())


def _iter_s3(root: str, cfg: StorageConfig, page_size: int, client=None) -> Iterator[Entry]:
    bucket, prefix = storage.split_s3(root)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    client = client or storage.s3_client(cfg)
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        for obj in page.get("Contents", ()):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            yield Entry(
                key=key[len(prefix) :],
                uri=f"s3://{bucket}/{key}",
                size=int(obj["Size"]),
                etag=str(obj.get("ETag", "")).strip('"'),
            )


def _iter_local(root: str, report: ListingReport) -> Iterator[Entry]:
    """Files under root in the order S3 lists keys: lexicographic by relative path."""
    base = os.path.abspath(root)
    if not os.path.isdir(base):
        raise CorpusError(f"corpus folder not found: {root}")
    yield from _walk_sorted(base, base, report)


# File names that are not valid UTF-8 (Python holds them as surrogate escapes, which
# Parquet cannot store) get a percent-encoded video_id and a `file://` URI: RFC 3986
# percent-encoding of the raw path bytes, `/` kept (urllib.parse.quote(bytes, safe="/")).
# It is stable and reversible: `local_path(uri)` gives back the exact bytes path.
LOCAL_URI_SCHEME = "file://"


def _encode_name(path: str) -> str:
    from urllib.parse import quote

    return quote(os.fsencode(path), safe="/")


def local_path(uri: str) -> str | bytes:
    """The path to open for a local manifest URI (bytes for a percent-encoded `file://` one)."""
    if uri.startswith(LOCAL_URI_SCHEME):
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(uri[len(LOCAL_URI_SCHEME):])
    return uri


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_dir(e: os.DirEntry, follow: bool) -> bool:
    try:
        return e.is_dir(follow_symlinks=follow)
    except OSError:  # a symlink loop, no permission: not a folder we can walk
        return False


def _walk_sorted(base: str, folder: str, report: ListingReport) -> Iterator[Entry]:
    def shown(path: str) -> str:
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        return rel if _is_utf8(rel) else _encode_name(rel)

    try:
        with os.scandir(folder) as it:
            found = list(it)
    except OSError as e:
        if folder == base:
            raise CorpusError(f"cannot list corpus folder {base}: {e.strerror}") from e
        report.add("unreadable_folder", f"{shown(folder)}/ ({e.strerror})")
        return
    for e in found:
        if e.name.startswith("."):
            report.add("dot_file", shown(e.path))
    # a folder sorts as "name/", as its keys would on S3
    entries = sorted(
        (e for e in found if not e.name.startswith(".")),
        key=lambda e: e.name + "/" if _is_dir(e, False) else e.name,
    )
    for e in entries:
        if _is_dir(e, False):
            yield from _walk_sorted(base, e.path, report)
            continue
        if _is_dir(e, True):  # a symlink to a folder: not followed (as os.walk does not)
            report.add("symlinked_folder", shown(e.path))
            continue
        rel = os.path.relpath(e.path, base).replace(os.sep, "/")
        uri = e.path
        if not _is_utf8(rel):
            if is_video(rel):
                report.add("non_utf8_name", _encode_name(rel))
            rel, uri = _encode_name(rel), LOCAL_URI_SCHEME + _encode_name(e.path)
        try:
            st = e.stat()
        except OSError as err:
            if is_video(rel):
                report.add("unreadable_video", f"{rel} ({err.strerror})")
                yield Entry(rel, uri, 0, "unreadable")
            else:
                report.add("unreadable_entry", f"{rel} ({err.strerror})")
            continue
        yield Entry(rel, uri, int(st.st_size), f"{st.st_size:x}-{st.st_mtime_ns:x}")


def is_video(key: str) -> bool:
    return key.lower().endswith(VIDEO_EXTS)


def parse_label(value, where: str) -> int | None:
    """REAL/FAKE, real/fake, 0/1 -> 0/1; empty -> None."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if text in ("", "NONE", "NULL", "NAN"):
        return None
    if text in ("FAKE", "1", "1.0", "TRUE"):
        return 1
    if text in ("REAL", "0", "0.0", "FALSE"):
        return 0
    raise CorpusError(f"{where}: label must be REAL/FAKE or 0/1, got {value!r}")


def load_labels(
    label_uris: list[str], root: str, cfg: StorageConfig, report: ListingReport | None = None
) -> dict[str, int]:
    """video_id -> 0/1 from DFDC metadata.json files and labels.csv files.

    A label file under the root labels paths relative to its own folder (DFDC keeps one
    metadata.json per part folder); one outside the root labels paths relative to the
    root. Conflicting labels for one video are an error.
    """
    labels: dict[str, int] = {}
    prefix = root.rstrip("/") + "/"
    for uri in label_uris:
        rel_dir = posixpath.dirname(uri[len(prefix) :]) if uri.startswith(prefix) else ""
        data = storage.read_bytes(uri, cfg)
        if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM (Excel's CSV export): accepted
            data = data[3:]
            if report is not None:
                report.add("labels_bom", uri)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{uri} is not UTF-8 text: {e}") from e
        for name, label in _label_rows(uri, text):
            vid = posixpath.join(rel_dir, name) if rel_dir else name
            if label is None:
                continue
            if labels.get(vid, label) != label:
                raise CorpusError(f"{uri}: conflicting labels for {vid}")
            labels[vid] = label
    return labels


def _label_rows(uri: str, text: str) -> Iterator[tuple[str, int | None]]:
    if uri.endswith(".json"):
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{uri} is not valid JSON: {e}") from e
        if not isinstance(meta, dict):
            raise CorpusError(f"{uri}: expected a mapping of filename -> {{label: …}}")
        for name, info in meta.items():
            raw = info.get("label") if isinstance(info, dict) else info
            yield name, parse_label(raw, f"{uri}[{name}]")
        return
    reader = csv.reader(io.StringIO(text))
    for i, row in enumerate(reader):
        if not row or (i == 0 and row[0].strip().lower() in ("filename", "video_id", "file")):
            continue
        if len(row) < 2:
            raise CorpusError(f"{uri} line {i + 1}: expected filename,label")
        yield row[0].strip(), parse_label(row[1], f"{uri} line {i + 1}")


@dataclass(frozen=True)
class ManifestSummary:
    n_videos: int
    n_labelled: int
    n_skipped: int  # non-video objects
    label_files: tuple[str, ...]
    listing: ListingReport = dataclasses.field(default_factory=ListingReport)  # run.json "listing"


def build_manifest(
    root: str, out_uri: str, cfg: StorageConfig, labels_uri: str | None = None, client=None
) -> ManifestSummary:
    """List root and write manifest.parquet (video_id, uri, label, size_bytes, etag)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = manifest_schema()
    label_uris: list[str] = [labels_uri] if labels_uri else []
    n = skipped = 0
    report = ListingReport()
    with tempfile.TemporaryDirectory(prefix="dfray-manifest-") as tmp:
        raw_path = os.path.join(tmp, "unlabelled.parquet")
        with pq.ParquetWriter(raw_path, schema) as writer:
            batch: list[Entry] = []
            for e in iter_entries(root, cfg, client=client, report=report):
                if is_video(e.key):
                    batch.append(e)
                    if len(batch) >= ROW_GROUP:
                        writer.write_table(_entries_table(batch, schema))
                        n += len(batch)
                        batch = []
                else:
                    skipped += 1
                    if not labels_uri and posixpath.basename(e.key) in LABEL_FILES:
                        label_uris.append(e.uri)
                    else:
                        report.add("other_extension", e.key)
            if batch:
                writer.write_table(_entries_table(batch, schema))
                n += len(batch)
        if n == 0:
            raise CorpusError(f"no videos ({', '.join(VIDEO_EXTS)}) found under {root}")
        root_uri = root if storage.is_s3(root) else os.path.abspath(root)
        labels = load_labels(label_uris, root_uri, cfg, report)
        matched: set[str] = set()
        fs, path = storage.filesystem(out_uri, cfg)
        if not storage.is_s3(out_uri):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        n_labelled = 0
        src = pq.ParquetFile(raw_path)
        with fs.open_output_stream(path) as sink, pq.ParquetWriter(sink, schema) as writer:
            for i in range(src.num_row_groups):
                t = src.read_row_group(i)
                ids = t.column("video_id").to_pylist()
                matched.update(v for v in ids if v in labels)
                col = [labels.get(v) for v in ids]
                n_labelled += sum(v is not None for v in col)
                t = t.set_column(2, "label", pa.array(col, pa.int8()))
                writer.write_table(t)
    unmatched = sorted(set(labels) - matched)
    for vid in unmatched[:3]:
        report.add("label_without_video", vid)
    if len(unmatched) > 3:
        report.add("label_without_video", "", len(unmatched) - 3)
    return ManifestSummary(n, n_labelled, skipped, tuple(label_uris), report)


def _entries_table(entries: list[Entry], schema):
    import pyarrow as pa

    return pa.table(
        {
            "video_id": [e.key for e in entries],
            "uri": [e.uri for e in entries],
            "label": pa.nulls(len(entries), pa.int8()),
            "size_bytes": [e.size for e in entries],
            "etag": [e.etag for e in entries],
        },
        schema=schema,
    )


def count_videos(root: str, cfg: StorageConfig) -> int:
    return sum(1 for e in iter_entries(root, cfg) if is_video(e.key))
