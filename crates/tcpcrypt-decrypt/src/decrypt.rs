//! The decryptor: groups a capture's TCP packets into connections,
//! decrypts every tcpcrypt connection it has keys for, and rewrites its
//! packets as ordinary TCP carrying the plaintext.
//!
//! Rewriting: a segment carries the plaintext of the frames whose last
//! byte it brought (first time only), at the sequence number that
//! plaintext has in a stream of plaintext alone; Init messages and frame
//! headers and tags take no sequence space. ACK numbers and SACK blocks
//! are mapped the same way, ENO options are dropped, lengths and checksums
//! recomputed. Everything else (IP header fields, other options, window,
//! timestamps of records) stays as captured. Packets of connections that
//! are not decrypted, and packets that are not TCP over IP, are copied
//! byte for byte.

use std::collections::HashMap;
use std::net::SocketAddr;

use tcpcrypt_engine::wire::ip::IpLayer;
use tcpcrypt_engine::wire::tcp::TcpPacket;
use tcpcrypt_engine::wire::{Packet, TcpFlags, TcpOption, TcpRepr};
use tcpcrypt_proto::eno::{ENO_KIND, scan_options};
use tcpcrypt_proto::frame::{FrameError, FrameReader, ReceivedFrame};

use crate::capture::{Capture, Record};
use crate::keylog::KeyLog;
use crate::link;
use crate::session::{SessionFacts, Undecryptable, find_keys};
use crate::stream::Direction;

/// Largest TCP payload put in one output packet; longer plaintext (frames
/// of up to 64 KiB completed by one segment) is split over several.
const MAX_OUTPUT_PAYLOAD: usize = 32 * 1024;

/// Client to server, then server to client.
pub const DIRECTIONS: [&str; 2] = ["client to server", "server to client"];

/// One direction of a decrypted connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionReport {
    /// The application's bytes, in order, from authenticated frames only.
    pub plaintext: Vec<u8>,
    /// Captured stream bytes (Init message and frames).
    pub wire_bytes: u64,
    pub frames: u64,
    /// Frames that carried the rekey bit.
    pub rekeys: u64,
    /// Frames that failed (authentication or format), with their offsets;
    /// nothing after the first is decrypted (its key generation is lost).
    pub failures: Vec<FrameError>,
    /// Other reasons the direction is incomplete (holes, a cut frame).
    pub notes: Vec<String>,
    /// A FIN or RST of this direction is in the capture; if not, the
    /// capture may have stopped before the sender did.
    pub closed: bool,
    /// (stream offset where a frame ends, plaintext bytes up to there).
    boundaries: Vec<(u64, u64)>,
}

impl DirectionReport {
    /// Plaintext bytes carried by frames that end at or before stream
    /// offset `at`; past the captured stream, sequence space (a FIN) maps
    /// one to one after the last plaintext byte.
    fn plain_at(&self, at: u64) -> u64 {
        if at >= self.wire_bytes {
            return self.plaintext.len() as u64 + (at - self.wire_bytes);
        }
        let i = self.boundaries.partition_point(|&(end, _)| end <= at);
        i.checked_sub(1)
            .and_then(|i| self.boundaries.get(i))
            .map_or(0, |&(_, plain)| plain)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// ENO was not negotiated (or no SYN was captured and nothing shows
    /// tcpcrypt): left as it was.
    Plain(String),
    /// tcpcrypt (or unknown), and not decrypted: left as it was.
    NotDecrypted(String),
    Decrypted {
        facts: SessionFacts,
        directions: Box<[DirectionReport; 2]>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionReport {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Index of the connection's first record in the capture (from 1).
    pub first_record: usize,
    pub outcome: Outcome,
}

impl ConnectionReport {
    /// Whether everything of the connection that needed decrypting was.
    pub fn complete(&self) -> bool {
        match &self.outcome {
            Outcome::Plain(_) => true,
            Outcome::NotDecrypted(_) => false,
            Outcome::Decrypted { directions, .. } => directions
                .iter()
                .all(|d| d.failures.is_empty() && d.notes.is_empty()),
        }
    }
}

/// The result of decrypting a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub connections: Vec<ConnectionReport>,
    /// The rewritten capture.
    pub output: Capture,
}

struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    first_record: usize,
    dirs: [Direction; 2],
    /// A segment seen before or without the SYN.
    midstream: bool,
}

/// A record that is a TCP segment of connection `conn`, direction `dir`.
struct Located {
    conn: usize,
    dir: usize,
    ip_offset: usize,
    packet: Packet<'static>,
}

fn eno_option(seg: &[u8]) -> Option<Vec<u8>> {
    let area = TcpPacket::new_checked(seg).ok()?.options().to_vec();
    scan_options(&area).single(&area).map(<[u8]>::to_vec)
}

/// Pass 1: which connection each record belongs to, and their streams.
fn group(capture: &Capture) -> (Vec<Conn>, Vec<Option<Located>>) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut by_tuple: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut located = Vec::with_capacity(capture.records.len());
    for (index, record) in capture.records.iter().enumerate() {
        let parsed = link::ip_offset(capture.linktype, &record.data).and_then(|off| {
            let ip = record.data.get(off..)?;
            let (layer, seg) = IpLayer::parse(ip).ok()?;
            let tcp = TcpRepr::parse(seg).ok()?.into_owned();
            Some((off, layer, seg.to_vec(), tcp))
        });
        let Some((ip_offset, layer, seg, tcp)) = parsed else {
            located.push(None);
            continue;
        };
        let packet = Packet { ip: layer, tcp };
        let (src, dst) = (packet.src(), packet.dst());
        let syn = packet.tcp.flags.contains(TcpFlags::SYN);
        let ack = packet.tcp.flags.contains(TcpFlags::ACK);
        let existing = by_tuple
            .get(&(src, dst))
            .map(|&c| (c, 0))
            .or_else(|| by_tuple.get(&(dst, src)).map(|&c| (c, 1)));
        let new_connection = match existing {
            None => true,
            // A SYN with another ISN on a known tuple: the port pair is reused.
            Some((c, 0)) if syn && !ack => conns[c].dirs[0].isn != Some(packet.tcp.seq),
            Some(_) => false,
        };
        let (conn, dir) = if new_connection {
            conns.push(Conn {
                client: src,
                server: dst,
                first_record: index + 1,
                dirs: [Direction::default(), Direction::default()],
                midstream: !syn || ack,
            });
            by_tuple.remove(&(dst, src));
            by_tuple.insert((src, dst), conns.len() - 1);
            (conns.len() - 1, 0)
        } else {
            existing.unwrap_or((0, 0))
        };
        let Some(c) = conns.get_mut(conn) else {
            located.push(None);
            continue;
        };
        let d = &mut c.dirs[dir];
        d.closed |=
            packet.tcp.flags.contains(TcpFlags::FIN) || packet.tcp.flags.contains(TcpFlags::RST);
        if syn {
            if d.isn.is_none() {
                d.isn = Some(packet.tcp.seq);
                d.eno_option = eno_option(&seg);
            }
        } else if d.isn.is_none() {
            c.midstream = true;
        }
        d.add(
            packet.tcp.seq.wrapping_add(u32::from(syn)),
            &packet.tcp.payload,
        );
        located.push(Some(Located {
            conn,
            dir,
            ip_offset,
            packet,
        }));
    }
    (conns, located)
}

/// Decrypts one direction's stream from `start` with `reader`.
fn decrypt_direction(
    stream: &crate::stream::Stream,
    reader: FrameReader,
    start: usize,
    closed: bool,
) -> DirectionReport {
    let mut reader = reader;
    let mut report = DirectionReport {
        wire_bytes: stream.bytes.len() as u64,
        closed,
        ..DirectionReport::default()
    };
    if let Some(hole) = stream.hole_at {
        report.notes.push(format!(
            "bytes missing from the capture at stream offset {hole}; nothing after them is decrypted"
        ));
    }
    let frames_area = stream.bytes.get(start..).unwrap_or_default();
    let mut frames: Vec<ReceivedFrame> = Vec::new();
    let fed = reader.feed(frames_area, &mut frames);
    let mut plain = 0u64;
    for f in frames {
        report.frames += 1;
        report.rekeys += u64::from(f.rekey);
        plain += f.data.len() as u64;
        report.plaintext.extend_from_slice(&f.data);
        report
            .boundaries
            .push((f.offset + f.wire_len as u64, plain));
    }
    match fed {
        Err(e) => report.failures.push(e),
        Ok(()) if reader.buffered() > 0 => report.notes.push(format!(
            "the capture ends inside a frame at stream offset {} ({} bytes of it captured)",
            reader.next_offset(),
            reader.buffered()
        )),
        Ok(()) => {}
    }
    // Frame offsets count from ISN+1 whatever the project decision on Init
    // bytes, so they index the stream directly once `start` is added back
    // for the other reading.
    if !tcpcrypt_proto::frame::INIT_BYTES_COUNT_IN_FRAME_OFFSET {
        for b in &mut report.boundaries {
            b.0 += start as u64;
        }
    }
    report
}

/// Pass 2: the outcome of each connection.
fn analyse(conns: &[Conn], keylog: &KeyLog) -> Vec<ConnectionReport> {
    conns
        .iter()
        .map(|c| {
            let outcome = analyse_one(c, keylog);
            ConnectionReport {
                client: c.client,
                server: c.server,
                first_record: c.first_record,
                outcome,
            }
        })
        .collect()
}

fn analyse_one(c: &Conn, keylog: &KeyLog) -> Outcome {
    if c.midstream || c.dirs[0].isn.is_none() || c.dirs[1].isn.is_none() {
        let any_eno = c.dirs.iter().any(|d| d.eno_option.is_some());
        let why = "the capture does not hold both SYNs of the connection".to_string();
        return if any_eno || c.dirs.iter().all(|d| d.isn.is_none()) {
            Outcome::NotDecrypted(why)
        } else {
            Outcome::Plain(format!("{why}; its SYN carried no ENO option"))
        };
    }
    let (Some(client_opt), Some(server_opt)) = (&c.dirs[0].eno_option, &c.dirs[1].eno_option)
    else {
        return Outcome::Plain("no ENO option in both SYNs".into());
    };
    let streams = [c.dirs[0].reassemble(), c.dirs[1].reassemble()];
    match find_keys(
        client_opt,
        server_opt,
        [&streams[0].bytes, &streams[1].bytes],
        keylog,
    ) {
        Err(Undecryptable::Plain(why)) => Outcome::Plain(why),
        Err(Undecryptable::NoKeys(why)) => Outcome::NotDecrypted(why),
        Ok(keys) => {
            let [r0, r1] = keys.readers;
            let dir = |i: usize, r: Option<(FrameReader, usize)>| match r {
                Some((reader, start)) => {
                    decrypt_direction(&streams[i], reader, start, c.dirs[i].closed)
                }
                None => DirectionReport {
                    wire_bytes: streams[i].bytes.len() as u64,
                    closed: c.dirs[i].closed,
                    ..DirectionReport::default()
                },
            };
            Outcome::Decrypted {
                facts: keys.facts,
                directions: Box::new([dir(0, r0), dir(1, r1)]),
            }
        }
    }
}

/// Pass 3: the output records of one located packet of a decrypted
/// connection; `delivered` is how far that direction's stream was shown.
fn rewrite(
    record: &Record,
    at: &Located,
    dirs: &[Direction; 2],
    reports: &[DirectionReport; 2],
    delivered: &mut [u64; 2],
) -> Option<Vec<Record>> {
    let (d, o) = (at.dir, 1 - at.dir);
    let own_isn = dirs[d].isn?;
    let peer_isn = dirs[o].isn?;
    let tcp = &at.packet.tcp;
    let syn = tcp.flags.contains(TcpFlags::SYN);
    let map = |isn: u32, report: &DirectionReport, seq: u32| -> u32 {
        let off = seq.wrapping_sub(isn.wrapping_add(1));
        isn.wrapping_add(1)
            .wrapping_add(report.plain_at(u64::from(off)) as u32)
    };
    let mut base = tcp.clone();
    base.options.retain(|o| o.kind() != ENO_KIND);
    for opt in &mut base.options {
        if let TcpOption::Sack(blocks) = opt {
            for (l, r) in blocks.iter_mut() {
                *l = map(peer_isn, &reports[o], *l);
                *r = map(peer_isn, &reports[o], *r);
            }
        }
    }
    if tcp.flags.contains(TcpFlags::ACK) && tcp.ack != peer_isn {
        base.ack = map(peer_isn, &reports[o], tcp.ack);
    }
    base.payload.clear();
    let mut segments: Vec<TcpRepr> = Vec::new();
    if syn {
        segments.push(base);
    } else {
        let start = u64::from(dirs[d].offset_of(tcp.seq)?);
        let end = start + tcp.payload.len() as u64;
        let report = &reports[d];
        let (from, to) = if end > delivered[d] {
            let from = report.plain_at(delivered[d]);
            delivered[d] = end;
            (from, report.plain_at(end))
        } else {
            let p = report.plain_at(start);
            (p, p)
        };
        let plain = report
            .plaintext
            .get(from as usize..to as usize)
            .unwrap_or_default();
        let seq0 = own_isn.wrapping_add(1).wrapping_add(from as u32);
        let chunks: Vec<&[u8]> = if plain.is_empty() {
            vec![&[]]
        } else {
            plain.chunks(MAX_OUTPUT_PAYLOAD).collect()
        };
        let last = chunks.len() - 1;
        let mut seq = seq0;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut s = base.clone();
            s.seq = seq;
            s.payload = chunk.into();
            if i != last {
                s.flags.set(TcpFlags::FIN, false);
                s.flags.set(TcpFlags::PSH, false);
            }
            seq = seq.wrapping_add(chunk.len() as u32);
            segments.push(s);
        }
    }
    let link = record.data.get(..at.ip_offset)?;
    segments
        .into_iter()
        .map(|tcp| {
            let packet = Packet {
                ip: at.packet.ip.clone(),
                tcp,
            };
            let mut data = link.to_vec();
            data.extend_from_slice(&packet.to_bytes().ok()?);
            Some(Record {
                ts_sec: record.ts_sec,
                ts_usec: record.ts_usec,
                orig_len: data.len() as u32,
                data,
            })
        })
        .collect()
}

/// Decrypts every tcpcrypt connection of `capture` that `keylog` has keys
/// for.
pub fn decrypt(capture: &Capture, keylog: &KeyLog) -> Decrypted {
    let (conns, located) = group(capture);
    let connections = analyse(&conns, keylog);
    let mut delivered = vec![[0u64; 2]; conns.len()];
    let mut records = Vec::with_capacity(capture.records.len());
    for (record, at) in capture.records.iter().zip(&located) {
        let rewritten = at.as_ref().and_then(|at| {
            let Outcome::Decrypted { directions, .. } = &connections.get(at.conn)?.outcome else {
                return None;
            };
            rewrite(
                record,
                at,
                &conns.get(at.conn)?.dirs,
                directions,
                delivered.get_mut(at.conn)?,
            )
        });
        match rewritten {
            Some(new) => records.extend(new),
            None => records.push(record.clone()),
        }
    }
    Decrypted {
        connections,
        output: Capture {
            linktype: capture.linktype,
            records,
            damage: None,
        },
    }
}
