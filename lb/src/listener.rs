//! The listening sockets of the proxy workers: one per worker on the same address
//! (`SO_REUSEPORT`), each handed to its worker as a file descriptor of its own.
//!
//! One socket shared by all workers left the kernel to wake every worker for each new
//! connection, and the first one awake accepted the whole burst: under wrk's 64 connections one
//! worker often served all of them while the other idled (per-thread CPU showed 0 against 266
//! ticks), halving throughput and doubling p99. With a socket per worker the kernel spreads
//! connections over the workers by their addresses, as nginx's `reuseport` does.
//!
//! pingora keeps the listening fds it hands over in a graceful upgrade in one table, keyed by
//! address. A listening service that finds its address there wraps that raw fd in a listener it
//! owns, and closes it when the service stops; lb runs one service per worker on one address.
//! So the sockets are bound (or taken over from the old process) here: worker `i`'s socket sits in
//! pingora's table under its own key (`worker_key`), owned by [`SharedListener`] for the next
//! upgrade, and each worker's service is given a private table holding its own `dup` of it
//! under the listening address, which it owns and closes alone. A socket inherited from an lb
//! that shared one socket (no `SO_REUSEPORT`) cannot be joined by new ones; the workers then
//! share it, as before.
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

/// The key of worker `i`'s socket in pingora's fd table. Worker 0's is the address itself, so an
/// lb that shared one socket hands it over to worker 0.
pub fn worker_key(addr: &str, i: usize) -> String {
    if i == 0 {
        addr.to_string()
    } else {
        format!("{addr}#worker{i}")
    }
}

/// The listening sockets of one address, one per worker.
pub struct SharedListener {
    addr: String,
    /// Set when worker `i` starts. `main` keeps a reference until the process exits, so the raw
    /// fds in pingora's table stay open for an upgrade even after the workers stop.
    fds: Vec<tokio::sync::OnceCell<OwnedFd>>,
}

impl SharedListener {
    /// `addr` is the `-listen` value exactly as given to `add_tcp`: pingora's table key.
    pub fn new(addr: &str, workers: usize) -> Arc<SharedListener> {
        let fds = (0..workers.max(1)).map(|_| tokio::sync::OnceCell::new()).collect();
        Arc::new(SharedListener { addr: addr.to_string(), fds })
    }

    /// A private fd table for worker `i`: its socket under the listening address, as a new fd
    /// that the worker's listener owns. The socket is taken from pingora's `table` when an
    /// upgrade handed it over, or bound and put there for the next upgrade.
    pub async fn table_for_worker(&self, table: &ListenFds, i: usize) -> Result<ListenFds, Error> {
        let socket = self.socket(table, i).await?;
        let dup = socket.try_clone().map_err(|source| Error::Bind { addr: self.addr.clone(), source })?;
        let mut private = Fds::new();
        // pingora's listener takes this fd over (`from_raw_fd`) and closes it when it stops.
        private.add(self.addr.clone(), dup.into_raw_fd());
        Ok(Arc::new(parking_lot::Mutex::new(private)))
    }

    async fn socket(&self, table: &ListenFds, i: usize) -> Result<&OwnedFd, Error> {
        let i = i.min(self.fds.len() - 1);
        if i == 0 {
            return self.fds[0].get_or_try_init(|| self.take_or_bind(table, 0)).await;
        }
        let own = self.fds[i].get_or_try_init(|| self.take_or_bind(table, i)).await;
        match own {
            Ok(fd) => Ok(fd),
            // Worker 0's socket came from an lb without SO_REUSEPORT: share it.
            Err(Error::Bind { source, .. }) if source.kind() == io::ErrorKind::AddrInUse => {
                tracing::warn!(addr = %self.addr, worker = i, "cannot add a socket beside the inherited one; sharing it");
                self.fds[0].get_or_try_init(|| self.take_or_bind(table, 0)).await
            }
            Err(e) => Err(e),
        }
    }

    async fn take_or_bind(&self, table: &ListenFds, i: usize) -> Result<OwnedFd, Error> {
        let key = worker_key(&self.addr, i);
        let inherited = table.lock().get(&key).copied();
        if let Some(raw) = inherited {
            // SAFETY: pingora put this fd, received from the old process, in its table without
            // owning it. Only a service listening on this key takes it, and lb's workers get
            // dups instead, so this is its one owner.
            return Ok(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        // Worker 0 waits for an address still held by a process going away; the others only
        // join worker 0's socket, so a refusal there is final.
        let owned = self.bind(if i == 0 { BIND_TRIES } else { 1 }).await?;
        table.lock().add(key, owned.as_raw_fd());
        Ok(owned)
    }

    /// Binds as pingora does (the first resolved address, `SO_REUSEADDR`, non-blocking, which the
    /// workers' tokio listeners require), plus `SO_REUSEPORT`, retrying while the address is in
    /// use.
    async fn bind(&self, tries: usize) -> Result<OwnedFd, Error> {
        let err = |source| Error::Bind { addr: self.addr.clone(), source };
        let sa: SocketAddr = self
            .addr
            .to_socket_addrs()
            .map_err(err)?
            .next()
            .ok_or_else(|| Error::NoAddress { addr: self.addr.clone() })?;
        let mut tried = 1;
        loop {
            let socket = match sa {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(err)?;
            socket.set_reuseaddr(true).map_err(err)?;
            socket.set_reuseport(true).map_err(err)?;
            match socket.bind(sa) {
                Ok(()) => {
                    let listener = socket.listen(BACKLOG).map_err(err)?;
                    return Ok(listener.into_std().map_err(err)?.into());
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tried < tries => {
                    tried += 1;
                    tracing::warn!(addr = %self.addr, "listen address in use, trying again");
                    tokio::time::sleep(BIND_RETRY).await;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
}

/// Worker `index`'s proxy service, given its own fd of its listening socket.
pub struct Worker<S> {
    inner: S,
    listener: Arc<SharedListener>,
    index: usize,
}

impl<S> Worker<S> {
    pub fn new(inner: S, listener: Arc<SharedListener>, index: usize) -> Worker<S> {
        Worker { inner, listener, index }
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
            Some(table) => match self.listener.table_for_worker(&table, self.index).await {
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
        let mut addrs = self.inner.listen_addresses()?;
        addrs.push(worker_key(&self.listener.addr, self.index));
        Some(addrs)
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

    /// Which socket an fd refers to (dups share it).
    fn inode(fd: RawFd) -> u64 {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: the test keeps `fd` open while it looks at it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let file = std::fs::File::from(borrowed.try_clone_to_owned().expect("dup"));
        file.metadata().expect("fstat").ino()
    }

    fn free_addr() -> String {
        let probe = std::net::TcpListener::bind("127.0.161.2:0").expect("probe");
        probe.local_addr().expect("addr").to_string()
    }

    #[tokio::test]
    async fn each_worker_gets_a_socket_of_its_own_on_one_address() {
        let addr = free_addr();
        let table = empty_table();
        let shared = SharedListener::new(&addr, 2);
        let a = shared.table_for_worker(&table, 0).await.expect("worker 0");
        let b = shared.table_for_worker(&table, 1).await.expect("worker 1");
        let (fa, fb) = (table_fd(&a, &addr), table_fd(&b, &addr));
        let (ka, kb) = (table_fd(&table, &worker_key(&addr, 0)), table_fd(&table, &worker_key(&addr, 1)));
        // Each worker owns a dup of its socket; the table keeps the originals for an upgrade.
        assert_eq!((inode(fa), inode(fb)), (inode(ka), inode(kb)));
        assert_ne!(inode(fa), inode(fb), "two sockets, not one shared");
        assert!(fa != ka && fb != kb);
        let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).expect("port");
        assert_eq!([local_port(fa), local_port(fb)], [port; 2]);
        // Workers stopping leave the sockets open for the next upgrade.
        close(fa);
        close(fb);
        assert_eq!([local_port(ka), local_port(kb)], [port; 2]);

        // The next process takes both sockets over from the table.
        let next = SharedListener::new(&addr, 2);
        let a2 = next.table_for_worker(&table, 0).await.expect("worker 0 again");
        let b2 = next.table_for_worker(&table, 1).await.expect("worker 1 again");
        assert_eq!((inode(table_fd(&a2, &addr)), inode(table_fd(&b2, &addr))), (inode(ka), inode(kb)));
        std::mem::forget(shared); // `next` owns the table's fds now
    }

    #[tokio::test]
    async fn a_socket_inherited_without_reuseport_is_shared_by_the_workers() {
        let inherited = std::net::TcpListener::bind("127.0.161.2:0").expect("bind");
        inherited.set_nonblocking(true).expect("nonblocking");
        let addr = inherited.local_addr().expect("addr").to_string();
        let port = inherited.local_addr().expect("addr").port();
        let raw = inherited.into_raw_fd();
        let table = empty_table();
        table.lock().add(addr.clone(), raw);
        let shared = SharedListener::new(&addr, 2);
        let a = shared.table_for_worker(&table, 0).await.expect("worker 0");
        let b = shared.table_for_worker(&table, 1).await.expect("worker 1");
        let (fa, fb) = (table_fd(&a, &addr), table_fd(&b, &addr));
        assert!(fa != raw && fb != raw && fa != fb, "fds {fa} {fb} {raw}");
        assert_eq!((inode(fa), inode(fb)), (inode(raw), inode(raw)));
        assert_eq!(table_fd(&table, &addr), raw, "the inherited fd stays in the table");
        close(fa);
        close(fb);
        assert_eq!(local_port(raw), port);
    }
}
