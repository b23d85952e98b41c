"""PostgreSQL: a local throwaway server and the tenant data orchestration."""
