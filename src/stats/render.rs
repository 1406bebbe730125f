//! A report as the command centre hands it on: XLSX (one sheet per breakdown, the daily trend,
//! units × scenarios and the case list, with Chinese headings), printable HTML, CSV (the
//! figures; the case list beside it) or JSON. Headings come from one table of figures, so
//! every format names a figure the same way.

use std::io::Write;

use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use serde::Serialize;

use super::{CaseLine, Dimension, Figures, Lang, Report, Row};

/// Case lines an HTML report lists (it is for reading and printing; the XLSX holds them all).
pub const HTML_CASE_LINES: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Boxed: `XlsxError` is large, and every error that carries this one would grow with it.
    #[error("report: XLSX: {0}")]
    Xlsx(Box<XlsxError>),
    #[error("report: CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("report: {0}")]
    Io(#[from] std::io::Error),
    #[error("report: JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<XlsxError> for RenderError {
    fn from(e: XlsxError) -> Self {
        RenderError::Xlsx(Box::new(e))
    }
}

/// A figure's value as a report writes it.
enum Value {
    Count(u64),
    Rate(Option<f64>),
    Seconds(Option<f64>),
}

struct Column {
    key: &'static str,
    zh: &'static str,
    en: &'static str,
    value: fn(&Figures) -> Value,
}

impl Column {
    fn label(&self, lang: Lang) -> &'static str {
        if lang == Lang::Zh { self.zh } else { self.en }
    }
}

macro_rules! col {
    ($key:ident, $zh:literal, $en:literal, $kind:ident) => {
        Column {
            key: stringify!($key),
            zh: $zh,
            en: $en,
            value: |f| Value::$kind(f.$key),
        }
    };
}

/// Every figure, in the order reports show them.
const COLUMNS: &[Column] = &[
    col!(discovered, "发现案件", "discovered", Count),
    col!(reported_by_staff, "人工上报", "reported by staff", Count),
    col!(unattended, "未经审核派发", "unattended", Count),
    col!(reviewed, "已审核", "reviewed", Count),
    col!(awaiting_review, "待审核", "awaiting review", Count),
    col!(rejected, "驳回（误报）", "rejected (false)", Count),
    col!(false_case_rate, "误报率", "false-case rate", Rate),
    col!(dispatched, "已派遣", "dispatched", Count),
    col!(handled, "已处置", "handled", Count),
    col!(handled_on_time, "按时处置", "handled on time", Count),
    col!(on_time_rate, "103060 按时率", "103060 on-time rate", Rate),
    col!(overdue, "超时", "overdue", Count),
    col!(self_resolved, "自行消除", "self-resolved", Count),
    col!(
        reopened,
        "核查不通过重办",
        "reopened after verification",
        Count
    ),
    col!(
        dispatch_median_s,
        "派遣用时中位数（秒）",
        "time to dispatch, median (s)",
        Seconds
    ),
    col!(
        dispatch_p90_s,
        "派遣用时 P90（秒）",
        "time to dispatch, p90 (s)",
        Seconds
    ),
    col!(
        handle_median_s,
        "处置用时中位数（秒）",
        "time to handle, median (s)",
        Seconds
    ),
    col!(
        handle_p90_s,
        "处置用时 P90（秒）",
        "time to handle, p90 (s)",
        Seconds
    ),
];

fn text(lang: Lang, zh: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::Zh { zh } else { en }
}

/// The heading of a breakdown by `d`.
pub fn dimension_label(d: Dimension, lang: Lang) -> &'static str {
    match d {
        Dimension::Unit => text(lang, "按管理单元", "by unit"),
        Dimension::Department => text(lang, "按处置部门", "by department"),
        Dimension::Scenario => text(lang, "按场景", "by scenario"),
        Dimension::Group => text(lang, "按巡查编组", "by camera group"),
        Dimension::Camera => text(lang, "按摄像头", "by camera"),
        Dimension::Shift => text(lang, "按班次", "by shift"),
        Dimension::Phase => text(lang, "按工作阶段", "by phase"),
        Dimension::Level => text(lang, "按处置等级", "by handling level"),
        Dimension::Day => text(lang, "按日", "by day"),
    }
}

/// The case list's columns: heading (zh, en) and the cell.
const CASE_COLUMNS: &[(&str, &str)] = &[
    ("案件编号", "case"),
    ("发现时间", "found at"),
    ("管理单元", "unit"),
    ("巡查编组", "group"),
    ("摄像头", "camera"),
    ("场景", "scenario"),
    ("处置部门", "department"),
    ("处置等级", "level"),
    ("班次", "shift"),
    ("阶段", "phase"),
    ("审核", "review"),
    ("人工上报", "reported by staff"),
    ("派遣用时（秒）", "time to dispatch (s)"),
    ("处置用时（秒）", "time to handle (s)"),
    ("按时处置", "on time"),
    ("超时", "overdue"),
    ("自行消除", "self-resolved"),
    ("重办", "reopened"),
];

enum Cell<'a> {
    Text(&'a str),
    Number(Option<f64>),
    Flag(bool),
}

/// The report's word for an id the case list holds (levels, shifts, review outcomes).
fn word(lang: Lang, id: &str) -> &str {
    let zh = match id {
        "simple" => "简单",
        "general" => "一般",
        "difficult" => "疑难",
        "day" => "白班",
        "night" => "夜班",
        "confirmed" => "已确认",
        "rejected" => "驳回",
        "awaiting_review" => "待审核",
        "unattended" => "未经审核",
        _ => return id,
    };
    if lang == Lang::Zh { zh } else { id }
}

fn case_cells(c: &CaseLine, lang: Lang) -> [Cell<'_>; 18] {
    [
        Cell::Text(&c.id),
        Cell::Text(&c.detected_at),
        Cell::Text(&c.unit),
        Cell::Text(&c.group),
        Cell::Text(&c.camera),
        Cell::Text(&c.scenario),
        Cell::Text(&c.department),
        Cell::Text(word(lang, &c.level)),
        Cell::Text(word(lang, &c.shift)),
        Cell::Text(&c.phase),
        Cell::Text(word(lang, &c.review)),
        Cell::Flag(c.reported_by_staff),
        Cell::Number(c.dispatch_s),
        Cell::Number(c.handle_s),
        Cell::Flag(c.on_time),
        Cell::Flag(c.overdue),
        Cell::Flag(c.self_resolved),
        Cell::Flag(c.reopened),
    ]
}

fn title(report: &Report, lang: Lang) -> String {
    format!(
        "{} {} – {}",
        text(
            lang,
            "一网统管智能发现统计通报",
            "gridwatch statistics report"
        ),
        report.from,
        report.to
    )
}

// ---- XLSX ----

/// The report as an XLSX workbook: summary, one sheet per breakdown, the daily trend, units ×
/// scenarios, and every case of the period.
pub fn xlsx(report: &Report, cases: &[CaseLine], lang: Lang) -> Result<Vec<u8>, RenderError> {
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let percent = Format::new().set_num_format("0.0%");
    summary_sheet(
        book.add_worksheet(),
        report,
        cases.len(),
        lang,
        &bold,
        &percent,
    )?;
    for b in &report.breakdowns {
        let sheet = book.add_worksheet();
        sheet.set_name(dimension_label(b.dimension, lang))?;
        rows_sheet(sheet, &b.rows, Some(&report.total), lang, &bold, &percent)?;
    }
    let trend = book.add_worksheet();
    trend.set_name(text(lang, "每日趋势", "daily trend"))?;
    rows_sheet(trend, &report.trend, None, lang, &bold, &percent)?;
    heat_sheet(book.add_worksheet(), report, lang, &bold)?;
    camera_sheet(book.add_worksheet(), report, lang, &bold, &percent)?;
    let list = book.add_worksheet_with_constant_memory()?;
    list.set_name(text(lang, "案件清单", "cases"))?;
    case_sheet(list, cases, lang, &bold)?;
    Ok(book.save_to_buffer()?)
}

fn write_value(
    sheet: &mut Worksheet,
    r: u32,
    c: u16,
    v: Value,
    pct: &Format,
) -> Result<(), XlsxError> {
    match v {
        Value::Count(n) => sheet.write_number(r, c, n as f64).map(|_| ()),
        Value::Rate(Some(x)) => sheet.write_number_with_format(r, c, x, pct).map(|_| ()),
        Value::Seconds(Some(x)) => sheet.write_number(r, c, x).map(|_| ()),
        Value::Rate(None) | Value::Seconds(None) => Ok(()),
    }
}

fn summary_sheet(
    sheet: &mut Worksheet,
    report: &Report,
    listed: usize,
    lang: Lang,
    bold: &Format,
    pct: &Format,
) -> Result<(), RenderError> {
    sheet.set_name(text(lang, "汇总", "summary"))?;
    sheet.write_string_with_format(0, 0, title(report, lang), bold)?;
    sheet.write_string(1, 0, text(lang, "统计时段", "period"))?;
    sheet.write_string(1, 1, format!("{} – {}", report.from, report.to))?;
    sheet.write_string(2, 0, text(lang, "生成时间", "generated at"))?;
    sheet.write_string(2, 1, &report.generated_at)?;
    for (i, col) in COLUMNS.iter().enumerate() {
        let r = 4 + i as u32;
        sheet.write_string(r, 0, col.label(lang))?;
        write_value(sheet, r, 1, (col.value)(&report.total), pct)?;
    }
    // The case list holds every case unless there are more than a sheet can take.
    let r = 5 + COLUMNS.len() as u32;
    sheet.write_string(r, 0, text(lang, "案件清单条数", "cases listed"))?;
    sheet.write_number(r, 1, listed as f64)?;
    sheet.set_column_width(0, 28)?;
    sheet.set_column_width(1, 34)?;
    Ok(())
}

fn rows_sheet(
    sheet: &mut Worksheet,
    rows: &[Row],
    total: Option<&Figures>,
    lang: Lang,
    bold: &Format,
    pct: &Format,
) -> Result<(), RenderError> {
    sheet.write_string_with_format(0, 0, text(lang, "名称", "name"), bold)?;
    sheet.write_string_with_format(0, 1, text(lang, "编号", "id"), bold)?;
    for (i, col) in COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(0, 2 + i as u16, col.label(lang), bold)?;
    }
    let mut r = 1;
    for row in rows {
        sheet.write_string(r, 0, &row.name)?;
        sheet.write_string(r, 1, &row.key)?;
        for (i, col) in COLUMNS.iter().enumerate() {
            write_value(sheet, r, 2 + i as u16, (col.value)(&row.figures), pct)?;
        }
        r += 1;
    }
    if let Some(total) = total {
        sheet.write_string_with_format(r, 0, text(lang, "合计", "total"), bold)?;
        for (i, col) in COLUMNS.iter().enumerate() {
            write_value(sheet, r, 2 + i as u16, (col.value)(total), pct)?;
        }
    }
    sheet.set_column_width(0, 24)?;
    sheet.set_freeze_panes(1, 1)?;
    Ok(())
}

fn heat_sheet(
    sheet: &mut Worksheet,
    report: &Report,
    lang: Lang,
    bold: &Format,
) -> Result<(), RenderError> {
    sheet.set_name(text(lang, "单元×场景", "units x scenarios"))?;
    let heat = &report.heat;
    sheet.write_string_with_format(
        0,
        0,
        text(lang, "管理单元 \\ 场景", "unit \\ scenario"),
        bold,
    )?;
    for (j, s) in heat.scenarios.iter().enumerate() {
        sheet.write_string_with_format(0, 1 + j as u16, &s.1, bold)?;
    }
    for (i, u) in heat.units.iter().enumerate() {
        sheet.write_string(1 + i as u32, 0, &u.1)?;
        for j in 0..heat.scenarios.len() {
            sheet.write_number(1 + i as u32, 1 + j as u16, 0.0)?;
        }
    }
    for &(u, s, n) in &heat.cells {
        sheet.write_number(1 + u as u32, 1 + s as u16, n as f64)?;
    }
    sheet.set_column_width(0, 24)?;
    Ok(())
}

/// The camera health table's headings.
const CAMERA_COLUMNS: &[(&str, &str)] = &[
    ("摄像头", "camera"),
    ("编号", "id"),
    ("在线率", "uptime"),
    ("应在线采样（分钟）", "samples while due (min)"),
    ("在线采样", "streaming samples"),
    ("卡顿次数", "stalls"),
    ("重连次数", "reconnects"),
];

fn camera_sheet(
    sheet: &mut Worksheet,
    report: &Report,
    lang: Lang,
    bold: &Format,
    pct: &Format,
) -> Result<(), RenderError> {
    sheet.set_name(text(lang, "摄像头在线", "camera health"))?;
    for (i, (zh, en)) in CAMERA_COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(0, i as u16, text(lang, zh, en), bold)?;
    }
    for (r, c) in report.cameras.iter().enumerate() {
        let r = 1 + r as u32;
        sheet.write_string(r, 0, &c.name)?;
        sheet.write_string(r, 1, &c.camera)?;
        write_value(sheet, r, 2, Value::Rate(c.uptime), pct)?;
        sheet.write_number(r, 3, c.samples as f64)?;
        sheet.write_number(r, 4, c.streaming as f64)?;
        sheet.write_number(r, 5, c.stalls as f64)?;
        sheet.write_number(r, 6, c.reconnects as f64)?;
    }
    sheet.set_column_width(0, 24)?;
    Ok(())
}

fn case_sheet(
    sheet: &mut Worksheet,
    cases: &[CaseLine],
    lang: Lang,
    bold: &Format,
) -> Result<(), RenderError> {
    for (i, (zh, en)) in CASE_COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(0, i as u16, text(lang, zh, en), bold)?;
    }
    for (r, case) in cases.iter().enumerate() {
        let r = 1 + r as u32;
        for (c, cell) in case_cells(case, lang).into_iter().enumerate() {
            let c = c as u16;
            match cell {
                Cell::Text(s) => sheet.write_string(r, c, s).map(|_| ())?,
                Cell::Number(Some(x)) => sheet.write_number(r, c, x).map(|_| ())?,
                Cell::Number(None) => {}
                Cell::Flag(b) => sheet
                    .write_number(r, c, f64::from(u8::from(b)))
                    .map(|_| ())?,
            }
        }
    }
    Ok(())
}

// ---- CSV ----

/// The figures as one CSV table: the total, every breakdown and the trend, one row per group
/// with the dimension it belongs to.
pub fn csv_figures(report: &Report, lang: Lang, out: impl Write) -> Result<(), RenderError> {
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["dimension", "key", text(lang, "名称", "name")];
    header.extend(COLUMNS.iter().map(|c| c.label(lang)));
    w.write_record(&header)?;
    let total = Row {
        key: String::new(),
        name: text(lang, "合计", "total").into(),
        figures: report.total.clone(),
    };
    let groups = report
        .breakdowns
        .iter()
        .flat_map(|b| b.rows.iter().map(move |r| (b.dimension.as_str(), r)))
        .chain(report.trend.iter().map(|r| ("trend_day", r)));
    for (dimension, row) in std::iter::once(("total", &total)).chain(groups) {
        let mut record = vec![dimension.to_owned(), row.key.clone(), row.name.clone()];
        record.extend(COLUMNS.iter().map(|c| plain((c.value)(&row.figures))));
        w.write_record(&record)?;
    }
    w.flush()?;
    Ok(())
}

/// The case list as CSV.
pub fn csv_cases(cases: &[CaseLine], lang: Lang, out: impl Write) -> Result<(), RenderError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CASE_COLUMNS.iter().map(|(zh, en)| text(lang, zh, en)))?;
    for case in cases {
        w.write_record(case_cells(case, lang).iter().map(cell_text))?;
    }
    w.flush()?;
    Ok(())
}

fn plain(v: Value) -> String {
    match v {
        Value::Count(n) => n.to_string(),
        Value::Rate(Some(x)) | Value::Seconds(Some(x)) => format!("{x:.4}"),
        Value::Rate(None) | Value::Seconds(None) => String::new(),
    }
}

fn cell_text(c: &Cell<'_>) -> String {
    match c {
        Cell::Text(s) => (*s).to_owned(),
        Cell::Number(Some(x)) => format!("{x:.3}"),
        Cell::Number(None) => String::new(),
        Cell::Flag(b) => u8::from(*b).to_string(),
    }
}

// ---- JSON ----

/// The report and its case list as one JSON document.
pub fn json(report: &Report, cases: &[CaseLine], out: impl Write) -> Result<(), RenderError> {
    #[derive(Serialize)]
    struct Doc<'a> {
        #[serde(flatten)]
        report: &'a Report,
        cases: &'a [CaseLine],
    }
    serde_json::to_writer_pretty(out, &Doc { report, cases })?;
    Ok(())
}

// ---- HTML ----

/// A printable HTML page (no script, A4 landscape): the figures, each breakdown, the trend,
/// and the first [`HTML_CASE_LINES`] cases.
pub fn html(report: &Report, cases: &[CaseLine], lang: Lang) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let t = esc(&title(report, lang));
    h.push_str(&format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{HTML_STYLE}</style></head><body><h1>{t}</h1>",
        if lang == Lang::Zh { "zh-CN" } else { "en" }
    ));
    h.push_str(&format!(
        "<p>{}: {} · {}</p>",
        text(lang, "生成时间", "generated at"),
        esc(&report.generated_at),
        text(
            lang,
            "数据来自已存储的案件、审核、派遣与处置记录",
            "from the stored cases, reviews, deliveries and handling"
        )
    ));
    h.push_str("<h2>");
    h.push_str(text(lang, "汇总", "summary"));
    h.push_str("</h2><table class=\"summary\">");
    for col in COLUMNS {
        h.push_str(&format!(
            "<tr><th>{}</th><td data-figure=\"{}\">{}</td></tr>",
            col.label(lang),
            col.key,
            shown((col.value)(&report.total))
        ));
    }
    h.push_str("</table>");
    for b in &report.breakdowns {
        h.push_str(&format!("<h2>{}</h2>", dimension_label(b.dimension, lang)));
        rows_table(&mut h, &b.rows, lang);
    }
    h.push_str(&format!(
        "<h2>{}</h2>",
        text(lang, "每日趋势", "daily trend")
    ));
    rows_table(&mut h, &report.trend, lang);
    camera_table(&mut h, report, lang);
    cases_table(&mut h, cases, lang);
    h.push_str("</body></html>");
    h
}

const HTML_STYLE: &str = "body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em;page-break-after:avoid}
table{border-collapse:collapse;font-size:.8em;margin:.4em 0}th,td{border:1px solid #999;padding:2px 6px}
td.n{text-align:right}table.summary th{text-align:left}
@page{size:A4 landscape;margin:12mm}@media print{body{margin:0}tr{page-break-inside:avoid}}";

fn rows_table(h: &mut String, rows: &[Row], lang: Lang) {
    h.push_str("<table><tr><th>");
    h.push_str(text(lang, "名称", "name"));
    h.push_str("</th>");
    for col in COLUMNS {
        h.push_str(&format!("<th>{}</th>", col.label(lang)));
    }
    h.push_str("</tr>");
    for row in rows {
        h.push_str(&format!(
            "<tr data-key=\"{}\"><td>{}</td>",
            esc(&row.key),
            esc(&row.name)
        ));
        for col in COLUMNS {
            h.push_str(&format!(
                "<td class=\"n\">{}</td>",
                shown((col.value)(&row.figures))
            ));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn camera_table(h: &mut String, report: &Report, lang: Lang) {
    h.push_str(&format!(
        "<h2>{}</h2><table><tr>",
        text(lang, "摄像头在线", "camera health")
    ));
    for (zh, en) in CAMERA_COLUMNS {
        h.push_str(&format!("<th>{}</th>", text(lang, zh, en)));
    }
    h.push_str("</tr>");
    for c in &report.cameras {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&c.name),
            esc(&c.camera),
            shown(Value::Rate(c.uptime)),
            c.samples,
            c.streaming,
            c.stalls,
            c.reconnects
        ));
    }
    h.push_str("</table>");
}

fn cases_table(h: &mut String, cases: &[CaseLine], lang: Lang) {
    h.push_str(&format!("<h2>{}</h2>", text(lang, "案件清单", "cases")));
    if cases.len() > HTML_CASE_LINES {
        h.push_str(&format!(
            "<p>{} {HTML_CASE_LINES} / {}</p>",
            text(lang, "仅列出前", "listing the first"),
            cases.len()
        ));
    }
    h.push_str("<table><tr>");
    for (zh, en) in CASE_COLUMNS {
        h.push_str(&format!("<th>{}</th>", text(lang, zh, en)));
    }
    h.push_str("</tr>");
    for case in cases.iter().take(HTML_CASE_LINES) {
        h.push_str("<tr>");
        for cell in case_cells(case, lang) {
            h.push_str(&format!("<td>{}</td>", esc(&cell_text(&cell))));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn shown(v: Value) -> String {
    match v {
        Value::Count(n) => n.to_string(),
        Value::Rate(Some(x)) => format!("{:.1}%", x * 100.0),
        Value::Seconds(Some(x)) => format!("{x:.0}"),
        Value::Rate(None) | Value::Seconds(None) => "–".into(),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The formats a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    Xlsx,
    Html,
    Csv,
    Json,
}

impl ReportFormat {
    pub fn parse(s: &str) -> Option<ReportFormat> {
        match s {
            "xlsx" => Some(ReportFormat::Xlsx),
            "html" => Some(ReportFormat::Html),
            "csv" => Some(ReportFormat::Csv),
            "json" => Some(ReportFormat::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Xlsx => "xlsx",
            ReportFormat::Html => "html",
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            ReportFormat::Html => "text/html; charset=utf-8",
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Json => "application/json",
        }
    }
}

/// The report in `format` (CSV: the figures; [`csv_cases`] writes its case list).
pub fn to_bytes(
    format: ReportFormat,
    report: &Report,
    cases: &[CaseLine],
    lang: Lang,
) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    match format {
        ReportFormat::Xlsx => return xlsx(report, cases, lang),
        ReportFormat::Html => out = html(report, cases, lang).into_bytes(),
        ReportFormat::Csv => csv_figures(report, lang, &mut out)?,
        ReportFormat::Json => json(report, cases, &mut out)?,
    }
    Ok(out)
}
