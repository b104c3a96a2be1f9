//! What gossip puts on the wire: foca's identity, our custom broadcasts and stream frames (postcard),
//! and the sealing of every datagram and frame (AES-256-GCM, Consul's `-encrypt` key).
//! Knows nothing about sockets or membership rules.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use super::UserEvent;

/// foca's identity of an agent. foca keys members by `addr()`, the advertised address, and lets the
/// higher `generation` win a conflict, so an agent restarted on the same address (a later
/// generation, taken from the wall clock at start) or renewed after being declared down replaces
/// its previous self instead of being refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    pub name: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl foca::Identity for Id {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Id { generation: self.generation + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Custom broadcasts, piggybacked by foca on its own messages and re-gossiped by every member
/// that finds them new.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Broadcast {
    /// A member's tags; a higher `version` replaces a lower one.
    Tags {
        name: String,
        version: u64,
        tags: BTreeMap<String, String>,
    },
    /// Serf's leave intent: the member `name` of this generation is leaving (or was forced out).
    Leave {
        name: String,
        generation: u64,
        prune: bool,
    },
    Event(UserEvent),
}

/// One TCP frame. A push-pull exchanges whole views (join, anti-entropy); events too large for a
/// datagram are sent to each member directly.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    PushPull { is_reply: bool, state: State },
    Event(UserEvent),
}

/// A member's whole view: foca's membership plus what Consul adds to it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub members: Vec<foca::Member<Id>>,
    pub records: Vec<Record>,
    /// Recently delivered user events.
    pub events: Vec<UserEvent>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub generation: u64,
    pub is_left: bool,
    pub tags_version: u64,
    pub tags: BTreeMap<String, String>,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain structs into a growable Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(data)
}

const PLAIN: u8 = 0;
const SEALED: u8 = 1;
const NONCE_LEN: usize = 12;
/// Bytes that sealing adds to a message: version, nonce and GCM tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// Seals and opens packets: with a key every packet is `1 | nonce | AES-256-GCM(payload)`, without
/// one it is `0 | payload`. A packet of the other kind never opens, so keyed and unkeyed agents (or
/// agents with different keys) cannot talk to each other.
pub struct Seal {
    cipher: Option<Aes256Gcm>,
}

impl Seal {
    pub fn new(key: Option<[u8; 32]>) -> Seal {
        Seal { cipher: key.map(|k| Aes256Gcm::new(&k.into())) }
    }

    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let Some(cipher) = &self.cipher else {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(payload);
            return out;
        };
        let nonce: [u8; NONCE_LEN] = rand::random();
        // Encryption into a Vec fails only for payloads beyond GCM's 64 GiB limit.
        let sealed = cipher.encrypt(Nonce::from_slice(&nonce), payload).unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The payload, or `None` when the packet is not ours to read (wrong key, no key, garbage).
    pub fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = packet.split_first()?;
        match (&self.cipher, version) {
            (None, PLAIN) => Some(rest.to_vec()),
            (Some(cipher), SEALED) if rest.len() >= NONCE_LEN => {
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_packets_open_only_with_the_same_key() {
        let a = Seal::new(Some([7; 32]));
        let b = Seal::new(Some([8; 32]));
        let plain = Seal::new(None);
        let packet = a.seal(b"hello");
        assert_eq!(packet.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(a.open(&packet).as_deref(), Some(&b"hello"[..]));
        assert_eq!(b.open(&packet), None);
        assert_eq!(plain.open(&packet), None);
        assert_eq!(a.open(&plain.seal(b"hello")), None);
        assert_eq!(plain.open(&plain.seal(b"hello")).as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn garbage_does_not_open_and_decodes_without_panic() {
        let a = Seal::new(Some([7; 32]));
        for junk in [&[][..], &[1], &[1; 20], &[0, 1, 2], &[9; 100], &[0, 255, 255, 255, 255, 15]] {
            assert_eq!(a.open(junk), None);
            let _ = decode::<Frame>(junk);
            let _ = decode::<Broadcast>(junk);
        }
        assert!(decode::<Frame>(&[9; 100]).is_err());
    }
}
