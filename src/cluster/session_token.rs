//! Proof that a joining daemon is the same member as the one whose session still holds the
//! member key: a random token kept in the state directory (`cluster-session`, 0600), whose
//! SHA-256 the member key carries. A daemon restarted quickly (a service manager's restart,
//! an OOM kill) finds its previous session's key still live; with the same token it ends
//! that session and takes its place at once, with no refusal and no "coordination lost". A
//! daemon under the same member name without the token (another host, a copied config) is
//! still refused: only who can read this daemon's state directory can prove to be it.
//!
//! The member key holds the hash, not the token: any etcd reader sees the key, and the
//! token is what proves. (An etcd writer could delete the key anyway.)

use sha2::{Digest, Sha256};
use std::path::Path;

/// The file in the state directory.
pub const FILE: &str = "cluster-session";

/// This daemon's token; the same across restarts while its state directory is kept.
#[derive(Clone)]
pub struct SessionToken {
    secret: String,
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
        let path = state_dir.join(FILE);
        if let Ok(bytes) = crate::fsutil::read_untrusted(&path, 256) {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if Self::well_formed(&text) {
                return Ok(Self { secret: text });
            }
        }
        let token = Self::ephemeral();
        let mut f = crate::fsutil::create_private(&path)?;
        std::io::Write::write_all(&mut f, token.secret.as_bytes())?;
        f.sync_all()?;
        Ok(token)
    }

    /// A token for this run only (no state directory to keep it in).
    pub fn ephemeral() -> Self {
        let raw: [u8; 32] = rand::random();
        Self {
            secret: hex::encode(raw),
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
        let again = SessionToken::load_or_create(dir.path()).unwrap();
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
