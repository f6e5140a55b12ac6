//! The tcpcrypt key schedule (RFC 8548 sections 3.3 to 3.5): PRK = ss\[0\],
//! the ss\[i\] chain, master keys mk\[j\], traffic keys k_ab\[j\]/k_ba\[j\], the
//! session ID and the resumption identifier. Extract is HMAC-SHA256 with the
//! salt as key; the CPRF is HKDF-Expand-SHA256, both from aws-lc-rs.

use std::fmt;

use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroize;

use crate::aead::{Aead, TrafficKey};
use crate::role::Role;
use crate::session_id::SessionId;
use crate::tep::{K_LEN, Tep};

/// CONST_NEXTK (RFC 8548 table 1).
pub const CONST_NEXTK: u8 = 0x01;
/// CONST_SESSID.
pub const CONST_SESSID: u8 = 0x02;
/// CONST_REKEY.
pub const CONST_REKEY: u8 = 0x03;
/// CONST_KEY_A.
pub const CONST_KEY_A: u8 = 0x04;
/// CONST_KEY_B.
pub const CONST_KEY_B: u8 = 0x05;
/// CONST_RESUME.
pub const CONST_RESUME: u8 = 0x06;

/// Length of resume\[i\] (RFC 8548 section 3.5).
pub const RESUME_ID_LEN: usize = 18;
/// Length of each half of resume\[i\] carried in a resumption suboption.
pub const RESUME_HALF_LEN: usize = 9;

struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// CPRF(key, info, L) = HKDF-Expand-SHA256. `L` is at most 44 here, far
/// below HKDF's 255*32 limit, so aws-lc cannot refuse it.
fn cprf(key: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, key);
    let filled = prk
        .expand(info, OkmLen(out.len()))
        .and_then(|okm| okm.fill(out));
    debug_assert!(
        filled.is_ok(),
        "HKDF-Expand refused a length below its limit"
    );
    if filled.is_err() {
        // Unreachable for our lengths; never hand out a predictable key.
        out.fill(0);
    }
}

fn cprf_array<const N: usize>(key: &[u8], info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    cprf(key, info, &mut out);
    out
}

/// A session secret ss\[i\] (32 bytes). Wiped on drop; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret([u8; K_LEN]);

impl SessionSecret {
    /// PRK = ss\[0\] = Extract(N_A, eno_transcript ‖ Init1 ‖ Init2 ‖ ES), with
    /// Init1 and Init2 exactly as transmitted.
    pub fn extract(
        n_a: &[u8],
        eno_transcript: &[u8],
        init1: &[u8],
        init2: &[u8],
        es: &[u8],
    ) -> SessionSecret {
        let key = hmac::Key::new(hmac::HMAC_SHA256, n_a);
        let mut ctx = hmac::Context::with_key(&key);
        for part in [eno_transcript, init1, init2, es] {
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; K_LEN];
        out.copy_from_slice(tag.as_ref());
        SessionSecret(out)
    }

    /// Wraps a secret from elsewhere (a test vector, a peer's key log).
    pub fn from_bytes(bytes: [u8; K_LEN]) -> SessionSecret {
        SessionSecret(bytes)
    }

    /// ss\[i+1\] = CPRF(ss\[i\], CONST_NEXTK, K_LEN).
    pub fn next(&self) -> SessionSecret {
        SessionSecret(cprf_array(&self.0, &[&[CONST_NEXTK]]))
    }

    /// mk\[0\] = CPRF(ss\[i\], CONST_REKEY ‖ sn\[i\], K_LEN); `sn` is empty for a
    /// fresh session.
    pub fn master_key(&self, sn: &[u8]) -> MasterKey {
        MasterKey {
            generation: 0,
            key: cprf_array(&self.0, &[&[CONST_REKEY], sn]),
        }
    }

    /// session_id\[i\] = TEP-byte ‖ CPRF(ss\[i\], CONST_SESSID ‖ sn\[i\], K_LEN),
    /// with the TEP byte as B sent it (`v` set when resumed).
    pub fn session_id(&self, tep: Tep, resumed: bool, sn: &[u8]) -> SessionId {
        SessionId::new(tep, resumed, cprf_array(&self.0, &[&[CONST_SESSID], sn]))
    }

    /// resume\[i\] = CPRF(ss\[i\], CONST_RESUME, 18).
    pub fn resume_id(&self) -> [u8; RESUME_ID_LEN] {
        cprf_array(&self.0, &[&[CONST_RESUME]])
    }

    /// The half of resume\[i\] a host sends, by its role in the original
    /// session: bytes 0..9 for A, 9..18 for B.
    pub fn resume_half(&self, original_role: Role) -> [u8; RESUME_HALF_LEN] {
        let id = self.resume_id();
        let mut half = [0u8; RESUME_HALF_LEN];
        let start = match original_role {
            Role::A => 0,
            Role::B => RESUME_HALF_LEN,
        };
        half.copy_from_slice(&id[start..start + RESUME_HALF_LEN]);
        half
    }

    /// The raw secret, for a key log (`TCPCRYPT_SS`).
    pub fn as_bytes(&self) -> &[u8; K_LEN] {
        &self.0
    }
}

impl Drop for SessionSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// A master key mk\[j\] with its generation number j.
#[derive(Clone)]
pub struct MasterKey {
    generation: u64,
    key: [u8; K_LEN],
}

impl MasterKey {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// mk\[j+1\] = CPRF(mk\[j\], CONST_REKEY, K_LEN).
    pub fn next(&self) -> MasterKey {
        MasterKey {
            generation: self.generation.saturating_add(1),
            key: cprf_array(&self.key, &[&[CONST_REKEY]]),
        }
    }

    /// k_ab\[j\] = CPRF(mk\[j\], CONST_KEY_A, ae_key_len + ae_nonce_len).
    pub fn k_ab(&self, aead: Aead) -> TrafficKey {
        self.traffic_key(aead, CONST_KEY_A)
    }

    /// k_ba\[j\] = CPRF(mk\[j\], CONST_KEY_B, ae_key_len + ae_nonce_len).
    pub fn k_ba(&self, aead: Aead) -> TrafficKey {
        self.traffic_key(aead, CONST_KEY_B)
    }

    /// The key a host that played `original_role` in the ss\[0\] session sends
    /// with: k_ab for A, k_ba for B (RFC 8548 section 3.3).
    pub fn sending_key(&self, aead: Aead, original_role: Role) -> TrafficKey {
        match original_role {
            Role::A => self.k_ab(aead),
            Role::B => self.k_ba(aead),
        }
    }

    fn traffic_key(&self, aead: Aead, constant: u8) -> TrafficKey {
        let mut raw = vec![0u8; aead.traffic_key_len()];
        cprf(&self.key, &[&[constant]], &mut raw);
        TrafficKey::new(aead, raw)
    }

    pub fn as_bytes(&self) -> &[u8; K_LEN] {
        &self.key
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(gen {}, ..)", self.generation)
    }
}
