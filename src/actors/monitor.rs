//! The Monitor: one per target, a thin shell around the incident machine
//! ([`crate::incident::machine`]). It probes on the target's cadence, watches the postmaster
//! and the container, feeds what it sees to the machine as observations, and carries out the
//! actions the machine returns (`monitor/effects.rs`). Every decision is the machine's; all
//! state that must outlive this actor lives in the target's [`SharedRecord`].
//!
//! Nothing here blocks the actor thread: probes, the pid watch, container reads, leases and
//! store writes are futures or other threads that report back.

mod cause;
mod effects;
mod watch;

use super::archiver::Archiver;
use super::healer::Healer;
use super::messages::{Replaced, Retire};
use super::notifier::Notifier;
use crate::config::TargetConfig;
use crate::docker::events::ContainerEvent;
use crate::incident::{self, Env, Observation, Phase, SharedRecord};
use crate::probe::{ProbeOutcome, Prober};
use crate::store::Written;
use actix::prelude::*;
use chrono::Utc;
use slog::{debug, info, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shared actors and services a Monitor talks to.
#[derive(Clone)]
pub struct Peers {
    pub archiver: Addr<Archiver>,
    pub healer: Addr<Healer>,
    pub notifier: Addr<Notifier>,
    /// The incident history; None only in tests that run without a state dir.
    pub store: Option<crate::store::Store>,
    pub fleet: Arc<crate::fleet::FleetGuard>,
    /// Restart leases shared with other daemons, and our owner id in them.
    pub leases: Arc<dyn crate::lease::LeaseBackend>,
    pub lease_owner: Arc<str>,
    pub lease_ttl: Duration,
    /// The Docker Engine, for targets in containers.
    pub docker: Arc<crate::docker::DockerClient>,
    /// Cluster mode: where the target's state is kept for a takeover.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

pub struct Monitor {
    target: Arc<TargetConfig>,
    log: Logger,
    record: SharedRecord,
    peers: Peers,
    /// None while a probe is in flight: probes never overlap.
    prober: Option<Prober>,
    next_probe: Option<SpawnHandle>,
    /// Run another probe as soon as the one in flight ends.
    probe_again: bool,
    watch: Option<SpawnHandle>,
    /// Said once that the container does not exist, until it does.
    said_missing: bool,
    /// Said once that the pid file was refused (a symlink, FIFO, device or huge file).
    said_pid_file: bool,
    retired: bool,
    /// Store writes queued since the last checkpoint: awaited before a checkpoint (the
    /// restart) goes on, so a daemon killed there resumes from them.
    unsynced: Vec<Written>,
    /// Cluster mode: state writes to etcd since the last checkpoint, awaited there too.
    unsynced_cluster: Vec<futures::channel::oneshot::Receiver<Result<(), String>>>,
    /// Cluster mode: what the cluster was last told (an open incident or failing probes:
    /// never handed to another daemon meanwhile).
    busy: bool,
    /// A flight recorder sample's host half is being read.
    host_reading: bool,
    /// The last postmaster seen to exit, and how (when this daemon reaped it): evidence for
    /// the cause of the incident its death opens.
    ended: Option<(i32, Option<crate::cause::Exit>)>,
    /// A full disk's free-space watch is running.
    space_watch: Option<SpawnHandle>,
    /// The Engine reported an OOM kill in the container while its postmaster lived.
    oom_event: bool,
}

/// While an incident is open, probe this often to see recovery quickly.
const FAST_PROBE: Duration = Duration::from_millis(100);
/// While an incident waits for someone else (held, escalated, alert only), probe this often.
const WATCH_PROBE: Duration = Duration::from_secs(1);

impl Monitor {
    pub fn new(
        target: Arc<TargetConfig>,
        record: SharedRecord,
        peers: Peers,
        log: &Logger,
    ) -> Self {
        let log = log.new(slog::o!("actor" => "monitor", "target" => target.name.clone()));
        let prober = Prober::new(&target);
        Self {
            target,
            log,
            record,
            peers,
            prober: Some(prober),
            next_probe: None,
            probe_again: false,
            watch: None,
            said_missing: false,
            said_pid_file: false,
            retired: false,
            unsynced: Vec::new(),
            unsynced_cluster: Vec::new(),
            busy: false,
            host_reading: false,
            ended: None,
            space_watch: None,
            oom_event: false,
        }
    }

    /// Hands one observation to the machine and carries out what it decides.
    fn feed(&mut self, obs: Observation, ctx: &mut Context<Self>) {
        let actions = {
            let mut rec = self.record.lock();
            let env = Env {
                target: &self.target,
                now: Instant::now(),
                now_utc: Utc::now(),
                fleet_tripped: self.peers.fleet.tripped(),
            };
            let actions = incident::step(&mut rec, &env, obs);
            let busy = rec.incident.is_some() || rec.failures > 0;
            if let Some(c) = self.peers.cluster.as_ref().filter(|_| busy != self.busy) {
                c.set_busy(&self.target.name, busy);
                self.busy = busy;
            }
            actions
        };
        self.perform(actions, ctx);
    }

    fn schedule_probe(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        if let Some(h) = self.next_probe.take() {
            ctx.cancel_future(h);
        }
        self.next_probe = Some(ctx.run_later(delay, |act, ctx| {
            act.next_probe = None;
            act.probe_now(ctx);
        }));
    }

    fn probe_now(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        let Some(mut prober) = self.prober.take() else {
            self.probe_again = true;
            return;
        };
        if self.record.lock().process_dead {
            // A backend orphaned by a dead postmaster can still answer on the old connection.
            prober.reset();
        }
        let fut = async move {
            let out = prober.probe().await;
            (prober, out)
        };
        ctx.spawn(fut.into_actor(self).map(|(prober, out), act, ctx| {
            act.prober = Some(prober);
            let took = out.latency;
            act.on_probe(out, ctx);
            let delay = if std::mem::take(&mut act.probe_again) {
                Duration::ZERO
            } else if act.record.lock().phase == Phase::Suspect {
                // Failing: confirm at one probe per probe timeout, counted from the start of
                // the last one, so a hung server (each probe timing out) is declared after
                // timeout × threshold, not after threshold healthy intervals.
                act.cadence()
                    .min(act.target.probe.timeout)
                    .saturating_sub(took)
            } else {
                act.cadence()
            };
            act.schedule_probe(ctx, delay);
        }));
    }

    fn cadence(&self) -> Duration {
        match self.record.lock().phase {
            Phase::Archiving | Phase::Healing | Phase::Recovering => {
                FAST_PROBE.min(self.target.probe.interval)
            }
            // Nobody restarts it here: a person or another tool will, and the recovery
            // notice (with the downtime from the fault) must follow within about a second.
            Phase::Held | Phase::Escalated | Phase::Unhealed => {
                WATCH_PROBE.min(self.target.probe.interval)
            }
            _ => self.target.probe.interval,
        }
    }

    /// Judges the probe by the server that answered it, reports it (metrics, fleet guard) and
    /// hands it to the machine.
    fn on_probe(&mut self, mut out: ProbeOutcome, ctx: &mut Context<Self>) {
        // A pass counts only from the target's own server: judged once, before anything sees it.
        let judged = {
            let mut rec = self.record.lock();
            let env = Env {
                target: &self.target,
                now: Instant::now(),
                now_utc: Utc::now(),
                fleet_tripped: None,
            };
            incident::machine::judge(&mut rec, &env, out.result, out.identity.take())
        };
        let actions;
        (out.result, actions) = judged;
        if out.result.is_err() {
            out.manager = None; // another server's sessions say nothing about ours
        }
        self.perform(actions, ctx);
        let m = crate::metrics::global();
        let t = self.target.name.as_str();
        let labels = [("target", t)];
        m.observe(
            "sentinel_probe_duration_seconds",
            &labels,
            out.latency.as_secs_f64(),
        );
        let up = if out.result.is_ok() { 1.0 } else { 0.0 };
        m.set("sentinel_target_up", &labels, up);
        if let Err(f) = &out.result {
            m.inc(
                "sentinel_probe_failures_total",
                &[("target", t), ("class", f.class.label())],
            );
        }
        self.peers
            .fleet
            .report(t, incident::machine::failing(&out.result));
        let sampled = out.vitals.take().filter(|_| out.result.is_ok());
        let obs = Observation::Probe {
            result: out.result,
            latency: out.latency,
            manager: out.manager,
        };
        self.feed(obs, ctx);
        self.send_withheld();
        if let Some(sql) = sampled {
            self.sample(sql, ctx);
        }
        if !self.record.lock().process_dead {
            self.arm_watch(ctx);
        }
    }

    /// Completes a flight recorder sample with the host's numbers (off this thread, bounded)
    /// and hands it to the machine. One host read at a time: a hung filesystem skips samples'
    /// host halves rather than piling up threads.
    fn sample(&mut self, sql: crate::probe::vitals::SqlVitals, ctx: &mut Context<Self>) {
        let at = Utc::now();
        if std::mem::replace(&mut self.host_reading, true) {
            let s = crate::flight::Sample::new(at, &sql, &Default::default());
            return self.feed(Observation::Sample(s), ctx);
        }
        let (target, docker) = (self.target.clone(), self.peers.docker.clone());
        let fut = async move { crate::flight::host::read(&target, &docker).await };
        ctx.spawn(fut.into_actor(self).map(move |host, act, ctx| {
            act.host_reading = false;
            let s = crate::flight::Sample::new(at, &sql, &host);
            act.feed(Observation::Sample(s), ctx);
        }));
    }
}

impl Actor for Monitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            ctx.stop();
            return;
        }
        info!(self.log, "monitoring"; "event" => "monitor_started", "endpoint" => self.target.dsn.endpoint(),
            "interval" => crate::config::duration::format_duration(self.target.probe.interval),
            "threshold" => self.target.probe.failure_threshold, "pid_watch" => self.target.pid_file.is_some(),
            "heal" => self.target.heal.is_some());
        self.feed(Observation::Resume, ctx);
        self.arm_watch(ctx);
        self.inspect_container(ctx);
        self.schedule_probe(ctx, Duration::ZERO);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        info!(self.log, "monitor stopped"; "event" => "monitor_stopped");
    }
}

impl actix::Supervised for Monitor {
    /// Stopped but not retired: start over from the shared record.
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.log, "monitor restarting"; "event" => "monitor_restarting");
        self.prober = Some(Prober::new(&self.target));
        self.next_probe = None;
        self.watch = None;
        self.probe_again = false;
        self.host_reading = false;
        self.unsynced.clear();
    }
}

impl Handler<Retire> for Monitor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.retired = true;
        ctx.stop();
    }
}

impl Handler<Replaced> for Monitor {
    type Result = ();
    /// The container was re-created: close the open incident as replaced, then stop for good
    /// (the new container has a Monitor of its own). The store and the Notifier take the
    /// writes and the notice before this actor is gone.
    fn handle(&mut self, msg: Replaced, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        self.feed(
            Observation::Replaced {
                container: msg.container,
                container_id: msg.container_id,
            },
            ctx,
        );
        self.retired = true;
        ctx.stop();
    }
}

impl Handler<ContainerEvent> for Monitor {
    type Result = ();
    /// Docker says the container died, was paused or was removed: one probe confirms it and
    /// the incident is declared without waiting for the threshold. During an incident (our own
    /// restart emits the same events) it changes nothing.
    fn handle(&mut self, ev: ContainerEvent, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        let phase = self.record.lock().phase;
        if ev.action == "oom" {
            // A process of the container was OOM-killed: the postmaster, or only a backend.
            warn!(self.log, "Docker reports an OOM kill in the container; looking whether its postmaster lives"; "event" => "container_oom",
                "container" => &ev.name);
            return self.on_oom_event(&ev, ctx);
        }
        if matches!(phase, Phase::Healthy | Phase::Suspect) {
            warn!(self.log, "Docker reports the container down; confirming with a probe"; "event" => "container_event",
                "action" => &ev.action, "container" => &ev.name, "exit_code" => ev.exit_code.map(|c| c.to_string()).unwrap_or_default());
        } else {
            debug!(self.log, "container event during an incident"; "action" => &ev.action, "phase" => phase.label());
        }
        let obs = Observation::ContainerDown {
            detail: ev.describe(),
            class: ev.failure_class(),
        };
        self.feed(obs, ctx);
    }
}
