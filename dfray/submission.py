"""Submissions: a folder (local or S3) holding `submission.yaml` and its weight files.

    team: acme
    name: effnet-v2
    ensemble:                     # the ensemble YAML format (dfray/configs/demo.yaml)
      detectors:
        - name: main
          arch: onnx              # onnx | torch_export | torchscript | a state-dict arch
          weights: model.onnx     # relative to the submission folder
          input_size: 224
          options: {output: logit}

Weight paths must be relative and stay inside the folder (no `..`, no absolute paths, no
URIs, no `builtin:`), so a submission can be copied or uploaded as it is; they are
resolved against the folder (a local path or an `s3://` URI). Loading reads YAML only and
checks each detector's architecture and options (no torch); the weights themselves are
loaded by `create_detector`, which never unpickles (see dfray/detectors/).

The submission id is `<team>--<name>`, lowercased, every run of characters outside
[a-z0-9._-] replaced by `_`: stable across copies and uploads, usable as a folder name.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from dfray import storage
from dfray.config import ConfigError, EnsembleConfig, StorageConfig, ensemble_from_dict

SUBMISSION_FILE = "submission.yaml"
_KEYS = ("team", "name", "ensemble")


class SubmissionError(ConfigError):
    """A submission cannot be read or is not valid; `submission` names it (its folder)."""

    def __init__(self, submission: str, message: str) -> None:
        super().__init__(f"submission {submission}: {message}")
        self.submission = submission


@dataclass(frozen=True)
class Submission:
    """One submission: `id` (folder-safe, stable), `team`, `name`, `source` (its folder,
    local path or s3:// URI) and `ensemble` with weight paths resolved under `source`."""

    id: str
    team: str
    name: str
    source: str
    ensemble: EnsembleConfig


def submission_id(team: str, name: str) -> str:
    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9._-]+", "_", s.strip().lower()).strip("._") or "_"

    return f"{slug(team)}--{slug(name)}"


def folder_id(path_or_uri: str) -> str:
    """An id for a submission that cannot be read (its leaderboard row): the slug of the
    folder's own name, prefixed `folder--` so it never collides with `<team>--<name>`."""
    base = posixpath.basename(_folder(path_or_uri).rstrip("/")) or "submission"
    return "folder--" + submission_id("", base).split("--", 1)[1]


def load_submissions(folders: list[str], storage_cfg: StorageConfig | None = None
                     ) -> tuple[list[Submission], list[tuple[str, SubmissionError]]]:
    """Load each folder: (submissions, [(folder_id, error)]). Two folders with the same
    `<team>--<name>` are both refused (the id names a run folder), with an error each."""
    ok: list[Submission] = []
    bad: list[tuple[str, SubmissionError]] = []
    for f in folders:
        try:
            ok.append(load_submission(f, storage_cfg))
        except SubmissionError as e:
            bad.append((folder_id(f), e))
    seen: dict[str, list[Submission]] = {}
    for sub in ok:
        seen.setdefault(sub.id, []).append(sub)
    for sid, subs in seen.items():
        if len(subs) > 1:
            for sub in subs:
                others = [o.source for o in subs if o is not sub]
                bad.append((folder_id(sub.source), SubmissionError(
                    sub.source, f"id {sid!r} also used by {others}")))
    return [s for s in ok if len(seen[s.id]) == 1], bad


def _folder(path_or_uri: str) -> str:
    if storage.is_s3(path_or_uri):
        return path_or_uri.rstrip("/")
    import os

    return os.path.abspath(path_or_uri)


def _resolve_weights(folder: str, rel: Any, det: str, cfg: StorageConfig) -> str:
    where = f"detector {det!r}: weights {rel!r}"
    if not isinstance(rel, str) or not rel.strip():
        raise ValueError(f"{where} must be a relative path inside the submission folder")
    if "://" in rel or rel.startswith(("/", "\\", "builtin:", "file:")) or re.match(r"^[A-Za-z]:", rel):
        raise ValueError(f"{where} must be relative to the submission folder")
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"{where} leaves the submission folder")
    full = storage.join(folder, norm)
    if not storage.exists(full, cfg):
        raise ValueError(f"{where} not found in the submission folder")
    return full


def load_submission(path_or_uri: str, storage_cfg: StorageConfig | None = None) -> Submission:
    """Read and check `<path_or_uri>/submission.yaml`; raise SubmissionError naming the
    folder on any problem (missing file, bad YAML, unknown keys, bad ensemble, unknown
    architecture or option, weights missing or outside the folder)."""
    import yaml

    from dfray.detectors.registry import check_spec

    cfg = storage_cfg or StorageConfig()
    folder = _folder(path_or_uri)
    try:
        text = storage.read_bytes(storage.join(folder, SUBMISSION_FILE), cfg).decode("utf-8")
    except (storage.StorageError, UnicodeDecodeError) as e:
        raise SubmissionError(folder, f"cannot read {SUBMISSION_FILE}: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SubmissionError(folder, f"{SUBMISSION_FILE} is not valid YAML: {e}") from None
    try:
        if not isinstance(raw, dict):
            raise ValueError(f"{SUBMISSION_FILE} must be a mapping with {list(_KEYS)}")
        unknown = sorted(set(raw) - set(_KEYS))
        missing = [k for k in _KEYS if k not in raw]
        if unknown or missing:
            raise ValueError(f"unknown keys {unknown}, missing keys {missing}; "
                             f"expected {list(_KEYS)}")
        team, name = raw["team"], raw["name"]
        if not isinstance(team, str) or not team.strip() or not isinstance(name, str) \
                or not name.strip():
            raise ValueError("'team' and 'name' must be non-empty strings")
        ens = ensemble_from_dict(raw["ensemble"])
        dets = []
        for d in ens.detectors:
            check_spec(d)
            if d.weights is None:
                raise ValueError(f"detector {d.name!r} needs 'weights' (a file in the folder)")
            dets.append(dataclasses.replace(
                d, weights=_resolve_weights(folder, d.weights, d.name, cfg)))
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        raise SubmissionError(folder, str(e)) from None
    return Submission(id=submission_id(team, name), team=team.strip(), name=name.strip(),
                      source=folder, ensemble=EnsembleConfig(tuple(dets)))


def find_submissions(paths: list[str], storage_cfg: StorageConfig | None = None) -> list[str]:
    """Submission folders under `paths`, sorted and deduplicated: each path is itself a
    submission (it holds submission.yaml) or a folder/prefix whose direct subfolders are
    submissions (subfolders without submission.yaml are returned too, so that
    `load_submission` reports them). Returns folders; call `load_submission` on each."""
    import pyarrow.fs as pafs

    cfg = storage_cfg or StorageConfig()
    out: set[str] = set()
    for p in paths:
        folder = _folder(p)
        if storage.exists(storage.join(folder, SUBMISSION_FILE), cfg):
            out.add(folder)
            continue
        fs, fpath = storage.filesystem(folder, cfg)
        try:
            infos = fs.get_file_info(pafs.FileSelector(fpath, recursive=False))
        except (OSError, FileNotFoundError) as e:
            raise SubmissionError(folder, f"not a submission folder nor a folder of them: {e}") from None
        subs = [i.base_name for i in infos
                if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")]
        if not subs:
            raise SubmissionError(folder, f"no {SUBMISSION_FILE} and no subfolders")
        out.update(storage.join(folder, s) for s in subs)
    return sorted(out)
