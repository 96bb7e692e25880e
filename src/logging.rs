//! The root logger: JSON lines for machines, coloured text for people (`--log-format`).
//! The async drain blocks rather than drops when full: a log line about an incident is never
//! lost silently.

use slog::{Drain, Level, Logger};

/// Output format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Term,
}

/// Builds the root logger writing to standard error. Keep the guard until exit: dropping it
/// flushes the lines still queued.
pub fn root(format: LogFormat, level: Level) -> (Logger, slog_async::AsyncGuard) {
    let (drain, guard) = match format {
        LogFormat::Json => {
            let d = slog_json::Json::new(LineAtATime::default())
                .add_default_keys()
                .set_flush(true)
                .build()
                .fuse();
            async_drain(d, level)
        }
        LogFormat::Term => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            let d = slog_term::FullFormat::new(decorator).build().fuse();
            async_drain(d, level)
        }
    };
    (Logger::root(drain, slog::o!()), guard)
}

fn async_drain<D>(
    d: D,
    level: Level,
) -> (
    slog::Fuse<slog::LevelFilter<slog_async::Async>>,
    slog_async::AsyncGuard,
)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    let (d, guard) = slog_async::Async::new(d)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .thread_name("log".into())
        .build_with_guard();
    (slog::LevelFilter::new(d, level).fuse(), guard)
}

/// Standard error written one whole record per `write(2)`: a record never interleaves with
/// another writer (a panic message, a child process) in the middle of a line.
#[derive(Default)]
struct LineAtATime {
    buf: Vec<u8>,
}

impl std::io::Write for LineAtATime {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        let r = err.write_all(&self.buf).and_then(|_| err.flush());
        self.buf.clear();
        r
    }
}
