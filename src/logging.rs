//! The root logger: JSON lines for machines, coloured text for people (`--log-format`).
//! The async drain blocks rather than drops when full: a log line about an incident is never
//! lost silently. In the text format, control characters in messages and values are escaped:
//! those often carry text from outside (a server's error message, a container's name, a
//! webhook's answer), which must not recolour the terminal or forge a log line.

use slog::{Drain, Level, Logger};
use slog_term::{Decorator, RecordDecorator};
use std::io;

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
            let d = slog_term::FullFormat::new(Escaping(decorator))
                .build()
                .fuse();
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

/// A terminal decorator whose messages and values are written with control characters
/// escaped; the decorator's own colours and line ends pass through.
struct Escaping<D>(D);

impl<D: Decorator> Decorator for Escaping<D> {
    fn with_record<F>(
        &self,
        record: &slog::Record,
        values: &slog::OwnedKVList,
        f: F,
    ) -> io::Result<()>
    where
        F: FnOnce(&mut dyn RecordDecorator) -> io::Result<()>,
    {
        self.0.with_record(record, values, |inner| {
            f(&mut EscapingRecord {
                inner,
                escape: false,
            })
        })
    }
}

struct EscapingRecord<'a> {
    inner: &'a mut dyn RecordDecorator,
    /// True while a message or a value is being written.
    escape: bool,
}

impl io::Write for EscapingRecord<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.escape {
            self.inner.write_all(&escape_controls(buf))?;
        } else {
            self.inner.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl RecordDecorator for EscapingRecord<'_> {
    fn reset(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.reset()
    }
    fn start_whitespace(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.start_whitespace()
    }
    fn start_msg(&mut self) -> io::Result<()> {
        self.escape = true;
        self.inner.start_msg()
    }
    fn start_timestamp(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.start_timestamp()
    }
    fn start_level(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.start_level()
    }
    fn start_comma(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.start_comma()
    }
    fn start_key(&mut self) -> io::Result<()> {
        self.escape = true;
        self.inner.start_key()
    }
    fn start_value(&mut self) -> io::Result<()> {
        self.escape = true;
        self.inner.start_value()
    }
    fn start_location(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.start_location()
    }
    fn start_separator(&mut self) -> io::Result<()> {
        self.escape = false;
        self.inner.start_separator()
    }
}

/// C0 controls, DEL and the C1 controls (U+0080..U+009F, which some terminals obey like
/// ESC) written as `\n`, `\r`, `\t` or `\u{1b}`; everything else as it is.
pub fn escape_controls(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        let c1 = b == 0xC2 && buf.get(i + 1).is_some_and(|n| (0x80..0xA0).contains(n));
        if c1 {
            out.extend_from_slice(format!("\\u{{{:x}}}", buf[i + 1]).as_bytes());
            i += 2;
            continue;
        }
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1F | 0x7F => out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes()),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// [`escape_controls`] for a string (the console channel's lines).
pub fn escape_controls_str(s: &str) -> String {
    String::from_utf8_lossy(&escape_controls(s.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(
            super::escape_controls_str("\u{1b}[31mred\n2026 INFO forged\r\u{9b}2J é"),
            "\\u{1b}[31mred\\n2026 INFO forged\\r\\u{9b}2J é"
        );
    }
}
