//! Per-packet CPU cost of the XDP ingress program, from BPF_PROG_TEST_RUN's in-kernel timing,
//! as a ratio against a parse-nothing broadcast redirect (`mgm-bench` object) measured in the
//! same run, interleaved. Run by `cargo xtask bench`, which builds both objects and passes
//! their paths; needs root. Prints one JSON object per line.
//!
//! A test run reruns the program on the same buffer, so every case uses TTL 255 and at most
//! 250 repeats per call: the TTL decrement never reaches the drop path. The kernel reports the
//! mean time per run, measured around the program alone. Packets enter on `lo`; copies go to
//! a veth of the bench's namespace (a test run redirects nowhere, it only returns the verdict).

#[path = "../tests/common/frame.rs"]
mod frame;
#[path = "../tests/common/netns.rs"]
mod netns;

use std::{net::Ipv4Addr, time::Duration};

use aya::{
    maps::{xdp::DevMapHash, MapData, RingBuf},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use frame::Frame;
use mgm_common::maps as m;
use mgm_user::{
    core::{InterfaceId, MapOp},
    dataplane::{loader::load_programs, maps::Forwarding, netdev::NetDev, Tunables},
    igmp::{GroupRecord, IgmpMessage, RecordType},
};

const LO: u32 = 1;
const REPEAT: u32 = 250;
const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const G_SG: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const G_SG2: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 2);
const G_STAR: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
const G_MISS: Ipv4Addr = Ipv4Addr::new(239, 3, 3, 3);

/// Average ns per run of `prog` on `frame` over `calls` test runs of [`REPEAT`].
fn cost(ebpf: &mut Ebpf, prog: &str, frame: &[u8], calls: u32) -> f64 {
    let prog: &mut Xdp = ebpf.program_mut(prog).unwrap().try_into().unwrap();
    let md: [u32; 6] = [0, frame.len() as u32, 0, LO, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut total = Duration::ZERO;
    for _ in 0..calls {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: REPEAT,
                ..TestRunOptions::new()
            })
            .expect("test run");
        total += r.duration;
    }
    total.as_nanos() as f64 / f64::from(calls)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Each test run swaps the XDP dispatcher and waits for an RCU grace period, so calls, not
    // repeats, dominate the wall time.
    let (calls, rounds) = if quick { (10, 3) } else { (40, 7) };
    // This process's (single) thread gets a namespace of its own: `lo` and `mgmv0`.
    netns::enter_with_veth(1500);
    let veth = NetDev::lookup("mgmv0").unwrap();
    let out = veth.ifindex;
    let mut loaded = load_programs(&Tunables::default()).expect("load mgm");
    loaded
        .configure_interfaces(&[NetDev::lookup("lo").unwrap(), veth], 1)
        .unwrap();
    let mut fwd = loaded.take_forwarding().unwrap();
    let mut events: RingBuf<MapData> = loaded.take_map(m::EVENTS).unwrap();
    install(&mut fwd, S, G_SG, &[out]);
    // Two interfaces: the devmap's broadcast (which skips `lo`, the incoming one).
    install(&mut fwd, S, G_SG2, &[LO, out]);
    install(&mut fwd, Ipv4Addr::UNSPECIFIED, G_STAR, &[out]);
    let object = std::env::var("MGM_BENCH_OBJECT").expect("MGM_BENCH_OBJECT (cargo xtask bench)");
    let mut base = EbpfLoader::new().load_file(object).expect("load mgm-bench");
    let mut oifs: DevMapHash<MapData> =
        DevMapHash::try_from(base.take_map("BENCH_OIFS").unwrap()).unwrap();
    oifs.insert(out, out, None, 0).unwrap();
    let p: &mut Xdp = base
        .program_mut("bench_raw_redirect")
        .unwrap()
        .try_into()
        .unwrap();
    p.load().unwrap();

    let v3 = Frame::igmp(&IgmpMessage::V3Report {
        records: (0..4u8)
            .map(|i| GroupRecord {
                kind: RecordType::ChangeToExclude,
                group: Ipv4Addr::new(239, 9, 9, i),
                sources: vec![],
            })
            .collect(),
        truncated: false,
    })
    .bytes();
    let cases: [(&str, Vec<u8>, u32); 5] = [
        (
            "(S,G) hit, one interface",
            Frame::udp(S, G_SG, 255).bytes(),
            calls,
        ),
        (
            "(S,G) hit, set of two",
            Frame::udp(S, G_SG2, 255).bytes(),
            calls,
        ),
        ("(*,G) hit", Frame::udp(S, G_STAR, 255).bytes(), calls),
        (
            "miss (pending placeholder)",
            Frame::udp(S, G_MISS, 255).bytes(),
            calls,
        ),
        // Every run writes a ring-buffer event; few calls, drained after each round.
        ("IGMPv3 report (4 records)", v3, 4),
    ];
    let raw_frame = Frame::udp(S, G_SG, 255).bytes();
    let mut raw = Vec::new();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, frame, n)) in cases.iter().enumerate() {
            raw.push(cost(&mut base, "bench_raw_redirect", &raw_frame, calls));
            results[i].push(cost(&mut loaded.ebpf, "mgm_ingress", frame, *n));
            while events.next().is_some() {}
        }
    }
    let raw = median(raw);
    println!(
        "{{\"case\":\"raw broadcast redirect (baseline)\",\"ns_per_packet\":{raw:.1},\"ratio_vs_raw\":1.0}}"
    );
    for ((name, _, _), r) in cases.iter().zip(results) {
        let ns = median(r);
        println!(
            "{{\"case\":\"{name}\",\"ns_per_packet\":{ns:.1},\"ratio_vs_raw\":{:.2}}}",
            ns / raw
        );
    }
    installs(&mut fwd, if quick { 2_000 } else { 10_000 }, rounds);
}

/// Installs (source, group) from `lo` to `oifs`.
fn install(fwd: &mut Forwarding, source: Ipv4Addr, group: Ipv4Addr, oifs: &[u32]) {
    fwd.apply(&MapOp::InstallMfe {
        source,
        group,
        iif: InterfaceId::new(LO),
        oifs: oifs.iter().map(|i| InterfaceId::new(*i)).collect(),
    })
    .unwrap();
}

/// MFE installs per second through the adapter (entry, shared outgoing set, zeroed counter
/// slot) against plain inserts of the same entries into a hash map of the same shape.
fn installs(fwd: &mut Forwarding, n: u32, rounds: u32) {
    use aya::maps::HashMap;
    use mgm_common::fwd::{FwdEntry, FwdKey};
    let key = |i: u32| {
        (
            Ipv4Addr::from(0xc612_0000 + i),
            Ipv4Addr::new(239, 100, 0, 1),
        )
    };
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut raw: HashMap<MapData, FwdKey, FwdEntry> =
            HashMap::create(m::FWD_CAPACITY, 0).expect("a plain hash map");
        let start = std::time::Instant::now();
        for i in 0..n {
            let (s, g) = key(i);
            let k = FwdKey {
                source: u32::from(s).to_be(),
                group: u32::from(g).to_be(),
            };
            let v = FwdEntry {
                iif: LO,
                oif_set: 1,
                flags: 0,
                stats_slot: i,
                created_ns: 0,
                last_upcall_ns: 0,
                pending_pkts: 0,
                oif_base: 0,
                oif_slots: 0,
            };
            raw.insert(k, v, 0).unwrap();
        }
        plain.push(f64::from(n) / start.elapsed().as_secs_f64());
        let start = std::time::Instant::now();
        for i in 0..n {
            let (source, group) = key(i);
            install(fwd, source, group, &[LO]);
        }
        ours.push(f64::from(n) / start.elapsed().as_secs_f64());
        for i in 0..n {
            let (source, group) = key(i);
            fwd.apply(&MapOp::DeleteMfe { source, group }).unwrap();
        }
    }
    let (ours, plain) = (median(ours), median(plain));
    println!(
        "{{\"control\":\"MFE installs ({n} (S,G), one shared set)\",\"per_second\":{ours:.0},\"baseline\":\"plain hash-map inserts\",\"baseline_per_second\":{plain:.0},\"ratio\":{:.2}}}",
        ours / plain
    );
}
