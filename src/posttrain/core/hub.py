"""Hub dataset ids -> a local mirror folder, when one is configured.

Machines without hub access (this one, CI, an air-gapped cluster) can still read the
hub datasets of the full profile from a local copy: set `POSTTRAIN_HUB_DIR` to a folder
holding one repo snapshot per id, `<POSTTRAIN_HUB_DIR>/<org>/<name>/`, in the hub's own
file layout (what `hf download --repo-type dataset ID --local-dir DIR/ID` writes). The
loaders hand the resolved value to the same `datasets.load_dataset` call and the same
row converters as for the hub id, so a mirror (or a test fixture written in the
published layout) exercises exactly the hub code path; nothing else knows about it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "POSTTRAIN_HUB_DIR"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _mirror(hub_id: str) -> Path | None:
    root = os.environ.get(ENV)
    if not root or not _HUB_ID.fullmatch(hub_id):
        return None
    local = Path(root).expanduser() / hub_id
    return local.resolve() if local.is_dir() else None


def resolve(hub_id: str) -> str:
    """The local mirror folder of `hub_id` when `$POSTTRAIN_HUB_DIR/<hub_id>/` exists,
    else `hub_id` unchanged: the first argument for `datasets.load_dataset`."""
    local = _mirror(hub_id)
    if local is None:
        return hub_id
    log.info("hub dataset %s read from the local mirror %s", hub_id, local)
    return str(local)


def file_url(hub_id: str, relpath: str) -> str:
    """One file of a dataset repo: inside the local mirror when there is one, else its
    `hf://datasets/<hub_id>/<relpath>` address (for `load_dataset(..., data_files=...)`)."""
    local = _mirror(hub_id)
    if local is None:
        return f"hf://datasets/{hub_id}/{relpath}"
    log.info("hub file %s/%s read from the local mirror %s", hub_id, relpath, local)
    return str(local / relpath)
