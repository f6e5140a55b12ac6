//! The session table tcpcryptd publishes for lookups without a round trip:
//! its layout, and reading and writing it as plain memory.
//!
//! The daemon keeps the settled outcome of every connection it tracks
//! (encrypted with this session, or plain TCP for this reason) in a file
//! next to the control socket ([`path_for`]), owned by root and readable by
//! the control group only. A client maps it read-only and answers a
//! settled lookup with a hash probe and a few loads; anything the table
//! does not hold (a handshake still running, an unknown connection, an
//! entry that did not fit) is asked over the socket as before, so the
//! table only ever makes answers faster, never different.
//!
//! This module owns the bytes, not the file: opening, mapping, locking and
//! checking that the daemon is alive belong to the daemon and the client
//! library. It sees the table as a slice of `AtomicU64` words, so the same
//! code runs over a shared mapping and over heap memory in tests.
//!
//! Layout, in native-endian 64-bit words (version [`LAYOUT_VERSION`]):
//! - a header of [`HEADER_WORDS`]: magic, version, bucket count, entry
//!   count, the two halves of the hash key, the total word count;
//! - the index: per bucket [`BUCKET_SLOTS`] 32-bit slots packed two to a
//!   word, each 0 (free) or one plus the number of an entry;
//! - the entries, [`ENTRY_WORDS`] each: a sequence word, then the
//!   connection's two addresses and ports, the outcome's kind and its
//!   payload (the session, or the plain-TCP reason as text).
//!
//! A connection hashes (SipHash-1-3 under a key the daemon draws at
//! start, so remote peers cannot aim their connections at one bucket) to
//! two buckets; it is written to the emptier. Readers check both. Entries
//! change under a sequence lock: the writer makes the sequence word odd,
//! writes, and makes it even again; a reader copies an entry and keeps the
//! copy only if the word was even and unchanged around it. An entry is
//! filled before its index slot points at it and unlinked before it is
//! cleared, and a reader compares the whole key, so a reader racing a
//! change sees the old outcome, the new one, or nothing (and then asks the
//! daemon): never a mixture.
//!
//! There is one writer at a time (the daemon serialises them); readers
//! never write, so the file can be mapped read-only.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use siphasher::sip::SipHasher13;

use crate::addr::normalize;
use crate::session::{Aead, Lookup, Role, SESSION_ID_LEN, Session, SessionId, Tep};

/// `tcpcTBL1`, read as a native-endian word.
pub const MAGIC: u64 = u64::from_ne_bytes(*b"tcpcTBL1");
/// Changes whenever a reader of the old layout would misread the new one.
pub const LAYOUT_VERSION: u64 = 1;
pub const HEADER_WORDS: usize = 8;
pub const BUCKET_SLOTS: usize = 8;
const BUCKET_WORDS: usize = BUCKET_SLOTS / 2;
pub const ENTRY_WORDS: usize = 16;
/// The bytes of the file the daemon holds an open-file-description write
/// lock on (`fcntl(F_OFD_SETLK)`) for as long as it runs, as
/// `(start, length)`: a reader that finds them unlocked knows the table is
/// a dead daemon's and must not be trusted. Part of the format, as both the
/// daemon and the client library must name the same range.
pub const LIVENESS_LOCK: (i64, i64) = (0, 1);
/// Payload bytes after the key: the session, or the plain-TCP reason.
const PAYLOAD_BYTES: usize = 8 * (ENTRY_WORDS - PAYLOAD_WORD);
const PAYLOAD_WORD: usize = 6;
/// The longest plain-TCP reason the table holds; a longer one is left to
/// the socket.
pub const MAX_REASON: usize = PAYLOAD_BYTES;
/// Most entries a table is made for: a sparse file of 128 MiB. Beyond it
/// lookups still work, over the socket.
pub const MAX_CAPACITY: usize = 1 << 20;
/// How often a reader retries an entry it found being written. The writer
/// holds one for a few stores, so this is only reached when the daemon
/// died in the middle of one (and the reader then asks the socket).
const READ_TRIES: usize = 64;

// Kind 0 is a free entry.
const KIND_TCPCRYPT: u64 = 1;
const KIND_PLAIN: u64 = 2;

const FLAG_RESUMED: u8 = 1;
const FLAG_PEER_APP_AWARE: u8 = 2;

/// The table of the control socket at `socket`: the same name with the
/// extension `sessions` (`/run/tcpcrypt/control.sock` is published as
/// `/run/tcpcrypt/control.sessions`).
pub fn path_for(socket: &Path) -> PathBuf {
    socket.with_extension("sessions")
}

/// Why a block of memory is not a table this code can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("not a tcpcryptd session table (bad magic)")]
    Magic,
    #[error("session table layout {found}, this library reads layout {LAYOUT_VERSION}")]
    Version { found: u64 },
    #[error("session table header is inconsistent with its size ({words} words)")]
    Size { words: usize },
}

/// How large a table is: buckets of the index and entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    buckets: usize,
    capacity: usize,
}

impl Geometry {
    /// Room for `connections` outcomes (at most [`MAX_CAPACITY`]), with
    /// twice as many index slots so that two-choice placement practically
    /// never finds both buckets full.
    pub fn for_connections(connections: usize) -> Geometry {
        let capacity = connections.clamp(BUCKET_SLOTS, MAX_CAPACITY);
        let buckets = (2 * capacity).div_ceil(BUCKET_SLOTS).next_power_of_two();
        Geometry { buckets, capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Words of memory the table needs.
    pub fn words(&self) -> usize {
        HEADER_WORDS + self.buckets * BUCKET_WORDS + self.capacity * ENTRY_WORDS
    }

    pub fn bytes(&self) -> usize {
        8 * self.words()
    }

    fn index_start(&self) -> usize {
        HEADER_WORDS
    }

    fn entries_start(&self) -> usize {
        HEADER_WORDS + self.buckets * BUCKET_WORDS
    }
}

/// A connection as the table keys it: both ends as IPv6 (IPv4 mapped) and
/// their ports, after the same normalisation the control protocol applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key([u64; 5]);

impl Key {
    fn new(local: SocketAddr, remote: SocketAddr) -> Key {
        let (l, r) = (normalize(local), normalize(remote));
        let (l0, l1) = ip_words(l.ip());
        let (r0, r1) = ip_words(r.ip());
        Key([
            l0,
            l1,
            r0,
            r1,
            u64::from(l.port()) | (u64::from(r.port()) << 16),
        ])
    }
}

fn ip_words(ip: IpAddr) -> (u64, u64) {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let b = v6.octets();
    let (hi, lo) = b.split_at(8);
    (
        u64::from_ne_bytes(hi.try_into().unwrap_or_default()),
        u64::from_ne_bytes(lo.try_into().unwrap_or_default()),
    )
}

/// Word 5 of an entry: the ports (low 32 bits, part of the key), the kind
/// and one byte of kind-specific detail.
const PORTS_MASK: u64 = 0xffff_ffff;

/// The words of an entry after its sequence word.
type Body = [u64; ENTRY_WORDS - 1];

fn encode<R: AsRef<str>>(key: &Key, outcome: &Lookup<R>) -> Option<Body> {
    let mut payload = [0u8; PAYLOAD_BYTES];
    let (kind, detail) = match outcome {
        Lookup::Tcpcrypt(s) => {
            payload[..SESSION_ID_LEN].copy_from_slice(s.session_id.as_bytes());
            let mut at = SESSION_ID_LEN;
            payload[at] = match s.role {
                Role::A => 1,
                Role::B => 2,
            };
            at += 1;
            payload[at] = s.tep.byte();
            at += 1;
            payload[at..at + 2].copy_from_slice(&s.aead.id().to_le_bytes());
            let mut flags = 0;
            if s.resumed {
                flags |= FLAG_RESUMED;
            }
            if s.peer_app_aware {
                flags |= FLAG_PEER_APP_AWARE;
            }
            (KIND_TCPCRYPT, flags)
        }
        Lookup::Plain { reason } => {
            let text = reason.as_ref().as_bytes();
            if text.len() > MAX_REASON {
                return None;
            }
            payload[..text.len()].copy_from_slice(text);
            // MAX_REASON is below 256.
            (KIND_PLAIN, text.len() as u8)
        }
        Lookup::Pending | Lookup::Unknown => return None,
    };
    let mut body = [0u64; ENTRY_WORDS - 1];
    body[..5].copy_from_slice(&key.0);
    body[4] |= (kind << 32) | (u64::from(detail) << 40);
    for (word, chunk) in body[PAYLOAD_WORD - 1..]
        .iter_mut()
        .zip(payload.chunks_exact(8))
    {
        *word = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
    }
    Some(body)
}

fn body_key(body: &Body) -> Key {
    let mut k = [0u64; 5];
    k.copy_from_slice(&body[..5]);
    k[4] &= PORTS_MASK;
    Key(k)
}

/// The outcome an entry holds; `None` for a free entry or one whose
/// bytes make no sense (a table from a newer or broken writer is then
/// ignored entry by entry rather than believed).
fn decode(body: &Body) -> Option<Lookup<String>> {
    let kind = (body[4] >> 32) & 0xff;
    let detail = ((body[4] >> 40) & 0xff) as u8;
    let mut payload = [0u8; PAYLOAD_BYTES];
    for (chunk, word) in payload.chunks_exact_mut(8).zip(&body[PAYLOAD_WORD - 1..]) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    match kind {
        KIND_TCPCRYPT => {
            let mut id = [0u8; SESSION_ID_LEN];
            id.copy_from_slice(&payload[..SESSION_ID_LEN]);
            let at = SESSION_ID_LEN;
            let role = match payload[at] {
                1 => Role::A,
                2 => Role::B,
                _ => return None,
            };
            let tep = Tep::from_byte(payload[at + 1])?;
            let aead_id = u16::from_le_bytes([payload[at + 2], payload[at + 3]]);
            let aead = Aead::ALL.into_iter().find(|a| a.id() == aead_id)?;
            Some(Lookup::Tcpcrypt(Session {
                session_id: SessionId::from_bytes(id),
                role,
                tep,
                aead,
                resumed: detail & FLAG_RESUMED != 0,
                peer_app_aware: detail & FLAG_PEER_APP_AWARE != 0,
            }))
        }
        KIND_PLAIN => {
            let text = payload.get(..usize::from(detail))?;
            let reason = std::str::from_utf8(text).ok()?.to_owned();
            Some(Lookup::Plain { reason })
        }
        _ => None,
    }
}

/// A session table over memory `M` (a mapping, or a boxed slice in tests).
pub struct Table<M> {
    mem: M,
    geometry: Geometry,
    hash_key: (u64, u64),
}

impl<M: Deref<Target = [AtomicU64]>> Table<M> {
    /// Writes a new, empty table's header into `mem`, which must be
    /// [`Geometry::words`] long and zeroed (a fresh file or allocation).
    /// `hash_key` must be random.
    pub fn create(
        mem: M,
        geometry: Geometry,
        hash_key: (u64, u64),
    ) -> Result<Table<M>, TableError> {
        if mem.len() != geometry.words() {
            return Err(TableError::Size { words: mem.len() });
        }
        let header = [
            MAGIC,
            LAYOUT_VERSION,
            geometry.buckets as u64,
            geometry.capacity as u64,
            hash_key.0,
            hash_key.1,
            geometry.words() as u64,
            0,
        ];
        for (word, value) in mem.iter().zip(header) {
            word.store(value, Ordering::Relaxed);
        }
        Ok(Table {
            mem,
            geometry,
            hash_key,
        })
    }

    /// Reads a table the daemon published, checking that its header fits
    /// its size, so that no probe can fall outside the memory.
    pub fn open(mem: M) -> Result<Table<M>, TableError> {
        let word = |i: usize| mem.get(i).map(|w| w.load(Ordering::Acquire));
        if word(0) != Some(MAGIC) {
            return Err(TableError::Magic);
        }
        let size_error = TableError::Size { words: mem.len() };
        match word(1) {
            Some(LAYOUT_VERSION) => {}
            Some(found) => return Err(TableError::Version { found }),
            None => return Err(size_error),
        }
        let (Some(buckets), Some(capacity), Some(k0), Some(k1), Some(words)) =
            (word(2), word(3), word(4), word(5), word(6))
        else {
            return Err(size_error);
        };
        let (Ok(buckets), Ok(capacity)) = (usize::try_from(buckets), usize::try_from(capacity))
        else {
            return Err(size_error);
        };
        if !buckets.is_power_of_two() || capacity == 0 || capacity > MAX_CAPACITY {
            return Err(size_error);
        }
        let geometry = Geometry { buckets, capacity };
        if buckets > 2 * MAX_CAPACITY || geometry.words() != mem.len() || words != mem.len() as u64
        {
            return Err(size_error);
        }
        Ok(Table {
            mem,
            geometry,
            hash_key: (k0, k1),
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// The settled outcome of a connection (addresses as seen on the
    /// daemon's host), or `None` if the table does not hold one: ask the
    /// daemon then.
    pub fn get(&self, local: SocketAddr, remote: SocketAddr) -> Option<Lookup<String>> {
        let key = Key::new(local, remote);
        for bucket in self.buckets(&key) {
            for slot in 0..BUCKET_SLOTS {
                let Some(entry) = self.slot_entry(bucket, slot) else {
                    continue;
                };
                if let Some(body) = self.read_entry(entry)
                    && body_key(&body) == key
                    && let Some(found) = decode(&body)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    fn buckets(&self, key: &Key) -> [usize; 2] {
        let mut h = SipHasher13::new_with_keys(self.hash_key.0, self.hash_key.1);
        for w in key.0 {
            h.write_u64(w);
        }
        let h = h.finish();
        let mask = self.geometry.buckets - 1;
        let first = (h as usize) & mask;
        let mut second = ((h >> 32) as usize) & mask;
        if second == first {
            second = (first ^ 1) & mask;
        }
        [first, second]
    }

    fn slot_word(&self, bucket: usize, slot: usize) -> (&AtomicU64, u32) {
        let i = self.geometry.index_start() + bucket * BUCKET_WORDS + slot / 2;
        (&self.mem[i], 32 * (slot % 2) as u32)
    }

    /// The entry a slot points at, if any (and if it is in range: a
    /// reader does not trust the file further than its header).
    fn slot_entry(&self, bucket: usize, slot: usize) -> Option<usize> {
        let (word, shift) = self.slot_word(bucket, slot);
        let value = (word.load(Ordering::Acquire) >> shift) as u32;
        let entry = usize::try_from(value).ok()?.checked_sub(1)?;
        (entry < self.geometry.capacity).then_some(entry)
    }

    fn entry_words(&self, entry: usize) -> &[AtomicU64] {
        let start = self.geometry.entries_start() + entry * ENTRY_WORDS;
        &self.mem[start..start + ENTRY_WORDS]
    }

    /// A consistent copy of an entry's body, or `None` if it stayed
    /// mid-write over every try.
    fn read_entry(&self, entry: usize) -> Option<Body> {
        let words = self.entry_words(entry);
        let (seq, rest) = words.split_first()?;
        for _ in 0..READ_TRIES {
            let before = seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut body = [0u64; ENTRY_WORDS - 1];
            for (out, word) in body.iter_mut().zip(rest) {
                *out = word.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return Some(body);
            }
        }
        None
    }

    /// Entry bodies as the (single) writer sees them: nothing changes
    /// them under it, so no sequence check is needed.
    fn writer_key(&self, entry: usize) -> Key {
        let mut body = [0u64; ENTRY_WORDS - 1];
        for (out, word) in body.iter_mut().zip(&self.entry_words(entry)[1..]) {
            *out = word.load(Ordering::Relaxed);
        }
        body_key(&body)
    }

    fn write_entry(&self, entry: usize, body: &Body) {
        let words = self.entry_words(entry);
        let seq = &words[0];
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (word, value) in words[1..].iter().zip(body) {
            word.store(*value, Ordering::Relaxed);
        }
        seq.store(s.wrapping_add(2), Ordering::Release);
    }

    fn set_slot(&self, bucket: usize, slot: usize, value: u32) {
        let (word, shift) = self.slot_word(bucket, slot);
        let old = word.load(Ordering::Relaxed);
        let new = (old & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
        word.store(new, Ordering::Release);
    }

    /// Where the writer's key sits in its `buckets`: bucket, slot and
    /// entry.
    fn find(&self, key: &Key, buckets: [usize; 2]) -> Option<(usize, usize, usize)> {
        for bucket in buckets {
            for slot in 0..BUCKET_SLOTS {
                if let Some(entry) = self.slot_entry(bucket, slot)
                    && self.writer_key(entry) == *key
                {
                    return Some((bucket, slot, entry));
                }
            }
        }
        None
    }

    /// A free slot of `bucket`, and how many it has.
    fn free_slot(&self, bucket: usize) -> Option<(usize, usize)> {
        let mut free = (0..BUCKET_SLOTS).filter(|&s| self.slot_entry(bucket, s).is_none());
        let first = free.next()?;
        Some((first, 1 + free.count()))
    }

    /// Publishes a settled outcome (replacing the connection's earlier
    /// one). False if it cannot be held: the table is full, both buckets
    /// are, the reason is longer than [`MAX_REASON`], or the outcome is
    /// not settled. Lookups then go to the daemon, which is still right.
    pub fn put<R: AsRef<str>>(
        &self,
        writer: &mut Writer,
        local: SocketAddr,
        remote: SocketAddr,
        outcome: &Lookup<R>,
    ) -> bool {
        let key = Key::new(local, remote);
        let buckets = self.buckets(&key);
        let Some(body) = encode(&key, outcome) else {
            // Whatever it said before is no longer true.
            self.withdraw(writer, &key, buckets);
            return false;
        };
        if let Some((_, _, entry)) = self.find(&key, buckets) {
            self.write_entry(entry, &body);
            return true;
        }
        let [first, second] = buckets;
        let place = match (self.free_slot(first), self.free_slot(second)) {
            (Some((s, a)), Some((t, b))) => {
                if a >= b {
                    (first, s)
                } else {
                    (second, t)
                }
            }
            (Some((s, _)), None) => (first, s),
            (None, Some((t, _))) => (second, t),
            (None, None) => return false,
        };
        let Some(entry) = writer.allocate(self.geometry.capacity) else {
            return false;
        };
        self.write_entry(entry, &body);
        // entry < capacity <= MAX_CAPACITY, so it and one more fit in u32.
        self.set_slot(place.0, place.1, entry as u32 + 1);
        writer.len += 1;
        true
    }

    /// Withdraws a connection's outcome; true if there was one.
    pub fn remove(&self, writer: &mut Writer, local: SocketAddr, remote: SocketAddr) -> bool {
        let key = Key::new(local, remote);
        self.withdraw(writer, &key, self.buckets(&key))
    }

    fn withdraw(&self, writer: &mut Writer, key: &Key, buckets: [usize; 2]) -> bool {
        let Some((bucket, slot, entry)) = self.find(key, buckets) else {
            return false;
        };
        self.set_slot(bucket, slot, 0);
        self.write_entry(entry, &[0; ENTRY_WORDS - 1]);
        writer.release(entry);
        writer.len -= 1;
        true
    }
}

/// The writer's bookkeeping, kept in the writer's own memory: which
/// entries are free. Whoever holds it (mutably) is the one writer.
#[derive(Debug, Default)]
pub struct Writer {
    /// Entries below this have been used; the ones above never were, so
    /// their pages need not exist yet.
    fresh: usize,
    /// Used once and freed since; reused first, which keeps the touched
    /// part of a sparse file as small as the peak number of connections.
    freed: Vec<usize>,
    len: usize,
}

impl Writer {
    /// Outcomes held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn allocate(&mut self, capacity: usize) -> Option<usize> {
        if let Some(entry) = self.freed.pop() {
            return Some(entry);
        }
        (self.fresh < capacity).then(|| {
            self.fresh += 1;
            self.fresh - 1
        })
    }

    fn release(&mut self, entry: usize) {
        self.freed.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn heap(geometry: Geometry) -> Box<[AtomicU64]> {
        (0..geometry.words()).map(|_| AtomicU64::new(0)).collect()
    }

    fn table(connections: usize) -> Table<Box<[AtomicU64]>> {
        let g = Geometry::for_connections(connections);
        Table::create(heap(g), g, (0x0123_4567, 0x89ab_cdef)).expect("create")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn session(byte: u8, role: Role, resumed: bool) -> Session {
        Session {
            session_id: SessionId::from_bytes([byte; SESSION_ID_LEN]),
            role,
            tep: Tep::EcdheCurve448,
            aead: Aead::ChaCha20Poly1305,
            resumed,
            peer_app_aware: !resumed,
        }
    }

    #[test]
    fn every_session_field_and_a_reason_survive_the_table() {
        let t = table(64);
        let mut w = Writer::default();
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        let s = session(0x5a, Role::B, true);
        assert!(t.put(&mut w, l, r, &Lookup::<String>::Tcpcrypt(s)));
        assert_eq!(t.get(l, r), Some(Lookup::Tcpcrypt(s)));
        let (l6, r6) = (addr("[fd00::1]:443"), addr("[fd00::2]:1"));
        let reason = "ENO negotiation failed: the first ACK carried no ENO option";
        assert!(t.put(&mut w, l6, r6, &Lookup::Plain { reason }));
        assert_eq!(
            t.get(l6, r6),
            Some(Lookup::Plain {
                reason: reason.to_string()
            })
        );
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn direction_ports_and_mapped_addresses_are_part_of_the_key() {
        let t = table(64);
        let mut w = Writer::default();
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        let s = session(1, Role::A, false);
        assert!(t.put(&mut w, l, r, &Lookup::<String>::Tcpcrypt(s)));
        assert_eq!(t.get(r, l), None);
        assert_eq!(t.get(l, addr("10.0.0.2:40001")), None);
        assert_eq!(
            t.get(
                addr("[::ffff:10.0.0.1]:80"),
                addr("[::ffff:10.0.0.2]:40000")
            ),
            Some(Lookup::Tcpcrypt(s))
        );
    }

    #[test]
    fn a_new_outcome_replaces_the_old_and_removal_frees_the_entry() {
        let t = table(8);
        let mut w = Writer::default();
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        assert!(t.put(
            &mut w,
            l,
            r,
            &Lookup::<String>::Tcpcrypt(session(1, Role::A, false))
        ));
        assert!(t.put(
            &mut w,
            l,
            r,
            &Lookup::<String>::Tcpcrypt(session(2, Role::B, true))
        ));
        assert_eq!(w.len(), 1);
        assert_eq!(
            t.get(l, r),
            Some(Lookup::Tcpcrypt(session(2, Role::B, true)))
        );
        assert!(t.remove(&mut w, l, r));
        assert!(!t.remove(&mut w, l, r));
        assert_eq!(t.get(l, r), None);
        assert!(w.is_empty());
        // Pending is not an outcome: putting it withdraws the old one.
        assert!(t.put(
            &mut w,
            l,
            r,
            &Lookup::<String>::Tcpcrypt(session(3, Role::A, false))
        ));
        assert!(!t.put(&mut w, l, r, &Lookup::<String>::Pending));
        assert_eq!(t.get(l, r), None);
    }

    #[test]
    fn a_full_table_declines_and_a_long_reason_is_left_to_the_socket() {
        let t = table(8);
        let mut w = Writer::default();
        let cap = t.geometry().capacity();
        let remote = |i: usize| addr(&format!("10.0.1.1:{}", 1000 + i));
        let l = addr("10.0.0.1:80");
        let placed = (0..cap + 4)
            .filter(|&i| t.put(&mut w, l, remote(i), &Lookup::Plain { reason: "x" }))
            .count();
        assert!(placed <= cap, "{placed} placed in {cap} entries");
        assert!(placed >= cap / 2, "only {placed} of {cap} placed");
        assert_eq!(w.len(), placed);
        let long = "y".repeat(MAX_REASON + 1);
        let (l2, r2) = (addr("10.9.0.1:1"), addr("10.9.0.2:2"));
        assert!(!t.put(&mut w, l2, r2, &Lookup::Plain { reason: long }));
        let just = "z".repeat(MAX_REASON);
        t.remove(&mut w, l, remote(0));
        assert!(t.put(
            &mut w,
            l2,
            r2,
            &Lookup::Plain {
                reason: just.clone()
            }
        ));
        assert_eq!(t.get(l2, r2), Some(Lookup::Plain { reason: just }));
    }

    #[test]
    fn a_default_sized_table_holds_its_capacity() {
        let t = table(65_536);
        let mut w = Writer::default();
        let cap = t.geometry().capacity();
        let l = addr("192.0.2.1:443");
        let remote = |i: usize| {
            addr(&format!(
                "[2001:db8::{:x}:{:x}]:{}",
                i >> 16,
                i & 0xffff,
                1024 + i % 60000
            ))
        };
        let s = Lookup::<String>::Tcpcrypt(session(9, Role::B, false));
        let missed = (0..cap)
            .filter(|&i| !t.put(&mut w, l, remote(i), &s))
            .count();
        assert_eq!(missed, 0, "two-choice placement at full capacity");
        assert!((0..cap).step_by(997).all(|i| t.get(l, remote(i)).is_some()));
    }

    #[test]
    fn open_reads_what_create_wrote_and_refuses_anything_else() {
        let g = Geometry::for_connections(100);
        let t = table(100);
        let mut w = Writer::default();
        let (l, r) = (addr("10.0.0.1:80"), addr("10.0.0.2:40000"));
        t.put(
            &mut w,
            l,
            r,
            &Lookup::<String>::Tcpcrypt(session(4, Role::A, false)),
        );
        let copy: Box<[AtomicU64]> = t
            .mem
            .iter()
            .map(|w| AtomicU64::new(w.load(Ordering::Relaxed)))
            .collect();
        let reopened = Table::open(copy).expect("open");
        assert_eq!(reopened.geometry(), g);
        assert_eq!(reopened.get(l, r), t.get(l, r));

        assert_eq!(Table::open(heap(g)).err(), Some(TableError::Magic));
        let short: Box<[AtomicU64]> = t
            .mem
            .iter()
            .take(g.words() - 1)
            .map(|w| AtomicU64::new(w.load(Ordering::Relaxed)))
            .collect();
        assert!(matches!(
            Table::open(short).err(),
            Some(TableError::Size { .. })
        ));
        let newer = heap(g);
        Table::create(&*newer, g, (1, 2)).expect("create");
        newer[1].store(LAYOUT_VERSION + 1, Ordering::Relaxed);
        assert_eq!(
            Table::open(&*newer).err(),
            Some(TableError::Version {
                found: LAYOUT_VERSION + 1
            })
        );
        let lying = heap(g);
        Table::create(&*lying, g, (1, 2)).expect("create");
        lying[2].store(1 << 40, Ordering::Relaxed);
        assert!(matches!(
            Table::open(&*lying).err(),
            Some(TableError::Size { .. })
        ));
    }

    #[test]
    fn garbage_in_entries_and_slots_is_never_believed_or_followed_out_of_range() {
        let g = Geometry::for_connections(16);
        let mem = heap(g);
        let t = Table::create(&*mem, g, (5, 6)).expect("create");
        // Every slot points past the last entry or at an entry of noise.
        for (i, w) in mem.iter().enumerate().skip(HEADER_WORDS) {
            w.store(
                0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1) & !1,
                Ordering::Relaxed,
            );
        }
        for port in 0..2000 {
            let _ = t.get(addr("10.0.0.1:80"), addr(&format!("10.0.0.2:{port}")));
        }
    }

    #[test]
    fn path_sits_next_to_the_socket() {
        assert_eq!(
            path_for(Path::new("/run/tcpcrypt/control.sock")),
            PathBuf::from("/run/tcpcrypt/control.sessions")
        );
        assert_eq!(
            path_for(Path::new("/tmp/x/ctl")),
            PathBuf::from("/tmp/x/ctl.sessions")
        );
    }

    /// A reader running beside a writer that keeps replacing, removing and
    /// re-adding outcomes sees, for each connection, one of the outcomes
    /// the writer ever gave it, or nothing: never a mixture of two.
    #[test]
    fn readers_racing_the_writer_see_whole_outcomes_only() {
        let g = Geometry::for_connections(64);
        let t = Arc::new(Table::create(heap(g), g, (7, 8)).expect("create"));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Vec<(SocketAddr, SocketAddr)> = (0..48)
            .map(|i| (addr("10.0.0.1:80"), addr(&format!("10.0.0.2:{}", 2000 + i))))
            .collect();
        // Outcome n of connection c is a session whose every ID byte is
        // (c + n) and whose role, resumption and flags follow from n, so
        // a torn read shows as a mixed ID or a mismatched field.
        let outcome = |c: usize, n: usize| {
            let byte = (c + n) as u8;
            Session {
                session_id: SessionId::from_bytes([byte; SESSION_ID_LEN]),
                role: if byte.is_multiple_of(2) {
                    Role::A
                } else {
                    Role::B
                },
                tep: Tep::ALL[usize::from(byte) % 4],
                aead: Aead::ALL[usize::from(byte) % 3],
                resumed: byte.is_multiple_of(5),
                peer_app_aware: byte.is_multiple_of(7),
            }
        };
        let writer = {
            let (t, stop, conns) = (t.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                let mut w = Writer::default();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for (c, (l, r)) in conns.iter().enumerate() {
                        if (n + c).is_multiple_of(3) {
                            t.remove(&mut w, *l, *r);
                        } else {
                            t.put(&mut w, *l, *r, &Lookup::<String>::Tcpcrypt(outcome(c, n)));
                        }
                    }
                    n += 1;
                }
                n
            })
        };
        let mut seen = 0u64;
        for _ in 0..20_000 {
            for (c, (l, r)) in conns.iter().enumerate() {
                if let Some(found) = t.get(*l, *r) {
                    let Lookup::Tcpcrypt(s) = found else {
                        panic!("a plain outcome was never written: {found:?}");
                    };
                    let byte = s.session_id.as_bytes()[0];
                    assert!(
                        s.session_id.as_bytes().iter().all(|&b| b == byte),
                        "torn ID {s:?}"
                    );
                    let n = usize::from(byte.wrapping_sub(c as u8));
                    assert_eq!(s, outcome(c, n), "fields of two outcomes mixed");
                    seen += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = writer.join().expect("writer");
        assert!(
            seen > 0 && rounds > 0,
            "seen {seen} over {rounds} writer rounds"
        );
    }
}
