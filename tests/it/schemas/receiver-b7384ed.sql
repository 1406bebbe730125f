-- The dispatch service's database as b7384ed created it.
CREATE TABLE IF NOT EXISTS received (
            id TEXT PRIMARY KEY,
            received_at TEXT NOT NULL,
            body_sha256 TEXT NOT NULL,
            body TEXT NOT NULL,
            scenario TEXT NOT NULL,
            camera TEXT NOT NULL,
            unit TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            confidence REAL NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 1,
            snapshot BLOB
        );
