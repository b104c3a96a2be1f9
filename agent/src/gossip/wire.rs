//! What gossip puts on the wire: foca's identity, our custom broadcasts and stream frames (postcard),
//! (sealing them is the keyring's job). Knows nothing about sockets or membership rules.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::keyring;
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
    PushPull {
        is_reply: bool,
        state: State,
    },
    Event(UserEvent),
    /// A keyring query (Serf's internal key queries), answered by `KeyringAnswer`. Keep it
    /// third: `is_keyring_query` tells it by its position.
    KeyringQuery(keyring::Op),
    KeyringAnswer(keyring::NodeResponse),
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

/// Bytes that sealing adds to a message (see `keyring`).
pub use super::keyring::SEAL_OVERHEAD;

/// Keyring frames are answered by the transport, not the core: it tells them by postcard's
/// variant tag (a varint, the frame's first byte) without decoding the rest of a push-pull.
pub fn is_keyring_query(data: &[u8]) -> bool {
    postcard::take_from_bytes::<u32>(data).is_ok_and(|(tag, _)| tag == KEYRING_QUERY_TAG)
}

/// `Frame::KeyringQuery`'s position in `Frame`.
const KEYRING_QUERY_TAG: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_decodes_without_panic() {
        for junk in [&[][..], &[1], &[1; 20], &[0, 1, 2], &[9; 100], &[0, 255, 255, 255, 255, 15]] {
            let _ = decode::<Frame>(junk);
            let _ = decode::<Broadcast>(junk);
            let _ = is_keyring_query(junk);
        }
        assert!(decode::<Frame>(&[9; 100]).is_err());
    }

    #[test]
    fn keyring_queries_are_told_by_their_first_byte() {
        assert!(is_keyring_query(&encode(&Frame::KeyringQuery(keyring::Op::Use(vec![1; 32])))));
        assert!(is_keyring_query(&encode(&Frame::KeyringQuery(keyring::Op::List))));
        assert!(!is_keyring_query(&encode(&Frame::PushPull { is_reply: false, state: State::default() })));
        assert!(!is_keyring_query(&encode(&Frame::KeyringAnswer(keyring::NodeResponse::default()))));
        assert!(!is_keyring_query(&encode(&Frame::Event(UserEvent::default()))));
    }
}
