//! `TCP_NODELAY` on the PostgreSQL connections.
//!
//! sqlx 0.9.0 opens its TCP sockets without `TCP_NODELAY` (a regression: launchbadge/sqlx#4335,
//! fixed upstream after 0.9.0) and offers no way to set it. Over TLS — which a PostgreSQL server
//! with `ssl = on` negotiates by default — every statement larger than one TLS record (16 KiB) is
//! several `send` calls, and Nagle's algorithm holds the last one back until the server's delayed
//! ACK: 40 ms per such statement. A group commit of a few converted messages is such a statement:
//! on loopback PostgreSQL 15 with 8 MLLP connections ingest ran at 63 msg/s with p50 120 ms.
//!
//! sqlx does not hand out its socket, and this crate forbids `unsafe`, so after each connection
//! is made we look the socket up: every socket of this process whose peer is the server's port
//! gets `TCP_NODELAY`, set on a duplicate of its descriptor obtained with `pidfd_getfd` (Linux ≥
//! 5.6; socket options belong to the socket, not the descriptor). Elsewhere, or where that call
//! is not permitted, nothing changes and the gateway works as before, only slower on PostgreSQL.

/// Set `TCP_NODELAY` on this process's TCP sockets connected to `port`; returns how many were
/// changed (sockets that already had it are left alone and not counted).
#[cfg(target_os = "linux")]
pub(crate) fn set_on_connections_to(port: u16) -> std::io::Result<usize> {
    use rustix::net::sockopt::{set_tcp_nodelay, tcp_nodelay};
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut changed = 0;
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // The descriptor may have been closed since the listing: then there is nothing to do.
        let Ok(dup) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let peer_port = rustix::net::getpeername(&dup)
            .ok()
            .flatten()
            .and_then(|a| std::net::SocketAddr::try_from(a).ok())
            .map(|a| a.port());
        if peer_port == Some(port)
            && tcp_nodelay(&dup).is_ok_and(|on| !on)
            && set_tcp_nodelay(&dup, true).is_ok()
        {
            changed += 1;
        }
    }
    Ok(changed)
}

/// Not Linux: nothing to do (see the module documentation).
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_on_connections_to(_port: u16) -> std::io::Result<usize> {
    Ok(0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn nodelay_is_set_on_sockets_to_the_port_and_only_there() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let b = std::net::TcpStream::connect(other.local_addr().expect("addr")).expect("connect");
        assert!(!a.nodelay().expect("nodelay"));
        // Only `a` has the port as its peer (the listener has not accepted it).
        assert_eq!(set_on_connections_to(port).expect("scan"), 1);
        assert!(
            a.nodelay().expect("nodelay"),
            "the socket to the port has TCP_NODELAY"
        );
        assert!(
            !b.nodelay().expect("nodelay"),
            "a socket to another port is untouched"
        );
        // A second scan finds nothing left to change.
        assert_eq!(set_on_connections_to(port).expect("scan"), 0);
    }
}
