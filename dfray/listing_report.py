"""What corpus listing skipped or could not read, counted, with a few examples each.

Stored in run.json as "listing" (`to_dict()`) and printed by the CLI (`lines()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXAMPLES = 3

# kind -> what a line says about it
KINDS = {
    "other_extension": "skipped: not a video extension",
    "dot_file": "skipped: dot-file or dot-folder",
    "unreadable_entry": "skipped: unreadable non-video entry (dangling symlink, loop, no permission)",
    "symlinked_folder": "skipped: symlink to a folder (not followed)",
    "unreadable_folder": "skipped: folder that cannot be listed",
    "unreadable_video": "kept as read_error rows: video entry that cannot be read",
    "non_utf8_name": "kept with a percent-encoded video_id: file name not valid UTF-8",
    "label_without_video": "ignored: label entries matching no listed video",
    "labels_bom": "accepted: label file starting with a UTF-8 BOM",
}


@dataclass
class ListingReport:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str, n: int = 1) -> None:
        if kind not in KINDS:
            raise KeyError(kind)
        self.counts[kind] = self.counts.get(kind, 0) + n
        ex = self.examples.setdefault(kind, [])
        if len(ex) < EXAMPLES:
            from dfray.redact import redact_text

            ex.append(redact_text(example))

    def lines(self) -> list[str]:
        """One line per kind seen, e.g. `listing: 2 skipped: not a video extension (a.txt, b.pdf)`."""
        return [
            f"listing: {n} {KINDS[k]} ({', '.join(self.examples.get(k, []))}"
            f"{', …' if n > len(self.examples.get(k, [])) else ''})"
            for k, n in self.counts.items()
        ]

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}
