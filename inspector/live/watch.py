"""What the sidecar runs on, watched for changes: the rule files, the site config and the policy.

A fingerprint (each file's path, size, modification time and inode; directories walked the way
the rule loader walks them) is compared at an interval (`inspector_reload_interval`): when it
changes the sidecar reloads as on SIGHUP. That is how a mounted Kubernetes ConfigMap reaches a
running sidecar: the kubelet swaps the volume's `..data` symlink, every file's target changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from inspector.rules.cli import rule_paths
from inspector.rules.loader import rule_files

Fingerprint = tuple[tuple[str, int, int, int] | tuple[str], ...]


def files_fingerprint(rules: Iterable[str], config: str | None, policy: str | None) -> Fingerprint:
    """The fingerprint of what a reload reads: the rules (the shipped ones when `rules` is empty),
    the config and the policy. Never raises: what cannot be read is noted as such."""
    return fingerprint([*rule_paths(rules), *(path for path in (config, policy) if path)])


def fingerprint(paths: Iterable[str]) -> Fingerprint:
    """What the files under `paths` are now; equal fingerprints: nothing a reload would read changed."""
    entries: list[tuple[str, int, int, int] | tuple[str]] = []
    for entry in paths:
        path = Path(entry)
        try:
            files = rule_files([path])[0] if path.is_dir() else [path]
        except OSError:  # a directory that cannot be walked
            entries.append((entry,))
            continue
        for file in files:
            try:
                stat = os.stat(file)  # follows symlinks: a swapped ConfigMap target shows
            except OSError:
                entries.append((str(file),))
                continue
            entries.append((str(file), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(entries)
