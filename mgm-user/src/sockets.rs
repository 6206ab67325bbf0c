//! The daemon's own packets on the wire: IGMP queries downstream, sent with IP TTL 1 and the
//! Router Alert option (RFC 3376 §4, RFC 2236 §2), and the proxy's host memberships upstream.

use std::{
    collections::{BTreeSet, HashMap},
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{core::SourceGroupEntry, dataplane::netdev::NetDev};

/// IPv4 Router Alert (RFC 2113): type 148, length 4, value 0.
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// A raw IGMP socket bound to one interface, for sending queries.
pub struct QuerySocket {
    sock: Socket,
}

impl QuerySocket {
    /// Opens the socket on `dev`, sending from `source`.
    ///
    /// # Errors
    /// The socket or one of its options cannot be set up (needs CAP_NET_RAW).
    pub fn new(dev: &NetDev, source: Ipv4Addr) -> io::Result<QuerySocket> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IGMP)),
        )?;
        sock.bind_device(Some(dev.name.as_bytes()))?;
        sock.bind(&SocketAddrV4::new(source, 0).into())?;
        sock.set_multicast_if_v4(&source)?;
        sock.set_multicast_ttl_v4(1)?;
        sock.set_multicast_loop_v4(false)?;
        // SAFETY: the option buffer outlives the call and its length is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_OPTIONS,
                ROUTER_ALERT.as_ptr().cast(),
                ROUTER_ALERT.len() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Only sends: every IGMP message this socket would also receive is dropped early.
        sock.set_recv_buffer_size(0)?;
        Ok(QuerySocket { sock })
    }

    /// Sends one encoded IGMP message to `destination`.
    ///
    /// # Errors
    /// The send failed (interface down, no route).
    pub fn send(&self, destination: Ipv4Addr, igmp: &[u8]) -> io::Result<()> {
        self.sock
            .send_to(igmp, &SocketAddrV4::new(destination, 0).into())
            .map(|_| ())
    }
}

/// Most memberships on one socket, whatever the kernel allows: with the limit raised to 100k
/// and one socket, 100k upstream joins took minutes, all of it in the kernel's walk of the
/// socket's list.
const SOCKET_MEMBERSHIPS: usize = 64;

/// Host memberships of the router itself on one interface, kept by the kernel's IGMP host
/// stack: joining here makes the kernel report the group and answer queries for it.
///
/// The kernel caps the memberships of one socket (`net.ipv4.igmp_max_memberships`, 20 by
/// default; `igmp_max_msf` sources per group; `optmem_max` bytes) and looks a join up in a
/// list of the socket's memberships, so one socket would stop at 20 groups and a raised
/// limit would make each join cost as much as the groups before it. Memberships are spread
/// over sockets instead: a socket takes joins until it holds [`SOCKET_MEMBERSHIPS`] or the
/// kernel refuses one with `ENOBUFS`, then a new one is opened.
pub struct HostMembership {
    dev: String,
    iface: Ipv4Addr,
    sockets: Vec<Socket>,
    /// Indexes of the sockets that may take another join: holding fewer than
    /// [`SOCKET_MEMBERSHIPS`], and not refused by the kernel since a membership there was
    /// last left.
    room: BTreeSet<usize>,
    /// Which socket holds each membership.
    held: HashMap<SourceGroupEntry, usize>,
    /// How many memberships each socket holds.
    counts: Vec<usize>,
}

impl HostMembership {
    /// Memberships on `dev` that use the address `iface`; opens its first socket.
    ///
    /// # Errors
    /// The socket cannot be opened.
    pub fn new(dev: &NetDev, iface: Ipv4Addr) -> io::Result<HostMembership> {
        let mut host = HostMembership {
            dev: dev.name.clone(),
            iface,
            sockets: Vec::new(),
            room: BTreeSet::new(),
            held: HashMap::new(),
            counts: Vec::new(),
        };
        host.open()?;
        Ok(host)
    }

    /// Opens one more socket on the interface; returns its index.
    fn open(&mut self) -> io::Result<usize> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.bind_device(Some(self.dev.as_bytes()))?;
        self.sockets.push(sock);
        self.counts.push(0);
        let i = self.sockets.len() - 1;
        self.room.insert(i);
        Ok(i)
    }

    /// Joins (\*,G) (IP_ADD_MEMBERSHIP) or (S,G) (IP_ADD_SOURCE_MEMBERSHIP), on a socket
    /// with room for it.
    ///
    /// # Errors
    /// The kernel refused (already joined, or a fresh socket cannot take it either), or no
    /// socket could be opened.
    pub fn join(&mut self, sg: SourceGroupEntry) -> io::Result<()> {
        if let Some(&i) = self.held.get(&sg) {
            // Already joined: the kernel says so.
            return join(&self.sockets[i], sg, self.iface);
        }
        while let Some(&i) = self.room.last() {
            match join(&self.sockets[i], sg, self.iface) {
                Ok(()) => {
                    self.joined(sg, i);
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.room.remove(&i);
                }
                Err(e) => return Err(e),
            }
        }
        let i = self.open()?;
        join(&self.sockets[i], sg, self.iface)?;
        self.joined(sg, i);
        Ok(())
    }

    fn joined(&mut self, sg: SourceGroupEntry, i: usize) {
        self.held.insert(sg, i);
        self.counts[i] += 1;
        if self.counts[i] >= SOCKET_MEMBERSHIPS {
            self.room.remove(&i);
        }
    }

    /// Leaves what [`HostMembership::join`] joined.
    ///
    /// # Errors
    /// Not joined (`EADDRNOTAVAIL`, as the kernel says it), or the kernel refused.
    pub fn leave(&mut self, sg: SourceGroupEntry) -> io::Result<()> {
        let i = self
            .held
            .remove(&sg)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))?;
        self.counts[i] -= 1;
        self.room.insert(i);
        let sock = &self.sockets[i];
        if sg.source.is_unspecified() {
            sock.leave_multicast_v4(&sg.group, &self.iface)
        } else {
            sock.leave_ssm_v4(&sg.source, &sg.group, &self.iface)
        }
    }

    /// How many sockets hold the memberships.
    #[cfg(test)]
    fn sockets(&self) -> usize {
        self.sockets.len()
    }
}

impl Drop for HostMembership {
    /// Closes the newest socket first. The kernel keeps an interface's groups in a list, newest
    /// first, and walks it for every membership a closing socket drops: oldest first, a
    /// daemon with 100k memberships needed more than 10 s to stop; newest first, each is
    /// found near the head.
    fn drop(&mut self) {
        while let Some(sock) = self.sockets.pop() {
            drop(sock);
        }
    }
}

/// Raises the soft limit of open files to the hard one, as upstream memberships take a socket
/// per [`SOCKET_MEMBERSHIPS`] (100k of them, 1,563 sockets); returns the limit in force.
///
/// # Errors
/// The kernel refused to read or set the limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above; only the soft limit changes, up to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

fn join(sock: &Socket, sg: SourceGroupEntry, iface: Ipv4Addr) -> io::Result<()> {
    if sg.source.is_unspecified() {
        sock.join_multicast_v4(&sg.group, &iface)
    } else {
        sock.join_ssm_v4(&sg.source, &sg.group, &iface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins more groups on `lo` than one socket may hold: each one is joined, left and
    /// joined again, and the sockets of the first round are reused.
    #[test]
    fn host_memberships_go_past_the_per_socket_limit() {
        let per_socket: usize = std::fs::read_to_string("/proc/sys/net/ipv4/igmp_max_memberships")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(20);
        let lo = NetDev::lookup("lo").expect("lo exists");
        let mut host = match HostMembership::new(&lo, Ipv4Addr::LOCALHOST) {
            Ok(h) => h,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: binding a socket to lo needs CAP_NET_RAW");
                return;
            }
            Err(e) => panic!("socket on lo: {e}"),
        };
        let groups: Vec<SourceGroupEntry> = (0..2 * SOCKET_MEMBERSHIPS + 5)
            .map(|i| SourceGroupEntry::star_g(Ipv4Addr::new(239, 254, (i / 256) as u8, i as u8)))
            .collect();
        for g in &groups {
            host.join(*g).expect("join");
        }
        let opened = host.sockets();
        let fits = per_socket.min(SOCKET_MEMBERSHIPS);
        assert!(
            opened >= groups.len().div_ceil(fits),
            "{} groups on {opened} sockets of at most {fits}",
            groups.len()
        );
        for g in &groups {
            host.leave(*g).expect("leave");
        }
        let again = host.leave(groups[0]).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        for g in &groups {
            host.join(*g).expect("join again");
        }
        assert_eq!(host.sockets(), opened);
    }

    /// With the kernel's per-socket limit raised far above the cap (in a namespace of this
    /// thread's own, where the sysctl is private), memberships still fill sockets of
    /// [`SOCKET_MEMBERSHIPS`]; a membership left makes room in its socket again.
    #[test]
    fn host_memberships_keep_to_the_cap_when_the_kernel_allows_more() {
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread, which ends with the test.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: a network namespace needs root");
                return;
            }
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip runs");
            assert!(up.success(), "ip link set lo up");
            std::fs::write("/proc/sys/net/ipv4/igmp_max_memberships", "1000")
                .expect("the namespace's own sysctl");
            let lo = NetDev::lookup("lo").expect("lo exists");
            let mut host = HostMembership::new(&lo, Ipv4Addr::LOCALHOST).expect("socket on lo");
            let groups: Vec<SourceGroupEntry> = (0..3 * SOCKET_MEMBERSHIPS)
                .map(|i| SourceGroupEntry::star_g(Ipv4Addr::new(239, 253, 0, i as u8)))
                .collect();
            for g in &groups {
                host.join(*g).expect("join");
            }
            assert_eq!(host.sockets(), 3, "three full sockets");
            // Every socket is full: the next join goes where a membership was left.
            host.leave(groups[0]).expect("leave");
            host.join(SourceGroupEntry::star_g(Ipv4Addr::new(239, 253, 1, 0)))
                .expect("join into the room left");
            assert_eq!(host.sockets(), 3, "no fourth socket");
        })
        .join()
        .expect("the test thread");
    }
}
