//! The command line: `run`, `check-config`, `demo`. Exit statuses: 0 done, 64 bad
//! configuration (EX_USAGE), 69 a required program is missing (EX_UNAVAILABLE), 1 anything else.

use crate::actors::supervisor::{Supervisor, SupervisorSettings};
use crate::config::{self, duration::parse_duration, Registry, VarSource};
use crate::logging::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub const EX_USAGE: u8 = 64;
pub const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser, Debug)]
#[command(
    name = "sentinel-remedy",
    version,
    about = "Self-healing daemon for PostgreSQL fleets"
)]
pub struct Cli {
    /// Log format: json for machines, term for people.
    #[arg(
        long,
        env = "SENTINEL_LOG_FORMAT",
        value_enum,
        default_value = "term",
        global = true
    )]
    pub log_format: LogFormat,
    /// Least severe level logged: error, warning, info, debug.
    #[arg(
        long,
        env = "SENTINEL_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch and heal the targets of a registry (or of the sidecar variables).
    Run {
        /// The YAML target registry.
        #[arg(long, short, env = "SENTINEL_CONFIG")]
        config: Option<PathBuf>,
        /// Where heal logs and other state are kept.
        #[arg(long, env = "SENTINEL_STATE_DIR", default_value = "./sentinel-state")]
        state_dir: PathBuf,
        /// How long shutdown waits for archives and notifications in flight.
        #[arg(long, env = "SENTINEL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration_arg)]
        shutdown_timeout: Duration,
    },
    /// Validate a registry without starting anything; lists every problem found.
    CheckConfig {
        #[arg(long, short, env = "SENTINEL_CONFIG")]
        config: Option<PathBuf>,
        /// Also ask the Docker Engine what `discovery.docker` would find now.
        #[arg(long)]
        discover: bool,
    },
    /// Send a test message to every configured channel and report each result.
    NotifyTest {
        #[arg(long, short, env = "SENTINEL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show every target of a running daemon (through its HTTP API).
    Status {
        /// The daemon's API address.
        #[arg(long, env = "SENTINEL_URL", default_value = "http://127.0.0.1:9187")]
        url: String,
        /// Print the JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List incidents, newest first, with time to recovery and MTTR.
    Incidents {
        #[arg(long, env = "SENTINEL_URL", default_value = "http://127.0.0.1:9187")]
        url: String,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Only incidents declared in this past period, e.g. 7d, 24h, 30m.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when a running daemon reports itself healthy (`/healthz`): the container
    /// HEALTHCHECK. The URL defaults to the one SENTINEL_LISTEN serves.
    Healthcheck {
        #[arg(long, env = "SENTINEL_URL")]
        url: Option<String>,
    },
    /// Start a throwaway PostgreSQL and heal it when you crash it.
    Demo {
        /// Where the demo's forensic bundles go.
        #[arg(long, default_value = "./incidents")]
        incidents: PathBuf,
    },
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn level(s: &str) -> Result<slog::Level, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(slog::Level::Error),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "info" => Ok(slog::Level::Info),
        "debug" => Ok(slog::Level::Debug),
        "trace" => Ok(slog::Level::Trace),
        other => Err(format!("--log-level / SENTINEL_LOG_LEVEL: '{other}' is not a level (use error, warning, info or debug)")),
    }
}

/// Compose passes an unset `${AWS_ACCESS_KEY_ID:-}` as an empty variable; the AWS chain would
/// take the empty key instead of moving on to the instance or container role.
fn drop_empty_aws_credentials() {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
    ] {
        if std::env::var_os(k).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(k);
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    drop_empty_aws_credentials();
    let Cli {
        log_format,
        log_level,
        command,
    } = Cli::parse();
    let level = match level(&log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sentinel-remedy: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match command {
        Command::CheckConfig { config, discover } => check_config(config.as_deref(), discover),
        Command::Run {
            config,
            state_dir,
            shutdown_timeout,
        } => {
            let registry = match load(config.as_deref()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let (log, _guard) = logging::root(log_format, level);
            run(
                log,
                SupervisorSettings {
                    registry,
                    config_path: config,
                    state_dir,
                    shutdown_timeout,
                },
            )
        }
        Command::NotifyTest { config } => notify_test(config.as_deref()),
        Command::Status { url, json } => {
            client_command(&url, "/status", json, crate::client::status_table)
        }
        Command::Incidents {
            url,
            target,
            since,
            json,
        } => incidents(&url, target, since, json),
        Command::Healthcheck { url } => healthcheck(url),
        Command::Demo { incidents } => demo(incidents, log_format, level),
    }
}

/// The registry `--config` (or the sidecar variables) gives, with `.env` read from the working
/// directory; on bad configuration the problems are printed and the exit status is 64.
fn load(config: Option<&Path>) -> Result<Registry, ExitCode> {
    VarSource::from_env_and_dotenv(&std::env::current_dir().unwrap_or_default())
        .and_then(|vars| config::load(config, &vars))
        .map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(EX_USAGE)
        })
}

/// `check-config`: validates the registry and lists its targets.
fn check_config(config: Option<&Path>, discover: bool) -> ExitCode {
    let r = match load(config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!(
        "{}: OK, {} target{}",
        r.source,
        r.targets.len(),
        if r.targets.len() == 1 { "" } else { "s" }
    );
    for t in &r.targets {
        println!(
            "  {} {} every {} (threshold {}){}",
            t.name,
            t.dsn.endpoint(),
            config::duration::format_duration(t.probe.interval),
            t.probe.failure_threshold,
            if t.heal.is_none() {
                ", alert only (no heal action)"
            } else {
                ""
            }
        );
    }
    if discover {
        return check_discovery(&r);
    }
    ExitCode::SUCCESS
}

/// `notify-test`: one test message to every channel, one line of result each.
fn notify_test(config: Option<&Path>) -> ExitCode {
    let registry = match load(config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(crate::notify::send_test(&registry.notify));
    if results.is_empty() {
        eprintln!("sentinel-remedy: no notification channel is configured (notify.slack, notify.discord, notify.pagerduty, notify.webhooks)");
        return ExitCode::from(EX_USAGE);
    }
    let mut failed = 0;
    for (channel, r) in &results {
        match r {
            Ok(attempts) => println!(
                "{channel}: ok ({attempts} attempt{})",
                if *attempts == 1 { "" } else { "s" }
            ),
            Err(e) => {
                failed += 1;
                println!("{channel}: FAILED: {e}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `incidents`: the daemon's incident list, filtered by target and period.
fn incidents(url: &str, target: Option<String>, since: Option<String>, json: bool) -> ExitCode {
    if let Some(s) = &since {
        if let Err(e) = parse_duration(s) {
            eprintln!("sentinel-remedy: --since: {e}");
            return ExitCode::from(EX_USAGE);
        }
    }
    let mut query: Vec<String> = Vec::new();
    if let Some(t) = target {
        query.push(format!(
            "target={}",
            url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
        ));
    }
    if let Some(s) = since {
        query.push(format!("since={s}"));
    }
    let path = if query.is_empty() {
        "/incidents".to_string()
    } else {
        format!("/incidents?{}", query.join("&"))
    };
    client_command(url, &path, json, crate::client::incidents_table)
}

/// `healthcheck`: exit 0 when the daemon's `/healthz` answers healthy.
fn healthcheck(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| local_api_url(std::env::var("SENTINEL_LISTEN").ok()));
    match crate::client::get(&url, "/healthz") {
        Ok(v) => {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sentinel-remedy: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `demo`: a throwaway cluster, watched and healed until Ctrl-C, then removed.
fn demo(incidents: PathBuf, log_format: LogFormat, level: slog::Level) -> ExitCode {
    // Before the demo cluster starts, so its postmaster is adopted too: the first
    // kill -9 the demo invites is then reaped at once (`run` says if this fails).
    let _ = crate::reaper::become_subreaper();
    let demo = match crate::demo::prepare(incidents) {
        Ok(d) => d,
        Err(crate::pgcluster::ClusterError::Missing(m)) => {
            eprintln!("sentinel-remedy demo: {m}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
        Err(e) => {
            eprintln!("sentinel-remedy demo: could not start the demo cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", crate::demo::instructions(&demo));
    crate::demo::announce_heals(&demo);
    let (log, guard) = logging::root(log_format, level);
    let state_dir =
        std::env::temp_dir().join(format!("sentinel-demo-state-{}", std::process::id()));
    let code = run(
        log,
        SupervisorSettings {
            registry: demo.registry.clone(),
            config_path: None,
            state_dir,
            shutdown_timeout: Duration::from_secs(5),
        },
    );
    drop(guard);
    crate::demo::cleanup(&demo);
    code
}

/// The loopback URL of the API a `SENTINEL_LISTEN` address serves (0.0.0.0 → 127.0.0.1).
fn local_api_url(listen: Option<String>) -> String {
    let listen = listen
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9187".into());
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        Ok(a) => format!("http://{a}"),
        Err(_) => format!("http://{listen}"),
    }
}

fn client_command(
    url: &str,
    path: &str,
    json: bool,
    table: fn(&serde_json::Value) -> String,
) -> ExitCode {
    match crate::client::get(url, path) {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", table(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sentinel-remedy: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `check-config --discover`: what discovery finds on the Engine now. Exit 64 when a
/// container would be skipped for its labels, 1 when the Engine cannot be asked.
fn check_discovery(r: &config::Registry) -> ExitCode {
    let Some(d) = r.discovery.clone() else {
        eprintln!("sentinel-remedy: --discover: the registry has no `discovery.docker` section (or DISCOVER_DOCKER)");
        return ExitCode::from(EX_USAGE);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sentinel-remedy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = std::sync::Arc::new(crate::docker::DockerClient::new(&r.docker));
    let quiet = slog::Logger::root(slog::Discard, slog::o!());
    let found = rt.block_on(crate::discovery::docker::discover_once(
        client.clone(),
        d.clone(),
        r.defaults.clone(),
        quiet,
    ));
    let (targets, skipped) = match found {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sentinel-remedy: --discover: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "discovery on {} (labels {}.*): {} target{}, {} skipped",
        client.endpoint(),
        d.namespace,
        targets.len(),
        if targets.len() == 1 { "" } else { "s" },
        skipped.len()
    );
    for t in &targets {
        let clash = r.targets.iter().any(|l| l.name == t.cfg.name);
        println!(
            "  {} (container {}) {} every {} (threshold {}){}{}",
            t.cfg.name,
            t.container,
            t.cfg.dsn.endpoint(),
            config::duration::format_duration(t.cfg.probe.interval),
            t.cfg.probe.failure_threshold,
            if t.cfg.heal.is_none() {
                ", alert only (heal=false)"
            } else {
                ""
            },
            if clash {
                ": NOT WATCHED, the registry has a target of this name"
            } else {
                ""
            }
        );
    }
    for (container, problems) in &skipped {
        println!("  container {container} skipped:");
        for p in problems {
            println!("    {p}");
        }
    }
    let clash = targets
        .iter()
        .any(|t| r.targets.iter().any(|l| l.name == t.cfg.name));
    if skipped.is_empty() && !clash {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_USAGE)
    }
}

/// Runs the actor system until a shutdown signal has been handled.
pub fn run(log: slog::Logger, settings: SupervisorSettings) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&settings.state_dir) {
        eprintln!("sentinel-remedy: cannot create state dir {}: {e} (set --state-dir or SENTINEL_STATE_DIR to a writable directory)", settings.state_dir.display());
        return ExitCode::from(EX_USAGE);
    }
    let store = match crate::store::Store::open(&settings.state_dir) {
        Ok(s) => {
            s.set_logger(log.new(slog::o!("actor" => "store")));
            s
        }
        Err(e) => {
            eprintln!("sentinel-remedy: {e} (check that --state-dir / SENTINEL_STATE_DIR is a writable local directory)");
            return ExitCode::FAILURE;
        }
    };
    let archive_dir = settings.registry.archive.local_dir.clone();
    if let Some(problem) = archive_dir
        .as_deref()
        .and_then(crate::preflight::archive_dir_problem)
    {
        // Not fatal (probes, restarts and alerts still work), but every bundle would fail.
        slog::error!(log, "the archive directory cannot be written: every incident's bundle would fail"; "event" => "archive_unwritable",
            "problem" => &problem);
        eprintln!("sentinel-remedy: ERROR: {problem}");
    }
    let disks = disks_of(&settings);
    // Adopt the postmasters our heal commands start, so one that dies is reaped at once: its
    // zombie would hold the lock file against the next start.
    let subreaper = crate::reaper::become_subreaper();
    let system = actix_rt::System::new();
    let ok = system.block_on(async move {
        match subreaper {
            Ok(()) => crate::reaper::spawn_sweeper(log.clone()),
            Err(e) => slog::warn!(log, "cannot become a child subreaper; dead servers we started are reaped by the host's init"; "event" => "subreaper_unavailable", "error" => %e),
        }
        let uploader = Supervisor::uploader(&log, &settings.registry.archive, &settings.state_dir).await;
        let server = settings.registry.server.clone();
        let source = settings.registry.source.to_string();
        if let Some(hb) = settings.registry.heartbeat.clone() {
            crate::heartbeat::spawn(hb, log.clone());
        }
        let docker = std::sync::Arc::new(crate::docker::DockerClient::new(&settings.registry.docker));
        let Ok(cluster) = start_cluster(&settings.registry, &settings.state_dir, &log) else {
            return false;
        };
        let cluster_handle = crate::cluster::Current::new(cluster.as_ref().map(|(c, _)| c.clone()));
        let (sup, done) = Supervisor::launch(log.clone(), settings, uploader.clone(), Some(store.clone()), docker.clone(), (cluster, cluster_handle.clone()));
        if let Some(server) = server {
            let state = crate::api::ApiState { supervisor: sup.clone(), store: Some(store), uploader, token: server.token.clone(),
                registry_source: source, started_at: chrono::Utc::now(), docker: Some(docker), disks: Some(disks), archive_dir,
                cluster: cluster_handle };
            match crate::api::serve(&server, state) {
                Ok(_) => slog::info!(log, "HTTP API listening"; "event" => "api_listening", "listen" => %server.listen,
                    "mutating_endpoints" => if server.token.is_some() { "on (bearer token)" } else { "off (no token)" }),
                Err(e) => {
                    slog::error!(log, "cannot listen for the HTTP API; stopping"; "event" => "api_bind_failed", "listen" => %server.listen, "error" => %e);
                    eprintln!("sentinel-remedy: cannot listen on {} (server.listen): {e}", server.listen);
                    return false;
                }
            }
        }
        if let Err(e) = crate::signals::forward(sup) {
            slog::error!(log, "cannot install signal handlers"; "error" => %e);
            return false;
        }
        done.await.is_ok()
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The directories /healthz checks take writes.
fn disks_of(settings: &SupervisorSettings) -> crate::health::Disks {
    crate::health::Disks {
        state_dir: settings.state_dir.clone(),
        // Cluster mode keeps its restart leases in etcd.
        lease_dir: settings.registry.cluster.is_none().then(|| {
            (settings.registry.lease.dir.clone())
                .unwrap_or_else(|| settings.state_dir.join("leases"))
        }),
        // Where archive::spool keeps its records and staged bundles.
        spool_dir: (settings.registry.archive.s3.is_some())
            .then(|| settings.state_dir.join("spool")),
    }
}

/// Cluster mode: starts the cluster thread, with the channel its events come back on.
fn start_cluster(
    registry: &Registry,
    state_dir: &std::path::Path,
    log: &slog::Logger,
) -> Result<Option<crate::cluster::Started>, ()> {
    use crate::cluster::SessionToken;
    let Some(cfg) = registry.cluster.clone() else {
        return Ok(None);
    };
    let token = SessionToken::load_or_create(state_dir).unwrap_or_else(|e| {
        slog::warn!(log, "cannot keep the cluster session token in the state directory: a quick restart of this daemon waits for its previous session to expire"; "event" => "cluster_token_unavailable",
            "file" => %state_dir.join(crate::cluster::session_token::FILE).display(), "error" => %e);
        SessionToken::ephemeral()
    });
    let (tx, rx) = futures::channel::mpsc::unbounded();
    match crate::cluster::Cluster::start(cfg, log, tx, token) {
        Ok(c) => Ok(Some((c, rx))),
        Err(e) => {
            slog::error!(log, "cannot start the cluster thread; stopping"; "event" => "cluster_start_failed", "error" => %e);
            Err(())
        }
    }
}

/// Validates a registry for callers that embed the daemon (tests, tools).
pub fn load_registry(path: &std::path::Path) -> Result<Registry, config::ConfigError> {
    let vars = VarSource::from_env_and_dotenv(&std::env::current_dir().unwrap_or_default())?;
    config::load(Some(path), &vars)
}
