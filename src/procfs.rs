//! Reading processes from /proc: the kernel's own text, so read directly (not through the
//! untrusted-file helpers). One parser for the reaper, the hung-server stop and the pid watch.

/// The fields of `/proc/<pid>/stat` the daemon uses.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// `R`, `S`, `T` (stopped by a signal), `t` (traced), `Z` (zombie), ...
    pub state: char,
    pub ppid: i32,
    /// Start time in clock ticks after boot: with the pid, names one process for good.
    pub start: u64,
}

/// The process's stat, or None when it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces and ')': the fields follow the last ')'.
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// The process's resident memory in bytes (`/proc/<pid>/statm`), or None when it is gone.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Every process whose parent is `parent`, with its stat (a scan of /proc: the per-task
/// `children` lists are not in every kernel).
pub fn children_of(parent: i32) -> Vec<(i32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| stat(pid).filter(|s| s.ppid == parent).map(|s| (pid, s)))
        .collect()
}
