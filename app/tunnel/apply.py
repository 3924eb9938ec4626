"""The `gitops-apply` capability's stream: the head `{"kind": "apply"}`, a JSON body
`{objects, field_manager, wait_crds}`, and an NDJSON reply of one line per object
(`{"ref", "result": "applied"|"failed", "code", "status", "message"}`) closed by
`{"result": "done", "waiting_for_crds"}`."""

from __future__ import annotations

import json
import re
from typing import Any

CAPABILITY = "gitops-apply"
APPLY_KIND = "apply"
MAX_LINE = 64 * 1024
REF_FIELDS = ("api_version", "kind", "namespace", "name")
_CODE = re.compile(r"[a-z_]{1,64}")


def check_line(raw: bytes) -> dict[str, Any] | None:
    """One result line, rebuilt from its known fields (a message is dropped: readers use their
    own fixed message for the code); None when it is malformed."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(line, dict):
        return None
    result = line.get("result")
    if result == "done":
        waiting = line.get("waiting_for_crds")
        return {"result": "done", "waiting_for_crds": waiting} if type(waiting) is bool else None
    ref = line.get("ref")
    if result not in ("applied", "failed") or not isinstance(ref, dict):
        return None
    if not all(isinstance(ref.get(f), str) and len(ref[f]) <= 512 for f in REF_FIELDS):
        return None
    checked: dict[str, Any] = {"ref": {f: ref[f] for f in REF_FIELDS}, "result": result}
    if result == "failed":
        code, status = line.get("code"), line.get("status")
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            return None
        if status is not None and (type(status) is not int or not 100 <= status <= 599):
            return None
        checked.update(code=code, status=status)
    return checked
