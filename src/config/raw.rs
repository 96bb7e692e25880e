//! The registry exactly as written in YAML, gathered from the section files: every struct
//! denies unknown keys; values that need checking (durations, DSNs, URLs) stay text here and
//! are judged by their section's validation.

pub use super::archive::{RawArchive, RawLocalArchive, RawS3Archive, RawSize};
pub use super::budget::RawBudget;
pub use super::cluster::RawCluster;
pub use super::defaults::RawDefaults;
pub use super::discovery::{RawDiscovery, RawDockerDiscovery};
pub use super::docker::RawDocker;
pub use super::fleet_guard::RawFleetGuard;
pub use super::forensics::{RawDockerForensics, RawForensics};
pub use super::heal::{RawComposeHeal, RawDockerHeal, RawHeal};
pub use super::heartbeat::RawHeartbeat;
pub use super::lease::RawLease;
pub use super::notify::{RawChatWebhook, RawGenericWebhook, RawNotify, RawPagerDuty};
pub use super::probe::RawProbe;
pub use super::server::RawServer;
pub use super::targets::{RawProcess, RawTarget};
