//! Multicast endpoints for the lab: receivers that join through the kernel's own IGMP host
//! stack, and a sender. Sockets are created inside a namespace and then used from anywhere.

use std::{
    io::ErrorKind,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use super::netns::Netns;

/// UDP port every lab stream uses.
pub const PORT: u16 = 5000;

/// A host socket that joins groups (IP_ADD_MEMBERSHIP / IP_ADD_SOURCE_MEMBERSHIP), so the
/// host's kernel sends the IGMP reports and leaves.
pub struct Receiver {
    sock: Socket,
    iface: Ipv4Addr,
}

impl Receiver {
    /// A socket in `ns` bound to the lab port on all addresses; `iface` is the address of the
    /// interface it joins on.
    pub fn new(ns: &Netns, iface: Ipv4Addr) -> anyhow::Result<Receiver> {
        let sock = ns.run(|| -> std::io::Result<Socket> {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT).into())?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })??;
        Ok(Receiver { sock, iface })
    }

    /// Any-source join (IGMPv2 report or IGMPv3 TO_EX{}).
    pub fn join(&self, group: Ipv4Addr) -> anyhow::Result<()> {
        self.sock
            .join_multicast_v4(&group, &self.iface)
            .with_context(|| format!("join {group}"))
    }

    /// Any-source leave (IGMPv2 leave or IGMPv3 TO_IN{}).
    pub fn leave(&self, group: Ipv4Addr) -> anyhow::Result<()> {
        self.sock
            .leave_multicast_v4(&group, &self.iface)
            .with_context(|| format!("leave {group}"))
    }

    /// Source-specific join (IGMPv3 ALLOW / TO_IN{source}).
    pub fn join_source(&self, group: Ipv4Addr, source: Ipv4Addr) -> anyhow::Result<()> {
        self.sock
            .join_ssm_v4(&source, &group, &self.iface)
            .with_context(|| format!("join ({source}, {group})"))
    }

    /// Source-specific leave (IGMPv3 BLOCK).
    pub fn leave_source(&self, group: Ipv4Addr, source: Ipv4Addr) -> anyhow::Result<()> {
        self.sock
            .leave_ssm_v4(&source, &group, &self.iface)
            .with_context(|| format!("leave ({source}, {group})"))
    }

    /// Discards whatever is queued on the socket, so a later [`Receiver::collect`] only sees
    /// what arrives after this call.
    pub fn drain(&self) -> anyhow::Result<()> {
        self.sock.set_nonblocking(true)?;
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while self.sock.recv_from(&mut buf).is_ok() {}
        self.sock.set_nonblocking(false)?;
        Ok(())
    }

    /// Reads until a lab datagram for `group` arrives and returns when it did, or `None` after
    /// `timeout`.
    pub fn first_arrival(&self, group: Ipv4Addr, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while Instant::now() < end {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let at = Instant::now();
                    // SAFETY: recv initialised the first `n` bytes.
                    let data: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if Payload::decode(&data).is_some_and(|p| p.group == group) {
                        return Some(at);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Sets the socket's receive buffer to `bytes` whatever the namespace's `rmem_max`
    /// (SO_RCVBUFFORCE, root), so a reader that is descheduled for a while on a busy machine
    /// loses nothing to a full buffer: tests that count every datagram need that.
    pub fn grow_buffer(&self, bytes: u32) -> anyhow::Result<()> {
        force_receive_buffer(&self.sock, bytes)
    }

    /// Reads for `window` and returns the sequence numbers of the lab datagrams for `group`
    /// that arrived, in arrival order: a gap is a lost datagram.
    pub fn collect_seq(&self, group: Ipv4Addr, window: Duration) -> Vec<u64> {
        self.datagrams(window)
            .into_iter()
            .filter(|d| d.group == group)
            .map(|d| d.seq)
            .collect()
    }

    /// Reads for `window` and returns every lab datagram that arrived, with its sender's
    /// sequence number, length and arrival time.
    pub fn datagrams(&self, window: Duration) -> Vec<Datagram> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while Instant::now() < end {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let at = Instant::now();
                    // SAFETY: recv_from initialised the first `n` bytes.
                    let data: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if let (Some(p), Some(src)) = (Payload::decode(&data), from.as_socket_ipv4()) {
                        got.push(Datagram {
                            source: *src.ip(),
                            group: p.group,
                            seq: p.seq,
                            len: n,
                            at,
                        });
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        got
    }

    /// Waits for the next lab datagram, up to the socket's 50 ms read timeout; returns its
    /// group and sequence number.
    pub fn next_datagram(&self) -> Option<(Ipv4Addr, u64)> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        let n = self.sock.recv(&mut buf).ok()?;
        // SAFETY: recv initialised the first `n` bytes.
        let data: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        Payload::decode(&data).map(|p| (p.group, p.seq))
    }

    /// Reads for `window` and returns the lab datagrams that arrived, as (source, group).
    pub fn collect(&self, window: Duration) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while Instant::now() < end {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    // SAFETY: recv_from initialised the first `n` bytes.
                    let data: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if let (Some(p), Some(src)) = (Payload::decode(&data), from.as_socket_ipv4()) {
                        got.push((*src.ip(), p.group));
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        got
    }
}

/// One lab datagram as a receiver got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    /// The sender's sequence number: 1 for its first datagram.
    pub seq: u64,
    /// UDP payload bytes.
    pub len: usize,
    pub at: Instant,
}

/// The lab's datagram payload: a marker, the group it was sent to, so a receiver can tell
/// streams apart even though all share one port, and the sender's sequence number.
struct Payload {
    group: Ipv4Addr,
    /// The sender's count of datagrams sent, this one included.
    seq: u64,
}

const MAGIC: &[u8; 4] = b"MGM1";

impl Payload {
    fn encode(group: Ipv4Addr, seq: u64, size: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(size.max(16));
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&group.octets());
        v.extend_from_slice(&seq.to_be_bytes());
        v.resize(size.max(16), 0);
        v
    }

    fn decode(data: &[u8]) -> Option<Payload> {
        if data.len() < 16 || &data[..4] != MAGIC {
            return None;
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&data[8..16]);
        Some(Payload {
            group: Ipv4Addr::new(data[4], data[5], data[6], data[7]),
            seq: u64::from_be_bytes(seq),
        })
    }
}

/// A multicast sender bound to one interface address.
pub struct Sender {
    sock: Socket,
    seq: u64,
}

impl Sender {
    /// A sender in `ns` that sends from `iface` with `ttl`.
    pub fn new(ns: &Netns, iface: Ipv4Addr, ttl: u32) -> anyhow::Result<Sender> {
        let sock = ns.run(|| -> std::io::Result<Socket> {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddrV4::new(iface, 0).into())?;
            s.set_multicast_if_v4(&iface)?;
            s.set_multicast_ttl_v4(ttl)?;
            s.set_multicast_loop_v4(false)?;
            Ok(s)
        })??;
        Ok(Sender { sock, seq: 0 })
    }

    /// A sender in `ns` that sends from `source` out of `ifname` whatever the routes say
    /// (SO_BINDTODEVICE): one source address can then reach a router by several links.
    /// `source` must be an address of `ns`.
    pub fn on_device(
        ns: &Netns,
        source: Ipv4Addr,
        ifname: &str,
        ttl: u32,
    ) -> anyhow::Result<Sender> {
        let sock = ns.run(|| -> std::io::Result<Socket> {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind_device(Some(ifname.as_bytes()))?;
            s.bind(&SocketAddrV4::new(source, 0).into())?;
            s.set_multicast_ttl_v4(ttl)?;
            s.set_multicast_loop_v4(false)?;
            Ok(s)
        })??;
        Ok(Sender { sock, seq: 0 })
    }

    /// The sequence number of the last datagram sent; 0 before the first.
    pub fn sent(&self) -> u64 {
        self.seq
    }

    /// Sends `size`-byte datagrams to `group`, one every `interval` on a fixed schedule, until
    /// `stop` is set; returns how many it sent. A send that fails is an error: a test that
    /// counts datagrams must know every one it did not send.
    pub fn stream(
        &mut self,
        group: Ipv4Addr,
        size: usize,
        interval: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<u64> {
        let first = self.seq;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.send(group, size)?;
            next += interval;
            // Pacing, not synchronisation: the schedule keeps the rate whatever a send costs.
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        Ok(self.seq - first)
    }

    /// Sends one datagram of `size` bytes to `group`.
    pub fn send(&mut self, group: Ipv4Addr, size: usize) -> anyhow::Result<()> {
        self.seq += 1;
        let data = Payload::encode(group, self.seq, size);
        self.sock
            .send_to(&data, &SocketAddrV4::new(group, PORT).into())
            .with_context(|| format!("send to {group}"))?;
        Ok(())
    }
}

/// Sets `sock`'s receive buffer to `bytes` whatever the namespace's `rmem_max`
/// (SO_RCVBUFFORCE, root).
fn force_receive_buffer(sock: &Socket, bytes: u32) -> anyhow::Result<()> {
    let value = libc::c_int::try_from(bytes).context("buffer size")?;
    // SAFETY: the option value is a c_int that lives for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVBUFFORCE");
    }
    Ok(())
}

/// A raw capture of the IPv4 frames arriving on one interface (AF_PACKET), to look at what
/// the router put on the wire: MACs, TTL, checksum.
pub struct Capture {
    sock: Socket,
}

impl Capture {
    /// Starts capturing on `ifname` inside `ns`.
    pub fn new(ns: &Netns, ifname: &str) -> anyhow::Result<Capture> {
        const ETH_P_IP: u16 = 0x0800;
        let name = std::ffi::CString::new(ifname)?;
        let sock = ns.run(|| -> std::io::Result<Socket> {
            let s = Socket::new(
                Domain::PACKET,
                Type::RAW,
                Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
            )?;
            // SAFETY: `name` is NUL-terminated.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: sockaddr_ll is plain data; zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_IP.to_be();
            sll.sll_ifindex = ifindex as i32;
            use std::os::fd::AsRawFd;
            // SAFETY: `sll` is a valid sockaddr_ll for the duration of the call.
            let rc = unsafe {
                libc::bind(
                    s.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })??;
        Ok(Capture { sock })
    }

    /// The lab datagrams (UDP to [`PORT`]) captured within `window`, as whole frames.
    pub fn frames(&self, window: Duration) -> Vec<Vec<u8>> {
        self.frames_where(window, |f| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            f.len() > 14 + ihl + 4
                && f[23] == 17
                && f[14 + ihl + 2..14 + ihl + 4] == PORT.to_be_bytes()
        })
    }

    /// The sequence numbers of the lab datagrams for `group` captured within `window`, in
    /// arrival order: what the router sent on the link, whether or not the host joined.
    pub fn collect_seq(&self, group: Ipv4Addr, window: Duration) -> Vec<u64> {
        self.frames(window)
            .iter()
            .filter_map(|f| Payload::decode(f.get(14 + usize::from(f[14] & 0x0f) * 4 + 8..)?))
            .filter(|p| p.group == group)
            .map(|p| p.seq)
            .collect()
    }

    /// As [`Receiver::grow_buffer`]: a burst read later loses nothing.
    pub fn grow_buffer(&self, bytes: u32) -> anyhow::Result<()> {
        force_receive_buffer(&self.sock, bytes)
    }

    /// The untagged IPv4 frames waiting now that `keep` accepts, without waiting for more.
    pub fn waiting_where(&self, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while let Ok(n) = self.sock.recv_with_flags(&mut buf, libc::MSG_DONTWAIT) {
            // SAFETY: recv initialised the first `n` bytes.
            let f: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            if f.len() >= 34 && f[12..14] == [0x08, 0x00] && keep(&f) {
                got.push(f);
            }
        }
        got
    }

    /// The untagged IPv4 frames captured within `window` that `keep` accepts.
    pub fn frames_where(&self, window: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while Instant::now() < end {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    // SAFETY: recv initialised the first `n` bytes.
                    let f: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if f.len() >= 34 && f[12..14] == [0x08, 0x00] && keep(&f) {
                        got.push(f);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        got
    }
}

/// A raw IGMP socket in `ns`, sending from `iface`: messages leave exactly as built, with
/// TTL 1 and no loopback, for tests that write reports a kernel host would not (RFC 3376
/// §4.2.14 sends them to 224.0.0.22).
///
/// # Errors
/// The socket cannot be made in `ns`.
pub fn raw_igmp_socket(ns: &Netns, iface: Ipv4Addr) -> anyhow::Result<Socket> {
    let socket = ns.run(|| -> std::io::Result<Socket> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IGMP)),
        )?;
        s.set_multicast_if_v4(&iface)?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
        Ok(s)
    })??;
    Ok(socket)
}

/// Writes the Internet checksum of `message` (RFC 1071) into its bytes 2..4, as IGMP wants.
pub fn set_igmp_checksum(message: &mut [u8]) {
    message[2..4].fill(0);
    let mut sum: u32 = message
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    message[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// IPv4 Router Alert option (RFC 2113), which hosts put on their IGMP messages.
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// Puts the Router Alert option on every datagram `socket` sends, as a host's IGMP stack does.
///
/// # Errors
/// The kernel refused the option.
pub fn set_router_alert(socket: &Socket) -> std::io::Result<()> {
    // SAFETY: the option buffer outlives the call and its length is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            ROUTER_ALERT.as_ptr().cast(),
            ROUTER_ALERT.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// IGMPv3 group record types (RFC 3376 §4.2.12).
pub const MODE_IS_INCLUDE: u8 = 1;
pub const MODE_IS_EXCLUDE: u8 = 2;
pub const ALLOW_NEW_SOURCES: u8 = 5;
pub const BLOCK_OLD_SOURCES: u8 = 6;

/// IGMPv3 "all IGMPv3-capable routers" (RFC 3376 §4.2.14), where reports go.
pub const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

/// Group records per report a [`Reporter`] sends: with one source each, 8 + 100 × 12 bytes,
/// under mgm's 1476-byte snoop copy.
pub const RECORDS_PER_REPORT: usize = 100;

/// An IGMPv3 report (RFC 3376 §4.2) with one record of type `kind` and `sources` per group.
pub fn v3_report(kind: u8, groups: &[Ipv4Addr], sources: &[Ipv4Addr]) -> Vec<u8> {
    let mut m = vec![0x22, 0, 0, 0, 0, 0];
    m.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    for g in groups {
        m.extend_from_slice(&[kind, 0]);
        m.extend_from_slice(&(sources.len() as u16).to_be_bytes());
        m.extend_from_slice(&g.octets());
        sources
            .iter()
            .for_each(|s| m.extend_from_slice(&s.octets()));
    }
    set_igmp_checksum(&mut m);
    m
}

/// A host that sends IGMPv3 reports of the benches' making, many records to a report, with
/// TTL 1 and Router Alert as the host stack would: how the benches put memberships in by the
/// thousand.
pub struct Reporter {
    sock: Socket,
}

impl Reporter {
    /// A reporter in `ns`, sending from its interface with address `iface`.
    ///
    /// # Errors
    /// The socket cannot be made or given Router Alert.
    pub fn new(ns: &Netns, iface: Ipv4Addr) -> anyhow::Result<Reporter> {
        let sock = raw_igmp_socket(ns, iface)?;
        set_router_alert(&sock).context("Router Alert on the raw IGMP socket")?;
        Ok(Reporter { sock })
    }

    /// Sends one record of type `kind` with `sources` per group, [`RECORDS_PER_REPORT`] to a
    /// report, back to back.
    ///
    /// # Errors
    /// A send failed.
    pub fn send(&self, kind: u8, groups: &[Ipv4Addr], sources: &[Ipv4Addr]) -> anyhow::Result<()> {
        let to = SocketAddrV4::new(ALL_V3_ROUTERS, 0).into();
        for chunk in groups.chunks(RECORDS_PER_REPORT) {
            self.sock
                .send_to(&v3_report(kind, chunk, sources), &to)
                .context("send an IGMPv3 report")?;
        }
        Ok(())
    }
}
