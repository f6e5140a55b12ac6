//! Per-connection ENO handshake bookkeeping (RFC 8547 section 4.6): when to
//! attach ENO, when a missing ENO disables it, and when encryption starts.

use super::negotiate::{DisableReason, Negotiated};

/// The flags of a TCP segment that matter to the ENO handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags {
    pub syn: bool,
    pub ack: bool,
}

impl SegmentFlags {
    pub const SYN: SegmentFlags = SegmentFlags {
        syn: true,
        ack: false,
    };
    pub const SYN_ACK: SegmentFlags = SegmentFlags {
        syn: true,
        ack: true,
    };
    pub const ACK: SegmentFlags = SegmentFlags {
        syn: false,
        ack: true,
    };

    fn name(self) -> &'static str {
        match (self.syn, self.ack) {
            (true, false) => "SYN",
            (true, true) => "SYN-ACK",
            (false, true) => "ACK",
            (false, false) => "non-ACK",
        }
    }
}

/// Where the ENO handshake of a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnoStatus<'a> {
    /// Not decided yet: keep following [`EnoHandshake::must_send_eno`].
    Pending,
    /// Encryption is on with this outcome: from now on no raw payload may
    /// reach the application.
    Enabled(&'a Negotiated),
    /// Plain TCP, for this reason; send no more ENO options.
    Disabled(&'a DisableReason),
}

/// Sans-IO tracker of one connection's ENO handshake.
///
/// The caller reports every segment it sends and receives during the
/// handshake, and the result of [`negotiate`](super::negotiate) or
/// [`passive_reply`](super::passive_reply) once both SYN-form options are
/// known. The tracker applies the RFC 8547 section 4.6 rules:
///
/// - ENO goes on every sent segment until ENO is disabled or a segment
///   without SYN has been received ([`must_send_eno`](Self::must_send_eno)).
/// - A received segment without ENO, up to and including the first received
///   ACK, disables ENO.
/// - Leaving ENO out of a segment we had to mark (allowed to an active
///   opener between SYN retransmissions) disables ENO.
/// - Encryption is enabled once an ACK carrying ENO was both sent and
///   received and negotiation succeeded.
#[derive(Clone, Debug, Default)]
pub struct EnoHandshake {
    received_non_syn: bool,
    first_ack_received: bool,
    sent_ack_with_eno: bool,
    received_ack_with_eno: bool,
    negotiated: Option<Negotiated>,
    disabled: Option<DisableReason>,
}

impl EnoHandshake {
    /// A connection that will try ENO.
    pub fn new() -> EnoHandshake {
        EnoHandshake::default()
    }

    /// Whether the next segment we send must carry ENO: the SYN-form option
    /// on a SYN, [`NON_SYN_OPTION`](super::NON_SYN_OPTION) otherwise.
    pub fn must_send_eno(&self) -> bool {
        self.disabled.is_none() && !self.received_non_syn
    }

    /// Records a segment we sent and whether it carried an ENO option.
    pub fn on_sent(&mut self, flags: SegmentFlags, carried_eno: bool) {
        if self.disabled.is_some() {
            return;
        }
        if !carried_eno && self.must_send_eno() {
            self.disable(DisableReason::Local("a segment was sent without ENO"));
            return;
        }
        if flags.ack && carried_eno {
            self.sent_ack_with_eno = true;
        }
    }

    /// Records a segment we received and whether it carried an ENO option.
    ///
    /// For a SYN, "carried" means exactly one ENO option ([`EnoScan::One`]);
    /// two or more count as none. Whether that option is well formed is
    /// for negotiation to say: pass its result to
    /// [`on_negotiated`](Self::on_negotiated).
    ///
    /// [`EnoScan::One`]: super::EnoScan::One
    pub fn on_received(&mut self, flags: SegmentFlags, carried_eno: bool) {
        if self.disabled.is_some() {
            return;
        }
        if !self.first_ack_received {
            if !carried_eno {
                self.disable(DisableReason::SegmentWithoutEno {
                    segment: flags.name(),
                });
                return;
            }
            if flags.ack {
                self.first_ack_received = true;
                self.received_ack_with_eno = true;
            }
        }
        if !flags.syn {
            self.received_non_syn = true;
        }
    }

    /// Records the outcome of negotiation.
    pub fn on_negotiated(&mut self, outcome: Result<Negotiated, DisableReason>) {
        match outcome {
            Ok(negotiated) => self.negotiated = Some(negotiated),
            Err(reason) => self.disable(reason),
        }
    }

    /// Turns ENO off for `reason`; the first reason is kept.
    pub fn disable(&mut self, reason: DisableReason) {
        if self.disabled.is_none() {
            self.disabled = Some(reason);
        }
    }

    /// The current state.
    pub fn status(&self) -> EnoStatus<'_> {
        if let Some(reason) = &self.disabled {
            return EnoStatus::Disabled(reason);
        }
        match &self.negotiated {
            Some(n) if self.sent_ack_with_eno && self.received_ack_with_eno => {
                EnoStatus::Enabled(n)
            }
            _ => EnoStatus::Pending,
        }
    }
}
