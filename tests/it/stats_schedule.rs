//! Scheduled reports (`[reports]`): over a generated history in a real outbox database, the
//! due daily and weekly reports are written once (XLSX and CSV, read back: the day's and the
//! week's cases as this test counts them from the history), a second look writes nothing, a
//! report removed from the folder is written again. (That `gridwatch run` writes them at
//! start is checked by `end_to_end`.)

use std::path::Path;
use std::sync::Arc;

use calamine::{Data, Reader, Xlsx, open_workbook};
use gridwatch::config::Config;
use gridwatch::stats::schedule::{self, file_name};
use gridwatch::stats::{Context, PeriodKind, render::ReportFormat};
use gridwatch_bench::history::{self, GeneratedCase, HistorySpec};

use crate::support::TempDir;

const OFFSET_S: i64 = 8 * 3600;
const DAY_MS: i64 = 86_400_000;

/// The local day number (days since 1970-01-01 in +08:00) of a moment.
fn local_day(ms: i64) -> i64 {
    (ms + OFFSET_S * 1000).div_euclid(DAY_MS)
}

fn day_number(d: time::Date) -> i64 {
    i64::from(d.to_julian_day()) - i64::from(time::macros::date!(1970 - 01 - 01).to_julian_day())
}

/// Cases found on local days [first, first + days).
fn counted(cases: &[GeneratedCase], first: time::Date, days: i64) -> usize {
    let first = day_number(first);
    cases
        .iter()
        .filter(|c| (first..first + days).contains(&local_day(c.detected_ms)))
        .count()
}

fn discovered_in_summary(path: &Path) -> f64 {
    let mut book: Xlsx<_> = open_workbook(path).unwrap();
    let sheet = book.worksheet_range("汇总").unwrap();
    let row = (0..sheet.height() as u32)
        .find(|&r| sheet.get_value((r, 0)) == Some(&Data::String("发现案件".into())))
        .expect("a 发现案件 row");
    match sheet.get_value((row, 1)) {
        Some(Data::Float(v)) => *v,
        other => panic!("发现案件: {other:?}"),
    }
}

#[test]
fn due_reports_are_written_once_and_match_the_history() {
    let dir = TempDir::new("stats-schedule");
    let text = crate::stats_browser::config_text(1)
        + "[reports]\ndir = \"reports\"\nformats = [\"xlsx\", \"csv\"]\n";
    let config = Arc::new(
        Config::from_text(&text, "schedule.toml", &dir.0).unwrap_or_else(|e| panic!("{e}")),
    );
    let outbox = config.resolve(&config.cases.outbox);
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let cases = history::generate(
        &outbox,
        &HistorySpec::from_config(&config, 150, 12, 3, now_ms),
    )
    .unwrap();
    let reports = config.resolve(config.reports.dir.as_ref().unwrap());
    let ctx = Context::new(&config.area, &config.cases.deadlines, now);

    let due = schedule::due(&config.reports, &ctx, now);
    let written = schedule::write_due(&config.reports, &reports, &outbox, &ctx, now).unwrap();
    assert_eq!(
        written.len(),
        4,
        "daily and weekly, XLSX and CSV: {written:?}"
    );
    for (kind, first) in &due {
        let days = if *kind == PeriodKind::Week { 7 } else { 1 };
        let xlsx = reports.join(file_name(*kind, *first, ReportFormat::Xlsx));
        assert_eq!(
            discovered_in_summary(&xlsx),
            counted(&cases, *first, days) as f64,
            "{}",
            xlsx.display()
        );
        // The CSV's total row, and its case list beside it, one line per case.
        let csv =
            std::fs::read_to_string(reports.join(file_name(*kind, *first, ReportFormat::Csv)))
                .unwrap();
        let total: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(
            (total[0], total[3]),
            ("total", counted(&cases, *first, days).to_string().as_str())
        );
        let list = reports
            .join(file_name(*kind, *first, ReportFormat::Csv))
            .with_extension("cases.csv");
        let lines = std::fs::read_to_string(list).unwrap().lines().count();
        assert_eq!(lines, 1 + counted(&cases, *first, days));
    }

    // Written once: nothing again; a removed report comes back alone.
    assert!(
        schedule::write_due(&config.reports, &reports, &outbox, &ctx, now)
            .unwrap()
            .is_empty()
    );
    let (kind, first) = due[0];
    std::fs::remove_file(reports.join(file_name(kind, first, ReportFormat::Xlsx))).unwrap();
    let again = schedule::write_due(&config.reports, &reports, &outbox, &ctx, now).unwrap();
    assert_eq!(
        again,
        vec![reports.join(file_name(kind, first, ReportFormat::Xlsx))]
    );
    assert!(std::fs::read_dir(&reports).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));
}
