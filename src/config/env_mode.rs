//! Env-only mode: the seed's sidecar variables (DB_HOST, DB_PORT, ...) describe one target, so
//! the daemon drops into a compose file with no registry file. Read through the `config` crate,
//! with `.env` underneath the process environment.

use super::duration::RawDuration;
use super::error::{ConfigError, Problems};
use super::expand::VarSource;
use super::load::build;
use super::model::{Registry, Source};
use super::raw::*;
use serde::Deserialize;

/// The variables env-only mode reads, lower-cased by the `config` crate.
#[derive(Debug, Default, Deserialize)]
struct SeedEnv {
    db_host: Option<String>,
    db_port: Option<String>,
    db_name: Option<String>,
    db_user: Option<String>,
    db_password: Option<String>,
    health_check_interval: Option<String>,
    health_check_timeout: Option<String>,
    failure_threshold: Option<String>,
    health_check_query: Option<String>,
    slack_webhook_url: Option<String>,
    discord_webhook_url: Option<String>,
    webhook_url: Option<String>,
    notify_console: Option<String>,
    target_name: Option<String>,
    archive_dir: Option<String>,
    heal_command: Option<String>,
    heal_container: Option<String>,
    compose_project: Option<String>,
    compose_service: Option<String>,
    heal_stop_timeout: Option<String>,
    forensics_container_paths: Option<String>,
    pg_pid_file: Option<String>,
    forensics_files: Option<String>,
    max_restarts: Option<String>,
    restart_window: Option<String>,
    recovery_timeout: Option<String>,
    s3_bucket_name: Option<String>,
    s3_prefix: Option<String>,
    s3_endpoint_url: Option<String>,
    s3_force_path_style: Option<String>,
    aws_region: Option<String>,
    archive_timeout: Option<String>,
    sentinel_listen: Option<String>,
    lease_dir: Option<String>,
    sentinel_api_token: Option<String>,
    discover_docker: Option<String>,
    discover_namespace: Option<String>,
    discover_network: Option<String>,
}

/// Whether the sidecar variables are present (DB_HOST or DISCOVER_DOCKER decides).
pub fn present(vars: &VarSource) -> bool {
    ["DB_HOST", "DISCOVER_DOCKER"]
        .iter()
        .any(|v| vars.get(v).is_some_and(|h| !h.trim().is_empty()))
}

/// Builds a one-target registry from the sidecar variables.
pub fn load_env(vars: &VarSource) -> Result<Registry, ConfigError> {
    let file = "environment".to_string();
    let all = vars.all();
    let seed: SeedEnv = config::Config::builder()
        .add_source(
            config::Environment::default()
                .source(Some(all))
                .try_parsing(false),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::Invalid {
            file: file.clone(),
            problems: vec![super::error::Problem::new(
                "(environment)",
                e.to_string(),
                "check the variables listed in .env.template",
            )],
        })?;
    let mut problems = Problems::default();

    let host = seed.db_host.clone().unwrap_or_default();
    let port: u16 = match seed.db_port.as_deref().map(str::trim) {
        None | Some("") => 5432,
        Some(p) => p.parse().unwrap_or_else(|_| {
            problems.push(
                "DB_PORT",
                format!("'{p}' is not a port number"),
                "set DB_PORT to a number such as 5432",
            );
            5432
        }),
    };
    let user = seed.db_user.clone().unwrap_or_else(|| "postgres".into());
    let db = seed.db_name.clone().unwrap_or_else(|| "postgres".into());
    let mut dsn = url::Url::parse("postgres://localhost").expect("static URL parses");
    let host_ok = dsn.set_host(Some(&host)).is_ok();
    if !host_ok && !host.trim().is_empty() {
        problems.push(
            "DB_HOST",
            format!("'{host}' is not a host name or address"),
            "set DB_HOST to the database's host, e.g. postgres",
        );
    }
    let _ = dsn.set_port(Some(port));
    let _ = dsn.set_username(&user);
    if let Some(pw) = seed.db_password.as_deref().filter(|p| !p.is_empty()) {
        let _ = dsn.set_password(Some(pw));
    }
    dsn.set_path(&format!("/{db}"));

    let threshold = seed
        .failure_threshold
        .as_deref()
        .map(|t| match t.trim().parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                problems.push(
                    "FAILURE_THRESHOLD",
                    format!("'{t}' is not a number"),
                    "set FAILURE_THRESHOLD to 1 or more",
                );
                3
            }
        });
    let rename = |p: &mut Problems, before: usize| {
        // Problems found by the shared validation name YAML keys; point them at the variables.
        for pr in p.0.iter_mut().skip(before) {
            pr.path = match pr.path.as_str() {
                "defaults.probe.interval" => "HEALTH_CHECK_INTERVAL".into(),
                "defaults.probe.timeout" => "HEALTH_CHECK_TIMEOUT".into(),
                "defaults.probe.failure_threshold" => "FAILURE_THRESHOLD".into(),
                "defaults.probe.query" => "HEALTH_CHECK_QUERY".into(),
                "targets[0].heal.command" => "HEAL_COMMAND".into(),
                "targets[0].heal" => {
                    "HEAL_COMMAND/HEAL_CONTAINER/COMPOSE_PROJECT+COMPOSE_SERVICE".into()
                }
                "targets[0].heal.docker.container" => "HEAL_CONTAINER".into(),
                "targets[0].heal.compose.project" => "COMPOSE_PROJECT".into(),
                "targets[0].heal.compose.service" => "COMPOSE_SERVICE".into(),
                "targets[0].heal.stop_timeout" => "HEAL_STOP_TIMEOUT".into(),
                "targets[0].forensics.docker" => "FORENSICS_CONTAINER_PATHS".into(),
                "defaults.restart_budget.max_restarts" => "MAX_RESTARTS".into(),
                "defaults.restart_budget.window" => "RESTART_WINDOW".into(),
                "defaults.recovery_timeout" => "RECOVERY_TIMEOUT".into(),
                "targets[0].dsn" => "DB_HOST/DB_PORT/DB_NAME/DB_USER".into(),
                "targets[0].name" => "TARGET_NAME".into(),
                "archive.s3.bucket" => "S3_BUCKET_NAME".into(),
                "archive.s3.prefix" => "S3_PREFIX".into(),
                "archive.s3.endpoint" => "S3_ENDPOINT_URL".into(),
                "archive.timeout" => "ARCHIVE_TIMEOUT".into(),
                "archive.local.dir" => "ARCHIVE_DIR".into(),
                "server.listen" => "SENTINEL_LISTEN".into(),
                "server.token" => "SENTINEL_API_TOKEN".into(),
                "notify.slack.webhook_url" => "SLACK_WEBHOOK_URL".into(),
                "notify.discord.webhook_url" => "DISCORD_WEBHOOK_URL".into(),
                "notify.webhooks[0].url" => "WEBHOOK_URL".into(),
                "discovery.docker.mode" => "DISCOVER_DOCKER".into(),
                "discovery.docker.namespace" => "DISCOVER_NAMESPACE".into(),
                "discovery.docker.network" => "DISCOVER_NETWORK".into(),
                other => other.to_string(),
            };
        }
    };
    let max_restarts = seed.max_restarts.as_deref().map(|t| {
        t.trim().parse::<i64>().unwrap_or_else(|_| {
            problems.push(
                "MAX_RESTARTS",
                format!("'{t}' is not a number"),
                "set MAX_RESTARTS to 0 or more",
            );
            3
        })
    });
    let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.trim().is_empty());
    let stop_timeout = nonempty(&seed.heal_stop_timeout).map(RawDuration);
    let heal_command = nonempty(&seed.heal_command).map(|c| split_command(&c));
    let heal_docker = nonempty(&seed.heal_container).map(|container| RawDockerHeal {
        container,
        stop_timeout: stop_timeout.clone(),
    });
    let heal_compose = match (
        nonempty(&seed.compose_project),
        nonempty(&seed.compose_service),
    ) {
        (None, None) => None,
        (project, service) => Some(RawComposeHeal {
            project: project.unwrap_or_default(),
            service: service.unwrap_or_default(),
            stop_timeout,
        }),
    };
    let any_heal = heal_command.is_some() || heal_docker.is_some() || heal_compose.is_some();
    let heal = any_heal.then_some(RawHeal {
        command: heal_command,
        timeout: None,
        docker: heal_docker,
        compose: heal_compose,
        stop_timeout: None,
        stop_command: None,
        env: Default::default(),
    });
    let split_list = |f: &str| -> Vec<String> {
        f.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let forensics_docker =
        nonempty(&seed.forensics_container_paths).map(|paths| RawDockerForensics {
            container: None,
            project: None,
            service: None,
            paths: split_list(&paths),
            log_tail: None,
        });
    // Probe and budget settings are defaults, so discovered containers get them too.
    let defaults = RawDefaults {
        probe: Some(RawProbe {
            query: seed.health_check_query.clone(),
            interval: seed.health_check_interval.clone().map(RawDuration),
            timeout: seed.health_check_timeout.clone().map(RawDuration),
            failure_threshold: threshold,
            expect: None,
            role: None,
        }),
        restart_budget: Some(RawBudget {
            max_restarts,
            window: seed.restart_window.clone().map(RawDuration),
            backoff: None,
            backoff_max: None,
            backoff_reset: None,
        }),
        recovery_timeout: seed.recovery_timeout.clone().map(RawDuration),
        policy: None,
    };
    let target = RawTarget {
        name: seed.target_name.clone().unwrap_or_else(|| db.clone()),
        dsn: dsn.to_string(),
        probe: None,
        restart_budget: None,
        recovery_timeout: None,
        forensics: Some(RawForensics {
            files: seed
                .forensics_files
                .as_deref()
                .map(split_list)
                .unwrap_or_default(),
            docker: forensics_docker,
        }),
        heal,
        process: nonempty(&seed.pg_pid_file).map(|pid_file| RawProcess { pid_file }),
        policy: None,
    };
    let notify = RawNotify {
        slack: nonempty(&seed.slack_webhook_url).map(|webhook_url| RawChatWebhook { webhook_url }),
        discord: nonempty(&seed.discord_webhook_url)
            .map(|webhook_url| RawChatWebhook { webhook_url }),
        webhooks: nonempty(&seed.webhook_url).map(|url| {
            vec![RawGenericWebhook {
                url,
                headers: Default::default(),
            }]
        }),
        pagerduty: None,
        console: nonempty(&seed.notify_console).map(|c| {
            match c.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    problems.push(
                        "NOTIFY_CONSOLE",
                        format!("'{c}' is not true or false"),
                        "set NOTIFY_CONSOLE to true (alerts also printed to stdout) or false",
                    );
                    false
                }
            }
        }),
        max_attempts: None,
        max_backoff: None,
    };
    // AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are read by the AWS credential chain itself.
    let s3 = nonempty(&seed.s3_bucket_name).map(|bucket| RawS3Archive {
        bucket,
        prefix: nonempty(&seed.s3_prefix),
        region: nonempty(&seed.aws_region),
        endpoint: nonempty(&seed.s3_endpoint_url),
        // S3-compatible stores behind a custom endpoint nearly always want path-style keys.
        force_path_style: Some(match nonempty(&seed.s3_force_path_style) {
            Some(v) => matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
            None => seed
                .s3_endpoint_url
                .as_deref()
                .is_some_and(|e| !e.trim().is_empty()),
        }),
        sse: None,
        sse_kms_key_id: None,
        storage_class: None,
        part_size: None,
    });
    let archive = RawArchive {
        local: nonempty(&seed.archive_dir).map(|dir| RawLocalArchive { dir }),
        s3,
        timeout: nonempty(&seed.archive_timeout).map(RawDuration),
        max_file_size: None,
    };
    let before = problems.0.len();
    let server = nonempty(&seed.sentinel_listen).and_then(|listen| {
        super::load::build_server(
            RawServer {
                listen,
                token: nonempty(&seed.sentinel_api_token),
            },
            &mut problems,
        )
    });
    // Without DB_HOST the sidecar only discovers (DISCOVER_DOCKER).
    let targets = if host.trim().is_empty() {
        vec![]
    } else {
        vec![(0, target)]
    };
    let discovery = nonempty(&seed.discover_docker).and_then(|mode| {
        let mode = match mode.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "label" => "label".to_string(),
            other => other.to_string(),
        };
        let raw = RawDiscovery {
            docker: Some(RawDockerDiscovery {
                namespace: nonempty(&seed.discover_namespace),
                mode: Some(mode),
                network: nonempty(&seed.discover_network),
            }),
        };
        super::load::build_discovery(raw, &mut problems)
    });
    let mut registry = build(
        Source::Environment,
        defaults,
        archive,
        notify,
        targets,
        &mut problems,
    );
    registry.discovery = discovery;
    registry.server = server;
    registry.lease.dir = nonempty(&seed.lease_dir).map(std::path::PathBuf::from);
    rename(&mut problems, before);
    if problems.0.is_empty() {
        Ok(registry)
    } else {
        Err(ConfigError::Invalid {
            file,
            problems: problems.0,
        })
    }
}

/// Splits HEAL_COMMAND: a JSON array (`["pg_ctl","-D","/data","start"]`) or words split on
/// whitespace.
fn split_command(c: &str) -> Vec<String> {
    if c.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(c) {
            return v;
        }
    }
    c.split_whitespace().map(str::to_string).collect()
}
