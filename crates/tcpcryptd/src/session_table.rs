//! The file the session table is published in (`tcpcrypt_control::table`
//! owns its layout): created next to the control socket, owned by root and
//! the control group with mode 0640, mapped shared, and held under an
//! open-file-description write lock for the daemon's whole life. Readers
//! take the lock's presence as the sign that the daemon behind the table
//! is alive: the kernel drops it when the daemon exits, however it exits.
//!
//! The file appears complete or not at all: it is made under a temporary
//! name with mode 0600, sized (sparse, so untouched entries cost nothing),
//! given its owner and mode, locked and mapped, and renamed into place only
//! once the caller has written the header ([`TableFile::publish`]). A file
//! left by a dead daemon is replaced; one still locked by a live daemon is
//! an error, so a second instance cannot pull the table from under the
//! first.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use tcpcrypt_control::table::Geometry;

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum TableFileError {
    #[error("session table {path} belongs to a running tcpcryptd")]
    InUse { path: PathBuf },
    #[error("creating session table {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("setting owner and mode of session table {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
    #[error("locking session table {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("mapping session table {path}: {source}")]
    Map { path: PathBuf, source: io::Error },
    #[error("publishing session table as {path}: {source}")]
    Rename { path: PathBuf, source: io::Error },
}

/// The table's file, mapped read-write; unlinked and unmapped on drop.
pub struct TableFile {
    base: NonNull<AtomicU64>,
    words: usize,
    file: File,
    temp: PathBuf,
    path: PathBuf,
    published: bool,
}

// SAFETY: the mapping is plain shared memory accessed only through
// atomics; nothing about it is tied to the thread that made it.
unsafe impl Send for TableFile {}
// SAFETY: as above: every access through `Deref` is an atomic operation.
unsafe impl Sync for TableFile {}

impl TableFile {
    /// Creates, sizes, locks and maps the file under a temporary name
    /// beside `path`; it stays invisible until [`TableFile::publish`].
    pub fn create(path: &Path, gid: u32, geometry: Geometry) -> Result<TableFile, TableFileError> {
        if let Ok(existing) = File::open(path)
            && sys::write_locked(&existing).unwrap_or(false)
        {
            return Err(TableFileError::InUse {
                path: path.to_path_buf(),
            });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = path.with_file_name(temp_name(&name, std::process::id()));
        // Only a crashed instance with our pid could have left it.
        let _ = std::fs::remove_file(&temp);
        remove_stale_temps(path, &name);
        let create = |source| TableFileError::Create {
            path: temp.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(create)?;
        match prepare(&file, &temp, gid, geometry) {
            Ok(base) => Ok(TableFile {
                base,
                words: geometry.words(),
                file,
                temp,
                path: path.to_path_buf(),
                published: false,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Renames the file into place; call once its header is written.
    pub fn publish(&mut self) -> Result<(), TableFileError> {
        std::fs::rename(&self.temp, &self.path).map_err(|source| TableFileError::Rename {
            path: self.path.clone(),
            source,
        })?;
        self.published = true;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at the table's path is still this one.
    fn still_ours(&self) -> bool {
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(there), Ok(mine)) => there.dev() == mine.dev() && there.ino() == mine.ino(),
            _ => false,
        }
    }
}

fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.{pid}.tmp")
}

/// Removes the temporary files that instances killed while making their
/// table left beside `path`: those whose process is gone and that nobody
/// holds locked (a daemon in another PID namespace may share the
/// directory; its file is locked from just after its creation).
fn remove_stale_temps(path: &Path, name: &str) {
    let Some(entries) = path.parent().and_then(|d| std::fs::read_dir(d).ok()) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let pid = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let stale = entry.path();
        let locked = File::open(&stale)
            .map(|f| sys::write_locked(&f).unwrap_or(true))
            .unwrap_or(true);
        if !locked && std::fs::remove_file(&stale).is_ok() {
            log::info!(
                "removed {}, left by a daemon (pid {pid}) that stopped while making its session table",
                stale.display()
            );
        }
    }
}

/// Sizes the new file at `temp`, gives it its owner and mode, locks it
/// and maps it.
fn prepare(
    file: &File,
    temp: &Path,
    gid: u32,
    geometry: Geometry,
) -> Result<NonNull<AtomicU64>, TableFileError> {
    let path = || temp.to_path_buf();
    file.set_len(geometry.bytes() as u64)
        .map_err(|source| TableFileError::Create {
            path: path(),
            source,
        })?;
    let perm = |source| TableFileError::Permissions {
        path: path(),
        source,
    };
    std::os::unix::fs::fchown(file, Some(0), Some(gid)).map_err(perm)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
        .map_err(perm)?;
    sys::write_lock(file).map_err(|source| TableFileError::Lock {
        path: path(),
        source,
    })?;
    let base = sys::map_shared(file, geometry.bytes()).map_err(|source| TableFileError::Map {
        path: path(),
        source,
    })?;
    Ok(base.cast())
}

impl Deref for TableFile {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        // SAFETY: `base` is a live shared mapping of `words` 8-byte words
        // (page aligned) until drop, and is only ever accessed atomically.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.words) }
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if self.published {
            if self.still_ours() {
                let _ = std::fs::remove_file(&self.path);
            }
        } else {
            let _ = std::fs::remove_file(&self.temp);
        }
        sys::unmap(self.base.cast(), 8 * self.words);
        // The file closes after this, which releases the lock: readers
        // then see no daemon behind the table.
    }
}

/// The memory a daemon's table lives in: its published file, or, when
/// that could not be made, private memory (lookups then all go over the
/// socket, which answers from it just the same).
pub enum TableMemory {
    File(TableFile),
    Private(Box<[AtomicU64]>),
}

impl TableMemory {
    pub fn private(geometry: Geometry) -> TableMemory {
        TableMemory::Private((0..geometry.words()).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Deref for TableMemory {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        match self {
            TableMemory::File(f) => f,
            TableMemory::Private(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::Ordering;
    use tcpcrypt_control::table::Table;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tcpcryptd-table-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn published(path: &Path) -> TableFile {
        let g = Geometry::for_connections(64);
        let mut f = TableFile::create(path, 0, g).expect("create");
        f.publish().expect("publish");
        f
    }

    #[test]
    fn the_table_appears_complete_with_group_read_only_and_goes_on_drop() {
        let dir = temp_dir("publish");
        let path = dir.join("ctl.sessions");
        let g = Geometry::for_connections(64);
        let mut f = TableFile::create(&path, 0, g).expect("create");
        assert!(!path.exists(), "visible before its header is written");
        Table::create(&*f, g, (1, 2)).expect("header");
        f.publish().expect("publish");
        let meta = std::fs::metadata(&path).expect("published");
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
        assert_eq!(meta.len() as usize, g.bytes());
        let reader = File::open(&path).expect("open");
        assert!(
            sys::write_locked(&reader).expect("probe"),
            "no lock while alive"
        );
        assert_eq!(f[0].load(Ordering::Relaxed), tcpcrypt_control::table::MAGIC);
        drop(f);
        assert!(!path.exists(), "left behind");
        assert!(
            !sys::write_locked(&reader).expect("probe"),
            "lock outlived the daemon"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_live_table_is_refused_and_a_dead_ones_file_replaced() {
        let dir = temp_dir("takeover");
        let path = dir.join("ctl.sessions");
        let first = published(&path);
        let g = Geometry::for_connections(64);
        assert!(matches!(
            TableFile::create(&path, 0, g),
            Err(TableFileError::InUse { .. })
        ));
        drop(first);
        // A daemon killed outright leaves its file, without the lock.
        std::fs::write(&path, b"left by a killed daemon").expect("leave a stale table");
        let second = published(&path);
        let now = std::fs::read(&path).expect("read");
        assert_eq!(now.len(), g.bytes(), "the stale file is still there");
        assert!(sys::write_locked(&File::open(&path).expect("open")).expect("probe"));
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn temporary_files_of_dead_daemons_are_removed_and_live_ones_kept() {
        let dir = temp_dir("stale");
        let path = dir.join("ctl.sessions");
        // A process that has exited: its pid names no live process (until
        // reused, which takes the pid space wrapping round meanwhile).
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("wait");
        let stale = dir.join(temp_name("ctl.sessions", dead));
        // The parent of this test is alive: its file is being made.
        let live = dir.join(temp_name(
            "ctl.sessions",
            std::os::unix::process::parent_id(),
        ));
        let other = dir.join(temp_name("other.sessions", dead));
        for f in [&stale, &live, &other] {
            std::fs::write(f, b"half made").expect("leave a temporary file");
        }
        let table = published(&path);
        assert!(!stale.exists(), "a dead daemon's temporary file is left");
        assert!(live.exists(), "a live process's temporary file was taken");
        assert!(other.exists(), "another table's file was taken");
        drop(table);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
