//! What ACME obtains, on disk, under `[acme] storage`: one directory per ACME directory URL (so that
//! moving from a staging directory to a production one obtains new certificates), holding the
//! account and a directory per name set.
//!
//! ```text
//! acme/                                         0700
//!   acme-v02.api.letsencrypt.org-directory/     0700
//!     account.json                              0600  the account's URL and private key
//!     example.com+www.example.com/              0700
//!       cert.pem                                0600  the chain, leaf first
//!       key.pem                                 0600  its private key (PKCS#8)
//! ```
//!
//! Files are written whole to a temporary name, then renamed: a reader (a parapet starting, or
//! another one sharing the directory) never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::fnv::{fnv1a, OFFSET};

/// The directory of the ACME server at `directory_url` under `storage`: the URL's host, port and
/// path, made a file name (`acme-v02.api.letsencrypt.org-directory`).
pub(super) fn server_dir(storage: &Path, directory_url: &str) -> PathBuf {
    let rest = directory_url
        .split_once("://")
        .map_or(directory_url, |(_, rest)| rest);
    storage.join(file_name(rest))
}

/// The directory of the certificate for `names` (sorted) under a server's directory: the names
/// joined by `+`, or for a set too long for a file name, the first name and a hash of them all.
pub(super) fn set_dir(server_dir: &Path, names: &[String]) -> PathBuf {
    let joined = names.join("+");
    if joined.len() <= 200 {
        return server_dir.join(file_name(&joined));
    }
    let first = names.first().map_or("", String::as_str);
    server_dir.join(format!(
        "{}+{}-more-{:016x}",
        file_name(first),
        names.len() - 1,
        fnv1a(OFFSET, joined.as_bytes())
    ))
}

/// `s` with every character but ASCII letters, digits, `.`, `+` and `_` made a `-`.
fn file_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '+' | '_' => c,
            _ => '-',
        })
        .collect();
    name.trim_matches(['-', '.']).to_owned()
}

/// Creates `path` and its missing parents, readable by the owner only (0700).
pub(super) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Writes `bytes` to `path`, readable by the owner only (0600): whole to a temporary file, then
/// renamed over `path`.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The certificate chain and key stored in `dir`, as PEM; `None` if there is none yet.
pub(super) fn read_certificate(dir: &Path) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let read = |file: &str| match std::fs::read(dir.join(file)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    match (read("cert.pem")?, read("key.pem")?) {
        (Some(chain), Some(key)) => Ok(Some((chain, key))),
        _ => Ok(None),
    }
}

/// Stores a certificate chain and its key (PEM) in `dir`, created if need be: the key first, so
/// that a chain on disk always has its key beside it.
pub(super) fn write_certificate(dir: &Path, chain: &[u8], key: &[u8]) -> std::io::Result<()> {
    create_private_dir(dir)?;
    write_private(&dir.join("key.pem"), key)?;
    write_private(&dir.join("cert.pem"), chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_and_a_name_set_have_readable_file_names() {
        let storage = Path::new("acme");
        let server = server_dir(storage, "https://acme-v02.api.letsencrypt.org/directory");
        assert_eq!(
            server,
            Path::new("acme/acme-v02.api.letsencrypt.org-directory")
        );
        assert_eq!(
            server_dir(storage, "https://127.0.0.1:14000/dir"),
            Path::new("acme/127.0.0.1-14000-dir")
        );
        let names = vec!["example.com".to_owned(), "www.example.com".to_owned()];
        assert_eq!(
            set_dir(&server, &names),
            server.join("example.com+www.example.com")
        );
    }

    #[test]
    fn a_long_name_set_is_named_by_its_first_name_and_a_hash() {
        let names: Vec<String> = (0..20).map(|i| format!("host-{i}.example.com")).collect();
        let dir = set_dir(Path::new("s"), &names);
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("host-0.example.com+19-more-"), "{name}");
        assert!(name.len() < 100);
        // Stable: the same set, the same directory.
        assert_eq!(dir, set_dir(Path::new("s"), &names));
    }

    #[cfg(unix)]
    #[test]
    fn stored_files_and_directories_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let base =
            std::env::temp_dir().join(format!("parapet-acme-storage-{}", std::process::id()));
        let dir = base.join("server").join("a.test");
        write_certificate(&dir, b"chain", b"key").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&base), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(mode(&dir.join("cert.pem")), 0o600);
        assert_eq!(
            read_certificate(&dir).unwrap(),
            Some((b"chain".to_vec(), b"key".to_vec()))
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
