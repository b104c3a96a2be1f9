//! The gossip keyring: memberlist's `Keyring` (the keys installed, the primary first), the
//! sealing of every datagram and frame with them, Serf's keyring file and what a member does
//! when asked to list, install, use or remove a key (Serf's internal key queries).
//!
//! Any installed key opens a packet; only the primary seals one. `encrypt_verify_incoming =
//! false` also lets plain packets in, `encrypt_verify_outgoing = false` sends plain ones, so
//! encryption can be turned on in a running cluster. Knows nothing about sockets or members.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::Engine;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// memberlist's key sizes: AES-128, AES-192 or AES-256 in GCM (`agent keygen` makes 32 bytes).
pub const KEY_LENS: [usize; 3] = [16, 24, 32];

const PLAIN: u8 = 0;
const SEALED: u8 = 1;
const NONCE_LEN: usize = 12;
/// Bytes that sealing adds to a message: version, nonce and GCM tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// Decodes Consul's `-encrypt` key: base64 of 16, 24 or 32 bytes.
pub fn decode_key(key: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|e| format!("Failed to decode encrypt key: {e}"))?;
    if !KEY_LENS.contains(&bytes.len()) {
        return Err(format!("Invalid encrypt key: key size must be 16, 24 or 32 bytes, got {} bytes", bytes.len()));
    }
    Ok(bytes)
}

pub fn encode_key(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// AES-GCM of the key's size, as memberlist picks it.
enum Cipher {
    Aes128(Aes128Gcm),
    Aes192(AesGcm<Aes192, U12>),
    Aes256(Aes256Gcm),
}

struct Key {
    raw: Vec<u8>,
    cipher: Cipher,
}

impl Key {
    /// `None` for a size memberlist does not take.
    fn new(raw: &[u8]) -> Option<Key> {
        let cipher = match raw.len() {
            16 => Cipher::Aes128(Aes128Gcm::new_from_slice(raw).ok()?),
            24 => Cipher::Aes192(AesGcm::<Aes192, U12>::new_from_slice(raw).ok()?),
            32 => Cipher::Aes256(Aes256Gcm::new_from_slice(raw).ok()?),
            _ => return None,
        };
        Some(Key { raw: raw.to_vec(), cipher })
    }

    fn encrypt(&self, nonce: &[u8], payload: &[u8]) -> Vec<u8> {
        let nonce = Nonce::from_slice(nonce);
        // Encryption into a Vec fails only for payloads beyond GCM's 64 GiB limit.
        match &self.cipher {
            Cipher::Aes128(c) => c.encrypt(nonce, payload),
            Cipher::Aes192(c) => c.encrypt(nonce, payload),
            Cipher::Aes256(c) => c.encrypt(nonce, payload),
        }
        .unwrap_or_default()
    }

    fn decrypt(&self, nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::from_slice(nonce);
        match &self.cipher {
            Cipher::Aes128(c) => c.decrypt(nonce, sealed),
            Cipher::Aes192(c) => c.decrypt(nonce, sealed),
            Cipher::Aes256(c) => c.decrypt(nonce, sealed),
        }
        .ok()
    }
}

/// The keys of one gossip pool, shared by the transport, the server port's `peer_auth` and
/// the keyring endpoint. Cloning shares it.
#[derive(Clone)]
pub struct Keyring {
    /// Primary first. Empty: encryption is off, and stays off (a keyring query cannot turn it on).
    keys: Arc<RwLock<Vec<Key>>>,
    verify_incoming: bool,
    verify_outgoing: bool,
    /// Serf's keyring file, rewritten after every change (`None` in `-dev`).
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Keyring {
    // Never the keys themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.read().len())
            .field("verify_incoming", &self.verify_incoming)
            .field("verify_outgoing", &self.verify_outgoing)
            .field("file", &self.file)
            .finish()
    }
}

/// memberlist's and Serf's texts, which Consul's keyring endpoint passes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("key size must be 16, 24 or 32 bytes")]
    KeySize,
    #[error("Requested key is not in the keyring")]
    NotInstalled,
    #[error("Removing the primary key is not allowed")]
    RemovePrimary,
    #[error("No keyring to modify (encryption not enabled)")]
    Disabled,
    #[error("Failed to write keyring file: {0}")]
    File(String),
}

impl Keyring {
    /// No keys: gossip is plain text.
    pub fn disabled() -> Keyring {
        Keyring::new(Vec::<Vec<u8>>::new(), true, true, None)
    }

    /// `keys` primary first; keys of a size memberlist does not take (16, 24 or 32 bytes) are
    /// left out (`decode_key` refuses them first).
    pub fn new<K: AsRef<[u8]>>(
        keys: impl IntoIterator<Item = K>,
        verify_incoming: bool,
        verify_outgoing: bool,
        file: Option<PathBuf>,
    ) -> Keyring {
        let mut ring: Vec<Key> = Vec::new();
        for k in keys {
            let k = k.as_ref();
            if !ring.iter().any(|r| r.raw == k) {
                ring.extend(Key::new(k));
            }
        }
        Keyring { keys: Arc::new(RwLock::new(ring)), verify_incoming, verify_outgoing, file }
    }

    /// The agent's keyring at start, as Consul sets it up: the keyring file when there is one
    /// (it wins over `encrypt`, which is then ignored with Consul's warning), else the
    /// `encrypt` key, written to a new keyring file; else none.
    pub fn load(
        encrypt: Option<&str>,
        file: Option<&Path>,
        verify_incoming: bool,
        verify_outgoing: bool,
    ) -> Result<Keyring, String> {
        let encrypt = encrypt.filter(|k| !k.trim().is_empty());
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let keys = read_file(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                    if encrypt.is_some() {
                        tracing::warn!(path = %path.display(), "WARNING: LAN keyring exists but -encrypt given, using keyring");
                    }
                    tracing::info!(path = %path.display(), keys = keys.len(), "gossip: keyring loaded");
                    return Ok(Keyring::new(keys, verify_incoming, verify_outgoing, Some(path.to_path_buf())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        let Some(key) = encrypt else { return Ok(Keyring::disabled()) };
        let ring = Keyring::new(vec![decode_key(key)?], verify_incoming, verify_outgoing, file.map(Path::to_path_buf));
        ring.write_file().map_err(|e| e.to_string())?;
        Ok(ring)
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.read().is_empty()
    }

    pub fn verify_incoming(&self) -> bool {
        self.verify_incoming
    }

    pub fn verify_outgoing(&self) -> bool {
        self.verify_outgoing
    }

    /// The keys, primary first.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.read().iter().map(|k| k.raw.clone()).collect()
    }

    pub fn primary(&self) -> Option<Vec<u8>> {
        self.keys.read().first().map(|k| k.raw.clone())
    }

    /// memberlist's `AddKey`: a new key opens packets from now on; one already there is no change.
    pub fn install(&self, key: &[u8]) -> Result<(), Error> {
        let new = self.check(key)?;
        {
            let mut keys = self.keys.write();
            if keys.iter().any(|k| k.raw == new.raw) {
                return Ok(());
            }
            keys.push(new);
        }
        self.write_file()
    }

    /// memberlist's `UseKey`: an installed key becomes the one that seals.
    pub fn use_key(&self, key: &[u8]) -> Result<(), Error> {
        let raw = self.check(key)?.raw;
        {
            let mut keys = self.keys.write();
            let Some(i) = keys.iter().position(|k| k.raw == raw) else { return Err(Error::NotInstalled) };
            let k = keys.remove(i);
            keys.insert(0, k);
        }
        self.write_file()
    }

    /// memberlist's `RemoveKey`: never the primary; a key not installed is no change.
    pub fn remove(&self, key: &[u8]) -> Result<(), Error> {
        let raw = self.check(key)?.raw;
        {
            let mut keys = self.keys.write();
            if keys.first().is_some_and(|k| k.raw == raw) {
                return Err(Error::RemovePrimary);
            }
            keys.retain(|k| k.raw != raw);
        }
        self.write_file()
    }

    fn check(&self, key: &[u8]) -> Result<Key, Error> {
        if !self.is_enabled() {
            return Err(Error::Disabled);
        }
        Key::new(key).ok_or(Error::KeySize)
    }

    /// Serf's keyring file: a JSON array of base64 keys, primary first, mode 0600.
    fn write_file(&self) -> Result<(), Error> {
        let Some(path) = &self.file else { return Ok(()) };
        let keys: Vec<String> = self.keys.read().iter().map(|k| encode_key(&k.raw)).collect();
        let text = serde_json::to_string_pretty(&keys).map_err(|e| Error::File(e.to_string()))?;
        write_private(path, &text).map_err(|e| Error::File(format!("{}: {e}", path.display())))
    }

    /// With a primary key (and `verify_outgoing`) `1 | nonce | AES-GCM(payload)`; otherwise
    /// `0 | payload`.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let keys = self.keys.read();
        let Some(primary) = keys.first().filter(|_| self.verify_outgoing) else {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(payload);
            return out;
        };
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = primary.encrypt(&nonce, payload);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The payload, or `None` when the packet is not ours to read: sealed under no key we have,
    /// plain while we verify incoming packets, garbage.
    pub fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = packet.split_first()?;
        let keys = self.keys.read();
        match version {
            PLAIN if keys.is_empty() || !self.verify_incoming => Some(rest.to_vec()),
            SEALED if rest.len() >= NONCE_LEN => {
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                keys.iter().find_map(|k| k.decrypt(nonce, sealed))
            }
            _ => None,
        }
    }

    /// What this member answers to a keyring query (Serf's `handleInstallKey`, ...).
    pub fn answer(&self, op: &Op) -> NodeResponse {
        let done = match op {
            Op::List => {
                if !self.is_enabled() {
                    return NodeResponse::failed("Keyring is empty (encryption not enabled)");
                }
                tracing::info!("serf: Received list-keys query");
                let keys: Vec<String> = self.keys().iter().map(|k| encode_key(k)).collect();
                return NodeResponse {
                    result: true,
                    message: String::new(),
                    primary_key: keys.first().cloned().unwrap_or_default(),
                    keys,
                };
            }
            Op::Install(key) => {
                tracing::info!("serf: Received install-key query");
                self.install(key)
            }
            Op::Use(key) => {
                tracing::info!("serf: Received use-key query");
                self.use_key(key)
            }
            Op::Remove(key) => {
                tracing::info!("serf: Received remove-key query");
                self.remove(key)
            }
        };
        match done {
            Ok(()) => NodeResponse { result: true, ..NodeResponse::default() },
            Err(e) => {
                tracing::error!(error = %e, "serf: keyring query failed");
                NodeResponse::failed(&e.to_string())
            }
        }
    }
}

fn read_file(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let encoded: Vec<String> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if encoded.is_empty() {
        return Err("no keys present in keyring".into());
    }
    encoded.iter().map(|k| decode_key(k)).collect()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("keyring.tmp");
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A keyring query, sent to every member alive (Serf's `_serf_list-keys`, `_serf_install-key`,
/// `_serf_use-key`, `_serf_remove-key`). Keys travel raw, inside the sealed frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    List,
    Install(Vec<u8>),
    Use(Vec<u8>),
    Remove(Vec<u8>),
}

/// One member's answer (Serf's `nodeKeyResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResponse {
    pub result: bool,
    pub message: String,
    /// Base64, primary first (list queries only).
    pub keys: Vec<String>,
    pub primary_key: String,
}

impl NodeResponse {
    fn failed(message: &str) -> NodeResponse {
        NodeResponse { result: false, message: message.to_string(), ..NodeResponse::default() }
    }
}

/// The answers of a whole pool (Serf's `KeyResponse`): how many members have each key, and as
/// primary; who failed and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Node name → its message.
    pub messages: BTreeMap<String, String>,
    /// Members alive when the query went out, this one included.
    pub num_nodes: usize,
    pub num_resp: usize,
    pub num_err: usize,
    pub keys: BTreeMap<String, usize>,
    pub primary_keys: BTreeMap<String, usize>,
}

impl Response {
    pub fn add(&mut self, from: &str, r: NodeResponse) {
        self.num_resp += 1;
        if !r.result {
            self.num_err += 1;
            self.messages.insert(from.to_string(), r.message);
        } else if !r.message.is_empty() {
            self.messages.insert(from.to_string(), r.message);
        }
        for k in r.keys {
            *self.keys.entry(k).or_default() += 1;
        }
        if !r.primary_key.is_empty() {
            *self.primary_keys.entry(r.primary_key).or_default() += 1;
        }
    }

    /// Serf's verdict on the whole: every member answered, and none failed.
    pub fn error(&self) -> Option<String> {
        if self.num_err != 0 {
            return Some(format!("{}/{} nodes reported failure", self.num_err, self.num_nodes));
        }
        if self.num_resp != self.num_nodes {
            return Some(format!("{}/{} nodes reported success", self.num_resp, self.num_nodes));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_installed_key_opens_and_the_primary_seals() {
        let a = Keyring::new(vec![[7; 32]], true, true, None);
        let b = Keyring::new(vec![[8; 32]], true, true, None);
        let plain = Keyring::disabled();
        let packet = a.seal(b"hello");
        assert_eq!(packet.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(a.open(&packet).as_deref(), Some(&b"hello"[..]));
        assert_eq!(b.open(&packet), None);
        assert_eq!(plain.open(&packet), None);
        assert_eq!(a.open(&plain.seal(b"hello")), None);
        assert_eq!(plain.open(&plain.seal(b"hello")).as_deref(), Some(&b"hello"[..]));

        // b learns a's key: it opens both, still seals with its own primary until told otherwise.
        b.install(&[7; 32]).expect("install");
        assert_eq!(b.open(&packet).as_deref(), Some(&b"hello"[..]));
        assert_eq!(a.open(&b.seal(b"x")), None);
        b.use_key(&[7; 32]).expect("use");
        assert_eq!(a.open(&b.seal(b"x")).as_deref(), Some(&b"x"[..]));
        assert_eq!(b.keys(), vec![vec![7; 32], vec![8; 32]]);
    }

    #[test]
    fn aes_128_192_and_256_keys_as_memberlist_takes_them() {
        for len in KEY_LENS {
            let ring = Keyring::new(vec![vec![3u8; len]], true, true, None);
            let other = Keyring::new(vec![vec![4u8; len]], true, true, None);
            let packet = ring.seal(b"hi");
            assert_eq!(ring.open(&packet).as_deref(), Some(&b"hi"[..]), "{len}");
            assert_eq!(other.open(&packet), None, "{len}");
            ring.install(&[5u8; 16]).expect("a 16-byte key beside it");
        }
        assert!(decode_key(&encode_key(&[1; 16])).is_ok());
        assert!(decode_key(&encode_key(&[1; 24])).is_ok());
        assert!(decode_key(&encode_key(&[1; 20])).unwrap_err().contains("key size must be 16, 24 or 32 bytes"));
        assert!(Keyring::new(vec![vec![1u8; 20]], true, true, None).keys().is_empty());
    }

    #[test]
    fn verify_flags_let_plain_text_in_and_out() {
        let lax_in = Keyring::new(vec![[7; 32]], false, true, None);
        let lax_out = Keyring::new(vec![[7; 32]], true, false, None);
        let plain = Keyring::disabled();
        assert_eq!(lax_in.open(&plain.seal(b"p")).as_deref(), Some(&b"p"[..]));
        assert_eq!(lax_in.open(&lax_in.seal(b"s")).as_deref(), Some(&b"s"[..]));
        let out = lax_out.seal(b"q");
        assert_eq!(out[0], PLAIN, "sent plain");
        assert_eq!(plain.open(&out).as_deref(), Some(&b"q"[..]));
        assert_eq!(lax_out.open(&out), None, "but plain is not let in");
    }

    #[test]
    fn memberlist_rules_and_texts() {
        let ring = Keyring::new(vec![[1; 32]], true, true, None);
        assert_eq!(ring.remove(&[1; 32]), Err(Error::RemovePrimary));
        assert_eq!(ring.use_key(&[2; 32]), Err(Error::NotInstalled));
        assert_eq!(ring.install(&[2; 20]), Err(Error::KeySize));
        ring.install(&[2; 32]).expect("install");
        ring.install(&[2; 32]).expect("again: no change");
        assert_eq!(ring.keys().len(), 2);
        ring.remove(&[3; 32]).expect("not installed: no change");
        ring.use_key(&[2; 32]).expect("use");
        ring.remove(&[1; 32]).expect("remove the old one");
        assert_eq!(ring.keys(), vec![vec![2; 32]]);
        assert_eq!(Keyring::disabled().install(&[1; 32]), Err(Error::Disabled));
        assert_eq!(Error::RemovePrimary.to_string(), "Removing the primary key is not allowed");
    }

    #[test]
    fn the_keyring_file_wins_over_encrypt_and_follows_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("serf").join("local.keyring");
        let k1 = encode_key(&[1; 32]);
        let k2 = encode_key(&[2; 32]);
        let ring = Keyring::load(Some(&k1), Some(&file), true, true).expect("load");
        assert_eq!(std::fs::read_to_string(&file).ok().map(|t| read_file(&t)), Some(Ok(vec![vec![1; 32]])));
        ring.install(&[2; 32]).expect("install");
        ring.use_key(&[2; 32]).expect("use");
        let again = Keyring::load(Some(&k1), Some(&file), true, true).expect("reload");
        assert_eq!(again.keys(), vec![vec![2; 32], vec![1; 32]], "the file wins, primary first");
        let text = std::fs::read_to_string(&file).expect("file");
        assert_eq!(serde_json::from_str::<Vec<String>>(&text).expect("json"), vec![k2, k1]);
        assert!(Keyring::load(None, None, true, true).expect("none").keys().is_empty());
        std::fs::write(&file, "[]").expect("write");
        assert!(Keyring::load(None, Some(&file), true, true).is_err());
    }

    #[test]
    fn responses_count_keys_and_failures_as_serf_does() {
        let mut r = Response { num_nodes: 3, ..Response::default() };
        let ok = |keys: &[&str]| NodeResponse {
            result: true,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            primary_key: keys[0].to_string(),
            ..NodeResponse::default()
        };
        r.add("a", ok(&["k1", "k2"]));
        r.add("b", ok(&["k2", "k1"]));
        assert_eq!(r.error().as_deref(), Some("2/3 nodes reported success"));
        r.add("c", NodeResponse::failed("Removing the primary key is not allowed"));
        assert_eq!(r.error().as_deref(), Some("1/3 nodes reported failure"));
        assert_eq!(r.keys, BTreeMap::from([("k1".into(), 2), ("k2".into(), 2)]));
        assert_eq!(r.primary_keys, BTreeMap::from([("k1".into(), 1), ("k2".into(), 1)]));
        assert_eq!(r.messages["c"], "Removing the primary key is not allowed");
    }
}
