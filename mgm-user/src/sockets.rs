//! The daemon's own packets on the wire: IGMP queries downstream and the proxy's reports
//! upstream, sent with IP TTL 1 and the Router Alert option (RFC 3376 §4, RFC 2236 §2), and
//! the upstream interface's link-layer multicast filter.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::dataplane::netdev::NetDev;

/// IPv4 Router Alert (RFC 2113): type 148, length 4, value 0.
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// A raw IGMP socket bound to one interface, for sending queries or reports.
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

    /// Sends one encoded IGMP message to `destination`, waiting for room in the send buffer
    /// if it is full (the upstream's worker thread sends so).
    ///
    /// # Errors
    /// The send failed (interface down, no route).
    pub fn send(&self, destination: Ipv4Addr, igmp: &[u8]) -> io::Result<()> {
        self.send_with(destination, igmp, 0)
    }

    /// Sends one encoded IGMP message to `destination` without ever waiting, for the event
    /// loop: a full send buffer is an error (`WouldBlock`), the message not sent.
    ///
    /// # Errors
    /// The send failed or would have waited.
    pub fn try_send(&self, destination: Ipv4Addr, igmp: &[u8]) -> io::Result<()> {
        self.send_with(destination, igmp, libc::MSG_DONTWAIT)
    }

    fn send_with(&self, destination: Ipv4Addr, igmp: &[u8], flags: libc::c_int) -> io::Result<()> {
        self.sock
            .send_to_with_flags(igmp, &SocketAddrV4::new(destination, 0).into(), flags)
            .map(|_| ())
    }
}

/// The link-layer multicast filter of the proxy's upstream interface: the groups' MAC
/// addresses (RFC 1112 §6.4), added with `SIOCADDMULTI` as `ip maddr add` does.
///
/// With no socket membership in the kernel, nothing else tells the NIC to take these frames
/// in. `SIOCADDMULTI` entries are the interface's own ("global" users in the kernel), not a
/// socket's, so they outlive a daemon that dies and the frames keep reaching XDP until the
/// next one takes over; a plain stop removes them one by one. IFF_ALLMULTI would
/// survive as well, but would hand every multicast stream on the upstream link to XDP and the
/// host stack. Groups share MACs 32 to one, so each MAC is counted and removed with its last
/// group. Entries a dead daemon added for groups its successor never reports stay until the
/// interface goes (the successor cannot tell them from an administrator's). Its ioctls take the
/// kernel's rtnl lock: the daemon makes them on the upstream's worker thread
/// ([`crate::offload`]), never on the event loop.
pub struct LinkFilter {
    dev: String,
    /// Any socket will do for the ioctls.
    sock: Socket,
    /// How many groups use each MAC.
    macs: HashMap<[u8; 6], usize>,
}

impl LinkFilter {
    /// The filter of `dev`, with nothing of this daemon's in it yet.
    ///
    /// # Errors
    /// The socket for the ioctls cannot be opened.
    pub fn new(dev: &NetDev) -> io::Result<LinkFilter> {
        Ok(LinkFilter {
            dev: dev.name.clone(),
            sock: Socket::new(Domain::IPV4, Type::DGRAM, None)?,
            macs: HashMap::new(),
        })
    }

    /// Lets `group`'s frames in (kept if already there: a dead daemon's entries are reused).
    ///
    /// # Errors
    /// The kernel refused the entry.
    pub fn add(&mut self, group: Ipv4Addr) -> io::Result<()> {
        let mac = multicast_mac(group);
        if self.macs.get(&mac).is_none_or(|n| *n == 0) {
            self.ioctl(libc::SIOCADDMULTI, mac)?;
        }
        *self.macs.entry(mac).or_default() += 1;
        Ok(())
    }

    /// Stops letting `group`'s frames in, unless another group shares its MAC.
    ///
    /// # Errors
    /// The kernel refused to remove the entry.
    pub fn remove(&mut self, group: Ipv4Addr) -> io::Result<()> {
        let mac = multicast_mac(group);
        match self.macs.get_mut(&mac) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(())
            }
            Some(_) => {
                self.macs.remove(&mac);
                self.ioctl(libc::SIOCDELMULTI, mac)
            }
            None => Ok(()),
        }
    }

    fn ioctl(&self, request: libc::c_ulong, mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: ifreq is plain data; zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(self.dev.bytes()) {
            *d = s as libc::c_char;
        }
        // The kernel wants the address in sa_data with family AF_UNSPEC.
        // SAFETY: sockaddr is plain data; zero is valid.
        let mut hwaddr: libc::sockaddr = unsafe { std::mem::zeroed() };
        hwaddr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        for (d, s) in hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_hwaddr = hwaddr;
        // SAFETY: `req` is a valid ifreq that outlives the call.
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), request, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The Ethernet address of an IPv4 group: 01:00:5e and its low 23 bits (RFC 1112 §6.4).
fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1112_group_macs_keep_the_low_23_bits() {
        assert_eq!(
            multicast_mac(Ipv4Addr::new(239, 129, 2, 3)),
            [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]
        );
    }

    /// On a veth of a namespace of this thread's own: the entries appear in the
    /// interface's list, two groups of one MAC keep it until both are gone, and they stay
    /// when the filter is dropped (as a dying daemon leaves them) until removed.
    #[test]
    fn link_filter_entries_are_counted_per_mac_and_outlive_the_filter() {
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread, which ends with the test.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: a network namespace needs root");
                return;
            }
            let ip = |args: &[&str]| {
                let ok = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .expect("ip runs")
                    .success();
                assert!(ok, "ip {args:?}");
            };
            ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
            ip(&["link", "set", "up0", "up"]);
            let listed = |mac: &str| -> bool {
                let out = std::process::Command::new("ip")
                    .args(["maddr", "show", "dev", "up0"])
                    .output()
                    .expect("ip runs");
                String::from_utf8_lossy(&out.stdout).contains(mac)
            };
            let dev = NetDev::lookup("up0").expect("up0 exists");
            let mut filter = LinkFilter::new(&dev).expect("socket");
            // 239.1.2.3 and 239.129.2.3 share 01:00:5e:01:02:03.
            let (a, b) = (Ipv4Addr::new(239, 1, 2, 3), Ipv4Addr::new(239, 129, 2, 3));
            filter.add(a).expect("add");
            filter.add(b).expect("add");
            assert!(listed("01:00:5e:01:02:03"));
            filter.remove(a).expect("remove");
            assert!(listed("01:00:5e:01:02:03"), "b still uses the MAC");
            filter.remove(b).expect("remove");
            assert!(!listed("01:00:5e:01:02:03"));
            filter.add(a).expect("add");
            drop(filter);
            assert!(listed("01:00:5e:01:02:03"), "the entry outlives its owner");
            let mut next = LinkFilter::new(&dev).expect("socket");
            next.add(a).expect("a dead daemon's entry is taken over");
            next.remove(a).expect("remove");
            assert!(!listed("01:00:5e:01:02:03"));
        })
        .join()
        .expect("the test thread");
    }
}
