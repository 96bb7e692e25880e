//! The pure classification: evidence in, one [`Cause`] out. Reads PostgreSQL's own messages
//! (their text is stable across versions 12 to 17) and the facts the I/O code gathered; no
//! I/O, so each rule is tested by a few log lines.

use super::evidence::{Evidence, Exit, LogTail, Space};
use super::{Cause, CauseClass, Quote};

/// Longest quoted line: enough for a message, never a whole query dump.
const QUOTE_MAX: usize = 300;

/// How far back from the end a PANIC or FATAL still counts as "before death".
const LAST_LINES: usize = 40;

/// FATALs a client causes every day; none of them explains a dead server.
const CLIENT_FATALS: &[&str] = &[
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
    "terminating connection due to idle",
    "connection to client lost",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
    "canceling authentication due to timeout",
    "is not permitted to log in",
];

/// Why the server died (or crashed and recovered), from its last log lines, its exit status,
/// the kernel's and the Engine's word.
pub fn classify(ev: &Evidence) -> Cause {
    plain(death(ev))
}

/// A sentence quotes a server's text: no control character may reach a terminal or a chat.
fn plain(mut c: Cause) -> Cause {
    c.sentence = c
        .sentence
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect();
    c
}

fn death(ev: &Evidence) -> Cause {
    if ev.postmaster_alive {
        if let Some(c) = backend_crash(ev) {
            return c;
        }
    }
    if let Some(c) = disk_full(ev, &session_lines(ev)) {
        return c;
    }
    if let Some(c) = shutdown_request(ev) {
        return c;
    }
    if let Some(c) = oom_killed(ev) {
        return c;
    }
    let recent = recent_lines(ev, LAST_LINES);
    if let Some(c) = severe(&recent, "PANIC") {
        return c;
    }
    if let Some(c) = severe(&recent, "FATAL") {
        return c;
    }
    if let Some(c) = signalled(ev) {
        return c;
    }
    vanished(ev)
}

/// Why a start failed, from the start's own output and the server log's last lines.
pub fn classify_start(ev: &Evidence) -> Cause {
    plain(start(ev))
}

fn start(ev: &Evidence) -> Cause {
    let mut lines: Vec<(&str, usize, &str)> = Vec::new();
    if let Some(out) = &ev.start_output {
        push_tail(&mut lines, out, usize::MAX);
    }
    for t in &ev.logs {
        push_tail(&mut lines, t, LAST_LINES);
    }
    if let Some(c) = config_error(&lines) {
        return c;
    }
    if let Some(c) = port_in_use(ev, &lines) {
        return c;
    }
    if let Some(c) = stale_lock(&lines) {
        return c;
    }
    if let Some(c) = permissions(&lines) {
        return c;
    }
    if let Some(c) = shared_memory(&lines) {
        return c;
    }
    if let Some(c) = disk_full(ev, &lines) {
        return c;
    }
    let own = this_start(&lines);
    if let Some(c) = severe(&own, "FATAL").or_else(|| severe(&own, "PANIC")) {
        return c;
    }
    Cause::unknown("the start's output and the server log's last lines")
}

/// The lines each source wrote since its last `starting PostgreSQL`: a PANIC or FATAL of the
/// run that died is not the start's reason (a start that failed on its own PANIC, such as a
/// missing control file, is escalated at once, see [`CauseClass::start_is_futile`]).
fn this_start<'a>(lines: &[(&'a str, usize, &'a str)]) -> Vec<(&'a str, usize, &'a str)> {
    let last_start = |src: &str| {
        lines
            .iter()
            .rposition(|(s, _, l)| *s == src && l.contains("starting PostgreSQL"))
    };
    lines
        .iter()
        .enumerate()
        .filter(|(i, (src, _, _))| last_start(src).is_none_or(|k| *i >= k))
        .map(|(_, l)| *l)
        .collect()
}

/// `(source, line number, text)` of the newest `n` lines of a tail.
fn push_tail<'a>(out: &mut Vec<(&'a str, usize, &'a str)>, t: &'a LogTail, n: usize) {
    let skip = t.lines.len().saturating_sub(n);
    out.extend(
        t.lines
            .iter()
            .skip(skip)
            .map(|(i, l)| (t.source.as_str(), *i, l.as_str())),
    );
}

/// The lines since the server last became ready, in every log (a shutdown request or a full
/// disk of an earlier run does not explain this death).
fn session_lines(ev: &Evidence) -> Vec<(&str, usize, &str)> {
    let mut out = Vec::new();
    for t in &ev.logs {
        let from = t
            .lines
            .iter()
            .rposition(|(_, l)| l.contains("database system is ready to accept"))
            .map_or(0, |i| i + 1);
        push_tail(&mut out, t, t.lines.len() - from);
    }
    out
}

/// The newest `n` lines of the current session of every log.
fn recent_lines(ev: &Evidence, n: usize) -> Vec<(&str, usize, &str)> {
    let mut out = Vec::new();
    for t in &ev.logs {
        let from = t
            .lines
            .iter()
            .rposition(|(_, l)| l.contains("database system is ready to accept"))
            .map_or(0, |i| i + 1);
        let from = from.max(t.lines.len().saturating_sub(n));
        push_tail(&mut out, t, t.lines.len() - from);
    }
    out
}

/// A quoted line: redacted (a password in a logged statement), cut short, printable.
fn quote(source: &str, line: Option<usize>, text: &str) -> Quote {
    let text = crate::redact::redact_text(text.trim());
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Quote {
        source: source.to_string(),
        line,
        text: clip(&text, QUOTE_MAX),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The message of a log line after its severity (`PANIC:  msg` → `msg`).
fn message<'a>(line: &'a str, severity: &str) -> Option<&'a str> {
    let tag = format!("{severity}:  ");
    line.find(&tag).map(|i| line[i + tag.len()..].trim())
}

/// `"…"`: the first double-quoted string after `after` in `s`.
fn quoted_after<'a>(s: &'a str, after: &str) -> Option<&'a str> {
    let rest = &s[s.find(after)? + after.len()..];
    let start = rest.find('"')? + 1;
    let len = rest[start..].find('"')?;
    Some(&rest[start..start + len])
}

/// The number after `word ` in `s` (`line 12`, `PID 345`, `port 5432`).
fn number_after(s: &str, word: &str) -> Option<u64> {
    let rest = &s[s.find(word)? + word.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The free space of each filesystem, for the sentence and the evidence.
fn space_text(space: &[Space]) -> String {
    space
        .iter()
        .map(|s| {
            format!(
                "{} ({}) has {} free of {}",
                s.what,
                s.path,
                mib(s.free_bytes),
                mib(s.total_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn disk_full(ev: &Evidence, lines: &[(&str, usize, &str)]) -> Option<Cause> {
    let (src, n, l) = lines
        .iter()
        .rev()
        .find(|(_, _, l)| l.contains("No space left on device"))?;
    let mut evidence = vec![quote(src, Some(*n), l)];
    evidence.extend(ev.space.iter().map(|s| Quote {
        source: "statvfs".into(),
        line: None,
        text: format!(
            "{} {}: {} free of {}",
            s.what,
            s.path,
            mib(s.free_bytes),
            mib(s.total_bytes)
        ),
    }));
    let numbers = if ev.space.is_empty() {
        String::new()
    } else {
        format!("; now {}", space_text(&ev.space))
    };
    Some(Cause {
        class: CauseClass::DiskFull,
        sentence: format!("Disk full: the server wrote \"No space left on device\"{numbers}."),
        evidence,
        fix: Some("Free space on that filesystem (old WAL kept by a replication slot or a failing archive_command, logs, bloated tables) or grow the volume: a restart cannot make room, so restarts are held until the data directory's and pg_wal's filesystems have 10 % or 1 GiB free, then the server is started once.".into()),
    })
}

fn shutdown_request(ev: &Evidence) -> Option<Cause> {
    let lines = session_lines(ev);
    let (src, n, l) = lines
        .iter()
        .rev()
        .find(|(_, _, l)| l.contains("shutdown request"))?;
    let mode = ["smart", "fast", "immediate"]
        .into_iter()
        .find(|m| l.contains(&format!("received {m} shutdown request")))?;
    let how = match mode {
        "smart" => "pg_ctl stop -m smart or SIGTERM",
        "fast" => "pg_ctl stop -m fast or SIGINT",
        _ => "pg_ctl stop -m immediate or SIGQUIT",
    };
    Some(Cause {
        class: CauseClass::ShutdownRequest,
        sentence: format!("Stopped on request: the server received a {mode} shutdown request ({how}, from a person, a script or a service manager)."),
        evidence: vec![quote(src, Some(*n), l)],
        fix: Some("If the stop was intended, open a maintenance window first (POST /targets/NAME/maintenance) so the server is not restarted behind the person stopping it.".into()),
    })
}

/// The OOM killer's own word about the postmaster: the Engine's `OOMKilled`, or a kernel line
/// naming its pid.
fn oom_killed(ev: &Evidence) -> Option<Cause> {
    if ev.engine_oom_killed == Some(true) {
        let mut evidence = vec![Quote {
            source: "Docker Engine".into(),
            line: None,
            text: "State.OOMKilled=true".into(),
        }];
        if let Some(Exit::Code(c)) = ev.exit {
            evidence.push(Quote {
                source: ev.exit_source.clone(),
                line: None,
                text: format!("exit code {c}"),
            });
        }
        evidence.extend(kernel_quotes(ev, None));
        return Some(Cause {
            class: CauseClass::OomKilled,
            sentence: "Killed by the kernel's OOM killer: the container reached its memory limit and its main process (the postmaster) was killed (Docker reports OOMKilled).".into(),
            evidence,
            fix: Some("Raise the container's memory limit, or lower shared_buffers, work_mem and max_connections so the server fits in it.".into()),
        });
    }
    let pid = ev.postmaster_pid?;
    let line = ev.kernel.iter().rev().find(|l| {
        l.contains(&format!("Killed process {pid} ")) || l.contains(&format!("pid={pid},"))
    })?;
    Some(Cause {
        class: CauseClass::OomKilled,
        sentence: format!("Killed by the kernel's OOM killer: the kernel log names the postmaster (pid {pid})."),
        evidence: vec![quote("kernel log", None, line)],
        fix: Some("Give the host (or the cgroup) more memory, or lower shared_buffers, work_mem and max_connections; look for another process eating memory.".into()),
    })
}

fn kernel_quotes(ev: &Evidence, pid: Option<u64>) -> Vec<Quote> {
    ev.kernel
        .iter()
        .rev()
        .filter(|l| pid.is_none_or(|p| l.contains(&format!("Killed process {p} "))))
        .take(1)
        .map(|l| quote("kernel log", None, l))
        .collect()
}

/// The last PANIC (or client-unrelated FATAL) in `lines`, with the lines right after it
/// (its DETAIL, HINT, CONTEXT).
fn severe(lines: &[(&str, usize, &str)], severity: &str) -> Option<Cause> {
    let i = lines.iter().rposition(|(_, _, l)| {
        message(l, severity).is_some_and(|m| !CLIENT_FATALS.iter().any(|c| m.contains(c)))
    })?;
    let (src, n, l) = lines[i];
    let msg = message(l, severity).unwrap_or(l);
    let mut evidence = vec![quote(src, Some(n), l)];
    for (s, k, more) in lines.iter().skip(i + 1).take(2) {
        if ["DETAIL:  ", "HINT:  ", "CONTEXT:  "]
            .iter()
            .any(|t| more.contains(t))
        {
            evidence.push(quote(s, Some(*k), more));
        }
    }
    let (class, what) = if severity == "PANIC" {
        (CauseClass::Panic, "The server PANICked")
    } else {
        (CauseClass::Fatal, "Died on a FATAL error")
    };
    Some(Cause {
        class,
        sentence: format!(
            "{what}: \"{}\" ({src} line {n}).",
            clip(&crate::redact::redact_text(msg), 160)
        ),
        evidence,
        fix: None,
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        _ => "a signal",
    }
}

/// The exit status says a signal: from waitpid, or a container's 128+n.
fn signalled(ev: &Evidence) -> Option<Cause> {
    let sig = match ev.exit? {
        Exit::Signal(s) => s,
        Exit::Code(c) if (129..=159).contains(&c) => (c - 128) as i32,
        Exit::Code(_) => return None,
    };
    let text = match ev.exit? {
        Exit::Signal(s) => format!("terminated by signal {s} ({})", signal_name(s)),
        Exit::Code(c) => format!("exit code {c} (128 + {sig}, {})", signal_name(sig)),
    };
    let who = if sig == libc::SIGKILL {
        " by a person, a script or the OOM killer (the kernel log shows no OOM kill of it)"
    } else {
        ""
    };
    Some(Cause {
        class: CauseClass::Killed,
        sentence: format!(
            "Killed by signal {sig} ({}){who}, with no shutdown, PANIC or FATAL in its log.",
            signal_name(sig)
        ),
        evidence: vec![Quote {
            source: ev.exit_source.clone(),
            line: None,
            text,
        }],
        fix: None,
    })
}

/// Dead with nothing said: SIGKILL is the one end that leaves no line.
fn vanished(ev: &Evidence) -> Cause {
    let last = ev
        .logs
        .iter()
        .filter_map(|t| t.lines.last().map(|(n, l)| quote(&t.source, Some(*n), l)))
        .next_back();
    let Some(last) = last else {
        return Cause::unknown(
            "the server log (none was archived), the exit status and the kernel log",
        );
    };
    if !ev.postmaster_dead {
        return Cause::unknown("the server log's last lines");
    }
    Cause {
        class: CauseClass::Killed,
        sentence: "Killed without warning: the postmaster vanished with no shutdown, PANIC or FATAL in its log, as SIGKILL leaves it (a person, a script or the OOM killer; the kernel log shows no OOM kill of it).".into(),
        evidence: vec![last],
        fix: None,
    }
}

/// A server process died and the postmaster reinitialized: the crash report, the query it ran
/// and the reinitialization, quoted.
fn backend_crash(ev: &Evidence) -> Option<Cause> {
    for t in ev.logs.iter().rev() {
        let Some(reinit) = t.lines.iter().rposition(|(_, l)| {
            l.contains("all server processes terminated; reinitializing")
                || l.contains("terminating any other active server processes")
        }) else {
            continue;
        };
        let before = &t.lines[..=reinit];
        let crash = before.iter().rposition(|(_, l)| {
            l.contains("was terminated by signal") || l.contains("exited with exit code")
        });
        let mut evidence = Vec::new();
        let (mut pid, mut sig, mut query) = (None, None, None);
        if let Some(i) = crash {
            let (n, l) = &t.lines[i];
            evidence.push(quote(&t.source, Some(*n), l));
            pid = number_after(l, "(PID ");
            sig = number_after(l, "terminated by signal");
            if let Some((k, d)) = t.lines.get(i + 1) {
                if let Some(q) = d.split("Failed process was running: ").nth(1) {
                    let q = clip(&crate::redact::redact_sql(q.trim()), 200);
                    evidence.push(quote(&t.source, Some(*k), d));
                    query = Some(q);
                }
            }
        }
        // A PANIC (a backend's own, e.g. a WAL write that failed) ends as signal 6: quoted.
        let panic = crash.and_then(|i| {
            t.lines[..i]
                .iter()
                .rev()
                .take(5)
                .find(|(_, l)| message(l, "PANIC").is_some())
        });
        if let Some((k, p)) = panic {
            evidence.insert(0, quote(&t.source, Some(*k), p));
        }
        let (n, l) = &t.lines[reinit];
        evidence.push(quote(&t.source, Some(*n), l));
        let oom = oom_evidence(ev, pid, sig);
        let oom = match oom {
            Some(quotes) => {
                evidence.extend(quotes);
                true
            }
            None => false,
        };
        let panic = panic.and_then(|(_, p)| message(p, "PANIC"));
        let who = crash_words(pid, sig, oom, query.as_deref(), panic);
        let fix = if oom {
            "Find the query's memory use (work_mem, hash or sort sizes, a huge array or string) or raise the memory limit; the server recovered by itself, so it was not restarted."
        } else {
            "Find what crashed it (the query above, an extension, a core dump in the data directory); the server recovered by itself, so it was not restarted."
        };
        return Some(Cause {
            class: CauseClass::BackendCrash,
            sentence: format!("Backend crash: {who}; the postmaster lived, dropped every connection and ran crash recovery."),
            evidence,
            fix: Some(fix.into()),
        });
    }
    None
}

/// Which server process died of what, running which query (after which PANIC).
fn crash_words(
    pid: Option<u64>,
    sig: Option<u64>,
    oom: bool,
    query: Option<&str>,
    panic: Option<&str>,
) -> String {
    let mut who = match (pid, sig) {
        (Some(p), Some(9)) if oom => {
            format!("server process {p} was killed by the kernel's OOM killer (signal 9)")
        }
        (Some(p), Some(s)) => format!(
            "server process {p} was terminated by signal {s} ({})",
            signal_name(s as i32)
        ),
        (Some(p), None) => format!("server process {p} exited abnormally"),
        _ => "a server process crashed".to_string(),
    };
    if let Some(q) = query {
        who.push_str(&format!(" while running \"{q}\""));
    }
    if let Some(m) = panic {
        who.push_str(&format!(
            " after a PANIC: \"{}\"",
            clip(&crate::redact::redact_text(m), 160)
        ));
    }
    who
}

/// The OOM killer's word on a backend killed by signal 9 (the kernel log naming its pid, the
/// Engine's `oom` event, the cgroup's count), quoted; None when nothing says OOM.
fn oom_evidence(ev: &Evidence, pid: Option<u64>, sig: Option<u64>) -> Option<Vec<Quote>> {
    let kernel = pid.is_some_and(|p| {
        ev.kernel
            .iter()
            .any(|k| k.contains(&format!("Killed process {p} ")))
    });
    let cgroup = ev.cgroup_oom_kills.filter(|k| *k > 0);
    let said = ev.engine_oom_killed == Some(true) || ev.engine_oom_event || cgroup.is_some();
    if sig != Some(9) || !(said || kernel) {
        return None;
    }
    let mut quotes = kernel_quotes(ev, pid);
    if ev.engine_oom_event {
        quotes.push(Quote {
            source: "Docker Engine".into(),
            line: None,
            text: "event oom (the container's postmaster still runs)".into(),
        });
    }
    if let Some(k) = cgroup {
        quotes.push(Quote {
            source: "cgroup memory.events".into(),
            line: None,
            text: format!("oom_kill {k}"),
        });
    }
    Some(quotes)
}

fn config_error(lines: &[(&str, usize, &str)]) -> Option<Cause> {
    let hit = lines.iter().find(|(_, _, l)| {
        l.contains("syntax error in file")
            || (l.contains("configuration parameter") && l.contains(" in file "))
            || l.contains("invalid value for parameter")
            || (l.contains("parameter \"") && l.contains(" requires a "))
    });
    let contains = lines
        .iter()
        .find(|(_, _, l)| l.contains("configuration file \"") && l.contains("contains errors"));
    let (src, n, l) = hit.or(contains)?;
    let file = quoted_after(l, "in file ")
        .or_else(|| contains.and_then(|(_, _, c)| quoted_after(c, "configuration file ")))
        .unwrap_or("postgresql.conf");
    let line = number_after(l, "\" line ");
    let at = match line {
        Some(k) => format!("{file} line {k}"),
        None => file.to_string(),
    };
    let msg = ["LOG", "FATAL", "ERROR"]
        .iter()
        .find_map(|s| message(l, s))
        .unwrap_or(l);
    // The file and line are said once, before the message: `syntax error, near token "="`.
    let msg = match (msg.find(" in file \""), line) {
        (Some(i), Some(k)) => {
            let rest = msg[i..]
                .split_once(&format!("line {k}"))
                .map_or("", |(_, r)| r);
            format!("{}{rest}", &msg[..i])
        }
        _ => msg.to_string(),
    };
    let mut evidence = vec![quote(src, Some(*n), l)];
    if let Some((s, k, c)) = contains.filter(|c| c.2 != *l) {
        evidence.push(quote(s, Some(*k), c));
    }
    Some(Cause {
        class: CauseClass::ConfigError,
        sentence: format!(
            "The start failed on a configuration error at {at}: {}.",
            clip(&crate::redact::redact_text(&msg), 160)
        ),
        evidence,
        fix: Some(format!("Correct {at} (or undo the last change to it), then start the server; another start would fail the same way, so sentinel-remedy stopped at the first.")),
    })
}

fn port_in_use(ev: &Evidence, lines: &[(&str, usize, &str)]) -> Option<Cause> {
    let (src, n, l) = lines.iter().find(|(_, _, l)| {
        l.contains("Address already in use") || l.contains("already running on port")
    })?;
    let port = ev.port.map(u64::from).or_else(|| {
        lines
            .iter()
            .find_map(|(_, _, l)| number_after(l, "already running on port"))
    });
    let port_text = port
        .map(|p| format!("port {p}"))
        .unwrap_or("the port".into());
    let holder = match &ev.port_holder {
        Some(h) => format!(" by {h}"),
        None => " by another process (not found in /proc: another namespace or user)".into(),
    };
    let mut evidence = vec![quote(src, Some(*n), l)];
    if let Some(h) = &ev.port_holder {
        evidence.push(Quote {
            source: "/proc/net/tcp".into(),
            line: None,
            text: format!("{port_text} is held{}", format_args!(" by {h}")),
        });
    }
    Some(Cause {
        class: CauseClass::PortInUse,
        sentence: format!("The start failed: {port_text} is already in use{holder}."),
        evidence,
        fix: Some(format!("Stop the process holding {port_text}, or move one of them to another port; another start would fail the same way.")),
    })
}

fn stale_lock(lines: &[(&str, usize, &str)]) -> Option<Cause> {
    let (src, n, l) = lines
        .iter()
        .find(|(_, _, l)| l.contains("lock file \"") && l.contains("already exists"))?;
    let file = quoted_after(l, "lock file ").unwrap_or("postmaster.pid");
    let hint = lines.iter().find(|(_, _, h)| h.contains("(PID "));
    let pid = hint.and_then(|(_, _, h)| number_after(h, "(PID "));
    let mut evidence = vec![quote(src, Some(*n), l)];
    if let Some((s, k, h)) = hint {
        evidence.push(quote(s, Some(*k), h));
    }
    let names = pid.map(|p| format!(", naming PID {p}")).unwrap_or_default();
    Some(Cause {
        class: CauseClass::StaleLockFile,
        sentence: format!("The start failed: the lock file {file} already exists{names}."),
        evidence,
        fix: Some(format!("If no postmaster of this data directory runs as that pid, remove {file} and start the server.")),
    })
}

fn permissions(lines: &[(&str, usize, &str)]) -> Option<Cause> {
    let (src, n, l) = lines.iter().find(|(_, _, l)| {
        l.contains("has invalid permissions")
            || l.contains("has wrong ownership")
            || (l.contains("data directory") && l.contains("Permission denied"))
            || (l.contains("FATAL:  ") && l.contains("Permission denied"))
    })?;
    let dir = quoted_after(l, "directory ").unwrap_or("the data directory");
    Some(Cause {
        class: CauseClass::DataDirPermissions,
        sentence: format!("The start failed on the data directory's permissions or ownership: {dir}."),
        evidence: vec![quote(src, Some(*n), l)],
        fix: Some(format!("Give {dir} back to the server's user with mode 0700 (chown -R postgres: {dir}; chmod 0700 {dir}), then start the server.")),
    })
}

fn shared_memory(lines: &[(&str, usize, &str)]) -> Option<Cause> {
    let (src, n, l) = lines.iter().find(|(_, _, l)| {
        l.contains("could not create shared memory segment")
            || l.contains("could not map anonymous shared memory")
            || l.contains("pre-existing shared memory block")
    })?;
    Some(Cause {
        class: CauseClass::SharedMemory,
        sentence: "The start failed: shared memory could not be created (or an old server process still holds it).".into(),
        evidence: vec![quote(src, Some(*n), l)],
        fix: Some("Lower shared_buffers or max_connections, raise the kernel's shared memory limits or the container's --shm-size, or end the old server processes still attached to it.".into()),
    })
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
