//! Spec §3–§4.4 on the wire: two in-process routing protocols own different interfaces, IGMP
//! co-owns both downstreams, and what hosts report there reaches the owners as local-join and
//! local-leave callbacks. The owners answer by adding or deleting memberships of their own,
//! and the resulting forwarding is checked with real traffic. The daemon runs in this process,
//! on a thread inside the lab's router namespace. Needs root.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mgm_user::{
    core::{
        ComponentId, Cx, InterfaceId, ProtocolId, Request, RoutingProtocol, SourceGroupEntry,
        MGM_JOIN_STATE_FLAG,
    },
    daemon::{self, ClientPlan, Options},
    dataplane::{Tunables, XdpMode},
};
use xtask::lab::{
    downstream, receiver_addr,
    traffic::{Receiver, Sender},
    unique_tag, IgmpVersion, Lab, SENDER_ADDR, UPSTREAM,
};

const G: Ipv4Addr = Ipv4Addr::new(239, 7, 7, 7);

/// A routing protocol that forwards wherever a host asks, and records every local callback.
struct Owner {
    name: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Owner {
    fn record(&self, what: &str, sg: SourceGroupEntry, if_id: InterfaceId) {
        self.calls.lock().unwrap().push(format!(
            "{} {what} {}/{} on {}",
            self.name, sg.source, sg.group, if_id.ifindex
        ));
    }
}

impl RoutingProtocol for Owner {
    fn local_join(&mut self, cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        self.record("local_join", sg, if_id);
        cx.queue(Request::AddGroupMembership {
            sg,
            if_id,
            flags: MGM_JOIN_STATE_FLAG,
        });
    }

    fn local_leave(&mut self, cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        self.record("local_leave", sg, if_id);
        cx.queue(Request::DeleteGroupMembership {
            sg,
            if_id,
            flags: MGM_JOIN_STATE_FLAG,
        });
    }
}

fn ifindex(lab: &Lab, name: &str) -> u32 {
    let out = lab.router.ip_output(&["-o", "link", "show", name]).unwrap();
    out.split(':').next().unwrap().trim().parse().unwrap()
}

fn received(rx: &Receiver, window: Duration) -> usize {
    rx.collect(window).iter().filter(|(_, g)| *g == G).count()
}

#[test]
fn spec4_4_igmp_on_shared_interfaces_becomes_local_joins_into_each_owner() {
    let tag = unique_tag("co");
    let lab = Lab::up(&tag, &[IgmpVersion::V2, IgmpVersion::V3]).expect("lab up");
    let (dn1, dn2) = (downstream(0), downstream(1));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let owner = |name, id, interfaces: Vec<String>| ClientPlan {
        protocol: Box::new(Owner {
            name,
            calls: Arc::clone(&calls),
        }),
        protocol_id: ProtocolId(id),
        component_id: ComponentId(1),
        interfaces,
        memberships: Vec::new(),
    };
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let opts = Options {
        upstream_host: None,
        names: Default::default(),
        clients: vec![
            owner("A", 100, vec![UPSTREAM.to_owned(), dn1.clone()]),
            owner("B", 200, vec![dn2.clone()]),
        ],
        igmp: vec![dn1.clone(), dn2.clone()],
        external: Vec::new(),
        socket: PathBuf::from(format!("/run/mgm/mgm-{tag}.sock")),
        socket_access: mgm_user::protocols::remote::access::Access::root_only(),
        answer_within: Duration::from_millis(100),
        control_socket: PathBuf::from(format!("/run/mgm/mgm-{tag}.ctl.sock")),
        control_access: mgm_user::protocols::remote::access::Access::root_only(),
        statics: Default::default(),
        igmp_config: mgm_user::igmp::querier::Config {
            last_member_query_interval: Duration::from_millis(100),
            ..Default::default()
        },
        mode: XdpMode::Native,
        pin_dir: pin_dir.clone(),
        ttl_threshold: 1,
        tunables: Tunables::default(),
        rpf_table: mgm_user::routes::RT_TABLE_MAIN,
        rpf_routes: Vec::new(),
        mfe_lifetime_s: 900,
        negative_budget: 1024,
        keep_forwarding: false,
        published: None,
        settings: Default::default(),
        reload: None,
    };
    let netns = File::open(format!("/run/netns/{}", lab.router.name())).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || -> anyhow::Result<()> {
        // SAFETY: moves only this thread into the router's namespace.
        assert_eq!(
            unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(daemon::run(opts, async {
            let _ = stopped.await;
        }))
    });
    // Running once XDP sits on the last interface it attaches to.
    let end = Instant::now() + Duration::from_secs(20);
    while !lab
        .router
        .ip_output(&["link", "show", &dn2])
        .unwrap()
        .contains("xdp")
    {
        assert!(Instant::now() < end, "the daemon did not attach");
        assert!(!daemon.is_finished(), "the daemon stopped early");
        std::thread::sleep(Duration::from_millis(50));
    }

    let r1 = Receiver::new(&lab.receivers[0], receiver_addr(0)).unwrap();
    let r2 = Receiver::new(&lab.receivers[1], receiver_addr(1)).unwrap();
    r1.join(G).unwrap();
    r2.join(G).unwrap();
    let mut tx = Sender::new(&lab.sender, SENDER_ADDR, 8).unwrap();
    let mut both = [0usize; 2];
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && both.contains(&0) {
        tx.send(G, 100).unwrap();
        both[0] += received(&r1, Duration::from_millis(20));
        both[1] += received(&r2, Duration::from_millis(20));
    }
    let (i1, i2) = (ifindex(&lab, &dn1), ifindex(&lab, &dn2));
    let log = calls.lock().unwrap().clone();
    let star = |who: &str, what: &str, i: u32| format!("{who} {what} 0.0.0.0/{G} on {i}");
    assert!(log.contains(&star("A", "local_join", i1)), "{log:?}");
    assert!(log.contains(&star("B", "local_join", i2)), "{log:?}");
    assert!(
        both[0] > 0 && both[1] > 0,
        "forwarding to both owners' interfaces: {both:?}"
    );

    r2.leave(G).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    r1.drain().unwrap();
    r2.drain().unwrap();
    for _ in 0..20 {
        tx.send(G, 100).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        received(&r2, Duration::from_millis(300)),
        0,
        "B deleted its membership"
    );
    assert_eq!(
        received(&r1, Duration::from_millis(300)),
        20,
        "A's interface still gets it"
    );
    let log = calls.lock().unwrap().clone();
    assert!(log.contains(&star("B", "local_leave", i2)), "{log:?}");
    assert!(
        !log.iter().any(|c| c.starts_with("A local_leave")),
        "{log:?}"
    );

    stop.send(()).unwrap();
    daemon.join().unwrap().expect("the daemon stops cleanly");
    assert!(!pin_dir.exists(), "pins removed");
}
