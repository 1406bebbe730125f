//! The outbox soak (ignored by default; BENCHMARKS.md, "Outbox storage soak"): cases through the
//! real `Outbox` and `ReviewStore` APIs, 2,000 a simulated day, with small real JPEGs, two
//! dispatch targets, a review share (confirmed, rejected, a few never reviewed) and an
//! occasional dead letter. After each day the day's cases are backdated to it (the simulated
//! clock) and the retention purge runs as the pipeline's `Purger` would. At 10k, 50k, 100k and
//! 200k cases it prints the outbox's size and the time of the queries that run all the time.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/main/target cargo test --release --test it outbox_soak -- --ignored --nocapture
//! ```
//! `GRIDWATCH_SOAK_CASES` (default 200000), `GRIDWATCH_SOAK_RETENTION_DAYS` (default 30; 0: no
//! purge), `GRIDWATCH_SOAK_DIR` (default /dev/shm when present: the soak measures queries, not
//! fsync), `GRIDWATCH_SOAK_TRACE` (set: a line per simulated day).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use gridwatch::cases::outbox::{InitialState, NewCase, Outbox, PURGE_BATCH};
use gridwatch::review::auth::{Role, User};
use gridwatch::review::store::ReviewStore;
use rusqlite::{Connection, params};

use crate::dispatch_support::case;

const CASES_PER_DAY: usize = 2000;
const CHECKPOINTS: &[usize] = &[10_000, 50_000, 100_000, 200_000];
const TARGETS: [&str; 2] = ["town", "xujing"];

/// `Outbox::target_stats(Some(target))` as main ran it for the per-target gauges every second:
/// every delivery of every target, each joined to its case.
const MAIN_GAUGE_SQL: &str = "SELECT d.target, SUM(d.state = 'pending'), SUM(d.state = 'delivered'), SUM(d.state = 'dead'),
        SUM(d.state = 'held'),
        COALESCE(SUM(CASE WHEN d.state = 'pending' THEN d.attempts ELSE MAX(d.attempts - 1, 0) END), 0),
        MIN(CASE WHEN d.state = 'pending' THEN c.created_at END)
 FROM deliveries d JOIN cases c ON c.id = d.case_id
 WHERE ?1 IS NULL OR d.target = ?1 GROUP BY d.target";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn soak_dir() -> PathBuf {
    let base = std::env::var_os("GRIDWATCH_SOAK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        });
    let dir = base.join(format!("gridwatch-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Median of `runs` timings of `f`, in microseconds.
fn median_us(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[test]
#[ignore = "a soak of minutes; run by hand (see the module doc)"]
fn outbox_soak() {
    let total = env_usize("GRIDWATCH_SOAK_CASES", 200_000);
    let retention_days = env_usize("GRIDWATCH_SOAK_RETENTION_DAYS", 30) as u64;
    let trace = std::env::var_os("GRIDWATCH_SOAK_TRACE").is_some();
    let dir = soak_dir();
    let path = dir.join("outbox.sqlite");
    let wal = dir.join("outbox.sqlite-wal");
    let mut outbox = Outbox::open(&path).unwrap();
    let store = ReviewStore::open(&path).unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.busy_timeout(Duration::from_secs(5)).unwrap();
    let reviewer = User {
        id: 1,
        name: "soak".into(),
        role: Role::Reviewer,
    };
    let keep = |_: &gridwatch::cases::Case, _: &str| -> Option<Vec<String>> { None };
    let both: Vec<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    let town: Vec<String> = vec![TARGETS[0].to_owned()];
    let template = case(1, "商业商务区");
    let jpeg = template.snapshot.jpeg().unwrap();
    let clean = template.crop.as_ref().unwrap().jpeg().unwrap();
    let days = total.div_ceil(CASES_PER_DAY) as u64;
    // Day d's cases are stamped within day d; the last day ends now.
    let start = SystemTime::now() - Duration::from_secs(days * 86_400);
    let retention = Duration::from_secs(retention_days * 86_400);
    println!(
        "outbox soak: {total} cases, {CASES_PER_DAY}/day over {days} simulated days, retention {retention_days} days, {}",
        path.display()
    );
    println!(
        "| cases stored | cases kept | outbox file MiB (+ WAL) | free pages | gauges µs | main's gauge query µs | stats µs | history(100) µs | queue µs | purge of the day ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let t_all = Instant::now();
    let mut stored = 0usize;
    let mut last_rowid: i64 = 0;
    for day in 0..days {
        let mut held = Vec::new();
        let mut dead = std::collections::HashSet::new();
        while stored < total && stored < (day as usize + 1) * CASES_PER_DAY {
            let n = stored;
            let mut c = template.clone();
            c.id = uuid::Uuid::now_v7();
            let id = c.id.to_string();
            let body = serde_json::to_string(&c).unwrap();
            let kind = n % 100;
            let (state, targets, clean_frame) = match kind {
                80..95 => (InitialState::AwaitingReview, &both, Some(&clean[..])),
                95..100 => (InitialState::Pending, &town, None),
                _ => (InitialState::Pending, &both, None),
            };
            outbox
                .store(&NewCase {
                    id: &id,
                    scenario: &c.scenario.id,
                    camera: &c.camera.id,
                    body: &body,
                    snapshot: &jpeg,
                    state,
                    clean_frame,
                    targets,
                })
                .unwrap();
            if n % 500 == 7 {
                dead.insert(id.clone());
            }
            if state == InitialState::AwaitingReview {
                held.push((kind, n, id));
            }
            stored += 1;
        }
        // The reviewers: most held cases confirmed, some rejected, one in 2,000 never handled.
        for (kind, n, id) in &held {
            if n % 2000 == 81 {
                continue;
            }
            if *kind < 92 {
                store.confirm(id, &reviewer, None, None, &keep).unwrap();
            } else {
                store
                    .reject(
                        id,
                        &reviewer,
                        None,
                        None,
                        gridwatch::review::settings::ObjectLearning::OFF,
                    )
                    .unwrap();
            }
        }
        // Delivery to each target, through `due` (the stored JSON put back together).
        for t in TARGETS {
            loop {
                let due = outbox.due(t, 500).unwrap();
                if due.is_empty() {
                    break;
                }
                for p in due {
                    if t == TARGETS[1] && dead.contains(&p.id) {
                        outbox.mark_dead(&p.id, t, "HTTP 422: refused").unwrap();
                    } else {
                        outbox.mark_delivered(&p.id, t).unwrap();
                    }
                }
            }
        }
        // The simulated clock: the day's cases were stored on day `day`.
        let day_start = start + Duration::from_secs(day * 86_400);
        let secs = day_start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let first: i64 = raw
            .query_row(
                "SELECT COALESCE(MIN(rowid), 0) FROM cases WHERE rowid > ?1",
                params![last_rowid],
                |r| r.get(0),
            )
            .unwrap();
        raw.execute(
            "UPDATE cases SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', ?1 + (rowid - ?2) * ?3, 'unixepoch')
             WHERE rowid > ?4",
            params![secs, first, 86_400.0 / CASES_PER_DAY as f64, last_rowid],
        )
        .unwrap();
        last_rowid = raw
            .query_row("SELECT MAX(rowid) FROM cases", [], |r| r.get(0))
            .unwrap();
        // End of the day: the purge, batch after batch as `Purger` runs it.
        let now = day_start + Duration::from_secs(86_400);
        let t0 = Instant::now();
        if retention_days > 0 {
            while outbox.purge_expired(now, retention, PURGE_BATCH).unwrap() == PURGE_BATCH {}
        }
        let purge_ms = t0.elapsed().as_secs_f64() * 1e3;
        if trace {
            println!(
                "day {day}: {stored} stored, WAL {:.1} MiB, purge {purge_ms:.1} ms",
                mib(file_len(&wal))
            );
        }

        if CHECKPOINTS.contains(&stored) || (stored == total && !CHECKPOINTS.contains(&total)) {
            raw.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap();
            let c = outbox.counts().unwrap();
            let kept =
                c.pending + c.delivered + c.dead + c.awaiting_review + c.rejected + c.unrouted;
            let free: i64 = raw
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                .unwrap();
            let gauges = median_us(201, || {
                for t in TARGETS {
                    outbox.target_gauges(t).unwrap();
                }
            });
            let mut main_gauge = raw.prepare(MAIN_GAUGE_SQL).unwrap();
            let main_gauges = median_us(21, || {
                for t in TARGETS {
                    main_gauge
                        .query_map(params![t], |r| r.get::<_, String>(0))
                        .unwrap()
                        .for_each(drop);
                }
            });
            let stats = median_us(21, || {
                outbox.stats().unwrap();
            });
            let history = median_us(51, || {
                assert_eq!(store.history(100, None).unwrap().len(), 100);
            });
            let queue = median_us(51, || {
                store.queue(&Default::default()).unwrap();
            });
            println!(
                "| {stored} | {kept} | {:.1} (+ {:.1}) | {free} | {gauges:.0} | {main_gauges:.0} | {stats:.0} | {history:.0} | {queue:.0} | {purge_ms:.1} |",
                mib(file_len(&path)),
                mib(file_len(&wal)),
            );
        }
    }
    let c = outbox.counts().unwrap();
    println!(
        "done in {:.0} s; cases kept: pending {}, delivered {}, dead {}, awaiting review {}, rejected {}",
        t_all.elapsed().as_secs_f64(),
        c.pending,
        c.delivered,
        c.dead,
        c.awaiting_review,
        c.rejected
    );
    if retention_days > 0 {
        // What stays past the retention is what must: the unfinished cases.
        let cutoff =
            time::OffsetDateTime::from(start + Duration::from_secs(days * 86_400) - retention)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
        let old_finished: i64 = raw
            .query_row(
                "SELECT COUNT(*) FROM cases c JOIN outbox o ON o.case_id = c.id
                 WHERE c.created_at < ?1 AND o.state IN ('delivered', 'rejected')",
                params![cutoff],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_finished, 0);
        assert!(c.dead > 0 && c.awaiting_review > 0, "{c:?}");
    }
    drop(outbox);
    drop(store);
    drop(raw);
    let _ = std::fs::remove_dir_all(&dir);
}
