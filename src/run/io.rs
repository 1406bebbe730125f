//! The I/O side of a run, on one small tokio runtime: the embedded dispatch receiver, the status
//! endpoint, the review console, one delivery task per dispatch target, and the signals. The
//! frame path never runs here; this side only serves HTTP and drains the outbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{ReloadHandle, RunError, RunOptions, StopHandle};
use crate::cases::outbox::{Outbox, OutboxCounts};
use crate::cases::tiers::Suppressions;
use crate::cluster::Ownership;
use crate::config::Config;
use crate::dispatch::status_back::{self, StatusPoller, StatusSink};
use crate::dispatch::{Delivery, DispatchError, Phase};
use crate::recheck::Rechecks;
use crate::review::{LatestFrames, ReviewHub, SharedConsoleConfig};
use gridwatch_dispatch_ref::{CASES_PATH, Receiver};

/// How long a stopped run keeps retrying deliveries at most (a failure or a signal: the
/// operator wants the process back; what is left stays in the outbox).
const STOPPED_DRAIN: Duration = Duration::from_secs(5);

type DeliveryTask = JoinHandle<Result<OutboxCounts, DispatchError>>;

/// The review console's first admin password is written to this file beside the outbox.
pub const ADMIN_PASSWORD_FILE: &str = "review-admin-password";

/// What the review console shares with the pipeline.
#[derive(Clone)]
pub(super) struct Console {
    pub hub: ReviewHub,
    /// Written by reviewers' rejections, read by the case stage.
    pub suppressions: Suppressions,
    /// The patrol wall's latest frames, offered by the scenario stage.
    pub latest: LatestFrames,
    /// Swapped by a reload.
    pub config: SharedConsoleConfig,
    /// Each camera's encoded stream: the wall's live video and full-resolution evidence
    /// (without hubs when `[live]` is off).
    pub live: crate::live::LiveHubs,
    /// Staff reports from the wall into the case stage.
    pub reports: crate::cases::ReportInbox,
}

/// The running I/O side.
pub(super) struct Io {
    runtime: tokio::runtime::Runtime,
    servers_stop: watch::Sender<bool>,
    /// Notified once per stored or confirmed case: relayed to every delivery task.
    pub wake: Arc<Notify>,
    phase: watch::Sender<Phase>,
    deliveries: Vec<DeliveryTask>,
    pub receiver_url: Option<String>,
    /// Where the review console listens, and where its first admin password was written.
    pub console_url: Option<(String, Option<PathBuf>)>,
    pub console: Console,
}

impl Io {
    /// Starts the servers, delivery and the signal handlers. A failure here returns before
    /// any frame flows; whatever was spawned ends with the runtime.
    pub fn start(
        config: &Config,
        options: &RunOptions,
        outbox: &Path,
        ownership: &Option<Ownership>,
        stop: &StopHandle,
        rechecks: &Rechecks,
    ) -> Result<Self, RunError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gridwatch-io")
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?;
        let (servers_stop, _) = watch::channel(false);
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let mut io = Self {
            console: Console {
                hub: ReviewHub::default(),
                suppressions: Suppressions::default(),
                latest: match &config.review {
                    Some(_) => LatestFrames::new(config.area.cameras.len()),
                    // Without a console nobody looks at the wall: no frame is copied.
                    None => LatestFrames::default(),
                },
                config: Arc::new(arc_swap::ArcSwap::from_pointee(config.console_config())),
                live: crate::live::LiveHubs::new(&config.live),
                reports: crate::cases::ReportInbox::default(),
            },
            runtime,
            servers_stop,
            wake: Arc::new(Notify::new()),
            phase,
            deliveries: Vec::new(),
            receiver_url: None,
            console_url: None,
        };
        let primary_url = io.start_receiver(config)?;
        let sink = StatusSink::new(
            Outbox::open(outbox)?,
            rechecks.clone(),
            config.cases.verification.enabled,
        );
        io.start_status(config, options, outbox, ownership, &sink)?;
        io.start_status_polls(config, &sink, phase_rx.clone(), stop);
        io.deliveries = io.start_deliveries(config, outbox, primary_url, phase_rx, stop)?;
        io.start_console(config, options, outbox, ownership)?;
        io.start_signals(stop, &options.reload);
        Ok(io)
    }

    fn servers_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.servers_stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// The embedded receiver, when configured; returns the URL cases go to.
    fn start_receiver(&mut self, config: &Config) -> Result<String, RunError> {
        let Some(r) = &config.dispatch.embedded_receiver else {
            // Validation guarantees a url or an embedded receiver.
            return Ok(config.dispatch.url.clone().unwrap_or_default());
        };
        let receiver = self.runtime.block_on(Receiver::bind(
            &r.listen,
            &config.resolve(&r.database),
            config.dispatch.bearer_token.clone(),
        ))?;
        let base = format!("http://{}", receiver.local_addr());
        tracing::info!(url = %format!("{base}/"), "dispatch receiver running: open this URL to see the cases");
        self.receiver_url = Some(format!("{base}/"));
        let shutdown = self.servers_stopped();
        self.runtime.spawn(async move {
            if let Err(e) = receiver.serve(shutdown).await {
                tracing::error!(error = %e, "dispatch receiver stopped");
            }
        });
        Ok(config
            .dispatch
            .url
            .clone()
            .unwrap_or(format!("{base}{CASES_PATH}")))
    }

    /// `/metrics`, `/api/v1/cameras`, `/healthz`, `/readyz` (and the cluster view).
    fn start_status(
        &mut self,
        config: &Config,
        options: &RunOptions,
        outbox: &Path,
        ownership: &Option<Ownership>,
        sink: &StatusSink,
    ) -> Result<(), RunError> {
        let secrets = status_back::secrets(&config.dispatch.per_target());
        let Some(addr) = &config.telemetry.metrics_listen else {
            if !secrets.is_empty() {
                tracing::warn!(
                    "a dispatch target has a webhook_secret but there is no status endpoint ([telemetry] metrics_listen) to receive its webhook"
                );
            }
            return Ok(());
        };
        let metrics_err = |source| RunError::Metrics {
            addr: addr.clone(),
            source,
        };
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(metrics_err)?;
        let local = listener.local_addr().map_err(metrics_err)?;
        let mut app = crate::status::router_with_readiness(
            options.cameras.clone(),
            options.readiness.clone(),
        )
        .merge(crate::dispatch::status_routes(outbox.to_path_buf()))
        .merge(status_back::webhook_routes(sink.clone(), secrets));
        if let Some(o) = ownership {
            app = app.merge(crate::cluster::status_routes(o.clone()));
        }
        let shutdown = self.servers_stopped();
        tracing::info!(url = %format!("http://{local}/api/v1/cameras"), "status endpoint (also /metrics)");
        self.runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok(())
    }

    /// One status poller per target with a feed (a target served by the embedded receiver polls
    /// its feed unless told otherwise). A poller whose outbox fails stops the pipeline.
    fn start_status_polls(
        &self,
        config: &Config,
        sink: &StatusSink,
        phase: watch::Receiver<Phase>,
        stop: &StopHandle,
    ) {
        let embedded = self
            .receiver_url
            .as_deref()
            .map(status_back::embedded_feed_url);
        for settings in config.dispatch.per_target() {
            let on_embedded = settings.embedded_receiver.is_some() && settings.url.is_none();
            let feed = match (&settings.status, on_embedded) {
                (Some(s), _) if s.feed_url.is_some() => s.feed_url.clone(),
                (_, true) => embedded.clone(),
                _ => None,
            };
            let Some(feed_url) = feed else { continue };
            let poller = StatusPoller {
                target: settings.primary_id().to_owned(),
                feed_url,
                interval: settings.status.clone().unwrap_or_default().poll_interval(),
                bearer_token: settings.bearer_token.clone(),
                timeout: settings.timeout(),
            };
            let (sink, phase, stop) = (sink.clone(), phase.clone(), stop.clone());
            self.runtime.spawn(async move {
                if let Err(e) = poller.run(sink, phase).await {
                    tracing::error!(error = %e, "status poll cannot record; stopping the pipeline");
                    stop.stop();
                }
            });
        }
    }

    /// The review console, when `[review]` is configured.
    fn start_console(
        &mut self,
        config: &Config,
        options: &RunOptions,
        outbox: &Path,
        ownership: &Option<Ownership>,
    ) -> Result<(), RunError> {
        let Some(settings) = &config.review else {
            return Ok(());
        };
        let store = Arc::new(crate::review::store::ReviewStore::open(outbox)?);
        // Shown to a person: without the `config/../var` of a relative outbox path.
        let folder = outbox.parent().unwrap_or(Path::new("."));
        let password_file = folder
            .canonicalize()
            .unwrap_or_else(|_| folder.to_path_buf())
            .join(ADMIN_PASSWORD_FILE);
        if let Some(password) = crate::review::bootstrap_admin(&store, settings)? {
            // Kept where the newcomer can find it again (the log scrolls on); owner-only.
            match write_secret(&password_file, &password) {
                Ok(()) => {
                    tracing::warn!(file = %password_file.display(), "review console: created account `admin`; its generated password is in this file (set {} before the first start to choose it)", settings.admin_password_env)
                }
                Err(e) => eprintln!(
                    "review console: created account `admin` with password {password} (could not write {}: {e})",
                    password_file.display()
                ),
            }
        }
        for s in store.active_suppressions()? {
            self.console.suppressions.add(s);
        }
        let state = crate::review::ReviewState {
            store,
            config: self.console.config.clone(),
            cameras: options.cameras.clone(),
            latest: self.console.latest.clone(),
            suppressions: self.console.suppressions.clone(),
            hub: self.console.hub.clone(),
            wake: Some(self.wake.clone()),
            cluster: ownership.clone(),
            trainer: options.trainer.clone(),
            live: self.console.live.clone(),
            reports: self.console.reports.clone(),
        };
        let server = self
            .runtime
            .block_on(crate::review::ReviewServer::bind(&settings.listen, state))?;
        let url = format!("http://{}/", server.local_addr());
        tracing::info!(url = %url, "review console running: open this URL to review held cases");
        self.console_url = Some((url, password_file.is_file().then_some(password_file)));
        let shutdown = self.servers_stopped();
        self.runtime.spawn(async move {
            if let Err(e) = server.serve(shutdown).await {
                tracing::error!(error = %e, "review console stopped");
            }
        });
        Ok(())
    }

    /// SIGINT/SIGTERM stop taking frames (what was decided is still stored and delivered);
    /// SIGHUP asks for a reload.
    fn start_signals(&self, stop: &StopHandle, reload: &ReloadHandle) {
        let stop = stop.clone();
        self.runtime.spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested: finishing in-flight work");
            stop.stop();
        });
        #[cfg(unix)]
        {
            let reload = reload.clone();
            self.runtime.spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    reload.request();
                }
            });
        }
    }

    /// Runs `future` on the runtime from the supervisor's thread.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Waits for `task` at most `timeout` (the cluster controller's leave).
    pub fn wait<T>(&self, task: JoinHandle<T>, timeout: Duration) {
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, task).await });
    }

    /// Delivery keeps retrying until the outbox is empty or the deadline passes (shorter after
    /// a stop), every target side by side; then the servers stop. The first delivery failure
    /// is returned; what is undelivered stays in the outbox for the next run.
    pub fn drain(self, stopped: bool, drain_timeout: Duration) -> Result<(), RunError> {
        let drain_for = if stopped {
            drain_timeout.min(STOPPED_DRAIN)
        } else {
            drain_timeout
        };
        let _ = self.phase.send(Phase::Drain {
            deadline: Instant::now() + drain_for,
        });
        self.wake.notify_one();
        let mut first_error = None;
        for task in self.deliveries {
            let result = self
                .runtime
                .block_on(task)
                .map_err(|e| RunError::Dispatch(DispatchError::Join(e.to_string())))
                .and_then(|r| r.map_err(RunError::from));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        // Open event streams would hold the console's graceful shutdown: end them first.
        self.console.hub.close();
        let _ = self.servers_stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        first_error.map_or(Ok(()), Err)
    }

    /// One delivery task per dispatch target, each with its own outbox connection, client,
    /// breaker and backoff, so that one target's outage never delays another's cases. A task
    /// whose outbox fails (disk full, I/O) stops the pipeline.
    fn start_deliveries(
        &self,
        config: &Config,
        outbox: &Path,
        primary_url: String,
        phase: watch::Receiver<Phase>,
        stop: &StopHandle,
    ) -> Result<Vec<DeliveryTask>, RunError> {
        let mut wakes = Vec::new();
        let mut tasks = Vec::new();
        for settings in config.dispatch.per_target() {
            let url = settings.url.clone().unwrap_or_else(|| primary_url.clone());
            let delivery = Delivery::new(settings, url, Outbox::open(outbox)?)?;
            let target_wake = Arc::new(Notify::new());
            wakes.push(target_wake.clone());
            tasks.push(self.runtime.spawn(supervised_delivery(
                delivery,
                target_wake,
                phase.clone(),
                stop.clone(),
            )));
        }
        let wake = self.wake.clone();
        self.runtime.spawn(async move {
            loop {
                wake.notified().await;
                for w in &wakes {
                    w.notify_one();
                }
            }
        });
        report_undeliverable(config, outbox)?;
        Ok(tasks)
    }
}

/// One target's delivery loop; a failure or a panic stops the pipeline (the outbox cannot
/// record deliveries: disk full, I/O error) instead of leaving its cases unsent unnoticed.
async fn supervised_delivery(
    delivery: Delivery,
    wake: Arc<Notify>,
    phase: watch::Receiver<Phase>,
    stop: StopHandle,
) -> Result<OutboxCounts, DispatchError> {
    let target = delivery.target().to_owned();
    let run = delivery.run(wake, phase);
    let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run))
        .await
        .unwrap_or_else(|_| {
            Err(DispatchError::Join(format!(
                "the delivery task of target {target} panicked"
            )))
        });
    if let Err(e) = &result {
        tracing::error!(target = %target, error = %e, "delivery failed; stopping the pipeline");
        stop.stop();
    }
    result
}

/// Old deliveries adopted by the primary; deliveries for targets no longer configured and
/// zones no target takes are reported (kept, never sent to the wrong place).
fn report_undeliverable(config: &Config, outbox: &Path) -> Result<(), RunError> {
    Outbox::open(outbox)?.adopt_legacy(config.dispatch.primary_id())?;
    let configured: Vec<String> = config
        .dispatch
        .per_target()
        .into_iter()
        .map(|s| s.primary_id().to_owned())
        .collect();
    for (target, stats) in Outbox::open(outbox)?.target_stats(None)? {
        if stats.pending > 0 && !configured.contains(&target) {
            tracing::warn!(target = %target, pending = stats.pending, "deliveries to a dispatch target that is not configured: they stay in the outbox until it is configured again");
        }
    }
    for gap in config.unrouted() {
        tracing::warn!(gap = %gap, "routing gap: such cases are stored but go to no dispatch target");
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The outbox file of `config`, opened once to check it; cases held by an earlier run with the
/// console go out unreviewed when the console is no longer configured.
pub(super) fn open_outbox(config: &Config, options: &RunOptions) -> Result<PathBuf, RunError> {
    let path = config.resolve(&config.cases.outbox);
    options.readiness.set_outbox(path.clone());
    let mut outbox = Outbox::open(&path)?;
    if config.review.is_none() {
        let released = outbox.release_held(i64::MAX)?;
        if !released.is_empty() {
            tracing::warn!(
                cases = released.len(),
                "no [review] section: held cases go out unreviewed"
            );
        }
    }
    Ok(path)
}

/// Writes `secret` to `path`, readable by the owner only.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    writeln!(f, "{secret}")
}

impl Io {
    /// What a person starting gridwatch needs to know, printed once the pipeline runs: where
    /// the cases show, where held cases wait and how to log in.
    pub fn print_welcome(&self, config: &Config) {
        let mut lines = vec!["gridwatch is running. Stop with Ctrl-C.".to_owned()];
        if let Some(url) = &self.receiver_url {
            lines.push(format!(
                "  Dispatch board (cases sent to the command platform): {url}"
            ));
        }
        if let Some((url, password)) = &self.console_url {
            let login = match password {
                Some(file) => format!("log in as `admin`, password in {}", file.display()),
                None => "log in with your account".to_owned(),
            };
            lines.push(format!(
                "  Review console (cases held for a reviewer, the patrol wall): {url} ({login})"
            ));
        }
        if let Some(addr) = &config.telemetry.metrics_listen {
            lines.push(format!(
                "  Camera states: http://{addr}/api/v1/cameras, metrics: http://{addr}/metrics"
            ));
        }
        eprintln!("\n{}\n", lines.join("\n"));
    }
}
