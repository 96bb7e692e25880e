//! The flight recorder's host half: what the machine under the server says, beside each SQL
//! sample. For a server on this host (a target with `process.pid_file`): the free space of
//! the filesystems of its data directory (the pid file's directory) and of `pg_wal` (its own
//! filesystem when it is a link elsewhere), and the postmaster's resident memory. For a
//! container: the cgroup's memory use and limit from the Engine's one-shot stats.
//!
//! Everything is read off the actor threads within [`HOST_WAIT`]: a hung filesystem or Engine
//! costs one sample's host half, nothing more.

use super::Vital;
use crate::config::TargetConfig;
use std::path::Path;
use std::time::Duration;

/// Longest a sample waits for the host's numbers.
pub const HOST_WAIT: Duration = Duration::from_secs(2);

/// What the host told for one sample; `None` where it told nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostVitals {
    /// (free, size) bytes of the data directory's filesystem.
    pub data_disk: Option<(u64, u64)>,
    /// (free, size) bytes of pg_wal's filesystem.
    pub wal_disk: Option<(u64, u64)>,
    pub postmaster_rss: Option<u64>,
    /// (use, limit) bytes of the container's cgroup.
    pub container_memory: (Option<u64>, Option<u64>),
}

impl HostVitals {
    /// The known values, by vital.
    pub fn values(&self) -> Vec<(Vital, f64)> {
        let mut v = Vec::new();
        if let Some((free, size)) = self.data_disk {
            v.extend([
                (Vital::DataDiskFree, free as f64),
                (Vital::DataDiskSize, size as f64),
            ]);
        }
        if let Some((free, size)) = self.wal_disk {
            v.extend([
                (Vital::WalDiskFree, free as f64),
                (Vital::WalDiskSize, size as f64),
            ]);
        }
        if let Some(r) = self.postmaster_rss {
            v.push((Vital::PostmasterRss, r as f64));
        }
        if let Some(u) = self.container_memory.0 {
            v.push((Vital::ContainerMemory, u as f64));
        }
        if let Some(l) = self.container_memory.1 {
            v.push((Vital::ContainerMemoryLimit, l as f64));
        }
        v
    }
}

/// The disks and the postmaster of a server on this host, named by its pid file (blocking).
fn bare(pid_file: &Path) -> HostVitals {
    let data = pid_file.parent().unwrap_or(Path::new("/"));
    HostVitals {
        data_disk: crate::fsutil::statvfs(data),
        wal_disk: crate::fsutil::statvfs(&data.join("pg_wal")),
        postmaster_rss: crate::pidwatch::read_pid_file(pid_file)
            .ok()
            .and_then(crate::procfs::rss_bytes),
        container_memory: (None, None),
    }
}

/// Reads the host's numbers for `target`, within [`HOST_WAIT`].
pub async fn read(target: &TargetConfig, docker: &crate::docker::DockerClient) -> HostVitals {
    let mut out = HostVitals::default();
    if let Some(pid_file) = target.pid_file.clone() {
        let work = tokio::task::spawn_blocking(move || bare(&pid_file));
        if let Ok(Ok(h)) = tokio::time::timeout(HOST_WAIT, work).await {
            out = h;
        }
    }
    if let Some(c) = target.container().cloned() {
        let ask = docker
            .call(|api, ep| async move { crate::docker::container::memory(&api, &ep, &c).await });
        if let Ok(Ok(m)) = tokio::time::timeout(HOST_WAIT, ask).await {
            out.container_memory = m;
        }
    }
    out
}
