//! The store's one writer: a thread of its own with its own connection and a bounded queue,
//! so an fsync that takes seconds (a slow or full disk) delays the writes queued behind it,
//! never an actor's thread. Writes run in the order they were queued; a caller that must not
//! act before its write is durable (the restart record before the restart) awaits its
//! [`Written`].

use super::StoreError;
use rusqlite::Connection;
use slog::{error, Logger};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Writes that may wait for the writer; past this, a write is refused and said so.
const QUEUE: usize = 4096;

type Work = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;

struct Job {
    /// The target the write is about, for the test suite's stall fault.
    target: String,
    what: &'static str,
    work: Work,
    done: futures::channel::oneshot::Sender<Result<(), StoreError>>,
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    tx: SyncSender<Job>,
    path: Arc<str>,
    /// Where the writer says a write failed that nobody awaited.
    log: Arc<OnceLock<Logger>>,
}

/// The outcome of one queued write.
#[must_use = "await it before acting on the write, or drop it: failures are logged anyway"]
pub struct Written(futures::channel::oneshot::Receiver<Result<(), StoreError>>);

impl Written {
    fn ready(r: Result<(), StoreError>) -> Self {
        let (tx, rx) = futures::channel::oneshot::channel();
        let _ = tx.send(r);
        Self(rx)
    }

    /// Waits for the write, at most `limit`.
    pub async fn wait(self, limit: Duration, path: &str) -> Result<(), StoreError> {
        match tokio::time::timeout(limit, self.0).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::WriterGone { path: path.into() }),
            Err(_) => Err(StoreError::Slow {
                path: path.into(),
                waited: limit,
            }),
        }
    }

    /// Waits for the write on a thread that may block (not an actor's).
    pub fn blocking(self, path: &str) -> Result<(), StoreError> {
        futures::executor::block_on(self.0)
            .unwrap_or_else(|_| Err(StoreError::WriterGone { path: path.into() }))
    }
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection, path: &str) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let log: Arc<OnceLock<Logger>> = Arc::default();
        let (p, l) = (Arc::<str>::from(path), log.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let stall = stall_fault();
                for job in rx {
                    if let Some((target, pause)) = &stall {
                        if *target == job.target {
                            std::thread::sleep(*pause);
                        }
                    }
                    let r = (job.work)(&conn).map_err(|source| StoreError::Sql {
                        path: p.to_string(),
                        source,
                    });
                    if let (Err(e), Some(log)) = (&r, l.get()) {
                        error!(log, "state not written to the store; going on (a restarted daemon may not resume it)";
                            "event" => "store_failed", "write" => job.what, "target" => &job.target, "error" => %e);
                    }
                    let _ = job.done.send(r);
                }
            })?;
        Ok(Self {
            tx,
            path: path.into(),
            log,
        })
    }

    pub(super) fn set_logger(&self, log: Logger) {
        let _ = self.log.set(log);
    }

    /// Queues `work`; never blocks. A full queue refuses the write, and says so.
    pub(super) fn submit(
        &self,
        target: &str,
        what: &'static str,
        work: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Written {
        let (done, rx) = futures::channel::oneshot::channel();
        let job = Job {
            target: target.into(),
            what,
            work: Box::new(work),
            done,
        };
        match self.tx.try_send(job) {
            Ok(()) => Written(rx),
            Err(TrySendError::Full(_)) => {
                let e = StoreError::QueueFull {
                    path: self.path.to_string(),
                    waiting: QUEUE,
                };
                if let Some(log) = self.log.get() {
                    error!(log, "state store write dropped: its queue is full (the disk is too slow)";
                        "event" => "store_failed", "write" => what, "target" => target, "error" => %e);
                }
                crate::metrics::global().inc("sentinel_store_writes_dropped_total", &[]);
                Written::ready(Err(e))
            }
            Err(TrySendError::Disconnected(_)) => Written::ready(Err(StoreError::WriterGone {
                path: self.path.to_string(),
            })),
        }
    }
}

/// `SENTINEL_FAULT_STORE_STALL=<target>:<ms>`: the writer sleeps that long before each write
/// about that target, as a disk that takes seconds per fsync would (test suite only).
fn stall_fault() -> Option<(String, Duration)> {
    let spec = std::env::var("SENTINEL_FAULT_STORE_STALL").ok()?;
    let (target, ms) = spec.rsplit_once(':')?;
    Some((target.to_string(), Duration::from_millis(ms.parse().ok()?)))
}
