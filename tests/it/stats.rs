//! Statistics against a stored case history whose outcomes are known
//! (`gridwatch_bench::history`, written through the outbox's own functions): every figure of
//! `stats::compute` is compared with a count made here from what was decided for each case,
//! for the whole period, each group of every breakdown, a day, a week and a span between shift
//! changes; the retention purge keeps the figures; `gridwatch report` writes the same figures
//! as XLSX (read back with calamine), CSV and HTML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use calamine::{Data, Reader, Xlsx, open_workbook};
use gridwatch::cases::outbox::Outbox;
use gridwatch::cases::settings::DeadlineSettings;
use gridwatch::config::Config;
use gridwatch::stats::{
    self, Context, Dimension, Figures, Lang, PeriodKind, Query, Report, ReportParams,
};
use gridwatch_bench::history::{self, DAY_MS, GeneratedCase, HistorySpec, Review};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::support::{TempDir, repo};

const SEED: u64 = 20261120;
const HOUR_MS: i64 = 3_600_000;
/// The key area's local time in the shipped configuration.
const OFFSET_MS: i64 = 8 * HOUR_MS;

/// The end of the fixed histories: 2026-11-20 10:30 local, ten days after the plan's third
/// phase began (2026-11-11 08:00), so a ten-day history spans two phases.
fn fixed_now() -> OffsetDateTime {
    datetime!(2026-11-20 10:30 +8)
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The shipped area and catalog with the plan's 103060 limits (`DeadlineSettings::default()`).
fn spec(cases: usize, days: u32, now_ms: i64) -> (Config, HistorySpec) {
    let config = Config::embedded_default().unwrap();
    let mut spec = HistorySpec::from_config(&config, cases, days, SEED, now_ms);
    spec.deadlines = DeadlineSettings::default();
    (config, spec)
}

fn context(config: &Config, now_ms: i64) -> Context {
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000).unwrap();
    Context::new(&config.area, &DeadlineSettings::default(), now)
}

// ---- the count made here ----

/// Milliseconds since local midnight.
fn local_time_of_day(c: &GeneratedCase) -> i64 {
    (c.detected_ms + OFFSET_MS).rem_euclid(DAY_MS)
}

fn local_date(ms: i64) -> time::Date {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms + OFFSET_MS) * 1_000_000)
        .unwrap()
        .date()
}

fn shift(c: &GeneratedCase) -> &'static str {
    if (8 * HOUR_MS..20 * HOUR_MS).contains(&local_time_of_day(c)) {
        "day"
    } else {
        "night"
    }
}

fn phase(c: &GeneratedCase, ctx: &Context) -> String {
    ctx.phases
        .iter()
        .filter(|p| p.2 <= c.detected_ms)
        .max_by_key(|p| p.2)
        .map_or_else(String::new, |p| p.0.clone())
}

/// The phase's name as the plan (the configuration) gives it; empty before the first.
fn phase_name(c: &GeneratedCase, ctx: &Context) -> String {
    let id = phase(c, ctx);
    ctx.phases
        .iter()
        .find(|p| p.0 == id)
        .map_or(id.clone(), |p| p.1.clone())
}

/// The 103060 limits of the plan: 10, 30 and 60 minutes.
fn limit_ms(c: &GeneratedCase) -> i64 {
    DeadlineSettings::default().limit_ms(c.level)
}

fn deadline(c: &GeneratedCase) -> Option<i64> {
    c.clock_start_ms.map(|s| s + limit_ms(c))
}

fn on_time(c: &GeneratedCase) -> bool {
    matches!((c.handled_ms, deadline(c)), (Some(h), Some(d)) if h <= d)
}

/// Handled late, or open past the deadline at `now` (not rejected, not self-resolved).
fn overdue(c: &GeneratedCase, now_ms: i64) -> bool {
    match (c.handled_ms, deadline(c)) {
        (Some(h), Some(d)) => h > d,
        (Some(_), None) => false,
        (None, d) => {
            c.self_resolved_ms.is_none()
                && c.review != Review::Rejected
                && d.is_some_and(|d| now_ms > d)
        }
    }
}

fn dispatch_s(c: &GeneratedCase) -> Option<f64> {
    c.delivered_ms.map(|t| (t - c.detected_ms) as f64 / 1000.0)
}

fn handle_s(c: &GeneratedCase) -> Option<f64> {
    match (c.handled_ms, c.clock_start_ms) {
        (Some(h), Some(s)) => Some((h - s) as f64 / 1000.0),
        _ => None,
    }
}

/// Nearest rank: the smallest value whose rank reaches p % of the count.
fn nearest_rank(mut values: Vec<f64>, p: usize) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p * values.len()).div_ceil(100).max(1);
    Some(values[rank - 1])
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn expected(cases: &[&GeneratedCase], now_ms: i64) -> Figures {
    let n = |f: &dyn Fn(&GeneratedCase) -> bool| cases.iter().filter(|c| f(c)).count() as u64;
    let rejected = n(&|c| c.review == Review::Rejected);
    let reviewed = n(&|c| matches!(c.review, Review::Confirmed | Review::Rejected));
    let handled = n(&|c| c.handled_ms.is_some());
    let handled_on_time = n(&on_time);
    Figures {
        discovered: cases.len() as u64,
        reported_by_staff: n(&|c| c.reported_by_staff),
        unattended: n(&|c| c.review == Review::Unattended),
        reviewed,
        awaiting_review: n(&|c| c.review == Review::Awaiting),
        rejected,
        false_case_rate: ratio(rejected, reviewed),
        dispatched: n(&|c| c.delivered_ms.is_some()),
        handled,
        handled_on_time,
        on_time_rate: ratio(handled_on_time, handled),
        overdue: n(&|c| overdue(c, now_ms)),
        self_resolved: n(&|c| c.self_resolved_ms.is_some()),
        reopened: n(&|c| c.reopened),
        dispatch_median_s: nearest_rank(cases.iter().filter_map(|c| dispatch_s(c)).collect(), 50),
        dispatch_p90_s: nearest_rank(cases.iter().filter_map(|c| dispatch_s(c)).collect(), 90),
        handle_median_s: nearest_rank(cases.iter().filter_map(|c| handle_s(c)).collect(), 50),
        handle_p90_s: nearest_rank(cases.iter().filter_map(|c| handle_s(c)).collect(), 90),
    }
}

fn key(d: Dimension, c: &GeneratedCase, ctx: &Context) -> String {
    match d {
        Dimension::Unit => c.unit.clone(),
        Dimension::Department => c.department.clone(),
        Dimension::Scenario => c.scenario.clone(),
        Dimension::Group => c.group.clone(),
        Dimension::Camera => c.camera.clone(),
        Dimension::Shift => shift(c).into(),
        Dimension::Phase => phase(c, ctx),
        Dimension::Level => c.level.as_str().into(),
        Dimension::Day => local_date(c.detected_ms).to_string(),
    }
}

/// A group's name as a Chinese report writes it.
fn name(d: Dimension, c: &GeneratedCase, ctx: &Context) -> String {
    match d {
        Dimension::Unit => c.unit_name.clone(),
        Dimension::Department => c.department.clone(),
        Dimension::Scenario => c.scenario_name.clone(),
        Dimension::Group => c.group_name.clone(),
        Dimension::Camera => c.camera_name.clone(),
        Dimension::Shift if shift(c) == "day" => "白班 08:00-20:00".into(),
        Dimension::Shift => "夜班 20:00-08:00".into(),
        Dimension::Phase => {
            let id = phase(c, ctx);
            match id.as_str() {
                "" => "（计划阶段之前）".into(),
                "launch" => "实战启动".into(),
                "intensive" => "实战攻坚".into(),
                "long_term" => "长效管理".into(),
                other => panic!("unknown phase {other}"),
            }
        }
        Dimension::Level => match c.level.as_str() {
            "simple" => "简单 (10 分钟)".into(),
            "general" => "一般 (30 分钟)".into(),
            _ => "疑难 (60 分钟)".into(),
        },
        Dimension::Day => local_date(c.detected_ms).to_string(),
    }
}

/// Groups in the report's order: most cases first, then by key (days in order).
fn groups<'a>(
    d: Dimension,
    cases: &[&'a GeneratedCase],
    ctx: &Context,
) -> Vec<(String, Vec<&'a GeneratedCase>)> {
    let mut by: BTreeMap<String, Vec<&GeneratedCase>> = BTreeMap::new();
    for &c in cases {
        by.entry(key(d, c, ctx)).or_default().push(c);
    }
    let mut groups: Vec<_> = by.into_iter().collect();
    if d != Dimension::Day {
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    }
    groups
}

fn in_period(cases: &[GeneratedCase], from_ms: i64, to_ms: i64) -> Vec<&GeneratedCase> {
    let mut v: Vec<&GeneratedCase> = cases
        .iter()
        .filter(|c| c.detected_ms >= from_ms && c.detected_ms < to_ms)
        .collect();
    v.sort_by(|a, b| {
        a.detected_ms
            .cmp(&b.detected_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    v
}

/// `ids` are the cases of `period`, each once, in detection order (cases found in the same
/// millisecond in any order).
fn assert_listed(ids: &[&str], period: &[&GeneratedCase], what: &str) {
    let by_id: BTreeMap<&str, i64> = period
        .iter()
        .map(|c| (c.id.as_str(), c.detected_ms))
        .collect();
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let want: Vec<&str> = by_id.keys().copied().collect();
    assert_eq!(sorted, want, "{what}: the cases listed");
    let times: Vec<i64> = ids.iter().map(|id| by_id[id]).collect();
    assert!(
        times.is_sorted(),
        "{what}: the case list is in detection order"
    );
}

/// Every figure of `report` (and its case list, read on the same connection) against the
/// count made here.
fn check(
    conn: &rusqlite::Connection,
    report: &Report,
    cases: &[GeneratedCase],
    query: &Query,
    ctx: &Context,
) -> usize {
    let period = in_period(cases, query.from_ms, query.to_ms);
    let what = format!("period {}..{}", report.from, report.to);
    assert_eq!(report.total, expected(&period, ctx.now_ms), "{what}: total");
    assert_eq!(report.breakdowns.len(), query.group_by.len(), "{what}");
    for b in &report.breakdowns {
        let want = groups(b.dimension, &period, ctx);
        let keys: Vec<&str> = b.rows.iter().map(|r| r.key.as_str()).collect();
        let want_keys: Vec<&str> = want.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            keys,
            want_keys,
            "{what}: groups by {}",
            b.dimension.as_str()
        );
        for (row, (key, members)) in b.rows.iter().zip(&want) {
            let dim = b.dimension.as_str();
            assert_eq!(
                row.figures,
                expected(members, ctx.now_ms),
                "{what}: {dim} {key}"
            );
            assert_eq!(
                row.name,
                name(b.dimension, members[0], ctx),
                "{what}: {dim} {key}"
            );
        }
    }
    let days = groups(Dimension::Day, &period, ctx);
    assert_eq!(report.trend.len(), days.len(), "{what}: trend");
    for (row, (day, members)) in report.trend.iter().zip(&days) {
        assert_eq!(&row.key, day, "{what}: trend");
        assert_eq!(
            row.figures,
            expected(members, ctx.now_ms),
            "{what}: trend {day}"
        );
    }
    // Units × scenarios.
    let heat = &report.heat;
    let mut cells = BTreeMap::new();
    for &(u, s, n) in &heat.cells {
        cells.insert((heat.units[u].0.clone(), heat.scenarios[s].0.clone()), n);
    }
    let mut want = BTreeMap::new();
    for c in &period {
        *want
            .entry((c.unit.clone(), c.scenario.clone()))
            .or_insert(0u64) += 1;
    }
    assert_eq!(cells, want, "{what}: units × scenarios");

    let lines = stats::case_lines(conn, None, usize::MAX).unwrap();
    let ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
    assert_listed(&ids, &period, &what);
    let by_id: BTreeMap<&str, &GeneratedCase> =
        period.iter().map(|c| (c.id.as_str(), *c)).collect();
    for l in &lines {
        let c = by_id[l.id.as_str()];
        let local =
            OffsetDateTime::from_unix_timestamp(c.detected_ms.div_euclid(1000) + OFFSET_MS / 1000)
                .unwrap()
                .format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .unwrap();
        assert_eq!(l.detected_at, local, "{}", c.id);
        assert_eq!(l.unit, c.unit_name, "{}", c.id);
        assert_eq!(l.group, c.group_name, "{}", c.id);
        assert_eq!(l.camera, c.camera_name, "{}", c.id);
        assert_eq!(l.scenario, c.scenario_name, "{}", c.id);
        assert_eq!(l.department, c.department, "{}", c.id);
        assert_eq!(l.level, c.level.as_str(), "{}", c.id);
        assert_eq!(l.shift, shift(c), "{}", c.id);
        assert_eq!(l.phase, phase_name(c, ctx), "{}", c.id);
        assert_eq!(l.review, c.review.as_str(), "{}", c.id);
        assert_eq!(l.reported_by_staff, c.reported_by_staff, "{}", c.id);
        assert_eq!(l.dispatch_s, dispatch_s(c), "{}", c.id);
        assert_eq!(l.handle_s, handle_s(c), "{}", c.id);
        assert_eq!(l.on_time, on_time(c), "{}", c.id);
        assert_eq!(l.overdue, overdue(c, ctx.now_ms), "{}", c.id);
        assert_eq!(l.self_resolved, c.self_resolved_ms.is_some(), "{}", c.id);
        assert_eq!(l.reopened, c.reopened, "{}", c.id);
    }
    period.len()
}

fn compute(path: &Path, query: &Query, ctx: &Context) -> (rusqlite::Connection, Report) {
    let conn = stats::open(path).unwrap();
    let report = stats::compute(&conn, query, ctx).unwrap();
    (conn, report)
}

fn all_of(cases: &[GeneratedCase]) -> Query {
    Query {
        from_ms: cases.iter().map(|c| c.detected_ms).min().unwrap(),
        to_ms: cases.iter().map(|c| c.detected_ms).max().unwrap() + 1,
        group_by: Dimension::ALL.to_vec(),
        lang: Lang::Zh,
    }
}

// ---- the tests ----

#[test]
fn every_figure_matches_a_count_of_what_was_decided() {
    let dir = TempDir::new("stats-figures");
    let path = dir.path("outbox.sqlite");
    let now_ms = ms(fixed_now());
    let (config, spec) = spec(300, 10, now_ms);
    let cases = history::generate(&path, &spec).unwrap();
    assert_eq!(
        history::plan(&spec).unwrap(),
        cases,
        "the same spec, the same history"
    );
    let ctx = context(&config, now_ms);
    assert_eq!(ctx.utc_offset.whole_seconds(), (OFFSET_MS / 1000) as i32);

    // The history has what the figures count.
    let count = |f: &dyn Fn(&GeneratedCase) -> bool| cases.iter().filter(|c| f(c)).count();
    let distinct = |f: &dyn Fn(&GeneratedCase) -> String| {
        cases
            .iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(cases.len(), 300);
    assert!(distinct(&|c| c.unit.clone()) >= 3);
    assert!(distinct(&|c| c.scenario.clone()) >= 3);
    assert!(distinct(&|c| c.department.clone()) >= 3);
    assert_eq!(distinct(&|c| shift(c).to_owned()), 2);
    assert_eq!(
        distinct(&|c| phase(c, &ctx)),
        2,
        "the history spans the start of long_term"
    );
    for (fate, n) in [
        ("never held", count(&|c| !c.held)),
        ("confirmed", count(&|c| c.review == Review::Confirmed)),
        ("rejected", count(&|c| c.review == Review::Rejected)),
        ("awaiting", count(&|c| c.review == Review::Awaiting)),
        (
            "released unreviewed",
            count(&|c| c.held && c.review == Review::Unattended),
        ),
        ("dead letter", count(&|c| c.dead_lettered)),
        ("handled on time", count(&on_time)),
        (
            "handled late",
            count(&|c| c.handled_ms.is_some() && !on_time(c)),
        ),
        (
            "handled at the limit",
            count(&|c| c.handled_ms.zip(deadline(c)).is_some_and(|(h, d)| h == d)),
        ),
        (
            "open past the deadline",
            count(&|c| c.handled_ms.is_none() && overdue(c, now_ms)),
        ),
        ("self-resolved", count(&|c| c.self_resolved_ms.is_some())),
        ("reopened", count(&|c| c.reopened)),
        (
            "reopened, handled again",
            count(&|c| c.reopened && c.handled_ms.is_some()),
        ),
        ("reported by staff", count(&|c| c.reported_by_staff)),
        (
            "at 08:00 or 20:00",
            count(&|c| [8, 20].map(|h| h * HOUR_MS).contains(&local_time_of_day(c))),
        ),
        (
            "a millisecond before",
            count(&|c| {
                [8, 20]
                    .map(|h| h * HOUR_MS - 1)
                    .contains(&local_time_of_day(c))
            }),
        ),
    ] {
        assert!(n > 0, "the history has no case {fate}");
    }

    // The whole period, every breakdown.
    let query = all_of(&cases);
    let (conn, report) = compute(&path, &query, &ctx);
    assert_eq!(check(&conn, &report, &cases, &query, &ctx), 300);

    // A local day and a local week (Monday to Sunday), as the console and the CLI ask.
    let day = ReportParams {
        period: Some(PeriodKind::Day),
        date: Some("2026-11-15".into()),
        ..ReportParams::default()
    }
    .query(&ctx)
    .unwrap();
    assert_eq!(
        (day.from_ms, day.to_ms),
        (
            ms(datetime!(2026-11-15 0:00 +8)),
            ms(datetime!(2026-11-16 0:00 +8))
        )
    );
    let (conn, report) = compute(&path, &day, &ctx);
    let n = check(&conn, &report, &cases, &day, &ctx);
    assert!((10..100).contains(&n), "{n} cases on 2026-11-15");
    let week = ReportParams {
        period: Some(PeriodKind::Week),
        date: Some("2026-11-18".into()),
        group_by: Some("unit,department,scenario,shift,day".into()),
        ..ReportParams::default()
    }
    .query(&ctx)
    .unwrap();
    assert_eq!(
        (week.from_ms, week.to_ms),
        (
            ms(datetime!(2026-11-16 0:00 +8)),
            ms(datetime!(2026-11-23 0:00 +8))
        )
    );
    let (conn, report) = compute(&path, &week, &ctx);
    let n = check(&conn, &report, &cases, &week, &ctx);
    assert!(n > 100 && n < 300, "{n} cases in the week of 2026-11-16");

    // Shift changes: a case at 08:00:00.000 local is the day shift's and inside a period from
    // 08:00; one a millisecond before is the night's and outside it (20:00 the other way).
    let mut edges = 0;
    for c in cases.iter().filter(|c| {
        let t = local_time_of_day(c);
        [8, 20]
            .iter()
            .any(|h| t == h * HOUR_MS || t == h * HOUR_MS - 1)
    }) {
        let date = local_date(c.detected_ms);
        let shift_period = ReportParams {
            from: Some(format!("{date}T08:00")),
            to: Some(format!("{date} 20:00:00")),
            group_by: Some("shift".into()),
            ..ReportParams::default()
        }
        .query(&ctx)
        .unwrap();
        let (conn, report) = compute(&path, &shift_period, &ctx);
        check(&conn, &report, &cases, &shift_period, &ctx);
        assert!(report.breakdowns[0].rows.iter().all(|r| r.key == "day"));
        let listed = stats::case_lines(&conn, None, usize::MAX)
            .unwrap()
            .iter()
            .any(|l| l.id == c.id);
        let t = local_time_of_day(c);
        assert_eq!(
            listed,
            t == 8 * HOUR_MS || t == 20 * HOUR_MS - 1,
            "{} at {t} ms",
            c.id
        );
        assert_eq!(shift(c), if listed { "day" } else { "night" });
        edges += 1;
    }
    assert!(edges >= 2, "{edges} cases on a shift change");

    // An empty period has no groups, and zero everywhere.
    let empty = Query {
        from_ms: now_ms + DAY_MS,
        to_ms: now_ms + 2 * DAY_MS,
        group_by: Dimension::ALL.to_vec(),
        lang: Lang::Zh,
    };
    let (conn, report) = compute(&path, &empty, &ctx);
    assert_eq!(check(&conn, &report, &cases, &empty, &ctx), 0);
}

/// An area without the plan's phases: every case is before them.
#[test]
fn an_area_without_phases_counts_every_case_before_them() {
    let dir = TempDir::new("stats-no-phases");
    let path = dir.path("outbox.sqlite");
    let now_ms = ms(fixed_now());
    let (config, spec) = spec(60, 3, now_ms);
    let cases = history::generate(&path, &spec).unwrap();
    let ctx = Context {
        phases: Vec::new(),
        ..context(&config, now_ms)
    };
    let query = all_of(&cases);
    let (conn, report) = compute(&path, &query, &ctx);
    assert_eq!(check(&conn, &report, &cases, &query, &ctx), 60);
    let phases = report
        .breakdowns
        .iter()
        .find(|b| b.dimension == Dimension::Phase)
        .unwrap();
    assert_eq!(phases.rows.len(), 1);
    assert_eq!(phases.rows[0].key, "");
}

#[test]
fn the_retention_purge_keeps_the_figures() {
    let dir = TempDir::new("stats-purge");
    let path = dir.path("outbox.sqlite");
    let now_ms = ms(fixed_now());
    let (config, spec) = spec(160, 8, now_ms);
    let cases = history::generate(&path, &spec).unwrap();
    let ctx = context(&config, now_ms);
    let query = all_of(&cases);
    let (conn, before) = compute(&path, &query, &ctx);
    let lines_before = stats::case_lines(&conn, None, usize::MAX).unwrap();
    drop(conn);

    // Cases stored more than three days before the history's end, finished (delivered or
    // rejected), go with their deliveries, decisions, clocks and verifications.
    let retention = Duration::from_secs(3 * 86_400);
    let cutoff = now_ms - 3 * DAY_MS;
    let purgeable: Vec<&GeneratedCase> = cases
        .iter()
        .filter(|c| c.detected_ms < cutoff)
        .filter(|c| c.review == Review::Rejected || c.delivered_ms.is_some())
        .collect();
    for (what, n) in [
        (
            "rejected",
            purgeable
                .iter()
                .filter(|c| c.review == Review::Rejected)
                .count(),
        ),
        (
            "confirmed",
            purgeable
                .iter()
                .filter(|c| c.review == Review::Confirmed)
                .count(),
        ),
        (
            "handled late",
            purgeable
                .iter()
                .filter(|c| c.handled_ms.is_some() && !on_time(c))
                .count(),
        ),
        (
            "self-resolved",
            purgeable
                .iter()
                .filter(|c| c.self_resolved_ms.is_some())
                .count(),
        ),
        ("reopened", purgeable.iter().filter(|c| c.reopened).count()),
        (
            "open and overdue",
            purgeable
                .iter()
                .filter(|c| c.handled_ms.is_none() && overdue(c, now_ms))
                .count(),
        ),
    ] {
        assert!(n > 0, "no purged case {what}");
    }
    let mut outbox = Outbox::open(&path).unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms as u64);
    let mut purged = 0;
    loop {
        let n = outbox.purge_expired(at, retention, 25).unwrap();
        purged += n;
        if n == 0 {
            break;
        }
    }
    drop(outbox);
    assert_eq!(purged, purgeable.len());
    let db = rusqlite::Connection::open(&path).unwrap();
    let rows = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        rows("SELECT COUNT(*) FROM cases"),
        (cases.len() - purged) as i64
    );
    assert_eq!(
        rows("SELECT COUNT(*) FROM case_clocks"),
        (cases.len() - purged) as i64
    );
    assert_eq!(rows("SELECT COUNT(*) FROM case_facts"), cases.len() as i64);
    assert_eq!(
        rows("SELECT COUNT(*) FROM case_facts WHERE purged_at_ms IS NOT NULL"),
        purged as i64
    );

    let (conn, after) = compute(&path, &query, &ctx);
    let lines_after = stats::case_lines(&conn, None, usize::MAX).unwrap();
    assert_eq!(
        serde_json::to_value(&after).unwrap(),
        serde_json::to_value(&before).unwrap(),
        "the report after the purge"
    );
    assert_eq!(
        serde_json::to_value(&lines_after).unwrap(),
        serde_json::to_value(&lines_before).unwrap(),
        "the case list after the purge"
    );
    assert_eq!(check(&conn, &after, &cases, &query, &ctx), cases.len());
}

#[test]
fn copies_made_in_sql_count_as_cases_stored_one_by_one() {
    let dir = TempDir::new("stats-bulk");
    let path = dir.path("outbox.sqlite");
    let now_ms = ms(fixed_now());
    // 60 through the outbox over the last day, the rest copies on the two days before and,
    // once each day holds one, layers a little earlier again.
    let (config, mut spec) = spec(400, 3, now_ms);
    spec.seed += 1;
    let bulk = history::generate_bulk(&path, &spec, 60).unwrap();
    assert_eq!(bulk.base.len(), 60);
    assert_eq!((bulk.plan.tiles, bulk.plan.base_days), (3, 1));
    assert_eq!(bulk.copied, 340);
    let mut cases = bulk.base.clone();
    cases.extend(bulk.plan.copies(&bulk.base));
    assert_eq!(cases.len(), 400);
    assert!(
        cases
            .iter()
            .any(|c| c.detected_ms < now_ms - 2 * DAY_MS - 1000)
    );
    let ctx = context(&config, now_ms);
    let query = all_of(&cases);
    let (conn, report) = compute(&path, &query, &ctx);
    assert_eq!(check(&conn, &report, &cases, &query, &ctx), 400);

    let db = rusqlite::Connection::open(&path).unwrap();
    let rows = |table: &str| -> i64 {
        db.query_row(
            &format!(
                "SELECT COUNT(DISTINCT {}) FROM {table}",
                if table == "cases" { "id" } else { "case_id" }
            ),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    for table in ["cases", "outbox", "deliveries", "case_clocks", "case_facts"] {
        assert_eq!(rows(table), 400, "{table}");
    }
    let held = cases.iter().filter(|c| c.held).count() as i64;
    assert_eq!(rows("review_frames"), held);
    let decided = cases
        .iter()
        .filter(|c| matches!(c.review, Review::Confirmed | Review::Rejected))
        .count() as i64;
    assert_eq!(rows("review_decisions"), decided);
    let verified = cases.iter().filter(|c| !c.verifications.is_empty()).count() as i64;
    assert_eq!(rows("verifications"), verified);
    let journal: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");

    // A copy's case JSON is whole: its own id and times, the snapshot put back in place.
    let outbox = Outbox::open(&path).unwrap();
    for c in cases.iter().skip(60).step_by(37) {
        let body = outbox.case_body(&c.id).unwrap().unwrap();
        let case: gridwatch::cases::Case = serde_json::from_str(&body).unwrap();
        assert_eq!(case.id.to_string(), c.id);
        assert_eq!(ms(case.confirmed_at), c.detected_ms);
        assert_eq!(case.snapshot.jpeg().unwrap(), history::tiny_jpeg());
        assert_eq!(case.unit.id, c.unit);
    }
}

// ---- gridwatch report ----

/// The shipped configuration with its files in `dir` (the outbox: `dir/gridwatch.sqlite`).
fn write_config(dir: &TempDir) -> PathBuf {
    let text = std::fs::read_to_string(repo("config/default.toml"))
        .unwrap()
        .replace(
            "../sample-streams/",
            &format!("{}/", repo("sample-streams").display()),
        )
        .replace("../models/", &format!("{}/", repo("models").display()))
        .replace("../var/", &format!("{}/", dir.0.display()));
    assert!(!text.contains("../"), "every relative path was moved");
    let path = dir.path("area.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn report(args: &[&str], config: &Path) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .arg("report")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gridwatch report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The figures in the order every report shows them, with their Chinese headings.
const LABELS: [&str; 18] = [
    "发现案件",
    "人工上报",
    "未经审核派发",
    "已审核",
    "待审核",
    "驳回（误报）",
    "误报率",
    "已派遣",
    "已处置",
    "按时处置",
    "103060 按时率",
    "超时",
    "自行消除",
    "核查不通过重办",
    "派遣用时中位数（秒）",
    "派遣用时 P90（秒）",
    "处置用时中位数（秒）",
    "处置用时 P90（秒）",
];

fn values(f: &Figures) -> [Option<f64>; 18] {
    let c = |n: u64| Some(n as f64);
    [
        c(f.discovered),
        c(f.reported_by_staff),
        c(f.unattended),
        c(f.reviewed),
        c(f.awaiting_review),
        c(f.rejected),
        f.false_case_rate,
        c(f.dispatched),
        c(f.handled),
        c(f.handled_on_time),
        f.on_time_rate,
        c(f.overdue),
        c(f.self_resolved),
        c(f.reopened),
        f.dispatch_median_s,
        f.dispatch_p90_s,
        f.handle_median_s,
        f.handle_p90_s,
    ]
}

fn same(got: Option<f64>, want: Option<f64>, tolerance: f64) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => (g - w).abs() <= tolerance * w.abs().max(1.0),
        _ => false,
    }
}

fn cell(range: &calamine::Range<Data>, row: usize, col: usize) -> Data {
    range
        .get_value((row as u32, col as u32))
        .cloned()
        .unwrap_or(Data::Empty)
}

fn number(d: &Data) -> Option<f64> {
    match d {
        Data::Float(x) => Some(*x),
        Data::Int(n) => Some(*n as f64),
        Data::Empty => None,
        other => panic!("not a number: {other:?}"),
    }
}

fn text(d: &Data) -> String {
    match d {
        Data::String(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}

#[test]
fn gridwatch_report_writes_the_figures_as_xlsx_csv_and_html() {
    let dir = TempDir::new("stats-report");
    let config_path = write_config(&dir);
    let config = Config::load(&config_path).unwrap();
    let outbox = config.resolve(&config.cases.outbox);
    assert_eq!(outbox, dir.path("gridwatch.sqlite"));
    // The binary counts open cases as overdue at its own now: the history ends two hours
    // before, so every deadline (at most an hour after a clock's start) has passed for both.
    let end_ms = ms(OffsetDateTime::now_utc()) / 1000 * 1000 - 2 * HOUR_MS;
    let (_, spec) = spec(160, 5, end_ms);
    let cases = history::generate(&outbox, &spec).unwrap();
    let from = local_date(end_ms - 5 * DAY_MS);
    let to = local_date(end_ms);
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let period = in_period(
        &cases,
        ms(from.midnight().assume_offset(time::macros::offset!(+8))),
        ms(to
            .next_day()
            .unwrap()
            .midnight()
            .assume_offset(time::macros::offset!(+8))),
    );
    assert_eq!(period.len(), 160);
    let now_ms = ms(OffsetDateTime::now_utc());
    let ctx = context(&config, now_ms);
    let total = expected(&period, now_ms);
    let by_unit = groups(Dimension::Unit, &period, &ctx);

    // XLSX, from the configuration's outbox.
    let xlsx = dir.path("report.xlsx");
    let out = report(
        &[
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--format",
            "xlsx",
            "--group-by",
            "unit,department,scenario,shift",
            "--out",
            xlsx.to_str().unwrap(),
        ],
        &config_path,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("160 cases"), "{stderr}");
    let mut book: Xlsx<_> = open_workbook(&xlsx).unwrap();
    assert_eq!(
        book.sheet_names(),
        [
            "汇总",
            "按管理单元",
            "按处置部门",
            "按场景",
            "按班次",
            "每日趋势",
            "单元×场景",
            "摄像头在线",
            "案件清单"
        ]
    );
    let summary = book.worksheet_range("汇总").unwrap();
    assert!(text(&cell(&summary, 0, 0)).starts_with("一网统管智能发现统计通报"));
    for (i, (label, want)) in LABELS.iter().zip(values(&total)).enumerate() {
        assert_eq!(text(&cell(&summary, 4 + i, 0)), *label);
        let got = number(&cell(&summary, 4 + i, 1));
        assert!(
            same(got, want, 1e-12),
            "{label}: {got:?}, expected {want:?}"
        );
    }
    let units = book.worksheet_range("按管理单元").unwrap();
    assert_eq!(text(&cell(&units, 0, 0)), "名称");
    assert_eq!(text(&cell(&units, 0, 1)), "编号");
    for (i, label) in LABELS.iter().enumerate() {
        assert_eq!(text(&cell(&units, 0, 2 + i)), *label);
    }
    for (r, (key, members)) in by_unit.iter().enumerate() {
        assert_eq!(text(&cell(&units, 1 + r, 0)), members[0].unit_name);
        assert_eq!(&text(&cell(&units, 1 + r, 1)), key);
        for (i, want) in values(&expected(members, now_ms)).into_iter().enumerate() {
            let got = number(&cell(&units, 1 + r, 2 + i));
            assert!(
                same(got, want, 1e-12),
                "unit {key}, {}: {got:?}, expected {want:?}",
                LABELS[i]
            );
        }
    }
    assert_eq!(text(&cell(&units, 1 + by_unit.len(), 0)), "合计");
    assert_eq!(number(&cell(&units, 1 + by_unit.len(), 2)), Some(160.0));
    let list = book.worksheet_range("案件清单").unwrap();
    assert_eq!(list.height(), 1 + period.len());
    assert_eq!(text(&cell(&list, 0, 0)), "案件编号");
    assert_eq!(text(&cell(&list, 0, 10)), "审核");
    let ids: Vec<String> = (1..list.height())
        .map(|r| text(&cell(&list, r, 0)))
        .collect();
    assert_listed(
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
        &period,
        "XLSX",
    );
    let by_id: BTreeMap<&str, &GeneratedCase> =
        period.iter().map(|c| (c.id.as_str(), *c)).collect();
    for (r, id) in ids.iter().enumerate() {
        let c = by_id[id.as_str()];
        let review = match c.review {
            Review::Unattended => "未经审核",
            Review::Confirmed => "已确认",
            Review::Rejected => "驳回",
            Review::Awaiting => "待审核",
        };
        assert_eq!(text(&cell(&list, 1 + r, 10)), review, "{}", c.id);
        assert_eq!(number(&cell(&list, 1 + r, 12)), dispatch_s(c), "{}", c.id);
    }

    // CSV: the figures, and the case list beside them; from the outbox named on the line.
    let csv_path = dir.path("report.csv");
    report(
        &[
            "--outbox",
            outbox.to_str().unwrap(),
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--format",
            "csv",
            "--out",
            csv_path.to_str().unwrap(),
        ],
        &config_path,
    );
    let mut figures = csv::Reader::from_path(&csv_path).unwrap();
    let header: Vec<String> = figures
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(&header[..3], ["dimension", "key", "名称"]);
    assert_eq!(&header[3..], LABELS);
    let records: Vec<csv::StringRecord> = figures.records().map(Result::unwrap).collect();
    let row = |dimension: &str, key: &str| {
        records
            .iter()
            .find(|r| &r[0] == dimension && &r[1] == key)
            .unwrap_or_else(|| panic!("no CSV row {dimension} {key}"))
            .clone()
    };
    let check_row = |r: &csv::StringRecord, want: &Figures, what: &str| {
        for (i, want) in values(want).into_iter().enumerate() {
            let got = Some(&r[3 + i])
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<f64>().unwrap());
            assert!(
                same(got, want, 1e-4),
                "{what} {}: {got:?}, expected {want:?}",
                LABELS[i]
            );
        }
    };
    check_row(&row("total", ""), &total, "total");
    let (unit, members) = &by_unit[0];
    check_row(&row("unit", unit), &expected(members, now_ms), unit);
    for (shift_key, members) in groups(Dimension::Shift, &period, &ctx) {
        check_row(
            &row("shift", &shift_key),
            &expected(&members, now_ms),
            &shift_key,
        );
    }
    let mut list = csv::Reader::from_path(dir.path("report-cases.csv")).unwrap();
    assert_eq!(&list.headers().unwrap()[0], "案件编号");
    let ids: Vec<String> = list.records().map(|r| r.unwrap()[0].to_owned()).collect();
    assert_listed(
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
        &period,
        "CSV",
    );

    // HTML on stdout.
    let out = report(
        &["--from", &from_s, "--to", &to_s, "--format", "html"],
        &config_path,
    );
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(html.contains("<html lang=\"zh-CN\">"));
    assert!(html.contains("一网统管智能发现统计通报"));
    for (figure, n) in [
        ("discovered", total.discovered),
        ("rejected", total.rejected),
        ("dispatched", total.dispatched),
        ("handled", total.handled),
        ("overdue", total.overdue),
        ("reopened", total.reopened),
    ] {
        let cell = format!("<td data-figure=\"{figure}\">{n}</td>");
        assert!(html.contains(&cell), "{cell} is not in the HTML report");
    }
    assert!(html.contains(&format!(
        "<tr data-key=\"{unit}\"><td>{}</td><td class=\"n\">{}</td>",
        members[0].unit_name,
        members.len()
    )));
    let listed = html.split("<h2>案件清单</h2>").nth(1).unwrap();
    assert_eq!(
        listed.matches("<tr><td>").count(),
        period.len(),
        "one line per case"
    );
}
