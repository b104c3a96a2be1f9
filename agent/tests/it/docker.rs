//! The built-in registrator against a fake Docker engine: a small hyper server on a unix
//! socket that answers the list, inspect and event-stream calls, so no dockerd is needed.
//! Containers appear in the catalog when they start, leave when they die, are caught up after
//! the event stream breaks, and those that went away while the agent was down are cleaned up.

use crate::harness::{json, wait_for, TestAgent};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    /// ID → inspect JSON.
    containers: BTreeMap<String, Value>,
    /// Open event streams.
    streams: Vec<mpsc::UnboundedSender<Bytes>>,
}

/// The fake engine; dropping it leaves the socket unanswered.
struct FakeEngine {
    state: Arc<Mutex<State>>,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeEngine {
    fn start() -> FakeEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind fake docker socket");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req.uri())) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        FakeEngine { state, socket, _dir: dir }
    }

    /// A running container, as `docker run -d --name NAME -p HOST:PORT [-e ENV] IMAGE` makes it.
    fn run(&self, id: &str, name: &str, image: &str, ports: &[(u16, u16)], env: &[&str]) {
        let mut p = serde_json::Map::new();
        for (host, inside) in ports {
            p.insert(format!("{inside}/tcp"), json!([{"HostIp": "0.0.0.0", "HostPort": host.to_string()}]));
        }
        let c = json!({
            "Id": id, "Name": format!("/{name}"),
            "Config": {"Image": image, "Env": env, "Labels": {}},
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"IPAddress": "172.17.0.2", "Ports": p},
            "State": {"Running": true}
        });
        self.state.lock().expect("state").containers.insert(id.into(), c);
    }

    /// The container stopped (`docker stop`): still inspectable, not running.
    fn stop(&self, id: &str) {
        if let Some(c) = self.state.lock().expect("state").containers.get_mut(id) {
            c["State"]["Running"] = json!(false);
        }
    }

    fn event(&self, action: &str, id: &str) {
        let line = format!(
            "{}\n",
            json!({"status": action, "id": id, "Type": "container", "Action": action,
                   "Actor": {"ID": id, "Attributes": {}}, "time": 1})
        );
        let mut st = self.state.lock().expect("state");
        st.streams.retain(|tx| tx.send(Bytes::from(line.clone())).is_ok());
    }

    fn streams(&self) -> usize {
        let mut st = self.state.lock().expect("state");
        st.streams.retain(|tx| !tx.is_closed());
        st.streams.len()
    }

    /// Ends every open event stream, as a restarting engine does.
    fn drop_streams(&self) {
        self.state.lock().expect("state").streams.clear();
    }
}

fn answer(state: &Arc<Mutex<State>>, uri: &hyper::Uri) -> hyper::Response<Body> {
    let full = |status: u16, v: Value| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())).boxed())
            .expect("response")
    };
    let path = uri.path();
    let mut st = state.lock().expect("state");
    if path == "/containers/json" {
        let list: Vec<Value> = st
            .containers
            .values()
            .filter(|c| c["State"]["Running"] == json!(true))
            .map(|c| json!({"Id": c["Id"]}))
            .collect();
        return full(200, Value::Array(list));
    }
    if path == "/events" {
        assert!(uri.query().unwrap_or("").contains("filters="), "asks for container events only");
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        st.streams.push(tx);
        let frames = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        return hyper::Response::builder().status(200).body(StreamBody::new(frames).boxed()).expect("response");
    }
    if let Some(id) = path.strip_prefix("/containers/").and_then(|p| p.strip_suffix("/json")) {
        return match st.containers.get(id) {
            Some(c) => full(200, c.clone()),
            None => full(404, json!({"message": format!("No such container: {id}")})),
        };
    }
    full(404, json!({"message": "page not found"}))
}

/// The catalog's instances of `service`, as `[ID, Address, Port, Tags]`.
async fn instances(a: &TestAgent, service: &str) -> Vec<Value> {
    let v = json(&a.get(&format!("/v1/catalog/service/{service}")).await);
    v.as_array()
        .map(|list| {
            list.iter()
                .map(|s| json!([s["ServiceID"], s["ServiceAddress"], s["ServicePort"], s["ServiceTags"]]))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_instances(a: &TestAgent, service: &str, want: Vec<Value>) {
    wait_for(Duration::from_secs(20), &format!("{service} instances to be {want:?}"), || {
        let want = want.clone();
        async move { (instances(a, service).await == want).then_some(()) }
    })
    .await;
}

const IP: &str = "127.0.170.1";

#[tokio::test]
async fn containers_come_and_go_with_their_events() {
    let engine = FakeEngine::start();
    engine.run("aaa111", "web.0", "example/web:1.2", &[(18080, 80)], &["SERVICE_TAGS=v1,blue", "SERVICE_REGION=eu"]);
    engine.run("bbb222", "hidden", "example/hidden", &[(18081, 80)], &["SERVICE_IGNORE=true"]);
    let socket = format!("-docker-socket={}", engine.socket.display());
    let mut a = TestAgent::start(IP, false, &[&socket]);
    a.ready().await;
    let node = format!("node-{}", IP.replace('.', "-"));

    // Running at start: registered from the list; the ignored one is not.
    wait_instances(&a, "web", vec![json!([format!("{node}:web.0:80"), IP, 18080, ["v1", "blue"]])]).await;
    let v = json(&a.get("/v1/catalog/service/web").await);
    assert_eq!(v[0]["ServiceMeta"], json!({"region": "eu", "docker_container_id": "aaa111"}));
    let services = json(&a.get("/v1/catalog/services").await);
    assert!(services.get("hidden").is_none(), "SERVICE_IGNORE: {services}");

    // A container that starts later, with a check from its environment.
    engine.run("ccc333", "api", "example/api", &[(19090, 9090)], &["SERVICE_NAME=x", "SERVICE_CHECK_TTL=30s"]);
    engine.event("start", "ccc333");
    wait_instances(&a, "x", vec![json!([format!("{node}:api:9090"), IP, 19090, []])]).await;
    let checks = json(&a.get("/v1/health/checks/x").await);
    assert_eq!(checks[0]["CheckID"], json!(format!("service:{node}:api:9090")));
    assert_eq!(checks[0]["Type"], json!("ttl"));

    // It stops: its service leaves the catalog; the other stays.
    engine.stop("aaa111");
    engine.event("die", "aaa111");
    wait_instances(&a, "web", vec![]).await;
    assert_eq!(instances(&a, "x").await.len(), 1);

    // The event stream breaks while a container starts: the agent reconnects and catches up.
    engine.drop_streams();
    engine.run("ddd444", "late", "example/late", &[(17070, 7070)], &[]);
    wait_instances(&a, "late", vec![json!([format!("{node}:late:7070"), IP, 17070, []])]).await;
    wait_for(Duration::from_secs(10), "the agent to follow events again", || async {
        (engine.streams() == 1).then_some(())
    })
    .await;

    // The agent is down while `api` goes away: after a restart its service is cleaned up.
    a.kill9();
    engine.stop("ccc333");
    a.respawn();
    a.ready().await;
    wait_instances(&a, "x", vec![]).await;
    assert_eq!(instances(&a, "late").await.len(), 1, "running containers keep their services");
    assert!(a.log().contains("docker: syncing services with the running containers"));
}

#[tokio::test]
async fn an_engine_that_is_not_there_is_retried_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let flag = format!("-docker-socket={}", socket.display());
    let a = TestAgent::start("127.0.170.2", true, &[&flag]);
    a.ready().await;
    wait_for(Duration::from_secs(10), "a warning naming the socket", || async {
        a.log().contains("connecting to the docker socket").then_some(())
    })
    .await;
    // The engine comes up later (its socket moved to where the agent looks): the agent finds
    // it on its next try.
    let engine = FakeEngine::start();
    std::fs::rename(&engine.socket, &socket).expect("move socket");
    engine.run("eee555", "cache", "redis", &[(16379, 6379)], &[]);
    wait_for(Duration::from_secs(40), "the late engine's container in the catalog", || async {
        (instances(&a, "redis").await.len() == 1).then_some(())
    })
    .await;
}
