-- The outbox as 9ae0c3a created it (review states, review_frames), unchanged until 1cf6d60.

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
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'awaiting_review', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS review_frames (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    jpeg BLOB NOT NULL
);
