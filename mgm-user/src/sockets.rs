//! The daemon's own packets on the wire: IGMP queries downstream, sent with IP TTL 1 and the
//! Router Alert option (RFC 3376 §4, RFC 2236 §2), and the proxy's host memberships upstream.

use std::{
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

/// Host memberships of the router itself on one interface, kept by the kernel's IGMP host
/// stack: joining here makes the kernel report the group and answer queries for it.
pub struct HostMembership {
    sock: Socket,
    iface: Ipv4Addr,
}

impl HostMembership {
    /// A UDP socket on `dev` whose memberships use the address `iface`.
    ///
    /// # Errors
    /// The socket cannot be opened.
    pub fn new(dev: &NetDev, iface: Ipv4Addr) -> io::Result<HostMembership> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.bind_device(Some(dev.name.as_bytes()))?;
        Ok(HostMembership { sock, iface })
    }

    /// Joins (\*,G) (IP_ADD_MEMBERSHIP) or (S,G) (IP_ADD_SOURCE_MEMBERSHIP).
    ///
    /// # Errors
    /// The kernel refused (for example more than `igmp_max_memberships` groups).
    pub fn join(&self, sg: SourceGroupEntry) -> io::Result<()> {
        if sg.source.is_unspecified() {
            self.sock.join_multicast_v4(&sg.group, &self.iface)
        } else {
            self.sock.join_ssm_v4(&sg.source, &sg.group, &self.iface)
        }
    }

    /// Leaves what [`HostMembership::join`] joined.
    ///
    /// # Errors
    /// The kernel refused (not joined).
    pub fn leave(&self, sg: SourceGroupEntry) -> io::Result<()> {
        if sg.source.is_unspecified() {
            self.sock.leave_multicast_v4(&sg.group, &self.iface)
        } else {
            self.sock.leave_ssm_v4(&sg.source, &sg.group, &self.iface)
        }
    }
}
