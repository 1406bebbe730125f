//! The supervised pipeline, end to end with the real binary: a stage that fails stops every
//! stage in order, and `gridwatch run` exits non-zero within the drain deadline with every case
//! it had stored still stored.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::dispatch_support::{
    TestReceiver, committed, received, spawn_run, wait_until, write_run_config,
};
use crate::support::TempDir;

/// After a stop the run drains at most this long (`io::STOPPED_DRAIN`).
const STOPPED_DRAIN: Duration = Duration::from_secs(5);
/// The outbox's SQLite busy timeout: a writer fails after waiting this long for the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The fault is real, not simulated: another process takes the outbox's write lock and keeps
/// it past the busy timeout, as a stuck backup tool or a failing disk would. The next stage
/// that must write (the case stage storing an event, or delivery recording an answer) fails.
#[test]
fn a_failing_stage_stops_the_run_in_order_and_keeps_every_stored_case() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("supervisor");
    let receiver = TestReceiver::start(&dir.path("r.sqlite"), "127.0.0.1:0");
    // A looped clip: without the fault this run would never end by itself.
    let config = write_run_config(&dir.0, &receiver.cases_url(), true, "");
    let drain = Duration::from_secs(20);
    let mut child = spawn_run(&config, &dir.0, "failing", drain.as_secs_f64());
    let outbox = dir.path("outbox.sqlite");
    assert!(
        wait_until(Duration::from_secs(120), || committed(&outbox)
            .values()
            .any(|s| s == "delivered")),
        "no case was stored and delivered before the fault: {}",
        log(&dir)
    );

    let lock = rusqlite::Connection::open(&outbox).unwrap();
    lock.busy_timeout(Duration::from_secs(30)).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let held_at = Instant::now();
    // Read through the lock holder: what was stored before the fault.
    let before = stored_ids(&lock);

    let mut failed_at = None;
    let exited = loop {
        if failed_at.is_none() && log(&dir).contains("stopping the pipeline") {
            failed_at = Some(Instant::now());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Some((status, Instant::now()));
        }
        if held_at.elapsed() > Duration::from_secs(90) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    lock.execute_batch("ROLLBACK").unwrap();
    let Some((status, exited_at)) = exited else {
        kill(child);
        panic!(
            "the run did not stop within 90 s of the fault: {}",
            log(&dir)
        );
    };
    let failed_at = failed_at.unwrap_or(exited_at);
    let stdout = stdout(&mut child);
    let log = log(&dir);
    println!(
        "supervisor: fault at 0 s, stage failed at {:.1} s, exit at {:.1} s ({status}); {} case(s) stored before",
        (failed_at - held_at).as_secs_f64(),
        (exited_at - held_at).as_secs_f64(),
        before.len()
    );

    assert!(
        !status.success(),
        "a failed stage must fail the run: {stdout}\n{log}"
    );
    assert!(
        log.contains("database is locked") || log.contains("locked"),
        "the reason is logged: {log}"
    );
    // The failure needs one busy timeout to show; then the drain is bounded.
    assert!(
        failed_at - held_at >= BUSY_TIMEOUT - Duration::from_millis(500),
        "a writer waits the busy timeout before it fails"
    );
    assert!(
        exited_at - failed_at <= STOPPED_DRAIN + Duration::from_secs(10),
        "exit within the drain deadline of the failure: {:?}",
        exited_at - failed_at
    );
    // Every stage ended in order: the supervisor logged the stop before the run ended, and
    // no stage was left behind (the process is gone, and nothing panicked).
    assert!(!log.contains("panicked"), "{log}");

    let after = committed(&outbox);
    for id in &before {
        assert!(
            after.contains_key(id),
            "case {id} was stored before the fault and is gone"
        );
    }
    let got = received(&receiver.db);
    assert!(
        got.keys().all(|id| after.contains_key(id)),
        "only stored cases were delivered"
    );
    assert!(
        got.values().all(|n| *n == 1),
        "each delivered once: {got:?}"
    );
    println!(
        "supervisor: {} case(s) stored after the run, {} delivered, none lost",
        after.len(),
        got.len()
    );
}

fn stored_ids(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn.prepare("SELECT id FROM cases").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path("failing.log")).unwrap_or_default()
}

fn stdout(child: &mut Child) -> String {
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    out
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
