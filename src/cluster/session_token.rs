//! Proof that a joining daemon is the same member as the one whose session still holds the
//! member key: a random token kept in the state directory (`cluster-session`, 0600), whose
//! SHA-256 the member key carries. A daemon restarted quickly (a service manager's restart,
//! an OOM kill) finds its previous session's key still live; with the same token it ends
//! that session and takes its place at once, with no refusal and no "coordination lost". A
//! daemon under the same member name without the token (another host, a copied config) is
//! still refused: only who can read this daemon's state directory can prove to be it.
//!
//! The member key holds the hash, not the token: any etcd reader sees the key, and the
//! token is what proves. (An etcd writer could delete the key anyway.) The running daemon
//! holds an exclusive lock on the file: a second daemon started on the same state directory
//! gets no token (it would take the first one's session over, and be taken over in turn).

use sha2::{Digest, Sha256};
use std::path::Path;

/// The file in the state directory.
pub const FILE: &str = "cluster-session";

/// This daemon's token; the same across restarts while its state directory is kept.
#[derive(Clone)]
pub struct SessionToken {
    secret: String,
    /// The locked file, held for the daemon's lifetime (released when it dies, however).
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

impl SessionToken {
    /// The token kept in `state_dir`, or a new one written there (0600). Err when it can be
    /// neither read nor written: the caller then runs with [`SessionToken::ephemeral`].
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<Self> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = state_dir.join(FILE);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: flock on a descriptor we own.
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r != 0 {
            return Err(std::io::Error::other(format!(
                "{} is locked by another running daemon using this state directory",
                path.display()
            )));
        }
        let mut text = String::new();
        (&mut f).take(256).read_to_string(&mut text).ok();
        let text = text.trim().to_string();
        let secret = if Self::well_formed(&text) {
            text
        } else {
            let secret = Self::ephemeral().secret;
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            secret
        };
        Ok(Self {
            secret,
            _lock: Some(std::sync::Arc::new(f)),
        })
    }

    /// A token for this run only (no state directory to keep it in).
    pub fn ephemeral() -> Self {
        let raw: [u8; 32] = rand::random();
        Self {
            secret: hex::encode(raw),
            _lock: None,
        }
    }

    fn well_formed(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// What the member key carries: the token's SHA-256, hex.
    pub fn proof(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// Whether the member key's value (JSON with a `session` field) was written by a daemon
    /// holding this token.
    pub fn proves(&self, member_value: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(member_value) else {
            return false;
        };
        v["session"].as_str() == Some(self.proof().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_kept_private_and_proves_only_the_same_member() {
        let dir = tempfile::tempdir().unwrap();
        let a = SessionToken::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = SessionToken::load_or_create(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("locked by another running daemon"),
            "{e}"
        );
        drop(a.clone());
        let proof = a.proof();
        drop(a);
        let again = SessionToken::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.proof(),
            proof,
            "the same token after the first one ended"
        );
        let a = again.clone();
        let value = serde_json::json!({"member": "n1", "session": a.proof()}).to_string();
        assert!(again.proves(value.as_bytes()), "the same state dir proves");
        assert!(!SessionToken::ephemeral().proves(value.as_bytes()));
        assert!(
            !a.proves(br#"{"member": "n1"}"#),
            "an old key without a proof"
        );
        assert!(!a.proves(b"not json"));
        assert!(!value.contains(&a.secret), "the key never holds the token");
    }
}
