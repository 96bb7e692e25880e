//! Unix signals turned into Supervisor messages: SIGHUP reloads, SIGTERM and SIGINT shut down.

use crate::actors::messages::{Reload, Shutdown};
use crate::actors::supervisor::Supervisor;
use actix::Addr;
use tokio::signal::unix::{signal, SignalKind};

/// Listens for signals for as long as the system runs.
pub fn forward(sup: Addr<Supervisor>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    actix_rt::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = hup.recv() => sup.do_send(Reload),
                Some(()) = term.recv() => sup.do_send(Shutdown { signal: "SIGTERM" }),
                Some(()) = int.recv() => sup.do_send(Shutdown { signal: "SIGINT" }),
                else => break,
            }
        }
    });
    Ok(())
}
