-- The review console's tables as ReviewStore::open created them from 9ae0c3a until versioning.

CREATE TABLE IF NOT EXISTS review_users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('reviewer', 'admin')),
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES review_users(id),
    kind TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    csrf TEXT,
    expires_ms INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS review_decisions (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    decision TEXT NOT NULL CHECK (decision IN ('confirmed', 'rejected')),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    original_scenario TEXT,
    suppress_until_ms INTEGER
);
CREATE TABLE IF NOT EXISTS review_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,
    case_id TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS review_suppressions (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    zone TEXT NOT NULL,
    scenario TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    case_id TEXT
);
