use super::*;

fn req(now_ms: u64, command: Command) -> Request {
    Request { now_ms, command }
}

fn node(name: &str) -> Node {
    Node { node: name.into(), address: "10.0.0.1".into(), datacenter: "dc1".into(), ..Default::default() }
}

fn kv(op: KvOp, key: &str, value: &str) -> Command {
    Command::Kv(KvRequest { op, key: key.into(), value: value.into(), flags: 0, session: None, modify_index: 0 })
}

fn register_web(store: &Store, index: u64, status: Status) {
    let r = RegisterRequest {
        node: node("n1"),
        service: Some(Service { id: "web1".into(), service: "web".into(), port: 80, ..Default::default() }),
        checks: vec![Check {
            check_id: "web-check".into(),
            service_id: "web1".into(),
            status: Some(status),
            ..Default::default()
        }],
        skip_node_update: false,
    };
    assert_eq!(store.apply(index, &req(0, Command::Register(r))), Response::Ok);
}

#[test]
fn kv_set_get_cas_and_indexes() {
    let s = Store::new();
    assert_eq!(s.apply(5, &req(0, kv(KvOp::Set, "a/b", "1"))), Response::Bool(true));
    assert_eq!(s.read().kv["a/b"].create_index, 5);
    // CAS with a stale index fails and writes nothing.
    let stale = Command::Kv(KvRequest {
        op: KvOp::Cas,
        key: "a/b".into(),
        value: b"2".to_vec(),
        flags: 0,
        session: None,
        modify_index: 4,
    });
    assert_eq!(s.apply(6, &req(0, stale)), Response::Bool(false));
    assert_eq!(s.read().kv["a/b"].value, b"1");
    let good = Command::Kv(KvRequest {
        op: KvOp::Cas,
        key: "a/b".into(),
        value: b"2".to_vec(),
        flags: 0,
        session: None,
        modify_index: 5,
    });
    assert_eq!(s.apply(7, &req(0, good)), Response::Bool(true));
    assert_eq!(s.read().kv["a/b"].modify_index, 7);
    assert_eq!(s.read().kv["a/b"].create_index, 5);
    // cas=0 creates only when absent.
    let create = Command::Kv(KvRequest {
        op: KvOp::Cas,
        key: "a/b".into(),
        value: vec![],
        flags: 0,
        session: None,
        modify_index: 0,
    });
    assert_eq!(s.apply(8, &req(0, create)), Response::Bool(false));
    // A delete moves the prefix index forward through its tombstone.
    s.apply(9, &req(0, kv(KvOp::Delete, "a/b", "")));
    assert_eq!(s.read().kv_prefix_index("a/"), 9);
    assert_eq!(s.read().kv_key_index("a/b"), 9);
}

#[test]
fn locks_follow_sessions_and_lock_delay() {
    let s = Store::new();
    register_web(&s, 1, Status::Passing);
    let session = Session { id: "s1".into(), node: "n1".into(), lock_delay_ns: 15_000_000_000, ..Default::default() };
    assert_eq!(s.apply(2, &req(0, Command::SessionCreate(session))), Response::Ok);
    let lock = |sess: &str| {
        Command::Kv(KvRequest {
            op: KvOp::Lock,
            key: "l".into(),
            value: b"v".to_vec(),
            flags: 0,
            session: Some(sess.into()),
            modify_index: 0,
        })
    };
    assert_eq!(s.apply(3, &req(1_000, lock("s1"))), Response::Bool(true));
    assert_eq!(s.read().kv["l"].lock_index, 1);
    // Re-acquiring by the holder does not bump LockIndex.
    assert_eq!(s.apply(4, &req(1_000, lock("s1"))), Response::Bool(true));
    assert_eq!(s.read().kv["l"].lock_index, 1);
    // An unknown session is an error, not a silent false.
    assert!(matches!(s.apply(5, &req(1_000, lock("nope"))), Response::Error(_)));
    // Destroying the session releases the lock and starts the lock-delay.
    s.apply(6, &req(2_000, Command::SessionDestroy { id: "s1".into() }));
    assert_eq!(s.read().kv["l"].session, None);
    let session2 = Session { id: "s2".into(), node: "n1".into(), ..Default::default() };
    s.apply(7, &req(2_000, Command::SessionCreate(session2)));
    assert_eq!(s.apply(8, &req(10_000, lock("s2"))), Response::Bool(false), "inside lock-delay");
    assert_eq!(s.apply(9, &req(17_001, lock("s2"))), Response::Bool(true), "after lock-delay");
}

#[test]
fn critical_check_invalidates_sessions_with_delete_behavior() {
    let s = Store::new();
    register_web(&s, 1, Status::Passing);
    let session = Session {
        id: "s1".into(),
        node: "n1".into(),
        behavior: SessionBehavior::Delete,
        service_checks: vec!["web-check".into()],
        ..Default::default()
    };
    s.apply(2, &req(0, Command::SessionCreate(session)));
    let lock = Command::Kv(KvRequest {
        op: KvOp::Lock,
        key: "eph".into(),
        value: vec![],
        flags: 0,
        session: Some("s1".into()),
        modify_index: 0,
    });
    assert_eq!(s.apply(3, &req(0, lock)), Response::Bool(true));
    register_web(&s, 4, Status::Critical);
    assert!(s.read().sessions.is_empty());
    assert!(!s.read().kv.contains_key("eph"));
}

#[test]
fn service_index_moves_only_for_its_service() {
    let s = Store::new();
    register_web(&s, 1, Status::Passing);
    let db = RegisterRequest {
        node: node("n2"),
        service: Some(Service { id: "db".into(), service: "db".into(), ..Default::default() }),
        ..Default::default()
    };
    s.apply(2, &req(0, Command::Register(db)));
    assert_eq!(s.read().service_index("web"), 1);
    assert_eq!(s.read().service_index("db"), 2);
    // Re-registering identical data changes nothing, so blocking queries stay asleep.
    register_web(&s, 3, Status::Passing);
    assert_eq!(s.read().service_index("web"), 1);
    register_web(&s, 4, Status::Warning);
    assert_eq!(s.read().service_index("web"), 4);
    assert_eq!(s.read().service_index("db"), 2);
}

#[test]
fn check_for_unknown_service_is_refused_without_partial_write() {
    let s = Store::new();
    let r = RegisterRequest {
        node: node("n1"),
        checks: vec![Check { check_id: "c".into(), service_id: "ghost".into(), ..Default::default() }],
        ..Default::default()
    };
    assert!(matches!(s.apply(1, &req(0, Command::Register(r))), Response::Error(e) if e.contains("ghost")));
    assert!(s.read().nodes.is_empty());
}

#[test]
fn txn_is_all_or_nothing() {
    let s = Store::new();
    s.apply(1, &req(0, kv(KvOp::Set, "k", "v")));
    let ops = vec![
        TxnOp::Kv { verb: "set".into(), key: "new".into(), value: b"x".to_vec(), flags: 0, index: 0, session: None },
        TxnOp::Kv { verb: "check-index".into(), key: "k".into(), value: vec![], flags: 0, index: 99, session: None },
    ];
    match s.apply(2, &req(0, Command::Txn(ops))) {
        Response::Txn(r) => assert_eq!(r.errors.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(!s.read().kv.contains_key("new"));
}

#[tokio::test]
async fn a_write_wakes_a_watcher_of_its_key_but_not_of_others() {
    let s = std::sync::Arc::new(Store::new());
    let mut ws_a = WatchSet::new(s.watches());
    ws_a.kv_key("a");
    let mut ws_b = WatchSet::new(s.watches());
    ws_b.kv_key("b");
    let mut ws_prefix = WatchSet::new(s.watches());
    ws_prefix.kv_prefix("a");
    s.apply(1, &req(0, kv(KvOp::Set, "a", "1")));
    tokio::time::timeout(std::time::Duration::from_secs(5), ws_a.changed()).await.expect("a woke");
    tokio::time::timeout(std::time::Duration::from_secs(5), ws_prefix.changed()).await.expect("prefix woke");
    let b = tokio::time::timeout(std::time::Duration::from_millis(50), ws_b.changed()).await;
    assert!(b.is_err(), "b must stay asleep");
}

#[test]
fn a_batch_applies_each_write_in_order_at_one_index_with_its_own_answer() {
    let s = Store::new();
    let cas_create = |key: &str| {
        Command::Kv(KvRequest {
            op: KvOp::Cas,
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
            session: None,
            modify_index: 0,
        })
    };
    let batch = Command::Batch(vec![req(0, cas_create("a")), req(0, cas_create("a")), req(0, kv(KvOp::Set, "b", "2"))]);
    match s.apply(9, &req(0, batch)) {
        Response::Batch(answers) => {
            assert_eq!(answers, vec![Response::Bool(true), Response::Bool(false), Response::Bool(true)])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.read().kv["a"].modify_index, 9);
    assert_eq!(s.read().kv["b"].modify_index, 9);
}
