//! Watching template sources with `notify`, so that editing a template re-renders at once
//! (consul-template only rereads them on SIGHUP). Directories are watched, not files, because
//! editors save by writing a new file and renaming it over the old one, which ends a watch on
//! the old inode. This module only reports which source changed; reparsing is the runner's.

use notify::{RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, thiserror::Error)]
#[error("watching {path}: {source}")]
pub struct Error {
    pub path: PathBuf,
    pub source: notify::Error,
}

/// Keeps the OS watch alive; dropping it stops the reports.
pub struct SourceWatch {
    _watcher: notify::RecommendedWatcher,
}

fn absolute(p: &Path) -> PathBuf {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    match p.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// Watches `sources`; each change to one of them sends that source path (as configured).
pub fn watch(sources: &[PathBuf], tx: UnboundedSender<PathBuf>) -> Result<SourceWatch, Error> {
    let by_abs: HashMap<PathBuf, PathBuf> = sources.iter().map(|s| (absolute(s), s.clone())).collect();
    let map = by_abs.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        for p in &event.paths {
            if let Some(src) = map.get(p).or_else(|| map.get(&absolute(p))) {
                let _ = tx.send(src.clone());
            }
        }
    })
    .map_err(|source| Error { path: PathBuf::new(), source })?;
    let mut dirs: Vec<PathBuf> = by_abs.keys().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        watcher.watch(&d, RecursiveMode::NonRecursive).map_err(|source| Error { path: d.clone(), source })?;
    }
    Ok(SourceWatch { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reports_edits_and_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.ctmpl");
        std::fs::write(&src, "one").unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _w = watch(std::slice::from_ref(&src), tx).unwrap();
        std::fs::write(&src, "two").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, src);
        // An editor-style save: write elsewhere, rename over.
        while rx.try_recv().is_ok() {}
        let tmp = dir.path().join(".a.ctmpl.swp");
        std::fs::write(&tmp, "three").unwrap();
        std::fs::rename(&tmp, &src).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, src);
    }
}
