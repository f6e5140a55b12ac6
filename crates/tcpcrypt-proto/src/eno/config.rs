//! What a host offers in ENO, and the TEP-specific rules negotiation
//! consults.

use super::option::{EncodeError, SynOption, TepSuboption};
use super::tep::{GlobalSuboption, TepId};

/// Which host sent a suboption, from the point of view of the host running
/// the negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Our own SYN-form option.
    Local,
    /// The peer's SYN-form option.
    Peer,
}

/// TEP-specific validity (RFC 8547 section 4.5, conditions 2 and 3).
///
/// ENO itself knows nothing of suboption data; each TEP says what data is
/// acceptable and whether its identifier may appear more than once in one
/// option. Implementations may hold per-connection state (for instance the
/// resumption identifier an active opener offered, to reject a reply whose
/// identifier half does not match).
pub trait TepRules {
    /// Whether `suboption`, sent by `origin`, is acceptable for its TEP.
    /// Returning `false` makes that TEP invalid for the connection.
    fn validate(&self, suboption: &TepSuboption, origin: Origin) -> bool;

    /// Whether the TEP defines more than one suboption with its identifier
    /// in a single ENO option.
    fn allows_repeat(&self, id: TepId) -> bool;
}

/// Rules for TEPs that take no suboption data and no repetition: only a
/// bare identifier with `v = 0` is valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlainTeps;

impl TepRules for PlainTeps {
    fn validate(&self, suboption: &TepSuboption, _origin: Origin) -> bool {
        !suboption.tep().v() && suboption.data().is_empty()
    }

    fn allows_repeat(&self, _id: TepId) -> bool {
        false
    }
}

/// How one end uses the application-aware bit `a` of the global suboption
/// (RFC 8547 sections 4.2 and 8.4).
///
/// The bit means nothing to ENO or tcpcrypt themselves: it lets two
/// applications that know about ENO find each other, so they can, for
/// instance, bind their own authentication to the session ID. Only
/// [`AppAware::Mandatory`] changes the negotiation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppAware {
    /// Send `a = 0` (the RFC's default).
    #[default]
    Off,
    /// Send `a = 1`; negotiate as usual whatever the peer sends.
    On,
    /// Send `a = 1` and leave ENO off (plain TCP) unless the peer sends
    /// `a = 1` too: for an application that only wants tcpcrypt when the
    /// other end's application will make use of it.
    Mandatory,
}

impl AppAware {
    /// From the pair of switches [`EnoConfig`] and host configurations
    /// carry; mandatory mode implies sending the bit.
    pub fn from_flags(a: bool, mandatory: bool) -> AppAware {
        match (a, mandatory) {
            (_, true) => AppAware::Mandatory,
            (true, false) => AppAware::On,
            (false, false) => AppAware::Off,
        }
    }

    /// The `a` bit this mode sends.
    pub fn sends_a(self) -> bool {
        !matches!(self, AppAware::Off)
    }

    /// Whether ENO is refused to a peer that sends `a = 0`.
    pub fn is_mandatory(self) -> bool {
        matches!(self, AppAware::Mandatory)
    }
}

/// A host's ENO settings for one connection (RFC 8547 sections 4.2 and 4.5).
///
/// The TEP suboptions are listed most preferred first. They go on the wire
/// in the reverse order, so that the most preferred is last: that is the
/// order host B must use (increasing priority), it is harmless for host A,
/// and it lets a single suboption with data (a resumption offer, typically
/// the most preferred) end the option without a length byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnoConfig {
    teps: Vec<TepSuboption>,
    role_bit: bool,
    app_aware: bool,
    app_aware_mandatory: bool,
}

impl EnoConfig {
    /// Offers `teps` (most preferred first) with the defaults of RFC 8547:
    /// `b = 0` for active opens, `a = 0`, application-aware mode optional.
    pub fn new(teps: Vec<TepSuboption>) -> EnoConfig {
        EnoConfig {
            teps,
            role_bit: false,
            app_aware: false,
            app_aware_mandatory: false,
        }
    }

    /// Sets `b` for active opens; only useful for a simultaneous open where
    /// exactly one side sets it. Passive opens always send `b = 1`.
    pub fn with_passive_role_bit(mut self, b: bool) -> EnoConfig {
        self.role_bit = b;
        self
    }

    /// Sets the application-aware bit `a` we send.
    pub fn with_app_aware(mut self, a: bool) -> EnoConfig {
        self.app_aware = a;
        self
    }

    /// Mandatory application-aware mode: ENO is disabled unless the peer
    /// sends `a = 1`. In this mode we send `a = 1` ourselves.
    pub fn with_app_aware_mandatory(mut self, mandatory: bool) -> EnoConfig {
        self.app_aware_mandatory = mandatory;
        self
    }

    /// Sets both the `a` bit and mandatory mode from one [`AppAware`].
    pub fn with_app_aware_mode(self, mode: AppAware) -> EnoConfig {
        self.with_app_aware(mode.sends_a())
            .with_app_aware_mandatory(mode.is_mandatory())
    }

    /// Our TEP suboptions, most preferred first.
    pub fn teps(&self) -> &[TepSuboption] {
        &self.teps
    }

    /// Whether mandatory application-aware mode is on.
    pub fn app_aware_mandatory(&self) -> bool {
        self.app_aware_mandatory
    }

    /// The `a` bit we send.
    pub fn app_aware(&self) -> bool {
        self.app_aware || self.app_aware_mandatory
    }

    /// The global suboption of an active opener's SYN.
    pub fn active_global(&self) -> GlobalSuboption {
        GlobalSuboption {
            b: self.role_bit,
            a: self.app_aware(),
        }
    }

    /// The global suboption of a passive opener's SYN-ACK (`b = 1` always).
    pub fn passive_global(&self) -> GlobalSuboption {
        GlobalSuboption {
            b: true,
            a: self.app_aware(),
        }
    }

    /// The SYN-form option for an active open (also the SYN-ACK of a
    /// simultaneous open, which must repeat the SYN's option unchanged).
    ///
    /// The global suboption is left implicit when it would be 0x00.
    pub fn active_syn_option(&self) -> Result<Vec<u8>, EncodeError> {
        let global = self.active_global();
        let explicit = (global != GlobalSuboption::IMPLICIT).then_some(global);
        let in_wire_order: Vec<TepSuboption> = self.teps.iter().rev().cloned().collect();
        Ok(SynOption::offer(explicit, &in_wire_order)?.to_bytes())
    }

    /// A vacuous SYN-ACK option (`b = 1`, no TEP) for a passive opener that
    /// wants to say "ENO supported but off by configuration".
    ///
    /// RFC 8547 section 4.6 allows it only when the received SYN carried an
    /// ENO option, so it takes the scan of the SYN's options and returns
    /// `None` otherwise (two ENO options count as none).
    pub fn vacuous_reply(&self, syn_scan: &super::EnoScan) -> Option<Vec<u8>> {
        match syn_scan {
            super::EnoScan::One(_) => SynOption::offer(Some(self.passive_global()), &[])
                .ok()
                .map(|o| o.to_bytes()),
            super::EnoScan::None | super::EnoScan::Several => None,
        }
    }
}
