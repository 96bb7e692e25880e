//! What the daemon must be able to write, checked at start-up and again by `/healthz`, so an
//! archive directory that cannot be written is an ERROR before the first incident rather than
//! a "Permission denied" discovered in the middle of one.

use std::path::Path;

/// Why the archive directory cannot take bundles, with the fix; None when it can. Creates the
/// directory if it is missing (as the Archiver would), then does /healthz's disk check on it
/// (a probe file written, fsynced and removed).
pub fn archive_dir_problem(dir: &Path) -> Option<String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Some(format!(
            "archive directory {} (archive.local.dir, sidecar: ARCHIVE_DIR): {what}: {e}; \
             the daemon runs as uid {uid}: give that user write access to it \
             (e.g. chown {uid} {}) or point archive.local.dir / ARCHIVE_DIR at a writable directory",
            dir.display(),
            dir.display()
        ))
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail("cannot be created", &e);
    }
    crate::health::probe_dir(dir, false)
        .err()
        .and_then(|e| fail("is not writable", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_writable_directory_passes_and_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("incidents");
        assert_eq!(archive_dir_problem(&dir), None);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn an_unwritable_directory_is_named_with_the_fix() {
        if unsafe { libc::geteuid() } == 0 {
            return; // root writes anywhere; the black-box test covers it as another user
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        let p = archive_dir_problem(d.path()).expect("a problem");
        assert!(p.contains("ARCHIVE_DIR") && p.contains("chown"), "{p}");
    }
}
