//! One listening socket for all proxy workers, with a file descriptor of its own for each.
//!
//! pingora keeps the listening fds it hands over in a graceful upgrade in one table, keyed by
//! address. A listening service that finds its address there wraps that raw fd in a listener it
//! owns, and closes it when the service stops. lb runs one service per worker on one address, so
//! every worker would own, and close, the same fd: the second close fails with EBADF (a debug
//! build aborts with "IO Safety violation: owned file descriptor already closed"), and in a
//! release build it closes whatever the process opened under that number in between.
//!
//! So the socket is bound (or taken over from the old process) here, once, and its fd stays in
//! pingora's table for the next upgrade, owned by [`SharedListener`]. Each worker's service is
//! given a private table holding its own `dup` of that fd, which it owns and closes alone.
//! This module knows pingora's service and fd-table types, nothing of routing or proxying.

use async_trait::async_trait;
use pingora::server::{Fds, ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// pingora's listen backlog; it sets the same on a socket it inherits.
const BACKLOG: u32 = 65535;
/// Like pingora: wait up to 30 s for an address still held by a process that is going away.
const BIND_TRIES: usize = 30;
const BIND_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen address {addr:?}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("listen address {addr:?} resolves to nothing")]
    NoAddress { addr: String },
}

/// The listening socket of one address, shared by the workers.
pub struct SharedListener {
    addr: String,
    /// Set by the first worker to start. `main` keeps a reference until the process exits, so
    /// the raw fd in pingora's table stays open for an upgrade even after the workers stop.
    fd: tokio::sync::OnceCell<OwnedFd>,
}

impl SharedListener {
    /// `addr` is the `-listen` value exactly as given to `add_tcp`: pingora's table key.
    pub fn new(addr: &str) -> Arc<SharedListener> {
        Arc::new(SharedListener { addr: addr.to_string(), fd: tokio::sync::OnceCell::new() })
    }

    /// A private fd table for one worker: the shared socket under its address, as a new fd that
    /// the worker's listener owns. The first call takes the socket inherited in an upgrade from
    /// pingora's `table`, or binds it and puts it there for the next upgrade.
    pub async fn table_for_worker(&self, table: &ListenFds) -> Result<ListenFds, Error> {
        let shared = self.fd.get_or_try_init(|| self.take_or_bind(table)).await?;
        let dup = shared.try_clone().map_err(|source| Error::Bind { addr: self.addr.clone(), source })?;
        let mut private = Fds::new();
        // pingora's listener takes this fd over (`from_raw_fd`) and closes it when it stops.
        private.add(self.addr.clone(), dup.into_raw_fd());
        Ok(Arc::new(parking_lot::Mutex::new(private)))
    }

    async fn take_or_bind(&self, table: &ListenFds) -> Result<OwnedFd, Error> {
        let inherited = table.lock().get(&self.addr).copied();
        if let Some(raw) = inherited {
            // SAFETY: pingora put this fd, received from the old process, in its table without
            // owning it. Only a service listening on this address takes it, and lb's workers get
            // dups instead, so this is its one owner.
            return Ok(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        let owned = self.bind().await?;
        table.lock().add(self.addr.clone(), owned.as_raw_fd());
        Ok(owned)
    }

    /// Binds as pingora does: the first resolved address, `SO_REUSEADDR`, non-blocking (the
    /// workers' tokio listeners require it), retrying while the address is in use.
    async fn bind(&self) -> Result<OwnedFd, Error> {
        let err = |source| Error::Bind { addr: self.addr.clone(), source };
        let sa: SocketAddr = self
            .addr
            .to_socket_addrs()
            .map_err(err)?
            .next()
            .ok_or_else(|| Error::NoAddress { addr: self.addr.clone() })?;
        let mut tries = 1;
        loop {
            let socket = match sa {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(err)?;
            socket.set_reuseaddr(true).map_err(err)?;
            match socket.bind(sa) {
                Ok(()) => {
                    let listener = socket.listen(BACKLOG).map_err(err)?;
                    return Ok(listener.into_std().map_err(err)?.into());
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < BIND_TRIES => {
                    tries += 1;
                    tracing::warn!(addr = %self.addr, "listen address in use, trying again");
                    tokio::time::sleep(BIND_RETRY).await;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
}

/// One worker's proxy service, given its own fd of the shared listening socket.
pub struct Worker<S> {
    inner: S,
    listener: Arc<SharedListener>,
}

impl<S> Worker<S> {
    pub fn new(inner: S, listener: Arc<SharedListener>) -> Worker<S> {
        Worker { inner, listener }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Worker<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let fds = match fds {
            Some(table) => match self.listener.table_for_worker(&table).await {
                Ok(private) => Some(private),
                // pingora's own listening service panics when it cannot bind; do the same, with
                // the address in the message.
                Err(e) => panic!("worker {}: {e}", self.inner.name()),
            },
            None => None,
        };
        self.inner.start_service(fds, shutdown, listeners_per_fd, ready_notifier).await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &pingora::server::RuntimeOpts) -> Option<pingora::server::RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    // The new process of an upgrade closes inherited sockets no service claims; this keeps ours.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{BorrowedFd, RawFd};

    fn table_fd(table: &ListenFds, addr: &str) -> RawFd {
        table.lock().get(addr).copied().unwrap_or_else(|| panic!("no fd for {addr}"))
    }

    fn local_port(fd: RawFd) -> u16 {
        // SAFETY: the test keeps `fd` open while it looks at it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = std::net::TcpListener::from(borrowed.try_clone_to_owned().expect("dup"));
        sock.local_addr().expect("local addr").port()
    }

    /// Closes a worker's fd, as its listener does when the worker stops.
    fn close(fd: RawFd) {
        // SAFETY: the test owns the fds the worker tables were given.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }

    fn empty_table() -> ListenFds {
        Arc::new(parking_lot::Mutex::new(Fds::new()))
    }

    #[tokio::test]
    async fn each_worker_gets_its_own_fd_of_one_bound_socket() {
        let probe = std::net::TcpListener::bind("127.0.161.2:0").expect("probe");
        let addr = probe.local_addr().expect("addr").to_string();
        drop(probe);
        let table = empty_table();
        let shared = SharedListener::new(&addr);
        let a = shared.table_for_worker(&table).await.expect("worker a");
        let b = shared.table_for_worker(&table).await.expect("worker b");
        let (fa, fb, kept) = (table_fd(&a, &addr), table_fd(&b, &addr), table_fd(&table, &addr));
        assert!(fa != fb && fa != kept && fb != kept, "fds {fa} {fb} {kept}");
        let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).expect("port");
        assert_eq!([local_port(fa), local_port(fb), local_port(kept)], [port; 3]);
        // Both workers stopping leaves the socket open for the next upgrade.
        close(fa);
        close(fb);
        assert_eq!(local_port(kept), port);
    }

    #[tokio::test]
    async fn an_inherited_socket_is_taken_over_and_each_worker_gets_a_dup() {
        let inherited = std::net::TcpListener::bind("127.0.161.2:0").expect("bind");
        inherited.set_nonblocking(true).expect("nonblocking");
        let addr = inherited.local_addr().expect("addr").to_string();
        let port = inherited.local_addr().expect("addr").port();
        let raw = inherited.into_raw_fd();
        let table = empty_table();
        table.lock().add(addr.clone(), raw);
        let shared = SharedListener::new(&addr);
        let a = shared.table_for_worker(&table).await.expect("worker a");
        let b = shared.table_for_worker(&table).await.expect("worker b");
        let (fa, fb) = (table_fd(&a, &addr), table_fd(&b, &addr));
        assert!(fa != raw && fb != raw && fa != fb, "fds {fa} {fb} {raw}");
        assert_eq!(table_fd(&table, &addr), raw, "the inherited fd stays in the table");
        close(fa);
        close(fb);
        assert_eq!(local_port(raw), port);
    }
}
