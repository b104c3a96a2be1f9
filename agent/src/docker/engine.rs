//! The few Docker Engine API calls the registrator needs, as plain HTTP/1.1 over the engine's
//! unix socket (hyper; no Docker SDK): the running containers, one container's inspect, and the
//! event stream. Podman's Docker-compatible socket answers the same calls.

use super::mapping::Container;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest answer read from the engine (an inspect is a few KB).
const MAX_BODY: usize = 8 << 20;
/// Largest single event.
const MAX_EVENT: usize = 1 << 20;
/// For every call but the event stream, which stays open.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the docker socket {socket}: {source}")]
    Connect { socket: String, source: std::io::Error },
    #[error("docker {path}: {source}")]
    Http { path: String, source: hyper::Error },
    #[error("docker {path}: status {status}: {body}")]
    Status { path: String, status: u16, body: String },
    #[error("docker {path}: decoding the answer: {source}")]
    Decode { path: String, source: serde_json::Error },
    #[error("docker {path}: answer larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("docker {path}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { path: String },
}

/// A container event (`docker events --filter type=container`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Event {
    /// `start`, `die`, ... (older engines send only `status`).
    #[serde(rename = "Action", default)]
    pub action: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub id: String,
    #[serde(rename = "Actor", default)]
    pub actor: Actor,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Actor {
    #[serde(rename = "ID", default)]
    pub id: String,
}

impl Event {
    pub fn action(&self) -> &str {
        if self.action.is_empty() {
            &self.status
        } else {
            &self.action
        }
    }

    pub fn container(&self) -> &str {
        if self.actor.id.is_empty() {
            &self.id
        } else {
            &self.actor.id
        }
    }
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

/// The engine at one unix socket. Each call opens its own connection.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    pub fn new(socket: &Path) -> Engine {
        Engine { socket: socket.to_path_buf() }
    }

    async fn get(&self, path: &str) -> Result<hyper::Response<Incoming>, Error> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect { socket: self.socket.display().to_string(), source })?;
        let http = |source| Error::Http { path: path.to_string(), source };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(async move {
            // Ends when the answer has been read or dropped; its errors reach the reader.
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::Status { path: path.to_string(), status: 0, body: e.to_string() })?;
        sender.send_request(req).await.map_err(http)
    }

    /// The whole answer to `GET path`, if its status is 200 (`None` for 404).
    async fn read(&self, path: &str) -> Result<Option<Bytes>, Error> {
        let call = async {
            let resp = self.get(path).await?;
            let status = resp.status().as_u16();
            let body = read_capped(resp.into_body(), path).await?;
            match status {
                200 => Ok(Some(body)),
                404 => Ok(None),
                _ => Err(Error::Status {
                    path: path.to_string(),
                    status,
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                }),
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| Error::Timeout { path: path.to_string() })?
    }

    /// The IDs of the running containers.
    pub async fn running(&self) -> Result<Vec<String>, Error> {
        let path = "/containers/json";
        let body = self.read(path).await?.unwrap_or_default();
        let list: Vec<Listed> =
            serde_json::from_slice(&body).map_err(|source| Error::Decode { path: path.into(), source })?;
        Ok(list.into_iter().map(|c| c.id).collect())
    }

    /// One container's inspect; `None` if it is gone.
    pub async fn inspect(&self, id: &str) -> Result<Option<Container>, Error> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return Ok(None);
        }
        let path = format!("/containers/{id}/json");
        match self.read(&path).await? {
            None => Ok(None),
            Some(body) => serde_json::from_slice(&body).map(Some).map_err(|source| Error::Decode { path, source }),
        }
    }

    /// The stream of container start and die events, from now on.
    pub async fn events(&self) -> Result<Events, Error> {
        // filters={"type":["container"],"event":["start","die"]}
        let path =
            "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%5D%7D";
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.get(path))
            .await
            .map_err(|_| Error::Timeout { path: path.to_string() })??;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = read_capped(resp.into_body(), path).await.unwrap_or_default();
            return Err(Error::Status {
                path: path.into(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(Events { body: resp.into_body(), buf: Vec::new(), path: path.to_string() })
    }
}

async fn read_capped(mut body: Incoming, path: &str) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| Error::Http { path: path.to_string(), source })?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > MAX_BODY {
                return Err(Error::TooLarge { path: path.to_string(), limit: MAX_BODY });
            }
        }
    }
    Ok(out.into())
}

/// The open event stream: one JSON object after another (the engine ends each with a newline,
/// but chunks need not follow objects).
pub struct Events {
    body: Incoming,
    buf: Vec<u8>,
    path: String,
}

impl Events {
    /// The next event; `None` when the engine closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(ev) = self.parse()? {
                return Ok(Some(ev));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(source)) => return Err(Error::Http { path: self.path.clone(), source }),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                    if self.buf.len() > MAX_EVENT {
                        return Err(Error::TooLarge { path: self.path.clone(), limit: MAX_EVENT });
                    }
                }
            }
        }
    }

    fn parse(&mut self) -> Result<Option<Event>, Error> {
        take_event(&mut self.buf).map_err(|source| Error::Decode { path: self.path.clone(), source })
    }
}

/// Takes one whole event off the front of `buf`, if one is there (`None`: more bytes needed).
fn take_event(buf: &mut Vec<u8>) -> Result<Option<Event>, serde_json::Error> {
    let start = buf.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(buf.len());
    buf.drain(..start);
    if buf.is_empty() {
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Event>();
    match stream.next() {
        Some(Ok(ev)) => {
            let used = stream.byte_offset();
            buf.drain(..used);
            Ok(Some(ev))
        }
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole_and_in_order() {
        let stream = concat!(
            r#"{"status":"start","id":"aaa","from":"redis","Type":"container","Action":"start","Actor":{"ID":"aaa","Attributes":{"name":"r"}},"time":1}"#,
            "\n",
            r#"{"status":"die","id":"bbb","time":2}"#,
            "\n\n",
        );
        for cut in 0..stream.len() {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for part in [&stream.as_bytes()[..cut], &stream.as_bytes()[cut..]] {
                buf.extend_from_slice(part);
                while let Some(ev) = take_event(&mut buf).expect("valid json") {
                    got.push((ev.action().to_string(), ev.container().to_string()));
                }
            }
            // Old engines send only `status` and `id`.
            assert_eq!(got, [("start".into(), "aaa".into()), ("die".into(), "bbb".into())], "cut at {cut}");
            assert!(buf.is_empty());
        }
        let mut bad = b"{\"Action\": 5}\n".to_vec();
        assert!(take_event(&mut bad).is_err(), "a malformed event is an error, not a hang");
    }
}
