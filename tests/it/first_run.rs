//! What a newcomer sees: the README's main job (`gridwatch run` on the shipped default
//! configuration) puts a case on the dispatch board it points to within two minutes, prints
//! where the board and the review console are, and keeps the console's first password in a
//! file instead of only in the scrolling log.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::dispatch_support::gridwatch;
use crate::support::{TempDir, repo};

/// The README's promise.
const FIRST_CASE_WITHIN: Duration = Duration::from_secs(120);

/// The shipped `config/default.toml`, with only what a test must change: its files in a
/// temporary folder, and free ports instead of the fixed ones (tests run beside each other).
fn default_config(dir: &TempDir) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo("config/default.toml"))
        .unwrap()
        .replace(
            "../sample-streams/",
            &format!("{}/", repo("sample-streams").display()),
        )
        .replace("../models/", &format!("{}/", repo("models").display()))
        .replace("../var/", &format!("{}/", dir.0.display()))
        .replace("127.0.0.1:8765", "127.0.0.1:0")
        .replace("127.0.0.1:8780", "127.0.0.1:0");
    assert!(!text.contains("../"), "every relative path was moved");
    let path = dir.path("default.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_main_job_puts_a_case_on_the_dispatch_board_within_two_minutes() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("first-run");
    let config = default_config(&dir);
    let started = Instant::now();
    let mut child = gridwatch()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--drain-timeout-seconds", "5"])
        .env_remove("GRIDWATCH_ADMIN_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log streams on in the background; the welcome text is kept.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let board = dir.path("receiver.sqlite");
    let mut log = Vec::new();
    let mut first_case = None;
    while started.elapsed() < FIRST_CASE_WITHIN + Duration::from_secs(5) {
        log.extend(rx.try_iter());
        if cases_on_board(&board) > 0 {
            first_case = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    log.extend(rx.try_iter());
    let log = log.join("\n");
    let first_case = first_case
        .unwrap_or_else(|| panic!("no case reached the dispatch board in two minutes:\n{log}"));
    println!("first run: first case on the dispatch board after {first_case:.1?}");
    assert!(first_case <= FIRST_CASE_WITHIN, "{first_case:?}");

    // The welcome names both pages and where the password is.
    assert!(
        log.contains("Dispatch board (cases sent to the command platform): http://"),
        "{log}"
    );
    assert!(
        log.contains("Review console (cases held for a reviewer"),
        "{log}"
    );
    let password_file = dir.path("review-admin-password");
    assert!(
        log.contains(&format!(
            "password in {}",
            password_file.canonicalize().unwrap().display()
        )),
        "{log}"
    );
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(password.trim().len() >= 8, "a generated password is kept");
    assert!(
        !log.contains(password.trim()),
        "the password itself is not logged"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
    }
}

/// Cases the board's database holds; 0 while the service is still creating it (the file exists
/// before its tables do).
fn cases_on_board(db: &std::path::Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM received", [], |r| r.get(0))
        .unwrap_or(0)
}
