//! Reports on a schedule (`[reports]`): `gridwatch run` writes the previous day's report each
//! morning and the previous week's on Mondays into a folder, once each. A report already in
//! the folder is never written again, so a restart neither repeats nor loses one; a node that
//! was down at the due time writes the latest due report when it comes back (not every missed
//! one). Files appear whole (written beside, then renamed).

use std::path::{Path, PathBuf};

use time::{Date, OffsetDateTime, Weekday};

use super::render::{self, RenderError, ReportFormat};
use super::settings::ReportSettings;
use super::{Context, Dimension, Lang, PeriodKind, Query, StatsError};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("reports: cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The reports due at `now`: the latest day, and on and after Monday the latest week, whose
/// `daily_at` has passed. (kind, first local date of the period.)
pub fn due(
    settings: &ReportSettings,
    ctx: &Context,
    now: OffsetDateTime,
) -> Vec<(PeriodKind, Date)> {
    let Some(at) = settings.daily_at_minutes() else {
        return Vec::new();
    };
    let local = now.to_offset(ctx.utc_offset);
    let minutes = i64::from(local.hour()) * 60 + i64::from(local.minute());
    // Today's report of yesterday, once its time has come; before that, the one of the day
    // before (it was due yesterday).
    let today = if minutes >= at {
        local.date()
    } else {
        local.date() - time::Duration::days(1)
    };
    let mut out = vec![(PeriodKind::Day, today - time::Duration::days(1))];
    if settings.weekly {
        let since_monday = i64::from(today.weekday().number_days_from_monday());
        let this_monday = today - time::Duration::days(since_monday);
        out.push((PeriodKind::Week, this_monday - time::Duration::days(7)));
    }
    out
}

/// `gridwatch-daily-2026-12-01.xlsx`, `gridwatch-weekly-2026-11-23.html` (the week's Monday).
pub fn file_name(kind: PeriodKind, first_day: Date, format: ReportFormat) -> String {
    let kind = match kind {
        PeriodKind::Day => "daily",
        PeriodKind::Week => "weekly",
        PeriodKind::Month => "monthly",
    };
    format!("gridwatch-{kind}-{first_day}.{}", format.extension())
}

/// Writes every due report that is not yet in `dir`; returns the files written.
pub fn write_due(
    settings: &ReportSettings,
    dir: &Path,
    outbox: &Path,
    ctx: &Context,
    now: OffsetDateTime,
) -> Result<Vec<PathBuf>, ScheduleError> {
    let lang = Lang::parse(&settings.lang).unwrap_or_default();
    let group_by: Vec<Dimension> = super::parse_dimensions(&settings.group_by.join(","))?;
    let mut written = Vec::new();
    for (kind, first_day) in due(settings, ctx, now) {
        let missing: Vec<ReportFormat> = settings
            .formats()
            .into_iter()
            .filter(|f| !dir.join(file_name(kind, first_day, *f)).exists())
            .collect();
        if missing.is_empty() {
            continue;
        }
        let (from_ms, to_ms) = super::period_ms(kind, first_day, ctx.utc_offset);
        let query = Query {
            from_ms,
            to_ms,
            group_by: group_by.clone(),
            lang,
        };
        let conn = super::open(outbox)?;
        let (report, cases) = super::report_with_cases(&conn, &query, ctx)?;
        for format in missing {
            let path = dir.join(file_name(kind, first_day, format));
            let bytes = render::to_bytes(format, &report, &cases, lang)?;
            write_whole(&path, &bytes)?;
            if format == ReportFormat::Csv {
                let list = path.with_extension("cases.csv");
                let mut buf = Vec::new();
                render::csv_cases(&cases, lang, &mut buf)?;
                write_whole(&list, &buf)?;
            }
            written.push(path);
        }
    }
    Ok(written)
}

fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), ScheduleError> {
    let err = |source| ScheduleError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Whether `day` is a Monday (weekly reports are due from then).
pub fn is_monday(day: Date) -> bool {
    day.weekday() == Weekday::Monday
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ctx() -> Context {
        Context {
            utc_offset: time::UtcOffset::from_hms(8, 0, 0).unwrap(),
            phases: Vec::new(),
            limits_ms: [600_000, 1_800_000, 3_600_000],
            now_ms: 0,
            camera_names: Vec::new(),
        }
    }

    #[test]
    fn the_previous_day_is_due_after_daily_at_local_time_and_the_previous_week_on_monday() {
        let s = ReportSettings::default();
        // Wednesday 2026-12-02 07:59 in Shanghai (23:59 UTC the day before): Monday's report.
        let before = due(&s, &ctx(), datetime!(2026-12-01 23:59 UTC));
        assert_eq!(
            before[0],
            (PeriodKind::Day, time::macros::date!(2026 - 11 - 30))
        );
        // 08:00 Shanghai: Tuesday's.
        let after = due(&s, &ctx(), datetime!(2026-12-02 00:00 UTC));
        assert_eq!(
            after[0],
            (PeriodKind::Day, time::macros::date!(2026 - 12 - 01))
        );
        // The week before the current one: Monday 2026-11-23 to Sunday 2026-11-29.
        assert_eq!(
            after[1],
            (PeriodKind::Week, time::macros::date!(2026 - 11 - 23))
        );
        assert!(is_monday(after[1].1));
        // Monday 2026-11-30 at 07:00 Shanghai: the week before last is still the latest due.
        let monday_early = due(&s, &ctx(), datetime!(2026-11-29 23:00 UTC));
        assert_eq!(
            monday_early[1],
            (PeriodKind::Week, time::macros::date!(2026 - 11 - 16))
        );
    }
}
