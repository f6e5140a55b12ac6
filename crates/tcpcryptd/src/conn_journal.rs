//! The on-disk journal of connections the engine guards (negotiating or
//! encrypted).
//!
//! Keys live only in memory, so a daemon that dies without its SIGTERM
//! clean-up (crash, `kill -9`) leaves encrypted connections the kernel still
//! thinks are open; a successor would let what the applications send on them
//! leave in plaintext. The journal lets the successor find and abort them.
//!
//! Format: one record per line, `+ LOCAL REMOTE` when a connection starts
//! being guarded and `- LOCAL REMOTE` when it ends, addresses as `SocketAddr`
//! prints them. Records are appended with one `write` each, so a killed
//! process loses nothing it already wrote (the page cache keeps it); a torn
//! or foreign line is skipped on replay. No `fsync`: a host crash ends every
//! connection anyway, and `/run` does not survive one. When removal records
//! pile up the file is rewritten to a temporary file and renamed over.
//!
//! The packet thread writes it, in the engine's event order: a connection's
//! `+` record must be in the file before the verdict on its first guarded
//! packet goes out, so a slow disk delays that one packet. That costs one
//! `write` per guarded connection at each end.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the journal inside the control socket's directory.
pub const FILE_NAME: &str = "encrypted-connections";

/// Below this many records the file is never compacted. A compaction
/// writes a new file and renames it over the old one, whose inode the
/// file system then frees: a few hundred microseconds on the packet path,
/// which at a few thousand connections a second took a twentieth of a
/// packet thread's time with a threshold of 256. At this size it happens
/// about once per 8,000 connections, and the file stays under about 1 MB
/// for a successor to read.
const COMPACT_MIN_RECORDS: usize = 16384;

/// The journal's place for a given control socket path.
pub fn path_for(control_socket: &Path) -> PathBuf {
    control_socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join(FILE_NAME)
}

/// One connection, from this host's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// What a journal says once its records are replayed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Connections added and not removed, in the order they were added.
    pub open: Vec<ConnKey>,
    /// Lines that were not a well-formed record.
    pub skipped_lines: usize,
}

/// Replays journal text.
pub fn replay(text: &str) -> Replay {
    // Keyed by connection with the line number of its `+` record, so a
    // journal of many connections replays in linear time and still comes
    // out in the order the connections were added.
    let mut open: HashMap<ConnKey, usize> = HashMap::new();
    let mut skipped_lines = 0;
    for (line_no, line) in text.lines().enumerate() {
        match parse_record(line) {
            Some((true, key)) => {
                open.entry(key).or_insert(line_no);
            }
            Some((false, key)) => {
                open.remove(&key);
            }
            None if line.trim().is_empty() => {}
            None => skipped_lines += 1,
        }
    }
    let mut ordered: Vec<(usize, ConnKey)> = open.into_iter().map(|(k, n)| (n, k)).collect();
    ordered.sort_unstable_by_key(|&(n, _)| n);
    Replay {
        open: ordered.into_iter().map(|(_, k)| k).collect(),
        skipped_lines,
    }
}

/// `Some((added, key))` for a well-formed record.
fn parse_record(line: &str) -> Option<(bool, ConnKey)> {
    let mut words = line.split_ascii_whitespace();
    let added = match words.next()? {
        "+" => true,
        "-" => false,
        _ => return None,
    };
    let local = words.next()?.parse().ok()?;
    let remote = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some((added, ConnKey { local, remote }))
}

/// Reads and replays the journal a previous instance left; a missing file
/// is an empty journal.
pub fn read_previous(path: &Path) -> io::Result<Replay> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(replay(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Replay::default()),
        Err(e) => Err(e),
    }
}

/// The journal this instance writes.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    open: HashSet<ConnKey>,
    records: usize,
}

impl Journal {
    /// Starts an empty journal at `path` (mode 0600), replacing any old one
    /// and creating its directory (mode 0755) if needed.
    pub fn create(path: &Path) -> io::Result<Journal> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let file = open_private(path, true)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            open: HashSet::new(),
            records: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that a connection is now guarded.
    pub fn added(&mut self, key: ConnKey) -> io::Result<()> {
        if !self.open.insert(key) {
            return Ok(());
        }
        self.append('+', key)
    }

    /// Records that a connection has ended; unknown connections write
    /// nothing, so plain connections cost no disk I/O.
    pub fn removed(&mut self, key: ConnKey) -> io::Result<()> {
        if !self.open.remove(&key) {
            return Ok(());
        }
        self.append('-', key)?;
        if self.records >= COMPACT_MIN_RECORDS && self.records >= 4 * self.open.len() {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with one record per open connection.
    pub fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for key in &self.open {
            text.push_str(&record('+', *key));
        }
        let mut f = open_private(&tmp, true)?;
        f.write_all(text.as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        self.file = open_private(&self.path, false)?;
        self.records = self.open.len();
        Ok(())
    }

    /// Deletes the file: for a clean stop that aborted every connection.
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)
    }

    fn append(&mut self, sign: char, key: ConnKey) -> io::Result<()> {
        // One write per record: a process killed between records leaves
        // only whole lines behind.
        self.file.write_all(record(sign, key).as_bytes())?;
        self.records += 1;
        Ok(())
    }
}

fn record(sign: char, key: ConnKey) -> String {
    format!("{sign} {} {}\n", key.local, key.remote)
}

/// Opens for appending, mode 0600 even if the file already existed.
fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if truncate {
        file.set_len(0)?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(local: &str, remote: &str) -> ConnKey {
        ConnKey {
            local: local.parse().expect("addr"),
            remote: remote.parse().expect("addr"),
        }
    }

    fn temp_path(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir()
            .join(format!(
                "tcpcryptd-journal-{}-{n}-{tag}",
                std::process::id()
            ))
            .join(FILE_NAME)
    }

    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn replay_keeps_added_connections_minus_removed_ones_in_order() {
        let text = "+ 10.0.0.1:1000 10.0.0.2:80\n\
                    + [fd00::1]:2000 [fd00::2]:443\n\
                    + 10.0.0.1:1001 10.0.0.2:80\n\
                    - 10.0.0.1:1000 10.0.0.2:80\n";
        let r = replay(text);
        assert_eq!(
            r.open,
            vec![
                key("[fd00::1]:2000", "[fd00::2]:443"),
                key("10.0.0.1:1001", "10.0.0.2:80")
            ]
        );
        assert_eq!(r.skipped_lines, 0);
    }

    #[test]
    fn replay_skips_garbage_and_torn_lines_and_counts_them() {
        let text = "hello\n\
                    + 10.0.0.1:1000\n\
                    + 10.0.0.1:1000 10.0.0.2:80 extra\n\
                    * 10.0.0.1:1000 10.0.0.2:80\n\
                    + 10.0.0.1:99999 10.0.0.2:80\n\
                    \n\
                    + 10.0.0.1:1000 10.0.0.2:80\n\
                    + 10.0.0.1:1001 10.0.";
        let r = replay(text);
        assert_eq!(r.open, vec![key("10.0.0.1:1000", "10.0.0.2:80")]);
        assert_eq!(r.skipped_lines, 6);
    }

    #[test]
    fn replay_lists_a_connection_added_twice_once() {
        let text = "+ 10.0.0.1:1 10.0.0.2:2\n+ 10.0.0.1:1 10.0.0.2:2\n";
        assert_eq!(replay(text).open.len(), 1);
    }

    #[test]
    fn missing_file_reads_as_empty() {
        let path = temp_path("missing");
        assert_eq!(read_previous(&path).expect("read"), Replay::default());
    }

    #[test]
    fn written_records_replay_to_the_open_connections() {
        let path = temp_path("write");
        let _c = Cleanup(path.clone());
        let mut j = Journal::create(&path).expect("create");
        j.added(key("10.0.0.1:1", "10.0.0.2:80")).expect("add");
        j.added(key("10.0.0.1:2", "10.0.0.2:80")).expect("add");
        j.removed(key("10.0.0.1:1", "10.0.0.2:80")).expect("remove");
        // Read while the journal is still open, as a successor would after
        // a kill -9.
        let r = read_previous(&path).expect("read");
        assert_eq!(r.open, vec![key("10.0.0.1:2", "10.0.0.2:80")]);
        drop(j);
    }

    #[test]
    fn journal_file_is_private_and_replaces_an_old_one() {
        let path = temp_path("mode");
        let _c = Cleanup(path.clone());
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        std::fs::write(&path, "+ 10.0.0.1:1 10.0.0.2:2\n").expect("old");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let _j = Journal::create(&path).expect("create");
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 0);
    }

    #[test]
    fn removing_an_unknown_connection_writes_nothing() {
        let path = temp_path("unknown");
        let _c = Cleanup(path.clone());
        let mut j = Journal::create(&path).expect("create");
        j.removed(key("10.0.0.1:1", "10.0.0.2:2")).expect("remove");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
    }

    #[test]
    fn compaction_shrinks_the_file_and_keeps_open_connections() {
        let path = temp_path("compact");
        let _c = Cleanup(path.clone());
        let mut j = Journal::create(&path).expect("create");
        let keep = key("10.0.0.9:9", "10.0.0.2:80");
        j.added(keep).expect("add");
        let mut largest = 0;
        // Twice the threshold's worth of connections, four times its records.
        let connections = 2 * COMPACT_MIN_RECORDS as u16;
        for port in 1..=connections {
            let k = key(&format!("10.0.0.1:{port}"), "10.0.0.2:80");
            j.added(k).expect("add");
            j.removed(k).expect("remove");
            largest = largest.max(std::fs::metadata(&path).expect("stat").len());
        }
        let full_size = record('+', key("10.0.0.1:10000", "10.0.0.2:80")).len() as u64
            * 2
            * u64::from(connections);
        assert!(
            largest < full_size / 2,
            "file reached {largest} bytes, never compacted"
        );
        let r = read_previous(&path).expect("read");
        assert_eq!(r.open, vec![keep]);
        assert_eq!(r.skipped_lines, 0);
        // Appends after a compaction go to the new file.
        let late = key("10.0.0.1:50000", "10.0.0.2:80");
        j.added(late).expect("add");
        assert_eq!(read_previous(&path).expect("read").open, vec![keep, late]);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn remove_deletes_the_file() {
        let path = temp_path("remove");
        let _c = Cleanup(path.clone());
        let j = Journal::create(&path).expect("create");
        j.remove().expect("remove");
        assert!(!path.exists());
    }
}
