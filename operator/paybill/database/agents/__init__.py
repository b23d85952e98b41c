"""The database side of the agent gate: what PostgreSQL itself enforces for an AgentPolicy.

The policy engine (paybill.policy: analysis, rules, rewrite, decisions, validation) is the specification and
its evaluator, and never touches a database; this package is where its decisions meet PostgreSQL, beside the
rest of the tenant data code it builds on (roles, ownership, locks, connections): the live schema read from the
catalog (`catalog`), the agent's role with column GRANTs and row-level security (`grants`), its installation
on a tenant as the tenant's access allows (`install`), and the guard that runs admitted statements as that
role within the policy's limits (`guard`).
"""
