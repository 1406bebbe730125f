//! The `gridwatch` command line: a thin layer over the library's stages.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use gridwatch::config::{Config, ConfigError};
use gridwatch::run::{RunOptions, StopHandle};

#[derive(Parser)]
#[command(
    name = "gridwatch",
    version,
    about = "Automatic discovery of street problems from city camera feeds"
)]
struct Cli {
    /// Log format on stderr; levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: cameras → detection → scenarios → cases → dispatch.
    Run {
        /// Key-area configuration (TOML); without it, the embedded default (sample streams).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Seconds to keep delivering after the sources end.
        #[arg(long, default_value_t = gridwatch::run::DEFAULT_DRAIN_TIMEOUT_SECONDS, value_parser = gridwatch::config::seconds_in(MAX_DRAIN_TIMEOUT_SECONDS))]
        drain_timeout_seconds: f64,
        /// Cluster mode (`[cluster]`): this node's name (else GRIDWATCH_NODE_ID, the config's
        /// `node_id`, the host name).
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Validate a configuration and report every problem with file, line and field.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the configured model on still images or clips: one JSON object per analysed frame on
    /// stdout (detections with boxes normalised to 0..1), annotated JPEGs with --out.
    Detect {
        /// Images (.jpg, .jpeg, .png) or clips (anything GStreamer decodes).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Folder for the annotated JPEGs (created).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Frames per second analysed from a clip.
        #[arg(long, default_value_t = 1.0, value_parser = gridwatch::area::profile::parse_analysis_fps)]
        fps: f64,
        /// At most this many frames per clip.
        #[arg(long, default_value_t = 100)]
        max_frames: usize,
        /// Draw this camera's zones and say which of them each detection stands in.
        #[arg(long)]
        camera: Option<String>,
    },
    /// Train a zone-state classifier from a labels file (clip, zone polygon, state, labelled
    /// times): the detector's feature map pooled over the zone, logistic regression, evaluated
    /// on the latest labels; the card goes to --out. Prints the numbers of every pooling.
    Learn {
        /// A labels file (clip, zone, state, labelled times).
        #[arg(long, conflicts_with = "camera")]
        labels: Option<PathBuf>,
        /// Instead of a file: the labels staff set on the console's wall for this camera's
        /// `--zone` and `--state`.
        #[arg(long, requires_all = ["zone", "state"])]
        camera: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// Folder for the classifier card (created); default: the configuration's
        /// `[states] cards_dir`, where `run` reads cards at start and on SIGHUP.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// frame_mean, zone_mean, zone_cells_2x2 or zone_mean_max.
        #[arg(long, default_value = "zone_cells_2x2", value_parser = parse_pooling)]
        pooling: gridwatch::states::Pooling,
        /// Share of the labels, earliest first, that trains; the rest is held out.
        #[arg(long, default_value_t = gridwatch::states::train::DEFAULT_TRAIN_FRACTION)]
        train_fraction: f64,
        /// At most this many of the earliest labels train.
        #[arg(long)]
        max_train_labels: Option<usize>,
    },
    /// Serve recorded files as looped live RTSP cameras (default: the sample streams).
    ServeRtsp {
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        #[arg(long, default_value_t = 8554)]
        port: u16,
        /// H.264/H.265 files (MP4 etc.); each is served at rtsp://ADDRESS:PORT/<file stem>.
        files: Vec<PathBuf>,
    },
    /// Inspect the case outbox; list, retry or purge dead letters.
    Outbox {
        /// The configuration whose `[cases] outbox` to open (default: the embedded one).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// The review console's accounts and its training-data export.
    Review {
        /// The configuration whose `[cases] outbox` holds the review tables (default: the embedded one).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: ReviewAction,
    },
    /// Statistics of the stored cases over a period (通报): discovered, reviewed, rejected,
    /// dispatched, handled within 103060, by unit, department, scenario, shift, … as XLSX,
    /// printable HTML, CSV (the figures; the case list beside it) or JSON.
    Report {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read this outbox database instead of the configuration's `[cases] outbox`.
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// The local day, week (Monday to Sunday) or month holding --date.
        #[arg(long, value_enum, conflicts_with_all = ["from", "to"])]
        period: Option<PeriodArg>,
        /// The date of --period (default: today in the key area).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        date: Option<String>,
        /// Start of a custom period: a local date or date and time (2026-11-01T08:00).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End of a custom period: a date counts through that day; a date and time is exclusive.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Breakdowns: unit, department, scenario, group, camera, shift, phase, level, day.
        #[arg(long, default_value = gridwatch::stats::DEFAULT_GROUP_BY)]
        group_by: String,
        #[arg(long, value_enum, default_value_t = FormatArg::Xlsx)]
        format: FormatArg,
        /// The file to write (CSV: the case list goes beside it, `<name>-cases.csv`); default:
        /// stdout, except for XLSX, which needs a file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// zh (default) or en.
        #[arg(long, default_value = "zh")]
        lang: String,
    },
    /// Run the reference dispatch receiver.
    DispatchServer {
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: String,
        #[arg(long, default_value = "var/receiver.sqlite")]
        database: PathBuf,
        /// Require this bearer token on every API request.
        #[arg(long, env = "GRIDWATCH_RECEIVER_TOKEN")]
        token: Option<String>,
        /// Print the OpenAPI description of the API (and of the case) and exit.
        #[arg(long)]
        openapi: bool,
        /// Push every status change to this URL (gridwatch's
        /// `/api/v1/platform/<target>/status`), signed with `--webhook-secret`.
        #[arg(long, requires = "webhook_secret")]
        webhook_url: Option<String>,
        /// The shared secret of the webhook's HMAC-SHA256 signature.
        #[arg(long, env = "GRIDWATCH_WEBHOOK_SECRET", requires = "webhook_url")]
        webhook_secret: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PeriodArg {
    Day,
    Week,
    Month,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Xlsx,
    Html,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Depth, oldest undelivered age, retries and dead letters (JSON).
    Status,
    /// Events whose case could not be rendered, newest first, with the reason (JSON).
    Unrendered {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Cases in the outbox, oldest first, with each target's delivery state.
    List {
        #[arg(long, value_enum, default_value_t = OutboxState::Dead)]
        state: OutboxState,
        /// Only cases routed to this dispatch target, by the state of their delivery there
        /// (`pending`, `delivered`, `dead`; held cases are `held`).
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Queue dead letters for delivery again (a running `gridwatch run` picks them up).
    Retry {
        /// Case ids; with `--all`, every dead letter.
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only the dead letters of this dispatch target (default: every target's).
        #[arg(long)]
        target: Option<String>,
    },
    /// Hand undelivered cases to another dispatch target: those of a target removed or renamed
    /// in the configuration (`--from`), or those no target took (`--unrouted`). A case that
    /// already has a delivery to `--to` keeps it.
    Retarget {
        #[arg(
            long,
            required_unless_present = "unrouted",
            conflicts_with = "unrouted"
        )]
        from: Option<String>,
        #[arg(long)]
        unrouted: bool,
        #[arg(long)]
        to: String,
    },
    /// Delete dead letters for good; a case with no delivery left goes with them.
    Purge {
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only the dead letters of this dispatch target (default: every target's).
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReviewAction {
    /// Create an account, or set an existing one's password and role. The password comes from
    /// GRIDWATCH_REVIEW_PASSWORD, else from the first line of standard input.
    AddUser {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = ReviewRole::Reviewer)]
        role: ReviewRole,
        /// Also print a new API (bearer) token for the account.
        #[arg(long)]
        token: bool,
    },
    /// Write the reviewed frames as a YOLO dataset (images/, labels/, data.yaml) into a folder.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReviewRole {
    Reviewer,
    Admin,
}

fn review_command(config: Option<&PathBuf>, action: ReviewAction) -> anyhow::Result<ExitCode> {
    use gridwatch::review::auth::Role;
    let config = load(config)?;
    let path = config.resolve(&config.cases.outbox);
    let store = gridwatch::review::store::ReviewStore::open(&path)?;
    match action {
        ReviewAction::AddUser { name, role, token } => {
            let password = match std::env::var("GRIDWATCH_REVIEW_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    eprintln!("password for {name} (one line):");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let role = match role {
                ReviewRole::Reviewer => Role::Reviewer,
                ReviewRole::Admin => Role::Admin,
            };
            let user = store.set_user(&name, role, &password)?;
            store.audit(
                "cli",
                "set_user",
                None,
                Some(&format!("{} ({})", user.name, role.as_str())),
            )?;
            println!(
                "account {} ({}) saved in {}",
                user.name,
                role.as_str(),
                path.display()
            );
            if token {
                println!("API token (shown once): {}", store.new_api_token(&user)?);
            }
        }
        ReviewAction::Export { out } => {
            let dataset = gridwatch::review::export::build(&store, &config.catalog)?;
            dataset.write_to(&out)?;
            store.audit(
                "cli",
                "export",
                None,
                Some(&format!(
                    "{} positives, {} hard negatives",
                    dataset.positives, dataset.negatives
                )),
            )?;
            println!(
                "{} positives, {} hard negatives written to {}",
                dataset.positives,
                dataset.negatives,
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, ValueEnum)]
enum OutboxState {
    Pending,
    Delivered,
    Dead,
    /// Held for the review console.
    AwaitingReview,
    /// Rejected by a reviewer (false positives).
    Rejected,
    /// Taken by no dispatch target (a gap in the routes).
    Unrouted,
    All,
}

fn selection(ids: Vec<String>, all: bool) -> anyhow::Result<gridwatch::cases::outbox::Selection> {
    use gridwatch::cases::outbox::Selection;
    match (all, ids.is_empty()) {
        (true, _) => Ok(Selection::All),
        (false, false) => Ok(Selection::Ids(ids)),
        (false, true) => anyhow::bail!("name the case ids, or pass --all"),
    }
}

fn outbox_command(config: Option<&PathBuf>, action: OutboxAction) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    let path = config.resolve(&config.cases.outbox);
    let mut outbox = gridwatch::cases::outbox::Outbox::open(&path)?;
    match action {
        OutboxAction::Status => {
            println!("{}", serde_json::to_string_pretty(&outbox.stats()?)?);
        }
        OutboxAction::Unrendered { limit } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&outbox.unrendered(limit)?)?
            );
        }
        OutboxAction::List {
            state,
            target,
            limit,
            json,
        } => {
            let state = match state {
                OutboxState::Pending => Some("pending"),
                OutboxState::Delivered => Some("delivered"),
                OutboxState::Dead => Some("dead"),
                OutboxState::AwaitingReview => Some("awaiting_review"),
                OutboxState::Rejected => Some("rejected"),
                OutboxState::Unrouted => Some("unrouted"),
                OutboxState::All => None,
            };
            let entries = match &target {
                // A held delivery is what the case-level `awaiting_review` is per target.
                Some(t) => outbox.list_for(
                    t,
                    state.map(|s| if s == "awaiting_review" { "held" } else { s }),
                    limit,
                )?,
                None => outbox.list(state, limit)?,
            };
            if json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!(
                    "{:<36}  {:<9}  {:>8}  {:<25}  {:<16}  {:<30}  last error",
                    "id", "state", "attempts", "stored at", "camera", "targets"
                );
                for e in &entries {
                    let targets = e
                        .deliveries
                        .iter()
                        .map(|d| format!("{}:{}", d.target, d.state))
                        .collect::<Vec<_>>()
                        .join(" ");
                    println!(
                        "{:<36}  {:<9}  {:>8}  {:<25}  {:<16}  {:<30}  {}",
                        e.id,
                        e.state,
                        e.attempts,
                        e.created_at,
                        e.camera,
                        targets,
                        e.last_error.as_deref().unwrap_or("")
                    );
                }
                eprintln!("{} case(s) in {}", entries.len(), path.display());
            }
        }
        OutboxAction::Retry { ids, all, target } => {
            let n = outbox.retry_dead_at(&selection(ids, all)?, target.as_deref())?;
            println!("{n} dead letter(s) queued for delivery again");
        }
        OutboxAction::Retarget { from, to, .. } => {
            let configured: Vec<String> = config
                .dispatch
                .per_target()
                .iter()
                .map(|t| t.primary_id().to_owned())
                .collect();
            if !configured.contains(&to) {
                // Handing cases to a name nothing delivers to would only move the problem.
                eprintln!(
                    "`{to}` is not a dispatch target of {} (configured: {})",
                    config.source_name,
                    configured.join(", ")
                );
                return Ok(ExitCode::from(2));
            }
            let n = match &from {
                Some(from) => outbox.retarget(from, &to)?,
                // clap requires `--from` unless `--unrouted`.
                None => outbox.route_unrouted(&to)?,
            };
            println!("{n} case(s) now go to {to} (a running `gridwatch run` delivers them)");
        }
        OutboxAction::Purge { ids, all, target } => {
            let n = outbox.purge_dead_at(&selection(ids, all)?, target.as_deref())?;
            println!("{n} dead letter(s) purged");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--drain-timeout-seconds` is added to the clock at shutdown: at most a day.
const MAX_DRAIN_TIMEOUT_SECONDS: f64 = 86_400.0;
fn parse_pooling(s: &str) -> Result<gridwatch::states::Pooling, String> {
    gridwatch::states::Pooling::ALL
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| {
            format!("unknown pooling `{s}`: frame_mean, zone_mean, zone_cells_2x2 or zone_mean_max")
        })
}

/// `gridwatch report`: the figures of the stored cases, written where asked.
fn report_command(
    config: Option<&PathBuf>,
    outbox: Option<PathBuf>,
    params: &gridwatch::stats::ReportParams,
    format: gridwatch::stats::render::ReportFormat,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use gridwatch::stats::{self, Context as StatsContext, render};
    use std::io::Write;
    let config = load(config)?;
    let path = outbox.unwrap_or_else(|| config.resolve(&config.cases.outbox));
    let ctx = StatsContext::new(
        &config.area,
        &config.cases.deadlines,
        time::OffsetDateTime::now_utc(),
    );
    let query = params.query(&ctx)?;
    if format == render::ReportFormat::Xlsx && out.is_none() {
        anyhow::bail!("an XLSX report needs --out FILE");
    }
    let started = std::time::Instant::now();
    let conn = stats::open(&path)?;
    let (report, cases) = stats::report_with_cases(&conn, &query, &ctx)?;
    let bytes = render::to_bytes(format, &report, &cases, query.lang)?;
    match &out {
        Some(file) => {
            std::fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            if format == render::ReportFormat::Csv {
                let list = file.with_file_name(format!(
                    "{}-cases.csv",
                    file.file_stem().unwrap_or_default().to_string_lossy()
                ));
                let f = std::fs::File::create(&list)
                    .with_context(|| format!("writing {}", list.display()))?;
                render::csv_cases(&cases, query.lang, std::io::BufWriter::new(f))?;
            }
            eprintln!(
                "{}: {} cases from {} to {} in {:.2} s",
                file.display(),
                report.total.discovered,
                report.from,
                report.to,
                started.elapsed().as_secs_f64()
            );
        }
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn load(config: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match config {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    }
}

/// The repository's sample clips, for `serve-rtsp` without arguments.
fn default_sample_streams() -> anyhow::Result<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-streams");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
        .collect();
    files.sort();
    Ok(files)
}

fn main() -> ExitCode {
    bound_the_heap();
    let cli = Cli::parse();
    gridwatch::telemetry::init_logging(matches!(cli.log_format, LogFormat::Json));
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Pictures at a camera's own resolution (case evidence, staff reports) are megabytes each and
/// are allocated on GStreamer's short-lived threads; with glibc's defaults each thread's arena
/// kept what they freed, and a node's memory grew by about 2 MiB per case without end
/// (BENCHMARKS.md, "Node memory over time"). Allocations from 256 KiB up are mapped and given
/// back when freed, and the arenas are few.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_the_heap() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 256 * 1024;
    const ARENAS_MAX: libc::c_int = 4;
    // SAFETY: mallopt only changes allocator parameters; called first, before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS_MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_the_heap() {}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Report {
            config,
            outbox,
            period,
            date,
            from,
            to,
            group_by,
            format,
            out,
            lang,
        } => {
            use gridwatch::stats::{PeriodKind, ReportParams, render::ReportFormat};
            let params = ReportParams {
                period: period.map(|p| match p {
                    PeriodArg::Day => PeriodKind::Day,
                    PeriodArg::Week => PeriodKind::Week,
                    PeriodArg::Month => PeriodKind::Month,
                }),
                date,
                from,
                to,
                group_by: Some(group_by),
                lang: Some(lang),
            };
            let format = match format {
                FormatArg::Xlsx => ReportFormat::Xlsx,
                FormatArg::Html => ReportFormat::Html,
                FormatArg::Csv => ReportFormat::Csv,
                FormatArg::Json => ReportFormat::Json,
            };
            report_command(config.as_ref(), outbox, &params, format, out)
        }
        Command::Check { config } => match load(config.as_ref()) {
            Ok(c) => {
                gridwatch::run::check_runtime(&c).context("model check")?;
                for line in c.check_report() {
                    println!("{line}");
                }
                println!(
                    "{}: ok ({} units, {} groups, {} cameras)",
                    c.source_name,
                    c.area.units.len(),
                    c.area.groups.len(),
                    c.area.cameras.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Run {
            config,
            drain_timeout_seconds,
            node_id,
        } => {
            let config_path = config.clone();
            let config = load(config.as_ref())?;
            gridwatch::telemetry::prometheus();
            let mut options = RunOptions {
                // Range-checked by the parser; converted without a panic all the same.
                drain_timeout: std::time::Duration::try_from_secs_f64(drain_timeout_seconds)
                    .with_context(|| format!("--drain-timeout-seconds {drain_timeout_seconds}"))?,
                config_path: config_path.clone(),
                node_id,
                ..RunOptions::default()
            };
            options.trainer = Some(std::sync::Arc::new(gridwatch::learn::ConsoleTrainer {
                config: std::sync::Arc::new(config.clone()),
                config_path,
                reload: options.reload.clone(),
                train: gridwatch::states::TrainOptions::default(),
            }));
            let cameras = options.cameras.clone();
            let summary = gridwatch::run::run(config, options, StopHandle::default())?;
            for c in cameras.snapshot() {
                let share = if c.frames == 0 {
                    0.0
                } else {
                    100.0 * c.skipped_no_motion as f64 / c.frames as f64
                };
                println!(
                    "camera {}: {} frames, {} skipped by the motion gate ({share:.0} %), {} dropped, {} reconnects, state {}",
                    c.id,
                    c.frames,
                    c.skipped_no_motion,
                    c.dropped,
                    c.reconnects,
                    c.state.as_str()
                );
            }
            println!(
                "cases stored: {}, delivered: {}, pending in outbox: {}, dead letters: {}, awaiting review: {}",
                summary.cases_stored,
                summary.outbox.delivered,
                summary.outbox.pending,
                summary.outbox.dead,
                summary.outbox.awaiting_review
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Detect {
            inputs,
            config,
            out,
            fps,
            max_frames,
            camera,
        } => {
            let config = load(config.as_ref())?;
            let options = gridwatch::detect::DetectOptions {
                inputs,
                out_dir: out,
                fps,
                max_frames,
                camera,
            };
            let mut failed = None;
            let n = gridwatch::detect::run(&config, &options, |r| {
                if failed.is_none() {
                    failed = serde_json::to_string(r)
                        .map(|line| println!("{line}"))
                        .err();
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            eprintln!("{n} frame(s) analysed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Learn {
            labels,
            camera,
            zone,
            state,
            out,
            config,
            pooling,
            train_fraction,
            max_train_labels,
        } => {
            let config = load(config.as_ref())?;
            let out_dir = out.or_else(|| config.states_dir()).context(
                "no --out and no [states] cards_dir in the configuration: where should the card go?",
            )?;
            let source = match (labels, camera, zone, state) {
                (Some(file), ..) => gridwatch::learn::LabelSource::File(file),
                (None, Some(camera), Some(zone), Some(state)) => {
                    gridwatch::learn::LabelSource::Console {
                        camera,
                        zone,
                        state,
                    }
                }
                _ => anyhow::bail!(
                    "give --labels FILE, or --camera, --zone and --state for the labels set on the console"
                ),
            };
            let options = gridwatch::learn::LearnOptions {
                source,
                out_dir,
                pooling,
                train: gridwatch::states::TrainOptions {
                    train_fraction,
                    max_train_labels,
                    ..Default::default()
                },
                decode_fps: gridwatch::learn::DEFAULT_DECODE_FPS,
            };
            let learned = gridwatch::learn::run(&config, &options)?;
            for line in gridwatch::learn::report(&learned) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ServeRtsp {
            address,
            port,
            files,
        } => {
            let files = if files.is_empty() {
                default_sample_streams()?
            } else {
                files
            };
            let server = gridwatch::ingest::rtsp_server::serve(&files, &address, port)?;
            for m in server.mounts() {
                println!("{} ({}) -> {}", server.url(m), m.codec, m.path.display());
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            drop(server);
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { config, action } => outbox_command(config.as_ref(), action),
        Command::Review { config, action } => review_command(config.as_ref(), action),
        Command::DispatchServer {
            listen,
            database,
            token,
            openapi,
            webhook_url,
            webhook_secret,
        } => {
            if openapi {
                println!("{}", gridwatch_dispatch_ref::openapi().to_pretty_json()?);
                return Ok(ExitCode::SUCCESS);
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let webhook = webhook_url
                    .zip(webhook_secret)
                    .map(|(url, secret)| gridwatch_dispatch_ref::Webhook { url, secret });
                let receiver =
                    gridwatch_dispatch_ref::Receiver::bind_with(&listen, &database, token, webhook).await?;
                let addr = receiver.local_addr();
                tracing::info!(url = %format!("http://{addr}/"), api = %format!("http://{addr}{}", gridwatch_dispatch_ref::CASES_PATH), "dispatch receiver listening");
                receiver
                    .serve(async {
                        // Ctrl-C or SIGTERM: finish the requests in flight, then exit.
                        #[cfg(unix)]
                        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                            tokio::select! {
                                _ = tokio::signal::ctrl_c() => {}
                                _ = term.recv() => {}
                            }
                            return;
                        }
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
