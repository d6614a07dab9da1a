-- The example shop's own tables (pgjobs keeps its tables in the `pgjobs` schema).
CREATE TABLE IF NOT EXISTS orders (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL CHECK (email LIKE '%@%'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id    bigint NOT NULL REFERENCES orders (id),
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0)
);

-- Written by the receipt job; the primary key makes a second run harmless (at-least-once).
CREATE TABLE IF NOT EXISTS receipts (
    order_id    bigint PRIMARY KEY REFERENCES orders (id),
    sent_to     text NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now()
);
