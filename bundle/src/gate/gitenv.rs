//! The environment of every git the gate runs: nothing inherited, no system config, and a
//! global config file of the gate's own.
//!
//! Why not `GIT_CONFIG_GLOBAL=/dev/null`: git writes config by writing `<file>.lock` next to
//! it and renaming that over the file, so anything that writes global config under that
//! setting (`git config --global`, a credential or safe.directory helper, …) replaces
//! `/dev/null` with a regular file; run as root on a host (as the gate tests are), that is
//! the host's `/dev/null`. A file in the gate's own directory can only ever spoil itself, and
//! [`write_empty_global_config`] empties it again at every start.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::gate::settings::GateSettings;

/// The global git config every gate git reads (and, should one write, writes).
pub(crate) fn global_config_path(settings: &GateSettings) -> PathBuf {
    settings.gate_dir().join("gitconfig")
}

/// The whole environment of a gate git.
fn vars(settings: &GateSettings) -> Vec<(&'static str, OsString)> {
    vec![
        ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        ("HOME", settings.gate_dir().into_os_string()),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        (
            "GIT_CONFIG_GLOBAL",
            global_config_path(settings).into_os_string(),
        ),
    ]
}

/// A `git` command with only the gate's environment. Every git the gate runs starts here.
pub(crate) fn git(settings: &GateSettings) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env_clear().envs(vars(settings));
    cmd
}

/// (Re)writes the global config empty and read-only (the gate's directory must exist).
pub(crate) fn write_empty_global_config(settings: &GateSettings) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = global_config_path(settings);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, "")?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn settings(mirrors: &Path) -> GateSettings {
        GateSettings {
            mirrors_dir: mirrors.to_owned(),
            remotes: Vec::new(),
            scanner_rules: None,
            max_push_bytes: 1,
            push_timeout: Duration::from_secs(1),
        }
    }

    /// `(is a character device, device number)` of /dev/null.
    fn dev_null() -> (bool, u64) {
        let meta = std::fs::metadata("/dev/null").expect("stat /dev/null");
        (meta.file_type().is_char_device(), meta.rdev())
    }

    /// A git under the gate's environment that writes global config writes only the gate's
    /// own file (as root) or fails (otherwise), and never touches /dev/null.
    #[test]
    fn global_config_writes_stay_in_the_gates_own_file() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = settings(&tmp.path().join("mirrors"));
        std::fs::create_dir_all(settings.gate_dir()).unwrap();
        write_empty_global_config(&settings).unwrap();
        let cmd = git(&settings);
        let global: Vec<_> = cmd
            .get_envs()
            .filter(|(k, _)| *k == "GIT_CONFIG_GLOBAL")
            .filter_map(|(_, v)| v)
            .collect();
        // Checked before git runs, so a regression fails here instead of replacing the
        // machine's /dev/null.
        assert_eq!(global.len(), 1);
        assert!(
            Path::new(global[0]).starts_with(&settings.mirrors_dir),
            "global git config outside the gate's directory: {:?}",
            global[0]
        );
        assert!(
            cmd.get_envs()
                .any(|(k, v)| k == "GIT_CONFIG_NOSYSTEM" && v == Some("1".as_ref()))
        );

        let before = dev_null();
        assert!(
            before.0,
            "/dev/null is not a character device before the test"
        );
        let out = git(&settings)
            .args(["config", "--global", "bottle.probe", "written"])
            .output()
            .unwrap();
        assert_eq!(dev_null(), before, "/dev/null was replaced");
        let text = std::fs::read_to_string(global_config_path(&settings)).unwrap();
        if out.status.success() {
            assert!(text.contains("probe = written"), "{text}");
        } else {
            assert_eq!(text, "");
        }
        // The next start empties it again.
        write_empty_global_config(&settings).unwrap();
        let text = std::fs::read_to_string(global_config_path(&settings)).unwrap();
        assert_eq!(text, "");
    }
}
