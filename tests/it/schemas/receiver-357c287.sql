-- The dispatch service's database as 357c287 created it (the CREATE, then open()'s ALTERs in COLUMNS order), unchanged until versioning.
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
        CREATE TABLE IF NOT EXISTS case_history (
            case_id TEXT NOT NULL REFERENCES received(id),
            status TEXT NOT NULL,
            at TEXT NOT NULL,
            note TEXT
        );
ALTER TABLE received ADD COLUMN scenario_name TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN camera_name TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN location TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN department TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN workstation TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN level TEXT NOT NULL DEFAULT 'general';
ALTER TABLE received ADD COLUMN confirmed_at TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN deadline_at TEXT NOT NULL DEFAULT '';
ALTER TABLE received ADD COLUMN status TEXT NOT NULL DEFAULT 'registered';
ALTER TABLE received ADD COLUMN dispatched_at TEXT;
ALTER TABLE received ADD COLUMN handling_at TEXT;
ALTER TABLE received ADD COLUMN closed_at TEXT;
ALTER TABLE received ADD COLUMN crop BLOB;
