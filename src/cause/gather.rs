//! The I/O behind a cause: the archived log tails, the free space of the data directory's and
//! pg_wal's filesystems, the kernel log's OOM lines, a cgroup's OOM kill count, who holds a
//! port. Each read is bounded and best effort (a missing source is an empty one), and blocking:
//! callers run it off the actors' threads.

use super::evidence::{LogTail, Space, TAIL_LINES};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Bytes read from the end of a log for its tail.
const TAIL_BYTES: u64 = 256 * 1024;

/// Most kernel log records read (the ring holds a few thousand).
const KMSG_RECORDS: usize = 20_000;

/// The newest [`TAIL_LINES`] lines of `path` (a bundle's copy), numbered as in the file, named
/// `source`. The file is opened like any file a target wrote (no symlink, regular only).
pub fn log_tail(path: &Path, source: &str) -> Option<LogTail> {
    let mut f = crate::fsutil::open_untrusted(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    // Line numbers count the newlines before the tail: streamed, never held.
    let mut before = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = start;
    while left > 0 {
        let n = f.read(&mut buf[..left.min(64 * 1024) as usize]).ok()?;
        if n == 0 {
            break;
        }
        before += buf[..n].iter().filter(|b| **b == b'\n').count();
        left -= n as u64;
    }
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let mut lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (before + i + 1, l.to_string()))
        .collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    let skip = lines.len().saturating_sub(TAIL_LINES);
    Some(LogTail {
        source: source.to_string(),
        lines: lines.into_iter().skip(skip).collect(),
    })
}

/// The server logs among a bundle's files (`*.log`, the container's log), not the heal log.
pub fn bundle_logs(dir: &Path, names: &[String]) -> Vec<LogTail> {
    names
        .iter()
        .filter(|n| n.ends_with(".log") && n.as_str() != "heal.log")
        .filter_map(|n| log_tail(&dir.join(n), n))
        .collect()
}

/// The free space of the data directory's filesystem and pg_wal's (which may be another).
pub fn space(data_dir: &Path) -> Vec<Space> {
    [
        ("data directory", data_dir.to_path_buf()),
        ("pg_wal", data_dir.join("pg_wal")),
    ]
    .into_iter()
    .filter_map(|(what, p)| crate::fsutil::statvfs(&p).map(|(free, total)| (what, p, free, total)))
    .map(|(what, p, free_bytes, total_bytes)| Space {
        what,
        path: p.display().to_string(),
        free_bytes,
        total_bytes,
    })
    .collect()
}

/// The data directory a target's pid file lives in (`{data}/postmaster.pid`).
pub fn data_dir_of(pid_file: &Path) -> Option<PathBuf> {
    pid_file.parent().map(Path::to_path_buf)
}

/// The kernel log's OOM lines (`Out of memory: Killed process ...`, `oom-kill:...`), newest
/// last, read from `/dev/kmsg` without blocking; empty when it is not readable.
pub fn kernel_oom_lines() -> Vec<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut out = std::collections::VecDeque::new();
    let mut buf = vec![0u8; 8192];
    for _ in 0..KMSG_RECORDS {
        // One record per read; EAGAIN at the end, EPIPE when a record was overwritten.
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let msg = rec.split_once(';').map_or(&*rec, |(_, m)| m);
                let msg = msg.lines().next().unwrap_or("");
                if msg.contains("Killed process") || msg.contains("oom-kill:") {
                    if out.len() >= 20 {
                        out.pop_front();
                    }
                    out.push_back(msg.to_string());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out.into()
}

/// The OOM kills counted by the memory cgroup of `pid` (cgroup v2 `memory.events`, v1
/// `memory.oom_control`).
pub fn cgroup_oom_kills(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.events")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.oom_control")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok());
        }
    }
    None
}

/// Who listens on TCP `port` on this host: `pid 1234 (nc)`, found through /proc/net/tcp{,6}
/// (the socket's inode) and /proc/*/fd (whose descriptor it is).
pub fn port_holder(port: u16) -> Option<String> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| listening_inodes(&t, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| targets.iter().any(|t| l.as_os_str() == t.as_str()))
        });
        if holds {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", comm.trim()));
        }
    }
    Some("a process this daemon cannot see (another user or namespace)".into())
}

/// The inodes of sockets listening (state 0A) on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    let want = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (local_port == want && *f.get(3)? == "0A").then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect()
}

/// Why the server died (or crashed and recovered): `clues` (what the Monitor knows: the pid,
/// its exit status, whether it lives, the Engine's state) completed with the bundle's log
/// tails, the kernel's OOM lines, the cgroup's OOM kills and the free space under the data
/// directory, then classified.
pub fn death(
    bundle: &Path,
    names: &[String],
    data_dir: Option<&Path>,
    container_pid: Option<u32>,
    mut clues: super::Evidence,
) -> super::Cause {
    clues.logs = bundle_logs(bundle, names);
    clues.kernel = kernel_oom_lines();
    if let Some(pid) = container_pid {
        clues.cgroup_oom_kills = cgroup_oom_kills(pid);
    }
    if let Some(d) = data_dir {
        clues.space = space(d);
    }
    super::classify(&clues)
}

/// Why a start failed: the start's own output (the heal log from `from` on), the server logs
/// the target's forensic patterns name (their newest lines), and who holds the port when the
/// server says it is taken.
pub fn start_failure(
    start_output: &Path,
    from: u64,
    patterns: &[String],
    port: Option<u16>,
) -> super::Cause {
    let mut ev = super::Evidence {
        port,
        ..Default::default()
    };
    if let Ok(mut f) = std::fs::File::open(start_output) {
        let mut text = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_ok()
            && f.take(TAIL_BYTES).read_to_end(&mut text).is_ok()
        {
            ev.start_output = Some(LogTail::of_text(
                "start output (heal.log)",
                &String::from_utf8_lossy(&text),
            ));
        }
    }
    ev.logs = patterns
        .iter()
        .filter_map(|p| glob::glob(p).ok())
        .flat_map(|paths| paths.filter_map(Result::ok))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().to_string();
            log_tail(&p, &name)
        })
        .collect();
    let cause = super::classify_start(&ev);
    if cause.class != super::CauseClass::PortInUse {
        return cause;
    }
    ev.port_holder = port.and_then(port_holder);
    super::classify_start(&ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_line_numbers_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("postgresql.log");
        let text: String = (1..=20_000)
            .map(|i| format!("line {i} {}\n", "x".repeat(20)))
            .collect();
        std::fs::write(&p, &text).unwrap();
        let t = log_tail(&p, "postgresql.log").unwrap();
        assert_eq!(t.lines.len(), TAIL_LINES);
        let (n, l) = t.lines.last().unwrap();
        assert_eq!(*n, 20_000);
        assert!(l.starts_with("line 20000 "));
    }

    #[test]
    fn a_listener_is_found_with_its_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let holder = port_holder(port).unwrap();
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        assert!(!space(Path::new("/tmp")).is_empty());
    }
}
