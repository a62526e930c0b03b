"""Detector weights: find, fetch, verify and load them. Weights are untrusted input.

`resolve_weights(uri, sha256)` accepts

- a local path (or `file://…`),
- `builtin:NAME` — `dfray/detectors/weights/NAME.pt` shipped inside the package,
- `s3://bucket/key` — read through `pyarrow.fs.S3FileSystem` (an S3-compatible endpoint
  such as MinIO or moto comes from `StorageConfig.endpoint_url`; pyarrow ignores
  `AWS_ENDPOINT_URL`),
- `https://…` (and `http://…`) — read with urllib.

Remote files are downloaded into a cache (default `~/.cache/dfray/weights/`, one folder
per file) and written atomically (temporary file + rename), so concurrent workers on one
node never see a partial file. The cache folder is named by the expected sha256 when
given; otherwise by a hash of the URI (for S3 also of the object's size and mtime, so a
replaced object is fetched again). The sha256 of the file is always computed and returned,
so the run records which weights it actually used; a mismatch with the expected sha256
raises `WeightsError` (and a mismatching download is removed from the cache).

`load_state_dict(path)` loads with `torch.load(..., weights_only=True)`: tensors, plain
containers and numbers only (numpy scalars, which old training scripts stored as metrics,
are allowed too); a checkpoint that needs any other class is refused with `WeightsError`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfray.config import StorageConfig
from dfray.redact import RedactedMessage

if TYPE_CHECKING:  # pragma: no cover
    import torch

BUILTIN_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CACHE = Path("~/.cache/dfray/weights")
_CHUNK = 1 << 20
HTTP_TIMEOUT_S = 60.0


class WeightsError(RedactedMessage, ValueError):
    """Weights cannot be found, fetched, verified or loaded; the message says why."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _norm_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    s = sha256.strip().lower()
    if s.startswith("sha256:"):
        s = s[len("sha256:") :]
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise WeightsError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return s


def _verify(path: Path, expected: str | None, uri: str) -> str:
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise WeightsError(
            f"sha256 mismatch for weights {uri}: expected {expected}, got {actual} ({path})"
        )
    return actual


def builtin_path(name: str) -> Path:
    """Path of `builtin:NAME` (NAME with or without `.pt`)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise WeightsError(f"bad builtin weights name {name!r}")
    fname = name if name.endswith(".pt") else f"{name}.pt"
    return BUILTIN_DIR / fname


def s3_filesystem(storage: StorageConfig | None = None):
    """The pyarrow S3FileSystem of `storage` (endpoint, region, retries): dfray.storage's."""
    from dfray.storage import filesystem

    return filesystem("s3://weights", storage or StorageConfig())[0]


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE.expanduser()


def _atomic_download(write_to, dest: Path) -> None:
    """Call `write_to(fileobj)` on a temporary file next to `dest`, then rename it."""
    from dfray.storage import atomic_path

    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        write_to(f)


def _fetch_cached(uri: str, key: str, fname: str, expected: str | None, cache_dir, write_to):
    dest = _cache_dir(cache_dir) / key / (fname or "weights.pt")
    if dest.is_file():
        actual = sha256_file(dest)
        if expected is None or actual == expected:
            return dest, actual
        dest.unlink(missing_ok=True)  # a corrupt or stale cache entry: fetch again
    _atomic_download(write_to, dest)
    try:
        return dest, _verify(dest, expected, uri)
    except WeightsError:
        dest.unlink(missing_ok=True)
        raise


def _uri_key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def resolve_weights(
    uri: str,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    storage: StorageConfig | None = None,
) -> tuple[Path, str]:
    """Find or fetch the weights at `uri`; return `(local_path, sha256_of_file)`.

    Raises WeightsError when the file is missing, cannot be fetched, or its sha256 is not
    `sha256` (when given; `sha256:` prefix and upper case accepted).
    """
    if not uri:
        raise WeightsError("empty weights URI")
    expected = _norm_sha(sha256)
    scheme = urllib.parse.urlparse(uri).scheme.lower() if "://" in uri else ""

    if uri.startswith("builtin:"):
        path = builtin_path(uri[len("builtin:") :])
        if not path.is_file():
            have = sorted(p.stem for p in BUILTIN_DIR.glob("*.pt")) if BUILTIN_DIR.is_dir() else []
            raise WeightsError(
                f"builtin weights {uri!r} not found at {path}; builtin weights: {have or 'none'}"
            )
        return path, _verify(path, expected, uri)

    if scheme in ("", "file"):
        path = Path(uri[len("file://") :] if scheme == "file" else uri).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        return path, _verify(path, expected, uri)

    if scheme == "s3":
        parsed = urllib.parse.urlparse(uri)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not bucket or not key:
            raise WeightsError(f"bad S3 weights URI {uri!r}; expected s3://bucket/key")
        fs = s3_filesystem(storage)
        fpath = f"{bucket}/{key}"
        try:
            from pyarrow import fs as pafs

            info = fs.get_file_info(fpath)
        except OSError as e:
            raise WeightsError(f"cannot reach weights {uri}: {e}") from e
        if info.type != pafs.FileType.File:
            raise WeightsError(f"weights object not found: {uri}")

        def write_to(f) -> None:
            try:
                with fs.open_input_stream(fpath) as src:
                    while chunk := src.read(_CHUNK):
                        f.write(chunk)
            except OSError as e:
                raise WeightsError(f"cannot download weights {uri}: {e}") from e

        cache_key = expected or _uri_key(uri, info.size, info.mtime_ns)
        return _fetch_cached(uri, cache_key, Path(key).name, expected, cache_dir, write_to)

    if scheme in ("https", "http"):

        def write_to(f) -> None:
            req = urllib.request.Request(uri, headers={"User-Agent": "dfray"})
            try:
                with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                    shutil.copyfileobj(resp, f, _CHUNK)
            except OSError as e:  # URLError and HTTPError are OSErrors
                raise WeightsError(f"cannot download weights {uri}: {e}") from e

        name = Path(urllib.parse.urlparse(uri).path).name
        cache_key = expected or _uri_key(uri)
        return _fetch_cached(uri, cache_key, name, expected, cache_dir, write_to)

    raise WeightsError(
        f"unsupported weights URI {uri!r}; use a local path, builtin:NAME, s3:// or https://"
    )


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar/dtype reconstruction, as stored by training scripts that saved metrics
    such as `bce_best` as numpy floats. Both numpy 1.x (`numpy.core`) and 2.x
    (`numpy._core`) paths; these only rebuild plain numbers, never arbitrary objects."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return []
    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        scalar = np.core.multiarray.scalar
    out: list[Any] = [np.dtype]
    for path in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
        out.append((scalar, path))
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16):
        out.append(type(np.dtype(t)))
    for t in (np.float32, np.float64, np.uint16, np.uint32, np.uint64):
        out.append(type(np.dtype(t)))
    return out


def _torch_load(path: Path) -> Any:
    import contextlib

    import torch

    ctx: Any = contextlib.nullcontext()
    if hasattr(torch.serialization, "safe_globals"):
        try:
            ctx = torch.serialization.safe_globals(_numpy_safe_globals())
        except Exception:  # pragma: no cover - older torch without tuple entries
            ctx = contextlib.nullcontext()
    try:
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        msg = str(e).strip().splitlines()
        detail = next((m for m in msg if "Unsupported global" in m or "GLOBAL" in m), None)
        detail = (detail or (msg[0] if msg else type(e).__name__)).strip()
        raise WeightsError(
            f"cannot load weights {path} with weights_only=True "
            f"(only tensors, plain containers and numbers are accepted; "
            f"arbitrary pickled objects are refused): {detail}"
        ) from e


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict safely (`weights_only=True`, on CPU).

    Accepts a raw state dict or a checkpoint `{"state_dict": …, …}` (the DFDC 1st-place
    layout); a leading `module.` (DataParallel) is stripped from every key.
    """
    import torch

    path = Path(path)
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(
            f"weights {path} hold {type(obj).__name__}, expected a state dict "
            "or a checkpoint with a 'state_dict' entry"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"weights {path}: entries that are not tensors: {bad[:5]}"
            + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_into(model: torch.nn.Module, state_dict: dict[str, Any], source: str = "weights") -> None:
    """`model.load_state_dict(state_dict, strict=True)`; a mismatch raises WeightsError
    naming the first missing/unexpected keys and any shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label} keys {keys[:5]}{more}")
        raise WeightsError(
            f"{source} do not match the {type(model).__name__} architecture: " + "; ".join(parts)
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:  # pragma: no cover - caught above in practice
        raise WeightsError(f"{source} do not match the architecture: {e}") from e
