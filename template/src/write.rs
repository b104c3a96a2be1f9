//! Writing rendered files the way consul-template does, atomically: nothing is written when the
//! bytes are unchanged; otherwise a temporary file in the destination's own directory (so the
//! rename cannot cross filesystems) is written, fsynced, given the right mode and owner, and
//! renamed over the destination, with an optional `.bak` of the previous contents.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: creating a temporary file in {dir}: {source}")]
    Temp { path: PathBuf, dir: PathBuf, source: std::io::Error },
    #[error("renaming {from} to {to}: {source}")]
    Rename { from: PathBuf, to: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub perms: Option<u32>,
    pub backup: bool,
    pub create_dest_dirs: bool,
}

/// Writes `contents` to `path` unless it already holds exactly that. Returns whether it wrote.
pub fn atomic_write(path: &Path, contents: &[u8], opts: Options) -> Result<bool, Error> {
    let existing = std::fs::metadata(path).ok();
    if existing.is_some() {
        if let Ok(current) = std::fs::read(path) {
            let mode_ok = match (opts.perms, &existing) {
                (Some(p), Some(m)) => m.permissions().mode() & 0o7777 == p,
                _ => true,
            };
            if current == contents && mode_ok {
                return Ok(false);
            }
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if opts.create_dest_dirs && !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|source| Error::Dir { path: dir.clone(), source })?;
    }
    let (tmp_path, mut tmp) = temp_file(&dir, path)?;
    // Name the destination: the temporary file's name means nothing to whoever reads the log.
    let werr = |source| Error::Write { path: path.to_path_buf(), source };
    let result = (|| {
        tmp.write_all(contents).map_err(werr)?;
        tmp.sync_all().map_err(werr)?;
        let mode = opts.perms.or_else(|| existing.as_ref().map(|m| m.permissions().mode() & 0o7777)).unwrap_or(0o644);
        std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(mode)).map_err(werr)?;
        if let Some(m) = &existing {
            // Keep the owner of the file we replace; without the privilege to, keep going:
            // the content matters more than the owner.
            if let Err(e) = std::os::unix::fs::chown(&tmp_path, Some(m.uid()), Some(m.gid())) {
                tracing::debug!(path = %path.display(), error = %e, "could not keep the file's owner");
            }
        }
        drop(tmp);
        if opts.backup && existing.is_some() {
            backup(path)?;
        }
        std::fs::rename(&tmp_path, path).map_err(|source| Error::Rename {
            from: tmp_path.clone(),
            to: path.to_path_buf(),
            source,
        })?;
        // The rename is durable only once the directory entry is.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}

fn temp_file(dir: &Path, path: &Path) -> Result<(PathBuf, std::fs::File), Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{base}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::Temp { path: path.to_path_buf(), dir: dir.to_path_buf(), source }),
        }
    }
}

/// Keeps exactly one previous version at `path.bak`, as a hard link (no copy, same inode).
fn backup(path: &Path) -> Result<(), Error> {
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    let bak = PathBuf::from(bak);
    let _ = std::fs::remove_file(&bak);
    std::fs::hard_link(path, &bak)
        .or_else(|_| std::fs::copy(path, &bak).map(|_| ()))
        .map_err(|source| Error::Write { path: bak, source })
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_only_on_change_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/out.conf");
        let opts = Options { create_dest_dirs: true, ..Default::default() };
        assert!(atomic_write(&p, b"one", opts).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        // Same bytes: not written (the inode stays).
        let ino = std::fs::metadata(&p).unwrap().ino();
        assert!(!atomic_write(&p, b"one", opts).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        // An existing file's mode is kept.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(atomic_write(&p, b"two", opts).unwrap());
        assert_ne!(std::fs::metadata(&p).unwrap().ino(), ino, "replaced by rename");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        // Explicit perms win, and a mode change alone rewrites.
        assert!(atomic_write(&p, b"two", Options { perms: Some(0o600), ..opts }).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn backup_keeps_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.conf");
        let opts = Options { backup: true, create_dest_dirs: true, ..Default::default() };
        atomic_write(&p, b"v1", opts).unwrap();
        atomic_write(&p, b"v2", opts).unwrap();
        atomic_write(&p, b"v3", opts).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"v3");
        assert_eq!(std::fs::read(dir.path().join("out.conf.bak")).unwrap(), b"v2");
    }

    #[test]
    fn missing_directory_without_create_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope/out.conf");
        assert!(atomic_write(&p, b"x", Options::default()).is_err());
    }

    #[test]
    fn errors_name_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let opts = Options { create_dest_dirs: true, ..Default::default() };
        let cases = [
            // The destination's directory is a file.
            (
                file.join("out.conf"),
                format!("writing {}/out.conf: creating a temporary file in {}: ", file.display(), file.display()),
            ),
            // The destination is a directory.
            (dir.path().to_path_buf(), "renaming ".to_string()),
            // Its directory cannot be created: a file is in the way.
            (file.join("sub/out.conf"), format!("creating directory {}/sub: ", file.display())),
        ];
        for (dest, want) in cases {
            let e = atomic_write(&dest, b"x", opts).unwrap_err().to_string();
            assert!(e.starts_with(&want), "{dest:?}: {e}");
        }
    }
}
