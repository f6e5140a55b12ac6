//! NFQUEUE over netlink, written directly on `libc`.
//!
//! The existing crates either cannot enlarge the socket buffer or batch (and
//! drop under load) or are unsound (ARCHITECTURE §7), so this module speaks
//! the `nfnetlink_queue` protocol itself: bind one queue in copy-packet mode,
//! receive many packets per system call (`recvmmsg`), and send many verdicts
//! per `sendmsg`, large rewritten packets from their own buffers. With
//! [`Queue::take_large_segments`] the kernel hands over GSO and GRO packets
//! whole (up to 64 KiB) instead of cutting them up and checksumming every
//! piece first: one queue round trip per large segment rather than one per
//! MSS, which is what bulk throughput depends on.
//!
//! All `unsafe` of the netlink socket lives here; message encoding and
//! decoding is plain safe code over byte slices.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_SKB_INFO: u16 = 14;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
/// Hand GSO packets over whole.
const NFQA_CFG_F_GSO: u32 = 1 << 2;

/// `NFQA_SKB_INFO` flags (linux/netfilter/nfnetlink_queue.h). The kernel
/// sets `CSUMNOTREADY` for a packet whose checksum is still to be filled in
/// (CHECKSUM_PARTIAL) and otherwise `CSUM_NOTVERIFIED` when nobody checked
/// the checksum yet; it omits the attribute when no flag applies.
#[cfg(test)]
const NFQA_SKB_CSUMNOTREADY: u32 = 1 << 0;
const NFQA_SKB_GSO: u32 = 1 << 1;
const NFQA_SKB_CSUM_NOTVERIFIED: u32 = 1 << 2;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Largest IP packet plus generous room for the netlink headers and the
/// attributes the kernel adds around the payload.
const RECV_BUF_LEN: usize = 65536 + 4096;
/// Send the verdicts collected so far once they carry this many bytes. A
/// packet waits in the kernel until its verdict is sent, and its sender's
/// TCP counts it against the bytes it may have queued below it (TCP small
/// queues, about a millisecond's worth at its pacing rate): holding a batch
/// of 64 KiB packets until the whole batch is done would stall the sender,
/// while a few small ones share one system call.
const VERDICT_FLUSH_LEN: usize = 64 << 10;

/// Errors of the queue layer, each naming the netlink step that failed.
#[derive(Debug, thiserror::Error)]
pub enum NfqError {
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "binding NFQUEUE {queue} failed: {source} (another process may hold the queue in this network namespace)"
    )]
    Bind { queue: u16, source: io::Error },
    #[error("no acknowledgement from the kernel for {step}")]
    NoAck { step: &'static str },
}

fn io_err(step: &'static str) -> impl FnOnce(io::Error) -> NfqError {
    move |source| NfqError::Io { step, source }
}

/// The netfilter hook a packet was queued from; it tells its direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PreRouting,
    LocalIn,
    Forward,
    LocalOut,
    PostRouting,
}

impl Hook {
    fn from_u8(v: u8) -> Option<Hook> {
        Some(match v {
            0 => Hook::PreRouting,
            1 => Hook::LocalIn,
            2 => Hook::Forward,
            3 => Hook::LocalOut,
            4 => Hook::PostRouting,
            _ => return None,
        })
    }

    /// True for hooks that see packets the local stack sends.
    pub fn is_outbound(self) -> bool {
        matches!(self, Hook::LocalOut | Hook::PostRouting)
    }
}

/// A packet handed to user space, borrowed from the receive buffer.
#[derive(Debug)]
pub struct QueuedPacket<'a> {
    /// Kernel packet id, needed for the verdict.
    pub id: u32,
    pub hook: Hook,
    /// The skb mark (0 if the kernel did not report one).
    pub mark: u32,
    /// Whether the kernel vouches for the TCP checksum; see
    /// [`checksum_verified`].
    pub checksum_verified: bool,
    /// A GSO or GRO packet: several segments' worth in one, which the
    /// kernel cuts at its MSS after the verdict (outbound).
    pub large: bool,
    /// The copy stopped short of the packet (it was longer than a netlink
    /// attribute holds): `payload` is not the whole packet.
    pub truncated: bool,
    /// The whole IP packet, unless `truncated`.
    pub payload: &'a [u8],
}

/// What to do with a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NfVerdict {
    Drop,
    Accept,
}

impl NfVerdict {
    fn code(self) -> u32 {
        match self {
            NfVerdict::Drop => 0,
            NfVerdict::Accept => 1,
        }
    }
}

/// Receive buffers for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    filled: usize,
    /// `recvmmsg`'s iovecs and headers, kept so that a call allocates
    /// nothing; their pointers are set afresh before every call.
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    /// Room for `count` datagrams per call.
    pub fn new(count: usize) -> RecvBatch {
        let count = count.max(1);
        RecvBatch {
            bufs: (0..count).map(|_| vec![0u8; RECV_BUF_LEN]).collect(),
            lens: vec![0; count],
            filled: 0,
            iovs: Vec::with_capacity(count),
            hdrs: Vec::with_capacity(count),
        }
    }

    /// The datagrams received by the last call, as raw netlink bytes.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs
            .iter()
            .zip(&self.lens)
            .take(self.filled)
            .map(|(b, &len)| b.get(..len).unwrap_or(&[]))
    }
}

/// Verdicts collected for one `sendmsg`.
///
/// The message headers and small packets are written into one buffer;
/// large rewritten packets are taken over as they are (their `Vec` is
/// swapped for an empty one) and sent from where they lie as iovecs of
/// their own, so a 64 KiB packet is not copied once more on its way out.
/// The byte stream the kernel receives is `buf[..splices[0]]`,
/// `packets[0]`, `buf[splices[0]..splices[1]]`, `packets[1]`, ... and the
/// rest of `buf`.
pub struct VerdictBatch {
    queue: u16,
    buf: Vec<u8>,
    packets: Vec<Vec<u8>>,
    /// Where in `buf` each of `packets` goes.
    splices: Vec<usize>,
    /// Emptied packet buffers, handed back for the caller's next packet.
    spare: Vec<Vec<u8>>,
    count: usize,
}

/// A packet at least this long is sent from its own buffer rather than
/// copied into the batch: below it the copy costs less than an iovec.
const SPLICE_MIN: usize = 4096;
/// Most packets sent from their own buffers in one batch: each needs two
/// iovecs (itself and the headers after it), and the batch is sent early
/// when it reaches this many. Far below `IOV_MAX`.
const MAX_SPLICES: usize = 16;
/// Most pieces of one batch's byte stream: headers before each spliced
/// packet, the packets, and the headers after the last.
const MAX_PIECES: usize = 2 * MAX_SPLICES + 1;
/// Emptied buffers kept for reuse; more are freed.
const MAX_SPARE: usize = 4;

impl VerdictBatch {
    pub fn new(queue: u16) -> VerdictBatch {
        VerdictBatch {
            queue,
            buf: Vec::with_capacity(64 * 1024),
            packets: Vec::with_capacity(MAX_SPLICES),
            splices: Vec::with_capacity(MAX_SPLICES),
            spare: Vec::with_capacity(MAX_SPARE),
            count: 0,
        }
    }

    /// Adds a verdict; `payload` replaces the packet and `mark` its skb
    /// mark (the whole 32 bits) when given. A payload longer than an
    /// attribute can say (the kernel would take it cut short, a corrupt
    /// packet) turns the verdict into a drop: TCP resends what is lost,
    /// nothing resends what is mangled.
    pub fn push(&mut self, id: u32, verdict: NfVerdict, mark: Option<u32>, payload: Option<&[u8]>) {
        let (verdict, payload) = match payload {
            Some(p) if !fits_attr(p) => (NfVerdict::Drop, None),
            other => (verdict, other),
        };
        let payload = payload.unwrap_or(&[]);
        self.put_header(id, verdict, mark, payload.len());
        if !payload.is_empty() {
            put_attr(&mut self.buf, NFQA_PAYLOAD, payload);
        }
        self.count += 1;
    }

    /// Like [`VerdictBatch::push`] with `packet` as the payload, but takes
    /// the packet's bytes instead of copying them when it is large: `packet`
    /// is left empty (with the capacity of an earlier, already sent one).
    pub fn push_packet(
        &mut self,
        id: u32,
        verdict: NfVerdict,
        mark: Option<u32>,
        packet: &mut Vec<u8>,
    ) {
        // `push` turns a packet too long for an attribute into a drop; a
        // batch full of spliced packets (the caller did not flush) copies.
        if packet.len() < SPLICE_MIN
            || packet.len() > MAX_ATTR_PAYLOAD
            || self.packets.len() >= MAX_SPLICES
        {
            self.push(id, verdict, mark, Some(packet));
            packet.clear();
            return;
        }
        let len = packet.len();
        self.put_header(id, verdict, mark, len);
        // The attribute's header, then the packet (sent from its own
        // buffer), then the padding.
        put_attr_header(&mut self.buf, NFQA_PAYLOAD, len);
        self.splices.push(self.buf.len());
        put_attr_padding(&mut self.buf, len);
        let mut empty = self.spare.pop().unwrap_or_default();
        empty.clear();
        self.packets.push(std::mem::replace(packet, empty));
        self.count += 1;
    }

    /// Writes a verdict message's header and attributes up to the payload
    /// attribute, sized for a payload of `payload_len` bytes (0: none).
    fn put_header(&mut self, id: u32, verdict: NfVerdict, mark: Option<u32>, payload_len: usize) {
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&verdict.code().to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        let attrs_len = attr_len(hdr.len()) + mark.map_or(0, |m| attr_len(size_of_val(&m)));
        let payload_attr_len = if payload_len == 0 {
            0
        } else {
            attr_len(payload_len)
        };
        put_msg_header(
            &mut self.buf,
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            0,
            self.queue,
            attrs_len + payload_attr_len,
        );
        put_attr(&mut self.buf, NFQA_VERDICT_HDR, &hdr);
        if let Some(m) = mark {
            put_attr(&mut self.buf, NFQA_MARK, &m.to_be_bytes());
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the whole stream: headers and small packets in `buf`,
    /// the taken packets beside it.
    fn stream_len(&self) -> usize {
        self.buf.len() + self.packets.iter().map(Vec::len).sum::<usize>()
    }

    fn needs_flush(&self) -> bool {
        flush_due(self.stream_len(), self.packets.len())
    }

    /// The pieces of the byte stream in order, empty ones left out; at
    /// most [`MAX_PIECES`]. Written into a caller's array so sending a
    /// batch allocates nothing.
    fn pieces<'a>(&'a self, out: &mut [&'a [u8]; MAX_PIECES]) -> usize {
        let mut n = 0;
        let mut put = |p: &'a [u8]| {
            if !p.is_empty() {
                out[n] = p;
                n += 1;
            }
        };
        let mut from = 0;
        for (packet, &at) in self.packets.iter().zip(&self.splices) {
            put(&self.buf[from..at]);
            put(packet.as_slice());
            from = at;
        }
        put(&self.buf[from..]);
        n
    }

    /// The whole byte stream in one buffer, as the kernel receives it.
    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        let mut pieces = [&[][..]; MAX_PIECES];
        let n = self.pieces(&mut pieces);
        pieces[..n].concat()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.splices.clear();
        for p in self.packets.drain(..) {
            if self.spare.len() < MAX_SPARE {
                self.spare.push(p);
            }
        }
        self.count = 0;
    }
}

/// Whether a batch of `stream_len` bytes holding `taken` packets from
/// their own buffers is to be sent before more is added.
fn flush_due(stream_len: usize, taken: usize) -> bool {
    stream_len >= VERDICT_FLUSH_LEN || taken >= MAX_SPLICES
}

/// Whether an attribute can carry `payload`; logs the packet it cannot.
fn fits_attr(payload: &[u8]) -> bool {
    if payload.len() <= MAX_ATTR_PAYLOAD {
        return true;
    }
    log::error!(
        "a rewritten packet of {} bytes does not fit a verdict (at most {MAX_ATTR_PAYLOAD}): dropped",
        payload.len()
    );
    false
}

/// Most bytes one netlink attribute carries: its length field is 16 bits
/// and counts the 4-byte header.
const MAX_ATTR_PAYLOAD: usize = 0xffff - 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An attribute's header (length and type) before its data.
const NLA_HDRLEN: usize = 4;

/// Bytes an attribute carrying `data_len` bytes takes, padding included.
fn attr_len(data_len: usize) -> usize {
    align4(NLA_HDRLEN + data_len)
}

/// Writes an attribute's header for `data_len` bytes of data, which the
/// caller puts (or sends) right after it, followed by the padding.
fn put_attr_header(buf: &mut Vec<u8>, ty: u16, data_len: usize) {
    // Longer data cannot be expressed; `VerdictBatch::push` turns such a
    // payload into a drop before it gets here, so this only guards misuse.
    debug_assert!(
        data_len <= MAX_ATTR_PAYLOAD,
        "attribute of {data_len} bytes"
    );
    let len16 = u16::try_from(NLA_HDRLEN + data_len).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len16.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
}

/// Zero bytes after an attribute's `data_len` bytes of data, up to the
/// next 4-byte boundary.
fn put_attr_padding(buf: &mut Vec<u8>, data_len: usize) {
    buf.resize(buf.len() + attr_len(data_len) - NLA_HDRLEN - data_len, 0);
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    put_attr_header(buf, ty, data.len());
    buf.extend_from_slice(data);
    put_attr_padding(buf, data.len());
}

fn put_msg_header(buf: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16, body: usize) {
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN + body) as u32;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version 0, queue number big-endian.
    buf.push(0);
    buf.push(0);
    buf.extend_from_slice(&queue.to_be_bytes());
}

/// One netlink message found in a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Packet(QueuedPacket<'a>),
    /// `NLMSG_ERROR`: `errno` 0 is an acknowledgement.
    Ack {
        seq: u32,
        errno: i32,
    },
    Other,
}

impl PartialEq for QueuedPacket<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id
            && self.hook == o.hook
            && self.mark == o.mark
            && self.checksum_verified == o.checksum_verified
            && self.payload == o.payload
    }
}
impl Eq for QueuedPacket<'_> {}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn read_be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages. Malformed trailing bytes end the
/// iteration rather than failing: the kernel does not send them.
pub fn parse_datagram(mut data: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let len = read_u32(data, 0)? as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return None;
        }
        let msg = data.get(..len)?;
        data = data.get(align4(len).min(data.len())..).unwrap_or(&[]);
        Some(parse_message(msg))
    })
}

fn parse_message(msg: &[u8]) -> Message<'_> {
    let ty = read_u16(msg, 4).unwrap_or(0);
    if ty == NLMSG_ERROR {
        let errno = read_u32(msg, NLMSG_HDRLEN).map(|e| e as i32).unwrap_or(0);
        let seq = read_u32(msg, NLMSG_HDRLEN + 4 + 8).unwrap_or(0);
        return Message::Ack { seq, errno: -errno };
    }
    if ty == NLMSG_DONE || ty != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET) {
        return Message::Other;
    }
    let mut attrs = msg.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or(&[]);
    let (mut id, mut hook, mut mark, mut payload) = (None, None, 0, None);
    let mut skb_info = 0;
    let mut cap_len = None;
    while let (Some(alen), Some(aty)) = (read_u16(attrs, 0), read_u16(attrs, 2)) {
        let alen = alen as usize;
        if alen < 4 || alen > attrs.len() {
            break;
        }
        let body = attrs.get(4..alen).unwrap_or(&[]);
        match aty & NLA_TYPE_MASK {
            NFQA_PACKET_HDR => {
                id = read_be_u32(body, 0);
                hook = body.get(6).copied().and_then(Hook::from_u8);
            }
            NFQA_MARK => mark = read_be_u32(body, 0).unwrap_or(0),
            NFQA_PAYLOAD => payload = Some(body),
            NFQA_SKB_INFO => skb_info = read_be_u32(body, 0).unwrap_or(u32::MAX),
            NFQA_CAP_LEN => cap_len = Some(read_be_u32(body, 0).unwrap_or(u32::MAX)),
            _ => {}
        }
        attrs = attrs.get(align4(alen).min(attrs.len())..).unwrap_or(&[]);
    }
    let payload = payload.unwrap_or(&[]);
    match (id, hook) {
        (Some(id), Some(hook)) => Message::Packet(QueuedPacket {
            id,
            hook,
            mark,
            checksum_verified: checksum_verified(skb_info),
            large: skb_info != u32::MAX && skb_info & NFQA_SKB_GSO != 0,
            truncated: cap_len.is_some_and(|c| c as usize > payload.len()),
            payload,
        }),
        _ => Message::Other,
    }
}

/// Whether the TCP checksum of a queued packet with these `NFQA_SKB_INFO`
/// flags (0 when the attribute is absent) was verified by the kernel.
///
/// `nfqnl_build_packet_message` decides before it copies the packet: for
/// packets from the network (PREROUTING, INPUT, FORWARD) the flag
/// `CSUM_NOTVERIFIED` is set unless `skb_csum_unnecessary()` holds, i.e.
/// unless the NIC or an earlier check (conntrack in PREROUTING verifies TCP
/// checksums by default) vouched for it; packets the host sends (OUTPUT)
/// never get it. `CSUMNOTREADY` (CHECKSUM_PARTIAL) means the checksum
/// field is not filled in yet, which only the GSO flag lets through
/// uncomputed: the packet was built by a kernel on this host (this
/// namespace, or another one across a veth or loopback) and never crossed
/// a wire, so its bytes are as their sender wrote them and count as
/// verified; the kernel reports it instead of, never beside,
/// `CSUM_NOTVERIFIED`. A malformed attribute (read as all flags set)
/// counts as "not verified".
pub fn checksum_verified(skb_info: u32) -> bool {
    skb_info & NFQA_SKB_CSUM_NOTVERIFIED == 0
}

/// A bound NFQUEUE netlink socket.
pub struct Queue {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
}

impl Queue {
    /// Binds queue `queue` in copy-packet mode with a kernel queue of
    /// `max_len` packets and a receive buffer of `rcvbuf` bytes.
    pub fn bind(queue: u16, max_len: u32, rcvbuf: usize) -> Result<Queue, NfqError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io_err("opening the netlink socket")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io_err("binding the netlink socket")(
                io::Error::last_os_error(),
            ));
        }
        let bufsize = i32::try_from(rcvbuf).unwrap_or(i32::MAX);
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bufsize)
            .map_err(io_err("setting SO_RCVBUFFORCE"))?;
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20)
            .map_err(io_err("setting SO_SNDBUFFORCE"))?;
        // Without this a full receive buffer makes recv fail with ENOBUFS;
        // we prefer to carry on (the lost packets are retransmitted by TCP).
        setsockopt_int(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1)
            .map_err(io_err("setting NETLINK_NO_ENOBUFS"))?;
        set_recv_timeout(&fd, Some(Duration::from_secs(2)))
            .map_err(io_err("setting a receive timeout"))?;

        let mut q = Queue { fd, queue, seq: 1 };
        let mut cmd = [0u8; 4];
        cmd[0] = NFQNL_CFG_CMD_BIND;
        q.config(NFQA_CFG_CMD, &cmd, "binding the queue")
            .map_err(|e| match e {
                NfqError::Io { source, .. } => NfqError::Bind { queue, source },
                other => other,
            })?;
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&0xffffu32.to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        q.config(NFQA_CFG_PARAMS, &params, "setting copy-packet mode")?;
        q.config(
            NFQA_CFG_QUEUE_MAXLEN,
            &max_len.to_be_bytes(),
            "setting the queue length",
        )?;
        set_recv_timeout(&q.fd, None).map_err(io_err("clearing the receive timeout"))?;
        set_nonblocking(&q.fd).map_err(io_err("making the netlink socket non-blocking"))?;
        Ok(q)
    }

    /// Asks the kernel to queue GSO and GRO packets whole (see the module
    /// doc). Their payload can then reach 64 KiB, and one whose checksum
    /// is left for later arrives with `CSUMNOTREADY`.
    pub fn take_large_segments(&mut self) -> Result<(), NfqError> {
        let flag = NFQA_CFG_F_GSO.to_be_bytes();
        self.config_attrs(
            &[(NFQA_CFG_FLAGS, &flag), (NFQA_CFG_MASK, &flag)],
            "asking for whole GSO packets",
        )
    }

    pub fn queue_num(&self) -> u16 {
        self.queue
    }

    /// Sends one config attribute with an acknowledgement request and waits
    /// for the kernel's answer.
    fn config(&mut self, attr: u16, data: &[u8], step: &'static str) -> Result<(), NfqError> {
        self.config_attrs(&[(attr, data)], step)
    }

    /// Sends config attributes in one message (the kernel takes flags only
    /// together with their mask) and waits for the acknowledgement.
    fn config_attrs(&mut self, attrs: &[(u16, &[u8])], step: &'static str) -> Result<(), NfqError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut body = Vec::new();
        for (attr, data) in attrs {
            put_attr(&mut body, *attr, data);
        }
        let mut msg = Vec::new();
        put_msg_header(
            &mut msg,
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            self.queue,
            body.len(),
        );
        msg.extend_from_slice(&body);
        self.send_raw(&msg).map_err(io_err(step))?;
        let mut buf = vec![0u8; RECV_BUF_LEN];
        for _ in 0..64 {
            let n = self.recv_one(&mut buf).map_err(io_err(step))?;
            for m in parse_datagram(buf.get(..n).unwrap_or(&[])) {
                if let Message::Ack { seq: s, errno } = m
                    && s == seq
                {
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(NfqError::Io {
                            step,
                            source: io::Error::from_raw_os_error(errno),
                        })
                    };
                }
            }
        }
        Err(NfqError::NoAck { step })
    }

    fn send_raw(&self, buf: &[u8]) -> io::Result<()> {
        self.send_pieces(&[buf])
    }

    /// Sends one netlink datagram made of `pieces` (at most
    /// [`MAX_PIECES`]), without joining them.
    fn send_pieces(&self, pieces: &[&[u8]]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let n = pieces.len();
        if n > MAX_PIECES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a verdict batch in more pieces than it can have",
            ));
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_PIECES];
        for (v, p) in iov.iter_mut().zip(pieces) {
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
        }
        // SAFETY: msghdr is plain data; the fields that matter are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n as _;
        loop {
            // SAFETY: `msg` points at `addr` and at iovecs over the live
            // `pieces`, which the kernel only reads.
            let rc = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn recv_one(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let rc =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Receives as many datagrams as are ready (up to the batch size)
    /// without blocking. Returns how many arrived; 0 means none was ready.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> Result<usize, NfqError> {
        let RecvBatch {
            bufs,
            lens,
            filled,
            iovs,
            hdrs,
        } = batch;
        *filled = 0;
        let n = bufs.len();
        iovs.clear();
        iovs.extend(bufs.iter_mut().map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        }));
        hdrs.clear();
        // SAFETY: mmsghdr is plain data; all-zero is a valid value.
        hdrs.extend((0..n).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }));
        for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let rc = loop {
            // SAFETY: every header points at one iovec that points at a live
            // buffer of the stated length; all of them outlive the call.
            let rc = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                // Lost packets because the buffer overflowed: TCP recovers.
                Some(libc::ENOBUFS) => return Ok(0),
                _ => {
                    return Err(NfqError::Io {
                        step: "receiving packets",
                        source: err,
                    });
                }
            }
        };
        for (len, h) in lens.iter_mut().zip(hdrs.iter()).take(rc) {
            *len = h.msg_len as usize;
        }
        *filled = rc;
        Ok(rc)
    }

    /// Sends the collected verdicts and empties the batch.
    pub fn send_verdicts(&self, batch: &mut VerdictBatch) -> Result<(), NfqError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pieces = [&[][..]; MAX_PIECES];
        let n = batch.pieces(&mut pieces);
        let res = self.send_pieces(&pieces[..n]);
        batch.clear();
        res.map_err(io_err("sending verdicts"))
    }

    /// Adds a verdict and sends the batch early if it grew large.
    pub fn push_verdict(
        &self,
        batch: &mut VerdictBatch,
        id: u32,
        verdict: NfVerdict,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) -> Result<(), NfqError> {
        batch.push(id, verdict, mark, payload);
        self.send_if_full(batch)
    }

    /// Like [`Queue::push_verdict`] with `packet` as the replacement,
    /// taken rather than copied when large ([`VerdictBatch::push_packet`]).
    pub fn push_verdict_taking(
        &self,
        batch: &mut VerdictBatch,
        id: u32,
        verdict: NfVerdict,
        mark: Option<u32>,
        packet: &mut Vec<u8>,
    ) -> Result<(), NfqError> {
        batch.push_packet(id, verdict, mark, packet);
        self.send_if_full(batch)
    }

    /// Sends the batch early once it grew large.
    fn send_if_full(&self, batch: &mut VerdictBatch) -> Result<(), NfqError> {
        if batch.needs_flush() {
            self.send_verdicts(batch)?;
        }
        Ok(())
    }
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_recv_timeout(fd: &OwnedFd, timeout: Option<Duration>) -> io::Result<()> {
    let tv = match timeout {
        Some(d) => libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        },
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: `tv` is a live timeval and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_message(id: u32, hook: u8, mark: Option<u32>, payload: &[u8]) -> Vec<u8> {
        packet_message_with(id, hook, mark, None, payload)
    }

    fn packet_message_with(
        id: u32,
        hook: u8,
        mark: Option<u32>,
        skb_info: Option<&[u8]>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        let mut hdr = [0u8; 7];
        hdr[..4].copy_from_slice(&id.to_be_bytes());
        hdr[4..6].copy_from_slice(&0x0800u16.to_be_bytes());
        hdr[6] = hook;
        put_attr(&mut body, NFQA_PACKET_HDR, &hdr);
        if let Some(m) = mark {
            put_attr(&mut body, NFQA_MARK, &m.to_be_bytes());
        }
        if let Some(info) = skb_info {
            put_attr(&mut body, NFQA_SKB_INFO, info);
        }
        put_attr(&mut body, NFQA_PAYLOAD, payload);
        let mut msg = Vec::new();
        put_msg_header(&mut msg, NFQNL_MSG_PACKET, 0, 0, 7, body.len());
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn packet_message_yields_id_hook_mark_and_payload() {
        let msg = packet_message(42, 3, Some(0x1234), b"\x45abcde");
        let got: Vec<_> = parse_datagram(&msg).collect();
        assert_eq!(
            got,
            vec![Message::Packet(QueuedPacket {
                id: 42,
                hook: Hook::LocalOut,
                mark: 0x1234,
                checksum_verified: true,
                large: false,
                truncated: false,
                payload: b"\x45abcde",
            })]
        );
    }

    fn verified_with(skb_info: Option<&[u8]>) -> bool {
        let msg = packet_message_with(1, 1, None, skb_info, b"\x45");
        match parse_datagram(&msg).next() {
            Some(Message::Packet(p)) => p.checksum_verified,
            other => panic!("not a packet: {other:?}"),
        }
    }

    #[test]
    fn checksum_counts_as_verified_unless_the_kernel_says_not_verified() {
        assert!(verified_with(None), "no NFQA_SKB_INFO");
        assert!(verified_with(Some(&NFQA_SKB_GSO.to_be_bytes())), "GSO only");
        assert!(
            !verified_with(Some(&NFQA_SKB_CSUM_NOTVERIFIED.to_be_bytes())),
            "CSUM_NOTVERIFIED"
        );
        assert!(
            verified_with(Some(&NFQA_SKB_CSUMNOTREADY.to_be_bytes())),
            "CSUMNOTREADY: built on this host, checksum still to be filled in"
        );
        assert!(!verified_with(Some(&7u32.to_be_bytes())), "all flags");
    }

    fn parsed(skb_info: Option<&[u8]>, cap_len: Option<u32>, payload: &[u8]) -> (bool, bool) {
        let mut msg = packet_message_with(1, 3, None, skb_info, payload);
        if let Some(c) = cap_len {
            // Attributes may come in any order; append one more and fix
            // the message length.
            put_attr(&mut msg, NFQA_CAP_LEN, &c.to_be_bytes());
            let len = msg.len() as u32;
            msg[..4].copy_from_slice(&len.to_ne_bytes());
        }
        match parse_datagram(&msg).next() {
            Some(Message::Packet(p)) => (p.large, p.truncated),
            other => panic!("not a packet: {other:?}"),
        }
    }

    #[test]
    fn gso_flag_and_cut_short_copies_are_reported() {
        assert_eq!(parsed(None, None, b"\x45abc"), (false, false));
        let gso = NFQA_SKB_GSO.to_be_bytes();
        assert_eq!(parsed(Some(&gso), None, b"\x45abc"), (true, false));
        assert_eq!(
            parsed(None, Some(4), b"\x45abc"),
            (false, false),
            "cap = copy"
        );
        assert_eq!(parsed(None, Some(70_000), b"\x45abc"), (false, true));
        assert_eq!(
            parsed(Some(&[0, 2]), None, b"\x45"),
            (false, false),
            "malformed"
        );
    }

    #[test]
    fn a_cut_short_skb_info_attribute_counts_as_not_verified() {
        assert!(!verified_with(Some(&[0, 0])));
    }

    #[test]
    fn two_messages_in_one_datagram_are_both_found() {
        let mut dgram = packet_message(1, 1, None, b"x");
        dgram.extend(packet_message(2, 3, None, b"yz"));
        let ids: Vec<u32> = parse_datagram(&dgram)
            .filter_map(|m| match m {
                Message::Packet(p) => Some(p.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn truncated_datagram_ends_iteration_without_panic() {
        let msg = packet_message(9, 1, None, b"payload");
        for cut in 0..msg.len() {
            let _ = parse_datagram(&msg[..cut]).count();
        }
    }

    #[test]
    fn error_message_reports_negated_errno_and_sequence() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&36u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-libc::EBUSY).to_ne_bytes());
        // The echoed request header: length, type, flags, then its seq.
        msg.extend_from_slice(&[0u8; 8]);
        msg.extend_from_slice(&77u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        let got: Vec<_> = parse_datagram(&msg).collect();
        assert_eq!(
            got,
            vec![Message::Ack {
                seq: 77,
                errno: libc::EBUSY
            }]
        );
    }

    #[test]
    fn verdict_with_payload_encodes_header_and_padded_payload() {
        let mut b = VerdictBatch::new(5);
        b.push(0x01020304, NfVerdict::Accept, None, Some(b"abcde"));
        let buf = &b.bytes();
        // nlmsghdr(16) + nfgenmsg(4) + verdict attr(12) + payload attr(4+5+3 pad)
        assert_eq!(buf.len(), 16 + 4 + 12 + 12);
        assert_eq!(read_u32(buf, 0), Some(buf.len() as u32));
        assert_eq!(read_u16(buf, 4), Some((3 << 8) | 1));
        assert_eq!(&buf[18..20], &5u16.to_be_bytes());
        assert_eq!(read_u16(buf, 22), Some(NFQA_VERDICT_HDR));
        assert_eq!(&buf[24..28], &1u32.to_be_bytes());
        assert_eq!(&buf[28..32], &0x01020304u32.to_be_bytes());
        assert_eq!(read_u16(buf, 32), Some(9));
        assert_eq!(read_u16(buf, 34), Some(NFQA_PAYLOAD));
        assert_eq!(&buf[36..41], b"abcde");
    }

    #[test]
    fn a_payload_longer_than_an_attribute_holds_becomes_a_drop_not_a_cut_packet() {
        assert_eq!(MAX_ATTR_PAYLOAD, tcpcrypt_engine::MAX_VERDICT_PACKET);
        let mut b = VerdictBatch::new(5);
        b.push(
            7,
            NfVerdict::Accept,
            None,
            Some(&vec![0x45; MAX_ATTR_PAYLOAD]),
        );
        assert_eq!(
            read_u16(&b.bytes(), 32),
            Some(0xffff),
            "the largest payload still fits"
        );
        let mut b = VerdictBatch::new(5);
        b.push(
            7,
            NfVerdict::Accept,
            Some(1),
            Some(&vec![0x45; MAX_ATTR_PAYLOAD + 1]),
        );
        // Header, verdict attribute, mark attribute: no payload.
        assert_eq!(b.bytes().len(), 16 + 4 + 12 + 8);
        assert_eq!(&b.bytes()[24..28], &0u32.to_be_bytes(), "NF_DROP");
    }

    #[test]
    fn verdicts_accumulate_until_sent() {
        let mut b = VerdictBatch::new(0);
        b.push(1, NfVerdict::Drop, None, None);
        b.push(2, NfVerdict::Accept, None, None);
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes().len(), 2 * (16 + 4 + 12));
    }

    #[test]
    fn verdict_with_mark_carries_it_big_endian_before_the_payload() {
        let mut b = VerdictBatch::new(5);
        b.push(9, NfVerdict::Accept, Some(0x0300_0001), Some(b"ab"));
        let buf = &b.bytes();
        // nlmsghdr(16) + nfgenmsg(4) + verdict(12) + mark(8) + payload(4+2+2 pad)
        assert_eq!(buf.len(), 16 + 4 + 12 + 8 + 8);
        assert_eq!(read_u32(buf, 0), Some(buf.len() as u32));
        assert_eq!(read_u16(buf, 32), Some(8));
        assert_eq!(read_u16(buf, 34), Some(NFQA_MARK));
        assert_eq!(&buf[36..40], &0x0300_0001u32.to_be_bytes());
        assert_eq!(read_u16(buf, 40), Some(6));
        assert_eq!(read_u16(buf, 42), Some(NFQA_PAYLOAD));
        assert_eq!(&buf[44..46], b"ab");
    }

    #[test]
    fn a_taken_packet_is_sent_as_the_same_bytes_a_copied_one_would_be() {
        let big: Vec<u8> = (0..SPLICE_MIN + 3).map(|i| i as u8).collect();
        let small = b"tiny".to_vec();
        let mut copied = VerdictBatch::new(5);
        copied.push(1, NfVerdict::Accept, Some(7), Some(&big));
        copied.push(2, NfVerdict::Accept, None, Some(&small));
        copied.push(3, NfVerdict::Drop, None, None);
        copied.push(4, NfVerdict::Accept, None, Some(&big));
        let mut taken = VerdictBatch::new(5);
        for (id, verdict, mark, packet) in [
            (1, NfVerdict::Accept, Some(7), Some(&big)),
            (2, NfVerdict::Accept, None, Some(&small)),
            (3, NfVerdict::Drop, None, None),
            (4, NfVerdict::Accept, None, Some(&big)),
        ] {
            match packet {
                Some(p) => {
                    let mut p = p.clone();
                    taken.push_packet(id, verdict, mark, &mut p);
                    assert!(p.is_empty(), "the caller's buffer is handed back empty");
                }
                None => taken.push(id, verdict, mark, None),
            }
        }
        assert_eq!(taken.packets.len(), 2, "the large packets are not copied");
        assert_eq!(taken.len(), 4);
        assert_eq!(taken.bytes(), copied.bytes());
        assert_eq!(taken.stream_len(), copied.bytes().len());
    }

    #[test]
    fn taken_buffers_come_back_for_later_packets() {
        let mut b = VerdictBatch::new(0);
        let mut p = vec![0x45; SPLICE_MIN];
        b.push_packet(1, NfVerdict::Accept, None, &mut p);
        b.clear();
        assert_eq!(
            p.capacity(),
            0,
            "nothing to hand back before the first send"
        );
        p.extend_from_slice(&[0x45; SPLICE_MIN]);
        b.push_packet(2, NfVerdict::Accept, None, &mut p);
        assert!(
            p.capacity() >= SPLICE_MIN,
            "the first packet's buffer, emptied"
        );
    }

    #[test]
    fn a_batch_of_many_taken_packets_asks_to_be_sent() {
        let mut b = VerdictBatch::new(0);
        for id in 0..MAX_SPLICES as u32 {
            assert!(!b.needs_flush());
            let mut p = vec![0x45; SPLICE_MIN];
            b.push_packet(id, NfVerdict::Accept, None, &mut p);
        }
        assert!(b.needs_flush());
        // The count asks on its own, under the byte limit.
        assert!(flush_due(0, MAX_SPLICES));
        assert!(!flush_due(0, MAX_SPLICES - 1));
    }

    #[test]
    fn a_batch_never_holds_more_pieces_than_a_send_takes() {
        // A caller that keeps pushing without sending: past MAX_SPLICES the
        // packets are copied in, so the stream stays within MAX_PIECES.
        let mut taken = VerdictBatch::new(0);
        let mut copied = VerdictBatch::new(0);
        for id in 0..2 * MAX_SPLICES as u32 {
            let packet: Vec<u8> = (0..SPLICE_MIN).map(|i| (i as u32 ^ id) as u8).collect();
            taken.push_packet(id, NfVerdict::Accept, None, &mut packet.clone());
            copied.push(id, NfVerdict::Accept, None, Some(&packet));
        }
        assert_eq!(taken.packets.len(), MAX_SPLICES);
        let mut pieces = [&[][..]; MAX_PIECES];
        assert!(taken.pieces(&mut pieces) <= MAX_PIECES);
        assert_eq!(taken.bytes(), copied.bytes());
    }

    #[test]
    fn a_taken_packet_too_long_for_an_attribute_becomes_a_drop() {
        let mut b = VerdictBatch::new(5);
        let mut p = vec![0x45; MAX_ATTR_PAYLOAD + 1];
        b.push_packet(7, NfVerdict::Accept, None, &mut p);
        assert!(p.is_empty());
        assert_eq!(b.bytes().len(), 16 + 4 + 12);
        assert_eq!(&b.bytes()[24..28], &0u32.to_be_bytes(), "NF_DROP");
    }
}
