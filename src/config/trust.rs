//! Reading the files the configuration comes from (the registry and `.env`) only when nobody
//! less trusted than the daemon could have written them. The daemon usually runs as root and
//! runs `heal.command`; whoever can write its registry or `.env` chooses that command.

use super::error::ConfigError;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest registry or `.env` read (a registry of a thousand targets is about 300 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads `path` after checking, on the opened file itself (no window to swap it), that it is a
/// regular file of at most [`MAX_CONFIG_BYTES`], owned by the daemon's user or root (or on a
/// read-only mount), and not writable by group or others. Symbolic links are followed (Kubernetes mounts secrets that
/// way); the file they lead to is what is checked. `Ok(None)` when it does not exist.
pub fn read_trusted(path: &Path) -> Result<Option<String>, ConfigError> {
    let file = path.display().to_string();
    let unreadable = |source| ConfigError::Unreadable {
        file: file.clone(),
        source,
    };
    // Non-blocking, so a FIFO planted in its place cannot hang the daemon before the check.
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = f.metadata().map_err(unreadable)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let refuse = |why: String, fix: String| ConfigError::Unsafe {
        file: file.clone(),
        why,
        fix,
    };
    if !meta.is_file() {
        return Err(refuse(
            "it is not a regular file".into(),
            format!("point it at a regular file, not {}", kind(&meta)),
        ));
    }
    // On a read-only mount (a registry mounted `:ro` into the daemon's container) nobody the
    // daemon shares a system with can write it; its owner is a user of the host.
    if meta.uid() != euid && meta.uid() != 0 && !read_only_mount(&f) {
        return Err(refuse(
            format!(
                "it is owned by uid {}, not by the daemon's user (uid {euid}) or root, so that user decides what the daemon runs",
                meta.uid()
            ),
            format!("chown {euid} {file} (or chown root), after checking its content"),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        let who = match (meta.mode() & 0o020 != 0, meta.mode() & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "every user",
        };
        return Err(refuse(
            format!(
                "it is writable by {who} (mode {:o}), so they decide what the daemon runs",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {file}, after checking its content"),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(refuse(
            format!(
                "it is {} bytes, more than the {MAX_CONFIG_BYTES} a registry may have",
                meta.len()
            ),
            "split the fleet over several daemons, or remove what is not configuration".into(),
        ));
    }
    let mut text = String::new();
    (&mut f)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(refuse(
            format!("it grew past {MAX_CONFIG_BYTES} bytes while being read"),
            "keep the file under 1 MiB".into(),
        ));
    }
    Ok(Some(text))
}

/// Whether the open file lives on a read-only mount.
fn read_only_mount(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatvfs fills the struct we pass for a descriptor we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "this kind of file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_a_file_others_can_write_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("targets.yaml");
        std::fs::write(&p, "targets: []\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_trusted(&p).unwrap().as_deref(), Some("targets: []\n"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_trusted(&p).unwrap_err().to_string();
        assert!(
            e.contains("writable by group and others") && e.contains("chmod go-w"),
            "{e}"
        );
        assert_eq!(read_trusted(&dir.path().join("none")).unwrap(), None);
    }
}
