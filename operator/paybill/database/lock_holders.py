"""Which tenant sessions in a shared database hold a lock the other tenants must not wait on. Pure.

A tenant's login role may SET its own statement and idle timeouts, and its table-level DELETE (which has no
column form, and which RLS-filtered deletes need) allows LOCK TABLE in every mode. So the operator watches the
shared databases and ends a session of a role it created for a tenant or a tenant's agent that:

- holds (or queues for) a table lock on a shared table in a mode that stalls other tenants' reads or writes
  (SHARE and stronger): no statement of a tenant's takes one but LOCK TABLE, so it is ended at once;
- blocks a session of the operator's (its row-security DDL, a policy install) while its transaction has been open
  for longer than the limit, or whatever its age once the operator has been trying to lock that table for longer
  than the limit: the operator's DDL waits only 2 s per attempt and retries, so a chain of transactions each
  younger than the limit would starve it; its waits are summed across attempts (`operator_waits`).

Sessions of any other role (the operator's admin, a role Paybill did not create) are never ended.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .ownership import agent_name, tenant_name

# Table lock modes that stall other tenants' writes (SHARE, SHARE ROW EXCLUSIVE) or reads too (EXCLUSIVE,
# ACCESS EXCLUSIVE); a tenant's statements take at most ROW EXCLUSIVE on a shared table.
STALLING_MODES = frozenset({"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"})
MODE_NAMES = {
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
TENANT_OWNER_PREFIX = "Tenant "  # ownership.tenant_identity
AGENT_OWNER_PREFIX = "AgentPolicy "  # ownership.agent_identity: "AgentPolicy <namespace>/<policy> of tenant <t>"
TENANT_SEPARATOR = " of tenant "


class Why(enum.StrEnum):
    STALLING_LOCK = "stalling-lock"  # held or queued for a SHARE-or-stronger lock on a shared table
    BLOCKING = "blocking"  # blocked another tenant's or the operator's session, past the limit


@dataclass(frozen=True)
class SessionRow:
    """A backend in a shared database (pg_stat_activity with pg_blocking_pids)."""

    pid: int
    started: datetime.datetime  # backend_start: with pid, names the backend (a pid is reused)
    role: str  # the login role (usename)
    database: str
    transaction_seconds: float | None  # how long its transaction has been open; None outside one
    blocked_by: tuple[int, ...] = ()


@dataclass(frozen=True)
class LockRow:
    """A table lock held or requested (pg_locks joined with pg_class, in the session's database)."""

    pid: int
    schema: str
    table: str
    mode: str
    granted: bool


@dataclass(frozen=True)
class Termination:
    """A session to end, and what its tenant is told (no SQL text, no other tenant's name)."""

    pid: int
    started: datetime.datetime
    role: str
    tenant: str
    database: str
    why: Why
    tables: tuple[str, ...]  # schema.table, the locks in question (empty: a row or transaction lock)
    mode: str | None  # the stalling mode (STALLING_LOCK)
    held_seconds: float  # how long its transaction had been open
    blocked: int  # how many other sessions it was blocking

    def message(self) -> str:
        what = f"{self.mode} lock on {', '.join(self.tables)}" if self.mode else _locks_on(self.tables)
        if self.why == Why.STALLING_LOCK:
            reason = "a lock that stalls every other tenant of the shared database"
        else:
            reason = f"blocking {self.blocked} other session(s) of the shared database past the limit"
        return (
            f"ended a session of role {self.role} in {self.database} holding {what} for {self.held_seconds:.0f} s: "
            f"{reason}"
        )

    def details(self) -> dict[str, object]:
        return {
            "role": self.role,
            "database": self.database,
            "why": str(self.why),
            "tables": list(self.tables),
            "mode": self.mode,
            "heldSeconds": round(self.held_seconds, 1),
            "blocked": self.blocked,
        }


def _locks_on(tables: tuple[str, ...]) -> str:
    return f"locks on {', '.join(tables)}" if tables else "a lock"


def tenants_of_roles(key: bytes, owned: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Role -> tenant for the roles Paybill created for a tenant or a tenant's agent, from paybill.owned's
    (name, owner) rows: an owner names the tenant, and the role's name must be the one the naming key gives it."""
    tenants = {}
    for role, owner in owned:
        tenant = _tenant_of(key, role, owner)
        if tenant is not None:
            tenants[role] = tenant
    return tenants


def _tenant_of(key: bytes, role: str, owner: str) -> str | None:
    if owner.startswith(TENANT_OWNER_PREFIX):
        tenant = owner.removeprefix(TENANT_OWNER_PREFIX)
        return tenant if tenant_name(key, tenant) == role else None
    if owner.startswith(AGENT_OWNER_PREFIX):
        policy, separator, tenant = owner.removeprefix(AGENT_OWNER_PREFIX).partition(TENANT_SEPARATOR)
        namespace, slash, name = policy.partition("/")
        if separator and slash and agent_name(key, tenant, namespace, name) == role:
            return tenant
    return None


@dataclass(frozen=True)
class Waited:
    """How long the operator's sessions have been seen waiting to lock one table, summed over the watchdog's passes."""

    seconds: float
    last_seen: float  # time.monotonic() of the last pass that saw it


PASS_CAP_S = 2.0  # at most this much is counted between two passes (a gap between attempts counts little)
FORGET_AFTER_S = 60.0  # a table not waited on for this long starts again from zero


def operator_waits(
    before: Mapping[str, Waited], waiting: Iterable[str], now: float, forget_after: float = FORGET_AFTER_S
) -> dict[str, Waited]:
    """The operator's summed waits per "schema.table" after a pass that sees it waiting for `waiting`: each table
    seen again gets the time since it was last seen (at most PASS_CAP_S); one first seen starts at zero."""
    waits = {table: wait for table, wait in before.items() if now - wait.last_seen <= forget_after}
    for table in set(waiting):
        earlier = waits.get(table)
        added = min(now - earlier.last_seen, PASS_CAP_S) if earlier else 0.0
        waits[table] = Waited((earlier.seconds if earlier else 0.0) + added, now)
    return waits


def operator_waiting(sessions: Iterable[SessionRow], locks: Iterable[LockRow], tenants: Mapping[str, str]) -> set[str]:
    """The tables ("schema.table") a session of none of the tenant and agent roles is queued to lock."""
    others = {session.pid for session in sessions if session.role not in tenants}
    return {f"{lock.schema}.{lock.table}" for lock in locks if not lock.granted and lock.pid in others}


def sessions_to_end(
    sessions: Iterable[SessionRow],
    locks: Iterable[LockRow],
    tenants: Mapping[str, str],
    shared_tables: Mapping[str, frozenset[str]],
    limit_s: float,
    waited: Mapping[str, Waited] | None = None,
) -> list[Termination]:
    """The tenant sessions to end. `tenants`: role -> tenant of Paybill's tenant and agent roles (no other role's
    session is ever ended); `shared_tables`: database -> schemas whose tables every tenant of it uses; `waited`:
    the operator's summed waits per table (operator_waits)."""
    sessions, locks = list(sessions), list(locks)
    ended = []
    for session in sessions:
        tenant = tenants.get(session.role)
        if tenant is None:
            continue
        held = session.transaction_seconds or 0.0
        mine = [lock for lock in locks if lock.pid == session.pid]
        stalling = [
            lock
            for lock in mine
            if lock.mode in STALLING_MODES and lock.schema in shared_tables.get(session.database, frozenset())
        ]
        # Only the operator's own sessions (its row-security DDL, its moves) count as held up: a tenant can make
        # another tenant's session look like a blocker (its own strong LOCK queued behind it, a duplicate key), and
        # ending that session on its word would let one tenant end another's work. A tenant stalling other tenants
        # does so by a strong lock on a shared table, which the rule above ends whatever is waiting.
        victims = [
            other
            for other in sessions
            if session.pid in other.blocked_by and other.role not in tenants and other.pid != session.pid
        ]
        if stalling:
            strongest = max(stalling, key=lambda lock: _strength(lock.mode))
            tables = _names(stalling)
            ended.append(_end(session, tenant, Why.STALLING_LOCK, tables, MODE_NAMES[strongest.mode], held, victims))
        elif victims:
            waited_on = {
                (lock.schema, lock.table) for v in victims for lock in locks if lock.pid == v.pid and not lock.granted
            }
            tables = _names(lock for lock in mine if (lock.schema, lock.table) in waited_on)
            starved = any(wait.seconds >= limit_s for table, wait in (waited or {}).items() if table in tables)
            if held >= limit_s or starved:
                ended.append(_end(session, tenant, Why.BLOCKING, tables, None, held, victims))
    return ended


def _end(
    session: SessionRow,
    tenant: str,
    why: Why,
    tables: tuple[str, ...],
    mode: str | None,
    held: float,
    victims: list[SessionRow],
) -> Termination:
    return Termination(
        session.pid, session.started, session.role, tenant, session.database, why, tables, mode, held, len(victims)
    )


def _names(locks: Iterable[LockRow]) -> tuple[str, ...]:
    return tuple(sorted({f"{lock.schema}.{lock.table}" for lock in locks}))


def _strength(mode: str) -> int:
    return list(MODE_NAMES).index(mode)
