//! Interface facts the data plane needs (ifindex, MAC, MTU), read with ioctls on a socket so
//! they come from the network namespace the daemon runs in, whatever /sys shows; and its IPv4
//! prefixes, which IGMP needs, from the kernel's address list over rtnetlink.

use std::{ffi::CString, io, mem, os::fd::AsRawFd};

use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST},
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        AddressFamily, RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

use super::DataplaneError;
use crate::igmp::querier::Subnet;

/// What mgm needs to know of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u16,
    /// The interface's primary IPv4 address, if it has one (IGMP queries come from it).
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// Every IPv4 prefix of the interface, secondary addresses' too: where routers that share
    /// its links query from.
    pub ipv4_subnets: Vec<Subnet>,
    /// Administratively up (`IFF_UP`): a socket cannot send from it before.
    pub up: bool,
}

/// `aa:bb:cc:dd:ee:ff`, as `ip link` prints a MAC.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

impl NetDev {
    /// Looks up `name` in the current network namespace.
    ///
    /// # Errors
    /// [`DataplaneError::Interface`] if the interface does not exist or cannot be queried.
    pub fn lookup(name: &str) -> Result<NetDev, DataplaneError> {
        let err = |source| DataplaneError::Interface {
            name: name.to_owned(),
            source,
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an interface name has 1 to 15 bytes",
            )));
        }
        let cname = CString::new(name).map_err(|e| err(io::Error::other(e)))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such interface in this network namespace",
            )));
        }
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(err)?;
        let mut req = ifreq(name);
        ioctl(&sock, libc::SIOCGIFHWADDR, &mut req).map_err(err)?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mac = std::array::from_fn(|i| hw[i] as u8);
        let mut req = ifreq(name);
        ioctl(&sock, libc::SIOCGIFMTU, &mut req).map_err(err)?;
        // SAFETY: SIOCGIFMTU filled the mtu member of the union.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        let mut req = ifreq(name);
        ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(err)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let up = unsafe { req.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short != 0;
        let mut req = ifreq(name);
        let ipv4 = match ioctl(&sock, libc::SIOCGIFADDR, &mut req) {
            Ok(()) => {
                // SAFETY: SIOCGIFADDR filled the addr member with a sockaddr_in.
                let sin: libc::sockaddr_in = unsafe {
                    std::ptr::read_unaligned(
                        (&req.ifr_ifru.ifru_addr as *const libc::sockaddr).cast(),
                    )
                };
                Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => None,
            Err(e) => return Err(err(e)),
        };
        Ok(NetDev {
            name: name.to_owned(),
            ifindex,
            mac,
            mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
            ipv4,
            ipv4_subnets: ipv4_subnets(ifindex).map_err(err)?,
            up,
        })
    }
}

/// The IPv4 prefixes of interface `ifindex` as its connected routes cover them: each
/// address's, and for a point-to-point one the peer's (the kernel's `IFA_ADDRESS`).
fn ipv4_subnets(ifindex: u32) -> io::Result<Vec<Subnet>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    let mut query = AddressMessage::default();
    query.header.family = AddressFamily::Inet;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(query));
    request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
    let mut subnets = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full()?;
        let mut at = 0;
        while at < bytes.len() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..])
                .map_err(io::Error::other)?;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(subnets),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a))
                    if a.header.index == ifindex =>
                {
                    subnets.extend(a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(std::net::IpAddr::V4(address)) => Some(Subnet {
                            address: *address,
                            prefix_len: a.header.prefix_len,
                        }),
                        _ => None,
                    }));
                }
                _ => {}
            }
            // Messages start on 4-byte boundaries; `deserialize` checked the length covers a
            // header at least and fits in what was received.
            at += (message.header.length as usize).next_multiple_of(4);
        }
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn ioctl(sock: &impl AsRawFd, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid ifreq for these interface ioctls.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_unknown_names_are_clear_errors() {
        let lo = NetDev::lookup("lo").unwrap();
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mac, [0; 6]);
        assert_eq!(lo.ipv4, Some(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(
            lo.ipv4_subnets,
            [Subnet {
                address: std::net::Ipv4Addr::LOCALHOST,
                prefix_len: 8
            }]
        );
        let err = NetDev::lookup("mgm-no-such0").unwrap_err().to_string();
        assert!(err.contains("mgm-no-such0"), "{err}");
        assert!(NetDev::lookup("").is_err());
        assert!(NetDev::lookup("a-name-that-is-too-long").is_err());
    }
}
