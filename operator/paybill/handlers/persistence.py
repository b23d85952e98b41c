"""Keep kopf's own bookkeeping on objects small.

kopf's default diff-base is a full JSON copy of the spec in an annotation, which breaks past the 256 KiB
annotation limit on large objects (big AgentWorkflows). Paybill's handlers are level-based and never read
the old/new diff, so a digest is enough: kopf only needs to know *whether* the essence changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kopf

PREFIX = "paybill.dev"


def essence_digest(essence: Any) -> str:
    return hashlib.sha256(json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Stores sha256(essence) instead of the essence (64 bytes, whatever the object's size). The essence holds
    metadata.generation too: a spec edited and edited back before kopf saw the first edit is still an update,
    so status.observedGeneration catches up with it."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX, key="last-handled-digest")

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        generation = body.metadata.get("generation")
        if generation is None:
            return essence
        return {**essence, "metadata": {**(essence.get("metadata") or {}), "generation": generation}}

    def fetch(self, *, body: kopf.Body) -> Any:
        for key in self.make_keys(self.key, body=body):
            digest = body.metadata.annotations.get(key)
            if digest is None:
                continue
            current = self.build(body=body)
            # Unchanged: hand back the current essence, so kopf sees no diff. Changed: a stand-in that
            # differs from it, so kopf sees an update (handlers are level-based and ignore the diff itself).
            return current if essence_digest(current) == digest.strip() else {"digest": digest.strip()}
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        for key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[key] = essence_digest(essence)
        self._store_marker(prefix=self.prefix, patch=patch, body=body)
