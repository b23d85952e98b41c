-- The pooled tenant schema the policy tests and benchmarks run against.
CREATE TABLE customers (
    id integer PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    email text,
    ssn text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    tenant_id text NOT NULL,
    customer_id integer NOT NULL REFERENCES customers (id),
    status text NOT NULL,
    total numeric(12, 2) NOT NULL,
    paid boolean NOT NULL DEFAULT false,
    ref uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE secrets (
    id integer PRIMARY KEY,
    tenant_id text NOT NULL,
    api_key text NOT NULL
);
