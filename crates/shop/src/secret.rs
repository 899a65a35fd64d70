//! The JWT signing key of a deployment: there is no key in the source.
//!
//! Where the key comes from, first match wins:
//! 1. `jwt_secret` (the `--jwt-secret` flag or the `SCALEOUT_SHOP_JWT_SECRET` environment
//!    variable, which is how a Kubernetes Secret reaches the pod), at least
//!    [`MIN_KEY_BYTES`] bytes;
//! 2. the file `jwt_secret_file` (`--jwt-secret-file`), else `<sqlite path>.jwt-secret`
//!    next to the SQLite database the instances share. The file is read when it exists
//!    and created when it does not: [`GENERATED_KEY_BYTES`] bytes from the operating
//!    system's random source, hex-encoded, written to a private temporary file (mode
//!    0600) and published with `link(2)`, which fails when the name exists. So instances
//!    starting at once all end up reading the one key that won, and none ever reads a
//!    half-written file.
//!
//! A key file that group or others may read (any of the `0o077` mode bits), a key shorter
//! than [`MIN_KEY_BYTES`], or a PostgreSQL deployment with no key configured is refused
//! at start, with the flag named. This module never logs a key.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{DbKind, SessionKind, ShopConfig};
use crate::error::ShopError;

/// Shortest accepted HS256 key, in bytes (RFC 7518 §3.2: a key of at least the hash
/// output size, 256 bits).
pub const MIN_KEY_BYTES: usize = 32;
/// Random bytes in a generated key (stored as twice as many hex characters).
pub const GENERATED_KEY_BYTES: usize = 32;
/// The environment variable the binary reads into `jwt_secret`.
pub const SECRET_ENV: &str = "SCALEOUT_SHOP_JWT_SECRET";
/// Largest key file read, in bytes.
const MAX_FILE_BYTES: u64 = 4096;

/// Where the key came from (for the start-up log line; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `jwt_secret` (flag or environment).
    Configured,
    /// An existing key file.
    File(PathBuf),
    /// A key file this instance created.
    Generated(PathBuf),
}

/// The deployment's JWT key, or `None` when sessions are not JWTs (then no key is used).
pub fn jwt_key(cfg: &ShopConfig) -> Result<Option<(Vec<u8>, KeySource)>, ShopError> {
    if cfg.sessions != SessionKind::Jwt {
        return Ok(None);
    }
    let configured = cfg.jwt_secret.trim_end();
    if !configured.is_empty() {
        if configured.len() < MIN_KEY_BYTES {
            return Err(ShopError::Config(format!(
                "jwt_secret: shorter than {MIN_KEY_BYTES} bytes (--jwt-secret / {SECRET_ENV})"
            )));
        }
        return Ok(Some((
            configured.as_bytes().to_vec(),
            KeySource::Configured,
        )));
    }
    let path = match &cfg.jwt_secret_file {
        Some(p) => PathBuf::from(p),
        None => default_key_file(cfg)?,
    };
    let (key, created) = load_or_create(&path)?;
    let source = if created {
        KeySource::Generated(path)
    } else {
        KeySource::File(path)
    };
    Ok(Some((key, source)))
}

/// `<sqlite path>.jwt-secret` for a SQLite deployment; an error naming the flags otherwise.
pub fn default_key_file(cfg: &ShopConfig) -> Result<PathBuf, ShopError> {
    let none = || {
        ShopError::Config(format!(
            "jwt_secret_file: no JWT key configured; pass --jwt-secret-file PATH (a file every \
             instance reads; created with a random key if missing) or set {SECRET_ENV}"
        ))
    };
    if cfg.db_kind()? != DbKind::Sqlite {
        return Err(none());
    }
    let path = cfg
        .db
        .trim_start_matches("sqlite:")
        .trim_start_matches("//");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") {
        return Err(none());
    }
    Ok(PathBuf::from(format!("{path}.jwt-secret")))
}

/// Reads the key file at `path`, creating it with a fresh random key when it does not
/// exist. Returns the key and whether this call created it.
pub fn load_or_create(path: &Path) -> Result<(Vec<u8>, bool), ShopError> {
    match read_key_file(path) {
        Ok(key) => return Ok((key, false)),
        Err(ReadError::Missing) => {}
        Err(ReadError::Bad(e)) => return Err(e),
    }
    let created = create_key_file(path)?;
    match read_key_file(path) {
        Ok(key) => Ok((key, created)),
        Err(ReadError::Missing) => Err(bad_file(path, "vanished right after it was created")),
        Err(ReadError::Bad(e)) => Err(e),
    }
}

/// A fresh key: [`GENERATED_KEY_BYTES`] bytes from the OS random source, hex-encoded.
pub fn generate_key() -> Result<String, ShopError> {
    use rand::TryRngCore;
    let mut b = [0u8; GENERATED_KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| ShopError::Internal(format!("OS random source: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

enum ReadError {
    Missing,
    Bad(ShopError),
}

fn bad_file(path: &Path, why: impl std::fmt::Display) -> ShopError {
    ShopError::Config(format!(
        "jwt_secret_file (--jwt-secret-file): {}: {why}",
        path.display()
    ))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Bad(bad_file(path, e))),
    };
    let meta = f
        .metadata()
        .map_err(|e| ReadError::Bad(bad_file(path, e)))?;
    if !meta.is_file() {
        return Err(ReadError::Bad(bad_file(path, "not a regular file")));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ReadError::Bad(bad_file(
            path,
            format_args!(
                "readable by group or others (mode {mode:03o}); a JWT key must be private: \
                 chmod 600 {}",
                path.display()
            ),
        )));
    }
    let mut text = String::new();
    Read::by_ref(&mut f)
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ReadError::Bad(bad_file(path, e)))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::Bad(bad_file(
            path,
            format_args!("larger than {MAX_FILE_BYTES} bytes"),
        )));
    }
    let key = text.trim_end();
    if key.len() < MIN_KEY_BYTES {
        return Err(ReadError::Bad(bad_file(
            path,
            format_args!("key shorter than {MIN_KEY_BYTES} bytes"),
        )));
    }
    Ok(key.as_bytes().to_vec())
}

/// Writes a new key to a private temporary file and links it to `path`. `Ok(false)` when
/// another process published its key first (then that key is the deployment's).
fn create_key_file(path: &Path) -> Result<bool, ShopError> {
    let key = generate_key()?;
    let name = path
        .file_name()
        .ok_or_else(|| bad_file(path, "not a file path"))?
        .to_string_lossy()
        .to_string();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{}", std::process::id(), &key[..8]));
    // Removes the temporary file however this function ends.
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| bad_file(path, format_args!("cannot create {}: {e}", tmp.display())))?;
    let _remove = Remove(&tmp);
    // The umask cannot widen 0600, but a pre-set ACL default could: set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| bad_file(path, e))?;
    f.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad_file(path, e))?;
    drop(f);
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(bad_file(path, format_args!("cannot publish the key: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "shop-secret-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn creates_once_private_and_random_then_reads_the_same_key() {
        let d = dir("create");
        let path = d.join("k");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(k1.len(), GENERATED_KEY_BYTES * 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        // Another deployment gets another key.
        let (k3, _) = load_or_create(&d.join("other")).unwrap();
        assert_ne!(k1, k3);
        // No temporary files are left behind.
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn concurrent_starts_agree_on_one_key() {
        let d = dir("race");
        let path = d.join("k");
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| s.spawn(|| load_or_create(&path).unwrap().0))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0]));
    }

    #[test]
    fn world_readable_or_short_keys_are_refused_naming_the_flag() {
        let d = dir("refuse");
        let path = d.join("k");
        std::fs::write(&path, "a".repeat(64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("--jwt-secret-file") && e.contains("644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(&path).is_ok());
        std::fs::write(&path, "short-key\n").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("--jwt-secret-file") && e.contains("shorter"),
            "{e}"
        );
        let cfg = ShopConfig {
            jwt_secret: "x".repeat(MIN_KEY_BYTES - 1),
            ..ShopConfig::default()
        };
        let e = jwt_key(&cfg).unwrap_err().to_string();
        assert!(e.contains("--jwt-secret"), "{e}");
    }

    #[test]
    fn defaults_follow_the_database() {
        let cfg = ShopConfig {
            db: "sqlite:/var/lib/shop/shop.db?mode=rwc".into(),
            ..ShopConfig::default()
        };
        assert_eq!(
            default_key_file(&cfg).unwrap(),
            PathBuf::from("/var/lib/shop/shop.db.jwt-secret")
        );
        let cfg = ShopConfig {
            db: "postgres://u@h/db".into(),
            ..ShopConfig::default()
        };
        let e = default_key_file(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("--jwt-secret-file") && e.contains(SECRET_ENV),
            "{e}"
        );
        // No key needed when sessions are not JWTs.
        let cfg = ShopConfig {
            sessions: SessionKind::Sql,
            ..cfg
        };
        assert!(jwt_key(&cfg).unwrap().is_none());
    }
}
