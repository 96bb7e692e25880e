//! The upload spool under the state dir: one JSON record per bundle still to be uploaded,
//! written before the upload starts, so an upload cut short (S3 down, daemon killed) is
//! resumed, also after a restart. With no local sink, bundles are staged here too.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One bundle waiting for S3.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingUpload {
    /// Also the record's file name (a record whose id does not parse is not loaded).
    pub incident_id: crate::ids::IncidentId,
    pub target: String,
    /// The bundle directory on disk (the local sink's, or a staging dir in the spool).
    pub bundle_dir: PathBuf,
    /// The directory is the spool's own staging copy: delete it once everything is up.
    pub staged: bool,
    /// No more files will be added (the heal log is in): staging may then be removed.
    pub complete: bool,
    /// Files already uploaded, by name, with the SHA-256 they had: a retry skips them, and a
    /// file changed since (the manifest, after the heal) goes up again.
    #[serde(default)]
    pub uploaded: BTreeMap<String, String>,
}

impl PendingUpload {
    /// The record's bundle directory is named after its incident (`{root}/{incident id}`, the
    /// root being the local sink's or the staging one): a record that points at another
    /// directory was not written by the daemon and is not loaded, so no other directory is
    /// uploaded on its word (and only the staging copy itself is ever removed, see `finish`).
    fn names_its_bundle(&self) -> bool {
        self.bundle_dir.file_name() == Some(std::ffi::OsStr::new(self.incident_id.as_str()))
    }
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("spool"),
        }
    }

    /// Where bundles are staged when there is no local sink.
    pub fn staging_root(&self) -> PathBuf {
        self.root.join("bundles")
    }

    fn record_path(&self, id: &crate::ids::IncidentId) -> PathBuf {
        self.root.join("pending").join(format!("{id}.json"))
    }

    /// Writes the record durably (temp file, fsync, rename).
    pub fn save(&self, rec: &PendingUpload) -> std::io::Result<()> {
        let path = self.record_path(&rec.incident_id);
        let dir = path.parent().expect("record has a parent");
        crate::fsutil::private_dir(&self.root)?;
        crate::fsutil::private_dir(dir)?;
        let tmp = dir.join(format!(".{}.tmp", rec.incident_id));
        let mut f = crate::fsutil::create_private(&tmp)?;
        serde_json::to_writer_pretty(&mut f, rec).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    pub fn load(&self, id: &crate::ids::IncidentId) -> Option<PendingUpload> {
        let text = std::fs::read(self.record_path(id)).ok()?;
        serde_json::from_slice(&text)
            .ok()
            .filter(PendingUpload::names_its_bundle)
    }

    /// Every pending record, oldest incident first.
    pub fn load_all(&self) -> Vec<PendingUpload> {
        let mut out: Vec<PendingUpload> = std::fs::read_dir(self.root.join("pending"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .filter(PendingUpload::names_its_bundle)
            .collect();
        out.sort_by(|a, b| a.incident_id.cmp(&b.incident_id));
        out
    }

    /// The bundle is fully uploaded: forget it, and drop the staging copy if it is ours.
    pub fn finish(&self, rec: &PendingUpload) -> std::io::Result<()> {
        let staging = crate::archive::local::bundle_dir(&self.staging_root(), &rec.incident_id);
        if rec.staged && rec.complete && rec.bundle_dir == staging {
            let _ = std::fs::remove_dir_all(&rec.bundle_dir);
        }
        match std::fs::remove_file(self.record_path(&rec.incident_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether no bundle waits for S3.
    pub fn is_empty(&self) -> bool {
        self.load_all().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_round_trip_and_finishing_removes_staging() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let staged = spool.staging_root().join("20260101T000000.000Z-a");
        std::fs::create_dir_all(&staged).unwrap();
        let mut rec = PendingUpload {
            incident_id: crate::ids::IncidentId::parse("20260101T000000.000Z-a").unwrap(),
            target: "a".into(),
            bundle_dir: staged.clone(),
            staged: true,
            complete: false,
            uploaded: BTreeMap::new(),
        };
        spool.save(&rec).unwrap();
        assert_eq!(spool.load_all(), vec![rec.clone()]);
        spool.finish(&rec).unwrap();
        assert!(
            staged.exists(),
            "not complete yet: the heal log may still come"
        );
        rec.complete = true;
        spool.save(&rec).unwrap();
        spool.finish(&rec).unwrap();
        assert!(!staged.exists());
        assert!(spool.is_empty());
    }

    #[test]
    fn a_record_pointing_outside_its_bundle_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let id = crate::ids::IncidentId::parse("20260101T000000.000Z-a").unwrap();
        for bundle_dir in [
            spool.staging_root().join("../../elsewhere"),
            spool.staging_root().join(id.as_str()).join(".."),
            dir.path().join("20260101T000000.000Z-b"),
        ] {
            let rec = PendingUpload {
                incident_id: id.clone(),
                target: "a".into(),
                bundle_dir,
                staged: true,
                complete: true,
                uploaded: BTreeMap::new(),
            };
            spool.save(&rec).unwrap();
            assert_eq!(spool.load(&id), None, "{rec:?}");
            assert!(spool.load_all().is_empty(), "{rec:?}");
        }
        // Named like its incident but not the staging copy: uploaded, never removed.
        let outside = dir.path().join(id.as_str());
        std::fs::create_dir_all(&outside).unwrap();
        let rec = PendingUpload {
            incident_id: id.clone(),
            target: "a".into(),
            bundle_dir: spool.staging_root().join("..").join("..").join(id.as_str()),
            staged: true,
            complete: true,
            uploaded: BTreeMap::new(),
        };
        spool.save(&rec).unwrap();
        spool.finish(&spool.load(&id).expect("loaded")).unwrap();
        assert!(outside.exists(), "only the staging copy is removed");
        let hostile = r#"{"incident_id": "../../x", "target": "a", "bundle_dir": "/x", "staged": true, "complete": true}"#;
        std::fs::write(spool.root().join("pending").join("h.json"), hostile).unwrap();
        assert!(spool.load_all().is_empty());
    }
}
