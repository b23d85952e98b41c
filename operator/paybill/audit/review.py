"""What a reviewer does with the audit log (`paybill audit verify | replay | export`), over records already read.

- `first_break`: the chain's first fault, with the record it is at (edited, deleted or moved records).
- `untimed`: what an intact chain cannot vouch for: the times of records written under hash format 1.
- `replay`: every recorded gate decision made again under the policy version recorded with it (versions.py),
  and the ones that come out differently. A stored version whose text no longer hashes to its address was edited.
- `export_line`: one record as a JSON line for a tenant's export, with anything credential-like taken out.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .chain import (
    LEGACY_FORMAT,
    AuditRecord,
    ChainBroken,
    Head,
    PrefixChanged,
    RecordsMissing,
    Seal,
    check_chain,
    spans,
    unchecked,
)
from .versions import StoredVersion

REDACTED = "[redacted]"
# Keys whose values are credentials, whatever record they are in: a key containing one of SECRET_PARTS, or with
# one of SECRET_WORDS as a word (camelCase, snake_case or kebab-case), is redacted.
SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "token", "credential", "privatekey", "apikey")
SECRET_WORDS = frozenset({"dsn", "uri", "url", "conninfo", "key"})
PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@", re.IGNORECASE)
PASSWORD_IN_CONNINFO = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Break:
    """Where the chain is broken: the record's sequence number, what is wrong, and the record found there."""

    seq: int
    message: str
    record: AuditRecord | None

    def describe(self) -> str:
        found = self.record
        named = f" ({found.kind} {found.name} {found.event})" if found is not None else ""
        return f"record {self.seq}{named}: {self.message}"


def first_break(records: list[AuditRecord], checkpoint: Head | None = None, seal: Seal | None = None) -> Break | None:
    """The chain's first fault, or None if it is intact (up to the checkpoint, when there is one). SealNeeded: the
    chain is sealed and `seal` is None."""
    try:
        check_chain(records, checkpoint, seal)
    except RecordsMissing as exc:
        after = next((r for r in records if r.seq > exc.after), None)
        span = f"{exc.after + 1}" if exc.missing == 1 else f"{exc.after + 1} to {exc.after + exc.missing}"
        message = f"deleted: record{'s' if exc.missing > 1 else ''} {span} missing"
        if after is not None:
            message += f", the chain resumes at record {after.seq} ({after.kind} {after.name} {after.event})"
        return Break(exc.after + 1, message, None)
    except PrefixChanged as exc:
        return Break(exc.seq, str(exc).split(": ", 1)[-1], None)
    except ChainBroken as exc:
        found = next((r for r in records if r.seq == exc.seq), None)
        message = str(exc).split(": ", 1)[-1]
        if "does not follow" in message:
            message += " (a record before it was removed, or records were reordered)"
        elif "does not match its hash" in message:
            message = "edited: " + message
        return Break(exc.seq, message, found)
    return None


def untimed(records: list[AuditRecord]) -> str | None:
    """Which records' times the chain does not cover (written under hash format 1), said for a reviewer; None: all
    are covered."""
    seqs = [record.seq for record in records if record.hash_format == LEGACY_FORMAT]
    if not seqs:
        return None
    return f"{len(seqs)} written under hash format {LEGACY_FORMAT}, which does not cover their times ({_named(seqs)})"


def foreign_seals(records: list[AuditRecord], seal: Seal | None) -> str | None:
    """Which sealed records the seal cannot check (`chain.unchecked`), said for a reviewer; None: there are none."""
    seqs = unchecked(records, seal)
    if not seqs or seal is None:
        return None
    return (
        f"{len(seqs)} sealed under another key before this seal began at record {seal.since}, so only their place "
        f"in the chain is checked ({_named(seqs)})"
    )


def _named(seqs: list[int]) -> str:
    """`records 1 to 4, 7`: ascending sequence numbers as spans."""
    named = ", ".join(f"{first}" if first == last else f"{first} to {last}" for first, last in spans(seqs))
    return f"record{'s' if len(seqs) > 1 else ''} {named}"


@dataclass(frozen=True)
class Difference:
    """A recorded decision that replay does not reproduce (or cannot make again: `replayed` is None)."""

    record: AuditRecord
    recorded: dict[str, Any]
    replayed: dict[str, Any] | None
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.record.seq,
            "kind": self.record.kind,
            "name": self.record.name,
            "event": self.record.event,
            "step": self.record.details.get("step"),
            "policyContent": self.record.details.get("policyContent"),
            "recorded": self.recorded,
            "replayed": self.replayed,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Replay:
    decisions: int  # gate decisions replayed
    differences: list[Difference]
    edited_versions: list[str]  # stored policy versions whose text no longer hashes to their address


def replay(records: Iterable[AuditRecord], load: Callable[[str], StoredVersion | None]) -> Replay:
    """Decide every recorded gate decision again under its recorded policy version."""
    versions: dict[str, StoredVersion | None] = {}
    engines: dict[str, Any] = {}
    decisions, differences = 0, []
    for record in records:
        details = record.details
        address = details.get("policyContent")
        if not isinstance(address, str) or "statement" not in details or "decision" not in details:
            continue  # not a gate decision, or recorded before versions were kept
        decisions += 1
        recorded = essentials(details["decision"])
        if address not in versions:
            versions[address] = load(address)
        version = versions[address]
        if version is None:
            differences.append(Difference(record, recorded, None, f"policy version {address} is not stored"))
            continue
        try:
            if address not in engines:
                engines[address] = version.engine()
            decision = engines[address].decide(
                str(details.get("principal")),
                str(details["statement"]),
                list(details.get("params") or []),
                details.get("tenant"),
                frozenset(details.get("approvals") or ()),
            )
        except Exception as exc:  # an edited version may not even be a policy: that is a finding, not a crash
            differences.append(Difference(record, recorded, None, f"policy version {address} does not load: {exc}"))
            continue
        replayed = essentials(decision.to_json())
        if replayed != recorded:
            edited = (
                "" if version.intact else " (the stored policy version was edited: it no longer hashes to its address)"
            )
            differences.append(Difference(record, recorded, replayed, "the decision differs" + edited))
    edited_versions = sorted(a for a, v in versions.items() if v is not None and not v.intact)
    return Replay(decisions, differences, edited_versions)


def essentials(decision: dict[str, Any]) -> dict[str, Any]:
    """What must come out the same: allow or deny, the reasons' codes and rules, and the SQL that would run."""
    reasons = [(r.get("code"), r.get("rule")) for r in decision.get("reasons") or []]
    return {"decision": decision.get("decision"), "reasons": [list(r) for r in reasons], "sql": decision.get("sql")}


def belongs_to(record: AuditRecord, tenant: str) -> bool:
    """A record of `tenant`: its Tenant's own, or one whose details name it (agents' policies and workflows)."""
    return (record.kind == "Tenant" and record.name == tenant) or record.details.get("tenant") == tenant


def export_line(record: AuditRecord, at: datetime.datetime) -> str:
    """One record as a JSON line, credentials taken out (the hash still covers the record as stored)."""
    line = {
        "seq": record.seq,
        "at": at.isoformat(),
        "kind": record.kind,
        "name": record.name,
        "event": record.event,
        "details": redact(record.details),
        "previous": record.previous,
        "hash": record.hash,
        "hashFormat": record.hash_format,  # 1: the chain does not vouch for `at`
    }
    return json.dumps(line, sort_keys=True, ensure_ascii=False, default=str)


def redact(value: Any) -> Any:
    """`value` without credentials: values of credential-like keys, and passwords inside URLs or conninfo."""
    if isinstance(value, dict):
        return {key: REDACTED if _secret_key(key) else redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        text = PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
        return PASSWORD_IN_CONNINFO.sub(lambda m: f"{m[1]}{REDACTED}", text)
    return value


def _secret_key(key: str) -> bool:
    letters = re.sub(r"[^a-z]", "", key.lower())
    words = {word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", key)}
    return any(part in letters for part in SECRET_PARTS) or bool(words & SECRET_WORDS)
