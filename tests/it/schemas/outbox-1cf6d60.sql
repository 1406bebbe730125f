-- The outbox as 1cf6d60 created it (routing: deliveries, roll-up triggers), unchanged until versioning.

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
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'awaiting_review', 'rejected', 'unrouted')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    case_id TEXT NOT NULL REFERENCES cases(id),
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'pending', 'delivered', 'dead', 'rejected')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT,
    delivered_at_ms INTEGER,
    PRIMARY KEY (case_id, target)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(target, state, next_attempt_at_ms);
CREATE TRIGGER IF NOT EXISTS deliveries_roll_up_update AFTER UPDATE ON deliveries
BEGIN
    UPDATE outbox SET state = CASE
            WHEN state IN ('awaiting_review', 'rejected') THEN state
            WHEN NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id) THEN 'unrouted'
            WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id AND d.state IN ('pending', 'held')) THEN 'pending'
            WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id AND d.state = 'dead') THEN 'dead'
            ELSE 'delivered' END,
         attempts = (SELECT COALESCE(SUM(d.attempts), 0) FROM deliveries d WHERE d.case_id = outbox.case_id),
         last_error = (SELECT d.last_error FROM deliveries d WHERE d.case_id = outbox.case_id
             AND d.state IN ('pending', 'dead') AND d.last_error IS NOT NULL ORDER BY d.next_attempt_at_ms DESC LIMIT 1),
         delivered_at = (SELECT CASE WHEN COUNT(*) > 0 AND COUNT(*) = SUM(d.state = 'delivered')
             THEN strftime('%Y-%m-%dT%H:%M:%fZ', MAX(d.delivered_at_ms) / 1000.0, 'unixepoch') END
             FROM deliveries d WHERE d.case_id = outbox.case_id) WHERE case_id = NEW.case_id;
END;
CREATE TRIGGER IF NOT EXISTS deliveries_roll_up_delete AFTER DELETE ON deliveries
BEGIN
    UPDATE outbox SET state = CASE
            WHEN state IN ('awaiting_review', 'rejected') THEN state
            WHEN NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id) THEN 'unrouted'
            WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id AND d.state IN ('pending', 'held')) THEN 'pending'
            WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.case_id = outbox.case_id AND d.state = 'dead') THEN 'dead'
            ELSE 'delivered' END,
         attempts = (SELECT COALESCE(SUM(d.attempts), 0) FROM deliveries d WHERE d.case_id = outbox.case_id),
         last_error = (SELECT d.last_error FROM deliveries d WHERE d.case_id = outbox.case_id
             AND d.state IN ('pending', 'dead') AND d.last_error IS NOT NULL ORDER BY d.next_attempt_at_ms DESC LIMIT 1),
         delivered_at = (SELECT CASE WHEN COUNT(*) > 0 AND COUNT(*) = SUM(d.state = 'delivered')
             THEN strftime('%Y-%m-%dT%H:%M:%fZ', MAX(d.delivered_at_ms) / 1000.0, 'unixepoch') END
             FROM deliveries d WHERE d.case_id = outbox.case_id) WHERE case_id = OLD.case_id;
END;
CREATE TABLE IF NOT EXISTS review_frames (
    case_id TEXT PRIMARY KEY REFERENCES cases(id),
    jpeg BLOB NOT NULL
);
