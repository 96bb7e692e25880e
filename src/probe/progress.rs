//! Whether a crash recovery is moving. PostgreSQL 15 and later log "redo in progress, elapsed
//! time: …, current LSN: X/Y" every `log_startup_progress_interval` (10 s by default) while
//! they replay WAL; the newest LSN in the server log the target's forensics already name tells
//! whether redo advanced since the last look. A server answering 57P03 whose LSN moves is
//! waited on past `recovery_timeout`; one whose LSN stands still is escalated.

use crate::config::{DockerForensics, TargetConfig};
use crate::docker::DockerClient;
use std::io::{Read, Seek, SeekFrom};

/// How much of each log's end is read: progress lines are written every few seconds.
const TAIL: u64 = 256 * 1024;

/// Longest wait for the logs: a progress check must not hold the Monitor.
const LOCAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The newest redo LSN in `text`, as a number (for comparison) and as PostgreSQL writes it.
pub fn newest_redo_lsn(text: &str) -> Option<(u64, String)> {
    text.lines()
        .filter(|l| l.contains("redo in progress"))
        .filter_map(|l| {
            let lsn = l.split("current LSN: ").nth(1)?.split_whitespace().next()?;
            let (hi, lo) = lsn.split_once('/')?;
            let n = (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?;
            Some((n, lsn.to_string()))
        })
        .max_by_key(|(n, _)| *n)
}

/// The newest redo LSN in the target's server logs: the local files its forensics name, or the
/// paths it copies out of its container.
pub async fn redo_lsn(target: &TargetConfig, docker: &DockerClient) -> Option<(u64, String)> {
    // Off the Monitor's thread, and bounded: the logs are the postgres user's files.
    let patterns = target.forensic_files.clone();
    let local = tokio::task::spawn_blocking(move || {
        let mut texts = Vec::new();
        for pattern in &patterns {
            for path in glob::glob(pattern).into_iter().flatten().flatten() {
                if let Some(t) = tail(&path) {
                    texts.push(t);
                }
            }
        }
        texts
    });
    let mut texts = match tokio::time::timeout(LOCAL_WAIT, local).await {
        Ok(Ok(t)) => t,
        _ => Vec::new(),
    };
    if let Some(spec) = &target.forensic_docker {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("sentinel-progress-")
            .tempdir()
        {
            let spec = DockerForensics {
                log_tail: 0,
                ..spec.clone()
            };
            let mut used = Default::default();
            let limits = crate::docker::copy::Limits::new(TAIL, LOCAL_WAIT);
            let got =
                crate::docker::copy::collect(docker, &spec, dir.path(), &limits, &mut used).await;
            for f in got.files {
                if let Some(t) = tail(&dir.path().join(&f.name)) {
                    texts.push(t);
                }
            }
        }
    }
    texts
        .iter()
        .filter_map(|t| newest_redo_lsn(t))
        .max_by_key(|(n, _)| *n)
}

/// The newest `TAIL` bytes of a server log (the postgres user's file: no symlink, no FIFO).
fn tail(path: &std::path::Path) -> Option<String> {
    let mut f = crate::fsutil::open_untrusted(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_lsn_of_the_progress_lines_is_found() {
        let log = "\
2026-11-25 10:00:00.000 UTC [7] LOG:  redo starts at 0/1A000028
2026-11-25 10:00:10.000 UTC [7] LOG:  redo in progress, elapsed time: 10.00 s, current LSN: 0/9F000F18
2026-11-25 10:00:20.000 UTC [7] LOG:  redo in progress, elapsed time: 20.00 s, current LSN: 1/0A0000D0
2026-11-25 10:00:21.000 UTC [7] LOG:  checkpoint starting: end-of-recovery immediate
";
        let (n, s) = newest_redo_lsn(log).unwrap();
        assert_eq!(s, "1/0A0000D0");
        assert_eq!(n, (1 << 32) | 0x0A00_00D0);
        assert!(newest_redo_lsn("LOG:  database system is ready").is_none());
    }
}
