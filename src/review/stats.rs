//! The console's statistics page: a period's figures as JSON for the page's charts, the cases
//! behind one group's figures, and the same report as a file to hand on (XLSX, printable HTML,
//! CSV, JSON). Any signed-in account may read them; each query runs on its own read-only
//! connection off the runtime, one at a time.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Blocking, Caller, ReviewError, ReviewState, static_asset};
use crate::stats::render::{self, ReportFormat};
use crate::stats::{self, Context, Dimension, ReportParams};

const STATS_JS: &str = include_str!("assets/stats.js");
/// Apache ECharts 6.0.0 from npm (`scripts/vendor-echarts`; its licence beside it).
const ECHARTS_JS: &str = include_str!("assets/vendor/echarts/echarts.min.js");
/// Cases a drill-down lists at most (the report file lists them all).
const MAX_DRILL_CASES: usize = 1000;

pub(super) async fn stats_js() -> Response {
    static_asset("text/javascript; charset=utf-8", STATS_JS)
}

pub(super) async fn echarts_js() -> Response {
    static_asset("text/javascript; charset=utf-8", ECHARTS_JS)
}

fn context(s: &ReviewState) -> Context {
    let config = s.config.load();
    Context::new(
        &config.area,
        &config.deadlines,
        time::OffsetDateTime::now_utc(),
    )
}

/// `GET /api/v1/review/stats?period=day|week|month&date=…` or `?from=…&to=…`, with
/// `group_by` and `lang`: the report as JSON.
pub(super) async fn figures(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    Query(params): Query<ReportParams>,
) -> Response {
    let ctx = context(&s);
    let path = s.store.path().to_path_buf();
    let result = blocking
        .report(move || {
            let query = params.query(&ctx)?;
            let conn = stats::open(&path)?;
            Ok(stats::compute(&conn, &query, &ctx)?)
        })
        .await;
    match result {
        Ok(report) => axum::Json(report).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CasesParams {
    #[serde(flatten)]
    report: ReportParams,
    dimension: Option<String>,
    key: Option<String>,
    /// A number (query strings are text; flattened fields stay text).
    limit: Option<String>,
}

/// `GET /api/v1/review/stats/cases?…&dimension=unit&key=cbd`: the cases behind one group's
/// figures (every case of the period without a dimension), in detection order.
pub(super) async fn cases(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    Query(p): Query<CasesParams>,
) -> Response {
    let ctx = context(&s);
    let path = s.store.path().to_path_buf();
    let result = blocking
        .report(move || {
            let query = p.report.query(&ctx)?;
            let filter = match (&p.dimension, &p.key) {
                (Some(d), Some(k)) => Some((
                    Dimension::parse(d)
                        .ok_or_else(|| ReviewError::Invalid("a dimension".into()))?,
                    k.clone(),
                )),
                (None, None) => None,
                _ => {
                    return Err(ReviewError::Invalid(
                        "both dimension and key, or neither".into(),
                    ));
                }
            };
            let limit = match &p.limit {
                Some(l) => l
                    .parse::<usize>()
                    .map_err(|_| ReviewError::Invalid("limit as a number".into()))?,
                None => MAX_DRILL_CASES,
            };
            let conn = stats::open(&path)?;
            stats::compute(&conn, &query, &ctx)?;
            let filter = filter.as_ref().map(|(d, k)| (*d, k.as_str()));
            Ok(stats::case_lines(
                &conn,
                filter,
                limit.min(MAX_DRILL_CASES),
            )?)
        })
        .await;
    match result {
        Ok(lines) => axum::Json(lines).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ReportFileParams {
    #[serde(flatten)]
    report: ReportParams,
    format: Option<String>,
}

/// `GET /api/v1/review/stats/report?…&format=xlsx|html|csv|json`: the report as a file (a
/// download; HTML opens for printing).
pub(super) async fn report(
    State(s): State<ReviewState>,
    State(blocking): State<Blocking>,
    _caller: Caller,
    Query(p): Query<ReportFileParams>,
) -> Response {
    let ctx = context(&s);
    let path = s.store.path().to_path_buf();
    let format = match p.format.as_deref().map(ReportFormat::parse) {
        None => ReportFormat::Xlsx,
        Some(Some(f)) => f,
        Some(None) => {
            return super::error_response(ReviewError::Invalid(
                "format xlsx, html, csv or json".into(),
            ));
        }
    };
    let result = blocking
        .report(move || {
            let query = p.report.query(&ctx)?;
            let conn = stats::open(&path)?;
            let (report, cases) = stats::report_with_cases(&conn, &query, &ctx)?;
            let bytes = render::to_bytes(format, &report, &cases, query.lang)?;
            let name = format!(
                "gridwatch-report-{}-{}.{}",
                report.from.get(..10).unwrap_or_default(),
                report.to.get(..10).unwrap_or_default(),
                format.extension()
            );
            Ok((bytes, name))
        })
        .await;
    match result {
        Ok((bytes, name)) => {
            let disposition = if format == ReportFormat::Html {
                format!("inline; filename=\"{name}\"")
            } else {
                format!("attachment; filename=\"{name}\"")
            };
            (
                [
                    (header::CONTENT_TYPE, format.content_type().to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response()
        }
        Err(r) => r,
    }
}
