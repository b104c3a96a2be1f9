//! What a chaos run records: every client operation with when it was invoked and when its
//! answer came (microseconds since the start of the run), and every fault the nemesis applied.
//! One JSON object per line, so a history can be checked again (`chaos check FILE`).

use serde::{Deserialize, Serialize};

/// An operation on one key, as Jepsen records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (worker) that ran it; a client runs one operation at a time.
    pub process: u32,
    pub key: String,
    pub kind: Kind,
    /// Invoked (microseconds since the start of the run).
    pub call: u64,
    /// Answered, or given up on.
    pub ret: u64,
    pub result: Res,
    /// The server it was sent to.
    pub server: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A read: `consistent` is `?consistent`, otherwise Consul's default mode.
    Read { consistent: bool },
    /// `PUT key` with a value no other operation writes.
    Write { value: String },
    /// `PUT key?cas=I` where I is the ModifyIndex a read returned with `expected` (0 when the
    /// key was absent): with unique values, "the index is still I" is "the value is still
    /// `expected`", so the register is a compare-and-set register over values.
    Cas { expected: Option<String>, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Res {
    /// A read's answer: the value, or absent.
    Read(Option<String>),
    /// A write acknowledged, or a CAS that answered true.
    Ok,
    /// A CAS that answered false.
    CasFalse,
    /// Known not to have happened (refused before it was sent anywhere).
    Fail,
    /// Unknown: timed out, or failed after it may have been sent. It may take effect at any
    /// point after its call, or never.
    Info,
}

/// A fault, for the availability figures: what was done to which servers, from when to when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub servers: Vec<u32>,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// kill -9, restarted at `end`.
    Kill,
    /// SIGSTOP, SIGCONT at `end`.
    Pause,
    /// `servers` cut off from all the others, healed at `end`.
    Partition,
}

/// A session lock operation (`?acquire` / `?release`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOp {
    pub session: String,
    pub acquire: bool,
    pub call: u64,
    pub ret: u64,
    /// `Some(answer)` when the agent answered true or false; `None` when unknown.
    pub answer: Option<bool>,
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Line {
    Op(Op),
    Fault(Fault),
    Lock(LockOp),
    /// A key written with a unique name and acknowledged, for the lost-write check.
    Acked {
        key: String,
        at: u64,
    },
    /// After every server was killed and restarted: whether each acknowledged key is there.
    Final {
        present: Vec<String>,
    },
    /// The run's settings.
    Meta {
        servers: u32,
        lease_us: u64,
        nemesis: String,
        secs: u64,
    },
}
