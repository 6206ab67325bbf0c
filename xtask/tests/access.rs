//! Who may use the module socket, on the real binary: root, or the group the operator names.
//! The socket file's mode tells the kernel; mgm also checks every peer's credentials, so a
//! loosened mode does not let anyone else in. And mgm never removes a file at the socket path
//! that is not a stale socket of its own. Who may change IGMP state: a query from off the
//! link never takes the querier role, and `--igmp-strict-reports` drops reports without
//! Router Alert or with a TTL other than 1, which are counted either way.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use xtask::lab::{
    daemon::socket_for,
    mgm_bin, receiver_addr,
    stream::wait_until,
    traffic::{
        raw_igmp_socket, set_igmp_checksum, set_router_alert, v3_report, ALL_V3_ROUTERS,
        MODE_IS_EXCLUDE,
    },
    unique_tag, Daemon, IgmpVersion, Lab, Netns,
};

const NOBODY: u32 = 65534;

/// The first line the socket sends to a client running as `uid` (root when `None`), or
/// `connect failed: …`.
fn first_line_as(uid: Option<u32>, socket: &Path) -> String {
    const CLIENT: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print('connect failed:', e)\n    sys.exit(0)\n\
        print(s.makefile().readline().strip())\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT]).arg(socket);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Restores a path's mode on drop.
struct Mode(PathBuf, u32);

impl Drop for Mode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(self.1));
    }
}

fn loosen(path: &Path, mode: u32) -> Mode {
    let old = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    Mode(path.to_owned(), old)
}

#[test]
fn a_peer_that_is_not_root_is_refused_even_where_the_file_mode_lets_it_connect() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", "skb"], false)
        .expect("mgm starts");
    let socket = daemon.socket();
    let hello = first_line_as(None, &socket);
    assert!(hello.contains(r#""hello":"mgm""#), "root: {hello}");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is root's alone");

    // An operator loosens the modes by mistake: the kernel now lets nobody connect.
    let _dir = loosen(socket.parent().unwrap(), 0o755);
    let _sock = loosen(&socket, 0o666);
    let line = first_line_as(Some(NOBODY), &socket);
    assert!(
        line.contains("accepts modules from root only") && !line.contains("hello"),
        "uid {NOBODY} got: {line}"
    );
    daemon
        .wait_for(
            &format!("refused a connection from uid {NOBODY}"),
            std::time::Duration::from_secs(5),
        )
        .expect("the refusal is logged");
}

#[test]
fn a_named_group_may_use_the_socket() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    // SAFETY: getgrgid returns NULL or a valid entry, read at once.
    let group = unsafe {
        let gr = libc::getgrgid(NOBODY);
        assert!(!gr.is_null(), "gid {NOBODY} has a group");
        std::ffi::CStr::from_ptr((*gr).gr_name)
            .to_string_lossy()
            .into_owned()
    };
    let args = ["--xdp-mode", "skb", "--socket-group", &group];
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &args, false).expect("mgm starts");
    let socket = daemon.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), NOBODY);
    // The shared test directory may be root's alone; the group's own would be 0750.
    let _dir = loosen(socket.parent().unwrap(), 0o755);
    let hello = first_line_as(Some(NOBODY), &socket);
    assert!(hello.contains(r#""hello":"mgm""#), "group {group}: {hello}");
}

#[test]
fn mgm_does_not_start_over_a_file_that_is_not_its_socket_and_leaves_it_alone() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let path = socket_for(&pin_dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "an operator's file\n").unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _file = Remove(path.clone());
    let err = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", "skb"], false)
        .err()
        .expect("mgm refuses to start");
    assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "an operator's file\n"
    );
}

/// A lab with one IGMPv3 receiver and mgm on it with `args`.
fn lab_with_mgm(args: &[&str]) -> (Daemon, Lab) {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, args, false).expect("mgm starts");
    (daemon, lab)
}

/// What `f` gives once it gives `Some`, within 5 s.
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut got = None;
    wait_until(Duration::from_secs(5), || {
        got = f();
        got.is_some()
    });
    got
}

/// `interface`'s row of `mgm show stats`.
fn stats_of(daemon: &Daemon, interface: &str) -> serde_json::Value {
    let stats = daemon.show_view("stats").expect("show stats");
    stats["stats"]["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["interface"] == interface))
        .cloned()
        .unwrap_or_else(|| panic!("no {interface} in {stats}"))
}

/// `interface`'s IGMP querier as `mgm show interfaces` has it.
fn querier_of(daemon: &Daemon, interface: &str) -> serde_json::Value {
    let view = daemon.show_view("interfaces").expect("show interfaces");
    view["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["name"] == interface))
        .map(|i| i["igmp"].clone())
        .unwrap_or_else(|| panic!("no {interface} in {view}"))
}

/// Sends an IGMPv3 general query from `host` out of its interface with address `via`, with
/// IPv4 source `source` whatever the host's address, TTL 1 and Router Alert.
fn send_query_from(host: &Netns, via: Ipv4Addr, source: Ipv4Addr) {
    let mut igmp = vec![0x11, 100, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0];
    set_igmp_checksum(&mut igmp);
    let all_systems = Ipv4Addr::new(224, 0, 0, 1);
    // The kernel fills in the total length and the header checksum (raw(7)).
    let mut packet = vec![0x46, 0xc0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0];
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&all_systems.octets());
    packet.extend_from_slice(&[0x94, 4, 0, 0]);
    packet.extend_from_slice(&igmp);
    host.run(|| -> std::io::Result<()> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        s.set_multicast_if_v4(&via)?;
        s.send_to(&packet, &SocketAddrV4::new(all_systems, 0).into())?;
        Ok(())
    })
    .expect("enter the host's namespace")
    .expect("send the query");
}

#[test]
fn a_query_from_outside_the_downstreams_subnets_never_takes_the_querier_role() {
    let (mut daemon, lab) = lab_with_mgm(&["--xdp-mode", "skb"]);
    let (host, via) = (&lab.receivers[0], receiver_addr(0));
    // Lower than the router's 198.18.1.1, so it would win an election it could take part in.
    let forged = Ipv4Addr::new(10, 0, 0, 1);
    let foreign = |d: &Daemon| stats_of(d, "dn1")["igmp_foreign_queries"].as_u64();
    send_query_from(host, via, forged);
    assert_eq!(
        eventually(|| foreign(&daemon).filter(|n| *n > 0)),
        Some(1),
        "the forged query was not counted:\n{}",
        daemon.log().join("\n")
    );
    let q = querier_of(&daemon, "dn1");
    assert_eq!(
        (&q["querier"], &q["querier_address"]),
        (&true.into(), &"198.18.1.1".into())
    );

    // dn1 gets an address on 10.0.0.0/24: a router there is a neighbour now, and wins.
    let heard = |d: &Daemon| {
        d.log()
            .iter()
            .filter(|l| l.contains("dn1: the querier election hears queries from"))
            .count()
    };
    lab.router
        .ip(&["addr", "add", "10.0.0.9/24", "dev", "dn1"])
        .expect("add an address");
    assert!(eventually(|| (heard(&daemon) == 1).then_some(())).is_some());
    send_query_from(host, via, forged);
    let elected = |d: &Daemon| querier_of(d, "dn1")["querier_address"] == forged.to_string();
    assert!(
        eventually(|| elected(&daemon).then_some(())).is_some(),
        "{}",
        daemon.log().join("\n")
    );

    // The address goes again: the next forged query is foreign once more.
    lab.router
        .ip(&["addr", "del", "10.0.0.9/24", "dev", "dn1"])
        .expect("delete the address");
    assert!(eventually(|| (heard(&daemon) == 2).then_some(())).is_some());
    send_query_from(host, via, forged);
    assert_eq!(eventually(|| foreign(&daemon).filter(|n| *n > 1)), Some(2));
    daemon
        .wait_for("kept out of the querier election", Duration::from_secs(1))
        .expect("the forged query is logged");
}

/// Sends three IGMPv3 reports joining `groups[0..3]` from the lab's receiver: without Router
/// Alert, with TTL 2, and as hosts send them. Returns the groups mgm has on dn1 once the
/// last one shows, and dn1's counts of reports without Router Alert, with TTL other than 1,
/// and dropped.
fn send_nonconforming_reports(
    daemon: &Daemon,
    lab: &Lab,
    groups: [Ipv4Addr; 3],
) -> (Vec<String>, [u64; 3]) {
    let (host, via) = (&lab.receivers[0], receiver_addr(0));
    let to = SocketAddrV4::new(ALL_V3_ROUTERS, 0).into();
    let no_ra = raw_igmp_socket(host, via).expect("raw socket");
    no_ra
        .send_to(&v3_report(MODE_IS_EXCLUDE, &groups[..1], &[]), &to)
        .expect("send");
    let ttl_2 = raw_igmp_socket(host, via).expect("raw socket");
    set_router_alert(&ttl_2).expect("Router Alert");
    ttl_2.set_multicast_ttl_v4(2).expect("TTL 2");
    ttl_2
        .send_to(&v3_report(MODE_IS_EXCLUDE, &groups[1..2], &[]), &to)
        .expect("send");
    let conforming = raw_igmp_socket(host, via).expect("raw socket");
    set_router_alert(&conforming).expect("Router Alert");
    conforming
        .send_to(&v3_report(MODE_IS_EXCLUDE, &groups[2..], &[]), &to)
        .expect("send");
    let on_dn1 = || -> Vec<String> {
        let view = daemon.show_view("groups").expect("show groups");
        let mut g: Vec<String> = view["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["interface"] == "dn1")
            .filter_map(|g| g["group"].as_str().map(str::to_owned))
            .collect();
        g.sort();
        g
    };
    let last = groups[2].to_string();
    let joined = eventually(|| Some(on_dn1()).filter(|g| g.contains(&last))).unwrap_or_else(|| {
        panic!(
            "the conforming report made no group:\n{}",
            daemon.log().join("\n")
        )
    });
    let s = stats_of(daemon, "dn1");
    let count = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    let counts = [
        count("igmp_no_router_alert"),
        count("igmp_ttl_not_1"),
        count("igmp_nonconforming_dropped"),
    ];
    (joined, counts)
}

const G: [Ipv4Addr; 3] = [
    Ipv4Addr::new(239, 7, 0, 1),
    Ipv4Addr::new(239, 7, 0, 2),
    Ipv4Addr::new(239, 7, 0, 3),
];

#[test]
fn strict_reports_drops_reports_without_router_alert_or_with_ttl_2_and_counts_them() {
    let (daemon, lab) = lab_with_mgm(&["--xdp-mode", "skb", "--igmp-strict-reports"]);
    let (joined, counts) = send_nonconforming_reports(&daemon, &lab, G);
    assert_eq!(joined, [G[2].to_string()]);
    assert_eq!(counts, [1, 1, 2]);
}

#[test]
fn by_default_reports_without_router_alert_or_with_ttl_2_join_and_are_counted() {
    let (daemon, lab) = lab_with_mgm(&["--xdp-mode", "skb"]);
    let (joined, counts) = send_nonconforming_reports(&daemon, &lab, G);
    assert_eq!(joined, G.map(|g| g.to_string()));
    assert_eq!(counts, [1, 1, 0]);
}
