//! `cargo xtask run` with no arguments: mgm forwarding real multicast in the lab, so a
//! newcomer sees it work without a spare NIC.

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use xtask::lab::{
    receiver_addr,
    traffic::{Receiver, Sender},
    Daemon, Lab, SENDER_ADDR,
};

use crate::tasks::{LAB_TAG, LAB_VERSIONS};

const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const G2: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
const G3: Ipv4Addr = Ipv4Addr::new(239, 3, 3, 3);
const GROUPS: [Ipv4Addr; 3] = [G1, G2, G3];

pub fn demo(mgm: &Path, seconds: u64) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc_flag(stop)?;
    }
    println!("== lab: sender → router (mgm) → r1 (IGMPv2), r2 (IGMPv3), r3 (IGMPv2)");
    let lab = Lab::up(LAB_TAG, &LAB_VERSIONS)?;
    let pin_dir = Path::new(mgm_common::maps::PIN_DIR);
    let daemon = Daemon::start(mgm, &lab, pin_dir, &["--xdp-mode", "native"], true)?;

    let rx: Vec<Receiver> = (0..lab.receivers.len())
        .map(|i| Receiver::new(&lab.receivers[i], receiver_addr(i)))
        .collect::<anyhow::Result<_>>()?;
    println!("== r1 joins {G1}; r2 joins {G1} and ({SENDER_ADDR}, {G2}); r3 joins nothing yet");
    rx[0].join(G1)?;
    rx[1].join(G1)?;
    rx[1].join_source(G2, SENDER_ADDR)?;

    let sender_stop = Arc::clone(&stop);
    let sender_ns = &lab.sender;
    let mut sender = Sender::new(sender_ns, SENDER_ADDR, 8)?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        s.spawn(move || {
            while !sender_stop.load(Ordering::Relaxed) {
                for g in GROUPS {
                    if let Err(e) = sender.send(g, 200) {
                        eprintln!("sender: {e:#}");
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let start = Instant::now();
        let half = Duration::from_secs(seconds / 2);
        let mut switched = false;
        println!("== the sender streams {G1}, {G2} and {G3} at 20 packets/s each");
        println!(
            "   second  {:>26}  {:>26}  {:>26}",
            "r1 (v2)", "r2 (v3)", "r3 (v2)"
        );
        while start.elapsed() < Duration::from_secs(seconds) && !stop.load(Ordering::Relaxed) {
            if !switched && start.elapsed() >= half {
                switched = true;
                println!("== r1 leaves {G1}; r3 joins {G3}");
                rx[0].leave(G1)?;
                rx[2].join(G3)?;
                show(&daemon, mgm, &lab, pin_dir);
            }
            let counts: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = rx
                    .iter()
                    .map(|r| s.spawn(move || r.collect(Duration::from_secs(1))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| summary(&h.join().unwrap_or_default()))
                    .collect()
            });
            println!(
                "   {:>6}  {:>26}  {:>26}  {:>26}",
                start.elapsed().as_secs(),
                counts[0],
                counts[1],
                counts[2]
            );
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    println!("== what mgm holds at the end");
    show(&daemon, mgm, &lab, pin_dir);
    let (status, _) = daemon.stop()?;
    println!("== mgm stopped ({status}); removing the lab");
    drop(lab);
    Ok(())
}

/// "G1:20 G2:0 …" for the groups that arrived.
fn summary(got: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    let parts: Vec<String> = GROUPS
        .iter()
        .enumerate()
        .map(|(i, g)| {
            format!(
                "G{}:{:>2}",
                i + 1,
                got.iter().filter(|(_, gg)| gg == g).count()
            )
        })
        .collect();
    parts.join(" ")
}

/// The entries as the data plane has them (`mgm show`, from the pins), and beside them the
/// groups the daemon's IGMP holds (`mgm show groups`, over its control socket).
fn show(daemon: &Daemon, mgm: &Path, lab: &Lab, pin_dir: &Path) {
    let out = std::process::Command::new(mgm)
        .args(["show", "--netns", lab.router.name(), "--pin-dir"])
        .arg(pin_dir)
        .output();
    match out {
        Ok(o) => {
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
        Err(e) => eprintln!("mgm show: {e}"),
    }
    match daemon.control(&["show", "groups"]) {
        Ok((_, out, err)) => {
            print!("{out}");
            eprint!("{err}");
        }
        Err(e) => eprintln!("mgm show groups: {e}"),
    }
}

/// Sets `flag` on Ctrl-C or SIGTERM instead of dying, so the lab is always torn down.
fn ctrlc_flag(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    extern "C" fn on_stop(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, Ordering::Relaxed);
        }
    }
    let _ = FLAG.set(flag);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let prev = unsafe { libc::signal(sig, on_stop as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error()).context("cannot handle Ctrl-C");
        }
    }
    Ok(())
}
