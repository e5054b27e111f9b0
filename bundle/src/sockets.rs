//! Binding a role's Unix socket in the shared socket volume.
//!
//! The relay in the agent container runs under its own uid, so the socket must be connectable
//! by other users (connect(2) needs write permission on the socket file). That is no wider
//! than the relay itself: the volume is shared with the agent container only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::UnixListener;

/// Mode of every role socket.
pub const SOCKET_MODE: u32 = 0o666;

/// Removes a stale socket file, binds, and opens the socket to the relay's uid.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_open_to_other_users_and_stale_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("role.sock");
        std::fs::write(&path, "stale").unwrap();
        let _listener = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
    }
}
