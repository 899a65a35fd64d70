//! `scaleout up`: the balancer, the fleet and the autoscaler together until shutdown.
//!
//! Start order: bind the balancer (so a taken port fails before any child starts), start
//! the fleet registering into it, start the autoscaler reading from it. Stop order
//! matters: the autoscaler first (no more decisions), then the balancer (it stops
//! accepting and finishes every request it accepted, while every instance is still up),
//! then the fleet (instances leave the pool with nothing in flight, then SIGTERM/SIGKILL).
//! A client never gets a 5xx or a reset from a stop: either its request was accepted and
//! is answered, or its connect is refused. This module must never leave a child behind
//! when it returns.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::FleetError;
use crate::deployment::DeploymentConfig;
use crate::envelope::{EnvelopeStats, EnvelopeUse};
use crate::scaler::{Autoscaler, ScalerStatus};
use crate::supervisor::{Fleet, FleetHandle, FleetStatus};

/// Instances shown by name in the status line's envelope part; the rest are summed up.
const STATUS_INSTANCES_SHOWN: usize = 8;

/// How `up` runs, beyond the deployment file.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The program `{exe}` stands for (normally this executable).
    pub exe: PathBuf,
    /// Print a status line to stderr this often (`None`: never).
    pub status_every: Option<Duration>,
    /// Start a rolling restart on SIGHUP.
    pub rolling_restart_on_sighup: bool,
}

/// What happened during the run, returned at shutdown.
#[derive(Debug, Clone)]
pub struct UpSummary {
    /// The fleet's final status (every child stopped).
    pub fleet: FleetStatus,
    /// The autoscaler's final status.
    pub scaler: ScalerStatus,
}

/// One status line: instances ready/total, RPS, p99, in-flight, CPU, and the last
/// decision with its reason.
pub fn status_line(f: &FleetStatus, s: &ScalerStatus) -> String {
    let mut line = format!(
        "[up] instances {}/{} ready (desired {})",
        f.ready(),
        f.active(),
        f.desired
    );
    match &s.aggregate {
        Some(a) => {
            let num =
                |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
            line.push_str(&format!(
                " | rps {} | p99 {} ms | in-flight {}",
                num(a.rps, 1),
                num(a.p99_ms, 1),
                num(a.in_flight, 0)
            ));
        }
        None => line.push_str(" | metrics -"),
    }
    if let Some(c) = s.mean_cpu {
        line.push_str(&format!(" | cpu {:.0}%", c * 100.0));
    }
    if f.crashes_total + f.ready_timeouts_total > 0 {
        line.push_str(&format!(
            " | crashes {} not-ready {}",
            f.crashes_total, f.ready_timeouts_total
        ));
    }
    if f.oom_kills_total > 0 {
        line.push_str(&format!(" | oom-killed {}", f.oom_kills_total));
    }
    if let Some(d) = &s.decision {
        line.push_str(&format!(" | decision {}: {}", d.desired, d.reason));
    }
    line
}

/// The envelope part of the status line: the envelope, then per instance the cores used,
/// the share of CFS periods throttled and the memory in use over the last interval
/// (`i-1 0.25cpu thr 93% 41MiB`), at most [`STATUS_INSTANCES_SHOWN`] by name.
pub fn envelope_part(f: &FleetStatus, usage: &BTreeMap<String, EnvelopeUse>) -> String {
    let Some(env) = f.envelope else {
        return " | envelopes off (unlimited)".to_string();
    };
    let mut part = format!(" | envelope {}cpu/{}MiB:", env.cpu, env.memory_mib);
    let mut shown = 0;
    for i in &f.instances {
        let Some(u) = usage.get(&i.id) else { continue };
        if shown == STATUS_INSTANCES_SHOWN {
            part.push_str(&format!(" +{} more", usage.len() - shown));
            break;
        }
        part.push_str(&format!(
            " {} {:.2}cpu thr {:.0}% {:.0}MiB",
            i.id,
            u.cpu_cores,
            u.throttled_share * 100.0,
            u.memory_mib
        ));
        shown += 1;
    }
    if shown == 0 {
        part.push_str(" -");
    }
    part
}

/// Runs the deployment until `shutdown` fires (or the balancer fails), then stops
/// everything in order. `cfg` must be valid (see [`DeploymentConfig::validate`]).
pub async fn run(
    cfg: DeploymentConfig,
    opts: UpOptions,
    shutdown: CancellationToken,
) -> Result<UpSummary, FleetError> {
    cfg.validate()?;
    let fleet_cfg = cfg.resolved_fleet();
    let mut balancer = cfg.balancer.clone();
    if balancer.health.path.is_empty() {
        // The fleet admits an instance only once its readiness path answers; the
        // balancer keeps checking that same path afterwards, so an instance that stops
        // being ready (its database gone) leaves the pool, not only one that stops
        // listening. A TCP check is the balancer's default for servers we did not write.
        balancer.health.path = fleet_cfg.readiness_path.clone();
    }
    let proxy = proxy::Proxy::bind(balancer)
        .await
        .map_err(|e| FleetError::Balancer(e.to_string()))?;
    let lb = proxy.handle();
    let (fleet, handle) = Fleet::new(fleet_cfg.clone(), opts.exe.clone(), lb.clone())?;
    // `GET /fleet` and the envelope gauges on `GET /metrics` of the admin API.
    lb.set_admin_extension(Arc::new(handle.clone()));
    let (scaler, scaler_status) =
        Autoscaler::new(cfg.autoscale.clone(), handle.clone(), lb.clone()).map_err(|e| {
            FleetError::Config {
                field: "autoscale".into(),
                reason: e.to_string(),
            }
        })?;
    eprintln!(
        "scaleout up: balancer on http://{}{}; {} instance(s) of `{}` (policy {}, {}..={})",
        lb.listen_addr(),
        lb.admin_addr()
            .map(|a| format!(", admin on http://{a}"))
            .unwrap_or_default(),
        fleet_cfg.instances,
        crate::process::describe_template(
            &fleet_cfg.command_template(),
            &opts.exe,
            &fleet_cfg.data_dir
        ),
        cfg.autoscale.policy.as_str(),
        cfg.autoscale.min_instances,
        cfg.autoscale.max_instances,
    );
    match handle.envelope() {
        Some(e) => eprintln!("scaleout up: each instance runs in an envelope of {e} (cgroups)"),
        None => eprintln!(
            "scaleout up: envelopes OFF (--no-envelopes): instances run without CPU or memory limits"
        ),
    }

    // `[workers]`: the worker fleet and its backlog autoscaler (crate::workers). Started
    // before the web fleet's tasks, so its failure (a bad queue URL) leaves nothing behind.
    let workers = crate::workers::start(&cfg, &opts.exe, opts.status_every).await?;
    let proxy_stop = CancellationToken::new();
    let fleet_stop = CancellationToken::new();
    let scaler_stop = CancellationToken::new();
    let mut proxy_task = tokio::spawn(proxy.run(proxy_stop.clone()));
    let fleet_task = tokio::spawn(fleet.run(fleet_stop.clone()));
    let scaler_task = tokio::spawn(scaler.run(scaler_stop.clone()));
    let printer = opts.status_every.map(|every| {
        tokio::spawn(print_status(
            every,
            handle.clone(),
            scaler_status.clone(),
            scaler_stop.clone(),
        ))
    });

    if opts.rolling_restart_on_sighup {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| FleetError::Spawn(format!("SIGHUP handler: {e}")))?;
        let (handle, stop) = (handle.clone(), scaler_stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = hup.recv() => {
                        eprintln!("scaleout up: SIGHUP: rolling restart (one at a time, surge of one)");
                        handle.rolling_restart();
                    }
                }
            }
        });
    }

    let mut proxy_result = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut proxy_task => {
            tracing::error!("balancer stopped unexpectedly: {r:?}");
            proxy_result = Some(r);
        }
    }
    eprintln!(
        "scaleout up: stopping: the balancer stops accepting and finishes in-flight requests, then the instances stop (SIGTERM, SIGKILL after grace)"
    );
    scaler_stop.cancel();
    let _ = scaler_task.await;
    if let Some(w) = workers {
        w.stop().await;
    }
    if let Some(p) = printer {
        let _ = p.await;
    }
    // The balancer first: it stops accepting and serves every request it has accepted
    // while all instances are still up. Stopping the fleet first would take backends out
    // of a pool that still accepts requests (503s while the listener is open).
    proxy_stop.cancel();
    let proxy_result = match proxy_result {
        Some(r) => r,
        None => proxy_task.await,
    };
    // Nothing is in flight any more: each instance leaves the pool at once, then stops.
    fleet_stop.cancel();
    let _ = fleet_task.await;
    let summary = UpSummary {
        fleet: handle.status(),
        scaler: scaler_status.borrow().clone(),
    };
    eprintln!(
        "scaleout up: stopped; {} spawned, {} crashed ({} OOM-killed), {} not ready in time, {} killed after grace",
        summary.fleet.spawned_total,
        summary.fleet.crashes_total,
        summary.fleet.oom_kills_total,
        summary.fleet.ready_timeouts_total,
        summary.fleet.killed_total
    );
    match proxy_result {
        Ok(Ok(())) => Ok(summary),
        Ok(Err(e)) => Err(FleetError::Balancer(e.to_string())),
        Err(e) => Err(FleetError::Balancer(format!("balancer task: {e}"))),
    }
}

async fn print_status(
    every: Duration,
    fleet: FleetHandle,
    scaler: watch::Receiver<ScalerStatus>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev: (BTreeMap<String, EnvelopeStats>, Instant) = (BTreeMap::new(), Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (stats, now) = (fleet.envelope_stats(), Instant::now());
        let elapsed = now.duration_since(prev.1);
        // An instance first seen now has no interval yet: it is shown from the next line.
        let usage: BTreeMap<String, EnvelopeUse> = stats
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), s.since(prev.0.get(id)?, elapsed))))
            .collect();
        prev = (stats, now);
        let status = fleet.status();
        let mut line = status_line(&status, &scaler.borrow());
        // Before the decision, whose reason can be long.
        let env = envelope_part(&status, &usage);
        match line.find(" | decision ") {
            Some(at) => line.insert_str(at, &env),
            None => line.push_str(&env),
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_counts_metrics_and_reason() {
        let f = FleetStatus {
            desired: 3,
            ..FleetStatus::default()
        };
        let s = ScalerStatus {
            aggregate: Some(autoscale::AggregateSample {
                rps: Some(120.04),
                in_flight: Some(4.0),
                p99_ms: Some(12.345),
            }),
            mean_cpu: Some(0.5),
            decision: Some(autoscale::ScalingDecision::hold(
                3,
                "in_flight ratio 1.02 within tolerance",
            )),
            changes: 1,
            held: 0,
        };
        let line = status_line(&f, &s);
        assert!(line.contains("instances 0/0 ready (desired 3)"), "{line}");
        assert!(line.contains("rps 120.0"), "{line}");
        assert!(line.contains("p99 12.3 ms"), "{line}");
        assert!(line.contains("cpu 50%"), "{line}");
        assert!(
            line.contains("decision 3: in_flight ratio 1.02 within tolerance"),
            "{line}"
        );
        let idle = status_line(&f, &ScalerStatus::default());
        assert!(idle.contains("metrics -"), "{idle}");
    }

    #[test]
    fn envelope_part_shows_throttling_and_memory_per_instance() {
        use crate::envelope::Envelope;
        use crate::supervisor::InstanceStatus;
        let inst = |id: &str| InstanceStatus {
            id: id.into(),
            seq: 0,
            slot: 0,
            generation: 0,
            phase: crate::Phase::Ready,
            pid: Some(1),
            addr: None,
            cpus: None,
            restarts: 0,
            last_failure: None,
            oom_kills: 0,
        };
        let mut f = FleetStatus {
            envelope: Some(Envelope {
                cpu: 0.25,
                memory_mib: 256,
            }),
            oom_kills_total: 1,
            instances: (1..=10).map(|n| inst(&format!("i-{n}"))).collect(),
            ..FleetStatus::default()
        };
        let usage: BTreeMap<String, EnvelopeUse> = (1..=10)
            .map(|n| {
                (
                    format!("i-{n}"),
                    EnvelopeUse {
                        cpu_cores: 0.249,
                        throttled_share: 0.93,
                        memory_mib: 41.2,
                        oom_kills: 0,
                    },
                )
            })
            .collect();
        let part = envelope_part(&f, &usage);
        assert!(part.starts_with(" | envelope 0.25cpu/256MiB:"), "{part}");
        assert!(part.contains("i-1 0.25cpu thr 93% 41MiB"), "{part}");
        assert!(part.ends_with("+2 more"), "{part}");
        assert!(status_line(&f, &ScalerStatus::default()).contains("oom-killed 1"));
        f.envelope = None;
        assert_eq!(envelope_part(&f, &usage), " | envelopes off (unlimited)");
    }
}
