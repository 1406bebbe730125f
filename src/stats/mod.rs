//! Statistics and reports for the command centre (通报, 考核): over a period, the cases
//! discovered and what became of them (reviewed or unattended, rejected, dispatched, handled
//! within 103060 or overdue, reopened after verification), grouped by unit, department,
//! scenario, camera group, camera, shift, phase, handling level or day. Everything is computed
//! in SQL from the stored facts (`cases::facts`, the outbox, the review decisions, the 103060
//! clocks and verifications): the period's cases are joined once into a temporary table and
//! every breakdown, percentile and the case list are read from it. [`render`] writes the
//! report as XLSX, printable HTML, CSV or JSON; the console and `gridwatch report` share it.

pub mod render;
pub mod schedule;
pub mod settings;

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use time::{OffsetDateTime, UtcOffset};

use crate::area::Area;
use crate::area::organisation::local_datetime;
use crate::cases::settings::DeadlineSettings;
use gridwatch_case::HandlingLevel;

/// The day shift starts at 08:00 local time and the night shift at 20:00 (the plan's shifts).
pub const DAY_SHIFT_START_S: i64 = 8 * 3600;
pub const NIGHT_SHIFT_START_S: i64 = 20 * 3600;
/// Cases listed at most in a report's case list (an XLSX sheet holds 1,048,576 rows).
pub const MAX_CASE_LINES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("statistics: cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("statistics: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("statistics: {0}")]
    Invalid(String),
}

/// What a breakdown groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Unit,
    Department,
    Scenario,
    Group,
    Camera,
    Shift,
    Phase,
    Level,
    Day,
}

impl Dimension {
    pub const ALL: [Dimension; 9] = [
        Dimension::Unit,
        Dimension::Department,
        Dimension::Scenario,
        Dimension::Group,
        Dimension::Camera,
        Dimension::Shift,
        Dimension::Phase,
        Dimension::Level,
        Dimension::Day,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Unit => "unit",
            Dimension::Department => "department",
            Dimension::Scenario => "scenario",
            Dimension::Group => "group",
            Dimension::Camera => "camera",
            Dimension::Shift => "shift",
            Dimension::Phase => "phase",
            Dimension::Level => "level",
            Dimension::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Dimension> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The column of the period's table (`stats_base`) it groups by, and the one naming it.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Dimension::Unit => ("unit", "unit_name"),
            Dimension::Department => ("department", "department"),
            Dimension::Scenario => ("scenario", "scenario_name"),
            Dimension::Group => ("grp", "grp_name"),
            Dimension::Camera => ("camera", "camera_name"),
            Dimension::Shift => ("shift", "shift"),
            Dimension::Phase => ("phase", "phase"),
            Dimension::Level => ("level", "level"),
            Dimension::Day => ("day", "day"),
        }
    }
}

/// Parses `unit,department` into dimensions, naming the one it does not know.
/// A dimension named twice counts once.
pub fn parse_dimensions(list: &str) -> Result<Vec<Dimension>, StatsError> {
    let mut out: Vec<Dimension> = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let d = Dimension::parse(s).ok_or_else(|| {
            let known: Vec<_> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
            StatsError::Invalid(format!(
                "unknown group-by `{s}`; expected one of {}",
                known.join(", ")
            ))
        })?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// What the figures need to know of the area and the rules.
#[derive(Debug, Clone)]
pub struct Context {
    /// The key area's local time (shifts, days, phases).
    pub utc_offset: UtcOffset,
    /// The plan's phases: id, name, start (Unix ms), in order.
    pub phases: Vec<(String, String, i64)>,
    /// The 103060 limits in ms: simple, general, difficult.
    pub limits_ms: [i64; 3],
    /// Open cases past their deadline at this moment count as overdue.
    pub now_ms: i64,
    /// Camera id → name, for the health table.
    pub camera_names: Vec<(String, String)>,
}

impl Context {
    pub fn new(area: &Area, deadlines: &DeadlineSettings, now: OffsetDateTime) -> Self {
        let offset = area.utc_offset();
        let phases = area
            .phases
            .iter()
            .filter_map(|p| {
                let from = local_datetime(&p.from)?.assume_offset(offset);
                Some((p.id.clone(), p.name.clone(), unix_ms(from)))
            })
            .collect();
        Self {
            utc_offset: offset,
            phases,
            limits_ms: HandlingLevel::ALL.map(|l| deadlines.limit_ms(l)),
            now_ms: unix_ms(now),
            camera_names: area
                .cameras
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect(),
        }
    }

    fn offset_s(&self) -> i64 {
        i64::from(self.utc_offset.whole_seconds())
    }
}

pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The period and breakdowns asked for; `[from_ms, to_ms)`.
#[derive(Debug, Clone, Serialize)]
pub struct Query {
    pub from_ms: i64,
    pub to_ms: i64,
    pub group_by: Vec<Dimension>,
    /// The language of names the report makes up (shifts, levels) and of its headings.
    pub lang: Lang,
}

/// The report's language: Chinese first, English too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" | "zh-CN" | "zh_CN" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// The figures of one group (or of the whole period).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub discovered: u64,
    /// Reported by staff from the patrol wall (the rest were found automatically).
    pub reported_by_staff: u64,
    /// Dispatched without a reviewer (no review tier, or held past the release time).
    pub unattended: u64,
    pub reviewed: u64,
    pub awaiting_review: u64,
    pub rejected: u64,
    /// Rejected per reviewed.
    pub false_case_rate: Option<f64>,
    /// Delivered to at least one target.
    pub dispatched: u64,
    pub handled: u64,
    pub handled_on_time: u64,
    /// Handled within the limit per handled.
    pub on_time_rate: Option<f64>,
    /// Handled late, or still open past the deadline.
    pub overdue: u64,
    pub self_resolved: u64,
    /// A verification round failed (核查不通过) and the case was reopened.
    pub reopened: u64,
    pub dispatch_median_s: Option<f64>,
    pub dispatch_p90_s: Option<f64>,
    pub handle_median_s: Option<f64>,
    pub handle_p90_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub key: String,
    pub name: String,
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub dimension: Dimension,
    pub rows: Vec<Row>,
}

/// Cases per unit and scenario (the heat map).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Heat {
    /// (id, name)
    pub units: Vec<(String, String)>,
    pub scenarios: Vec<(String, String)>,
    /// (unit index, scenario index, cases)
    pub cells: Vec<(usize, usize, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub total: Figures,
    pub breakdowns: Vec<Breakdown>,
    /// By local day, in order.
    pub trend: Vec<Row>,
    pub heat: Heat,
    /// Each camera's health over the period, from the supervisor's samples.
    pub cameras: Vec<CameraHealth>,
}

/// A camera's health over a period, from samples taken each minute while a node ran it.
#[derive(Debug, Clone, Serialize)]
pub struct CameraHealth {
    pub camera: String,
    pub name: String,
    /// Samples taken while the camera was meant to stream (not outside its hours, not ended,
    /// not another node's).
    pub samples: u64,
    pub streaming: u64,
    /// `streaming / samples`.
    pub uptime: Option<f64>,
    pub stalls: u64,
    pub reconnects: u64,
}

/// One case as the case list shows it: every figure of a report counts some of these.
#[derive(Debug, Clone, Serialize)]
pub struct CaseLine {
    pub id: String,
    pub detected_at: String,
    pub unit: String,
    pub group: String,
    pub camera: String,
    pub scenario: String,
    pub department: String,
    pub level: String,
    pub shift: String,
    pub phase: String,
    /// confirmed, rejected, awaiting_review or unattended.
    pub review: String,
    pub reported_by_staff: bool,
    pub dispatch_s: Option<f64>,
    pub handle_s: Option<f64>,
    pub on_time: bool,
    pub overdue: bool,
    pub self_resolved: bool,
    pub reopened: bool,
}

/// Opens the outbox database for reading only (a report never writes it; its temporary
/// tables live in memory).
pub fn open(path: &Path) -> Result<Connection, StatsError> {
    let open_err = |source| StatsError::Open {
        path: path.display().to_string(),
        source,
    };
    if !path.is_file() {
        return Err(StatsError::Invalid(format!(
            "no outbox database at {}",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_err)?;
    let has_facts: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'case_facts')",
            [],
            |r| r.get(0),
        )
        .map_err(open_err)?;
    if !has_facts {
        return Err(StatsError::Invalid(format!(
            "{} has no case facts yet: run this version of gridwatch on it once (it migrates the file)",
            path.display()
        )));
    }
    Ok(conn)
}

/// The report of `query`: the period's cases joined once (`stats_base`), then each figure.
pub fn compute(conn: &Connection, query: &Query, ctx: &Context) -> Result<Report, StatsError> {
    if query.to_ms <= query.from_ms {
        return Err(StatsError::Invalid(
            "the period ends before it starts".into(),
        ));
    }
    load_period(conn, query, ctx)?;
    let total = figures_by(conn, None)?
        .pop()
        .map(|r| r.figures)
        .unwrap_or_default();
    let mut breakdowns = Vec::new();
    for &dimension in &query.group_by {
        let mut rows = figures_by(conn, Some(dimension))?;
        for row in &mut rows {
            row.name = display_name(dimension, &row.key, &row.name, ctx, query.lang);
        }
        breakdowns.push(Breakdown { dimension, rows });
    }
    let trend = figures_by(conn, Some(Dimension::Day))?;
    Ok(Report {
        from: local_text(query.from_ms, ctx),
        to: local_text(query.to_ms, ctx),
        generated_at: local_text(ctx.now_ms, ctx),
        total,
        breakdowns,
        trend,
        heat: heat(conn)?,
        cameras: camera_health(conn, query, ctx)?,
    })
}

/// Uptime, stalls and reconnects per camera in the period. The counters run from the node's
/// start: a rise between samples is counted, a drop (a restart) counts the new value.
fn camera_health(
    conn: &Connection,
    query: &Query,
    ctx: &Context,
) -> Result<Vec<CameraHealth>, StatsError> {
    let mut stmt = conn.prepare(
        "SELECT camera,
            SUM(state NOT IN ('inactive', 'ended', 'stopped', 'standby')),
            SUM(state = 'streaming'),
            SUM(CASE WHEN ds IS NULL THEN 0 WHEN ds >= 0 THEN ds ELSE stalls END),
            SUM(CASE WHEN dr IS NULL THEN 0 WHEN dr >= 0 THEN dr ELSE reconnects END)
         FROM (SELECT camera, state, stalls, reconnects,
                      stalls - LAG(stalls) OVER w AS ds, reconnects - LAG(reconnects) OVER w AS dr
               FROM camera_samples WHERE at_ms >= ?1 AND at_ms < ?2
               WINDOW w AS (PARTITION BY camera ORDER BY at_ms))
         GROUP BY camera ORDER BY camera",
    )?;
    let rows = stmt.query_map(params![query.from_ms, query.to_ms], |r| {
        let camera: String = r.get(0)?;
        let samples = r.get::<_, i64>(1)? as u64;
        let streaming = r.get::<_, i64>(2)? as u64;
        Ok(CameraHealth {
            name: ctx
                .camera_names
                .iter()
                .find(|(id, _)| *id == camera)
                .map_or_else(|| camera.clone(), |(_, n)| n.clone()),
            camera,
            samples,
            streaming,
            uptime: ratio(streaming, samples),
            stalls: r.get::<_, i64>(3)? as u64,
            reconnects: r.get::<_, i64>(4)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The period's cases in detection order (after [`compute`], on the same connection), at most
/// `limit`; with `filter`, only those of one group (dimension, key).
pub fn case_lines(
    conn: &Connection,
    filter: Option<(Dimension, &str)>,
    limit: usize,
) -> Result<Vec<CaseLine>, StatsError> {
    let (column, key) = match filter {
        Some((d, key)) => (d.columns().0, key),
        None => ("''", ""),
    };
    let sql = format!(
        "SELECT case_id, detected_local, unit_name, grp_name, camera_name, scenario_name,
                department, level, shift,
                COALESCE((SELECT p.name FROM temp.stats_phases p WHERE p.id = phase), phase),
                review, manual, dispatch_s, handle_s,
                on_time, overdue, self_resolved IS NOT NULL, reopened
         FROM temp.stats_base WHERE {column} = ?1 ORDER BY rowid LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![key, limit.min(MAX_CASE_LINES) as i64], |r| {
        Ok(CaseLine {
            id: r.get(0)?,
            detected_at: r.get(1)?,
            unit: r.get(2)?,
            group: r.get(3)?,
            camera: r.get(4)?,
            scenario: r.get(5)?,
            department: r.get(6)?,
            level: r.get(7)?,
            shift: r.get(8)?,
            phase: r.get(9)?,
            review: r.get(10)?,
            reported_by_staff: r.get(11)?,
            dispatch_s: r.get(12)?,
            handle_s: r.get(13)?,
            on_time: r.get(14)?,
            overdue: r.get(15)?,
            self_resolved: r.get(16)?,
            reopened: r.get(17)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `temp.stats_base`: one row per case detected in the period, with what became of it. A purged
/// case's outcome comes from its frozen facts, a stored one's from its own rows. The unary `+`
/// on the state columns keeps SQLite on the case's own rows (primary key) rather than the
/// state indexes, which would scan every delivered case for each case.
fn load_period(conn: &Connection, query: &Query, ctx: &Context) -> Result<(), StatsError> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.stats_base; DROP TABLE IF EXISTS temp.stats_phases;
         CREATE TEMP TABLE stats_phases (id TEXT NOT NULL, name TEXT NOT NULL, from_ms INTEGER NOT NULL);",
    )?;
    {
        let mut insert = conn.prepare("INSERT INTO temp.stats_phases VALUES (?1, ?2, ?3)")?;
        for (id, name, from_ms) in &ctx.phases {
            insert.execute(params![id, name, from_ms])?;
        }
    }
    let mut values: Vec<rusqlite::types::Value> = vec![
        query.from_ms.into(),
        query.to_ms.into(),
        ctx.offset_s().into(),
        ctx.limits_ms[0].into(),
        ctx.limits_ms[1].into(),
        ctx.limits_ms[2].into(),
        ctx.now_ms.into(),
        DAY_SHIFT_START_S.into(),
        NIGHT_SHIFT_START_S.into(),
    ];
    // The phase in force (the latest started) as a CASE over bound values: a lookup per case
    // would cost a sort per case.
    // (No phases configured: no CASE, which needs a WHEN.)
    let mut phase = String::from("CASE");
    for (id, _, from_ms) in ctx.phases.iter().rev() {
        values.push((*from_ms).into());
        values.push(id.clone().into());
        phase += &format!(
            " WHEN detected_ms >= ?{} THEN ?{}",
            values.len() - 1,
            values.len()
        );
    }
    phase = if ctx.phases.is_empty() {
        "''".to_owned()
    } else {
        phase + " ELSE '' END"
    };
    conn.execute(
        &BASE_SQL.replace("{phase}", &phase),
        rusqlite::params_from_iter(values),
    )?;
    Ok(())
}

const BASE_SQL: &str = "
CREATE TEMP TABLE stats_base AS
WITH live AS MATERIALIZED (
    SELECT f.*,
        COALESCE(f.review, d.decision,
                 CASE WHEN o.state = 'awaiting_review' THEN 'awaiting_review' END,
                 'unattended') AS review_state,
        COALESCE(f.dispatched_ms, (SELECT MIN(x.delivered_at_ms) FROM deliveries x
                                   WHERE x.case_id = f.case_id AND +x.state = 'delivered')) AS sent_ms,
        COALESCE(f.clock_level, c.level, f.level) AS lvl,
        COALESCE(f.clock_start_ms, c.start_ms) AS start_ms,
        COALESCE(f.handled_ms, c.handled_at_ms) AS done_ms,
        COALESCE(f.self_resolved_ms, c.self_resolved_at_ms) AS self_resolved,
        COALESCE(f.reopened, EXISTS (SELECT 1 FROM verifications v
                                     WHERE v.case_id = f.case_id AND +v.state = 'failed')) AS reopened_now,
        (f.detected_ms / 1000 + ?3) AS local_s
    FROM case_facts f
    LEFT JOIN outbox o ON o.case_id = f.case_id
    LEFT JOIN review_decisions d ON d.case_id = f.case_id
    LEFT JOIN case_clocks c ON c.case_id = f.case_id
    WHERE f.detected_ms >= ?1 AND f.detected_ms < ?2
), timed AS (
    SELECT live.*,
        start_ms + CASE lvl WHEN 'simple' THEN ?4 WHEN 'general' THEN ?5 WHEN 'difficult' THEN ?6 END
            AS deadline_ms
    FROM live
)
SELECT case_id, detected_ms, unit, unit_name, grp, grp_name, department, scenario, scenario_name,
    camera, camera_name, lvl AS level, manual, review_state AS review,
    strftime('%Y-%m-%d %H:%M:%S', local_s, 'unixepoch') AS detected_local,
    strftime('%Y-%m-%d', local_s, 'unixepoch') AS day,
    CASE WHEN (local_s % 86400 + 86400) % 86400 >= ?8 AND (local_s % 86400 + 86400) % 86400 < ?9
         THEN 'day' ELSE 'night' END AS shift,
    {phase} AS phase,
    (sent_ms - detected_ms) / 1000.0 AS dispatch_s,
    CASE WHEN done_ms IS NOT NULL AND start_ms IS NOT NULL THEN (done_ms - start_ms) / 1000.0 END AS handle_s,
    done_ms IS NOT NULL AS handled,
    sent_ms IS NOT NULL AS dispatched,
    COALESCE(done_ms <= deadline_ms, 0) AS on_time,
    CASE WHEN done_ms IS NOT NULL THEN COALESCE(done_ms > deadline_ms, 0)
         ELSE (self_resolved IS NULL AND review_state <> 'rejected' AND deadline_ms IS NOT NULL
               AND ?7 > deadline_ms) END AS overdue,
    self_resolved,
    reopened_now AS reopened
FROM timed
ORDER BY detected_ms
";

/// Figures per value of `dimension` (one row for the whole period with `None`), ordered by
/// cases discovered, most first (days in order).
fn figures_by(conn: &Connection, dimension: Option<Dimension>) -> Result<Vec<Row>, StatsError> {
    let (key, name) = dimension.map_or(("''", "''"), Dimension::columns);
    let order = if dimension == Some(Dimension::Day) {
        "k"
    } else {
        "discovered DESC, k"
    };
    let sql = format!(
        "SELECT {key} AS k, MIN({name}) AS n, COUNT(*) AS discovered, SUM(manual),
            SUM(review = 'unattended'), SUM(review IN ('confirmed', 'rejected')),
            SUM(review = 'awaiting_review'), SUM(review = 'rejected'), SUM(dispatched),
            SUM(handled), SUM(on_time), SUM(overdue), SUM(self_resolved IS NOT NULL),
            SUM(reopened)
         FROM temp.stats_base GROUP BY k ORDER BY {order}"
    );
    let mut durations = durations_by(conn, key)?;
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |r| {
        let n = |i: usize| -> rusqlite::Result<u64> {
            Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
        };
        let mut f = Figures {
            discovered: n(2)?,
            reported_by_staff: n(3)?,
            unattended: n(4)?,
            reviewed: n(5)?,
            awaiting_review: n(6)?,
            rejected: n(7)?,
            dispatched: n(8)?,
            handled: n(9)?,
            handled_on_time: n(10)?,
            overdue: n(11)?,
            self_resolved: n(12)?,
            reopened: n(13)?,
            ..Figures::default()
        };
        f.false_case_rate = ratio(f.rejected, f.reviewed);
        f.on_time_rate = ratio(f.handled_on_time, f.handled);
        Ok(Row {
            key: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            name: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            figures: f,
        })
    })?;
    let mut rows: Vec<Row> = rows.collect::<Result<_, _>>()?;
    for row in &mut rows {
        if let Some((dispatch, handle)) = durations.get_mut(&row.key) {
            let f = &mut row.figures;
            (f.dispatch_median_s, f.dispatch_p90_s) =
                (nearest_rank(dispatch, 50), nearest_rank(dispatch, 90));
            (f.handle_median_s, f.handle_p90_s) =
                (nearest_rank(handle, 50), nearest_rank(handle, 90));
        }
    }
    Ok(rows)
}

/// A group's times to dispatch and to handle, in seconds.
type Durations = (Vec<f64>, Vec<f64>);

/// Times to dispatch and to handle per value of `key`, as SQL selects them. Their percentiles
/// are taken here: SQLite's window functions sorted the period twice per grouping (about 8 s
/// per grouping over a million cases, against well under one here; BENCHMARKS.md).
fn durations_by(
    conn: &Connection,
    key: &str,
) -> Result<std::collections::HashMap<String, Durations>, StatsError> {
    let mut out: std::collections::HashMap<String, Durations> = Default::default();
    let mut stmt = conn.prepare(&format!(
        "SELECT {key}, dispatch_s, handle_s FROM temp.stats_base
         WHERE dispatch_s IS NOT NULL OR handle_s IS NOT NULL"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let k = r.get::<_, Option<String>>(0)?.unwrap_or_default();
        let entry = match out.get_mut(&k) {
            Some(e) => e,
            None => out.entry(k).or_default(),
        };
        if let Some(v) = r.get::<_, Option<f64>>(1)? {
            entry.0.push(v);
        }
        if let Some(v) = r.get::<_, Option<f64>>(2)? {
            entry.1.push(v);
        }
    }
    Ok(out)
}

/// The nearest-rank percentile: the smallest value whose rank reaches `p` % of the count.
pub fn nearest_rank(values: &mut [f64], p: usize) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = (p * values.len()).div_ceil(100).max(1);
    let (_, v, _) = values.select_nth_unstable_by(rank - 1, f64::total_cmp);
    Some(*v)
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn heat(conn: &Connection) -> Result<Heat, StatsError> {
    let mut stmt = conn.prepare(
        "SELECT unit, MIN(unit_name), scenario, MIN(scenario_name), COUNT(*)
         FROM temp.stats_base GROUP BY unit, scenario ORDER BY unit, scenario",
    )?;
    let mut heat = Heat::default();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let unit = (r.get::<_, String>(0)?, r.get::<_, String>(1)?);
        let scenario = (r.get::<_, String>(2)?, r.get::<_, String>(3)?);
        let u = index_of(&mut heat.units, unit);
        let s = index_of(&mut heat.scenarios, scenario);
        heat.cells.push((u, s, r.get::<_, i64>(4)? as u64));
    }
    Ok(heat)
}

fn index_of(list: &mut Vec<(String, String)>, item: (String, String)) -> usize {
    match list.iter().position(|x| x.0 == item.0) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

/// Shifts, phases and levels are stored by id; reports name them as the plan does.
fn display_name(dimension: Dimension, key: &str, name: &str, ctx: &Context, lang: Lang) -> String {
    let zh = lang == Lang::Zh;
    let minutes = |i: usize| ctx.limits_ms[i] / 60_000;
    match (dimension, key) {
        (Dimension::Shift, "day") if zh => "白班 08:00-20:00".into(),
        (Dimension::Shift, "day") => "day shift 08:00-20:00".into(),
        (Dimension::Shift, _) if zh => "夜班 20:00-08:00".into(),
        (Dimension::Shift, _) => "night shift 20:00-08:00".into(),
        (Dimension::Phase, "") if zh => "（计划阶段之前）".into(),
        (Dimension::Phase, "") => "(before the plan's phases)".into(),
        (Dimension::Phase, id) => ctx
            .phases
            .iter()
            .find(|p| p.0 == id)
            .map_or_else(|| id.to_owned(), |p| p.1.clone()),
        (Dimension::Level, level) => {
            let Some(i) = HandlingLevel::ALL.iter().position(|l| l.as_str() == level) else {
                return name.to_owned();
            };
            let names = if zh {
                ["简单", "一般", "疑难"]
            } else {
                ["simple", "general", "difficult"]
            };
            let unit = if zh { "分钟" } else { "min" };
            format!("{} ({} {unit})", names[i], minutes(i))
        }
        _ => name.to_owned(),
    }
}

/// `ms` as the key area's local time, `2026-11-02 08:00`.
pub fn local_text(ms: i64, ctx: &Context) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(ctx.utc_offset);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    t.format(&f).unwrap_or_default()
}

/// A report's period: the local day, week (Monday to Sunday) or month holding a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Day,
    Week,
    Month,
}

/// `[from, to)` in Unix ms of the `kind` holding local `date`. At the ends of the calendar
/// (a date from outside, say 9999-12-31) the period is empty rather than a panic: `compute`
/// then refuses it.
pub fn period_ms(kind: PeriodKind, date: time::Date, offset: UtcOffset) -> (i64, i64) {
    let start = match kind {
        PeriodKind::Day => date,
        PeriodKind::Week => date
            .checked_sub(time::Duration::days(i64::from(
                date.weekday().number_days_from_monday(),
            )))
            .unwrap_or(date),
        PeriodKind::Month => date.replace_day(1).unwrap_or(date),
    };
    let end = match kind {
        PeriodKind::Day => start.next_day(),
        PeriodKind::Week => start.checked_add(time::Duration::days(7)),
        PeriodKind::Month => {
            let (y, m) = (start.year(), start.month());
            let (y, m) = if m == time::Month::December {
                (y + 1, time::Month::January)
            } else {
                (y, m.next())
            };
            time::Date::from_calendar_date(y, m, 1).ok()
        }
    }
    .unwrap_or(start);
    let ms = |d: time::Date| unix_ms(d.midnight().assume_offset(offset));
    (ms(start), ms(end))
}

/// A local date (`2026-11-01`) or date and time (`2026-11-01T08:00`, `2026-11-01 08:00:00`)
/// as Unix ms. A date alone is its midnight, or with `end` the next one (through that day).
pub fn parse_local(s: &str, offset: UtcOffset, end: bool) -> Result<i64, StatsError> {
    use time::macros::format_description as fd;
    let s = s.trim().replace(' ', "T");
    if let Ok(date) = time::Date::parse(&s, fd!("[year]-[month]-[day]")) {
        let day = if end {
            date.next_day().unwrap_or(date)
        } else {
            date
        };
        return Ok(unix_ms(day.midnight().assume_offset(offset)));
    }
    for format in [
        fd!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        fd!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(t) = time::PrimitiveDateTime::parse(&s, format) {
            return Ok(unix_ms(t.assume_offset(offset)));
        }
    }
    Err(StatsError::Invalid(format!(
        "`{s}` is not a local date (2026-11-01) or date and time (2026-11-01T08:00)"
    )))
}

/// Today's local date in the key area.
pub fn local_today(now: OffsetDateTime, offset: UtcOffset) -> time::Date {
    now.to_offset(offset).date()
}

/// The report of `query` and every case it counts.
pub fn report_with_cases(
    conn: &Connection,
    query: &Query,
    ctx: &Context,
) -> Result<(Report, Vec<CaseLine>), StatsError> {
    let report = compute(conn, query, ctx)?;
    let cases = case_lines(conn, None, MAX_CASE_LINES)?;
    Ok((report, cases))
}

/// Breakdowns of a report when none are asked for.
pub const DEFAULT_GROUP_BY: &str = "unit,department,scenario,shift";

/// A report as asked for on the command line or in the console's address: a period (day,
/// week or month holding `date`, default today) or `from`/`to`; the breakdowns; the language.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ReportParams {
    pub period: Option<PeriodKind>,
    pub date: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<String>,
    pub lang: Option<String>,
}

impl ReportParams {
    pub fn query(&self, ctx: &Context) -> Result<Query, StatsError> {
        let offset = ctx.utc_offset;
        let (from_ms, to_ms) = match (&self.from, &self.to) {
            (Some(from), Some(to)) => (
                parse_local(from, offset, false)?,
                parse_local(to, offset, true)?,
            ),
            (None, None) => {
                let now =
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ctx.now_ms) * 1_000_000)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let date = match &self.date {
                    Some(d) => time::Date::parse(
                        d.trim(),
                        time::macros::format_description!("[year]-[month]-[day]"),
                    )
                    .map_err(|_| {
                        StatsError::Invalid(format!("`{d}` is not a date like 2026-11-01"))
                    })?,
                    None => local_today(now, offset),
                };
                period_ms(self.period.unwrap_or(PeriodKind::Day), date, offset)
            }
            _ => {
                return Err(StatsError::Invalid(
                    "give both from and to, or neither".into(),
                ));
            }
        };
        let lang = match self.lang.as_deref() {
            None => Lang::Zh,
            Some(l) => Lang::parse(l).ok_or_else(|| {
                StatsError::Invalid(format!("unknown language `{l}`; expected zh or en"))
            })?,
        };
        Ok(Query {
            from_ms,
            to_ms,
            group_by: parse_dimensions(self.group_by.as_deref().unwrap_or(DEFAULT_GROUP_BY))?,
            lang,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            utc_offset: UtcOffset::from_hms(8, 0, 0).unwrap(),
            phases: Vec::new(),
            limits_ms: [600_000, 1_800_000, 3_600_000],
            now_ms: 0,
            camera_names: Vec::new(),
        }
    }

    #[test]
    fn periods_at_the_ends_of_the_calendar_are_refused_not_a_panic() {
        for period in [PeriodKind::Day, PeriodKind::Week, PeriodKind::Month] {
            let params = ReportParams {
                period: Some(period),
                date: Some("9999-12-31".into()),
                ..ReportParams::default()
            };
            let q = params.query(&ctx()).unwrap();
            assert!(q.to_ms <= q.from_ms, "{period:?}: an empty period");
        }
        let custom = ReportParams {
            from: Some("9999-12-31".into()),
            to: Some("9999-12-31".into()),
            ..ReportParams::default()
        };
        let q = custom.query(&ctx()).unwrap();
        assert!(q.to_ms <= q.from_ms);
    }

    #[test]
    fn a_week_runs_monday_to_monday_local_time() {
        let (from, to) = period_ms(
            PeriodKind::Week,
            time::macros::date!(2026 - 12 - 02),
            UtcOffset::from_hms(8, 0, 0).unwrap(),
        );
        // Monday 2026-11-30 00:00 +08:00 is 2026-11-29 16:00 UTC.
        assert_eq!(from, unix_ms(time::macros::datetime!(2026-11-29 16:00 UTC)));
        assert_eq!(to - from, 7 * 86_400_000);
    }
}
