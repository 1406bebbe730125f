//! The `[reports]` section: reports `gridwatch run` writes on its own into a folder — the
//! previous day's (日报) each morning and the previous week's (周报) on Mondays — in the
//! formats, breakdowns and language asked for.

use std::path::PathBuf;

use super::render::ReportFormat;
use super::{Lang, parse_dimensions};

/// The shift change: the night's cases are in once the day shift starts.
pub const DEFAULT_DAILY_AT: &str = "08:00";

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Folder the reports go to (relative to the configuration file); absent: none are written.
    pub dir: Option<PathBuf>,
    /// Local time (HH:MM) after which the previous day's report is due.
    pub daily_at: String,
    /// Also the previous week's (Monday to Sunday) report, due on Mondays at `daily_at`.
    pub weekly: bool,
    /// `xlsx`, `html`, `csv`, `json`.
    pub formats: Vec<String>,
    pub group_by: Vec<String>,
    /// `zh` or `en`.
    pub lang: String,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            dir: None,
            daily_at: DEFAULT_DAILY_AT.into(),
            weekly: true,
            formats: vec!["xlsx".into(), "html".into()],
            group_by: super::DEFAULT_GROUP_BY
                .split(',')
                .map(str::to_owned)
                .collect(),
            lang: "zh".into(),
        }
    }
}

impl ReportSettings {
    /// Range checks: (field below `reports`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.daily_at_minutes().is_none() {
            out.push((
                "daily_at".into(),
                format!(
                    "expected a local time like \"08:00\", got `{}`",
                    self.daily_at
                ),
            ));
        }
        if self.formats.is_empty() {
            out.push((
                "formats".into(),
                "name at least one of xlsx, html, csv, json".into(),
            ));
        }
        for (i, f) in self.formats.iter().enumerate() {
            if ReportFormat::parse(f).is_none() {
                out.push((
                    format!("formats[{i}]"),
                    format!("expected xlsx, html, csv or json, got `{f}`"),
                ));
            }
        }
        if let Err(e) = parse_dimensions(&self.group_by.join(",")) {
            out.push(("group_by".into(), e.to_string()));
        }
        if Lang::parse(&self.lang).is_none() {
            out.push((
                "lang".into(),
                format!("expected zh or en, got `{}`", self.lang),
            ));
        }
        out
    }

    /// `daily_at` as minutes after local midnight.
    pub fn daily_at_minutes(&self) -> Option<i64> {
        let (h, m) = self.daily_at.split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
    }

    pub fn formats(&self) -> Vec<ReportFormat> {
        self.formats
            .iter()
            .filter_map(|f| ReportFormat::parse(f))
            .collect()
    }
}
