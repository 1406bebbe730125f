-- The outbox as b7384ed created it (Outbox::open's SCHEMA), unchanged until 9ae0c3a.

CREATE TABLE IF NOT EXISTS cases (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    scenario TEXT NOT NULL,
    camera TEXT NOT NULL,
    body TEXT NOT NULL,
    snapshot BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
