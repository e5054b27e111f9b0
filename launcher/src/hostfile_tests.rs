use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// Runs `f` on a thread and fails if it takes more than 5 s: a read that blocks (a FIFO) or
/// never ends (`/dev/zero`) fails the test instead of hanging it.
fn quickly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the read did not finish within 5 s")
}

fn ca_error(path: &Path) -> String {
    let path = path.to_owned();
    match quickly(move || read_ca_bundle(&path)) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

fn key_error(path: &Path) -> String {
    let path = path.to_owned();
    match quickly(move || read_private_key(&path)) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

fn self_signed_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
        .unwrap()
        .cert
        .pem()
}

#[test]
fn devices_fifos_directories_and_kernel_files_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        ca_error(Path::new("/dev/zero")),
        "/dev/zero is a character device, not a regular file"
    );
    assert_eq!(
        key_error(Path::new("/dev/zero")),
        "/dev/zero is a character device, not a regular file"
    );
    let fifo = dir.path().join("ca.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert!(ca_error(&fifo).ends_with("ca.pem is a FIFO, not a regular file"));
    assert!(key_error(&fifo).ends_with("ca.pem is a FIFO, not a regular file"));
    assert!(ca_error(dir.path()).ends_with("is a directory, not a regular file"));
    assert_eq!(
        ca_error(Path::new("/proc/self/environ")),
        "/proc/self/environ is on procfs, whose files are the kernel's, not a file to copy"
    );
    // Through a symbolic link too: the file, not the name, is judged.
    let link = dir.path().join("environ.pem");
    std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
    assert!(
        ca_error(&link).contains("is on procfs"),
        "{}",
        ca_error(&link)
    );
    if Path::new("/sys/kernel/address_bits").exists() {
        assert!(key_error(Path::new("/sys/kernel/address_bits")).contains("is on sysfs"));
    }
    assert!(ca_error(&dir.path().join("nope")).ends_with("nope does not exist"));
}

#[test]
fn kernel_file_systems_are_recognised_on_the_opened_file() {
    // What catches procfs mounted elsewhere, or a link swapped after the path was looked at.
    let on = |p: &str| {
        let file = std::fs::File::open(p).unwrap();
        pseudo_fs(nix::sys::statfs::fstatfs(&file).unwrap().filesystem_type())
    };
    assert_eq!(on("/proc/self/environ"), Some("procfs"));
    assert_eq!(on("/etc/hostname"), None);
}

#[test]
fn oversize_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pem");
    let mut text = self_signed_pem();
    while (text.len() as u64) <= MAX_CA_BYTES {
        text.push_str(&self_signed_pem());
    }
    std::fs::write(&big, &text).unwrap();
    assert!(ca_error(&big).ends_with("big.pem is larger than 1048576 bytes"));
    let key = dir.path().join("key");
    std::fs::write(&key, vec![b'a'; 64 * 1024 + 1]).unwrap();
    assert!(key_error(&key).ends_with("key is larger than 65536 bytes"));
    assert!(
        read_bounded(&key, 64 * 1024 + 1).is_ok(),
        "the cap is inclusive"
    );
}

#[test]
fn a_ca_bundle_must_be_pem_certificates_that_parse() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    let write = |text: &str| std::fs::write(&file, text).unwrap();

    write(&format!("{}{}", self_signed_pem(), self_signed_pem()));
    assert!(read_ca_bundle(&file).is_ok());
    // Comments between blocks, as in system bundles, are fine.
    write(&format!("# Internal CA\n{}", self_signed_pem()));
    assert!(read_ca_bundle(&file).is_ok());

    write("just text\n");
    assert!(
        ca_error(&file).ends_with(
            "is not a PEM file of CA certificates: no `-----BEGIN CERTIFICATE-----` block in it"
        ),
        "{}",
        ca_error(&file)
    );
    write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert!(
        ca_error(&file).contains("certificate 1 does not parse"),
        "{}",
        ca_error(&file)
    );
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    write(&key);
    assert!(ca_error(&file).contains("no `-----BEGIN CERTIFICATE-----` block"));
}

/// An `openssh-key-v1` block with cipher `cipher` and `keys` keys (the rest is not checked).
fn openssh_block(cipher: &str, keys: u32) -> String {
    let string = |s: &[u8]| {
        let mut out = u32::try_from(s.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    };
    let kdf: &[u8] = if cipher == "none" { b"none" } else { b"bcrypt" };
    let mut blob = b"openssh-key-v1\0".to_vec();
    blob.extend(string(cipher.as_bytes()));
    blob.extend(string(kdf));
    blob.extend(string(b""));
    blob.extend(keys.to_be_bytes());
    blob.extend(string(b"public key"));
    blob.extend(string(b"private part"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("{OPENSSH_BEGIN}\n{b64}\n{OPENSSH_END}\n")
}

#[test]
fn an_identity_file_must_be_an_unencrypted_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("id");
    let write = |text: &str| std::fs::write(&file, text).unwrap();

    write(&openssh_block("none", 1));
    assert!(read_private_key(&file).is_ok());
    write(&rcgen::KeyPair::generate().unwrap().serialize_pem());
    assert!(read_private_key(&file).is_ok(), "PKCS#8 PEM");

    write(&openssh_block("aes256-ctr", 1));
    assert!(key_error(&file).ends_with("is an encrypted (passphrase-protected) private key, which is not supported: the gate pushes unattended and cannot ask for the passphrase"));
    write("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n");
    assert!(key_error(&file).contains("encrypted"));
    write(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    );
    assert!(key_error(&file).contains("encrypted"));

    write(&openssh_block("none", 0));
    assert!(key_error(&file).contains("does not decode"));
    write(&format!("{OPENSSH_BEGIN}\n!!!\n{OPENSSH_END}\n"));
    assert!(key_error(&file).contains("does not decode"));
    write("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ user@host\n");
    assert!(key_error(&file).contains("it is a public key"));
    write(&self_signed_pem());
    assert!(key_error(&file).contains("no `-----BEGIN OPENSSH PRIVATE KEY-----`"));
    std::fs::write(&file, [0xff, 0xfe, 0]).unwrap();
    assert!(key_error(&file).ends_with("is not a private key file: it is not text"));
}

#[test]
fn real_ssh_keygen_keys_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str, passphrase: &str| {
        let path = dir.path().join(name);
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(path)
    };
    let Some(plain) = keygen("plain", "") else {
        eprintln!("no ssh-keygen here; skipped");
        return;
    };
    assert!(read_private_key(&plain).is_ok());
    let locked = keygen("locked", "correct horse").unwrap();
    assert!(key_error(&locked).contains("encrypted"));
    assert!(key_error(&plain.with_extension("pub")).contains("public key"));
}

#[test]
fn manifest_errors_name_file_line_key_path_and_what_to_do() {
    let named = NamedFile {
        file: "/h/.claude-bottle/bottles/b.md".into(),
        line: 7,
        key: "git[0].IdentityFile".into(),
        path: "/dev/zero".into(),
        kind: NamedKind::Key(0),
    };
    let err = quickly(move || named.read().err().map(|e| e.to_string())).unwrap();
    assert_eq!(
        err,
        "/h/.claude-bottle/bottles/b.md:7: `git[0].IdentityFile`: /dev/zero is a character device, not a regular file; name the unencrypted private key the gate pushes with, in OpenSSH or PEM format (at most 64 KiB), e.g. ~/.ssh/id_ed25519; a passphrase-protected key needs an unencrypted deploy key of its own"
    );
}
