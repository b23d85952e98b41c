-- The pooled tenant schema the policy tests and benchmarks run against. Every key includes tenant_id: a
-- key without it would share its values, and the locks and errors they bring, between tenants.
CREATE TABLE customers (
    id integer NOT NULL,
    tenant_id text NOT NULL,
    name text NOT NULL,
    email text,
    ssn text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE orders (
    id integer NOT NULL,
    tenant_id text NOT NULL,
    customer_id integer NOT NULL,
    status text NOT NULL,
    total numeric(12, 2) NOT NULL,
    paid boolean NOT NULL DEFAULT false,
    ref uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
CREATE TABLE secrets (
    id integer NOT NULL,
    tenant_id text NOT NULL,
    api_key text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
