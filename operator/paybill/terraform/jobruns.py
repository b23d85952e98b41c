"""The record of a run made by a Kubernetes Job, in PostgreSQL: the Job's entry point writes it itself (it has the
backend's credentials), so the operator reads a run's result and Terraform's first error lines (redacted as the
local runner redacts them) without reading any pod's log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .plans import SCHEMA

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.job_runs (
    run_id      text PRIMARY KEY,
    tenant_id   text NOT NULL,
    workspace   text NOT NULL,
    operation   text NOT NULL,
    succeeded   boolean NOT NULL,
    result      jsonb NOT NULL,
    output      text NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class JobRun:
    run_id: str
    tenant_id: str
    workspace: str
    operation: str
    succeeded: bool
    result: dict[str, Any]  # the run's summary, as the entry point prints it (never a sensitive output)
    output: str  # Terraform's first error lines on failure, secrets redacted; the result's JSON on success


def ensure_table(connection: psycopg.Connection) -> None:
    connection.execute("SELECT pg_advisory_lock(hashtext('paybill_terraform.job_runs ddl'))")
    try:
        connection.execute(_DDL)
    finally:
        connection.execute("SELECT pg_advisory_unlock(hashtext('paybill_terraform.job_runs ddl'))")


def record(connection: psycopg.Connection, run: JobRun) -> None:
    ensure_table(connection)
    connection.execute(
        f"""INSERT INTO {SCHEMA}.job_runs (run_id, tenant_id, workspace, operation, succeeded, result, output)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (run_id) DO UPDATE SET succeeded = excluded.succeeded, result = excluded.result,
                output = excluded.output, finished_at = now()""",
        [run.run_id, run.tenant_id, run.workspace, run.operation, run.succeeded, Jsonb(run.result), run.output],
    )


def read(connection: psycopg.Connection, run_id: str) -> JobRun | None:
    row = connection.execute(
        f"""SELECT run_id, tenant_id, workspace, operation, succeeded, result, output
            FROM {SCHEMA}.job_runs WHERE run_id = %s""",
        [run_id],
    ).fetchone()
    return JobRun(row[0], row[1], row[2], row[3], row[4], dict(row[5]), row[6]) if row else None
